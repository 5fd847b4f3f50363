"""Media loading costs of the MAGTKD processor, side by side (a script, not a test).

Generates a MELD-like clip (3 s, 1280x720 H.264, keyframe every second, AAC 48 kHz stereo:
`write_mp4(path, 3.0, **MELD_LIKE_CLIP)` of `magtkd_hf.datasets_scripts.synthetic`) in a
temporary folder and times, median of several runs:

* video: 8 frames, side by side in one round-robin run (2 decoder threads each): decord
  (`get_batch` of the sorted indices), PyAV decoding straight through (thread_type FRAME,
  written here independently) and the processor's path (`read_video_frames` as the processor
  calls it), with the processor's time over the fastest one and a check that the three give
  the same pixels;
* with --dialogue, the same on an IEMOCAP-like utterance window in a longer MPEG-4 AVI
  (where the processor's path seeks);
* pixels: the torch fast path vs `VideoMAEImageProcessorPil` (same settings);
* audio from the MP4 at 16 kHz mono: decord `AudioReader` vs PyAV + soxr (the processor's path);
* the whole processor on a conversation of 10 such utterances (all modalities).

Usage: python benchmarks/media.py [--repeats 7] [--utterances 10] [--dialogue]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from magtkd_hf.apps.tiny import SMALL_TALK, train_tiny_roberta_tokenizer
from magtkd_hf.datasets_scripts.synthetic import MELD_LIKE_CLIP, write_mp4
from magtkd_hf.processors import MagtkdProcessor
from magtkd_hf.processors.media import (
    TimeWindow,
    choose_frames,
    frames_to_pixel_values_processor,
    frames_to_pixel_values_torch,
    load_audio,
    read_video_frames,
)


def write_dialogue_avi(path: Path, seconds: float = 20.0, fps=Fraction(30000, 1001), width: int = 640, height: int = 480):
    """An IEMOCAP-like dialogue video: MPEG-4 part 2 in AVI, 29.97 fps, keyframe every 10 s."""
    rng = np.random.default_rng(0)
    container = av.open(str(path), mode="w")
    video = container.add_stream("mpeg4", rate=fps)
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    video.options = {"g": "300", "qscale": "4"}
    base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    for index in range(int(seconds * fps)):
        frame = av.VideoFrame.from_ndarray(np.roll(base, 4 * index, axis=1), format="rgb24")
        for packet in video.encode(frame):
            container.mux(packet)
    for packet in video.encode():
        container.mux(packet)
    container.close()


def round_robin_ms(functions: dict, repeats: int) -> dict:
    """Median ms of each function, timed in turn within each repeat (fair on a busy machine)."""
    for function in functions.values():
        function()  # warm-up
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(values) for name, values in times.items()}


def median_ms(function, repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


THREADS = 2  # decoder threads for every video path (the processor's default video_num_threads)


def decord_frames(path: str, window=None):
    """decord: `get_batch` of the sorted kept indices (the processor's former path)."""
    import decord

    reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=THREADS)
    indices = choose_frames(len(reader), float(reader.get_avg_fps()), 8, "uniform", window)
    unique = sorted(set(indices))
    batch = reader.get_batch(unique).asnumpy()
    return batch[[unique.index(i) for i in indices]]


def pyav_frames(path: str, window=None):
    """PyAV straight through from the start (frame threads), converting only the kept frames."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type, stream.thread_count = "FRAME", THREADS
        indices = choose_frames(stream.frames, float(stream.average_rate), 8, "uniform", window)
        wanted, kept = set(indices), {}
        for index, frame in enumerate(container.decode(stream)):
            if index in wanted:
                kept[index] = frame.to_ndarray(format="rgb24")
                if len(kept) == len(wanted):
                    break
    return np.stack([kept[i] for i in indices])


def processor_frames(path: str, window=None):
    """The processor's path: `read_video_frames` with the processor's defaults."""
    return read_video_frames(path, num_frames=8, window=window, num_threads=THREADS)


VIDEO_PATHS = {
    "decord get_batch": decord_frames,
    "PyAV straight through": pyav_frames,
    "processor (read_video_frames)": processor_frames,
}


def compare_video(path: str, repeats: int, window=None) -> tuple[dict, str]:
    """ms per clip for each video path (round robin), and a line on how their pixels compare."""
    outputs = {name: function(path, window) for name, function in VIDEO_PATHS.items()}
    reference = outputs["processor (read_video_frames)"]
    agreement = ", ".join(
        f"{name}: max |diff| {int(np.abs(frames.astype(int) - reference.astype(int)).max())}"
        for name, frames in outputs.items()
        if name != "processor (read_video_frames)"
    )
    timings = round_robin_ms({name: (lambda f=function: f(path, window)) for name, function in VIDEO_PATHS.items()}, repeats)
    return timings, f"pixels vs the processor's: {agreement}"


def decord_audio(path: str):
    import decord

    reader = decord.AudioReader(path, ctx=decord.cpu(0), sample_rate=16000, mono=True)
    return reader[:].asnumpy()


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--utterances", type=int, default=10)
    parser.add_argument("--dialogue", action="store_true", help="also time an utterance window of a 20 s AVI")
    return parser.parse_args()


def make_processor() -> MagtkdProcessor:
    return MagtkdProcessor(
        train_tiny_roberta_tokenizer(SMALL_TALK * 4, vocab_size=300),
        MagtkdProcessor.default_feature_extractor(),
        MagtkdProcessor.default_image_processor(),
    )


def compare_dialogue(folder: Path, repeats: int) -> tuple[dict, str]:
    """`compare_video` on an utterance window of an IEMOCAP-like 20 s AVI written in `folder`."""
    avi = folder / "Ses01F_impro01.avi"
    write_dialogue_avi(avi)
    window = TimeWindow(12.0, 15.5).widened(1.0)  # an utterance in the middle of the dialogue
    return compare_video(str(avi), max(3, repeats // 2), window)


def pixel_difference(frames, processor):
    """|torch fast path - PIL processor| on the same frames."""
    return (
        frames_to_pixel_values_torch(frames, processor.image_processor)
        - frames_to_pixel_values_processor(frames, processor.image_processor)
    ).abs()


def timing_rows(path: str, frames, processor, video_ms: dict, dialogue, args) -> list:
    """(step, method, ms) rows: the video timings already taken, then pixels, audio and the whole processor."""
    conversation = [
        {"speaker": "AB"[i % 2], "text": "how are you doing today", "audio": None, "video": path}
        for i in range(args.utterances)
    ]
    rows = [("video 8 frames", name, ms) for name, ms in video_ms.items()]
    if dialogue is not None:
        rows += [("IEMOCAP-like window", name, ms) for name, ms in dialogue[0].items()]
    rows += [
        ("8 frames -> 224", "torch fast path (uint8 antialias)",
         median_ms(lambda: frames_to_pixel_values_torch(frames, processor.image_processor), args.repeats)),
        ("8 frames -> 224", "VideoMAEImageProcessorPil",
         median_ms(lambda: frames_to_pixel_values_processor(frames, processor.image_processor), args.repeats)),
        ("audio from MP4", "decord AudioReader 16k mono", median_ms(lambda: decord_audio(path), args.repeats)),
        ("audio from MP4", "PyAV + soxr (processor)", median_ms(lambda: load_audio(path, 16000), args.repeats)),
        (f"processor, {args.utterances} utt.", "text + audio + video",
         median_ms(lambda: processor(conversation), max(3, args.repeats // 2))),
    ]
    return rows


def print_table(rows: list, repeats: int):
    print(f"clip: 3 s 1280x720 H.264 (keyframe every 1 s) + AAC 48 kHz stereo; torch threads 2; "
          f"{THREADS} decoder threads; median of {repeats} (video: {max(repeats, 9)}, round robin)")
    print(f"{'step':<22} {'method':<36} {'ms':>8}")
    print("-" * 68)
    for step, method, ms in rows:
        print(f"{step:<22} {method:<36} {ms:8.1f}")
    print("-" * 68)


def print_checks(path: str, video_ms: dict, video_agreement: str, dialogue, difference):
    """Ratios to the fastest video path and the agreement lines under the table."""
    fastest = min(video_ms, key=video_ms.get)
    ratio = video_ms["processor (read_video_frames)"] / video_ms[fastest]
    print(f"video: processor path / fastest ({fastest}) = {ratio:.2f}x; {video_agreement}")
    if dialogue is not None:
        ms = dialogue[0]
        print(f"IEMOCAP-like window [11, 16.5] s of a 20 s 640x480 MPEG-4 AVI: processor / fastest = "
              f"{ms['processor (read_video_frames)'] / min(ms.values()):.2f}x; {dialogue[1]}")
    print(f"torch path vs PIL processor: max |diff| {difference.max():.4f}, mean {difference.mean():.6f}")
    print(f"decoded sound track: {len(load_audio(path, 16000))} samples at 16 kHz "
          f"(decord AudioReader: {decord_audio(path).shape[-1]})")


def main():
    args = parse_args()
    torch.set_num_threads(2)

    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "dia0_utt0.mp4"
        write_mp4(clip, 3.0, **MELD_LIKE_CLIP)
        path = str(clip)
        processor = make_processor()
        frames = processor_frames(path)
        video_ms, video_agreement = compare_video(path, max(args.repeats, 9))
        dialogue = compare_dialogue(Path(folder), args.repeats) if args.dialogue else None
        difference = pixel_difference(frames, processor)
        rows = timing_rows(path, frames, processor, video_ms, dialogue, args)
        print_table(rows, args.repeats)
        print_checks(path, video_ms, video_agreement, dialogue, difference)


if __name__ == "__main__":
    main()
