"""Every stage ([`STAGES`]) and every training setting, declared once: [`StageSettings`] (one stage's),
[`ModelSettings`] (the fusion's), [`ProcessorSettings`] (the text prompt's), [`RunSettings`] and [`TrainingConfig`]
(a run). `magtkd-hf train`'s options are their fields (`transformers.HfArgumentParser`); recipe files are checked
against them."""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any, Literal, Mapping, Optional

from ..configuration_magtkd import FEATURE_SOURCES, MagtkdFusionConfig
from ..processors.prompt import TEXT_CONTEXTS


@dataclass(frozen=True)
class StageSpec:
    """One stage: `kind` "unimodal" (stage 1), "distill" (stage 2), "extract" (stage 3) or "fusion" (stage 4);
    `modality` of the model it trains; `teacher` (stage 2) the frozen teacher's stage; `feature` the stage-3 column its
    model fills; `folder` its folder under the run's output folder."""

    name: str
    kind: str
    modality: str | None = None
    teacher: str | None = None
    feature: str | None = None
    folder: str = ""
    description: str = ""


STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in (
        StageSpec("text", "unimodal", "text", feature="text", folder="text", description="stage 1: text model"),
        StageSpec("audio", "unimodal", "audio", feature="audio", folder="audio", description="stage 1: audio model"),
        StageSpec("video", "unimodal", "video", feature="video", folder="video", description="stage 1: video model"),
        StageSpec("distill-audio", "distill", "audio", teacher="text", feature="audio_kd", folder="distill-audio",
                  description="stage 2: audio student distilled from the frozen text model"),
        StageSpec("distill-video", "distill", "video", teacher="text", feature="video_kd", folder="distill-video",
                  description="stage 2: video student distilled from the frozen text model"),
        StageSpec("extract-features", "extract", folder="features",
                  description="stage 3: utterance features of every split, grouped by conversation"),
        StageSpec("fusion", "fusion", folder="fusion", description="stage 4: the anchor gated fusion on the features"),
    )
}
# The stage whose model fills each stage-3 feature column.
FEATURE_STAGE = {spec.feature: name for name, spec in STAGES.items() if spec.feature}


def _option(default=None, help: str = "", **extra):
    """A settings field: its default and its `--help` text (and any other `add_argument` keyword)."""
    return field(default=default, metadata={"help": help, **extra})


class _Settings:
    """Base of the settings dataclasses: a value from a JSON file or `--set` takes its field's type (`"2"` -> 2,
    `"true"` -> True) and a value outside a field's choices is refused."""

    def __post_init__(self):
        for name, kind in typing.get_type_hints(type(self)).items():
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, _as_type(name, value, kind))

    def given(self) -> dict:
        """The settings that are set (not None)."""
        return {item.name: getattr(self, item.name) for item in fields(self) if getattr(self, item.name) is not None}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str):
        """`cls(**values)` of the values set (not None); an unknown name or a bad value is refused, naming `where`."""
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{where}: unknown setting{'s' if len(unknown) > 1 else ''} "
                             f"{', '.join(map(repr, unknown))}; known: {sorted(known)}")
        try:
            return cls(**{name: value for name, value in values.items() if value is not None})
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None


def _as_type(name: str, value, kind):
    base = next((arg for arg in typing.get_args(kind) if arg is not type(None)), kind)  # Optional[X] -> X
    if typing.get_origin(base) is Literal:
        if value not in typing.get_args(base):
            raise ValueError(f"{name} must be one of {typing.get_args(base)}, got {value!r}")
    elif base is bool and not isinstance(value, bool):
        if str(value).lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            raise ValueError(f"setting {name!r} must be true or false, got {value!r}")
        return str(value).lower() in ("1", "true", "yes", "on")
    elif base in (int, float):
        return base(value)
    return value


@dataclass
class StageSettings(_Settings):
    """The hyper-parameters of one stage, after the recipe and the overrides are applied."""

    _argument_group_name = "stage settings (default: the recipe's value for the stage; with 'all', every stage)"

    learning_rate: float = _option(1e-05, "AdamW learning rate")
    weight_decay: float = _option(0.01, "AdamW weight decay")
    batch_size: int = _option(4, "utterances (stages 1-3) or conversations (fusion) per step")
    eval_batch_size: int = _option(16, "batch size of the dev and test evaluations")
    epochs: int = _option(10, "training epochs")
    max_steps: int = _option(0, "stop after this many optimiser steps (0: run every epoch); the schedule ends there")
    warmup_ratio: float = _option(0.1, "linear warm-up, as a fraction of the run's optimiser steps (0 to 1)")
    schedule: Literal["optimizer_steps", "released"] = _option(
        "optimizer_steps", "count the schedule in optimiser steps, or in samples as the released scripts did")
    max_grad_norm: float = _option(10.0, "clip gradients at this norm, after unscaling (0: off)")
    gradient_accumulation_steps: int = _option(1, "batches per optimiser step")
    mixed_precision: Literal["no", "fp16", "bf16", "auto"] = _option(
        "no", "autocast precision (fp16 needs a GPU and falls back to full precision on CPU; auto: bf16 on GPUs and "
        "CPUs that compute it natively, else full precision)")
    seed: int = _option(2024, "seed of the initialisation and the batch order")
    num_workers: int = _option(0, "DataLoader workers (media decoding)")
    fused_optimizer: bool = _option(True, "the fused AdamW where torch has it for the device")
    keep_checkpoints: int = _option(2, "epoch checkpoints kept (0: all)")
    class_weighting: Literal["none", "inverse_sqrt", "inverse"] = _option(
        "none", "weight the cross-entropy by the train split's class counts: inverse (n / (C * count), scikit-learn's "
        "'balanced'), inverse_sqrt (its square root; milder), none (the paper)")
    logit_weight: float = _option(0.0, "distillation: weight of the DIST logit-relation loss")
    feature_weight: float = _option(0.0, "distillation: weight of the feature-relation loss")
    logit_temperature: float = _option(2.0, "distillation: temperature of the DIST loss")
    inter_weight: float = _option(1.0, "distillation: DIST weight of the inter-class relation")
    intra_weight: float = _option(1.0, "distillation: DIST weight of the intra-class relation")
    feature_temperature: float = _option(1.0, "distillation: feature-relation temperature")
    student_init: Literal["stage", "encoder"] = _option(
        "stage", "distillation: start the student from its stage-1 model or the encoder")
    report_to: Literal["none", "tensorboard", "wandb"] = _option(
        "none", "experiment tracker through Accelerate (needs the tracker's package)")
    track_test: bool = _option(
        False, "also evaluate test every epoch and report the released scripts' test-selected figure (for comparison "
        "only; selection stays on dev)")

    def __post_init__(self):
        super().__post_init__()
        problems = [f"{name} must be at least 1, got {getattr(self, name)}"
                    for name in ("batch_size", "eval_batch_size", "gradient_accumulation_steps")
                    if getattr(self, name) < 1]
        problems += [f"{name} must not be negative, got {getattr(self, name)}"
                     for name in ("epochs", "max_steps", "learning_rate", "max_grad_norm") if getattr(self, name) < 0]
        if not 0 <= self.warmup_ratio <= 1:
            problems.append(f"warmup_ratio must be between 0 and 1, got {self.warmup_ratio}")
        if problems:
            raise ValueError("; ".join(problems))

    def distillation_loss_settings(self) -> dict:
        """The keyword arguments of `magtkd_hf.losses.distillation_loss` (and `MagtkdDistillationModel`)."""
        return {name: getattr(self, name) for name in ("logit_weight", "feature_weight", "logit_temperature",
                                                       "inter_weight", "intra_weight", "feature_temperature")}


# The `MagtkdFusionConfig` fields a run may set (the rest follow from the dataset and the features), with their help;
# their types come from the config. None: the recipe's value, else the dataset preset's.
FUSION_OPTIONS = {
    "num_attention_heads": {"help": "fusion attention heads"},
    "dropout": {"help": "fusion dropout"},
    "hidden_size": {"help": "fusion width (default: the audio encoder's width, or the features')"},
    "intermediate_size": {"help": "fusion feed-forward width (the width)"},
    "share_text_anchor_block": {"help": "the text anchor's three paths share one block, as released"},
    "causal": {"help": "every utterance attends only to itself and earlier ones (streaming)"},
    "anchor_residual": {"help": "add the audio and video anchors to the text anchor before the prediction head (off: "
                        "the paper's model)"},
    "modality_dropout": {"help": "in training, the probability of treating an utterance's audio, and its video, as "
                         "absent (0: the paper's training)"},
    "audio_feature_source": {"help": "the stage-3 features of the fusion's audio input",
                             "aliases": ["--audio-features"]},
    "video_feature_source": {"help": "the stage-3 features of the fusion's video input",
                             "aliases": ["--video-features"]},
}


def _fusion_option_type(name: str):
    if name.endswith("_feature_source"):  # "audio" or "audio_kd", "video" or "video_kd"
        modality = name.removesuffix("_feature_source")
        return Literal[tuple(source for source in FEATURE_SOURCES if source.startswith(modality))]
    return next(item.type for item in fields(MagtkdFusionConfig) if item.name == name)


ModelSettings = make_dataclass(
    "ModelSettings",
    [(name, Optional[_fusion_option_type(name)], field(default=None, metadata=metadata))
     for name, metadata in FUSION_OPTIONS.items()],
    bases=(_Settings,),
    namespace={"__module__": __name__, "_argument_group_name": "model (default: the recipe's, else the dataset "
               "preset's)", "__doc__": "The fusion choices of a run (`FUSION_OPTIONS`); None: the recipe's, else the "
               "dataset preset's."},
)


@dataclass
class ProcessorSettings(_Settings):
    """The text prompt's settings of the processor a run builds; None: the recipe's value, else the processor's
    default. A run whose saved processor (OUTPUT_DIR/processor or --processor) holds other values is refused."""

    _argument_group_name = "processor (default: the recipe's, else MagtkdProcessor's)"

    max_text_tokens: Optional[int] = _option(
        None, "prompt tokens kept (the most recent) before the mask token (processor: 511)")
    text_context: Optional[Literal[TEXT_CONTEXTS]] = _option(
        None, "the prompt holds the conversation up to the utterance (history, the paper's) or the utterance alone "
        "(the paper's text ablation)")

    def __post_init__(self):
        super().__post_init__()
        if self.max_text_tokens is not None and self.max_text_tokens < 1:
            raise ValueError(f"max_text_tokens must be at least 1, got {self.max_text_tokens}")


@dataclass
class RunSettings(_Settings):
    """Where a run reads and writes, and how it runs."""

    _argument_group_name = "run"

    output_dir: str = field(metadata={"help": "the run's folder; the stage folders go here"})
    recipe: str = _option("meld", "'meld' or 'iemocap' (the released settings, shipped) or a recipe JSON file")
    data: Optional[str] = _option(None, "stages 1-3: a MELD/IEMOCAP release folder or a saved DatasetDict")
    on_missing: Literal["raise", "drop"] = _option(
        "raise", "building from a release folder: missing clips raise, or are dropped")
    modalities: list[str] = field(default_factory=lambda: ["text", "audio", "video"], metadata={
        "help": "the modalities of the run: `text` alone trains from transcripts (no media read, no audio or video "
        "encoder loaded; the fusion takes its missing embeddings)"})
    train_dialogues: Optional[float] = _option(
        None, "train on part of the train split: a number (>= 1) or a fraction (< 1) of its dialogues, drawn with the "
        "recipe's seed")
    processor: Optional[str] = _option(
        None, "a saved MagtkdProcessor (default: OUTPUT_DIR/processor, else built from the text and audio encoders)")
    text_encoder: Optional[str] = _option(None, "pretrained text encoder (default: the recipe's)")
    audio_encoder: Optional[str] = _option(None, "pretrained audio encoder (the recipe's)")
    video_encoder: Optional[str] = _option(None, "pretrained video encoder (the recipe's)")
    text_model: Optional[str] = _option(None, "a trained text stage folder (OUTPUT_DIR/text)")
    audio_model: Optional[str] = _option(None, "a trained audio stage folder")
    video_model: Optional[str] = _option(None, "a trained video stage folder")
    distill_audio_model: Optional[str] = _option(None, "a trained distill-audio folder")
    distill_video_model: Optional[str] = _option(None, "a trained distill-video folder")
    features: Optional[str] = _option(
        None, "stage-3 features folder (fusion input, extract-features output) instead of OUTPUT_DIR/features")
    frame_cache: Optional[str] = _option(
        None, "the frame cache the video stages and extract-features read (built by `magtkd-hf cache-frames`); default "
        "OUTPUT_DIR/frame-cache when it exists; 'none': decode every clip")
    resume: Optional[str] = _option(
        None, "continue from the stage's newest epoch checkpoint (or the checkpoint folder given); with 'all', "
        "finished stages are skipped", nargs="?", const="latest", metavar="CHECKPOINT")
    stop_after_epochs: Optional[int] = _option(
        None, "stop after N epochs of this call (as if interrupted); --resume continues")
    cpu: bool = _option(False, "train on CPU even when a GPU is present")


@dataclass
class TrainingConfig(RunSettings):
    """
    A training run: the [`RunSettings`] fields, the fusion's [`ModelSettings`], the prompt's [`ProcessorSettings`]
    and per-stage overrides of the recipe's [`StageSettings`]: `{"*": {...}, "fusion": {"epochs": 40}}` (`"*"`: every
    stage, as the command line's options; a stage's own entries win, as `--set STAGE.KEY=VALUE`).
    """

    model: ModelSettings = field(default_factory=ModelSettings)
    processor_settings: ProcessorSettings = field(default_factory=ProcessorSettings)
    overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        super().__post_init__()
        if set(self.modalities) - {"text", "audio", "video"} or "text" not in self.modalities:
            raise ValueError(f"modalities must include text and be among text, audio, video; got {self.modalities}")
        if self.train_dialogues is not None and self.train_dialogues <= 0:
            raise ValueError(f"train_dialogues must be positive, got {self.train_dialogues}")
        check_stage_names(self.overrides, "overrides", "*")
        for stage, values in self.overrides.items():
            StageSettings.from_dict(values, f"overrides[{stage!r}]")

    def stage_overrides(self, stage: str) -> dict:
        return {**self.overrides.get("*", {}), **self.overrides.get(stage, {})}


def check_stage_names(names, where: str, *extra: str) -> None:
    unknown = sorted(set(names) - {*extra, *STAGES})
    if unknown:
        raise ValueError(f"{where}: unknown stages {unknown}; stages: {', '.join(STAGES)}")


def parse_set_options(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """`["fusion.epochs=2", "text.learning_rate=2e-5"]` -> {"fusion": {"epochs": 2}, "text": {...}}; a key without a
    stage (`epochs=2`) applies to every stage (stage `"*"`). Values are read as JSON when they parse as JSON."""
    result: dict[str, dict[str, Any]] = {}
    for item in items or ():
        key, separator, value = item.partition("=")
        if not separator:
            raise ValueError(f"--set {item!r}: expected STAGE.KEY=VALUE or KEY=VALUE")
        stage, dot, name = key.rpartition(".")
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
        result.setdefault(stage if dot else "*", {})[name] = value
    return result
