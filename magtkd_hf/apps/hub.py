"""Model cards (from the MODEL_CARD.md template, with huggingface_hub's `ModelCard`) and pushing a saved folder
(`magtkd-hf push`): an allow-listed upload from a staging folder, with a dry run."""

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from ..configuration_magtkd import IEMOCAP_LABELS, MELD_LABELS
from ..loading import load_config, load_model, read_json_object

MODEL_CARD_TEMPLATE = Path(__file__).resolve().parent / "model_card_template.md"
METRICS_FILE = "metrics.json"
CONFUSION_MATRIX_FILE = "confusion_matrix.png"

DATASET_NOTES = {
    "meld": "* **MELD** (Poria et al., 2019; dialogues from the TV series *Friends*): GPL-3.0. Labels: "
    f"{', '.join(MELD_LABELS)}.",
    "iemocap": "* **IEMOCAP** (Busso et al., 2008; USC SAIL): distributed by USC SAIL under its own licence terms, "
    "for research use after signing its release form; the data may not be redistributed. Labels (6-class "
    f"setting): {', '.join(IEMOCAP_LABELS)}.",
    "sample": "* **magtkd-hf sample conversations**: a few short conversations written for the package, with "
    "generated clips; shipped for the demo only, not a benchmark.",
}
# Only MELD has a public Hub dataset (IEMOCAP may not be redistributed; the sample ships in the package).
_HUB_DATASET_IDS = {"meld": "declare-lab/MELD"}
_DATASET_NAMES = {"meld": "MELD", "iemocap": "IEMOCAP", "sample": "magtkd-hf sample conversations"}
_RESULT_DATASET_TYPES = {**_HUB_DATASET_IDS, "iemocap": "iemocap", "sample": "magtkd-hf-sample"}
_DATASET_TAGS = {"meld": "meld", "iemocap": "iemocap"}
BASE_TAGS = ["magtkd", "emotion-recognition-in-conversation", "erc", "custom_code"]
TASK_NAME = "Emotion Recognition in Conversation"
# The model-index task: what was measured (an emotion per utterance of a conversation), the package's pipeline task.
TASK_TYPE = "emotion-recognition-in-conversation"
_GENERIC_FOLDER_NAMES = {"model", "models", "output", "outputs", "final", "best", "checkpoint", "run", "."}

# Per model type: the Hub pipeline tag, the modalities (tags), what the model is, and (no processor) how to call it.
# A stage model has a Hub task that takes exactly its input (text, audio, video -> one class per utterance). The Hub has
# no task whose input is a conversation's transcripts, audio and video together (the end-to-end model), nor one over
# precomputed features (the fusion): "text-classification" would make the Hub's widget and inference send text alone,
# so these get no pipeline tag rather than a wrong one; their modalities are in the tags.
_MODEL_KINDS = {
    "magtkd": (None, ("text", "audio", "video"), "RoBERTa text encoder with prompt learning, data2vec-audio and "
               "TimeSformer encoders, and the anchor-gated fusion.", ""),
    "magtkd_fusion": (None, ("text", "audio", "video"), "the anchor-gated fusion stage alone, on per-utterance "
                      "features.", "# a fusion-only model: per-utterance text, audio and video features (B, N, H), "
                      "speaker ids and a mask\nlogits = model(text_features, audio_features, video_features, "
                      "speaker_ids, attention_mask).logits"),
    "magtkd_text": ("text-classification", ("text",), "the text stage alone: a RoBERTa-family encoder on each "
                    "utterance's prompt (the utterance in its context), projected to the fusion width, and a "
                    "classifier.", "# the text stage alone: (utterances, length) prompt tokens, left padded, as "
                    "MagtkdProcessor builds them\nlogits = model(input_ids, attention_mask).logits  # (utterances, "
                    "emotions)"),
    "magtkd_audio": ("audio-classification", ("audio",), "the audio stage alone: a data2vec-audio encoder (its "
                     "first-frame feature) and a classifier.", "# the audio stage alone: (utterances, samples) 16 kHz "
                     "waveforms and their mask\nlogits = model(input_values, attention_mask).logits  # (utterances, "
                     "emotions)"),
    "magtkd_video": ("video-classification", ("video",), "the video stage alone: a TimeSformer encoder (its CLS "
                     "feature) and a classifier.", "# the video stage alone: (utterances, frames, 3, height, width) "
                     "frames\nlogits = model(pixel_values).logits  # (utterances, emotions)"),
}

# What a user of the model needs, and all that is uploaded (top-level files of the folder, an allow-list): weights,
# config, the model and processor code, processor and tokenizer files, metrics and confusion matrix; the card
# (README.md) is generated. Never checkpoints/, optimizer or random states, nor any pickle.
UPLOADED_FILES = (
    "config.json", "*.safetensors", "model.safetensors.index.json", "*.py", "processor_config.json",
    "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "added_tokens.json", "vocab.json", "merges.txt", "vocab.txt", METRICS_FILE, CONFUSION_MATRIX_FILE,
)
CARD_FILE = "README.md"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    cells = [[f"{value:g}" if isinstance(value, float) else str(value) for value in row] for row in rows]
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(row) + " |" for row in cells])


def _percent(value) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else ""


def _evaluated_splits(metrics: Mapping | None) -> list[str]:
    # A stage's metrics.json holds `"validation": null` when no epoch was selected on it.
    return [split for split in ("validation", "test") if metrics and isinstance(metrics.get(split), Mapping)]


def _metrics_tables(metrics: Mapping | None, label_names: Sequence[str]) -> tuple[str, str]:
    splits = _evaluated_splits(metrics)
    if not splits:
        return "", ""
    overall = markdown_table(
        ["split", "weighted F1 (%)", "accuracy (%)", "utterances"],
        [[split, _percent(metrics[split].get("weighted_f1")), _percent(metrics[split].get("accuracy")),
          metrics[split].get("num_utterances", "")] for split in splits],
    )
    with_classes = [split for split in splits if "per_class_f1" in metrics[split]]
    per_class = [[name, *(_percent(metrics[split]["per_class_f1"].get(name)) for split in with_classes)]
                 for name in label_names]
    return overall, markdown_table(["class", *with_classes], per_class) if with_classes else ""


def read_metrics(model_dir: Path) -> dict | None:
    """The folder's metrics.json (None without one), or a one-line error naming it."""
    path = model_dir / METRICS_FILE
    return read_json_object(path, "metrics") if path.is_file() else None


def recorded_dataset(metrics: Mapping | None) -> tuple[str | None, str]:
    """The dataset that metrics.json records the model was trained and measured on ("meld", "iemocap", "sample"; see
    `magtkd_hf.training.reporting.data_record`), or None and why: the card then names no dataset, no model-index."""
    if metrics is None:
        return None, f"the folder has no {METRICS_FILE}"
    record = metrics.get("data")
    if not isinstance(record, Mapping):
        return None, f"its {METRICS_FILE} does not record the data the model was measured on"
    if record.get("name") not in DATASET_NOTES:
        return None, f"its {METRICS_FILE} records data of unknown origin ({record.get('source')})"
    return record["name"], ""


def eval_results(metrics: Mapping | None, dataset: str | None) -> list[EvalResult] | None:
    """The card's `model-index`: weighted F1 and accuracy (percent) per evaluated split of the recorded `dataset`."""
    if dataset is None:
        return None
    return [
        EvalResult(task_type=TASK_TYPE, task_name=TASK_NAME, dataset_type=_RESULT_DATASET_TYPES[dataset],
                   dataset_name=_DATASET_NAMES[dataset], dataset_split=split, metric_type=metric_type,
                   metric_name=metric_name, metric_value=metrics[split][key], metric_args=args)
        for split in _evaluated_splits(metrics)
        for key, metric_type, metric_name, args in (("weighted_f1", "f1", "Weighted F1 (%)", {"average": "weighted"}),
                                                    ("accuracy", "accuracy", "Accuracy (%)", None))
        if isinstance(metrics[split].get(key), (int, float))
    ] or None


def recipe_rows(metrics: Mapping | None) -> list[tuple[str, object]]:
    """The training settings metrics.json records: the recipe's name and the stage's settings."""
    settings = metrics.get("settings") if metrics else None
    if not isinstance(settings, Mapping):
        return []
    recipe = [("recipe", Path(str(metrics["recipe"])).stem)] if metrics.get("recipe") else []
    return recipe + [(f"{metrics.get('stage', '')} {key}".strip(), value) for key, value in sorted(settings.items())]


def _is_hub_model_id(name_or_path: str) -> bool:
    try:
        validate_repo_id(name_or_path)
    except HFValidationError:
        return False
    return not Path(name_or_path).exists()


def base_models(config) -> list[str]:
    """The Hub encoders (text, audio, video) the model was fine-tuned from: their configs' `_name_or_path`, if any."""
    stages = [config] if hasattr(config, "encoder_config") else [  # a stage model, or the end-to-end model's stages
        getattr(config, name, None) for name in ("text_config", "audio_config", "video_config")]
    names = [str(getattr(getattr(stage, "encoder_config", None), "_name_or_path", "") or "") for stage in stages]
    return list(dict.fromkeys(name for name in names if _is_hub_model_id(name)))


def card_model_name(model_dir: Path, repo_id: str | None, model_name: str | None, model_type: str,
                    datasets: Sequence[str]) -> str:
    """`model_name`, else the repository's name, else the folder's unless generic (then e.g. "magtkd-meld")."""
    if model_name or repo_id:
        return model_name or repo_id.split("/")[-1]
    folder = model_dir.resolve().name
    return "-".join([model_type.replace("_", "-"), *datasets]) if folder.lower() in _GENERIC_FOLDER_NAMES else folder


def install_command(repository_url: str | None = None) -> str:
    """The pip line installing magtkd-hf (not on PyPI) from `repository_url` or a clone, with torch pinned."""
    if not repository_url:
        return 'pip install "torch==2.13.0" -e .'
    url = repository_url.removeprefix("git+")
    if not url.startswith(("https://", "ssh://")):
        raise ValueError(f"repository_url {repository_url!r}: give an https:// or ssh:// git URL.")
    return f'pip install "torch==2.13.0" "magtkd-hf @ git+{url}"'


def _card_data(config, metrics: Mapping | None, dataset: str | None, name: str) -> ModelCardData:
    pipeline_tag, modalities, _, _ = _MODEL_KINDS[config.model_type]
    tags = [*BASE_TAGS, *modalities, *(["multimodal"] if len(modalities) > 1 else []),
            *([_DATASET_TAGS[dataset]] if dataset in _DATASET_TAGS else [])]
    return ModelCardData(
        language="en", license="gpl-3.0", library_name="transformers", pipeline_tag=pipeline_tag, tags=tags,
        datasets=[_HUB_DATASET_IDS[dataset]] if dataset in _HUB_DATASET_IDS else None, model_name=name,
        base_model=base_models(config) or None, metrics=["f1", "accuracy"] if _evaluated_splits(metrics) else None,
        eval_results=eval_results(metrics, dataset),
    )


def build_model_card(model_dir: str | Path, repo_id: str | None = None, model_name: str | None = None,
                     repository_url: str | None = None) -> ModelCard:
    """The model card of a saved model folder, from the folder alone: its config, and its metrics.json for the results,
    the training settings and the dataset (see [`recorded_dataset`]). `model_name`: see [`card_model_name`];
    `repository_url`: magtkd-hf's git URL (the card's install line)."""
    model_dir = Path(model_dir)
    config = load_config(model_dir)  # the package's config classes: no code from the folder runs
    metrics = read_metrics(model_dir)
    dataset, _ = recorded_dataset(metrics)
    metrics_table, per_class_table = _metrics_tables(metrics, config.label_names)
    _, _, architecture_note, call_example = _MODEL_KINDS[config.model_type]
    name = card_model_name(model_dir, repo_id, model_name, config.model_type, [dataset] if dataset else [])
    fusion = config.fusion_model_config if config.model_type == "magtkd" else config
    if not getattr(fusion, "modality_dropout", 1):
        architecture_note += "\n\nThis model was not trained for missing modalities (its `modality_dropout` is 0)."
    recipe = recipe_rows(metrics)
    return ModelCard.from_template(
        _card_data(config, metrics, dataset, name), template_path=str(MODEL_CARD_TEMPLATE), model_name=name,
        repo_id=repo_id or str(model_dir), num_labels=config.num_labels, label_list=", ".join(config.label_names),
        architecture_note=architecture_note, has_processor=(model_dir / "processor_config.json").exists(),
        call_example=call_example, install_command=install_command(repository_url),
        from_repository_url=bool(repository_url), metrics_table=metrics_table, per_class_table=per_class_table,
        confusion_matrix=CONFUSION_MATRIX_FILE if (model_dir / CONFUSION_MATRIX_FILE).exists() else "",
        recipe_table=markdown_table(["setting", "value"], recipe) if recipe else "",
        dataset_notes=DATASET_NOTES[dataset] if dataset else "The training data was not recorded.",
        max_position_embeddings=getattr(fusion, "max_position_embeddings", ""),
    )


def save_model_card(model_dir: str | Path, **kwargs) -> Path:
    """Writes the folder's `README.md` model card (see [`build_model_card`])."""
    path = Path(model_dir) / CARD_FILE
    build_model_card(model_dir, **kwargs).save(path)
    return path


@dataclass
class UploadPlan:
    """The exact upload of a saved folder: `files` (names in the folder, and README.md: the generated `card`), the
    folder's entries `left_out`, and `notes` on the card (e.g. why it has no model-index)."""

    folder: Path
    repo_id: str
    files: list[str]
    left_out: list[str]
    card: ModelCard
    notes: list[str]

    def describe(self) -> str:
        """The file list (with sizes), what is left out, the notes and the card: what `push --dry-run` prints."""
        sizes = {name: (self.folder / name).stat().st_size for name in self.files if name != CARD_FILE}
        lines = [f"{self.folder} -> {self.repo_id}: {len(self.files)} files",
                 *(f"  {name}  ({sizes[name]:,} bytes)" if name in sizes else f"  {name}  (the model card below)"
                   for name in self.files)]
        if self.left_out:
            lines.append(f"Left out (not needed to use the model): {', '.join(self.left_out)}")
        lines += [f"Note: {note}" for note in self.notes]
        return "\n".join([*lines, "", str(self.card)])

    def stage(self, staging: Path) -> None:
        """The upload in `staging`: links to the folder's files (nothing copied, the folder unchanged) and the card."""
        for name in self.files:
            if name != CARD_FILE:
                os.symlink((self.folder / name).resolve(), staging / name)
        self.card.save(staging / CARD_FILE)


def plan_upload(model_dir: str | Path, repo_id: str, model_name: str | None = None,
                repository_url: str | None = None) -> UploadPlan:
    """What [`push_to_hub`] would upload (its dry run; nothing is written or sent): the model is loaded and checked
    first (`magtkd_hf.loading.load_model`: no folder of damaged or missing weights is pushed)."""
    model_dir = Path(model_dir)
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"repository id {repo_id!r}: {error}") from None
    load_model(model_dir)
    entries = sorted(model_dir.iterdir())
    files = [entry.name for entry in entries if entry.is_file()
             and any(fnmatch(entry.name, pattern) for pattern in UPLOADED_FILES)]
    left_out = [entry.name + ("/" if entry.is_dir() else "") for entry in entries
                if entry.name not in files and entry.name != CARD_FILE]
    card = build_model_card(model_dir, repo_id=repo_id, model_name=model_name, repository_url=repository_url)
    dataset, why = recorded_dataset(read_metrics(model_dir))
    notes = [] if dataset else [f"no datasets and no model-index in the card: {why}."]
    return UploadPlan(model_dir, repo_id, [*files, CARD_FILE], left_out, card, notes)


def push_to_hub(model_dir: str | Path, repo_id: str, private: bool = False, token: str | None = None,
                **card_kwargs) -> str:
    """Uploads what a user of the saved folder's model needs ([`plan_upload`]: weights, config, code, processor,
    metrics, confusion matrix, a fresh model card) to `repo_id`, from a staging folder: the folder itself is never
    changed. Returns the commit URL. `card_kwargs`: see [`build_model_card`]."""
    plan = plan_upload(model_dir, repo_id, **card_kwargs)
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="magtkd-push-") as staging:
        plan.stage(Path(staging))
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            return str(api.upload_folder(repo_id=repo_id, folder_path=staging, commit_message="Upload MAGTKD model"))
        except OSError as error:  # the Hub's HTTP errors, offline mode, no connection
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise OSError(f"push to {repo_id}: {first_line}") from error


def add_push_command(subparsers) -> None:
    """`magtkd-hf push FOLDER REPO_ID [--dry-run] [--private]`."""
    parser = subparsers.add_parser(
        "push", help="upload a saved model folder to the Hugging Face Hub (--dry-run: show the upload, send nothing)",
        description="Uploads what a user of the model in FOLDER needs (weights, config, code, processor and tokenizer "
        "files, metrics.json, the confusion matrix) with a model card generated from the folder; never checkpoints, "
        "optimizer or random states, nor any pickle. FOLDER itself is not changed. The card names the dataset and gives "
        "results (model-index) only where metrics.json records the data they were measured on. Uses your Hub login "
        "(`hf auth login` or HF_TOKEN).",
    )
    parser.add_argument("folder", metavar="FOLDER", help="a folder saved by magtkd-hf (e.g. OUTPUT_DIR/model)")
    parser.add_argument("repo_id", metavar="REPO_ID", help="the Hub repository, e.g. your-name/magtkd-meld")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the files that would be uploaded and the model card; upload nothing (no network)")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.set_defaults(func=_run_push)


def _run_push(args) -> None:
    if args.dry_run:
        print(plan_upload(args.folder, args.repo_id).describe())
        return
    print(f"Uploaded {args.folder} to {args.repo_id}: {push_to_hub(args.folder, args.repo_id, private=args.private)}")
