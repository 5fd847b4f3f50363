"""Running the stages of `settings.STAGES` (`run_stage`, `run_all`): each stage's [`StageJob`] says which model it
trains on which data, reading the earlier stages' folders under the run's output folder; `train_stage` (loop.py) does
the rest. `all` ends with OUT/model, the end-to-end model."""

from __future__ import annotations

import logging
from pathlib import Path

import datasets
import numpy as np

from .. import MagtkdDistillationModel, MagtkdFusionConfig, MagtkdFusionModel
from ..configuration_magtkd import labels_to_maps
from ..features import FusionFeatureCollator
from .assemble import assemble_end_to_end
from .data import (SPLITS, DistillationCollator, UtteranceCollator, UtteranceItems, class_weights, fusion_feature_rows,
                   load_feature_splits, shares_video_files)
from .extract import MODALITY_MODEL_CLASSES, extract_features, trained_model
from .inputs import StageInputs
from .loop import StageJob, saved_model, train_stage
from .reporting import METRICS_FILE, data_record, load_metrics
from .settings import STAGES, StageSettings, StageSpec, TrainingConfig

logger = logging.getLogger(__name__)


def pretrained_stage_model(inputs: StageInputs, modality: str):
    """A stage-1 model of the run's dataset on the pretrained encoder, with a fresh head; the text model has the
    processor's vocabulary (the speaker tokens added) and its feature is projected to the fusion width."""
    model_class = MODALITY_MODEL_CLASSES[modality]
    encoder_config = inputs.encoder_config(modality)
    extra = {}
    if modality == "text":
        encoder_config.vocab_size = len(inputs.processor().tokenizer)
        extra["feature_size"] = inputs.fusion_width()
    config = model_class.config_class.from_preset(inputs.recipe.dataset, encoder_config=encoder_config, **extra)
    overrides = inputs.recipe.encoder_config_overrides.get(modality, {})  # e.g. the released audio masking length
    return model_class.from_encoder(config, inputs.encoder(modality), **overrides)


def utterance_items(inputs: StageInputs, check_media: bool = True) -> tuple[dict, bool]:
    """{split: UtteranceItems} of the run's conversations, and whether utterances share video files (IEMOCAP's
    dialogue videos: each utterance's time window is then cut). `check_media=False`: a stage that reads no media."""
    splits = inputs.conversations(check_media)
    rows = {split: splits[split].to_list() for split in splits if split in SPLITS}
    use_time_window = shares_video_files([row for split_rows in rows.values() for row in split_rows])
    return {split: UtteranceItems(split_rows, split) for split, split_rows in rows.items()}, use_time_window


def unimodal_job(spec: StageSpec, inputs: StageInputs, settings: StageSettings) -> StageJob:
    """Stage 1: a stage model on its pretrained encoder, cross-entropy on the utterances' labels."""
    items, use_time_window = utterance_items(inputs, check_media=spec.modality != "text")
    model = pretrained_stage_model(inputs, spec.modality)
    description = {"initialised_from": inputs.encoder(spec.modality)}
    return utterance_job(spec, inputs, settings, items, use_time_window, model, description)


def distillation_job(spec: StageSpec, inputs: StageInputs, settings: StageSettings) -> StageJob:
    """Stage 2: the student (from its stage-1 model or the encoder, `student_init`) learns from the frozen text
    model, with the stage's distillation loss settings."""
    items, use_time_window = utterance_items(inputs)
    if settings.student_init == "stage":
        student, initialised_from = trained_model(inputs, spec.modality, spec.name)
    else:
        student, initialised_from = pretrained_stage_model(inputs, spec.modality), inputs.encoder(spec.modality)
    teacher, teacher_folder = trained_model(inputs, spec.teacher, spec.name)
    model = MagtkdDistillationModel(student, teacher, **settings.distillation_loss_settings())
    description = {
        "initialised_from": str(initialised_from), "teacher": str(teacher_folder),
        "loss": {"cross_entropy": 1.0, "logit_relation": settings.logit_weight,
                 "feature_relation": settings.feature_weight},
    }
    return utterance_job(spec, inputs, settings, items, use_time_window, model, description)


def utterance_job(spec, inputs: StageInputs, settings, items: dict, use_time_window, model, description) -> StageJob:
    """A stage on utterances (1 or 2): the trained model's class weights, the collators (a distillation's batches
    hold the teacher's inputs too; it is evaluated as the student), the facts of its metrics."""
    trained = saved_model(model)
    trained.config.class_weights = class_weights(items["train"].labels(), trained.config.num_labels,
                                                 settings.class_weighting)
    collator = eval_collator = UtteranceCollator(inputs.media_processor(spec.modality), spec.modality, use_time_window)
    if spec.teacher:
        collator = DistillationCollator(eval_collator, UtteranceCollator(inputs.processor(), spec.teacher))
    cache = inputs.frame_cache() if spec.modality == "video" else None
    conversations = inputs.conversations(spec.modality != "text" or bool(spec.teacher))
    description.update(recipe=inputs.recipe.source, data=data_record(inputs.config.data, inputs.recipe.dataset,
                                                                     conversations),
                       utterances={split: len(item) for split, item in items.items()},
                       **({} if cache is None else {"frame_cache": str(cache.folder)}))
    return StageJob(
        name=spec.name, model=model, train_dataset=items["train"],
        eval_datasets={split: item for split, item in items.items() if split != "train"},
        collator=collator, eval_collator=eval_collator, label_names=trained.config.label_names,
        processor=inputs.processor(), description=description,
    )


def fusion_config_for_features(inputs: StageInputs, splits, features_dir):
    """The fusion config for a features folder: the dataset preset with the run's model settings, the features'
    width and label names, and a speaker table large enough for the speaker ids found (9 by default, more for the
    released global ids)."""
    settings = inputs.model_settings().given()
    settings["hidden_size"] = int(splits["train"].features["text"].shape[-1])  # every split's (load_feature_splits)
    settings.setdefault("intermediate_size", settings["hidden_size"])
    labels = getattr(splits["train"].features["labels"], "feature", None)
    if isinstance(labels, datasets.ClassLabel):  # the label names the features were saved with
        settings["id2label"], settings["label2id"] = labels_to_maps(labels.names)
    max_speaker = max((max(ids) for split in splits.values() for ids in split["speaker_ids"] if len(ids)), default=0)
    if max_speaker + 1 > 9:
        settings["num_speakers"] = int(max_speaker) + 1
    return MagtkdFusionConfig.from_preset(inputs.recipe.dataset, **settings)


def features_data_record(features_dir) -> dict | None:
    """The data record of the conversations a features folder was extracted from (None: not recorded, e.g. the
    released features imported with `import-released-features`)."""
    return load_metrics(features_dir).get("data") if (Path(features_dir) / METRICS_FILE).is_file() else None


def fusion_job(spec: StageSpec, inputs: StageInputs, settings: StageSettings) -> StageJob:
    """Stage 4: the fusion on the stage-3 features of its sources, conversations batched by length."""
    features_dir = inputs.input_folder("extract-features", spec.name)
    splits = load_feature_splits(features_dir)
    config = fusion_config_for_features(inputs, splits, features_dir)
    rows = fusion_feature_rows(splits, config, features_dir)
    config.class_weights = class_weights(np.concatenate([row["labels"] for row in rows["train"].rows]),
                                         config.num_labels, settings.class_weighting)
    return StageJob(
        name=spec.name, model=MagtkdFusionModel(config), train_dataset=rows["train"],
        eval_datasets={split: item for split, item in rows.items() if split != "train"},
        collator=FusionFeatureCollator.from_config(config),
        label_names=config.label_names, train_lengths=rows["train"].lengths(),
        description={
            "recipe": inputs.recipe.source, "features": str(features_dir),
            "feature_sources": {"text": "text", "audio": config.audio_feature_source,
                                "video": config.video_feature_source},
            "conversations": {split: len(item) for split, item in rows.items()},
            "data": features_data_record(features_dir),
        },
    )


# ----------------------------------------------------------------------------------------------- running


def run_stage(name: str, config: TrainingConfig | StageInputs) -> dict:
    """Run stage `name` of the stage table; returns its metrics (also in its folder's metrics.json)."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}, all")
    inputs = config if isinstance(config, StageInputs) else StageInputs(config)
    spec, settings = STAGES[name], inputs.settings(name)
    if spec.modality is not None and spec.modality not in inputs.config.modalities:
        raise ValueError(f"stage {name!r} trains a {spec.modality} model but the run's modalities are "
                         f"{inputs.config.modalities} (--modalities)")
    if spec.kind == "extract":
        return extract_features(inputs, settings)
    build_job = {"unimodal": unimodal_job, "distill": distillation_job, "fusion": fusion_job}[spec.kind]
    return train_stage(lambda accelerator: build_job(spec, inputs, settings), settings, inputs.output_folder(name),
                       resume=inputs.config.resume, stop_after_epochs=inputs.config.stop_after_epochs,
                       cpu=inputs.config.cpu)


def run_all(config: TrainingConfig) -> dict:
    """Every stage in order, each reading the previous ones' folders, then the end-to-end model in OUT/model. With
    `config.resume`, finished stages (their metrics JSON written) are skipped and an interrupted one resumes."""
    inputs = StageInputs(config)
    results = {}
    for name in STAGES:
        modality = STAGES[name].modality
        if modality is not None and modality not in config.modalities:
            results[name] = {"skipped": f"no {modality} in the run's modalities"}
            continue
        if config.resume and (inputs.output_folder(name) / METRICS_FILE).is_file():
            logger.info("%s: already done (%s), skipped", name, inputs.output_folder(name))
            results[name] = {"skipped": "already done"}
            continue
        results[name] = run_stage(name, inputs)
        if "stopped_after_epoch" in results[name]:
            return results
    if set(config.modalities) == {"text", "audio", "video"}:
        results["model"] = str(assemble_end_to_end(inputs))
    else:  # the end-to-end model holds an encoder of every modality
        results["model"] = {"skipped": f"the end-to-end model needs text, audio and video (run: {config.modalities})"}
    return results
