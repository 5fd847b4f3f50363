"""End-to-end MAGTKD inference at the paper's encoder sizes (a script, not a test).

Builds `MagtkdForEmotionRecognition(MagtkdConfig())` -- roberta-large, data2vec-audio-base and
timesformer-base architectures, random weights, nothing downloaded -- and a processor (a tiny
offline BPE tokenizer whose prompts are sized like MELD's; data2vec audio and TimeSformer
224 x 224 video settings). Generates MELD-like clips (1280x720 H.264 + AAC, `--seconds` long) in
a temporary folder for `--lengths` conversations, then measures, on the same processor batch:

1. bare encoders: `RobertaModel` + `Data2VecAudioModel` + `TimesformerModel` forward passes (the
   model's own encoder modules), i.e. what the encoders cost alone;
2. the end-to-end model `model(**batch)`, timed per part with hooks (text, audio, video models
   and fusion; the rest is regrouping and bookkeeping): overhead = end-to-end - bare encoders;
3. the whole pipeline (media decoding + model), one conversation per batch: sequentially
   (decode, then run, ...) vs a `DataLoader(num_workers=N)` whose workers decode the next
   batch while the model runs, and the `predict --output` command's path (`predict_dataset`).

Reports times, utterances per second and peak memory (process RSS on CPU, allocated memory on
CUDA). Usage:

    python benchmarks/inference.py [--lengths 4 5] [--repeats 2] [--seconds 3.2] [--threads 2]
                                   [--device cpu|cuda] [--dtype float32|bfloat16] [--num-workers 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from magtkd_hf import MagtkdConfig, MagtkdDataCollator, MagtkdForEmotionRecognition, MagtkdProcessor
from magtkd_hf.apps.tiny import SMALL_TALK, train_tiny_roberta_tokenizer
from magtkd_hf.datasets_scripts.synthetic import MELD_LIKE_CLIP, write_mp4

WORDS = " ".join(SMALL_TALK).split()


def make_rows(folder: Path, lengths, seconds: float, words_per_utterance: int):
    rows, clip = [], 0
    for dialogue, length in enumerate(lengths):
        paths, texts = [], []
        for utterance in range(length):
            path = folder / f"dia{dialogue}_utt{utterance}.mp4"
            write_mp4(path, seconds, **MELD_LIKE_CLIP)
            paths.append(str(path))
            start = 3 * clip
            texts.append(" ".join(WORDS[(start + k) % len(WORDS)] for k in range(words_per_utterance)))
            clip += 1
        rows.append({
            "dialogue_id": str(dialogue), "utterance_ids": [str(u) for u in range(length)],
            "speakers": [["Ross", "Rachel", "Monica"][u % 3] for u in range(length)], "texts": texts,
            "labels": [u % 7 for u in range(length)], "video_paths": paths,
        })
    return rows


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


class PartTimer:
    """Wall time of submodules' forward passes, via hooks (synchronising on CUDA)."""

    def __init__(self, modules: dict, device):
        self.device, self.times, self.handles, self.starts = device, {name: 0.0 for name in modules}, [], {}
        for name, module in modules.items():
            self.handles.append(module.register_forward_pre_hook(self._pre(name)))
            self.handles.append(module.register_forward_hook(self._post(name)))

    def _pre(self, name):
        def hook(module, inputs):
            synchronize(self.device)
            self.starts[name] = time.perf_counter()
        return hook

    def _post(self, name):
        def hook(module, inputs, output):
            synchronize(self.device)
            self.times[name] += time.perf_counter() - self.starts[name]
        return hook

    def remove(self):
        for handle in self.handles:
            handle.remove()


@contextmanager
def timed(results: dict, name: str, device):
    synchronize(device)
    start = time.perf_counter()
    yield
    synchronize(device)
    results[name] = results.get(name, 0.0) + time.perf_counter() - start


def to_device(batch, device):
    return {key: value.to(device) for key, value in batch.items()}


def bare_encoders(model, batch, dtype, device):
    times = {}
    with torch.inference_mode():
        with timed(times, "text", device):
            model.text_encoder.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        with timed(times, "audio", device):
            model.audio_encoder.encoder(batch["input_values"].to(dtype), attention_mask=batch["audio_attention_mask"])
        with timed(times, "video", device):
            model.video_encoder.encoder(batch["pixel_values"].to(dtype))
    return times


def end_to_end(model, batch, device):
    parts = PartTimer(
        {"text": model.text_encoder, "audio": model.audio_encoder, "video": model.video_encoder, "fusion": model.fusion},
        device,
    )
    times = {}
    try:
        with torch.inference_mode(), timed(times, "total", device):
            model(**batch)
    finally:
        parts.remove()
    times.update(parts.times)
    return times


def pipeline(model, dataset, collator, device, num_workers):
    """One conversation per batch; media decoding in the collator (in workers when num_workers > 0)."""
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=1, collate_fn=collator, num_workers=num_workers,
        prefetch_factor=2 if num_workers else None, persistent_workers=False,
    )
    waits, start = 0.0, time.perf_counter()
    iterator = iter(loader)
    with torch.inference_mode():
        while True:
            fetch = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                break
            waits += time.perf_counter() - fetch
            model(**to_device(batch, device))
            synchronize(device)
    return time.perf_counter() - start, waits


def peak_memory(device) -> str:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    text = f"peak process RSS {rss:.2f} GiB"
    if device.type == "cuda":
        text += f", peak CUDA allocated {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
    return text


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[4, 5], help="utterances per conversation")
    parser.add_argument("--repeats", type=int, default=2, help="alternating bare / end-to-end runs (fastest kept)")
    parser.add_argument("--seconds", type=float, default=3.2, help="clip length (MELD median ~3.2 s)")
    parser.add_argument("--words", type=int, default=16, help="words per utterance (sets the prompt lengths)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--num-workers", type=int, default=1, help="DataLoader workers for the pipeline run")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    return parser.parse_args()


def write_media(folder: Path, args):
    """The conversations' dataset rows, their clips written in `folder`."""
    start = time.perf_counter()
    rows = make_rows(folder, args.lengths, args.seconds, args.words)
    print(f"media: {sum(args.lengths)} clips of {args.seconds} s written in {time.perf_counter() - start:.1f} s")
    return rows


def make_processor() -> MagtkdProcessor:
    return MagtkdProcessor(
        train_tiny_roberta_tokenizer(SMALL_TALK * 4, vocab_size=300),
        MagtkdProcessor.default_feature_extractor(),
        MagtkdProcessor.default_image_processor(),
    )


def build_model(device, dtype, dtype_name: str):
    start = time.perf_counter()
    torch.manual_seed(0)
    model = MagtkdForEmotionRecognition(MagtkdConfig()).to(device=device, dtype=dtype).eval()
    parameters = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"model: {parameters:.0f} M parameters ({dtype_name}, {device}) built in {time.perf_counter() - start:.1f} s")
    return model


def build_batch(rows, collator):
    """The processor batch of all conversations, its processing time (s) and its number of utterances."""
    start = time.perf_counter()
    batch = collator(rows)
    decode_all = time.perf_counter() - start
    prompt_lengths = batch["attention_mask"].sum(1).tolist()
    utterances = len(prompt_lengths)
    print(
        f"batch: {len(rows)} conversations, {utterances} utterances; prompts median "
        f"{statistics.median(prompt_lengths):.0f} tokens (padded to {batch['input_ids'].shape[1]}), audio padded "
        f"to {batch['input_values'].shape[1] / 16000:.2f} s, video {tuple(batch['pixel_values'].shape[1:])}; "
        f"processor (media decoding + prompts) {decode_all * 1000:.0f} ms"
    )
    return batch, decode_all, utterances


def time_encoders(model, rows, collator, batch, dtype, device, repeats: int):
    """Fastest bare-encoder and end-to-end times on `batch` (already on `device`)."""
    # Warm-up on a one-utterance conversation (lazy initialisation, allocator), then bare and end-to-end runs
    # alternate; the fastest of `--repeats` runs of each is kept (the machine may be shared).
    first = {key: (value[:1] if isinstance(value, list) else value) for key, value in rows[0].items()}
    warm = to_device(collator([first]), device)
    bare_encoders(model, warm, dtype, device)
    end_to_end(model, warm, device)
    bare_runs, e2e_runs = [], []
    for _ in range(repeats):
        bare_runs.append(bare_encoders(model, batch, dtype, device))
        e2e_runs.append(end_to_end(model, batch, device))
    bare = min(bare_runs, key=lambda times: sum(times.values()))
    e2e = min(e2e_runs, key=lambda times: times["total"])
    return bare, e2e


def overhead_s(bare: dict, e2e: dict) -> float:
    """End-to-end time over the bare encoders' (s)."""
    return e2e["total"] - sum(bare.values())


def print_comparison(bare: dict, e2e: dict, utterances: int):
    bare_total = sum(bare.values())
    overhead = overhead_s(bare, e2e)
    print("\n== same batch: bare encoders vs end-to-end model ==")
    print(f"{'part':<8}{'bare (ms)':>12}{'end-to-end (ms)':>18}")
    for part in ("text", "audio", "video"):
        print(f"{part:<8}{bare[part] * 1000:>12.0f}{e2e[part] * 1000:>18.0f}")
    rest = e2e["total"] - e2e["text"] - e2e["audio"] - e2e["video"] - e2e["fusion"]
    print(f"{'fusion':<8}{'':>12}{e2e['fusion'] * 1000:>18.1f}")
    print(f"{'other':<8}{'':>12}{rest * 1000:>18.1f}   (regrouping, checks)")
    print(f"{'total':<8}{bare_total * 1000:>12.0f}{e2e['total'] * 1000:>18.0f}")
    print(f"end-to-end overhead over the bare encoders: {overhead * 1000:+.0f} ms ({overhead / bare_total:+.1%})")
    print(f"model throughput: {utterances / e2e['total']:.2f} utterances/s; per utterance: text "
          f"{e2e['text'] / utterances * 1000:.0f} ms, audio {e2e['audio'] / utterances * 1000:.0f} ms, video "
          f"{e2e['video'] / utterances * 1000:.0f} ms")


def compare_pipelines(model, rows, collator, device, num_workers: int, utterances: int) -> dict:
    """Sequential vs DataLoader-worker pipeline, printed; their times (s) keyed as in the JSON report."""
    dataset = rows  # a list of dataset rows works as a map-style dataset
    print(f"\n== pipeline: media decoding + model, one conversation per batch ({len(rows)} batches) ==")
    sequential, sequential_wait = pipeline(model, dataset, collator, device, num_workers=0)
    overlapped, overlapped_wait = pipeline(model, dataset, collator, device, num_workers=num_workers)
    print(f"sequential (decode in the main process): {sequential:.2f} s, of which decoding {sequential_wait:.2f} s"
          f"; {utterances / sequential:.2f} utterances/s")
    print(f"DataLoader num_workers={num_workers}: {overlapped:.2f} s, waiting for batches {overlapped_wait:.2f} s"
          f"; {utterances / overlapped:.2f} utterances/s")
    return {"sequential": sequential, "sequential_wait": sequential_wait,
            "workers": overlapped, "workers_wait": overlapped_wait}


def time_predict_command(model, processor, rows, folder: Path, num_workers: int, utterances: int) -> float:
    """`magtkd-hf predict MODEL DATA --output FILE.jsonl`'s path (`predict_dataset`: batched by size, decoding in
    `num_workers` DataLoader workers, rows synced to disk per batch) on the same conversations; its time (s)."""
    from magtkd_hf.predict_dataset import ConversationToPredict, predict_dataset

    conversations = [
        ConversationToPredict("data", index, row["dialogue_id"], {k: v for k, v in row.items() if k != "labels"})
        for index, row in enumerate(rows)
    ]
    start = time.perf_counter()
    predict_dataset(model, processor, conversations, folder / "predictions.jsonl", num_workers=num_workers,
                    max_utterances=max(len(row["texts"]) for row in rows), progress=False)
    seconds = time.perf_counter() - start
    print(f"predict --output (predict_dataset, num_workers={num_workers}): {seconds:.2f} s; "
          f"{utterances / seconds:.2f} utterances/s")
    return seconds


def write_json(path: str, utterances: int, bare: dict, e2e: dict, pipeline_s: dict, decode_all: float):
    Path(path).write_text(json.dumps({
        "utterances": utterances, "bare_ms": {k: v * 1000 for k, v in bare.items()},
        "end_to_end_ms": {k: v * 1000 for k, v in e2e.items()}, "overhead": overhead_s(bare, e2e) / sum(bare.values()),
        "pipeline_s": pipeline_s,
        "processor_ms": decode_all * 1000,
    }, indent=2))


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)

    with tempfile.TemporaryDirectory(prefix="magtkd-inference-") as folder:
        rows = write_media(Path(folder), args)
        collator = MagtkdDataCollator(make_processor())
        model = build_model(device, dtype, args.dtype)
        batch, decode_all, utterances = build_batch(rows, collator)
        batch = to_device(batch, device)
        bare, e2e = time_encoders(model, rows, collator, batch, dtype, device, args.repeats)
        print_comparison(bare, e2e, utterances)
        pipeline_s = compare_pipelines(model, rows, collator, device, args.num_workers, utterances)
        pipeline_s["predict_command"] = time_predict_command(
            model, collator.processor, rows, Path(folder), args.num_workers, utterances
        )
        print(peak_memory(device))
        if args.json:
            write_json(args.json, utterances, bare, e2e, pipeline_s, decode_all)


if __name__ == "__main__":
    main()
