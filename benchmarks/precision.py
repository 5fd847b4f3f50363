"""bfloat16 against float32 inference, side by side in one run: each encoder's features (relative error), the
end-to-end model's predictions (argmax agreement) and the time of each, at the real encoder sizes (random weights,
`MagtkdConfig()`: RoBERTa-large, data2vec-audio-base, TimeSformer-base) on MELD-like 720p clips, and optionally on a
saved model folder with a conversation file (e.g. the demo's).

    python benchmarks/precision.py --lengths 3 3
    python benchmarks/precision.py --model-dir magtkd-demo/run/model \
        --conversation datasets_scripts/sample_meld/conversations/test_conversation.json
"""

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch

from magtkd_hf import MagtkdConfig, MagtkdDataCollator, MagtkdForEmotionRecognition, MagtkdProcessor
from magtkd_hf.apps.tiny import SMALL_TALK, train_tiny_roberta_tokenizer
from magtkd_hf.datasets_scripts.synthetic import MELD_LIKE_CLIP, write_mp4
from magtkd_hf.precision import cpu_has_native_bf16

FEATURES = ("text_features", "audio_features", "video_features")


def real_size_inputs(folder: Path, lengths: list[int], seconds: float):
    processor = MagtkdProcessor(train_tiny_roberta_tokenizer(SMALL_TALK * 4, vocab_size=300),
                                MagtkdProcessor.default_feature_extractor(), MagtkdProcessor.default_image_processor())
    words = " ".join(SMALL_TALK).split()
    rows = []
    for dialogue, length in enumerate(lengths):
        paths = [write_mp4(folder / f"dia{dialogue}_utt{u}.mp4", seconds, **MELD_LIKE_CLIP) for u in range(length)]
        rows.append({"dialogue_id": str(dialogue), "speakers": [["Ross", "Rachel"][u % 2] for u in range(length)],
                     "texts": [" ".join(words[(3 * u + k) % len(words)] for k in range(12)) for u in range(length)],
                     "video_paths": [str(path) for path in paths]})
    torch.manual_seed(0)
    config = MagtkdConfig()
    config.text_config.encoder_config.vocab_size = len(processor.tokenizer)
    return MagtkdForEmotionRecognition(config).eval(), MagtkdDataCollator(processor)(rows)


def saved_inputs(model_dir: str, conversation: str):
    from magtkd_hf.inference import load_emotion_model, read_conversation_file

    model, processor = load_emotion_model(model_dir)
    return model.float(), processor(read_conversation_file(conversation), return_tensors="pt")


@torch.inference_mode()
def timed_forward(model, batch) -> tuple[object, float]:
    model(**batch)  # warm-up
    started = time.perf_counter()
    output = model(**batch)
    return output, time.perf_counter() - started


def compare(model, batch) -> None:
    reference, float_seconds = timed_forward(model, batch)
    reduced, bf16_seconds = timed_forward(copy.deepcopy(model).to(torch.bfloat16), batch)
    real = batch["utterance_mask"].bool()
    print(f"{'output':<16}{'relative error (L2)':>22}{'max abs diff':>14}")
    for name in FEATURES:
        a, b = getattr(reference, name).float(), getattr(reduced, name).float()
        print(f"{name:<16}{float((a - b).norm() / a.norm()):>22.4f}{float((a - b).abs().max()):>14.4f}")
    a, b = reference.logits[real].float(), reduced.logits[real].float()
    agree = (a.argmax(-1) == b.argmax(-1)).float().mean()
    print(f"{'logits':<16}{float((a - b).norm() / a.norm()):>22.4f}{float((a - b).abs().max()):>14.4f}")
    print(f"argmax agreement: {agree * 100:.1f} % of {int(real.sum())} utterances")
    print(f"time: float32 {float_seconds:.2f} s, bfloat16 {bf16_seconds:.2f} s ({float_seconds / bf16_seconds:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[3, 3], help="utterances per conversation")
    parser.add_argument("--seconds", type=float, default=3.2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model-dir", help="a saved end-to-end folder instead of the real-size random model")
    parser.add_argument("--conversation", help="with --model-dir: a conversation JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU native bf16 (AVX512-BF16/AMX): {cpu_has_native_bf16()}; {args.threads} threads")
    if args.model_dir:
        compare(*saved_inputs(args.model_dir, args.conversation))
        return
    with tempfile.TemporaryDirectory(prefix="magtkd-precision-") as folder:
        model, batch = real_size_inputs(Path(folder), args.lengths, args.seconds)
        print(f"real sizes, random weights: {sum(p.numel() for p in model.parameters()) / 1e6:.0f} M parameters, "
              f"{int(batch['utterance_mask'].sum())} utterances")
        compare(model, batch)


if __name__ == "__main__":
    main()
