"""Small real media files and a tiny tokenizer, generated offline for the processor tests.

Helpers only (no pytest fixtures here): tests/test_processor.py and tests/test_media.py
wrap them in their own fixtures.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile

# Distinct, saturated colours: after H.264 (yuv420p) they stay within ~10 of these values,
# so a swapped channel order (BGR) is easy to see.
FRAME_COLOURS = [
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (255, 255, 0),
    (0, 255, 255),
    (255, 0, 255),
    (255, 255, 255),
    (128, 128, 128),
]

TOKENIZER_SENTENCES = [
    "hello there how are you today",
    "I am fine thanks and you",
    "Now she feels happy about it",
    "what a day it was for all of us",
    "the weather is nice and the sun is out",
    "we are going to the coffee house",
]


def make_tiny_roberta_tokenizer(vocab_size: int = 400):
    """A byte-level BPE RoBERTa tokenizer trained on a few sentences (no download)."""
    from magtkd_hf.apps.tiny import train_tiny_roberta_tokenizer

    return train_tiny_roberta_tokenizer(TOKENIZER_SENTENCES * 4, vocab_size)


def sine(frequency: float, duration: float, sampling_rate: int, channels: int = 1, amplitude=0.5):
    """A tone, float32, shape (samples,) for mono or (samples, channels)."""
    t = np.arange(int(round(duration * sampling_rate))) / sampling_rate
    wave = (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
    if channels == 1:
        return wave
    return np.stack([wave] * channels, axis=1)


def write_wav(path, samples: np.ndarray, sampling_rate: int) -> Path:
    soundfile.write(str(path), samples, sampling_rate)
    return Path(path)


def write_mp4(
    path,
    num_frames: int = 16,
    fps: int = 8,
    width: int = 64,
    height: int = 48,
    colours=None,
    audio_seconds: float | None = None,
    tone_hz: float = 440.0,
    audio_rate: int = 48000,
    audio_channels: int = 2,
    keyframe_interval: int | None = None,
) -> Path:
    """An MP4 with an H.264 video track (frame i filled with colours[i % len(colours)])
    and, when `audio_seconds` is given, an AAC sound track carrying a tone.

    The colour of frame i is `frame_colour(i, colours)`.
    """
    colours = colours or FRAME_COLOURS
    container = av.open(str(path), mode="w")
    video = container.add_stream("libx264", rate=fps)
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    video.options = {"g": str(keyframe_interval or fps), "crf": "10"}
    audio = None
    if audio_seconds is not None:
        audio = container.add_stream("aac", rate=audio_rate)
        audio.layout = "stereo" if audio_channels == 2 else "mono"
    for index in range(num_frames):
        image = np.empty((height, width, 3), dtype=np.uint8)
        image[:] = frame_colour(index, colours)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        for packet in video.encode(frame):
            container.mux(packet)
    for packet in video.encode():
        container.mux(packet)
    if audio is not None:
        _encode_tone(container, audio, audio_seconds, tone_hz, audio_rate, audio_channels)
    container.close()
    return Path(path)


def frame_colour(index: int, colours=None):
    colours = colours or FRAME_COLOURS
    return colours[index % len(colours)]


def _encode_tone(container, stream, seconds, tone_hz, rate, channels):
    wave = sine(tone_hz, seconds, rate, channels=1)
    block = 1024
    for start in range(0, len(wave), block):
        chunk = wave[start : start + block]
        planar = np.ascontiguousarray(np.repeat(chunk[None, :], channels, axis=0))
        frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout="stereo" if channels == 2 else "mono")
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
