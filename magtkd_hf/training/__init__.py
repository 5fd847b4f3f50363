"""The MAGTKD training recipe on Accelerate: the settings (`settings.py`, one dataclass per concern), the released
MELD and IEMOCAP hyper-parameters as files (`recipes/*.json`, read by `recipe.py`), the stages as a table
(`stages.py`), one training loop (`loop.py`) with verified checkpoints (`checkpointing.py`).

    from magtkd_hf.training import TrainingConfig, run_all, run_stage
    run_all(TrainingConfig(output_dir="runs/meld", recipe="meld", data="/data/MELD.Raw"))
"""

import importlib

# Public name -> its module, imported on first access: `magtkd-hf --help` reads only the settings, without the
# loop's accelerate, datasets and model code.
_LAZY_NAMES = {
    "assemble_end_to_end": ".assemble", "evaluate_saved_fusion": ".assemble",
    "EpochSampler": ".data",
    "extract_features": ".extract",
    "StageInputs": ".inputs",
    "StageJob": ".loop", "evaluate": ".loop", "train_stage": ".loop",
    "Recipe": ".recipe", "load_recipe": ".recipe", "shipped_recipes": ".recipe",
    "ModelSettings": ".settings", "ProcessorSettings": ".settings", "RunSettings": ".settings", "StageSettings": ".settings",
    "TrainingConfig": ".settings", "parse_set_options": ".settings", "STAGE_NAMES": ".settings",
    "FEATURE_STAGE": ".stages", "STAGE_ORDER": ".stages", "STAGES": ".stages", "StageSpec": ".stages",
    "fusion_config_for_features": ".stages", "run_all": ".stages", "run_stage": ".stages",
}


def __getattr__(name: str):
    if name not in _LAZY_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY_NAMES[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *_LAZY_NAMES})


__all__ = [
    "EpochSampler",
    "FEATURE_STAGE",
    "ModelSettings",
    "ProcessorSettings",
    "Recipe",
    "RunSettings",
    "STAGES",
    "STAGE_NAMES",
    "STAGE_ORDER",
    "StageInputs",
    "StageJob",
    "StageSettings",
    "StageSpec",
    "TrainingConfig",
    "assemble_end_to_end",
    "evaluate",
    "evaluate_saved_fusion",
    "extract_features",
    "fusion_config_for_features",
    "load_recipe",
    "parse_set_options",
    "run_all",
    "run_stage",
    "shipped_recipes",
    "train_stage",
]
