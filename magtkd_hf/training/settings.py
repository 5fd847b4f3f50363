"""Every training setting, declared once: one dataclass per concern. The command line is built from these classes
(`transformers.HfArgumentParser` reads their fields, types, choices and help), recipe files are checked against
them, and the library takes them as they are.

* [`StageSettings`]: the hyper-parameters of one stage (optimiser, batches, epochs, precision, distillation weights,
  ...); a recipe gives each stage's values, `--flag` and `--set STAGE.KEY=VALUE` override them.
* [`ModelSettings`]: the fusion model's architecture choices (heads, dropout, which stage-3 features it reads).
* [`ProcessorSettings`]: the text prompt of the processor a run builds (length, history or utterance alone).
* [`RunSettings`]: where a run reads and writes (data, encoders, stage folders, frame cache) and how it runs (resume,
  CPU).
* [`TrainingConfig`]: a run: its `RunSettings` fields, the `ModelSettings` and the per-stage overrides.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Mapping, Optional

STAGE_NAMES = ("text", "audio", "video", "distill-audio", "distill-video", "extract-features", "fusion")


def _help(text: str, **extra) -> dict:
    return {"help": text, **extra}


@dataclass
class StageSettings:
    """The hyper-parameters of one stage, after the recipe and the overrides are applied."""

    _argument_group_name = "stage settings (default: the recipe's value for the stage; with 'all', every stage)"

    learning_rate: float = field(default=1e-5, metadata=_help("AdamW learning rate"))
    weight_decay: float = field(default=0.01, metadata=_help("AdamW weight decay"))
    batch_size: int = field(default=4, metadata=_help("utterances (stages 1-3) or conversations (fusion) per step"))
    eval_batch_size: int = field(default=16, metadata=_help("batch size of the dev and test evaluations"))
    epochs: int = field(default=10, metadata=_help("training epochs"))
    max_steps: int = field(
        default=0, metadata=_help("stop after this many optimiser steps (0: run every epoch); the schedule ends there")
    )
    warmup_ratio: float = field(
        default=0.1, metadata=_help("linear warm-up, as a fraction of the run's optimiser steps (0 to 1)")
    )
    schedule: Literal["optimizer_steps", "released"] = field(
        default="optimizer_steps",
        metadata=_help("count the schedule in optimiser steps, or in samples as the released scripts did"),
    )
    max_grad_norm: float = field(default=10.0, metadata=_help("clip gradients at this norm, after unscaling (0: off)"))
    gradient_accumulation_steps: int = field(default=1, metadata=_help("batches per optimiser step"))
    mixed_precision: Literal["no", "fp16", "bf16", "auto"] = field(
        default="no",
        metadata=_help("autocast precision (fp16 needs a GPU and falls back to full precision on CPU; auto: bf16 on "
                       "GPUs and CPUs that compute it natively, else full precision)"),
    )
    seed: int = field(default=2024, metadata=_help("seed of the initialisation and the batch order"))
    num_workers: int = field(default=0, metadata=_help("DataLoader workers (media decoding)"))
    fused_optimizer: bool = field(default=True, metadata=_help("the fused AdamW where torch has it for the device"))
    keep_checkpoints: int = field(default=2, metadata=_help("epoch checkpoints kept (0: all)"))
    class_weighting: Literal["none", "inverse_sqrt", "inverse"] = field(
        default="none",
        metadata=_help("weight the cross-entropy by the train split's class counts: inverse (n / (C * count), "
                       "scikit-learn's 'balanced'), inverse_sqrt (its square root; milder), none (the paper)"),
    )
    logit_weight: float = field(default=0.0, metadata=_help("distillation: weight of the DIST logit-relation loss"))
    feature_weight: float = field(default=0.0, metadata=_help("distillation: weight of the feature-relation loss"))
    student_init: Literal["stage", "encoder"] = field(
        default="stage", metadata=_help("distillation: start the student from its stage-1 model or the encoder")
    )
    report_to: Literal["none", "tensorboard", "wandb"] = field(
        default="none", metadata=_help("experiment tracker through Accelerate (needs the tracker's package)")
    )
    track_test: bool = field(
        default=False,
        metadata=_help("also evaluate test every epoch and report the released scripts' test-selected figure "
                       "(for comparison only; selection stays on dev)"),
    )

    def __post_init__(self):
        problems = [problem for item in fields(self) if (problem := _check_choice(self, item.name))]
        for name in ("batch_size", "eval_batch_size", "gradient_accumulation_steps"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("epochs", "max_steps", "learning_rate", "max_grad_norm"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must not be negative, got {getattr(self, name)}")
        if not 0 <= self.warmup_ratio <= 1:
            problems.append(f"warmup_ratio must be between 0 and 1, got {self.warmup_ratio}")
        if problems:
            raise ValueError("; ".join(problems))

    def to_dict(self) -> dict:
        return {item.name: getattr(self, item.name) for item in fields(self)}


@dataclass
class ModelSettings:
    """The fusion model's architecture choices; None: the recipe's value, else the dataset preset's."""

    _argument_group_name = "model (default: the recipe's, else the dataset preset's)"

    num_attention_heads: Optional[int] = field(default=None, metadata=_help("fusion attention heads"))
    dropout: Optional[float] = field(default=None, metadata=_help("fusion dropout"))
    hidden_size: Optional[int] = field(
        default=None, metadata=_help("fusion width (default: the audio encoder's width, or the features')")
    )
    intermediate_size: Optional[int] = field(default=None, metadata=_help("fusion feed-forward width (the width)"))
    share_text_anchor_block: Optional[bool] = field(
        default=None, metadata=_help("the text anchor's three paths share one block, as released")
    )
    causal: Optional[bool] = field(
        default=None, metadata=_help("every utterance attends only to itself and earlier ones (streaming)")
    )
    anchor_residual: Optional[bool] = field(
        default=None, metadata=_help("add the audio and video anchors to the text anchor before the prediction head "
                                     "(off: the paper's model)")
    )
    modality_dropout: Optional[float] = field(
        default=None, metadata=_help("in training, the probability of treating an utterance's audio, and its video, "
                                     "as absent (0: the paper's training)")
    )
    audio_feature_source: Optional[Literal["audio", "audio_kd"]] = field(
        default=None, metadata=_help("the stage-3 features of the fusion's audio input", aliases=["--audio-features"])
    )
    video_feature_source: Optional[Literal["video", "video_kd"]] = field(
        default=None, metadata=_help("the stage-3 features of the fusion's video input", aliases=["--video-features"])
    )

    def __post_init__(self):
        problems = [problem for item in fields(self) if (problem := _check_choice(self, item.name))]
        if problems:
            raise ValueError("; ".join(problems))

    def given(self) -> dict:
        """The settings that are set (not None)."""
        return given_settings(self)


@dataclass
class ProcessorSettings:
    """The text prompt's settings of the processor a run builds; None: the recipe's value, else the processor's
    default. A run whose saved processor (OUTPUT_DIR/processor or --processor) holds other values is refused."""

    _argument_group_name = "processor (default: the recipe's, else MagtkdProcessor's)"

    max_text_tokens: Optional[int] = field(
        default=None, metadata=_help("prompt tokens kept (the most recent) before the mask token (processor: 511)")
    )
    text_context: Optional[Literal["history", "utterance"]] = field(
        default=None, metadata=_help("the prompt holds the conversation up to the utterance (history, the paper's) "
                                     "or the utterance alone (the paper's text ablation)")
    )

    def __post_init__(self):
        problems = [problem for item in fields(self) if (problem := _check_choice(self, item.name))]
        if self.max_text_tokens is not None and int(self.max_text_tokens) < 1:
            problems.append(f"max_text_tokens must be at least 1, got {self.max_text_tokens}")
        if problems:
            raise ValueError("; ".join(problems))

    def given(self) -> dict:
        """The settings that are set (not None)."""
        return given_settings(self)


@dataclass
class RunSettings:
    """Where a run reads and writes, and how it runs."""

    _argument_group_name = "run"

    output_dir: str = field(metadata=_help("the run's folder; the stage folders go here"))
    recipe: str = field(
        default="meld", metadata=_help("'meld' or 'iemocap' (the released settings, shipped) or a recipe JSON file")
    )
    data: Optional[str] = field(
        default=None, metadata=_help("stages 1-3: a MELD/IEMOCAP release folder or a saved DatasetDict")
    )
    on_missing: Literal["raise", "drop"] = field(
        default="raise", metadata=_help("building from a release folder: missing clips raise, or are dropped")
    )
    modalities: list[str] = field(
        default_factory=lambda: ["text", "audio", "video"],
        metadata=_help("the modalities of the run: `text` alone trains from transcripts (no media read, no audio "
                       "or video encoder loaded; the fusion takes its missing-modality embeddings)"),
    )
    train_dialogues: Optional[float] = field(
        default=None, metadata=_help("train on part of the train split: a number (>= 1) or a fraction (< 1) of its "
                                     "dialogues, drawn with the recipe's seed")
    )
    processor: Optional[str] = field(
        default=None, metadata=_help("a saved MagtkdProcessor (default: OUTPUT_DIR/processor, else built from the "
                                     "text and audio encoders)")
    )
    text_encoder: Optional[str] = field(default=None, metadata=_help("pretrained text encoder (default: the recipe's)"))
    audio_encoder: Optional[str] = field(default=None, metadata=_help("pretrained audio encoder (the recipe's)"))
    video_encoder: Optional[str] = field(default=None, metadata=_help("pretrained video encoder (the recipe's)"))
    text_model: Optional[str] = field(default=None, metadata=_help("a trained text stage folder (OUTPUT_DIR/text)"))
    audio_model: Optional[str] = field(default=None, metadata=_help("a trained audio stage folder"))
    video_model: Optional[str] = field(default=None, metadata=_help("a trained video stage folder"))
    distill_audio_model: Optional[str] = field(default=None, metadata=_help("a trained distill-audio folder"))
    distill_video_model: Optional[str] = field(default=None, metadata=_help("a trained distill-video folder"))
    features: Optional[str] = field(
        default=None, metadata=_help("stage-3 features folder (fusion input, extract-features output) instead of "
                                     "OUTPUT_DIR/features")
    )
    frame_cache: Optional[str] = field(
        default=None,
        metadata=_help("the frame cache the video stages and extract-features read (built by `magtkd-hf "
                       "cache-frames`); default OUTPUT_DIR/frame-cache when it exists; 'none': decode every clip"),
    )
    resume: Optional[str] = field(
        default=None,
        metadata=_help("continue from the stage's newest epoch checkpoint (or the checkpoint folder given); with "
                       "'all', finished stages are skipped", nargs="?", const="latest", metavar="CHECKPOINT"),
    )
    stop_after_epochs: Optional[int] = field(
        default=None, metadata=_help("stop after N epochs of this call (as if interrupted); --resume continues")
    )
    cpu: bool = field(default=False, metadata=_help("train on CPU even when a GPU is present"))

    def stage_folder_override(self, stage: str) -> str | None:
        """The folder given for a trained stage (`--audio-model DIR`) or for the features, or None."""
        if stage == "extract-features":
            return self.features
        return getattr(self, f"{stage.replace('-', '_')}_model", None)


@dataclass
class TrainingConfig(RunSettings):
    """
    A training run: the [`RunSettings`] fields, the fusion's [`ModelSettings`] and per-stage overrides of the recipe's
    [`StageSettings`]: `{"*": {...}, "fusion": {"epochs": 40}}` (`"*"`: every stage; a stage's own entries win).
    """

    model: ModelSettings = field(default_factory=ModelSettings)
    processor_settings: ProcessorSettings = field(default_factory=ProcessorSettings)
    overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        unknown_modalities = sorted(set(self.modalities) - {"text", "audio", "video"})
        if unknown_modalities or "text" not in self.modalities:
            raise ValueError(f"modalities must include text and be among text, audio, video; got {self.modalities}")
        if self.train_dialogues is not None and self.train_dialogues <= 0:
            raise ValueError(f"train_dialogues must be positive, got {self.train_dialogues}")
        unknown = sorted(set(self.overrides) - {"*", *STAGE_NAMES})
        if unknown:
            raise ValueError(f"overrides for unknown stages {unknown}; stages: {', '.join(STAGE_NAMES)} (or '*')")
        for stage, values in self.overrides.items():
            check_setting_names(values, f"overrides[{stage!r}]")

    def stage_overrides(self, stage: str) -> dict:
        return {**self.overrides.get("*", {}), **self.overrides.get(stage, {})}


# ----------------------------------------------------------------------------------------------- values from text


def given_settings(settings) -> dict:
    """A settings dataclass's fields that are set (not None)."""
    return {item.name: getattr(settings, item.name) for item in fields(settings) if getattr(settings, item.name) is not None}


def _field_types(cls) -> dict:
    return typing.get_type_hints(cls)


def _check_choice(settings, name: str) -> str | None:
    """A message when a Literal-typed setting holds a value outside its choices."""
    choices = _choices(_field_types(type(settings))[name])
    value = getattr(settings, name)
    if choices and value is not None and value not in choices:
        return f"{name} must be one of {choices}, got {value!r}"
    return None


def _choices(kind) -> tuple:
    args = [arg for arg in typing.get_args(kind) if arg is not type(None)]
    if typing.get_origin(kind) is Literal:
        return tuple(args)
    for arg in args:  # Optional[Literal[...]]
        if typing.get_origin(arg) is Literal:
            return typing.get_args(arg)
    return ()


def check_setting_names(values: Mapping[str, Any], where: str, cls=StageSettings) -> None:
    known = {item.name for item in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown setting{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(map(repr, unknown))}; known: {sorted(known)}")


def coerce_settings(values: Mapping[str, Any], cls=StageSettings) -> dict:
    """Values from a recipe file or `--set` (strings, JSON numbers) -> the types of `cls`'s fields; None dropped."""
    types = _field_types(cls)
    result = {}
    for key, value in values.items():
        if value is None:
            continue
        kind = types[key]
        base = next((arg for arg in typing.get_args(kind) if arg is not type(None)), kind)
        if base is bool or kind is bool:
            result[key] = _to_bool(value, key)
        elif base in (int, float):
            result[key] = base(value)
        else:
            result[key] = value
    return result


def _to_bool(value, key):
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("1", "true", "yes", "on"):
        return True
    if str(value).lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"setting {key!r} must be true or false, got {value!r}")


def parse_set_options(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """`["fusion.epochs=2", "text.learning_rate=2e-5"]` -> {"fusion": {"epochs": 2}, "text": {...}}; a key without a
    stage (`epochs=2`) applies to every stage (stage `"*"`). Values are read as JSON when they parse as JSON."""
    result: dict[str, dict[str, Any]] = {}
    for item in items or ():
        key, separator, value = item.partition("=")
        if not separator:
            raise ValueError(f"--set {item!r}: expected STAGE.KEY=VALUE or KEY=VALUE")
        stage, dot, name = key.rpartition(".")
        result.setdefault(stage if dot else "*", {})[name] = _parse_value(value)
    return result


def _parse_value(value: str):
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value
