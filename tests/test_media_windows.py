"""Bounded media reading (processors/media.py): a window or a crop is read from a seek or in blocks and gives what
reading the whole file gives; media whose properties cannot be speech or video are refused, naming the file."""

import math

import av
import numpy as np
import pytest
import soundfile
import soxr

from magtkd_hf.processors import media as media_module
from magtkd_hf.processors.media import MediaError, TimeWindow, check_video_properties, load_audio, read_video_frames
from magtkd_hf.processors.media_frames import choose_frames

from media_fixtures import frame_colour, sine, write_mp4, write_wav


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("windows")
    rng = np.random.default_rng(0)
    # 4 s, 8 different channels (a tone at a different level on each, plus noise) at 96 kHz
    channels = sine(440.0, 4.0, 96000)[:, None] * np.linspace(0.2, 0.9, 8) + 0.05 * rng.standard_normal((384000, 8))
    return {
        "wav_8ch": str(write_wav(folder / "8ch.wav", channels.astype(np.float32), 96000)),
        # 12 s at 8 fps (frame i in frame_colour(i)), keyframe every second, a pure tone as AAC (without noise: AAC's
        # noise substitution draws random noise in the decoder, which a seek restarts elsewhere)
        "video": str(write_mp4(folder / "long.mp4", num_frames=96, fps=8, width=32, height=32, audio_seconds=12.0,
                               tone_hz=1000.0)),
        "wav_1hz": str(write_wav(folder / "1hz.wav", np.zeros(4, np.float32), 1)),
        "wav_1mhz": str(write_wav(folder / "1mhz.wav", np.zeros(4, np.float32), 1_000_000)),
        "video_5000fps": write_fast_video(folder / "5000fps.mp4"),
    }


def write_fast_video(path):
    """Four 16 x 16 frames declared at 5,000 fps."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=5000)
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv420p"
        for _ in range(4):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")))
        container.mux(stream.encode())
    return str(path)


def whole_file_audio(path, target_rate, max_samples=None, window=None):
    """What the processor did before reading in blocks: the whole file as float32, mixed down, cut to the window,
    resampled, cropped."""
    samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    mono = samples.mean(axis=1)
    if window is not None:
        mono = mono[round(window.start * rate) : None if window.end is None else round(window.end * rate)]
    if rate != target_rate:
        mono = soxr.resample(mono, rate, target_rate, quality="HQ")
    return mono[:max_samples]


# ----------------------------------------------------------------------------- sound files in blocks


@pytest.mark.parametrize("target_rate, max_samples, window", [
    (16000, 8000, None),
    (16000, None, TimeWindow(1.0, 2.5)),
    (16000, 4000, TimeWindow(0.5, 3.0)),
    (16000, None, None),
    (22050, 30000, TimeWindow(1.25, None)),
    (96000, 50000, TimeWindow(1.0, 3.5)),
])
def test_sound_file_in_blocks_gives_the_whole_file_samples(files, monkeypatch, target_rate, max_samples, window):
    monkeypatch.setattr(media_module, "BLOCK_SAMPLES", 10007)  # blocks not aligned with anything
    waveform = load_audio(files["wav_8ch"], target_rate, max_samples, window)
    reference = whole_file_audio(files["wav_8ch"], target_rate, max_samples, window)
    assert waveform.shape == reference.shape and waveform.dtype == np.float32
    if target_rate == 96000:  # no resampling: the mix-down block by block is the same arithmetic
        np.testing.assert_array_equal(waveform, reference)
    else:
        # Measured identical; soxr is given RESAMPLE_MARGIN_SECONDS past the crop instead of the whole rest, and a
        # different input length may round its float32 arithmetic differently (1e-6 is ~8 ulp at amplitude 1).
        np.testing.assert_allclose(waveform, reference, rtol=0, atol=1e-6)


def test_sound_file_is_read_only_up_to_the_crop(files, monkeypatch):
    read = []
    blocks = media_module._SoundFile.blocks

    def counting_blocks(self, first, stop):
        for position, block in blocks(self, first, stop):
            read.append((position, len(block)))
            yield position, block

    monkeypatch.setattr(media_module._SoundFile, "blocks", counting_blocks)
    monkeypatch.setattr(media_module, "BLOCK_SAMPLES", 4096)
    waveform = load_audio(files["wav_8ch"], 16000, max_samples=1600, window=TimeWindow(2.0, None))
    assert len(waveform) == 1600
    needed = math.ceil((1600 / 16000 + media_module.RESAMPLE_MARGIN_SECONDS) * 96000)  # 33,600 of the 192,000 left
    assert read[0][0] == 2 * 96000  # the first block read is the window's start
    assert sum(length for _, length in read) == needed


# ----------------------------------------------------------------------------- windows of a long video


def count_calls(monkeypatch, owner, name):
    calls = []
    original = getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


@pytest.mark.parametrize("window", [TimeWindow(8.0, 9.5), TimeWindow(10.0, None), TimeWindow(3.9, 4.2)])
def test_sound_track_window_is_decoded_from_a_seek(files, monkeypatch, window):
    decoded = count_calls(monkeypatch, media_module, "_frame_to_mono")
    seeking = load_audio(files["video"], 16000, window=window)
    decoded_after_seek = len(decoded)
    monkeypatch.setattr(media_module, "SEEK_AFTER_SECONDS", 1e9)
    del decoded[:]
    straight = load_audio(files["video"], 16000, window=window)
    assert len(seeking) == round(((window.end or 12.0) - window.start) * 16000)
    np.testing.assert_array_equal(seeking, straight)  # a pure tone: AAC decodes the same after a seek
    # 1024 samples a frame at 48 kHz: the window and the seek margin (1 s) are all that is decoded after a seek
    assert decoded_after_seek <= math.ceil(((window.end or 12.0) - window.start + 1.0) * 48000 / 1024) + 2
    assert decoded_after_seek < len(decoded)


def test_sound_track_window_past_the_end_decodes_nothing(files, monkeypatch):
    monkeypatch.setattr(media_module._SoundTrack, "blocks", None)  # the declared duration is enough to refuse it
    with pytest.raises(MediaError, match=r"\[13, 14\] s starts past the end of the audio \(12 s\)"):
        load_audio(files["video"], 16000, window=TimeWindow(13.0, 14.0))


def test_video_window_deep_in_a_file_is_decoded_from_a_seek(files, monkeypatch):
    def refused(*args):
        raise AssertionError("decoded from the start, or a pass over the whole file")

    monkeypatch.setattr(media_module._Video, "_decode_from_start", refused)
    monkeypatch.setattr(media_module, "_packet_timestamps", refused)  # the MP4's index gives the frame timestamps
    window = TimeWindow(9.0, 10.5)
    frames = read_video_frames(files["video"], 8, window=window)
    for frame, index in zip(frames, choose_frames(96, 8.0, 8, "uniform", window)):
        assert np.abs(frame[16, 16].astype(int) - frame_colour(index)).max() <= 12, index


def test_video_without_a_full_index_is_read_by_its_packets(tmp_path):
    # Matroska indexes keyframes only: the frame timestamps come from a pass over the packets
    path = str(tmp_path / "long.mkv")
    with av.open(path, "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width = stream.height = 32
        stream.pix_fmt, stream.options = "yuv420p", {"g": "8", "qscale": "2"}
        for index in range(96):
            picture = np.full((32, 32, 3), frame_colour(index), np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        container.mux(stream.encode())
    with media_module._Video(path, 2) as video:
        assert video._indexed_timestamps() is None
    window = TimeWindow(9.0, 10.5)
    frames = read_video_frames(path, 8, window=window)
    for frame, index in zip(frames, choose_frames(96, 8.0, 8, "uniform", window)):
        assert np.abs(frame[16, 16].astype(int) - frame_colour(index)).max() <= 12, index


# ----------------------------------------------------------------------------- media that cannot be speech or video


@pytest.mark.parametrize("key, rate", [("wav_1hz", "1"), ("wav_1mhz", "1,000,000")])
def test_implausible_sampling_rate_is_refused(files, key, rate):
    with pytest.raises(MediaError) as caught:
        load_audio(files[key], 16000)
    assert str(caught.value) == (f"file {files[key]}: the sampling rate {rate} Hz cannot be speech (allowed: 4,000 "
                                 "to 768,000 Hz)")


def test_implausible_in_memory_sampling_rate_is_refused():
    with pytest.raises(MediaError, match=r"<in-memory audio>: the sampling rate 100 Hz cannot be speech"):
        load_audio((np.zeros(400, np.float32), 100), 16000)
    assert len(load_audio((np.zeros(800, np.float32), 8000), 16000)) == 1600  # telephone speech is fine


def test_implausible_video_properties_are_refused(files):
    with pytest.raises(MediaError) as caught:
        read_video_frames(files["video_5000fps"])
    assert str(caught.value) == (f"file {files['video_5000fps']}: the frame rate 5000 fps cannot be a video (allowed: "
                                 "above 0, at most 1,000 fps)")
    for width, height in [(0, 240), (320, 0), (10000, 240)]:
        with pytest.raises(MediaError, match=rf"file v.mp4: the frame size {width} x {height} cannot be a video"):
            check_video_properties("v.mp4", 25.0, width, height)
