"""Scale and speed of `magtkd-hf predict VIDEO --subtitles SRT` on long generated videos (issue 24 item 5; a script,
not a test).

Generates in a temporary folder (or `--work DIR`, where files already there are reused):

- for each of `--minutes` (default 5 and 20), a 1280 x 720 H.264 + AAC video at 25 fps with a keyframe every 2 s
  (libx264 preset ultrafast, crf 28, via PyAV; moving coloured blocks over a scrolling pattern, a noise strip, a tone
  with noise in 48 kHz stereo). `--unique-minutes` (default 1) are encoded; a longer video repeats them by copying
  packets with shifted timestamps (encoding 20 minutes takes minutes of CPU; copying takes seconds). The encode time
  is printed; `--unique-minutes 20` encodes everything;
- an SRT per video: `--cues-per-minute` (default 15: 300 cues for 20 minutes) of 1-3 s, with `NAME:` prefixes of 2 to
  4 speakers per conversation, spread evenly over the video: pauses under 2 s within a conversation of 8 to 14 cues,
  over 5 s (`--max-gap`'s default) between conversations;
- two model folders (random weights; nothing downloaded): "demo", the tiny end-to-end model of the tests
  (`tests/tiny_magtkd.save_tiny_end_to_end`: the tiny encoders `magtkd-hf demo` trains from, 32-48 wide) and "paper",
  `MagtkdForEmotionRecognition(MagtkdConfig())` (roberta-large, data2vec-audio-base, timesformer-base) with the
  processor of `benchmarks/inference.py` (224 x 224 frames), saved with `save_pretrained`.

Then runs the real command in a child process for each (model, video):
`magtkd-hf predict MODEL VIDEO --subtitles SRT --output rows.jsonl --overwrite`, once with a single cue (the middle
one), once with every cue (the paper model: `--paper-cues` consecutive cues from the middle of the video, read as one
conversation: by default 24, the largest conversation the command forms, so its peak RSS is the most the defaults
need) and, for the demo model on a longer video, once with as many cues as the shortest video has, from the middle
(peak RSS compared at equal work), checks that rows.jsonl has one row per cue, and measures the wall time and the
child's peak RSS (`os.wait4`'s rusage: model loading, media decoding and prediction included). The one-cue run gives
the start-up cost (Python, imports, model loading, one cue); the cues/s column is the rate after it:
(cues - 1) / (wall - one-cue wall). The paper model's wall time for 300 cues is extrapolated from those two runs
(one-cue wall + 299 / rate) and marked so; its peak RSS is not extrapolated. Peak RSS is shown at every
length side by side for the same number of cues: it must not grow with the video (cues are read by seeking to their
window, never by decoding the whole video).

Everything runs under `nice -n 10` (the script renices itself) with `--threads` torch and decoder threads.

Usage:
    python benchmarks/subtitles_scale.py [--minutes 5 20] [--models demo paper] [--paper-cues 24]
                                         [--cues-per-minute 15] [--unique-minutes 1] [--threads 2]
                                         [--work DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import pysubs2

from magtkd_hf.subtitles import DEFAULT_MAX_UTTERANCES

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests")]

WIDTH, HEIGHT, FPS, KEYFRAME_SECONDS, SAMPLE_RATE = 1280, 720, 25, 2, 48000
ENCODER_OPTIONS = {"g": str(FPS * KEYFRAME_SECONDS), "preset": "ultrafast", "crf": "28"}
SPEAKERS = ("ROSS", "RACHEL", "MONICA", "JOEY", "PHOEBE", "CHANDLER")
NICENESS = 10


def cpu_description() -> str:
    """The CPU's model name and whether it computes bfloat16 natively (AVX512-BF16) or has AVX2 only."""
    info = Path("/proc/cpuinfo").read_text()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    vector = "AVX512-BF16" if "avx512_bf16" in flags else "AVX2 only" if "avx2" in flags else "no AVX2"
    return f"{name}, {os.cpu_count()} cores, {vector}"


class MovingPictures:
    """Cheap frames with real content (YUV 4:2:0, no colour conversion): a scrolling luma pattern, three blocks moving
    on their own paths and a strip of noise at the bottom."""

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        y, x = np.mgrid[0:HEIGHT, 0 : 2 * WIDTH]
        self.luma = ((x // 3 + y // 5 + 40 * np.sin(x / 90.0)) % 256).astype(np.uint8)
        cy, cx = np.mgrid[0 : HEIGHT // 2, 0 : WIDTH // 2]
        self.chroma = [(128 + 60 * np.sin(cx / 40.0 + k) * np.cos(cy / 30.0)).astype(np.uint8) for k in range(2)]
        self.noise = rng.integers(0, 256, (64, 16, WIDTH), dtype=np.uint8)

    def frame(self, index: int) -> av.VideoFrame:
        picture = np.empty((HEIGHT * 3 // 2, WIDTH), np.uint8)
        shift = (index * 6) % WIDTH
        picture[:HEIGHT] = self.luma[:, shift : shift + WIDTH]
        picture[HEIGHT : HEIGHT + HEIGHT // 4] = self.chroma[0].reshape(HEIGHT // 4, WIDTH)
        picture[HEIGHT + HEIGHT // 4 :] = self.chroma[1].reshape(HEIGHT // 4, WIDTH)
        for block in range(3):
            left = int((WIDTH - 200) * (0.5 + 0.5 * np.sin(index / (40 + 17 * block) + block)))
            top = int((HEIGHT - 160) * (0.5 + 0.5 * np.cos(index / (55 + 11 * block) + block)))
            picture[top : top + 150, left : left + 200] = 50 + 80 * block
        picture[HEIGHT - 16 : HEIGHT] = self.noise[index % len(self.noise)]
        return av.VideoFrame.from_ndarray(picture, format="yuv420p")


def encode_video(path: Path, seconds: float) -> None:
    """`seconds` of 720p H.264 (ENCODER_OPTIONS) and AAC 48 kHz stereo, the two tracks interleaved as a camera's."""
    pictures, rng = MovingPictures(), np.random.default_rng(1)
    tone = (0.3 * np.sin(2 * np.pi * 440.0 * np.arange(1024 * 47) / SAMPLE_RATE)).astype(np.float32)  # ~1 s
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt, video.options = WIDTH, HEIGHT, "yuv420p", ENCODER_OPTIONS
        sound = container.add_stream("aac", rate=SAMPLE_RATE, layout="stereo")
        samples_written = 0
        for index in range(round(seconds * FPS)):
            container.mux(video.encode(pictures.frame(index)))
            while samples_written < (index + 1) * SAMPLE_RATE / FPS:
                block = tone[samples_written % len(tone) :][:1024] + 0.01 * rng.standard_normal(1024, np.float32)
                frame = av.AudioFrame.from_ndarray(np.stack([block, block]), format="fltp", layout="stereo")
                frame.sample_rate, frame.pts = SAMPLE_RATE, samples_written
                container.mux(sound.encode(frame))
                samples_written += 1024
        container.mux(video.encode())
        container.mux(sound.encode())


def write_videos(folder: Path, minutes: list[int], unique_minutes: float) -> dict[int, Path]:
    """The videos of `minutes` in `folder` (kept when already there): `unique_minutes` encoded, then repeated."""
    from bounded_media import repeat_media

    unique = folder / f"unique_{unique_minutes:g}min.mp4"
    paths = {length: folder / f"video_{length}min.mp4" for length in minutes}
    if all(path.exists() for path in paths.values()):
        print(f"videos reused from {folder}")
        return paths
    started = time.perf_counter()
    if not unique.exists():
        encode_video(unique, unique_minutes * 60)
    encoded = time.perf_counter() - started
    for length, path in paths.items():
        if not path.exists():
            repeat_media(unique, path, max(1, round(length / unique_minutes)))
    print(f"videos: {unique_minutes:g} min of 1280x720 H.264 (ultrafast, {FPS} fps, a keyframe every "
          f"{KEYFRAME_SECONDS} s) + AAC encoded in {encoded:.0f} s, repeated to {', '.join(map(str, minutes))} min "
          f"in {time.perf_counter() - started - encoded:.0f} s")
    return paths


def make_cues(minutes: int, per_minute: int, seed: int = 0) -> list[pysubs2.SSAEvent]:
    """`minutes * per_minute` cues of 1-3 s filling the video: conversations of 8 to 14 cues among 2 to 4 speakers,
    pauses within one scaled to under 2 s, between two to over 5 s."""
    from magtkd_hf.apps.tiny import SMALL_TALK

    rng, words = random.Random(seed), " ".join(SMALL_TALK).split()
    count = minutes * per_minute
    durations = [rng.uniform(1.0, 3.0) for _ in range(count)]
    pauses, speakers, left = [], [], 0
    for _ in range(count):
        if left == 0:  # a new conversation
            left, cast = rng.randint(8, 14), rng.sample(SPEAKERS, rng.randint(2, 4))
            pauses.append(rng.uniform(6.0, 9.0))
        else:
            pauses.append(rng.uniform(0.2, 1.4))
        speakers.append(cast[left % len(cast)])
        left -= 1
    scale = (minutes * 60 - 1.0 - sum(durations)) / sum(pauses)  # spread over the whole video, 1 s spare at its end
    if scale < 1.0:
        raise SystemExit(f"{count} cues do not fit {minutes} minutes: ask for fewer --cues-per-minute.")
    cues, start = [], 0.0
    for duration, pause, speaker in zip(durations, pauses, speakers):
        start += pause * scale if cues else 0.5
        text = " ".join(rng.choice(words) for _ in range(rng.randint(4, 14)))
        cues.append(pysubs2.SSAEvent(start=round(start * 1000), end=round((start + duration) * 1000),
                                     text=f"{speaker}: {text}"))
        start += duration
    return cues


def write_srt(path: Path, cues: list[pysubs2.SSAEvent]) -> Path:
    subtitles = pysubs2.SSAFile()
    subtitles.events = list(cues)
    subtitles.save(str(path), format_="srt")
    return path


def build_demo_model(folder: Path) -> Path:
    """The tests' tiny end-to-end model (random weights) and its processor."""
    from tiny_magtkd import save_tiny_end_to_end

    return Path(save_tiny_end_to_end(str(folder)))


def paper_processor(vocab_size: int):
    """`benchmarks/inference.py`'s processor (data2vec audio, 224 x 224 frames, a tokenizer trained on small talk) with
    unused entries filling the tokenizer up to `vocab_size` tokens, speaker tokens included: a saved model must have one
    embedding row per token (`load_emotion_model` checks it), and roberta-large's vocabulary is not downloaded here."""
    from inference import make_processor
    from transformers import RobertaTokenizer

    from magtkd_hf import MagtkdProcessor

    base = make_processor()
    bpe = json.loads(base.tokenizer.backend_tokenizer.to_str())["model"]
    size = vocab_size - (len(base.tokenizer) - len(bpe["vocab"]))  # the processor adds its speaker tokens
    vocab = {**bpe["vocab"], **{f"<unused{index}>": index for index in range(len(bpe["vocab"]), size)}}
    tokenizer = RobertaTokenizer(vocab=vocab, merges=[tuple(merge) for merge in bpe["merges"]])
    return MagtkdProcessor(tokenizer, base.feature_extractor, base.image_processor)


def build_paper_model(folder: Path) -> Path:
    """`MagtkdConfig()`'s encoder sizes with random weights and `paper_processor`."""
    import torch

    from magtkd_hf import MagtkdConfig, MagtkdForEmotionRecognition

    torch.manual_seed(0)
    config = MagtkdConfig()
    MagtkdForEmotionRecognition(config).save_pretrained(str(folder))
    paper_processor(config.text_config.encoder_config.vocab_size).save_pretrained(str(folder))
    return folder


def model_folder(work: Path, name: str) -> Path:
    folder = work / f"model_{name}"
    if not (folder / "config.json").exists():
        started = time.perf_counter()
        (build_demo_model if name == "demo" else build_paper_model)(folder)
        size = sum(path.stat().st_size for path in folder.iterdir()) / 2**20
        print(f"model {name}: built and saved in {time.perf_counter() - started:.0f} s ({size:,.0f} MB on disk)")
    return folder


def run_predict(model: Path, video: Path, srt: Path, output: Path, threads: int, options: tuple = ()) -> dict:
    """The command in a child process: its wall time (s) and peak RSS (MB); the rows it wrote, checked per cue."""
    command = [shutil.which("magtkd-hf") or "magtkd-hf", "predict", str(model), str(video), "--subtitles", str(srt),
               "--output", str(output), "--overwrite", *options]
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log = output.with_suffix(".log")
    started = time.perf_counter()
    with log.open("w") as stream:
        child = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT, env=environment)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({child.returncode}): {log.read_text().strip()[-2000:]}")
    cues = len(pysubs2.load(str(srt)).events)
    rows = [json.loads(line) for line in output.read_text().splitlines() if line.strip()]
    numbers = sorted(row["cue"] for row in rows)
    if numbers != list(range(1, cues + 1)):
        raise SystemExit(f"{output}: {len(rows)} rows for {cues} cues (cue numbers {numbers[:5]}...): not one per cue.")
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "cues": cues}


def cue_selections(name: str, cues: list, fewest: int, paper_cues: int) -> list[list]:
    """The cue lists run on one video: the demo model's every cue and, on a longer video, as many cues as the shortest
    video has, from its middle (peak RSS compared at equal work); the paper model's `paper_cues` from the middle."""
    middle = len(cues) // 2
    if name == "paper":
        return [cues[middle : middle + paper_cues]]
    first = middle - fewest // 2
    return [cues] + ([cues[first : first + fewest]] if len(cues) > fewest else [])


def measure(name: str, model: Path, minutes: int, video: Path, cues: list, fewest: int, folder: Path, args) -> list:
    """One model on one video: a one-cue run (the middle cue), then a run of each of `cue_selections`; the paper
    model's rows for every cue extrapolated from its runs."""
    tag, middle = f"{name}_{minutes}min", len(cues) // 2
    one = run_predict(model, video, write_srt(folder / f"{tag}_1cue.srt", cues[middle : middle + 1]),
                      folder / f"{tag}_1cue.jsonl", args.threads)
    print(f"  {name}, {minutes} min: 1 cue in {one['wall_s']:.1f} s, peak RSS {one['peak_rss_mb']:.0f} MB", flush=True)
    rows = []
    # The paper model's cues are read as one conversation (by default 24: the largest the command's defaults form).
    options = ("--max-gap", "3600", "--max-utterances", str(args.paper_cues)) if name == "paper" else ()
    for chosen in cue_selections(name, cues, fewest, args.paper_cues):
        run = run_predict(model, video, write_srt(folder / f"{tag}_{len(chosen)}cues.srt", chosen),
                          folder / f"{tag}_{len(chosen)}cues.jsonl", args.threads, options)
        rate = (run["cues"] - 1) / max(run["wall_s"] - one["wall_s"], 1e-9)
        rows.append({"model": name, "video_minutes": minutes, "cues": run["cues"], "wall_s": run["wall_s"],
                     "one_cue_wall_s": one["wall_s"], "cues_per_s": rate,
                     "overall_cues_per_s": run["cues"] / run["wall_s"], "peak_rss_mb": run["peak_rss_mb"],
                     "extrapolated": False})
        print(f"  {name}, {minutes} min: {run['cues']} cues in {run['wall_s']:.1f} s, peak RSS "
              f"{run['peak_rss_mb']:.0f} MB", flush=True)
    if name == "paper":
        wall = one["wall_s"] + (len(cues) - 1) / rows[0]["cues_per_s"]
        rows.append({**rows[0], "cues": len(cues), "wall_s": wall, "overall_cues_per_s": len(cues) / wall,
                     "peak_rss_mb": None, "extrapolated": True})
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = ["| model | video minutes | cues run | wall s | 1-cue run s | cues/s after start-up | cues/s overall "
             "| peak RSS MB | extrapolated to 300 cues? |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        extrapolated = "yes (from the runs above)" if row["extrapolated"] else "no"
        peak = "not measured" if row["peak_rss_mb"] is None else f"{row['peak_rss_mb']:.0f}"
        lines.append(f"| {row['model']} | {row['video_minutes']} | {row['cues']} | {row['wall_s']:.1f} | "
                     f"{row['one_cue_wall_s']:.1f} | {row['cues_per_s']:.2f} | {row['overall_cues_per_s']:.2f} | "
                     f"{peak} | {extrapolated} |")
    return "\n".join(lines)


def rss_by_length(rows: list[dict]) -> str:
    """Peak RSS of each (model, cues run) at each video length side by side, with the longest over the shortest."""
    measured = [row for row in rows if not row["extrapolated"]]
    lengths = sorted({row["video_minutes"] for row in measured})
    lines = ["| model | cues run | " + " | ".join(f"peak RSS MB, {length} min" for length in lengths)
             + " | longest / shortest |", "|---|---:|" + "---:|" * (len(lengths) + 1)]
    for model, cues in dict.fromkeys((row["model"], row["cues"]) for row in measured):
        peaks = {row["video_minutes"]: row["peak_rss_mb"] for row in measured
                 if (row["model"], row["cues"]) == (model, cues)}
        ratio = f"{peaks[lengths[-1]] / peaks[lengths[0]]:.3f}x" if len(peaks) == len(lengths) else "-"
        lines.append(f"| {model} | {cues} | " + " | ".join(f"{peaks[length]:.0f}" if length in peaks else "-"
                                                         for length in lengths) + f" | {ratio} |")
    return "\n".join(lines)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, nargs="+", default=[5, 20], help="video lengths")
    parser.add_argument("--models", nargs="+", choices=("demo", "paper"), default=["demo", "paper"])
    parser.add_argument("--paper-cues", type=int, default=DEFAULT_MAX_UTTERANCES,
                        help="cues the paper-size model runs, as one conversation (at least 2; default: the largest "
                             "conversation predict forms, --max-utterances' default)")
    parser.add_argument("--cues-per-minute", type=int, default=15)
    parser.add_argument("--unique-minutes", type=float, default=1.0,
                        help="minutes encoded; a longer video repeats them (--minutes must be multiples)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the command (OMP_NUM_THREADS)")
    parser.add_argument("--work", type=Path, help="keep the media and models here and reuse them (default: temporary)")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = parser.parse_args()
    if args.paper_cues < 2:
        parser.error("--paper-cues must be at least 2 (the rate is measured against a one-cue run).")
    if any(minutes % args.unique_minutes for minutes in args.minutes):
        parser.error(f"--minutes {args.minutes}: each must be a multiple of --unique-minutes {args.unique_minutes:g}.")
    return args


def main() -> None:
    args = parse_args()
    os.nice(max(0, NICENESS - os.nice(0)))
    started = time.perf_counter()
    import torch
    import transformers

    print(f"CPU: {cpu_description()}; niceness {os.nice(0)}, {args.threads} threads; torch {torch.__version__}, "
          f"transformers {transformers.__version__}, PyAV {av.__version__}")
    with tempfile.TemporaryDirectory(prefix="magtkd-subtitles-scale-") as temporary:
        work = args.work or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        videos = write_videos(work, args.minutes, args.unique_minutes)
        rows = []
        for name in args.models:
            model = model_folder(work, name)
            fewest = min(args.minutes) * args.cues_per_minute
            for minutes, video in videos.items():
                cues = make_cues(minutes, args.cues_per_minute)
                rows += measure(name, model, minutes, video, cues, fewest, work, args)
    print(f"\n{markdown_table(rows)}\n\n{rss_by_length(rows)}\n")
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_description(), "threads": args.threads, "rows": rows},
                                              indent=2))


if __name__ == "__main__":
    main()
