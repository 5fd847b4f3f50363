"""MAGTKD's stage models: the text, audio and video models of stage 1 (an encoder and a classifier each, trained with
cross-entropy) and the distillation of stage 2 (an audio or video student taught by the frozen text model)."""

import copy
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_magtkd import MagtkdAudioConfig, MagtkdTextConfig, MagtkdVideoConfig
from .losses import classification_loss, distillation_loss
from .modeling_magtkd_fusion import MagtkdPreTrainedModel, check_all


@dataclass
class MagtkdUnimodalOutput(ModelOutput):
    r"""Output of [`MagtkdTextModel`], [`MagtkdAudioModel`] and [`MagtkdVideoModel`] for U utterances: `loss`
    (cross-entropy, when `labels` are given), `logits` (U, num_labels), `features` (U, feature_size), the utterance
    feature the fusion takes."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    features: torch.FloatTensor | None = None


@dataclass
class MagtkdDistillationOutput(ModelOutput):
    r"""Output of [`MagtkdDistillationModel`]: `loss` (the student's objective, when `labels` are given), `logits`
    (U, num_labels) the student's, `teacher_logits` (U, num_labels) the frozen teacher's."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    teacher_logits: torch.FloatTensor | None = None


@dataclass
class MagtkdEncoderOutput(ModelOutput):
    r"""What a feature module gives when its encoder's layer outputs are asked for (`output_hidden_states`,
    `output_attentions`): `features` (U, feature_size), and the encoder's `hidden_states` and `attentions` (tuples over
    its layers, one row per utterance; zeros past an utterance's own length where utterances ran apart, zeros for an
    utterance whose modality is absent)."""

    features: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor | None, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


LAYER_OUTPUTS = ("hidden_states", "attentions")


def scatter_rows(total: int, pieces: list) -> torch.Tensor | None:
    """One (total, ...) tensor from (rows, values) pieces: each piece's values at its rows (`rows` None: all, for a
    single piece), zero padded at the end of every other dimension to the largest piece; zeros in the other rows. None
    where a piece is None (a layer an index selection of `output_hidden_states` left out)."""
    if any(values is None for _, values in pieces):
        return None
    if len(pieces) == 1 and pieces[0][0] is None:
        return pieces[0][1]
    sizes = [max(values.shape[dim] for _, values in pieces) for dim in range(1, pieces[0][1].dim())]
    batch = pieces[0][1].new_zeros(total, *sizes)
    for rows, values in pieces:
        batch[(rows, *(slice(0, size) for size in values.shape[1:]))] = values
    return batch


def with_layer_outputs(features: torch.Tensor, pieces: list, output_flags: dict):
    """`features` alone, or with the encoder's layer outputs where `output_flags` ask for them (a
    [`MagtkdEncoderOutput`]); `pieces`: the (rows, encoder output) of each encoder call (rows as `scatter_rows`'s)."""
    if not any(output_flags.values()):
        return features
    layers = {}
    for name in LAYER_OUTPUTS:
        if output_flags[f"output_{name}"]:
            per_layer = zip(*(getattr(output, name) for _, output in pieces))
            layers[name] = tuple(
                scatter_rows(features.shape[0], [(rows, layer) for (rows, _), layer in zip(pieces, values)])
                for values in per_layer
            )
    return MagtkdEncoderOutput(features=features, **layers)


def into_rows(total: int, rows: torch.Tensor, output):
    """A feature module's `output` (features, or a [`MagtkdEncoderOutput`]) for the utterances `rows`, placed among
    `total` utterances (zeros in the others)."""
    if isinstance(output, torch.Tensor):
        return scatter_rows(total, [(rows, output)])
    flags = {f"output_{name}": getattr(output, name) is not None for name in LAYER_OUTPUTS}
    return with_layer_outputs(scatter_rows(total, [(rows, output.features)]), [(rows, output)], flags)


def encoder_without_pooler(load, *args, **kwargs) -> PreTrainedModel:
    """`load` (`AutoModel.from_config` or `from_pretrained`) without the pooler where the encoder has one: MAGTKD never
    uses it, and unused parameters break distributed training."""
    try:
        return load(*args, add_pooling_layer=False, **kwargs)
    except TypeError:
        return load(*args, **kwargs)


def new_encoder(config) -> PreTrainedModel:
    """A randomly initialised encoder of `config.encoder_config`, in the dtype the model is being built in (the default
    dtype, which `from_pretrained(dtype=...)` sets while it builds): `from_config` would take the dtype recorded in
    the encoder config, which `from_pretrained` updates on first-level sub-configs only."""
    return encoder_without_pooler(AutoModel.from_config, config.encoder_config, dtype=torch.get_default_dtype())


def _parameter_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def numbers_positions_from_padding(encoder: PreTrainedModel) -> bool:
    """Whether the encoder's embeddings number positions past the padding themselves, as RoBERTa-family embeddings do
    (`create_position_ids_from_input_ids`); other encoders need position ids from the attention mask when left
    padded."""
    return hasattr(getattr(encoder, "embeddings", None), "create_position_ids_from_input_ids")


class MagtkdTextEncoder(nn.Module):
    """
    The text feature: a RoBERTa- or BERT-family encoder reads the prompt, whose last token is the mask token (the
    processor pads on the left); its last hidden state there, projected to `config.feature_size`, is the utterance's
    feature. Every path (stage training, feature extraction, the end-to-end model, the pipeline, the stream) computes
    it here, so a prompt's feature never depends on its batch-mates' lengths.
    """

    def __init__(self, config: MagtkdTextConfig, encoder: PreTrainedModel | None = None):
        super().__init__()
        self.encoder = encoder if encoder is not None else new_encoder(config)
        self.projection = nn.Linear(self.encoder.config.hidden_size, config.feature_size)
        self.positions_from_padding = numbers_positions_from_padding(self.encoder)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, output_hidden_states=False,
        output_attentions=False,
    ) -> torch.Tensor | MagtkdEncoderOutput:
        """(U, L) prompt tokens, left padded -> (U, feature_size); with the encoder's layer outputs where asked (a
        [`MagtkdEncoderOutput`])."""
        if attention_mask is not None and not torch.compiler.is_compiling() and not bool(attention_mask[:, -1].all()):
            raise ValueError(
                "The text inputs must be padded on the LEFT (the mask token last): the feature is read at the last "
                "position. MagtkdProcessor does this."
            )
        position_ids = None
        if attention_mask is not None and not self.positions_from_padding:
            # Absolute positions (BERT family) would count the left padding: number each prompt's tokens from 0.
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        flags = {"output_hidden_states": output_hidden_states, "output_attentions": output_attentions}
        output = self.encoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **flags)
        return with_layer_outputs(self.projection(output.last_hidden_state[:, -1]), [(None, output)], flags)


class MagtkdAudioEncoder(nn.Module):
    """The audio feature: a data2vec-audio encoder's last hidden state at the first frame."""

    def __init__(self, config: MagtkdAudioConfig, encoder: PreTrainedModel | None = None):
        super().__init__()
        self.encoder = encoder if encoder is not None else new_encoder(config)

    def forward(
        self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None, output_hidden_states=False,
        output_attentions=False,
    ) -> torch.Tensor | MagtkdEncoderOutput:
        """(U, S) waveforms, with their (U, S) sample mask -> (U, hidden_size); with the encoder's layer outputs where
        asked (a [`MagtkdEncoderOutput`])."""
        if attention_mask is not None and attention_mask.shape != input_values.shape:
            raise ValueError(
                f"The audio attention mask has shape {tuple(attention_mask.shape)} but `input_values` "
                f"{tuple(input_values.shape)}: pass the processor's `audio_attention_mask`."
            )
        values = input_values.to(_parameter_dtype(self.encoder))
        if attention_mask is not None and torch.compiler.is_compiling():
            # The per-length grouping below is data-dependent: an exported graph takes unpadded clips only.
            check_all(
                attention_mask.bool(),
                lambda: "Padded audio cannot run in an exported or compiled graph: give clips of one length or "
                "`audio_features`.",
            )
        flags = {"output_hidden_states": output_hidden_states, "output_attentions": output_attentions}
        if attention_mask is None or torch.compiler.is_compiling() or bool(attention_mask.all()):
            output = self.encoder(values, **flags)
            return with_layer_outputs(output.last_hidden_state[:, 0], [(None, output)], flags)
        # data2vec-audio's positional convolution carries right padding into the last real frames even under an
        # attention mask, so a padded utterance's feature would depend on its batch-mates. Utterances of one length
        # run together, unpadded: each gets the feature it has alone (as the released extraction, one at a time).
        lengths = attention_mask.sum(dim=1)
        pieces = []
        for length in lengths.unique().tolist():
            rows = (lengths == length).nonzero().flatten()
            pieces.append((rows, self.encoder(values[rows, : int(length)], **flags)))
        features = scatter_rows(values.shape[0], [(rows, output.last_hidden_state[:, 0]) for rows, output in pieces])
        return with_layer_outputs(features, pieces, flags)


class MagtkdVideoEncoder(nn.Module):
    """The video feature: a TimeSformer encoder's last hidden state at the CLS position."""

    def __init__(self, config: MagtkdVideoConfig, encoder: PreTrainedModel | None = None):
        super().__init__()
        self.encoder = encoder if encoder is not None else new_encoder(config)

    def forward(
        self, pixel_values: torch.Tensor, output_hidden_states=False, output_attentions=False
    ) -> torch.Tensor | MagtkdEncoderOutput:
        """(U, frames, 3, height, width) -> (U, hidden_size); with the encoder's layer outputs where asked (a
        [`MagtkdEncoderOutput`])."""
        flags = {"output_hidden_states": output_hidden_states, "output_attentions": output_attentions}
        output = self.encoder(pixel_values.to(_parameter_dtype(self.encoder)), **flags)
        return with_layer_outputs(output.last_hidden_state[:, 0], [(None, output)], flags)


class MagtkdEncoderPreTrainedModel(MagtkdPreTrainedModel):
    """Base of the models built on Hub encoders: each encoder keeps its own initialisation (it is a `PreTrainedModel`
    of its own); heads are initialised as PyTorch's `nn.Linear`, as the released scripts."""

    supports_gradient_checkpointing = True
    # The loss is a mean over the batch's utterances: `Trainer` scales it for gradient accumulation itself.
    accepts_loss_kwargs = False
    _no_split_modules = []
    # The encoders resolve attention on their own configs (sdpa where they have it); `attn_implementation=` reaches them.
    _supports_sdpa = True

    def enable_input_require_grads(self):
        """As `PreTrainedModel.enable_input_require_grads`, for every encoder's input embeddings, whose outputs may be
        tuples (TimeSformer's patch embeddings return one)."""

        def make_outputs_require_grads(module, inputs, output):
            for tensor in output if isinstance(output, tuple) else (output,):
                if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
                    tensor.requires_grad_(True)

        hooks, seen = [], set()
        for module in self.modules():
            if isinstance(module, MagtkdPreTrainedModel) or not isinstance(module, PreTrainedModel):
                continue
            try:
                embeddings = module.get_input_embeddings()
            except (NotImplementedError, AttributeError):  # data2vec-audio has no input embeddings
                continue
            if embeddings is not None and id(embeddings) not in seen:
                seen.add(id(embeddings))
                hooks.append(embeddings.register_forward_hook(make_outputs_require_grads))
        self._require_grads_hooks = hooks
        if hooks:
            self._require_grads_hook = hooks[0]


class MagtkdUnimodalModel(MagtkdEncoderPreTrainedModel):
    """A stage-1 model: one modality's feature module and a classifier on its feature, cross-entropy with labels."""

    modality: str = ""
    feature_module_class: type = nn.Module

    def __init__(self, config, encoder: PreTrainedModel | None = None):
        super().__init__(config)
        if encoder is not None and encoder.config.to_diff_dict() != config.encoder_config.to_diff_dict():
            raise ValueError(f"The given {self.modality} encoder's config differs from `config.encoder_config`.")
        setattr(self, f"{self.modality}_encoder", self.feature_module_class(config, encoder))
        self.classifier = nn.Linear(config.feature_size, config.num_labels)
        self.post_init()

    @property
    def feature_module(self) -> nn.Module:
        return getattr(self, f"{self.modality}_encoder")

    def get_input_embeddings(self):
        return self.feature_module.encoder.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.feature_module.encoder.set_input_embeddings(value)

    @classmethod
    def from_encoder(cls, config, encoder_name_or_path: str, **kwargs):
        """
        A stage-1 model whose encoder starts from a pretrained checkpoint (a Hub name or a folder, passed to
        `AutoModel.from_pretrained` with `kwargs`); the head is freshly initialised. The returned model's
        `config.encoder_config` is the checkpoint's (for the text model, resized to `config.encoder_config.vocab_size`,
        e.g. to add the 9 speaker tokens). `config` itself is not changed.
        """
        encoder = cls._adapt_pretrained_encoder(config, encoder_without_pooler(AutoModel.from_pretrained, encoder_name_or_path, **kwargs))
        config = copy.deepcopy(config)
        config.encoder_config = encoder.config
        return cls(config, encoder=encoder)

    @classmethod
    def _adapt_pretrained_encoder(cls, config, encoder: PreTrainedModel) -> PreTrainedModel:
        return encoder

    def _output(self, features: torch.Tensor, labels: torch.Tensor | None, return_dict: bool | None):
        logits = self.classifier(features)
        loss = None if labels is None else classification_loss(logits, labels, self.config.class_weights)
        output = MagtkdUnimodalOutput(loss=loss, logits=logits, features=features)
        return output if (return_dict if return_dict is not None else self.config.return_dict) else output.to_tuple()


class MagtkdTextModel(MagtkdUnimodalModel):
    r"""MAGTKD's text model: [`MagtkdTextEncoder`] (encoder + projection to the fusion width) and a classifier."""

    config_class, modality, feature_module_class = MagtkdTextConfig, "text", MagtkdTextEncoder
    main_input_name = "input_ids"

    @classmethod
    def _adapt_pretrained_encoder(cls, config, encoder):
        target = config.encoder_config.vocab_size
        if target is not None and encoder.get_input_embeddings().num_embeddings != target:
            encoder.resize_token_embeddings(target)
        return encoder

    def forward(self, input_ids, attention_mask=None, labels=None, return_dict=None) -> MagtkdUnimodalOutput | tuple:
        """`input_ids`, `attention_mask` (`(num_utterances, sequence_length)`): the processor's prompt tokens, left
        padded, the mask token last. `labels` (`(num_utterances,)`, *optional*): class indices, -100 to ignore."""
        return self._output(self.text_encoder(input_ids, attention_mask), labels, return_dict)


class MagtkdAudioModel(MagtkdUnimodalModel):
    r"""MAGTKD's audio model: [`MagtkdAudioEncoder`] (data2vec-audio, first-frame feature) and a classifier."""

    config_class, modality, feature_module_class = MagtkdAudioConfig, "audio", MagtkdAudioEncoder
    main_input_name = "input_values"

    def forward(self, input_values, attention_mask=None, labels=None, return_dict=None) -> MagtkdUnimodalOutput:
        """`input_values` (`(num_utterances, num_samples)`): the processor's waveforms; `attention_mask` (same shape,
        1 = a real sample): the processor's `audio_attention_mask`. `labels`: as the text model's."""
        return self._output(self.audio_encoder(input_values, attention_mask), labels, return_dict)


class MagtkdVideoModel(MagtkdUnimodalModel):
    r"""MAGTKD's video model: [`MagtkdVideoEncoder`] (TimeSformer, CLS feature) and a classifier."""

    config_class, modality, feature_module_class = MagtkdVideoConfig, "video", MagtkdVideoEncoder
    main_input_name = "pixel_values"

    def forward(self, pixel_values, labels=None, return_dict=None) -> MagtkdUnimodalOutput | tuple:
        """`pixel_values` (`(num_utterances, num_frames, 3, height, width)`): the processor's frames. `labels`: as the
        text model's."""
        return self._output(self.video_encoder(pixel_values), labels, return_dict)


class MagtkdDistillationModel(nn.Module):
    r"""
    Stage 2: an audio or video student learns from the frozen text model. The student's objective is
    [`~magtkd_hf.losses.distillation_loss`] with `loss_settings` (`logit_weight`, `feature_weight`, temperatures, ...):
    its cross-entropy plus `logit_weight` times the DIST logit-relation loss to the teacher's logits plus
    `feature_weight` times the feature-relation loss to the teacher's features. The teacher stays in eval mode without
    gradients. The stage's output is the student (`model.student.save_pretrained`), a [`MagtkdAudioModel`] or
    [`MagtkdVideoModel`].
    """

    def __init__(self, student: MagtkdAudioModel | MagtkdVideoModel, teacher: MagtkdTextModel, **loss_settings):
        super().__init__()
        if student.config.label_names != teacher.config.label_names:
            raise ValueError(
                f"The student's labels {student.config.label_names} differ from the teacher's "
                f"{teacher.config.label_names}."
            )
        self.student = student
        self.teacher = teacher.requires_grad_(False).eval()
        self.loss_settings = loss_settings

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, student_inputs: dict, teacher_inputs: dict, labels=None) -> MagtkdDistillationOutput:
        r"""
        Args:
            student_inputs (`dict`): the student's forward arguments (its modality's processor inputs).
            teacher_inputs (`dict`): the teacher's (`input_ids`, `attention_mask` of the utterances' prompts).
            labels (`torch.LongTensor` of shape `(num_utterances,)`, *optional*): class indices, -100 to ignore.
        """
        student = self.student(**student_inputs, return_dict=True)
        with torch.no_grad():
            teacher = self.teacher(**teacher_inputs, return_dict=True)
        loss = None
        if labels is not None:
            loss = distillation_loss(
                student.logits.float(), teacher.logits.float(), labels.to(student.logits.device),
                student.features.float(), teacher.features.float(), **self.loss_settings,
                class_weights=self.student.config.class_weights,
            )
        return MagtkdDistillationOutput(loss=loss, logits=student.logits, teacher_logits=teacher.logits)


__all__ = [
    "MagtkdAudioEncoder",
    "MagtkdEncoderOutput",
    "MagtkdAudioModel",
    "MagtkdDistillationModel",
    "MagtkdDistillationOutput",
    "MagtkdTextEncoder",
    "MagtkdTextModel",
    "MagtkdUnimodalOutput",
    "MagtkdVideoEncoder",
    "MagtkdVideoModel",
]
