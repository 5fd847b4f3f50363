"""Model cards (from the MODEL_CARD.md template, with huggingface_hub's `ModelCard`) and pushing a saved folder."""

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from ..configuration_magtkd import IEMOCAP_LABELS, MELD_LABELS
from ..loading import load_config

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
BASE_TAGS = ["magtkd", "emotion-recognition-in-conversation", "erc", "multimodal", "custom_code"]
TASK_NAME = "Emotion Recognition in Conversation"
_GENERIC_FOLDER_NAMES = {"model", "models", "output", "outputs", "final", "best", "checkpoint", "run", "."}

# Per model type: the Hub pipeline tag, what the model is, and (no processor) how to call it. The Hub has no task for
# conversations; "text-classification" is the closest: the fusion is anchored on the text, one label per transcript.
_MODEL_KINDS = {
    "magtkd": ("text-classification", "RoBERTa text encoder with prompt learning, data2vec-audio and TimeSformer "
               "encoders, and the anchor-gated fusion.", ""),
    "magtkd_fusion": ("text-classification", "the anchor-gated fusion stage alone, on per-utterance features.",
                      "# a fusion-only model: per-utterance text, audio and video features (B, N, H), speaker ids "
                      "and a mask\nlogits = model(text_features, audio_features, video_features, speaker_ids, "
                      "attention_mask).logits"),
    "magtkd_text": ("text-classification", "the text stage alone: a RoBERTa-family encoder on each utterance's prompt "
                    "(the utterance in its context), projected to the fusion width, and a classifier.",
                    "# the text stage alone: (utterances, length) prompt tokens, left padded, as MagtkdProcessor "
                    "builds them\nlogits = model(input_ids, attention_mask).logits  # (utterances, emotions)"),
    "magtkd_audio": ("audio-classification", "the audio stage alone: a data2vec-audio encoder (its first-frame "
                     "feature) and a classifier.", "# the audio stage alone: (utterances, samples) 16 kHz waveforms "
                     "and their mask\nlogits = model(input_values, attention_mask).logits  # (utterances, emotions)"),
    "magtkd_video": ("video-classification", "the video stage alone: a TimeSformer encoder (its CLS feature) and a "
                     "classifier.", "# the video stage alone: (utterances, frames, 3, height, width) frames\n"
                     "logits = model(pixel_values).logits  # (utterances, emotions)"),
}


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


def eval_results(metrics: Mapping | None, datasets: Sequence[str], task_type: str) -> list[EvalResult] | None:
    """The card's `model-index`: weighted F1 and accuracy (percent) per evaluated split, with exactly one dataset."""
    if len(datasets) != 1:
        return None
    return [
        EvalResult(task_type=task_type, task_name=TASK_NAME, dataset_type=_RESULT_DATASET_TYPES[datasets[0]],
                   dataset_name=_DATASET_NAMES[datasets[0]], dataset_split=split, metric_type=metric_type,
                   metric_name=metric_name, metric_value=metrics[split][key], metric_args=args)
        for split in _evaluated_splits(metrics)
        for key, metric_type, metric_name, args in (("weighted_f1", "f1", "Weighted F1 (%)", {"average": "weighted"}),
                                                    ("accuracy", "accuracy", "Accuracy (%)", None))
        if isinstance(metrics[split].get(key), (int, float))
    ] or None


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


def build_model_card(model_dir: str | Path, repo_id: str | None = None, metrics: Mapping | None = None,
                     recipe: Mapping | None = None, datasets: Sequence[str] = (), model_name: str | None = None,
                     repository_url: str | None = None) -> ModelCard:
    """The model card of a saved model folder. `metrics` defaults to the folder's `metrics.json`; `datasets`: "meld",
    "iemocap", "sample"; `model_name`: see [`card_model_name`]; `repository_url`: magtkd-hf's git URL."""
    model_dir = Path(model_dir)
    config = load_config(model_dir)  # the package's config classes: no code from the folder runs
    if metrics is None and (model_dir / METRICS_FILE).exists():
        metrics = json.loads((model_dir / METRICS_FILE).read_text())
    unknown = [name for name in datasets if name not in DATASET_NOTES]
    if unknown:
        raise ValueError(f"Unknown datasets {unknown}; known: {sorted(DATASET_NOTES)}.")
    metrics_table, per_class_table = _metrics_tables(metrics, config.label_names)
    pipeline_tag, architecture_note, call_example = _MODEL_KINDS[config.model_type]
    name = card_model_name(model_dir, repo_id, model_name, config.model_type, datasets)
    card_data = ModelCardData(
        language="en", license="gpl-3.0", library_name="transformers", pipeline_tag=pipeline_tag,
        tags=[*BASE_TAGS, *(_DATASET_TAGS[key] for key in datasets if key in _DATASET_TAGS)],
        datasets=[_HUB_DATASET_IDS[key] for key in datasets if key in _HUB_DATASET_IDS] or None, model_name=name,
        base_model=base_models(config) or None, metrics=["f1", "accuracy"] if metrics_table else None,
        eval_results=eval_results(metrics, datasets, pipeline_tag),
    )
    fusion = config.fusion_model_config if config.model_type == "magtkd" else config
    if not getattr(fusion, "modality_dropout", 1):
        architecture_note += "\n\nThis model was not trained for missing modalities (its `modality_dropout` is 0)."
    return ModelCard.from_template(
        card_data, template_path=str(MODEL_CARD_TEMPLATE), model_name=name, repo_id=repo_id or str(model_dir),
        num_labels=config.num_labels, label_list=", ".join(config.label_names), architecture_note=architecture_note,
        has_processor=(model_dir / "processor_config.json").exists(), call_example=call_example,
        install_command=install_command(repository_url), from_repository_url=bool(repository_url),
        metrics_table=metrics_table, per_class_table=per_class_table,
        confusion_matrix=CONFUSION_MATRIX_FILE if (model_dir / CONFUSION_MATRIX_FILE).exists() else "",
        recipe_table=markdown_table(["setting", "value"], sorted(recipe.items())) if recipe else "",
        dataset_notes="\n".join(DATASET_NOTES[key] for key in datasets) or "The training data was not recorded.",
        max_position_embeddings=getattr(fusion, "max_position_embeddings", ""),
    )


def save_model_card(model_dir: str | Path, **kwargs) -> Path:
    """Writes the folder's `README.md` model card (see [`build_model_card`])."""
    path = Path(model_dir) / "README.md"
    build_model_card(model_dir, **kwargs).save(path)
    return path


def push_to_hub(model_dir: str | Path, repo_id: str, private: bool = False, token: str | None = None,
                **card_kwargs) -> str:
    """Uploads a saved folder with a fresh model card (`card_kwargs`: see [`build_model_card`]) to `repo_id`."""
    save_model_card(model_dir, repo_id=repo_id, **card_kwargs)
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    return str(api.upload_folder(repo_id=repo_id, folder_path=str(model_dir), commit_message="Upload MAGTKD model"))
