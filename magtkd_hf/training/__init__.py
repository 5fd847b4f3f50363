"""The MAGTKD training recipe on Accelerate: the stages and their settings (`settings.py`, declared once), the
released MELD and IEMOCAP hyper-parameters as files (`recipes/*.json`, read by `recipe.py`), the stages' jobs
(`stages.py`), one training loop (`loop.py`) with verified checkpoints (`checkpointing.py`).

    from magtkd_hf.training import TrainingConfig, run_all, run_stage
    run_all(TrainingConfig(output_dir="runs/meld", recipe="meld", data="/data/MELD.Raw"))
"""

from .assemble import assemble_end_to_end, evaluate_saved_fusion
from .data import EpochSampler
from .extract import extract_features
from .inputs import StageInputs
from .loop import StageJob, evaluate, train_stage
from .recipe import Recipe, load_recipe, shipped_recipes
from .settings import (FEATURE_STAGE, STAGES, ModelSettings, ProcessorSettings, RunSettings, StageSettings,
                       StageSpec, TrainingConfig, parse_set_options)
from .stages import fusion_config_for_features, run_all, run_stage

