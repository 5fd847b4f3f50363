"""Fusion-stage cost on a MELD-sized synthetic feature set (CPU by default).

1,038 conversations with the real utterance counts of MELD's train split, H = 768, batch 16 conversations, AdamW as in
the released recipe. Prints seconds per training epoch (forward, backward, optimiser), inference over the set and peak
memory, side by side for the sampling orders and optimiser variants, plus the compute floor from the FLOP count.
Against the released module (and in bf16): `benchmarks/fusion_vs_released.py`.

    python benchmarks/fusion.py [--threads 2] [--epochs 1] [--device cpu]
"""

import argparse
import csv
import resource
import time
from collections import Counter
from pathlib import Path

import torch
from torch.utils.data import DataLoader, RandomSampler
from transformers.trainer_pt_utils import LengthGroupedSampler

from magtkd_hf import MagtkdFusionConfig, MagtkdFusionModel
from magtkd_hf.features import FusionFeatureCollator

MELD_TRAIN_CSV = Path(__file__).resolve().parents[1] / "tests" / "data" / "meld" / "train_sent_emo.csv"


def meld_train_lengths(path: Path) -> list[int]:
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        counts = Counter(row["Dialogue_ID"] for row in csv.DictReader(handle))
    return list(counts.values())


def synthetic_rows(lengths, hidden_size, num_labels, generator):
    rows = []
    for length in lengths:
        features = {name: torch.randn(length, hidden_size, generator=generator).numpy() for name in ("text", "audio_kd", "video_kd")}
        rows.append(
            {
                **features,
                "speaker_ids": torch.randint(0, 3, (length,), generator=generator).tolist(),
                "labels": torch.randint(0, num_labels, (length,), generator=generator).tolist(),
            }
        )
    return rows


def flops_per_utterance(config) -> float:
    """Forward multiply-adds x 2 of the position-wise layers (attention scores are negligible at these lengths)."""
    hidden, inner = config.hidden_size, config.intermediate_size
    block = 4 * hidden * hidden + 2 * hidden * inner
    anchor = 3 * (block + hidden * hidden) + 3 * hidden * hidden
    return 2.0 * 3 * anchor


def measure_matmul_rate(threads_hint: str, device) -> float:
    size = 768
    a, b = torch.randn(2048, size, device=device), torch.randn(size, size, device=device)
    for _ in range(3):
        a @ b
    start, repeats = time.perf_counter(), 50
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * 2048 * size * size * repeats / (time.perf_counter() - start)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_epoch(model, loader, optimizer, device):
    model.train()
    timings = Counter()
    for batch in loader:
        batch = {key: value.to(device) for key, value in batch.items()}
        start = time.perf_counter()
        loss = model(**batch).loss
        synchronize(device)
        forward_done = time.perf_counter()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        synchronize(device)
        backward_done = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        timings["forward"] += forward_done - start
        timings["backward"] += backward_done - forward_done
        timings["optimizer"] += time.perf_counter() - backward_done
    return timings


@torch.inference_mode()
def inference_pass(model, loader, device):
    model.eval()
    start = time.perf_counter()
    for batch in loader:
        batch = {key: value.to(device) for key, value in batch.items() if key != "labels"}
        model(**batch)
    synchronize(device)
    return time.perf_counter() - start


def training_variants(args, config, rows, lengths, collator, device):
    """Epoch seconds (forward, backward, optimiser) per sampling order and AdamW implementation; returns the last
    model trained."""
    variants = [
        ("random order, AdamW(fused)", False, True),
        ("length-grouped, AdamW(fused)", True, True),
        ("length-grouped, AdamW(for-loop)", True, False),
    ]
    print(f"{'training variant':34s} {'epoch s':>8s} {'forward':>8s} {'backward':>8s} {'optim':>8s}")
    for name, grouped, fused in variants:
        torch.manual_seed(0)
        model = MagtkdFusionModel(config).to(device)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=1e-4, weight_decay=1e-6, fused=fused, foreach=None if fused else False
        )
        generator = torch.Generator().manual_seed(0)
        sampler = (
            LengthGroupedSampler(args.batch_size, lengths=lengths, generator=generator)
            if grouped
            else RandomSampler(rows, generator=generator)
        )
        loader = DataLoader(rows, batch_size=args.batch_size, sampler=sampler, collate_fn=collator)
        train_epoch(model, [next(iter(loader))], optimizer, device)  # warm-up step
        for _ in range(args.epochs):
            start = time.perf_counter()
            timings = train_epoch(model, loader, optimizer, device)
            total = time.perf_counter() - start
            print(f"{name:34s} {total:8.1f} {timings['forward']:8.1f} {timings['backward']:8.1f} "
                  f"{timings['optimizer']:8.1f}")
    return model


def inference_variants(args, model, rows, lengths, collator, device, floor_s):
    """Inference seconds over the set in length-sorted batches of the training and the inference batch sizes."""
    order = sorted(range(len(rows)), key=lambda index: lengths[index])
    for batch_size in (args.batch_size, args.inference_batch_size):
        loader = DataLoader([rows[i] for i in order], batch_size=batch_size, collate_fn=collator)
        inference_pass(model, [next(iter(loader))], device)
        seconds = inference_pass(model, loader, device)
        print(f"inference over the set, length-sorted batches of {batch_size}: {seconds:.1f} s (floor {floor_s:.1f} s)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--inference-batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--csv", type=Path, default=MELD_TRAIN_CSV)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    lengths = meld_train_lengths(args.csv)
    config = MagtkdFusionConfig.for_meld()
    rows = synthetic_rows(lengths, config.hidden_size, config.num_labels, torch.Generator().manual_seed(0))
    collator = FusionFeatureCollator()
    utterances = sum(lengths)
    rate = measure_matmul_rate(str(args.threads), device)
    floor = 3 * flops_per_utterance(config) * utterances / rate
    print(f"{len(lengths)} conversations, {utterances} utterances, longest {max(lengths)}; device {device}, "
          f"{torch.get_num_threads()} threads; 768-wide matmul rate {rate / 1e9:.0f} GFLOP/s; "
          f"forward {flops_per_utterance(config) / 1e6:.0f} MFLOP/utterance; "
          f"training compute floor {floor:.1f} s/epoch")

    model = training_variants(args, config, rows, lengths, collator, device)
    inference_variants(args, model, rows, lengths, collator, device, flops_per_utterance(config) * utterances / rate)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory {peak:.0f} MiB" + (
        f"; peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if device.type == "cuda" else ""))


if __name__ == "__main__":
    main()
