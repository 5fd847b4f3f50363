"""Configurations of MAGTKD: the fusion stage alone (`MagtkdFusionConfig`) and the end-to-end model (`MagtkdConfig`)."""

from typing import ClassVar

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

MELD_LABELS = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")
IEMOCAP_LABELS = ("ang", "exc", "fru", "hap", "neu", "sad")

# The released recipe's settings per dataset (spec sections 2, 4 and 6).
_PRESETS = {
    "meld": {
        "labels": MELD_LABELS,
        "audio_anchor_loss_weight": 0.01,
        "video_anchor_loss_weight": 0.08,
        "anchor_feature_loss": False,
        "audio_feature_source": "audio_kd",
        "video_feature_source": "video_kd",
        "released_num_speakers": 304,
    },
    "iemocap": {
        "labels": IEMOCAP_LABELS,
        "audio_anchor_loss_weight": 0.7,
        "video_anchor_loss_weight": 0.8,
        "anchor_feature_loss": True,
        "audio_feature_source": "audio_kd",
        "video_feature_source": "video",
        "released_num_speakers": 2,
    },
}
# The released fusion model pads past a conversation's end with speaker index 2.
_RELEASED_SPEAKER_PADDING_INDEX = 2
FEATURE_SOURCES = ("text", "audio", "video", "audio_kd", "video_kd")


def labels_to_maps(labels):
    """`("a", "b")` -> (`{0: "a", 1: "b"}`, `{"a": 0, "b": 1}`)."""
    id2label = dict(enumerate(labels))
    return id2label, {label: index for index, label in id2label.items()}


class MagtkdFusionConfig(PreTrainedConfig):
    r"""
    Configuration of the multi-modal anchor gated transformer (stage 4 of MAGTKD, spec section 6), which fuses
    per-utterance text, audio and video features of a conversation.

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
        audio_anchor_loss_weight, video_anchor_loss_weight (`float`): alpha and beta of the fusion loss.
        anchor_feature_loss (`bool`): add the feature-relation loss to the anchors' distillation terms.
        logit_loss_temperature, logit_loss_inter_weight, logit_loss_intra_weight (`float`): tau, beta and gamma of
            the DIST logit-relation loss.
        feature_loss_temperature (`float`): temperature of the feature-relation loss.
        audio_feature_source, video_feature_source (`str`): which stage-3 features feed the audio and video inputs
            (`"audio_kd"`/`"audio"`, `"video_kd"`/`"video"`).

    Labels default to MELD's seven emotions in the spec's order. Presets: [`~MagtkdFusionConfig.for_meld`],
    [`~MagtkdFusionConfig.for_iemocap`], [`~MagtkdFusionConfig.from_preset`].
    """

    model_type: ClassVar[str] = "magtkd_fusion"

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
    audio_anchor_loss_weight: float = 0.01
    video_anchor_loss_weight: float = 0.08
    anchor_feature_loss: bool = False
    logit_loss_temperature: float = 2.0
    logit_loss_inter_weight: float = 1.0
    logit_loss_intra_weight: float = 1.0
    feature_loss_temperature: float = 1.0
    audio_feature_source: str = "audio_kd"
    video_feature_source: str = "video_kd"

    def __post_init__(self, **kwargs):
        if self.id2label is None and kwargs.get("num_labels") is None:
            self.id2label, default_label2id = labels_to_maps(MELD_LABELS)
            self.label2id = self.label2id if self.label2id is not None else default_label2id
        super().__post_init__(**kwargs)
        if self.label2id is None:
            self.label2id = {label: index for index, label in self.id2label.items()}
        if self.speaker_padding_index is None:
            self.speaker_padding_index = self.num_speakers
        self._check_values()

    @property
    def speaker_table_size(self) -> int:
        """Rows of the speaker embedding: the known speakers plus one (the padding row by default; released tables
        have this extra row too, although they pad with index 2)."""
        return self.num_speakers + 1

    def _check_values(self):
        if self.hidden_size <= 0 or self.num_attention_heads <= 0:
            raise ValueError("`hidden_size` and `num_attention_heads` must be positive.")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be divisible by `num_attention_heads` "
                f"({self.num_attention_heads})."
            )
        if self.hidden_size % 2 != 0:
            raise ValueError(f"`hidden_size` ({self.hidden_size}) must be even for the sinusoidal positions.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {self.dropout}.")
        if self.num_speakers < 1 or not 0 <= self.speaker_padding_index <= self.num_speakers:
            raise ValueError(
                f"`speaker_padding_index` ({self.speaker_padding_index}) must lie in [0, num_speakers="
                f"{self.num_speakers}] and `num_speakers` must be positive."
            )
        for name in ("logit_loss_temperature", "feature_loss_temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be positive, got {getattr(self, name)}.")
        if self.audio_feature_source not in ("audio", "audio_kd"):
            raise ValueError(f"`audio_feature_source` must be 'audio' or 'audio_kd', got {self.audio_feature_source!r}.")
        if self.video_feature_source not in ("video", "video_kd"):
            raise ValueError(f"`video_feature_source` must be 'video' or 'video_kd', got {self.video_feature_source!r}.")
        self._check_label_maps()

    def _check_label_maps(self):
        id2label = {int(index): label for index, label in self.id2label.items()}
        if sorted(id2label) != list(range(len(id2label))):
            raise ValueError(f"`id2label` keys must be 0..{len(id2label) - 1}, got {sorted(id2label)}.")
        label2id = {label: int(index) for label, index in self.label2id.items()}
        inverse = {label: index for index, label in id2label.items()}
        if label2id != inverse:
            raise ValueError(f"`label2id` {label2id} disagrees with `id2label` {id2label}.")

    @classmethod
    def from_preset(cls, name: str, released_speaker_table: bool = False, **overrides):
        """
        The released recipe's settings for `name` ("meld" or "iemocap"): labels in the spec's order, loss weights,
        feature sources. `released_speaker_table=True` also takes the released speaker table (MELD: 304 global
        speakers, IEMOCAP: 2; padding index 2), as needed to convert a released checkpoint. `overrides` win.
        """
        key = name.lower()
        if key not in _PRESETS:
            raise ValueError(f"Unknown preset {name!r}; known presets: {sorted(_PRESETS)}.")
        preset = dict(_PRESETS[key])
        released_num_speakers = preset.pop("released_num_speakers")
        id2label, label2id = labels_to_maps(preset.pop("labels"))
        settings = {"id2label": id2label, "label2id": label2id, **preset}
        if released_speaker_table:
            settings.update(num_speakers=released_num_speakers, speaker_padding_index=_RELEASED_SPEAKER_PADDING_INDEX)
        settings.update(overrides)
        return cls(**settings)

    @classmethod
    def for_meld(cls, **kwargs):
        """Released MELD settings; see [`~MagtkdFusionConfig.from_preset`]."""
        return cls.from_preset("meld", **kwargs)

    @classmethod
    def for_iemocap(cls, **kwargs):
        """Released IEMOCAP settings; see [`~MagtkdFusionConfig.from_preset`]."""
        return cls.from_preset("iemocap", **kwargs)

    def to_fusion_config(self) -> "MagtkdFusionConfig":
        """The fusion-only config holding this config's fusion fields."""
        field_names = {name for name in MagtkdFusionConfig.__dataclass_fields__}
        values = {name: value for name, value in self.to_dict().items() if name in field_names}
        return MagtkdFusionConfig(**values)


class MagtkdConfig(MagtkdFusionConfig):
    r"""
    Configuration of the end-to-end MAGTKD model: the three encoders' configs plus every fusion field of
    [`MagtkdFusionConfig`].

    Args:
        text_config (`dict` or `PreTrainedConfig`, *optional*): a RoBERTa-family config; defaults to roberta-large's
            architecture.
        audio_config (`dict` or `PreTrainedConfig`, *optional*): a Data2VecAudio config; defaults to
            data2vec-audio-base's architecture (with the released `mask_time_length=3`).
        video_config (`dict` or `PreTrainedConfig`, *optional*): a TimeSformer config; defaults to timesformer-base
            (Kinetics-400) with 8 frames of 224 x 224.
        **kwargs: the fusion fields of [`MagtkdFusionConfig`].

    Example:

    ```python
    >>> from magtkd_hf import MagtkdConfig
    >>> config = MagtkdConfig.for_meld()
    >>> config.text_config.hidden_size, config.hidden_size, config.num_labels
    (1024, 768, 7)
    ```
    """

    model_type: ClassVar[str] = "magtkd"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(
            config_class=AutoConfig,
            model_type="roberta",
            init_kwargs={
                "hidden_size": 1024,
                "num_hidden_layers": 24,
                "num_attention_heads": 16,
                "intermediate_size": 4096,
                "max_position_embeddings": 514,
                "type_vocab_size": 1,
                "layer_norm_eps": 1e-5,
                # roberta-large's 50,265 tokens plus the 9 speaker tokens <s1>..<s9> (the released text model's rows)
                "vocab_size": 50274,
            },
        ),
        "audio_config": SubConfigSpec(
            config_class=AutoConfig, model_type="data2vec-audio", init_kwargs={"mask_time_length": 3}
        ),
        "video_config": SubConfigSpec(config_class=AutoConfig, model_type="timesformer"),
    }

    text_config: dict | PreTrainedConfig | None = None
    audio_config: dict | PreTrainedConfig | None = None
    video_config: dict | PreTrainedConfig | None = None

    def _check_values(self):
        super()._check_values()
        # The audio and video encoders' features enter the fusion as they are (spec sections 3 and 6); the text
        # feature goes through W_t, so any text width works.
        for name in ("audio_config", "video_config"):
            encoder_config = getattr(self, name, None)
            encoder_hidden = getattr(encoder_config, "hidden_size", None)
            if encoder_hidden is not None and encoder_hidden != self.hidden_size:
                raise ValueError(
                    f"`{name}.hidden_size` ({encoder_hidden}) must equal the fusion `hidden_size` ({self.hidden_size}): "
                    f"the {name.split('_')[0]} encoder's feature enters the fusion without a projection. Give an "
                    f"{name} of width {self.hidden_size} or set `hidden_size={encoder_hidden}`."
                )


__all__ = ["MagtkdConfig", "MagtkdFusionConfig", "MELD_LABELS", "IEMOCAP_LABELS"]
