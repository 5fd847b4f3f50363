"""MAGTKD end to end: the processor's output -> the text, audio and video features of every utterance -> regrouped per
conversation -> the anchor gated fusion -> an emotion per utterance."""

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput

from .configuration_magtkd import MODALITIES, MagtkdConfig
from .modeling_magtkd_fusion import ConversationLayout, MagtkdFusionModel, check_all
from .modeling_magtkd_stages import (
    LAYER_OUTPUTS,
    MagtkdAudioEncoder,
    MagtkdAudioModel,
    MagtkdEncoderOutput,
    MagtkdEncoderPreTrainedModel,
    MagtkdTextEncoder,
    MagtkdTextModel,
    MagtkdVideoEncoder,
    MagtkdVideoModel,
    into_rows,
)


@dataclass
class MagtkdEmotionRecognitionOutput(ModelOutput):
    r"""
    Output of [`MagtkdForEmotionRecognition`]. B conversations, N = the longest, U = the utterances of the batch.

    loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is given): the fusion loss.
    logits (`torch.FloatTensor` of shape `(batch_size, num_utterances, num_labels)`): the prediction; zeros at padding.
    audio_logits, video_logits (`torch.FloatTensor` of shape `(batch_size, num_utterances, num_labels)`): the fusion's
        audio and video anchor heads.
    text_features, audio_features, video_features (`torch.FloatTensor` of shape `(total_utterances, hidden_size)`): the
        per-utterance encoder features that entered the fusion, in the processor's utterance order.
    text_hidden_states, audio_hidden_states, video_hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned with
        `output_hidden_states`): each encoder's hidden states, one row per utterance (see [`MagtkdEncoderOutput`]);
        None for a modality whose features were given.
    text_attentions, audio_attentions, video_attentions (`tuple(torch.FloatTensor)`, *optional*, returned with
        `output_attentions`): each encoder's attention weights, likewise.
    fusion_hidden_states, fusion_attentions (`tuple(torch.FloatTensor)`, *optional*): the fusion blocks' outputs and
        attention weights ([`MagtkdFusionOutput`]'s `hidden_states` and `attentions`).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    audio_logits: torch.FloatTensor | None = None
    video_logits: torch.FloatTensor | None = None
    text_features: torch.FloatTensor | None = None
    audio_features: torch.FloatTensor | None = None
    video_features: torch.FloatTensor | None = None
    text_hidden_states: tuple[torch.FloatTensor | None, ...] | None = None
    audio_hidden_states: tuple[torch.FloatTensor | None, ...] | None = None
    video_hidden_states: tuple[torch.FloatTensor | None, ...] | None = None
    text_attentions: tuple[torch.FloatTensor, ...] | None = None
    audio_attentions: tuple[torch.FloatTensor, ...] | None = None
    video_attentions: tuple[torch.FloatTensor, ...] | None = None
    fusion_hidden_states: tuple[torch.FloatTensor | None, ...] | None = None
    fusion_attentions: tuple[torch.FloatTensor, ...] | None = None


def regroup_utterances(
    features: torch.Tensor,
    utterance_mask: torch.Tensor,
    conversation_index: torch.Tensor | None = None,
    utterance_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """
    Per-utterance features (U, H) -> per-conversation features (B, N, H), zeros at padding. The U utterances are in the
    processor's order (conversation by conversation, i.e. `utterance_mask.bool()` in row-major order); when given,
    `conversation_index`/`utterance_index` (U,) must agree with it.
    """
    layout = ConversationLayout(utterance_mask)
    flat_index = layout.flat_index
    if not torch.compiler.is_compiling() and flat_index.numel() != features.shape[0]:
        raise ValueError(
            f"{features.shape[0]} utterance features for {flat_index.numel()} real utterances in `utterance_mask`."
        )
    if conversation_index is not None and utterance_index is not None:
        given = conversation_index.to(flat_index.device) * layout.max_length + utterance_index.to(flat_index.device)
        if not torch.compiler.is_compiling() and given.shape != flat_index.shape:
            raise ValueError(f"{given.numel()} utterance indices for {flat_index.numel()} real utterances.")
        check_all(
            given == flat_index,
            lambda: "`conversation_index`/`utterance_index` disagree with `utterance_mask`: utterances must come "
            "conversation by conversation, in order (as the processor gives them).",
        )
    return layout.to_padded(features)


def fusion_inputs(features: dict, present: dict, utterance_mask, conversation_index, utterance_index) -> dict:
    """The fusion's (B, N, H) features and (B, N) presence masks from each modality's (U, H) features and (U,) flags."""
    inputs = {
        f"{modality}_features": regroup_utterances(value, utterance_mask, conversation_index, utterance_index)
        for modality, value in features.items()
    }
    for modality, flags in present.items():
        inputs[f"{modality}_mask"] = (
            None if flags is None else regroup_utterances(flags[:, None], utterance_mask).squeeze(-1)
        )
    return inputs


def split_layer_outputs(encoded: dict) -> tuple[dict, dict]:
    """Each modality's features, and its encoder's layer outputs by output name (`text_hidden_states`, ...)."""
    features, layers = {}, {}
    for modality, value in encoded.items():
        if isinstance(value, MagtkdEncoderOutput):
            layers.update({f"{modality}_{name}": getattr(value, name) for name in LAYER_OUTPUTS})
            value = value.features
        features[modality] = value
    return features, layers


_ENCODER_INPUTS = {"text": ("input_ids",), "audio": ("input_values",), "video": ("pixel_values",)}


class MagtkdForEmotionRecognition(MagtkdEncoderPreTrainedModel):
    r"""
    MAGTKD end to end: the text, audio and video feature modules (one feature per utterance each), regrouped per
    conversation, then the anchor gated fusion -> an emotion per utterance.

    It holds ONE audio and ONE video feature module: those whose features feed the fusion, as
    `config.fusion_model_config.audio_feature_source` / `video_feature_source` say (released MELD: the distilled audio and
    video students; released IEMOCAP: the distilled audio student and the stage-1 video model). The stage models'
    classifiers are not part of it: the fusion's heads predict.

    A modality's encoder can be skipped by passing its per-utterance features instead (`text_features`,
    `audio_features`, `video_features`, shape (U, H)), e.g. cached stage-3 features.
    [`~MagtkdForEmotionRecognition.freeze_encoders`] freezes feature modules (no gradients, eval mode).
    """

    config_class = MagtkdConfig
    main_input_name = "input_ids"
    # `Trainer.predict` keeps the logits alone, aligned with the labels (Trainer reads the list from the config).
    _keys_to_ignore_at_inference = MagtkdConfig.keys_to_ignore_at_inference

    def __init__(self, config: MagtkdConfig):
        super().__init__(config)
        self.text_encoder = MagtkdTextEncoder(config.text_config)
        self.audio_encoder = MagtkdAudioEncoder(config.audio_config)
        self.video_encoder = MagtkdVideoEncoder(config.video_config)
        self.fusion = MagtkdFusionModel(config.fusion_model_config)
        self._frozen_modalities: set[str] = set()
        self.post_init()

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, naming the conversation pipeline in the saved config (`custom_pipelines`;
        the pipeline's file travels with the model's code), so the folder works with `pipeline(model=folder,
        trust_remote_code=True)` where the package is not installed. The in-memory config is left as it was."""
        # Imported here, not at the top: loading a model does not need `transformers.pipelines`. (transformers still
        # finds this relative import and copies the file with the model's code.)
        from .pipeline_magtkd import custom_pipelines_entry

        had = "custom_pipelines" in self.config.__dict__
        self.config.custom_pipelines = custom_pipelines_entry()
        try:
            return super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            if not had:
                del self.config.custom_pipelines

    def get_input_embeddings(self):
        return self.text_encoder.encoder.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.text_encoder.encoder.set_input_embeddings(value)

    def feature_module(self, modality: str) -> torch.nn.Module:
        if modality not in MODALITIES:
            raise ValueError(f"Unknown modality {modality!r}; expected one of {MODALITIES}.")
        return getattr(self, f"{modality}_encoder")

    @classmethod
    def from_unimodal_models(
        cls,
        text_model: MagtkdTextModel,
        audio_model: MagtkdAudioModel,
        video_model: MagtkdVideoModel,
        fusion_model: MagtkdFusionModel | None = None,
    ) -> "MagtkdForEmotionRecognition":
        """
        The end-to-end model from trained stage models (the audio and video ones chosen by the fusion's feature
        sources) and, when given, a trained fusion model (else a fresh one of the text model's labels and width).
        """
        stages = {"text": text_model, "audio": audio_model, "video": video_model}
        if fusion_model is None:
            fusion_model_config = MagtkdFusionModel.config_class(
                hidden_size=text_model.config.feature_size, id2label=dict(text_model.config.id2label)
            )
        else:
            fusion_model_config = fusion_model.config
        for modality, model in stages.items():
            if model.config.label_names != fusion_model_config.label_names:
                raise ValueError(
                    f"The {modality} model's labels {model.config.label_names} differ from the fusion's "
                    f"{fusion_model_config.label_names}."
                )
        config = MagtkdConfig(
            **{f"{modality}_config": model.config for modality, model in stages.items()}, fusion_model_config=fusion_model_config
        )
        model = cls(config)
        for modality, stage_model in stages.items():
            model.feature_module(modality).load_state_dict(stage_model.feature_module.state_dict())
        if fusion_model is not None:
            model.fusion.load_state_dict(fusion_model.state_dict())
        return model

    @classmethod
    def from_encoders(
        cls, config: MagtkdConfig, text_encoder: str, audio_encoder: str, video_encoder: str, **kwargs
    ) -> "MagtkdForEmotionRecognition":
        """A model whose three encoders start from pretrained checkpoints (names or folders); the text projection and
        the fusion are freshly initialised."""
        stage_classes = {"text": MagtkdTextModel, "audio": MagtkdAudioModel, "video": MagtkdVideoModel}
        names = {"text": text_encoder, "audio": audio_encoder, "video": video_encoder}
        stages = {
            modality: stage_class.from_encoder(getattr(config, f"{modality}_config"), names[modality], **kwargs)
            for modality, stage_class in stage_classes.items()
        }
        return cls.from_unimodal_models(stages["text"], stages["audio"], stages["video"], MagtkdFusionModel(config.fusion_model_config))

    def freeze_encoders(self, modalities=MODALITIES) -> None:
        """Freeze feature modules: no gradients, kept in eval mode (no dropout) even under `model.train()`, run
        without autograd. The fusion stays trainable."""
        for modality in modalities:
            self.feature_module(modality).requires_grad_(False).eval()
            self._frozen_modalities.add(modality)

    def unfreeze_encoders(self, modalities=MODALITIES) -> None:
        for modality in modalities:
            self.feature_module(modality).requires_grad_(True).train(self.training)
            self._frozen_modalities.discard(modality)

    def train(self, mode: bool = True):
        super().train(mode)
        for modality in getattr(self, "_frozen_modalities", ()):
            self.feature_module(modality).eval()
        return self

    def _encode(
        self, modality: str, inputs: dict, present: torch.Tensor | None = None, output_flags: dict | None = None
    ) -> torch.Tensor | MagtkdEncoderOutput:
        """The (U, H) features of `modality` (with the encoder's layer outputs where `output_flags` ask for them); with
        `present` (U,) flags, the encoder runs on the present utterances only and the absent ones get zeros (the fusion
        replaces them with its missing embedding). Under torch.export / torch.compile, which cannot select a
        data-dependent subset, every utterance is encoded (the absent ones from their zero inputs); the fusion ignores
        those features all the same."""
        everyone = present is None or torch.compiler.is_compiling() or bool(present.all())
        subset = None if everyone else present.bool().nonzero().squeeze(1)
        if subset is not None and subset.numel() == 0:  # nothing to encode: the inputs are not needed
            return self.fusion.missing_audio_embedding.new_zeros(present.shape[0], self.fusion.config.hidden_size)
        missing = [name for name in _ENCODER_INPUTS[modality] if inputs[name] is None]
        if missing:
            raise ValueError(
                f"No {modality} input: give the processor's {', '.join(f'`{m}`' for m in missing)} (process with "
                f"the {modality} modality) or precomputed `{modality}_features`."
            )
        if subset is not None:
            inputs = {name: None if value is None else value.index_select(0, subset.to(value.device))
                      for name, value in inputs.items()}
        module = self.feature_module(modality)
        with torch.set_grad_enabled(torch.is_grad_enabled() and modality not in self._frozen_modalities):
            output = module(**inputs, **(output_flags or {}))
        return output if subset is None else into_rows(present.shape[0], subset, output)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        input_values: torch.Tensor | None = None,
        audio_attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        speaker_ids: torch.Tensor | None = None,
        utterance_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        conversation_index: torch.Tensor | None = None,
        utterance_index: torch.Tensor | None = None,
        text_features: torch.Tensor | None = None,
        audio_features: torch.Tensor | None = None,
        video_features: torch.Tensor | None = None,
        return_dict: bool | None = None,
        has_audio: torch.Tensor | None = None,
        has_video: torch.Tensor | None = None,
        output_hidden_states: bool | int | list[int] | None = None,
        output_attentions: bool | None = None,
    ) -> MagtkdEmotionRecognitionOutput | tuple:
        r"""
        Args:
            input_ids, attention_mask, input_values, audio_attention_mask, pixel_values, speaker_ids, utterance_mask,
                conversation_index, utterance_index: the [`MagtkdProcessor`] output as it is (see its docstring).
            labels (`torch.LongTensor` of shape `(batch_size, num_utterances)`, *optional*): -100 = ignore.
            text_features, audio_features, video_features (`torch.FloatTensor` of shape `(total_utterances,
                hidden_size)`, *optional*): a modality's features instead of its encoder inputs.
            has_audio, has_video (`torch.LongTensor` of shape `(total_utterances,)`, *optional*): the processor's
                presence flags; an absent modality's encoder is not run for that utterance (its feature in the output
                is zeros) and the fusion uses its missing embedding. Omitted: every utterance has both.
            output_hidden_states (`bool`, `int` or `list[int]`), output_attentions (`bool`), *optional*: return the
                encoders' and fusion blocks' hidden states (all, or those of the indices into each) and attentions.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        flags = {"output_hidden_states": output_hidden_states, "output_attentions": output_attentions}
        flags = {name: getattr(self.config, name) if value is None else value for name, value in flags.items()}
        if speaker_ids is None or utterance_mask is None:
            raise ValueError("`speaker_ids` and `utterance_mask` (the processor's conversation structure) are required.")
        present = {"audio": has_audio, "video": has_video}
        encoder_inputs = {
            "text": {"input_ids": input_ids, "attention_mask": attention_mask},
            "audio": {"input_values": input_values, "attention_mask": audio_attention_mask},
            "video": {"pixel_values": pixel_values},
        }
        given = {"text": text_features, "audio": audio_features, "video": video_features}
        features, layers = split_layer_outputs(self._utterance_features(given, encoder_inputs, present, flags))
        fused = self.fusion(
            **fusion_inputs(features, present, utterance_mask, conversation_index, utterance_index),
            speaker_ids=speaker_ids, attention_mask=utterance_mask, labels=labels, return_dict=True, **flags,
        )
        output = MagtkdEmotionRecognitionOutput(
            loss=fused.loss, logits=fused.logits, audio_logits=fused.audio_logits, video_logits=fused.video_logits,
            **{f"{modality}_features": value for modality, value in features.items()}, **layers,
            fusion_hidden_states=fused.hidden_states, fusion_attentions=fused.attentions,
        )
        return output if return_dict else output.to_tuple()

    def _utterance_features(self, given: dict, inputs: dict, present: dict, output_flags: dict | None = None) -> dict:
        """Each modality's (U, H) features: given ones as they are, the others from their encoder (run only on the
        utterances that have the modality; a [`MagtkdEncoderOutput`] where `output_flags` ask for layer outputs)."""
        return {
            modality: given[modality] if given[modality] is not None
            else self._encode(modality, inputs[modality], present.get(modality), output_flags)
            for modality in MODALITIES
        }


__all__ = ["MagtkdEmotionRecognitionOutput", "MagtkdForEmotionRecognition", "regroup_utterances"]
