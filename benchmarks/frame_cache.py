"""The video stage's input time per epoch without and with the frame cache, side by side (a script, not a test).

Writes a MELD-like clip (3 s, 1280x720 H.264, keyframe every second, AAC 48 kHz stereo: `write_mp4(path, 3.0,
**MELD_LIKE_CLIP)` of `magtkd_hf.datasets_scripts.synthetic`) and copies it to --clips files (the writer is
deterministic, so every clip it generated would be these bytes; writing one costs ~5 s), saved as a DatasetDict of
5-utterance conversations (train: every clip; validation: the first conversation), with a processor at the paper's
video sizes (8 frames, shortest edge 224, 224 crop) and tiny encoders (the stage builds its model; it is not run).
Then, in one run:

* an epoch of the video stage's training DataLoader without a cache: `unimodal_job` + `make_loaders` (the stage's
  `UtteranceCollator`, batch size 4 of the MELD recipe, --loader-workers workers) iterated, no model;
* the cache built as `magtkd-hf cache-frames` builds it (--num-workers decoding processes), its size per clip;
* the same epoch with the cache (OUT/frame-cache, found by the stage as in training), checked to give the same
  pixel values batch by batch.

Usage: python benchmarks/frame_cache.py [--clips 200] [--num-workers 2] [--loader-workers 2] [--epochs 1]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
import time
from pathlib import Path

import datasets
import torch

from magtkd_hf.apps.cli_cache import cache_run_frames
from magtkd_hf.apps.tiny import SMALL_TALK, train_tiny_roberta_tokenizer, write_tiny_components
from magtkd_hf.datasets_scripts.synthetic import MELD_LIKE_CLIP, write_mp4
from magtkd_hf.processors import MagtkdProcessor
from magtkd_hf.training import STAGES, StageInputs, TrainingConfig
from magtkd_hf.training.loop import make_loaders
from magtkd_hf.training.stages import unimodal_job

UTTERANCES_PER_CONVERSATION = 5


def write_clips(folder: Path, count: int) -> list[str]:
    """`count` copies of one MELD-like clip, named as MELD's."""
    first = write_mp4(folder / "dia0_utt0.mp4", 3.0, **MELD_LIKE_CLIP)
    paths = [first]
    for index in range(1, count):
        target = folder / f"dia{index // UTTERANCES_PER_CONVERSATION}_utt{index % UTTERANCES_PER_CONVERSATION}.mp4"
        shutil.copyfile(first, target)
        paths.append(target)
    return [str(path) for path in paths]


def conversation_rows(paths: list[str]) -> list[dict]:
    """Rows of the `load_meld` schema over the clips, 5 utterances each."""
    rows = []
    for start in range(0, len(paths), UTTERANCES_PER_CONVERSATION):
        clips = paths[start : start + UTTERANCES_PER_CONVERSATION]
        rows.append({
            "dialogue_id": str(start // UTTERANCES_PER_CONVERSATION),
            "utterance_ids": [str(u) for u in range(len(clips))],
            "speakers": [["Ross", "Rachel"][u % 2] for u in range(len(clips))],
            "texts": [SMALL_TALK[u % len(SMALL_TALK)] for u in range(len(clips))],
            "labels": [u % 7 for u in range(len(clips))], "video_paths": clips,
        })
    return rows


def write_run_inputs(folder: Path, clips: int) -> dict:
    """The clips, the DatasetDict, a 224-pixel processor and tiny encoders; the run's TrainingConfig arguments."""
    rows = conversation_rows(write_clips(folder / "clips", clips))
    data = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows),
                                 "validation": datasets.Dataset.from_list(rows[:1])})
    data.save_to_disk(str(folder / "data"))
    components = write_tiny_components(folder / "components", SMALL_TALK * 4)
    processor = MagtkdProcessor(train_tiny_roberta_tokenizer(SMALL_TALK * 4, vocab_size=300),
                                MagtkdProcessor.default_feature_extractor(), MagtkdProcessor.default_image_processor())
    processor.save_pretrained(str(folder / "processor"))
    return dict(data=str(folder / "data"), processor=str(folder / "processor"), cpu=True,
                text_encoder=str(components["text-encoder"]), audio_encoder=str(components["audio-encoder"]),
                video_encoder=str(components["video-encoder"]))


def epoch_input_time(config: TrainingConfig) -> tuple[float, list[str], bool]:
    """Seconds to iterate one epoch of the video stage's training DataLoader (batches fetched, no model), the batches'
    pixel-value digests (not timed) and whether the stage read a frame cache."""
    inputs = StageInputs(config)
    settings = inputs.settings("video")
    job = unimodal_job(STAGES["video"], inputs, settings)
    loader, _ = make_loaders(job, settings)
    loader.sampler.set_epoch(0)
    digests, waited = [], 0.0
    iterator = iter(loader)
    while True:
        started = time.perf_counter()
        batch = next(iterator, None)
        waited += time.perf_counter() - started
        if batch is None:
            break
        digests.append(hashlib.sha1(batch["pixel_values"].numpy().tobytes()).hexdigest())
    return waited, digests, "frame_cache" in job.description


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=200, help="3 s 720p clips (utterances) in the train split")
    parser.add_argument("--num-workers", type=int, default=2, help="cache-frames decoding processes")
    parser.add_argument("--loader-workers", type=int, default=2, help="DataLoader workers of the video stage")
    parser.add_argument("--epochs", type=int, default=1, help="epochs timed each way")
    return parser.parse_args()


def print_table(args, without: list[float], with_cache: list[float], build: dict, clips: int) -> None:
    print(f"{clips} clips of 3 s 1280x720 H.264 (copies of one), 8 frames -> 224 x 224, batch 4, "
          f"{args.loader_workers} loader workers, {torch.get_num_threads()} torch threads; one shared 2-core machine")
    print(f"{'':<52} {'seconds':>9} {'ms / clip':>10}")
    print("-" * 73)
    rows = (("epoch input time, decoding every clip", without), ("epoch input time, frame cache", with_cache))
    for name, times in rows:
        for epoch, seconds in enumerate(times, 1):
            label = name if len(times) == 1 else f"{name} (epoch {epoch})"
            print(f"{label:<52} {seconds:9.2f} {1000 * seconds / clips:10.1f}")
    print(f"{f'cache build ({args.num_workers} workers)':<52} {build['seconds']:9.2f} "
          f"{1000 * build['seconds'] / max(build['clips'], 1):10.1f}")
    print("-" * 73)
    print(f"speed-up of the epoch's input: {min(without) / min(with_cache):.1f}x; the build costs "
          f"{build['seconds'] / min(without):.2f} epochs of decoding")
    print(f"cache size per clip: {build['frame_bytes_per_clip']:,.0f} bytes of frames "
          f"({build['frame_bytes_per_clip'] / 2**20:.2f} MiB), {build['disk_bytes_per_clip']:,.0f} on disk; "
          f"{build['clips']} clips, {build['clips'] * build['disk_bytes_per_clip'] / 2**30:.2f} GiB "
          f"(13.7k MELD clips: {13_700 * build['disk_bytes_per_clip'] / 2**30:.1f} GiB)")


def main():
    import transformers

    args = parse_args()
    torch.set_num_threads(2)
    datasets.disable_progress_bars()  # a script: its own output only
    transformers.utils.logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        started = time.perf_counter()
        run = write_run_inputs(folder, args.clips)
        print(f"inputs written in {time.perf_counter() - started:.1f} s")
        overrides = {"*": {"num_workers": args.loader_workers}}
        decoded = TrainingConfig(output_dir=str(folder / "run"), frame_cache="none", overrides=overrides, **run)
        cached = TrainingConfig(output_dir=str(folder / "run"), overrides=overrides, **run)

        without = [epoch_input_time(decoded) for _ in range(args.epochs)]
        build = cache_run_frames(cached, num_workers=args.num_workers, progress=False)
        with_cache = [epoch_input_time(cached) for _ in range(args.epochs)]
        assert not any(used for _, _, used in without) and all(used for _, _, used in with_cache)
        same = all(digests == without[0][1] for _, digests, _ in [*without, *with_cache])
        print_table(args, [seconds for seconds, _, _ in without], [seconds for seconds, _, _ in with_cache], build,
                    args.clips)
        print(f"pixel values with the cache == without, every batch: {same}; clips not cached: {len(build['failed'])}")


if __name__ == "__main__":
    main()
