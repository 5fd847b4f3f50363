"""The four MAGTKD stages as data: which model, which inputs, which loss (spec sections 3-6).

`STAGES` is the stage table; `run_stage(name, context)` builds the stage's task and runs the one loop of
`loop.py` (or, for `extract-features`, the feature extraction). Each stage reads the previous stages' folders under
the run's output folder and writes its own:

    OUT/processor/        the processor every stage uses (built from the encoders unless given)
    OUT/text/ audio/ video/                 stage 1: save_pretrained folders + metrics.json + confusion_matrix.png
    OUT/distill-audio/ distill-video/       stage 2: the distilled students (same layout)
    OUT/features/                           stage 3: a DatasetDict of utterance features per conversation
    OUT/fusion/                             stage 4: MagtkdFusionModel
    OUT/model/                              `all`: the end-to-end MagtkdForEmotionRecognition + processor
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from ..configuration_magtkd import FEATURE_SOURCES, MagtkdConfig, MagtkdFusionConfig
from ..losses import distillation_loss
from .data import (
    SPLITS,
    ConversationCollator,
    ConversationItems,
    FeatureRows,
    UtteranceCollator,
    UtteranceItems,
    feature_hidden_size,
    feature_label_names,
    load_conversations,
    load_feature_splits,
    model_inputs,
    shares_video_files,
)
from .loop import METRICS_FILE, StageTask, make_accelerator, train_stage
from .recipe import Recipe, StageSettings
from .reporting import write_json

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageSpec:
    """One row of the stage table.

    kind: "unimodal" (stage 1: encoder + head, cross-entropy), "distill" (stage 2: student trained against the frozen
        `teacher` stage's model), "extract" (stage 3), "fusion" (stage 4).
    modality: the trained model's modality. folder: the stage's folder under the run's output folder.
    feature: the stage-3 column the stage's model fills.
    """

    name: str
    kind: str
    folder: str
    modality: str | None = None
    teacher: str | None = None
    feature: str | None = None
    description: str = ""


STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in (
        StageSpec("text", "unimodal", "text", "text", feature="text", description="stage 1: text model (prompt)"),
        StageSpec("audio", "unimodal", "audio", "audio", feature="audio", description="stage 1: audio model"),
        StageSpec("video", "unimodal", "video", "video", feature="video", description="stage 1: video model"),
        StageSpec("distill-audio", "distill", "distill-audio", "audio", teacher="text", feature="audio_kd",
                  description="stage 2: audio student distilled from the frozen text model"),
        StageSpec("distill-video", "distill", "distill-video", "video", teacher="text", feature="video_kd",
                  description="stage 2: video student distilled from the frozen text model"),
        StageSpec("extract-features", "extract", "features",
                  description="stage 3: utterance features of every split, grouped by conversation"),
        StageSpec("fusion", "fusion", "fusion", description="stage 4: the anchor gated fusion on stage-3 features"),
    )
}
STAGE_ORDER = tuple(STAGES)
FEATURE_STAGE = {spec.feature: name for name, spec in STAGES.items() if spec.feature}


def _model_class(modality: str):
    from .. import MagtkdAudioModel, MagtkdTextModel, MagtkdVideoModel

    return {"text": MagtkdTextModel, "audio": MagtkdAudioModel, "video": MagtkdVideoModel}[modality]


@dataclass
class TrainingContext:
    """Everything a run of one or more stages shares: the recipe, folders, encoders, overrides."""

    output_dir: Path
    recipe: Recipe
    data: str | None = None
    processor_path: str | None = None
    encoders: dict = field(default_factory=dict)
    stage_dirs: dict = field(default_factory=dict)  # stage name -> folder, overriding OUT/<folder>
    features: str | None = None
    overrides: dict = field(default_factory=dict)  # stage name or "*" -> {setting: value}
    model_overrides: dict = field(default_factory=dict)  # num_attention_heads, dropout, feature sources
    cpu: bool = False
    resume: Any = False
    stop_after_epochs: int | None = None
    on_missing: str = "raise"
    _conversations: Any = None
    _processor: Any = None

    def __post_init__(self):
        self.output_dir = Path(self.output_dir)

    # -- folders
    def stage_dir(self, stage: str) -> Path:
        if stage in self.stage_dirs and self.stage_dirs[stage]:
            return Path(self.stage_dirs[stage])
        if stage == "extract-features" and self.features:
            return Path(self.features)
        return self.output_dir / STAGES[stage].folder

    def input_dir(self, stage: str, needed_by: str) -> Path:
        folder = self.stage_dir(stage)
        if not (folder / "config.json").is_file() and not (folder / "dataset_dict.json").is_file():
            raise FileNotFoundError(
                f"stage {needed_by!r} needs the output of stage {stage!r} in {folder}, which holds no model or "
                f"dataset: run `magtkd-hf train {stage}` first or point to it (e.g. --{stage}-model DIR)"
            )
        return folder

    def settings(self, stage: str) -> StageSettings:
        overrides = {**self.overrides.get("*", {}), **self.overrides.get(stage, {})}
        return self.recipe.stage_settings(stage, overrides)

    # -- data and processor
    def conversations(self):
        if self._conversations is None:
            if not self.data:
                raise ValueError("stages 1-3 need --data: a MELD/IEMOCAP release folder or a saved DatasetDict")
            self._conversations = load_conversations(self.data, self.recipe.dataset, self.on_missing)
            missing = [split for split in ("train", "validation") if split not in self._conversations]
            if missing:
                raise ValueError(f"--data {self.data}: splits {missing} are missing")
        return self._conversations

    def encoder(self, modality: str) -> str:
        name = self.encoders.get(modality) or self.recipe.encoders.get(modality)
        if not name:
            raise ValueError(f"no {modality} encoder: give --{modality}-encoder (a Hub name or a folder)")
        return name

    def processor(self):
        """The run's processor: --processor, else OUT/processor, else built from the text and audio encoders (and
        saved to OUT/processor for the later stages)."""
        if self._processor is not None:
            return self._processor
        from accelerate import PartialState

        from .. import MagtkdProcessor

        saved = self.output_dir / "processor"
        if self.processor_path:
            self._processor = MagtkdProcessor.from_pretrained(self.processor_path)
        elif (saved / "processor_config.json").is_file():
            self._processor = MagtkdProcessor.from_pretrained(str(saved))
        else:
            video_size = int(getattr(self._encoder_config("video"), "image_size", 224))
            self._processor = MagtkdProcessor.from_encoders(
                self.encoder("text"), self.encoder("audio"), video_size=video_size
            )
            if PartialState().is_main_process:
                self._processor.save_pretrained(str(saved))
        return self._processor

    def _encoder_config(self, modality: str):
        from transformers import AutoConfig

        overrides = self.recipe.encoder_config_overrides.get(modality, {})
        return AutoConfig.from_pretrained(self.encoder(modality), **overrides)

    def model_config(self, processor) -> MagtkdConfig:
        """The stage-1/2 models' config: the recipe's preset (labels, loss weights, feature sources), the three
        encoders' configs, the fusion width = the audio/video encoders' width."""
        text_config = self._encoder_config("text")
        text_config.vocab_size = len(processor.tokenizer)
        audio_config, video_config = self._encoder_config("audio"), self._encoder_config("video")
        hidden_size = int(self.model_overrides.get("hidden_size") or audio_config.hidden_size)
        settings = self._fusion_settings(hidden_size)
        return MagtkdConfig.from_preset(
            self.recipe.dataset, text_config=text_config, audio_config=audio_config, video_config=video_config,
            **settings,
        )

    def _fusion_settings(self, hidden_size: int) -> dict:
        model = {**self.recipe.model, **{k: v for k, v in self.model_overrides.items() if v is not None}}
        settings = {"hidden_size": hidden_size, "intermediate_size": int(model.get("intermediate_size") or hidden_size)}
        for key in ("num_attention_heads", "dropout", "audio_feature_source", "video_feature_source",
                    "share_text_anchor_block"):
            if model.get(key) is not None:
                settings[key] = model[key]
        return settings


# ----------------------------------------------------------------------------------------------- stages 1 and 2


def _unimodal_loss(modality, model, batch, frozen):
    return model(**model_inputs(modality, batch[modality]), labels=batch["labels"]).loss


def _unimodal_predict(modality, model, batch, frozen):
    logits = model(**model_inputs(modality, batch[modality])).logits
    return logits.argmax(-1), batch["labels"]


def _distill_loss(modality, weights, model, batch, frozen):
    student = model(**model_inputs(modality, batch[modality]))
    with torch.no_grad():
        teacher = frozen["teacher"](**model_inputs("text", batch["text"]))
    return distillation_loss(
        student.logits.float(), teacher.logits.float(), batch["labels"],
        student.features.float(), teacher.features.float(), **weights,
    )


def _save_with_processor(processor, model, folder):
    model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))


def _build_encoder_task(context: TrainingContext, spec: StageSpec, settings: StageSettings, accelerator) -> StageTask:
    processor = context.processor()
    splits = context.conversations()
    model_class = _model_class(spec.modality)
    overrides = context.recipe.encoder_config_overrides.get(spec.modality, {})
    frozen, description = {}, {"recipe": context.recipe.source, "data": str(context.data)}
    start_from_stage = spec.kind == "distill" and settings.student_init == "stage"
    if start_from_stage:
        init_dir = context.input_dir(spec.modality, spec.name)
        model = model_class.from_pretrained(str(init_dir))
        description["initialised_from"] = str(init_dir)
    else:
        config = context.model_config(processor)
        model = model_class.from_encoder(config, context.encoder(spec.modality), **overrides)
        description["initialised_from"] = context.encoder(spec.modality)

    modalities = (spec.modality,)
    if spec.kind == "distill":
        teacher_dir = context.input_dir(spec.teacher, spec.name)
        frozen["teacher"] = _model_class(spec.teacher).from_pretrained(str(teacher_dir))
        description["teacher"] = str(teacher_dir)
        modalities = tuple(dict.fromkeys((spec.teacher, spec.modality)))
        config = model.config
        weights = dict(
            logit_weight=settings.logit_weight, feature_weight=settings.feature_weight,
            logit_temperature=config.logit_loss_temperature, inter_weight=config.logit_loss_inter_weight,
            intra_weight=config.logit_loss_intra_weight, feature_temperature=config.feature_loss_temperature,
        )
        loss_fn = partial(_distill_loss, spec.modality, weights)
        description["loss"] = {"cross_entropy": 1.0, "logit_relation": weights["logit_weight"],
                               "feature_relation": weights["feature_weight"]}
    else:
        loss_fn = partial(_unimodal_loss, spec.modality)

    rows = {split: splits[split].to_list() for split in splits if split in SPLITS}
    use_time_window = shares_video_files([row for split_rows in rows.values() for row in split_rows])
    items = {split: UtteranceItems(split_rows, split) for split, split_rows in rows.items()}
    description["utterances"] = {split: len(item) for split, item in items.items()}
    label_names = [model.config.id2label[index] for index in range(model.config.num_labels)]
    return StageTask(
        name=spec.name,
        model=model,
        train_dataset=items["train"],
        eval_datasets={split: item for split, item in items.items() if split != "train"},
        collate_fn=UtteranceCollator(processor, modalities, use_time_window),
        loss_fn=loss_fn,
        predict_fn=partial(_unimodal_predict, spec.modality),
        save_fn=partial(_save_with_processor, processor),
        load_fn=lambda folder: model_class.from_pretrained(str(folder)),
        label_names=label_names,
        frozen=frozen,
        description=description,
    )


# ----------------------------------------------------------------------------------------------- stage 4


def _fusion_loss(model, batch, frozen):
    return model(**batch).loss


def _fusion_predict(model, batch, frozen):
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    logits = model(**inputs).logits
    return logits.argmax(-1), batch["labels"]


def fusion_config_for_features(context: TrainingContext, splits, features_dir) -> MagtkdFusionConfig:
    """The fusion config for a features folder: the recipe's preset, the features' width and label names, a speaker
    table large enough for the speaker ids found (9 by default, more for the released global ids)."""
    hidden_size = feature_hidden_size(splits, features_dir)
    settings = context._fusion_settings(hidden_size)
    label_names = feature_label_names(splits)
    preset = MagtkdFusionConfig.from_preset(context.recipe.dataset)
    if label_names is not None and list(label_names) != [preset.id2label[i] for i in range(preset.num_labels)]:
        settings["id2label"] = dict(enumerate(label_names))
        settings["label2id"] = {name: index for index, name in enumerate(label_names)}
    max_speaker = max(
        (max(speakers) for dataset in splits.values() for speakers in dataset["speaker_ids"] if len(speakers)),
        default=0,
    )
    if max_speaker + 1 > 9:
        settings["num_speakers"] = int(max_speaker) + 1
    return MagtkdFusionConfig.from_preset(context.recipe.dataset, **settings)


def _build_fusion_task(context: TrainingContext, spec: StageSpec, settings: StageSettings, accelerator) -> StageTask:
    from .. import MagtkdFusionModel
    from ..features import FusionFeatureCollator

    features_dir = context.input_dir("extract-features", spec.name)
    splits = load_feature_splits(features_dir)
    config = fusion_config_for_features(context, splits, features_dir)
    model = MagtkdFusionModel(config)
    columns = ("text", config.audio_feature_source, config.video_feature_source)
    rows = {
        split: FeatureRows(splits[split], columns, config.num_labels, f"{features_dir} ({split})")
        for split in splits if split in SPLITS
    }
    label_names = [config.id2label[index] for index in range(config.num_labels)]
    return StageTask(
        name=spec.name,
        model=model,
        train_dataset=rows["train"],
        eval_datasets={split: item for split, item in rows.items() if split != "train"},
        collate_fn=FusionFeatureCollator(config.audio_feature_source, config.video_feature_source),
        loss_fn=_fusion_loss,
        predict_fn=_fusion_predict,
        save_fn=lambda model, folder: model.save_pretrained(str(folder)),
        load_fn=lambda folder: MagtkdFusionModel.from_pretrained(str(folder)),
        label_names=label_names,
        train_lengths=rows["train"].lengths(),
        description={
            "recipe": context.recipe.source,
            "features": str(features_dir),
            "feature_sources": {"text": "text", "audio": config.audio_feature_source,
                                "video": config.video_feature_source},
            "conversations": {split: len(item) for split, item in rows.items()},
        },
    )


# ----------------------------------------------------------------------------------------------- stage 3


@torch.no_grad()
def extract_features(context: TrainingContext, settings: StageSettings | None = None) -> dict:
    """Stage 3: every utterance of every split through the frozen stage-1/2 models -> per split, a `datasets`
    dataset of conversations (the schema of `magtkd_hf.features.feature_dataset_features`), saved with
    `save_to_disk` to OUT/features. Conversations are shared out between processes and gathered on the main one."""
    import datasets
    from accelerate.utils import gather_object, set_seed
    from torch.utils.data import DataLoader

    from ..features import feature_dataset_features

    spec = STAGES["extract-features"]
    settings = settings or context.settings(spec.name)
    output = context.stage_dir(spec.name)
    accelerator = make_accelerator(settings, output, context.cpu)
    set_seed(settings.seed)
    started = time.perf_counter()
    processor = context.processor()
    splits = context.conversations()
    models, sources = {}, {}
    for column in FEATURE_SOURCES:
        stage = FEATURE_STAGE[column]
        folder = context.input_dir(stage, spec.name)
        model = _model_class(STAGES[stage].modality).from_pretrained(str(folder))
        models[column] = model.to(accelerator.device).eval()
        sources[column] = str(folder)
    hidden_sizes = {column: model.config.hidden_size for column, model in models.items()}
    if len(set(hidden_sizes.values())) != 1:
        raise ValueError(f"extract-features: the models' feature widths differ: {hidden_sizes} (from {sources})")
    hidden_size = next(iter(hidden_sizes.values()))
    text_config = models["text"].config
    label_names = [text_config.id2label[index] for index in range(text_config.num_labels)]
    feature_schema = feature_dataset_features(hidden_size, label_names)
    chunk = settings.batch_size

    result = {}
    for split in [split for split in SPLITS if split in splits]:
        rows = splits[split].to_list()
        positions = list(range(accelerator.process_index, len(rows), accelerator.num_processes))
        loader = DataLoader(
            ConversationItems(rows, positions), batch_size=1, shuffle=False, num_workers=settings.num_workers,
            collate_fn=ConversationCollator(processor),
        )
        local = []
        for batch in loader:
            inputs = batch["inputs"]
            total = inputs["input_ids"].shape[0]
            computed = {column: [] for column in FEATURE_SOURCES}
            for start in range(0, total, chunk):
                part = slice(start, start + chunk)
                text_inputs = _trim_left_padding(inputs["input_ids"][part], inputs["attention_mask"][part])
                audio_inputs = {"input_values": inputs["input_values"][part],
                                "attention_mask": inputs["audio_attention_mask"][part]}
                video_inputs = {"pixel_values": inputs["pixel_values"][part]}
                per_modality = {"text": text_inputs, "audio": audio_inputs, "video": video_inputs}
                with accelerator.autocast():
                    for column, model in models.items():
                        modality = STAGES[FEATURE_STAGE[column]].modality
                        moved = {key: value.to(accelerator.device) for key, value in per_modality[modality].items()}
                        computed[column].append(model(**moved).features.float().cpu())
            position = batch["positions"][0]
            row = rows[position]
            count = len(row["texts"])
            speakers = inputs["speaker_ids"][0, :count].tolist()
            local.append({
                "position": position,
                "dialogue_id": str(row["dialogue_id"]),
                "utterance_ids": [str(u) for u in row.get("utterance_ids", range(count))],
                **{column: torch.cat(parts).numpy() for column, parts in computed.items()},
                "speaker_ids": speakers,
                "labels": [int(label) for label in row["labels"]],
            })
        gathered = gather_object(local) if accelerator.num_processes > 1 else local
        if accelerator.is_main_process:
            gathered = sorted(gathered, key=lambda item: item["position"])
            columns = {name: [item[name] for item in gathered] for name in feature_schema}
            result[split] = datasets.Dataset.from_dict(columns, features=feature_schema)
    summary = {}
    if accelerator.is_main_process:
        dataset_dict = datasets.DatasetDict(result)
        dataset_dict.save_to_disk(str(output))
        summary = {
            "stage": spec.name,
            "features": str(output),
            "models": sources,
            "hidden_size": hidden_size,
            "conversations": {split: len(dataset) for split, dataset in result.items()},
            "utterances": {split: int(sum(len(x) for x in dataset["labels"])) for split, dataset in result.items()},
            "seconds": time.perf_counter() - started,
            "num_processes": accelerator.num_processes,
        }
        write_json(output / METRICS_FILE, summary)
    accelerator.wait_for_everyone()
    return summary


def _trim_left_padding(input_ids, attention_mask):
    first = int(attention_mask.any(dim=0).nonzero()[0])
    return {"input_ids": input_ids[:, first:], "attention_mask": attention_mask[:, first:]}


# ----------------------------------------------------------------------------------------------- running


def run_stage(name: str, context: TrainingContext) -> dict:
    """Run stage `name` of the stage table with `context`; returns its metrics (also in its folder's metrics.json)."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGE_ORDER)}, all")
    spec = STAGES[name]
    settings = context.settings(name)
    if spec.kind == "extract":
        return extract_features(context, settings)
    output = context.output_dir / spec.folder
    builder = _build_fusion_task if spec.kind == "fusion" else _build_encoder_task
    return train_stage(
        lambda accelerator: builder(context, spec, settings, accelerator),
        settings,
        output,
        resume=context.resume,
        stop_after_epochs=context.stop_after_epochs,
        cpu=context.cpu,
        find_unused_parameters=spec.kind != "fusion",
    )


def stage_done(name: str, context: TrainingContext) -> bool:
    folder = context.stage_dir(name) if STAGES[name].kind == "extract" else context.output_dir / STAGES[name].folder
    return (folder / METRICS_FILE).is_file()


def run_all(context: TrainingContext) -> dict:
    """Every stage in order, each reading the previous ones' folders, then the end-to-end model in OUT/model. With
    `context.resume`, finished stages (their metrics JSON written) are skipped and an interrupted one resumes."""
    results = {}
    for name in STAGE_ORDER:
        if context.resume and stage_done(name, context):
            logger.info("%s: already done (%s), skipped", name, context.output_dir / STAGES[name].folder)
            results[name] = {"skipped": "already done"}
            continue
        results[name] = run_stage(name, context)
        if "stopped_after_epoch" in results[name]:
            return results
    results["model"] = str(assemble_end_to_end(context))
    return results


def assemble_end_to_end(context: TrainingContext) -> Path:
    """OUT/model: `MagtkdForEmotionRecognition` holding the trained text model, the audio and video models the fusion
    was trained on (per its feature sources) and the fusion, with the processor: predicts from conversations."""
    from accelerate import PartialState

    from .. import MagtkdForEmotionRecognition, MagtkdFusionModel

    folder = context.output_dir / "model"
    fusion = MagtkdFusionModel.from_pretrained(str(context.input_dir("fusion", "all")))
    chosen = {}
    for modality, source in (("text", "text"), ("audio", fusion.config.audio_feature_source),
                             ("video", fusion.config.video_feature_source)):
        stage = FEATURE_STAGE[source]
        chosen[modality] = _model_class(modality).from_pretrained(str(context.input_dir(stage, "all")))
    model = MagtkdForEmotionRecognition.from_unimodal_models(
        chosen["text"], chosen["audio"], chosen["video"], fusion_model=fusion
    )
    if PartialState().is_main_process:
        model.save_pretrained(str(folder))
        context.processor().save_pretrained(str(folder))
        _write_model_card(context, folder)
    PartialState().wait_for_everyone()
    return folder


def _write_model_card(context: TrainingContext, folder: Path) -> None:
    """The fusion stage's metrics and confusion matrix beside the end-to-end model, and its model card (README.md)."""
    from ..datasets_scripts.sample import SAMPLE_MELD_ROOT
    from ..hub import CONFUSION_MATRIX_FILE, save_model_card

    fusion_dir = context.input_dir("fusion", "all")
    for name in (METRICS_FILE, CONFUSION_MATRIX_FILE):
        if (fusion_dir / name).exists():
            shutil.copyfile(fusion_dir / name, folder / name)
    on_sample = context.data is not None and Path(context.data).resolve() == SAMPLE_MELD_ROOT
    recipe = {"recipe": context.recipe.name, **{f"fusion {key}": value for key, value in
                                               asdict(context.settings("fusion")).items()}}
    save_model_card(folder, recipe=recipe, datasets=["sample" if on_sample else context.recipe.dataset])


def evaluate_saved_fusion(
    model_dir: str | Path, features_dir: str | Path, splits=("validation", "test"), batch_size: int = 64,
    cpu: bool = True,
) -> dict:
    """A saved fusion model evaluated in this process alone on a features folder: {split: metrics with the
    confusion matrix}. (The reference for the metrics that training gathers over several processes.)"""
    from types import SimpleNamespace

    from torch.utils.data import DataLoader

    from .. import MagtkdFusionModel
    from ..features import FusionFeatureCollator
    from .loop import evaluate
    from .reporting import confusion_matrix

    model = MagtkdFusionModel.from_pretrained(str(model_dir)).eval()
    config = model.config
    feature_splits = load_feature_splits(features_dir)
    accelerator = make_accelerator(StageSettings(), Path(model_dir), cpu)
    model = model.to(accelerator.device)
    label_names = [config.id2label[index] for index in range(config.num_labels)]
    task = SimpleNamespace(predict_fn=_fusion_predict, label_names=label_names)
    columns = ("text", config.audio_feature_source, config.video_feature_source)
    results = {}
    for split in splits:
        if split not in feature_splits:
            continue
        rows = FeatureRows(feature_splits[split], columns, config.num_labels, f"{features_dir} ({split})")
        loader = DataLoader(rows, batch_size=batch_size, collate_fn=FusionFeatureCollator(*columns[1:]))
        metrics, (labels, predictions) = evaluate(accelerator, model, loader, task, {})
        metrics["confusion_matrix"] = confusion_matrix(labels, predictions, config.num_labels)
        results[split] = metrics
    return results


def load_metrics(folder: str | Path) -> dict:
    return json.loads((Path(folder) / METRICS_FILE).read_text())
