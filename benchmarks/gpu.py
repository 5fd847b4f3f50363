"""GPU benchmark: end-to-end inference throughput, one stage-1 video training step and peak memory, beside the ideal.

On a CUDA machine, at the paper's encoder sizes (`MagtkdConfig()`: RoBERTa-large, data2vec-audio-base, TimeSformer-base;
random weights, nothing downloaded) on MELD-like clips (1280x720 H.264 + AAC, `--seconds` long):

1. end-to-end inference: conversations through a `DataLoader` whose `--num-workers` workers decode the media of the
   next batches while the model runs (bf16 by default, `torch.inference_mode`; the first batch is a warm-up, excluded):
   utterances/s, beside the ideal utterances/s = peak FLOP/s / FLOP per utterance. The peak rate (`--peak-tflops`,
   400 by default) is an ASSUMPTION, roughly an H200-class dense bf16 rate achievable in practice (the data sheet says
   ~990 dense); FLOP per utterance is the paper-size figure 5.0e15 FLOP per pass over MELD train / 9989 utterances
   (~5.0e11) at real size, and the count of `torch.utils.flop_counter` on the warm-up batch (matmuls, convolutions,
   attention) is printed beside it (`--flop-source counted` takes that one for the ideal);
2. one stage-1 video training step (`MagtkdVideoModel`, `--video-batch` utterances of 8 frames 224 x 224, random
   pixels, AdamW, bf16 autocast when the dtype is bf16): seconds per step, the first step a warm-up, excluded;
3. peak memory: `torch.cuda.max_memory_allocated` per phase on CUDA, the process's max RSS on CPU.

`--tiny`: tiny encoders, 64 x 64 clips of 1 s, 2 conversations -- seconds on a CPU (the test runs it).

    python benchmarks/gpu.py [--device cuda] [--conversations 32] [--utterances-per-conversation 10] [--seconds 3.2]
                             [--num-workers 8] [--dtype native|bfloat16|float32] [--tiny] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from magtkd_hf import (
    MagtkdAudioConfig, MagtkdConfig, MagtkdDataCollator, MagtkdForEmotionRecognition, MagtkdFusionConfig,
    MagtkdProcessor, MagtkdTextConfig, MagtkdVideoConfig,
)
from magtkd_hf.apps.tiny import (
    SMALL_TALK, TINY_HEADS, TINY_HIDDEN, TINY_IMAGE_SIZE, tiny_audio_config, tiny_text_config, tiny_video_config,
    train_tiny_roberta_tokenizer,
)
from magtkd_hf.datasets_scripts.synthetic import MELD_LIKE_CLIP, write_mp4
from magtkd_hf.modeling_magtkd_stages import MagtkdVideoModel
from magtkd_hf.precision import resolve_dtype

WORDS = " ".join(SMALL_TALK).split()
PAPER_FLOP_PER_UTTERANCE = 5.0e15 / 9989  # FLOP per pass over MELD train / its utterances
TINY_CLIP = dict(size=64, height=64, fps=8, sample_rate=16000)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--conversations", type=int, default=None, help="default 32 (--tiny: 2)")
    parser.add_argument("--utterances-per-conversation", type=int, default=None, help="default 10 (--tiny: 3)")
    parser.add_argument("--conversations-per-batch", type=int, default=None, help="default 4 (--tiny: 1)")
    parser.add_argument("--seconds", type=float, default=None, help="clip length, default 3.2 (MELD median; --tiny: 1)")
    parser.add_argument("--num-workers", type=int, default=None, help="DataLoader decoding workers, default 8 (--tiny: 1)")
    parser.add_argument("--dtype", choices=("native", "bfloat16", "float32"), default="native")
    parser.add_argument("--peak-tflops", type=float, default=400.0, help="assumed peak dense rate for the ideal")
    parser.add_argument("--flop-source", choices=("paper", "counted"), default=None,
                        help="FLOP per utterance for the ideal: the 5.0e15/9989 figure (default at real size) or "
                             "the flop counter on the warm-up batch (default with --tiny)")
    parser.add_argument("--video-batch", type=int, default=8, help="utterances per stage-1 video training step")
    parser.add_argument("--train-steps", type=int, default=None, help="timed training steps, default 3 (--tiny: 1)")
    parser.add_argument("--tiny", action="store_true", help="tiny encoders and clips (CPU test)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    defaults = dict(conversations=(32, 2), utterances_per_conversation=(10, 3), conversations_per_batch=(4, 1),
                    seconds=(3.2, 1.0), num_workers=(8, 1), train_steps=(3, 1),
                    flop_source=("paper", "counted"))
    for name, (real, tiny) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, tiny if args.tiny else real)
    return args


def check_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"error: --device {name} but no CUDA GPU is available here (torch.cuda.is_available() is False)")
    return device


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def write_rows(folder: Path, args) -> list[dict]:
    """`--conversations` dataset rows over `--utterances-per-conversation` distinct clips (decoded anew each time)."""
    clip = TINY_CLIP if args.tiny else MELD_LIKE_CLIP
    start = time.perf_counter()
    paths = [str(write_mp4(folder / f"utt{u}.mp4", args.seconds, tone_hz=220.0 + 40 * u, **clip))
             for u in range(args.utterances_per_conversation)]
    print(f"media: {len(paths)} distinct clips ({clip['size']}x{clip['height']}, {args.seconds} s) written in "
          f"{time.perf_counter() - start:.1f} s")
    rows = []
    for dialogue in range(args.conversations):
        rows.append({
            "dialogue_id": str(dialogue), "utterance_ids": [str(u) for u in range(len(paths))],
            "speakers": [["Ross", "Rachel", "Monica"][u % 3] for u in range(len(paths))],
            "texts": [" ".join(WORDS[(3 * (dialogue + u) + k) % len(WORDS)] for k in range(16))
                      for u in range(len(paths))],
            "video_paths": paths,
        })
    return rows


def make_processor(tiny: bool) -> MagtkdProcessor:
    size = TINY_IMAGE_SIZE if tiny else 224
    return MagtkdProcessor(train_tiny_roberta_tokenizer(SMALL_TALK * 4, vocab_size=300),
                           MagtkdProcessor.default_feature_extractor(), MagtkdProcessor.default_image_processor(size))


def model_config(tiny: bool, vocab_size: int) -> MagtkdConfig:
    if not tiny:
        return MagtkdConfig()
    return MagtkdConfig(
        text_config=MagtkdTextConfig.from_preset("meld", encoder_config=tiny_text_config(vocab_size),
                                                 feature_size=TINY_HIDDEN),
        audio_config=MagtkdAudioConfig.from_preset("meld", encoder_config=tiny_audio_config()),
        video_config=MagtkdVideoConfig.from_preset("meld", encoder_config=tiny_video_config()),
        fusion_model_config=MagtkdFusionConfig.from_preset(
            "meld", hidden_size=TINY_HIDDEN, num_attention_heads=TINY_HEADS, intermediate_size=TINY_HIDDEN),
    )


def to_device(batch, device):
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)


def inference(args, rows, processor, device, dtype) -> dict:
    """Utterances/s through the overlapped pipeline, the warm-up batch excluded; FLOP per utterance counted on it."""
    torch.manual_seed(0)
    model = MagtkdForEmotionRecognition(model_config(args.tiny, len(processor.tokenizer)))
    model = model.to(device=device, dtype=dtype).eval()
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters ({dtype}, {device})")
    loader = torch.utils.data.DataLoader(
        rows, batch_size=args.conversations_per_batch, collate_fn=MagtkdDataCollator(processor),
        num_workers=args.num_workers, prefetch_factor=4 if args.num_workers else None,
        pin_memory=device.type == "cuda",
    )
    reset_peak(device)
    utterances, waits, flop_per_utterance, start = 0, 0.0, None, None
    with torch.inference_mode():
        iterator = iter(loader)
        while True:
            fetch = time.perf_counter()
            batch = next(iterator, None)
            if batch is None:
                break
            count = int(batch["input_ids"].shape[0])
            if start is None:  # warm-up batch: lazy initialisation, workers starting; FLOP counted
                counter = FlopCounterMode(display=False)
                with counter:
                    model(**to_device(batch, device))
                synchronize(device)
                flop_per_utterance = counter.get_total_flops() / count
                start = time.perf_counter()
                continue
            waits += time.perf_counter() - fetch
            model(**to_device(batch, device))
            utterances += count
        synchronize(device)
    seconds = time.perf_counter() - start
    if utterances == 0:
        sys.exit("error: only the warm-up batch ran; give more --conversations than --conversations-per-batch")
    return {"utterances": utterances, "seconds": seconds, "utterances_per_s": utterances / seconds,
            "waiting_for_batches_s": waits, "counted_flop_per_utterance": flop_per_utterance,
            "peak_memory_gib": peak_memory_gib(device)}


def video_training(args, device, dtype) -> dict:
    """Seconds per stage-1 video training step (AdamW, bf16 autocast when `dtype` is bf16), the warm-up excluded."""
    torch.manual_seed(0)
    config = MagtkdVideoConfig.from_preset("meld", encoder_config=tiny_video_config()) if args.tiny else \
        MagtkdVideoConfig()
    model = MagtkdVideoModel(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    size = config.encoder_config.image_size
    pixels = torch.randn(args.video_batch, config.encoder_config.num_frames, 3, size, size, device=device)
    labels = torch.randint(0, config.num_labels, (args.video_batch,), device=device)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
    reset_peak(device)
    times = []
    for _ in range(1 + args.train_steps):
        synchronize(device)
        start = time.perf_counter()
        with autocast:
            loss = model(pixel_values=pixels, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        times.append(time.perf_counter() - start)
    step = sum(times[1:]) / args.train_steps
    return {"video_batch": args.video_batch, "frames": list(pixels.shape[1:]), "step_s": step,
            "utterances_per_s": args.video_batch / step, "loss": loss.item(), "peak_memory_gib": peak_memory_gib(device)}


def report(args, device, dtype, infer: dict, train: dict) -> dict:
    counted = infer["counted_flop_per_utterance"]
    flop = PAPER_FLOP_PER_UTTERANCE if args.flop_source == "paper" else counted
    ideal = args.peak_tflops * 1e12 / flop
    source = ("paper figure 5.0e15 FLOP / 9989 MELD train utterances" if args.flop_source == "paper"
              else "flop counter on the warm-up batch")
    memory = "CUDA max allocated" if device.type == "cuda" else "process max RSS"
    print(f"\n== MAGTKD benchmark ({'tiny' if args.tiny else 'real size'}, {device}, {dtype}) ==")
    print(f"{'figure':<44}{'measured':>14}{'ideal':>14}")
    print(f"{'end-to-end inference (utterances/s)':<44}{infer['utterances_per_s']:>14.2f}{ideal:>14.2f}")
    print(f"{'  fraction of ideal':<44}{infer['utterances_per_s'] / ideal:>14.2%}")
    print(f"{'  waiting for decoded batches (s)':<44}{infer['waiting_for_batches_s']:>14.2f}")
    print(f"{'video training step, batch ' + str(train['video_batch']) + ' (s)':<44}{train['step_s']:>14.3f}")
    print(f"{'peak memory, inference (GiB, ' + memory + ')':<44}{infer['peak_memory_gib']:>14.2f}")
    print(f"{'peak memory, training (GiB, ' + memory + ')':<44}{train['peak_memory_gib']:>14.2f}")
    print(f"ideal = {args.peak_tflops:g} TFLOP/s (an assumed peak rate, --peak-tflops) / {flop:.3g} FLOP per utterance "
          f"({source}); counted on the warm-up batch: {counted:.3g} FLOP per utterance")
    print(f"{infer['utterances']} timed utterances in {infer['seconds']:.2f} s, {args.conversations_per_batch} "
          f"conversation(s) per batch, {args.num_workers} decoding worker(s)")
    return {"device": str(device), "dtype": str(dtype).removeprefix("torch."), "tiny": args.tiny,
            "peak_tflops_assumed": args.peak_tflops, "flop_source": args.flop_source,
            "flop_per_utterance": flop, "ideal_utterances_per_s": ideal, "inference": infer, "video_training": train,
            "peak_memory_gib": max(infer["peak_memory_gib"], train["peak_memory_gib"]), "peak_memory_kind": memory}


def main(argv=None):
    args = parse_args(argv)
    device = check_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    with tempfile.TemporaryDirectory(prefix="magtkd-gpu-bench-") as folder:
        rows = write_rows(Path(folder), args)
        infer = inference(args, rows, make_processor(args.tiny), device, dtype)
    train = video_training(args, device, dtype)
    figures = report(args, device, dtype, infer, train)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
