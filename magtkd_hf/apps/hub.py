"""Model cards (from the MODEL_CARD.md template, with huggingface_hub's `ModelCard`) and pushing a saved folder."""

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from huggingface_hub import HfApi, ModelCard, ModelCardData

MODEL_CARD_TEMPLATE = Path(__file__).resolve().parent / "model_card_template.md"
METRICS_FILE = "metrics.json"
CONFUSION_MATRIX_FILE = "confusion_matrix.png"

DATASET_NOTES = {
    "meld": "* **MELD** (Poria et al., 2019; dialogues from the TV series *Friends*): GPL-3.0. Labels: anger, disgust, "
    "fear, joy, neutral, sadness, surprise.",
    "iemocap": "* **IEMOCAP** (Busso et al., 2008; USC SAIL): distributed by USC SAIL under its own licence terms, "
    "for research use after signing its release form; the data may not be redistributed. Labels (6-class "
    "setting): ang, exc, fru, hap, neu, sad.",
    "sample": "* **magtkd-hf sample conversations**: a few short conversations written for the package, with "
    "generated clips; shipped for the demo only, not a benchmark.",
}
_HUB_DATASET_IDS = {"meld": "declare-lab/MELD"}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _percent(value) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else ""


def _metrics_tables(metrics: Mapping | None, label_names: Sequence[str]) -> tuple[str, str]:
    splits = [split for split in ("validation", "test") if metrics and split in metrics]
    if not splits:
        return "", ""
    overall = markdown_table(
        ["split", "weighted F1 (%)", "accuracy (%)", "utterances"],
        [[split, _percent(metrics[split]["weighted_f1"]), _percent(metrics[split]["accuracy"]),
          metrics[split].get("num_utterances", "")] for split in splits],
    )
    with_classes = [split for split in splits if "per_class_f1" in metrics[split]]
    per_class = ""
    if with_classes:
        per_class = markdown_table(
            ["class", *with_classes],
            [[name, *(_percent(metrics[split]["per_class_f1"].get(name)) for split in with_classes)]
             for name in label_names],
        )
    return overall, per_class


def build_model_card(
    model_dir: str | Path,
    repo_id: str | None = None,
    metrics: Mapping | None = None,
    recipe: Mapping | None = None,
    datasets: Sequence[str] = (),
) -> ModelCard:
    """
    The model card of a saved model folder. `metrics` ({"validation": {...}, "test": {...}} with `weighted_f1`,
    `accuracy`, `per_class_f1`) defaults to the folder's `metrics.json`; a `confusion_matrix.png` in the folder is
    shown; `recipe` (training settings) and `datasets` ("meld", "iemocap", "sample") are listed.
    """
    from ..loading import load_config

    model_dir = Path(model_dir)
    config = load_config(model_dir)
    if metrics is None and (model_dir / METRICS_FILE).exists():
        metrics = json.loads((model_dir / METRICS_FILE).read_text())
    label_names = [config.id2label[index] for index in range(config.num_labels)]
    metrics_table, per_class_table = _metrics_tables(metrics, label_names)
    unknown = [name for name in datasets if name not in DATASET_NOTES]
    if unknown:
        raise ValueError(f"Unknown datasets {unknown}; known: {sorted(DATASET_NOTES)}.")
    end_to_end = config.model_type == "magtkd"
    card_data = ModelCardData(
        language="en",
        license="gpl-3.0",
        library_name="transformers",
        tags=["magtkd", "emotion-recognition-in-conversation", "multimodal", "custom_code"],
        datasets=[_HUB_DATASET_IDS[name] for name in datasets if name in _HUB_DATASET_IDS] or None,
        metrics=["f1", "accuracy"],
        model_name=repo_id or model_dir.name,
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(MODEL_CARD_TEMPLATE),
        model_name=repo_id or model_dir.name,
        repo_id=repo_id or str(model_dir),
        num_labels=config.num_labels,
        label_list=", ".join(label_names),
        architecture_note=(
            "RoBERTa text encoder with prompt learning, data2vec-audio and TimeSformer encoders, and the anchor-gated "
            "fusion." if end_to_end else "the anchor-gated fusion stage alone, on per-utterance features."
        ),
        has_processor=(model_dir / "processor_config.json").exists(),
        metrics_table=metrics_table,
        per_class_table=per_class_table,
        confusion_matrix=CONFUSION_MATRIX_FILE if (model_dir / CONFUSION_MATRIX_FILE).exists() else "",
        recipe_table=markdown_table(["setting", "value"], sorted(recipe.items())) if recipe else "",
        dataset_notes="\n".join(DATASET_NOTES[name] for name in datasets) or "The training data was not recorded.",
        max_position_embeddings=getattr(config.fusion_model_config if end_to_end else config, "max_position_embeddings", ""),
    )


def save_model_card(model_dir: str | Path, **kwargs) -> Path:
    """Writes the folder's `README.md` model card (see [`build_model_card`])."""
    path = Path(model_dir) / "README.md"
    build_model_card(model_dir, **kwargs).save(path)
    return path


def push_to_hub(
    model_dir: str | Path, repo_id: str, private: bool = False, token: str | None = None, **card_kwargs
) -> str:
    """
    Uploads a saved folder (model, processor, metrics, confusion matrix) with a freshly written model card to the Hub
    repository `repo_id`, creating it if needed. Returns the commit URL.
    """
    save_model_card(model_dir, repo_id=repo_id, **card_kwargs)
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    commit = api.upload_folder(repo_id=repo_id, folder_path=str(model_dir), commit_message="Upload MAGTKD model")
    return str(commit)
