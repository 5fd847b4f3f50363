"""`magtkd-hf demo`: the whole recipe in miniature on the shipped sample conversations, then a prediction.

Tiny random-weight encoders (real architectures) and a tokenizer trained on the sample transcripts are built
offline; `train all` runs every stage (text, audio, video, both distillations, feature extraction, fusion); the final
model is reloaded with `AutoModel`/`AutoProcessor` and predicts the test conversation.
"""

from pathlib import Path

import torch

from ..datasets_scripts.sample import SAMPLE_CONVERSATIONS, SAMPLE_MELD_ROOT
from ..inference import format_predictions, load_emotion_model, predict_emotions
from .tiny import write_tiny_components
from ..training import ModelSettings, TrainingConfig, run_all
from ..training.reporting import load_metrics

DEMO_SEED = 2024
# Small models learn from few utterances only with larger steps than the paper's; every stage runs a few epochs,
# the fusion (a few thousand parameters per conversation) many more.
DEMO_OVERRIDES = {
    "*": {"epochs": 4, "learning_rate": 5e-4, "batch_size": 4, "eval_batch_size": 8, "num_workers": 0,
          "mixed_precision": "no"},
    "fusion": {"epochs": 60, "learning_rate": 3e-3, "batch_size": 2},
}
DEMO_MODEL = ModelSettings(num_attention_heads=4, dropout=0.1)


def sample_texts() -> list[str]:
    return [text for conversations in SAMPLE_CONVERSATIONS.values() for conversation in conversations
            for _, text, _ in conversation]


def sample_test_conversation() -> list[dict]:
    """The sample test conversation as utterance mappings (speaker, text, video)."""
    clip_folder = SAMPLE_MELD_ROOT / "output_repeated_splits_test"
    return [
        {"speaker": speaker, "text": text, "video": str(clip_folder / f"dia0_utt{index}.mp4")}
        for index, (speaker, text, _) in enumerate(SAMPLE_CONVERSATIONS["test"][0])
    ]


def demo_training_config(output_dir: str | Path, components: dict, **run_settings) -> TrainingConfig:
    """`train all` of the miniature recipe on the sample conversations with the tiny components."""
    return TrainingConfig(
        output_dir=str(Path(output_dir) / "run"), data=str(SAMPLE_MELD_ROOT),
        processor=str(components["processor"]),
        **{f"{modality}_encoder": str(components[f"{modality}-encoder"]) for modality in ("text", "audio", "video")},
        model=DEMO_MODEL, overrides=DEMO_OVERRIDES, **run_settings,
    )


def run_demo(output_dir: str | Path, **run_settings) -> dict:
    """Runs the miniature recipe into `output_dir` and predicts; returns the paths, metrics and predictions.
    `run_settings`: more `RunSettings` fields (e.g. `cpu=True`)."""
    output_dir = Path(output_dir)
    torch.manual_seed(DEMO_SEED)  # the tiny encoders' random weights
    components = write_tiny_components(output_dir / "tiny-encoders", sample_texts())
    run_all(demo_training_config(output_dir, components, **run_settings))
    model_dir = output_dir / "run" / "model"
    model, processor = load_emotion_model(model_dir)
    conversation = sample_test_conversation()
    emotions = [emotion for _, _, emotion in SAMPLE_CONVERSATIONS["test"][0]]
    return {
        "model_dir": model_dir,
        "fusion_metrics": load_metrics(output_dir / "run" / "fusion"),
        "predictions": predict_emotions(model, processor, conversation),
        "true_emotions": emotions,
    }


def print_demo_report(result: dict) -> None:
    fusion = result["fusion_metrics"]
    print("\nMAGTKD demo: the four-stage recipe in miniature on the sample conversations (tiny random encoders).")
    print("  (7 training conversations and 2-layer encoders: the figures show that every stage runs, not what MAGTKD "
          "reaches on MELD; see docs/recipe.md)")
    for split in ("validation", "test"):
        if split in fusion:
            print(f"  fusion, {split}: weighted F1 {fusion[split]['weighted_f1']:.1f}, "
                  f"accuracy {fusion[split]['accuracy']:.1f}")
    print("\nPredictions for the sample test conversation (reloaded with AutoModel + AutoProcessor):\n")
    print(format_predictions(result["predictions"]))
    print(f"\n(true emotions: {', '.join(result['true_emotions'])})")
    print(f"Model folder: {Path(result['model_dir']).resolve()}")
