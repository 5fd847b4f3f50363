"""Recipe files: the released MELD and IEMOCAP hyper-parameters, and their resolution for one stage.

A recipe is a JSON file of hyper-parameters only (what the dataset itself implies, labels, loss weights of the fusion,
feature sources, speaker numbering, comes from `magtkd_hf.configuration_magtkd.DATASETS`): `dataset` names that
row, `defaults` apply to every stage, `stages[NAME]` to one stage (both checked against [`StageSettings`]),
`encoders` name the pretrained encoders (Hub names or folders), `encoder_config_overrides` change their configs
(the released audio masking length), `model` the fusion's [`ModelSettings`], `processor` the text prompt's
[`ProcessorSettings`]. Shipped: `meld.json`, `iemocap.json`. A run's own settings go on top (`TrainingConfig`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..configuration_magtkd import DATASETS, MODALITIES, dataset_facts
from .settings import ModelSettings, ProcessorSettings, StageSettings, check_stage_names

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


@dataclass
class Recipe:
    name: str
    dataset: str
    seed: int
    encoders: dict
    encoder_config_overrides: dict
    model: ModelSettings
    processor: ProcessorSettings
    defaults: dict
    stages: dict
    source: str = ""

    def stage_settings(self, stage: str, overrides: Mapping[str, Any] | None = None) -> StageSettings:
        """The settings of `stage`: recipe defaults, the stage's entries, then `overrides` (None values ignored)."""
        overrides = {key: value for key, value in (overrides or {}).items() if value is not None}
        return StageSettings.from_dict({"seed": self.seed, **self.defaults, **self.stages.get(stage, {}), **overrides},
                                       f"stage {stage!r}")


def shipped_recipes() -> tuple[str, ...]:
    """The recipes shipped with the package: one per dataset of `DATASETS`."""
    return tuple(name for name in DATASETS if (RECIPES_DIR / f"{name}.json").is_file())


def load_recipe(name_or_path: str | Path | Recipe) -> Recipe:
    """A shipped recipe by name (`"meld"`, `"iemocap"`), a recipe JSON file by path, or a `Recipe` as it is."""
    if isinstance(name_or_path, Recipe):
        return name_or_path
    path = Path(name_or_path)
    if str(name_or_path).lower() in shipped_recipes():
        path = RECIPES_DIR / f"{str(name_or_path).lower()}.json"
    if not path.is_file():
        raise FileNotFoundError(f"recipe {str(name_or_path)!r}: no such shipped recipe {shipped_recipes()} or file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"recipe file {path}: not valid JSON ({error})") from error
    return _recipe_from_dict(data, path)


def _recipe_from_dict(data: dict, path: Path) -> Recipe:
    missing = [key for key in ("dataset", "stages") if key not in data]
    if missing:
        raise ValueError(f"recipe file {path}: keys {missing} are missing")
    dataset_facts(data["dataset"])  # a known dataset
    check_stage_names(data["stages"], f"recipe file {path}")
    for where, values in [("defaults", data.get("defaults", {})), *((f"stages.{stage}", values)
                                                                    for stage, values in data["stages"].items())]:
        StageSettings.from_dict(values, f"{path} '{where}'")  # checked here: the error names the file
    encoders, encoder_overrides = dict(data.get("encoders", {})), dict(data.get("encoder_config_overrides", {}))
    unknown_modalities = sorted((set(encoders) | set(encoder_overrides)) - set(MODALITIES))
    if unknown_modalities:
        raise ValueError(f"recipe file {path}: unknown modalities {unknown_modalities}; modalities: {MODALITIES}")
    return Recipe(
        name=data.get("name", path.stem), dataset=str(data["dataset"]).lower(), seed=int(data.get("seed", 2024)),
        encoders=encoders, encoder_config_overrides=encoder_overrides,
        model=ModelSettings.from_dict(data.get("model", {}), f"{path} 'model'"),
        processor=ProcessorSettings.from_dict(data.get("processor", {}), f"{path} 'processor'"),
        defaults=dict(data.get("defaults", {})),
        stages={stage: dict(values) for stage, values in data["stages"].items()},
        source=str(path),
    )
