"""Recipe settings files (the released MELD and IEMOCAP hyper-parameters) and their resolution for one stage.

A recipe is a JSON file: `defaults` apply to every stage, `stages[NAME]` to one stage, `encoders` name the pretrained
encoders (Hub names or folders), `model` the fusion width and heads. Shipped: `meld.json`, `iemocap.json` (see
`RECIPES`). Later sources win: defaults < recipe `defaults` < recipe `stages[NAME]` < `overrides` (command-line flags).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
RECIPES = ("meld", "iemocap")
SCHEDULES = ("optimizer_steps", "released")
MIXED_PRECISION = ("no", "fp16", "bf16")
STUDENT_INITS = ("stage", "encoder")


@dataclass
class StageSettings:
    """Every setting of one stage, after the recipe and the overrides are applied."""

    learning_rate: float = 1e-5
    weight_decay: float = 0.01
    batch_size: int = 4
    eval_batch_size: int = 16
    epochs: int = 10
    warmup_epochs: float = 1.0
    schedule: str = "optimizer_steps"
    max_grad_norm: float = 10.0
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"
    seed: int = 2024
    num_workers: int = 0
    fused_optimizer: bool = True
    keep_checkpoints: int = 2
    logit_weight: float = 0.0
    feature_weight: float = 0.0
    student_init: str = "stage"
    report_to: str = "none"
    track_test: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        problems = []
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            problems.append(f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        if self.student_init not in STUDENT_INITS:
            problems.append(f"student_init must be one of {STUDENT_INITS}, got {self.student_init!r}")
        for name in ("batch_size", "eval_batch_size", "gradient_accumulation_steps"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.epochs < 0 or self.learning_rate < 0 or self.warmup_epochs < 0 or self.max_grad_norm < 0:
            problems.append("epochs, learning_rate, warmup_epochs and max_grad_norm must not be negative")
        if problems:
            raise ValueError("; ".join(problems))

    def to_dict(self) -> dict:
        return {item.name: getattr(self, item.name) for item in fields(self)}


@dataclass
class Recipe:
    name: str
    dataset: str
    seed: int
    encoders: dict
    encoder_config_overrides: dict
    model: dict
    defaults: dict
    stages: dict
    source: str = ""

    def stage_settings(self, stage: str, overrides: Mapping[str, Any] | None = None) -> StageSettings:
        """The settings of `stage` (a name of the stage table): recipe defaults, the stage's entries, then
        `overrides` (None values are ignored)."""
        known = {item.name for item in fields(StageSettings)}
        values: dict[str, Any] = {"seed": self.seed}
        for source_name, source in (("defaults", self.defaults), (f"stages.{stage}", self.stages.get(stage, {}))):
            unknown = sorted(set(source) - known)
            if unknown:
                raise ValueError(f"{self.source}: unknown settings {unknown} in {source_name!r}; known: {sorted(known)}")
            values.update(source)
        for key, value in (overrides or {}).items():
            if value is None:
                continue
            if key not in known:
                raise ValueError(f"unknown setting {key!r}; known: {sorted(known)}")
            values[key] = value
        defaults = StageSettings()
        for key, value in list(values.items()):
            default = getattr(defaults, key)
            if isinstance(default, bool):
                values[key] = _to_bool(value, key)
            elif isinstance(default, int):
                values[key] = int(value)
            elif isinstance(default, float):
                values[key] = float(value)
        return StageSettings(**values)


def _to_bool(value, key):
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("1", "true", "yes", "on"):
        return True
    if str(value).lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"setting {key!r} must be true or false, got {value!r}")


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A shipped recipe by name (`"meld"`, `"iemocap"`) or a recipe JSON file by path."""
    path = Path(name_or_path)
    if str(name_or_path).lower() in RECIPES:
        path = RECIPES_DIR / f"{str(name_or_path).lower()}.json"
    if not path.is_file():
        raise FileNotFoundError(f"recipe {str(name_or_path)!r}: no such shipped recipe ({RECIPES}) or file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"recipe file {path}: not valid JSON ({error})") from error
    missing = [key for key in ("dataset", "stages") if key not in data]
    if missing:
        raise ValueError(f"recipe file {path}: keys {missing} are missing")
    return Recipe(
        name=data.get("name", path.stem),
        dataset=data["dataset"],
        seed=int(data.get("seed", 2024)),
        encoders=dict(data.get("encoders", {})),
        encoder_config_overrides=dict(data.get("encoder_config_overrides", {})),
        model=dict(data.get("model", {})),
        defaults=dict(data.get("defaults", {})),
        stages=dict(data["stages"]),
        source=str(path),
    )


def parse_set_options(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """`["fusion.epochs=2", "text.learning_rate=2e-5"]` -> {"fusion": {"epochs": "2"}, "text": {...}}; a key without a
    stage (`epochs=2`) applies to every stage (stage `"*"`)."""
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
