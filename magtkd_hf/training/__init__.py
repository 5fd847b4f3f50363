"""The MAGTKD training recipe on Accelerate: one loop (`loop.py`), the stages as a table (`stages.py`), the released
MELD and IEMOCAP settings as files (`recipes/*.json`, read by `recipe.py`).

    magtkd-hf train {text,audio,video,distill-audio,distill-video,extract-features,fusion,all} --recipe meld ...
"""

from .loop import EpochSampler, StageTask, evaluate, latest_checkpoint, train_stage
from .recipe import RECIPES, Recipe, StageSettings, load_recipe, parse_set_options
from .stages import (
    STAGE_ORDER,
    STAGES,
    StageSpec,
    TrainingContext,
    assemble_end_to_end,
    evaluate_saved_fusion,
    extract_features,
    fusion_config_for_features,
    run_all,
    run_stage,
)

__all__ = [
    "EpochSampler",
    "RECIPES",
    "Recipe",
    "STAGES",
    "STAGE_ORDER",
    "StageSettings",
    "StageSpec",
    "StageTask",
    "TrainingContext",
    "assemble_end_to_end",
    "evaluate",
    "evaluate_saved_fusion",
    "extract_features",
    "fusion_config_for_features",
    "latest_checkpoint",
    "load_recipe",
    "parse_set_options",
    "run_all",
    "run_stage",
    "train_stage",
]
