"""`magtkd-hf demo`: `train all` with tiny random-weight encoders on the sample conversations, then a prediction."""

from pathlib import Path

import torch

from ..configuration_magtkd import MODALITIES
from ..datasets_scripts.sample import SAMPLE_CONVERSATIONS, SAMPLE_MELD_ROOT
from ..inference import format_predictions, load_emotion_model, predict_emotions
from ..loading import quiet_loading
from ..training import ModelSettings, TrainingConfig, run_all
from ..training.reporting import load_metrics
from .tiny import write_tiny_components

DEMO_SEED = 2024
# Small models learn from few utterances only with larger steps than the paper's.
DEMO_OVERRIDES = {
    "*": {"epochs": 4, "learning_rate": 5e-4, "batch_size": 4, "eval_batch_size": 8, "num_workers": 0,
          "mixed_precision": "no"},
    "fusion": {"epochs": 20, "learning_rate": 3e-3, "batch_size": 2},
}
# The transcripts teach the tiny text encoder nothing: the anchor residual lets the fusion see audio and video.
DEMO_MODEL = ModelSettings(num_attention_heads=4, dropout=0.1, anchor_residual=True)
STAGE_HEADS = {"text": "text", "audio": "audio", "video": "video", "distill-audio": "audio, distilled",
               "distill-video": "video, distilled", "fusion": "fused (MAGTKD)"}


def run_demo(output_dir: str | Path) -> dict:
    """Runs the miniature recipe into `output_dir`: the model folder, stage metrics, predictions, true emotions."""
    run_dir = Path(output_dir) / "run"
    texts = [text for conversations in SAMPLE_CONVERSATIONS.values() for dialogue in conversations
             for _, text, _ in dialogue]
    test_dialogue = SAMPLE_CONVERSATIONS["test"][0]
    torch.manual_seed(DEMO_SEED)  # the tiny encoders' random weights
    with quiet_loading(datasets_bars=True):
        components = write_tiny_components(Path(output_dir) / "tiny-encoders", texts)
        run_all(TrainingConfig(
            output_dir=str(run_dir), data=str(SAMPLE_MELD_ROOT), processor=str(components["processor"]),
            **{f"{modality}_encoder": str(components[f"{modality}-encoder"]) for modality in MODALITIES},
            model=DEMO_MODEL, overrides=DEMO_OVERRIDES,
        ))
        model, processor = load_emotion_model(run_dir / "model")
    clips = SAMPLE_MELD_ROOT / "output_repeated_splits_test"
    conversation = [{"speaker": speaker, "text": text, "video": str(clips / f"dia0_utt{index}.mp4")}
                    for index, (speaker, text, _) in enumerate(test_dialogue)]
    return {
        "model_dir": run_dir / "model",
        "stage_metrics": {stage: load_metrics(run_dir / stage) for stage in STAGE_HEADS},
        "predictions": predict_emotions(model, processor, conversation),
        "true_emotions": [emotion for _, _, emotion in test_dialogue],
    }


def print_demo_report(result: dict) -> None:
    metrics = result["stage_metrics"]
    print("\nMAGTKD demo: the four-stage recipe in miniature on the sample conversations (tiny random-weight encoders;")
    print("7 training conversations: the figures show the recipe learning what the sample media carry, not what MAGTKD")
    print("reaches on MELD, see docs/recipe.md). The clips' colour and tone follow the emotion; the transcripts do not")
    print("teach 2-layer encoders anything from 31 utterances.\n")
    print(plain_table(
        ["head", "dev weighted F1", "test weighted F1"],
        [[STAGE_HEADS[stage], f"{metrics[stage]['validation']['weighted_f1']:.1f}",
          f"{metrics[stage]['test']['weighted_f1']:.1f}"] for stage in STAGE_HEADS],
    ))
    print("\nThe sample test conversation, predicted by the saved end-to-end model (reloaded with AutoModel + "
          "AutoProcessor):\n")
    print(format_predictions(result["predictions"], true_emotions=result["true_emotions"]))
    print("\n" + demo_conclusion(metrics, result["predictions"], result["true_emotions"]))
    print(f"Model folder: {Path(result['model_dir']).resolve()}")


def demo_conclusion(metrics: dict, predictions: list[dict], true_emotions: list[str]) -> str:
    """The fused head against the best single (unimodal or distilled) head, dev and test, and the right emotions."""
    fused = {split: metrics["fusion"][split]["weighted_f1"] for split in ("validation", "test")}
    unimodal = [stage for stage in metrics if stage != "fusion"]
    best = {split: max(unimodal, key=lambda stage: metrics[stage][split]["weighted_f1"]) for split in fused}
    best_f1 = {split: metrics[stage][split]["weighted_f1"] for split, stage in best.items()}
    correct = sum(row["label"] == emotion for row, emotion in zip(predictions, true_emotions))
    chance = 100.0 / len(metrics["fusion"]["validation"]["per_class_f1"])
    verdict = "at least as good as" if all(fused[split] >= best_f1[split] for split in fused) else "below"
    return (f"Fused weighted F1 {fused['validation']:.1f} (dev) / {fused['test']:.1f} (test) is {verdict} the best "
            f"single head ({STAGE_HEADS[best['validation']]} {best_f1['validation']:.1f} / "
            f"{STAGE_HEADS[best['test']]} {best_f1['test']:.1f}; chance about {chance:.0f}); "
            f"{correct} of {len(true_emotions)} test emotions right.")


def plain_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip()
                     for line in [header, *rows])
