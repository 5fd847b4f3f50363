"""Stage 3: every utterance of every split through the trained stage-1 and stage-2 models; their `features`, grouped
by conversation, become the DatasetDict the fusion trains on (`magtkd_hf.features.feature_dataset_features`)."""

from __future__ import annotations

import time

import datasets
import torch
from accelerate.utils import gather_object, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .. import MagtkdAudioModel, MagtkdFusionModel, MagtkdTextModel, MagtkdVideoModel
from ..features import feature_dataset_features
from ..loading import load_model
from .data import SPLITS, ConversationCollator, model_inputs
from .inputs import StageInputs
from .loop import make_accelerator
from .reporting import METRICS_FILE, data_record, write_json
from .settings import STAGES, StageSettings


MODALITY_MODEL_CLASSES = {"text": MagtkdTextModel, "audio": MagtkdAudioModel, "video": MagtkdVideoModel}


def trained_model(inputs: StageInputs, stage: str, needed_by: str):
    """The model a finished stage saved, checked to be that stage's class with every weight (no random weights:
    `magtkd_hf.loading.load_model`), and the folder it came from."""
    folder = inputs.input_folder(stage, needed_by)
    modality = STAGES[stage].modality
    return load_model(folder, expected=MODALITY_MODEL_CLASSES[modality] if modality else MagtkdFusionModel), folder


def feature_models(inputs: StageInputs, device) -> tuple[dict, dict]:
    """{column: (modality, model in eval mode on `device`)} for every feature column of the run's modalities, and the
    folders read."""
    models, sources = {}, {}
    for stage, spec in STAGES.items():
        if spec.feature and spec.modality in inputs.config.modalities:
            model, folder = trained_model(inputs, stage, "extract-features")
            models[spec.feature], sources[spec.feature] = (spec.modality, model.to(device).eval()), str(folder)
    widths = {column: model.config.feature_size for column, (_, model) in models.items()}
    if len(set(widths.values())) != 1:
        raise ValueError(f"extract-features: the models' feature widths differ: {widths} (from {sources})")
    return models, sources


@torch.no_grad()
def conversation_features(accelerator, models: dict, output, count: int, chunk: int) -> dict:
    """{column: (count, width) numpy} for one conversation's processor output, `chunk` utterances at a time."""
    computed = {column: [] for column in models}
    for start in range(0, count, chunk):
        part = slice(start, start + chunk)
        with accelerator.autocast():
            for column, (modality, model) in models.items():
                kwargs = {key: value.to(accelerator.device) for key, value in model_inputs(modality, output, part).items()}
                computed[column].append(model(**kwargs).features.float().cpu())
    return {column: torch.cat(parts).numpy() for column, parts in computed.items()}


def split_features(accelerator, models, rows, processor, settings: StageSettings, split: str = "") -> list[dict]:
    """This process's share of one split's conversations (every num_processes-th), as feature rows."""
    shared_out = [(position, rows[position]) for position in range(accelerator.process_index, len(rows),
                                                                      accelerator.num_processes)]
    modalities = sorted({modality for modality, _ in models.values()})
    loader = DataLoader(shared_out, batch_size=1, shuffle=False,
                        num_workers=settings.num_workers, collate_fn=ConversationCollator(processor, modalities=modalities))
    local = []
    for batch in tqdm(loader, desc=f"extract-features {split}", dynamic_ncols=True,
                      disable=not accelerator.is_local_main_process):
        position, output = batch["positions"][0], batch["inputs"]
        row = rows[position]
        count = len(row["texts"])
        local.append({
            "position": position,
            "dialogue_id": str(row["dialogue_id"]),
            "utterance_ids": [str(u) for u in row.get("utterance_ids", range(count))],
            **conversation_features(accelerator, models, output, output["input_ids"].shape[0], settings.batch_size),
            "speaker_ids": output["speaker_ids"][0, :count].tolist(),
            "labels": [int(label) for label in row["labels"]],
        })
    return local


def extract_features(inputs: StageInputs, settings: StageSettings | None = None) -> dict:
    """Stage 3 into `inputs.output_folder("extract-features")`. Conversations are shared out between processes and
    gathered on the main one, which saves the DatasetDict and a metrics JSON; returns that summary."""
    settings = settings or inputs.settings("extract-features")
    output = inputs.output_folder("extract-features")
    accelerator = make_accelerator(settings, output, inputs.config.cpu)
    set_seed(settings.seed)
    started = time.perf_counter()
    with_media = bool({"audio", "video"} & set(inputs.config.modalities))
    processor = inputs.media_processor("all") if with_media else inputs.processor()  # with the run's frame cache
    splits = inputs.conversations(check_media=with_media)
    models, sources = feature_models(inputs, accelerator.device)
    text_model = models["text"][1]
    schema = feature_dataset_features(text_model.config.feature_size, text_model.config.label_names, list(models))
    result = {}
    for split in [split for split in SPLITS if split in splits]:
        local = split_features(accelerator, models, splits[split].to_list(), processor, settings, split)
        gathered = gather_object(local) if accelerator.num_processes > 1 else local
        if accelerator.is_main_process:
            gathered = sorted(gathered, key=lambda item: item["position"])
            columns = {name: [item[name] for item in gathered] for name in schema}
            result[split] = datasets.Dataset.from_dict(columns, features=schema)
    summary = {}
    if accelerator.is_main_process:
        datasets.DatasetDict(result).save_to_disk(str(output))
        summary = {
            "stage": "extract-features", "features": str(output), "models": sources,
            "data": data_record(inputs.config.data, inputs.recipe.dataset, {split: splits[split] for split in result}),
            "hidden_size": text_model.config.feature_size,
            "conversations": {split: len(dataset) for split, dataset in result.items()},
            "utterances": {split: int(sum(len(x) for x in dataset["labels"])) for split, dataset in result.items()},
            "seconds": time.perf_counter() - started, "num_processes": accelerator.num_processes,
            "mixed_precision": accelerator.mixed_precision,
        }
        if getattr(processor, "frame_cache", None) is not None:
            summary["frame_cache"] = str(processor.frame_cache.folder)
        write_json(output / METRICS_FILE, summary)
    accelerator.wait_for_everyone()
    return summary
