"""After the stages: the end-to-end model (`train all` -> OUT/model, with the processor and a model card), and a
saved fusion model evaluated in one process (the reference for the metrics gathered over several)."""

from __future__ import annotations

import shutil
from pathlib import Path

from accelerate import PartialState
from torch.utils.data import DataLoader

from .. import MagtkdForEmotionRecognition, MagtkdFusionModel
from ..features import FusionFeatureCollator
from ..loading import load_model
from ..streaming import OnlineFusion
from .data import fusion_feature_rows, load_feature_splits
from .extract import trained_model
from .inputs import StageInputs
from .loop import evaluate, make_accelerator
from .reporting import CONFUSION_MATRIX_PNG, METRICS_FILE
from .settings import FEATURE_STAGE, StageSettings


def assemble_end_to_end(inputs: StageInputs) -> Path:
    """OUT/model: `MagtkdForEmotionRecognition` holding the trained text model, the audio and video models the fusion
    was trained on (per its feature sources) and the fusion, with the processor: it predicts from conversations."""
    folder = inputs.output_dir / "model"
    fusion, _ = trained_model(inputs, "fusion", "all")
    sources = {"text": "text", "audio": fusion.config.audio_feature_source,
               "video": fusion.config.video_feature_source}
    chosen = {modality: trained_model(inputs, FEATURE_STAGE[source], "all")[0]
              for modality, source in sources.items()}
    model = MagtkdForEmotionRecognition.from_unimodal_models(
        chosen["text"], chosen["audio"], chosen["video"], fusion_model=fusion
    )
    if PartialState().is_main_process:
        model.save_pretrained(str(folder))
        inputs.processor().save_pretrained(str(folder))
        write_model_card(inputs, folder)
    PartialState().wait_for_everyone()
    return folder


def write_model_card(inputs: StageInputs, folder: Path) -> None:
    """The fusion stage's metrics (with the record of its data) and confusion matrix beside the end-to-end model, and
    its model card (README.md), made from them."""
    from ..apps.hub import save_model_card

    fusion_dir = inputs.input_folder("fusion", "all")
    for name in (METRICS_FILE, CONFUSION_MATRIX_PNG):
        if (fusion_dir / name).exists():
            shutil.copyfile(fusion_dir / name, folder / name)
    save_model_card(folder)


def evaluate_saved_fusion(
    model_dir: str | Path, features_dir: str | Path, splits=("validation", "test"), batch_size: int = 64,
    cpu: bool = True, online: bool = False,
) -> dict:
    """A saved fusion model evaluated in this process alone on a features folder: {split: metrics with the
    confusion matrix}. `online=True`: utterance i's prediction comes from the fusion run on utterances 0..i of its
    conversation only (`magtkd_hf.streaming.online_logits`), as a stream sees it."""
    model = load_model(model_dir, expected=MagtkdFusionModel).eval()
    config = model.config
    accelerator = make_accelerator(StageSettings(), Path(model_dir), cpu)
    model = model.to(accelerator.device)
    evaluated = OnlineFusion(model) if online else model
    results = {}
    for split, rows in fusion_feature_rows(load_feature_splits(features_dir), config, features_dir, splits).items():
        loader = DataLoader(rows, batch_size=batch_size, collate_fn=FusionFeatureCollator.from_config(config))
        results[split], _ = evaluate(accelerator, evaluated, loader, config.label_names)
    return results
