"""Small real media files and a tiny tokenizer, generated offline for the processor tests.

Helpers only (no pytest fixtures here): tests/test_processor.py and tests/test_media.py
wrap them in their own fixtures. The MP4 writer and the tokenizer builder are the project's
(`magtkd_hf.datasets_scripts.synthetic.write_mp4`, `magtkd_hf.apps.tiny.train_tiny_roberta_tokenizer`);
these helpers only give them the tests' defaults.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

from magtkd_hf.datasets_scripts import synthetic

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
    **options,
) -> Path:
    """The project's MP4 writer (`magtkd_hf.datasets_scripts.synthetic.write_mp4`) with these tests' defaults:
    H.264 at crf 10 with a keyframe every `keyframe_interval` (default: every second) frames, frame i filled with
    `frame_colour(i, colours)`, and, when `audio_seconds` is given, an AAC sound track carrying a tone (amplitude
    0.5). `options` (e.g. `header_first=True`) go to the writer."""
    return synthetic.write_mp4(
        path, num_frames=num_frames, fps=fps, size=width, height=height, pattern="colours",
        colours=colours or FRAME_COLOURS, audio=audio_seconds is not None, audio_seconds=audio_seconds,
        tone_hz=tone_hz, sample_rate=audio_rate, channels=audio_channels, amplitude=0.5, audio_pts=True,
        encoder_options={"g": str(keyframe_interval or fps), "crf": "10"}, **options,
    )


def frame_colour(index: int, colours=None):
    colours = colours or FRAME_COLOURS
    return colours[index % len(colours)]
