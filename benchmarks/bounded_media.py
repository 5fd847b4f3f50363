"""Bounded media reading (issue 23 item 3): time and peak memory of reading a window or a crop (a script, not a test).

Generates in a folder (a temporary one unless --folder names one; files already there are reused):
* a 20-minute video: 320 x 240 H.264 at 24 fps (a moving gradient with noise, a keyframe every
  --keyframe-seconds), AAC 48 kHz stereo (a tone plus noise): one minute written, then copied 20 times over into
  one file; and a 2-second clip written the same way;
* a 6-minute 8-channel 96 kHz WAV (16-bit, a tone plus noise, about 550 MB).

Each case runs in its own child process, which imports only the media module (processors/media.py of --code, a
checkout's root: the code at another commit can be measured from a `git worktree` of it) and reports the time of the
call (wall and CPU), of the whole child process, and its peak RSS (VmHWM), total and above the RSS after imports; the
medians of --repeats runs:
* video window: a 2 s window at 10 minutes of the 20-minute video, audio (`load_audio`, 16 kHz, crop 400,000 as the
  processor's default) and 8 frames (`read_video_frames`, no padding); goal: at most 1.5x the time and peak RSS of
* video clip: the same on the 2-second clip as a file of its own (no window);
* WAV crop: the 8-channel 96 kHz WAV at 16 kHz with max_samples=400,000 (goal: peak RSS under 300 MB);
* WAV window: a 2 s window at 3 minutes of the same WAV.

Usage: python benchmarks/bounded_media.py [--folder DIR] [--code CHECKOUT] [--keyframe-seconds 1] [--repeats 3]
                                     [--cases ...]
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
import types
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VIDEO_SECONDS, WAV_SECONDS, WINDOW_START = 20 * 60, 6 * 60, 600.0
CASES = ("video_window", "video_clip", "wav_crop", "wav_window")


def write_files(folder: Path, keyframe_seconds: float) -> dict[str, Path]:
    """The benchmark's media in `folder` (those already there are kept)."""
    from magtkd_hf.datasets_scripts.synthetic import write_mp4

    settings = dict(size=320, height=240, fps=24, pattern="gradient", sample_rate=48000, channels=2, amplitude=0.3,
                    noise=0.01, audio_pts=True,
                    encoder_options={"g": str(round(24 * keyframe_seconds)), "preset": "ultrafast", "crf": "30"})
    paths = {"video": folder / f"long_k{keyframe_seconds:g}.mp4", "clip": folder / f"clip_k{keyframe_seconds:g}.mp4",
             "wav": folder / "8ch_96k.wav"}
    minute = folder / f"minute_k{keyframe_seconds:g}.mp4"
    for path, seconds in ((minute, 60.0), (paths["clip"], 2.0)):
        if not path.exists():
            write_mp4(path, seconds, **settings)
    if not paths["video"].exists():
        repeat_media(minute, paths["video"], round(VIDEO_SECONDS / 60))
    if not paths["wav"].exists():
        write_wav(paths["wav"], WAV_SECONDS, rate=96000, channels=8)
    return paths


def repeat_media(source: Path, target: Path, times: int) -> None:
    """`source` `times` over as one file: its packets copied with shifted timestamps (encoding 20 minutes would take
    minutes of CPU; this takes seconds)."""
    import av

    with av.open(str(source)) as reader, av.open(str(target), "w") as writer:
        outputs = {stream.index: writer.add_stream_from_template(stream) for stream in reader.streams}
        for repetition in range(times):
            reader.seek(0)
            for packet in reader.demux():
                if packet.dts is None:  # the demuxer's flush packets
                    continue
                shift = int(repetition * reader.duration * Fraction(1, 1_000_000) / packet.time_base)
                packet.pts, packet.dts = packet.pts + shift, packet.dts + shift
                packet.stream = outputs[packet.stream.index]
                writer.mux(packet)


def write_wav(path: Path, seconds: float, rate: int, channels: int) -> None:
    """A 16-bit WAV of a 440 Hz tone plus noise (louder on each further channel), written a second at a time."""
    import numpy as np
    import soundfile

    rng = np.random.default_rng(0)
    gains = np.linspace(0.5, 1.0, channels, dtype=np.float32)
    with soundfile.SoundFile(str(path), "w", samplerate=rate, channels=channels, subtype="PCM_16") as wav:
        for second in range(int(seconds)):
            t = second + np.arange(rate) / rate
            tone = 0.3 * np.sin(2 * np.pi * 440.0 * t) + 0.01 * rng.standard_normal(rate)
            wav.write((tone[:, None] * gains).astype(np.float32))


def import_media(code: Path):
    """processors/media.py of the checkout `code`, imported on its own (a bare package, so no other module of that
    checkout, nor the installed one, is loaded)."""
    package = types.ModuleType("bench_processors")
    package.__path__ = [str(code / "processors")]
    sys.modules["bench_processors"] = package
    return importlib.import_module("bench_processors.media")


def memory_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def run_case(case: str, paths: dict[str, Path], code: Path) -> dict:
    """One case in this process: its time, peak RSS and the RSS after imports."""
    media = import_media(code)
    base = memory_mb("VmRSS")
    started, cpu = time.perf_counter(), time.process_time()
    if case.startswith("video"):
        video, window = (paths["video"], media.TimeWindow(WINDOW_START, WINDOW_START + 2.0))
        if case == "video_clip":
            video, window = paths["clip"], None
        audio = media.load_audio(str(video), 16000, 400_000, window=window)
        frames = media.read_video_frames(str(video), 8, "uniform", window)
        shapes = [list(audio.shape), list(frames.shape)]
    else:
        window = media.TimeWindow(180.0, 182.0) if case == "wav_window" else None
        shapes = [list(media.load_audio(str(paths["wav"]), 16000, 400_000, window=window).shape)]
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"case": case, "seconds": seconds, "cpu": cpu, "peak_mb": memory_mb("VmHWM"), "base_mb": base,
            "shapes": shapes, "module": media.__file__}


def measure(case: str, paths: dict[str, Path], code: Path, repeats: int) -> dict:
    """`run_case` in `repeats` child processes: the median of each figure."""
    command = [sys.executable, __file__, "--child", case, "--code", str(code),
               *[f"--{key}={path}" for key, path in paths.items()]]
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            return {"case": case, "error": (done.stderr.strip().splitlines() or ["?"])[-1]}
        runs.append({**json.loads(done.stdout.strip().splitlines()[-1]), "process": time.perf_counter() - started})
    figures = ("seconds", "cpu", "peak_mb", "base_mb", "process")
    return {**runs[0], **{key: statistics.median(run[key] for run in runs) for key in figures}}


def print_table(results: list[dict]) -> None:
    print(f"{'case':<14}{'call s':>8}{'call CPU s':>12}{'process s':>11}{'peak RSS MB':>13}{'above imports MB':>18}"
          "  output shapes")
    for row in results:
        if "error" in row:
            print(f"{row['case']:<14}  failed: {row['error']}")
            continue
        above = row["peak_mb"] - row["base_mb"]
        print(f"{row['case']:<14}{row['seconds']:>8.3f}{row['cpu']:>12.3f}{row['process']:>11.2f}"
              f"{row['peak_mb']:>13.0f}{above:>18.0f}  {row['shapes']}")
    by_case = {row["case"]: row for row in results if "error" not in row}
    if "video_window" in by_case and "video_clip" in by_case:
        window, clip = by_case["video_window"], by_case["video_clip"]
        ratios = ", ".join(f"{name} {window[key] / clip[key]:.2f}x" for name, key in (
            ("call", "seconds"), ("call CPU", "cpu"), ("process", "process"), ("peak RSS", "peak_mb")))
        print(f"window / clip: {ratios} (goal: at most 1.5x in time and peak RSS)")
    if "wav_crop" in by_case:
        print(f"WAV crop peak RSS {by_case['wav_crop']['peak_mb']:.0f} MB (goal: under 300 MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, help="where the media are written and reused (default: a temporary one)")
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose processors/media.py is measured")
    parser.add_argument("--keyframe-seconds", type=float, default=1.0, help="keyframe interval of the videos")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--repeats", type=int, default=3, help="child processes per case (medians are shown)")
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    for key in ("video", "clip", "wav"):
        parser.add_argument(f"--{key}", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_case(args.child, {"video": args.video, "clip": args.clip, "wav": args.wav}, args.code)))
        return
    with tempfile.TemporaryDirectory() as temporary:
        folder = args.folder or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        paths = write_files(folder, args.keyframe_seconds)
        print(f"media in {folder} ({time.perf_counter() - started:.0f} s to write); code: {args.code}")
        results = [measure(case, paths, args.code, args.repeats) for case in args.cases]
        print(f"media module: {results[0].get('module', '?')}")
        print_table(results)


if __name__ == "__main__":
    main()
