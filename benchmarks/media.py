"""Media loading costs of the MAGTKD processor, side by side (a script, not a test).

Generates a MELD-like clip (3 s, 1280x720 H.264, keyframe every second, AAC 48 kHz stereo)
in a temporary folder and times, median of several runs:

* video: 8 frames with decord (num_threads=2, one sorted `get_batch`) vs PyAV decoding
  straight through (thread_type FRAME) and keeping the same 8 frames;
* pixels: the torch fast path vs `VideoMAEImageProcessorPil` (same settings);
* audio from the MP4 at 16 kHz mono: decord `AudioReader` vs PyAV + soxr (the processor's path);
* the whole processor on a conversation of 10 such utterances (all modalities).

Usage: python benchmarks/media.py [--repeats 7] [--utterances 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from magtkd_hf.processors import MagtkdProcessor
from magtkd_hf.processors.media import (
    frames_to_pixel_values_processor,
    frames_to_pixel_values_torch,
    load_audio,
    read_video_frames,
    uniform_frame_indices,
)


def write_meld_like_clip(path: Path, seconds: float = 3.0, fps: int = 24, width: int = 1280, height: int = 720):
    """Moving gradient + noise (so the encoder has work), keyframe every second, AAC stereo."""
    rng = np.random.default_rng(0)
    container = av.open(str(path), mode="w")
    video = container.add_stream("libx264", rate=fps)
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    video.options = {"g": str(fps), "preset": "veryfast"}
    audio = container.add_stream("aac", rate=48000)
    audio.layout = "stereo"
    y, x = np.mgrid[0:height, 0:width]
    for index in range(int(seconds * fps)):
        image = np.stack([(x + 8 * index) % 256, (y + 4 * index) % 256, (x + y) % 256], -1)
        image = np.clip(image + rng.integers(-12, 12, image.shape), 0, 255).astype(np.uint8)
        for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in video.encode():
        container.mux(packet)
    t = np.arange(int(seconds * 48000)) / 48000
    wave = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
    for start in range(0, len(wave), 1024):
        chunk = wave[start : start + 1024]
        frame = av.AudioFrame.from_ndarray(np.stack([chunk, chunk]), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = 48000, start, Fraction(1, 48000)
        for packet in audio.encode(frame):
            container.mux(packet)
    for packet in audio.encode():
        container.mux(packet)
    container.close()


def tiny_tokenizer():
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizer

    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(
        ["how are you doing today", "I am fine thanks", "what a day it was"] * 4,
        vocab_size=300,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        show_progress=False,
    )
    model = json.loads(trainer._tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return RobertaTokenizer(vocab=model["vocab"], merges=merges)


def median_ms(function, repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def decord_frames(path: str):
    return read_video_frames(path, num_frames=8, num_threads=2)


def pyav_frames(path: str):
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "FRAME"
        wanted = set(uniform_frame_indices(stream.frames, 8))
        kept = [
            frame.to_ndarray(format="rgb24")
            for index, frame in enumerate(container.decode(stream))
            if index in wanted
        ]
    return np.stack(kept)


def decord_audio(path: str):
    import decord

    reader = decord.AudioReader(path, ctx=decord.cpu(0), sample_rate=16000, mono=True)
    return reader[:].asnumpy()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--utterances", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(2)

    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "dia0_utt0.mp4"
        write_meld_like_clip(clip)
        path = str(clip)
        processor = MagtkdProcessor(
            tiny_tokenizer(), MagtkdProcessor.default_feature_extractor(), MagtkdProcessor.default_image_processor()
        )
        frames = decord_frames(path)
        assert np.abs(frames.astype(int) - pyav_frames(path).astype(int)).mean() < 3, "decoders disagree"
        difference = (
            frames_to_pixel_values_torch(frames, processor.image_processor)
            - frames_to_pixel_values_processor(frames, processor.image_processor)
        ).abs()
        conversation = [
            {"speaker": "AB"[i % 2], "text": "how are you doing today", "audio": None, "video": path}
            for i in range(args.utterances)
        ]
        rows = [
            ("video 8 frames", "decord num_threads=2 get_batch", median_ms(lambda: decord_frames(path), args.repeats)),
            ("video 8 frames", "PyAV decode straight through", median_ms(lambda: pyav_frames(path), args.repeats)),
            ("8 frames -> 224", "torch fast path (uint8 antialias)",
             median_ms(lambda: frames_to_pixel_values_torch(frames, processor.image_processor), args.repeats)),
            ("8 frames -> 224", "VideoMAEImageProcessorPil",
             median_ms(lambda: frames_to_pixel_values_processor(frames, processor.image_processor), args.repeats)),
            ("audio from MP4", "decord AudioReader 16k mono", median_ms(lambda: decord_audio(path), args.repeats)),
            ("audio from MP4", "PyAV + soxr (processor)", median_ms(lambda: load_audio(path, 16000), args.repeats)),
            (f"processor, {args.utterances} utt.", "text + audio + video",
             median_ms(lambda: processor(conversation), max(3, args.repeats // 2))),
        ]
        print(f"clip: 3 s 1280x720 H.264 (keyframe every 1 s) + AAC 48 kHz stereo; torch threads 2; median of {args.repeats}")
        print(f"{'step':<22} {'method':<36} {'ms':>8}")
        print("-" * 68)
        for step, method, ms in rows:
            print(f"{step:<22} {method:<36} {ms:8.1f}")
        print("-" * 68)
        print(f"torch path vs PIL processor: max |diff| {difference.max():.4f}, mean {difference.mean():.6f}")
        print(f"decoded sound track: {len(load_audio(path, 16000))} samples at 16 kHz "
              f"(decord AudioReader: {decord_audio(path).shape[-1]})")


if __name__ == "__main__":
    main()
