"""Configurations of MAGTKD, one per model (the CLIP pattern): the text, audio and video stage models, the fusion, and the
end-to-end composite holding the four as sub-configs. `DATASETS` (dataset_table.py) is the one table of dataset facts."""

from typing import ClassVar

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .dataset_table import (  # noqa: F401 (importable from here too)
    DATASETS,
    FEATURE_SOURCES,
    FUSION_PRESET_KEYS,
    IEMOCAP_LABELS,
    MELD_LABELS,
    MODALITIES,
    RELEASED_SPEAKER_PADDING_INDEX,
    dataset_facts,
)


def labels_to_maps(labels):
    """`("a", "b")` -> (`{0: "a", 1: "b"}`, `{"a": 0, "b": 1}`)."""
    id2label = dict(enumerate(labels))
    return id2label, {label: index for index, label in id2label.items()}


def check_setting(config, name: str, allowed: str, holds, integer: bool = False, value=None) -> None:
    """Raise a one-line ValueError naming `config`'s class, the setting `name`, its value and the `allowed` range unless
    the value is a number (an integer where `integer`) for which `holds(value)` is true. `value` defaults to the
    attribute `name`."""
    value = getattr(config, name) if value is None else value
    number = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    if not number or not holds(value):
        raise ValueError(f"{type(config).__name__}: `{name}` must be {allowed}, got {value!r}.")


AT_LEAST_ONE = ("an integer >= 1", lambda value: value >= 1, True)
POSITIVE = ("a number > 0", lambda value: value > 0)
NOT_NEGATIVE = ("a number >= 0", lambda value: value >= 0)
PROBABILITY = ("in [0, 1)", lambda value: 0 <= value < 1)


def check_encoder_widths(config) -> None:
    """The encoder config's width and heads (a RoBERTa-, data2vec- or TimeSformer-family config), at build time rather
    than as a tensor error in the first forward."""
    encoder = config.encoder_config
    for name in ("hidden_size", "num_hidden_layers", "num_attention_heads"):
        check_setting(config, f"encoder_config.{name}", *AT_LEAST_ONE, value=getattr(encoder, name, None))
    heads = encoder.num_attention_heads
    check_setting(config, "encoder_config.hidden_size", f"a multiple of encoder_config.num_attention_heads ({heads})",
                  lambda value: value % heads == 0, integer=True, value=encoder.hidden_size)


# Imported as the package (not as a folder's remote-code copy): `import magtkd_hf` registers the conversation pipeline
# task, so a loaded config leaves out the folder's own entry for that task (see `MagtkdConfig.__post_init__`).
IS_PACKAGE = __name__.startswith("magtkd_hf.")


class MagtkdLabelsMixin:
    """Labels default to MELD's seven emotions; `id2label` and `label2id` must be inverse maps over 0..C-1."""

    def _default_labels(self, kwargs):
        if self.id2label is None and kwargs.get("num_labels") is None:
            self.id2label, default_label2id = labels_to_maps(MELD_LABELS)
            self.label2id = self.label2id if self.label2id is not None else default_label2id

    def _complete_labels(self):
        if self.label2id is None:
            self.label2id = {label: index for index, label in self.id2label.items()}
        id2label = {int(index): label for index, label in self.id2label.items()}
        check_setting(self, "num_labels", "an integer >= 2 (classes to tell apart)", lambda value: value >= 2,
                      integer=True, value=len(id2label))
        if sorted(id2label) != list(range(len(id2label))):
            raise ValueError(f"`id2label` keys must be 0..{len(id2label) - 1}, got {sorted(id2label)}.")
        label2id = {label: int(index) for label, index in self.label2id.items()}
        if label2id != {label: index for index, label in id2label.items()}:
            raise ValueError(f"`label2id` {label2id} disagrees with `id2label` {id2label}.")
        weights = getattr(self, "class_weights", None)
        if weights is not None and (len(weights) != len(id2label) or min(weights) <= 0):
            raise ValueError(f"`class_weights` must hold one positive weight per label ({len(id2label)}), got {weights}.")

    @property
    def label_names(self) -> list[str]:
        return [self.id2label[index] for index in range(self.num_labels)]

    @classmethod
    def from_preset(cls, name: str, **overrides):
        """This config with the labels of dataset `name` ("meld" or "iemocap"); `overrides` win."""
        id2label, label2id = labels_to_maps(dataset_facts(name)["labels"])
        return cls(**{"id2label": id2label, "label2id": label2id, **overrides})

    @classmethod
    def for_meld(cls, **overrides):
        """The released MELD settings; see `from_preset`."""
        return cls.from_preset("meld", **overrides)

    @classmethod
    def for_iemocap(cls, **overrides):
        """The released IEMOCAP settings; see `from_preset`."""
        return cls.from_preset("iemocap", **overrides)


class MagtkdTextConfig(MagtkdLabelsMixin, PreTrainedConfig):
    r"""
    Configuration of [`MagtkdTextModel`]: a RoBERTa-family encoder reads the utterance's prompt; its hidden state at the
    mask token, projected to `feature_size`, is the utterance's text feature.

    Args:
        encoder_config (`dict` or `PreTrainedConfig`, *optional*): the encoder; defaults to roberta-large's architecture
            with the 9 speaker tokens added to its vocabulary (50,274 rows, as the released text model).
        feature_size (`int`, defaults to 768): width of the projected feature (the fusion width).
        id2label, label2id: the classes of the stage's classifier (MELD's seven emotions by default).
        class_weights (`list[float]`, *optional*): weights of the classes in the cross-entropy (training only; the
            training recipe's `class_weighting` sets them from the train split). None: unweighted, as the paper.
    """

    model_type: ClassVar[str] = "magtkd_text"
    sub_configs_defaults = {
        "encoder_config": SubConfigSpec(
            config_class=AutoConfig,
            model_type="roberta",
            init_kwargs={
                "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
                "max_position_embeddings": 514, "type_vocab_size": 1, "layer_norm_eps": 1e-5, "vocab_size": 50274,
            },
        )
    }

    encoder_config: dict | PreTrainedConfig | None = None
    feature_size: int = 768
    class_weights: list[float] | None = None

    def __post_init__(self, **kwargs):
        self._default_labels(kwargs)
        super().__post_init__(**kwargs)
        self._complete_labels()
        check_setting(self, "feature_size", *AT_LEAST_ONE)
        check_encoder_widths(self)

    def get_text_config(self, decoder=None, encoder=None) -> PreTrainedConfig:
        """The encoder's config: where `resize_token_embeddings` records the vocabulary size."""
        return self.encoder_config


class _MagtkdMediaConfig(MagtkdLabelsMixin, PreTrainedConfig):
    """Audio and video stage configs: the encoder's own hidden state is the feature (no projection). `class_weights`: as
    [`MagtkdTextConfig`]'s."""

    encoder_config: dict | PreTrainedConfig | None = None
    class_weights: list[float] | None = None

    def __post_init__(self, **kwargs):
        self._default_labels(kwargs)
        super().__post_init__(**kwargs)
        self._complete_labels()
        check_encoder_widths(self)

    @property
    def feature_size(self) -> int:
        return int(self.encoder_config.hidden_size)


class MagtkdAudioConfig(_MagtkdMediaConfig):
    r"""
    Configuration of [`MagtkdAudioModel`]: a data2vec-audio encoder; its last hidden state at the first frame is the
    utterance's audio feature.

    Args:
        encoder_config (`dict` or `PreTrainedConfig`, *optional*): defaults to data2vec-audio-base's architecture with
            the released `mask_time_length=3`.
        id2label, label2id: the classes of the stage's classifier.
    """

    model_type: ClassVar[str] = "magtkd_audio"
    sub_configs_defaults = {
        "encoder_config": SubConfigSpec(
            config_class=AutoConfig, model_type="data2vec-audio", init_kwargs={"mask_time_length": 3}
        )
    }


class MagtkdVideoConfig(_MagtkdMediaConfig):
    r"""
    Configuration of [`MagtkdVideoModel`]: a TimeSformer encoder over the utterance's frames; its last hidden state at
    the CLS position is the utterance's video feature.

    Args:
        encoder_config (`dict` or `PreTrainedConfig`, *optional*): defaults to timesformer-base (Kinetics-400), 8
            frames of 224 x 224.
        id2label, label2id: the classes of the stage's classifier.
    """

    model_type: ClassVar[str] = "magtkd_video"
    sub_configs_defaults = {"encoder_config": SubConfigSpec(config_class=AutoConfig, model_type="timesformer")}

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        encoder = self.encoder_config
        for name in ("num_frames", "patch_size", "image_size"):
            check_setting(self, f"encoder_config.{name}", *AT_LEAST_ONE, value=getattr(encoder, name, None))
        check_setting(self, "encoder_config.image_size", f">= encoder_config.patch_size ({encoder.patch_size})",
                      lambda value: value >= encoder.patch_size, integer=True, value=encoder.image_size)


class MagtkdFusionConfig(MagtkdLabelsMixin, PreTrainedConfig):
    r"""
    Configuration of [`MagtkdFusionModel`], the multi-modal anchor gated transformer that fuses per-utterance text,
    audio and video features of a conversation.

    Args:
        hidden_size (`int`, defaults to 768): width H of the utterance features and of the fusion blocks.
        num_attention_heads (`int`, defaults to 8): heads of every fusion block; must divide `hidden_size`.
        intermediate_size (`int`, defaults to 768): width of the blocks' feed-forward layer.
        dropout (`float`, defaults to 0.5): dropout on block inputs (cross-attention paths), attention weights,
            residual branches and feed-forward activations.
        layer_norm_eps (`float`, defaults to 1e-6): epsilon of the feed-forward LayerNorm.
        max_position_embeddings (`int`, defaults to 512): longest conversation (sinusoidal positions).
        num_speakers (`int`, defaults to 9): speakers the speaker table knows (indices `0..num_speakers-1`).
        speaker_padding_index (`int`, *optional*): row used past a conversation's end; defaults to a dedicated
            extra row `num_speakers`. The released models use 2 (a real speaker index as well).
        speaker_init_std (`float`, defaults to 0.1): std of the speaker table's normal initialisation.
        share_text_anchor_block (`bool`, defaults to `True`): the three text-anchor paths share one block and one
            gate, as in the released model; `False` gives each path its own.
        anchor_residual (`bool`, defaults to `False`): add the audio and video anchors' outputs F_a and F_v to the
            text anchor's F_t before the prediction head. In the paper's model (`False`) an utterance's own audio and
            video reach the prediction only through the text anchor's cross-attention over the whole conversation,
            which can spread them over the other utterances when the text features carry little (the demo's tiny
            encoders); the residual gives the head each utterance's own anchors. No weights are added.
        causal (`bool`, defaults to `False`): every utterance attends only to itself and the utterances before it, in
            every block of the three anchors, so that its emotion depends only on what was said so far (streaming;
            `magtkd_hf.MagtkdStream`). `False` is the paper's model, which reads the whole conversation.
        modality_dropout (`float`, defaults to 0.0): in training mode, the probability that an utterance's audio, and
            apart its video, counts as absent (the missing embedding), to learn without them; never text. 0: the paper.
        audio_anchor_loss_weight, video_anchor_loss_weight (`float`): weights of the audio and video anchors'
            distillation terms in the fusion loss.
        anchor_feature_loss (`bool`): add the feature-relation loss to the anchors' distillation terms.
        logit_loss_temperature, logit_loss_inter_weight, logit_loss_intra_weight (`float`): temperature and the
            inter-/intra-class weights of the DIST logit-relation loss.
        feature_loss_temperature (`float`): temperature of the feature-relation loss.
        audio_feature_source, video_feature_source (`str`): which stage-3 features feed the audio and video inputs
            (`"audio_kd"`/`"audio"`, `"video_kd"`/`"video"`).
        class_weights (`list[float]`, *optional*): weights of the classes in the cross-entropy terms of the fusion loss (training only; the
            training recipe's `class_weighting` sets them from the train split). None: unweighted, as the paper.

    Presets: [`~MagtkdFusionConfig.for_meld`], [`~MagtkdFusionConfig.for_iemocap`], [`~MagtkdFusionConfig.from_preset`].
    """

    model_type: ClassVar[str] = "magtkd_fusion"
    # `Trainer.predict` keeps the prediction alone: the anchor heads' logits and hidden states are not it.
    keys_to_ignore_at_inference: ClassVar[list[str]] = [
        "audio_logits", "video_logits", "text_anchor_hidden_states", "audio_anchor_hidden_states",
        "video_anchor_hidden_states", "hidden_states", "attentions",
    ]

    hidden_size: int = 768
    num_attention_heads: int = 8
    intermediate_size: int = 768
    dropout: float = 0.5
    layer_norm_eps: float = 1e-6
    max_position_embeddings: int = 512
    num_speakers: int = 9
    speaker_padding_index: int | None = None
    speaker_init_std: float = 0.1
    share_text_anchor_block: bool = True
    anchor_residual: bool = False
    causal: bool = False
    modality_dropout: float = 0.0
    audio_anchor_loss_weight: float = 0.01
    video_anchor_loss_weight: float = 0.08
    anchor_feature_loss: bool = False
    logit_loss_temperature: float = 2.0
    logit_loss_inter_weight: float = 1.0
    logit_loss_intra_weight: float = 1.0
    feature_loss_temperature: float = 1.0
    audio_feature_source: str = "audio_kd"
    video_feature_source: str = "video_kd"
    class_weights: list[float] | None = None

    def __post_init__(self, **kwargs):
        self._default_labels(kwargs)
        super().__post_init__(**kwargs)
        self._complete_labels()
        if self.speaker_padding_index is None:
            self.speaker_padding_index = self.num_speakers
        self._check_values()

    @property
    def speaker_table_size(self) -> int:
        """Rows of the speaker embedding: the known speakers plus one (the padding row by default; released tables
        have this extra row too, although they pad with index 2)."""
        return self.num_speakers + 1

    def _check_values(self):
        for name in ("hidden_size", "num_attention_heads", "intermediate_size", "max_position_embeddings"):
            check_setting(self, name, *AT_LEAST_ONE)
        for ranges, names in (
            (PROBABILITY, ("dropout", "modality_dropout")),
            (POSITIVE, ("layer_norm_eps", "logit_loss_temperature", "feature_loss_temperature")),
            (NOT_NEGATIVE, ("speaker_init_std", "audio_anchor_loss_weight", "video_anchor_loss_weight",
                            "logit_loss_inter_weight", "logit_loss_intra_weight")),
        ):
            for name in names:
                check_setting(self, name, *ranges)
        heads = self.num_attention_heads
        check_setting(self, "hidden_size", f"an even multiple of num_attention_heads ({heads}) (sinusoidal positions)",
                      lambda value: value % heads == 0 and value % 2 == 0, integer=True)
        check_setting(self, "num_speakers", *AT_LEAST_ONE)
        check_setting(self, "speaker_padding_index", f"an integer in [0, num_speakers={self.num_speakers}]",
                      lambda value: 0 <= value <= self.num_speakers, integer=True)
        for name, choices in (("audio_feature_source", ("audio", "audio_kd")),
                              ("video_feature_source", ("video", "video_kd"))):
            if getattr(self, name) not in choices:
                raise ValueError(
                    f"{type(self).__name__}: `{name}` must be one of {choices}, got {getattr(self, name)!r}."
                )

    @classmethod
    def from_preset(cls, name: str, released_speaker_table: bool = False, **overrides):
        """
        The released recipe's fusion settings for `name` ("meld" or "iemocap"): labels, loss weights, feature
        sources. `released_speaker_table=True` also takes the released speaker table (MELD: 304 speakers, IEMOCAP: 2;
        padding index 2), as a released checkpoint needs. `overrides` win.
        """
        facts = dataset_facts(name)
        settings = {key: facts[key] for key in FUSION_PRESET_KEYS}
        if released_speaker_table:
            settings.update(
                num_speakers=facts["released_num_speakers"], speaker_padding_index=RELEASED_SPEAKER_PADDING_INDEX
            )
        return super().from_preset(name, **{**settings, **overrides})


_STAGE_CONFIGS = {"text_config": MagtkdTextConfig, "audio_config": MagtkdAudioConfig, "video_config": MagtkdVideoConfig}


class MagtkdConfig(MagtkdLabelsMixin, PreTrainedConfig):
    r"""
    Configuration of the end-to-end [`MagtkdForEmotionRecognition`]: the text, audio and video stage configs and the
    fusion config, as sub-configs (the CLIP pattern).

    Args:
        text_config (`dict`, [`MagtkdTextConfig`] or an encoder config, *optional*): the text stage; a plain
            RoBERTa-family config is taken as its `encoder_config`.
        audio_config (`dict`, [`MagtkdAudioConfig`] or an encoder config, *optional*): the audio stage (data2vec-audio).
        video_config (`dict`, [`MagtkdVideoConfig`] or an encoder config, *optional*): the video stage (TimeSformer).
        fusion_model_config (`dict` or [`MagtkdFusionConfig`], *optional*): the fusion; defaults to the paper's (768
            wide, 8 heads, MELD's loss weights). (Not `fusion_config`: transformers reserves that name for kernel
            fusions in `from_pretrained`.)
        id2label, label2id: the model's classes; default to the fusion's, and are given to every sub-config.

    Example:

    ```python
    >>> from magtkd_hf import MagtkdConfig
    >>> config = MagtkdConfig.for_meld()
    >>> config.text_config.encoder_config.hidden_size, config.fusion_model_config.hidden_size, config.num_labels
    (1024, 768, 7)
    ```
    """

    model_type: ClassVar[str] = "magtkd"
    # `Trainer.prediction_step` drops the outputs named here (a class attribute, as XLNetConfig's, so that it is not
    # written into config.json): `trainer.predict().predictions` is then the logits (B, N, C) aligned with the labels,
    # not a tuple holding the anchor heads and the (U, H) feature arrays.
    keys_to_ignore_at_inference: ClassVar[list[str]] = [
        "audio_logits", "video_logits", "text_features", "audio_features", "video_features",
        *(f"{part}_{kind}" for part in ("text", "audio", "video", "fusion")
          for kind in ("hidden_states", "attentions")),
    ]
    sub_configs_defaults = {**_STAGE_CONFIGS, "fusion_model_config": MagtkdFusionConfig}

    text_config: dict | PreTrainedConfig | None = None
    audio_config: dict | PreTrainedConfig | None = None
    video_config: dict | PreTrainedConfig | None = None
    fusion_model_config: dict | PreTrainedConfig | None = None

    def __post_init__(self, **kwargs):
        misplaced = sorted(set(kwargs) & set(MagtkdFusionConfig.__dataclass_fields__) - set(PreTrainedConfig.__dataclass_fields__))
        if misplaced:
            raise TypeError(
                f"MagtkdConfig got fusion settings {misplaced}: give them in `fusion_model_config` "
                "(e.g. MagtkdConfig(fusion_model_config=MagtkdFusionConfig(hidden_size=...)))."
            )
        for name, stage_class in _STAGE_CONFIGS.items():
            setattr(self, name, _as_stage_config(getattr(self, name), stage_class))
        if self.id2label is None and kwargs.get("num_labels") is None:
            fusion = self.fusion_model_config
            fusion_id2label = fusion.id2label if isinstance(fusion, PreTrainedConfig) else (fusion or {}).get("id2label")
            if fusion_id2label is not None:
                self.id2label = {int(index): label for index, label in fusion_id2label.items()}
        self._default_labels(kwargs)
        super().__post_init__(**kwargs)
        self._complete_labels()
        self._share_labels()
        self._check_widths()
        if IS_PACKAGE:
            # transformers' `pipeline()` asks for trust_remote_code whenever a config names the task in
            # `custom_pipelines`; with the package imported the registered task serves it, without the folder's code.
            self.__dict__.pop("custom_pipelines", None)

    def _share_labels(self):
        """The end-to-end model predicts the fusion's classes; the stage configs carry the same names."""
        id2label = {int(index): label for index, label in self.id2label.items()}
        for name in (*_STAGE_CONFIGS, "fusion_model_config"):
            sub_config = getattr(self, name)
            sub_config.id2label = dict(id2label)
            sub_config.label2id = {label: index for index, label in id2label.items()}

    def _check_widths(self):
        """Every stage's feature enters the fusion as it is: its width must be the fusion width."""
        hidden_size = self.fusion_model_config.hidden_size
        for name in _STAGE_CONFIGS:
            feature_size = getattr(self, name).feature_size
            if feature_size != hidden_size:
                raise ValueError(
                    f"`{name}` gives features of width {feature_size}, but the fusion is {hidden_size} wide "
                    f"(`fusion_model_config.hidden_size`): the {name.split('_')[0]} feature enters the fusion without a "
                    f"projection. Give a {name} of width {hidden_size} or a fusion of width {feature_size}."
                )

    def get_text_config(self, decoder=None, encoder=None) -> PreTrainedConfig:
        """The text encoder's config: where `resize_token_embeddings` records the vocabulary size."""
        return self.text_config.encoder_config

    @classmethod
    def from_preset(cls, name: str, text_config=None, audio_config=None, video_config=None, **fusion_overrides):
        """
        The released recipe's settings for dataset `name`: its labels and fusion settings
        ([`MagtkdFusionConfig.from_preset`], with `fusion_overrides`), the given (or default) stage configs.
        """
        fusion_model_config = MagtkdFusionConfig.from_preset(name, **fusion_overrides)
        return cls(text_config=text_config, audio_config=audio_config, video_config=video_config,
                   fusion_model_config=fusion_model_config)


def _as_stage_config(value, stage_class):
    """A stage config from a stage config, an encoder config or a dict of either (`None` stays: the default)."""
    if value is None or isinstance(value, stage_class):
        return value
    if isinstance(value, PreTrainedConfig):
        return stage_class(encoder_config=value)
    if isinstance(value, dict) and value.get("model_type", stage_class.model_type) != stage_class.model_type:
        return stage_class(encoder_config=value)
    return value


# Every config class of the package, one per model class.
CONFIG_CLASSES = (MagtkdTextConfig, MagtkdAudioConfig, MagtkdVideoConfig, MagtkdFusionConfig, MagtkdConfig)

__all__ = [
    "CONFIG_CLASSES",
    "DATASETS",
    "FEATURE_SOURCES",
    "IEMOCAP_LABELS",
    "MELD_LABELS",
    "MODALITIES",
    "MagtkdAudioConfig",
    "MagtkdConfig",
    "MagtkdFusionConfig",
    "MagtkdTextConfig",
    "MagtkdVideoConfig",
    "dataset_facts",
]
