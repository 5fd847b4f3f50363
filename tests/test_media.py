"""Audio/video loading of the MAGTKD processor (processors/media.py), on generated media."""

import numpy as np
import pytest
import torch

from magtkd_hf.processors import MagtkdProcessor
from magtkd_hf.processors.media import (
    MediaError,
    TimeWindow,
    frames_to_pixel_values_processor,
    frames_to_pixel_values_torch,
    load_audio,
    read_sound_track,
    read_video_frames,
    released_frame_indices,
    uniform_frame_indices,
    window_frame_range,
)

from media_fixtures import frame_colour, sine, write_mp4, write_wav

# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    return {
        # 16 frames at 8 fps (2 s) + a 3.000 s AAC 48 kHz stereo 1 kHz tone
        "clip": str(write_mp4(folder / "clip.mp4", num_frames=16, fps=8, audio_seconds=3.0, tone_hz=1000.0)),
        "silent_clip": str(write_mp4(folder / "silent.mp4", num_frames=8, fps=8)),
        "long_clip": str(write_mp4(folder / "long.mp4", num_frames=48, fps=8, width=32, height=32)),
        "wav_22k": str(write_wav(folder / "tone22k.wav", sine(1000.0, 1.0, 22050), 22050)),
        "garbage_mp4": _garbage(folder / "garbage.mp4"),
        "garbage_wav": _garbage(folder / "garbage.wav"),
        "missing": str(folder / "missing.mp4"),
    }


def _garbage(path):
    path.write_bytes(b"this is not a media file" * 10)
    return str(path)


def peak_frequency(waveform, rate):
    spectrum = np.abs(np.fft.rfft(waveform * np.hanning(len(waveform))))
    return np.fft.rfftfreq(len(waveform), 1 / rate)[spectrum.argmax()]


# ----------------------------------------------------------------------------- audio


def test_resampling_keeps_tone_frequency_and_length(media):
    waveform = load_audio(media["wav_22k"], 16000)
    assert waveform.dtype == np.float32
    assert abs(len(waveform) - 16000) <= 1  # 1 s of 22.05 kHz -> 1 s of 16 kHz
    assert abs(peak_frequency(waveform, 16000) - 1000.0) < 2.0


def test_resampler_rejects_aliasing():
    # a 10 kHz tone cannot exist at 16 kHz; a relabelled rate or linear interpolation would
    # leave an alias at 6 kHz
    waveform = load_audio((sine(10000.0, 1.0, 44100), 44100), 16000)
    original_rms = np.sqrt(0.5) * 0.5
    level_db = 20 * np.log10(np.sqrt(np.mean(waveform[1000:-1000] ** 2)) / original_rms + 1e-12)
    assert level_db < -60


def test_mp4_sound_track_keeps_declared_duration(media):
    waveform, rate = read_sound_track(media["clip"])
    assert rate == 48000
    assert len(waveform) == 3 * 48000  # AAC decodes to 3.008 s; the stream says 3.000 s
    resampled = load_audio(media["clip"], 16000)
    assert len(resampled) == 48000
    assert abs(peak_frequency(resampled, 16000) - 1000.0) < 2.0


@pytest.mark.parametrize("layout", ["channels_first", "channels_last", "mapping"])
def test_array_inputs_are_mixed_down(layout):
    left, right = sine(440.0, 0.5, 16000), np.zeros(8000, dtype=np.float32)
    if layout == "channels_first":
        source = (np.stack([left, right]), 16000)
    elif layout == "channels_last":
        source = (np.stack([left, right], axis=1), 16000)
    else:
        source = {"array": np.stack([left, right]), "sampling_rate": 16000}
    np.testing.assert_allclose(load_audio(source, 16000), (left + right) / 2, atol=1e-6)


def test_undecoded_datasets_audio_mapping_is_a_path(media):
    waveform = load_audio({"path": media["wav_22k"], "bytes": None}, 16000)
    assert abs(len(waveform) - 16000) <= 1


def test_crop_keeps_the_beginning():
    samples = np.arange(1000, dtype=np.float32)
    np.testing.assert_array_equal(load_audio((samples, 16000), 16000, max_samples=300), samples[:300])


def test_sound_track_time_window(media):
    waveform = load_audio(media["clip"], 16000, window=TimeWindow(1.0, 1.5))
    assert len(waveform) == 8000


# ----------------------------------------------------------------------------- frame choice


def test_uniform_indices():
    assert uniform_frame_indices(16, 8) == [1, 3, 5, 7, 9, 11, 13, 15]
    assert uniform_frame_indices(8, 8) == list(range(8))
    assert uniform_frame_indices(4, 8) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert uniform_frame_indices(0, 8) == []


def test_released_indices():
    # step = L // 8, 1-based multiples of step, first 8 of them
    assert released_frame_indices(20, 8) == [1, 3, 5, 7, 9, 11, 13, 15]
    assert released_frame_indices(30, 8) == [2, 5, 8, 11, 14, 17, 20, 23]
    assert released_frame_indices(8, 8) == list(range(8))
    assert released_frame_indices(5, 8) == [0, 1, 2, 3, 4, 4, 4, 4]  # repeat the last
    assert released_frame_indices(0, 8) == []


def test_window_frame_range_follows_released_rule():
    # 1-based frame number p kept when start*fps <= p <= end*fps
    assert window_frame_range(48, 8.0, TimeWindow(1.0, 4.0)) == range(7, 32)
    assert window_frame_range(48, 8.0, TimeWindow(0.0, 100.0)) == range(0, 48)
    assert len(window_frame_range(48, 8.0, TimeWindow(10.0, 11.0))) == 0


# ----------------------------------------------------------------------------- video decoding


def _assert_colours(frames, indices, tolerance=12):
    for frame, index in zip(frames, indices):
        centre = frame[frame.shape[0] // 2, frame.shape[1] // 2].astype(int)
        assert np.all(np.abs(centre - np.array(frame_colour(index))) <= tolerance), (index, centre)


def test_uniform_frames_in_rgb(media):
    frames = read_video_frames(media["clip"], num_frames=8)
    assert frames.shape == (8, 48, 64, 3) and frames.dtype == np.uint8
    _assert_colours(frames, [1, 3, 5, 7, 9, 11, 13, 15])  # frame 1 is pure green, 2 pure blue: RGB order


def test_released_frame_selection(media):
    frames = read_video_frames(media["clip"], num_frames=8, selection="released")
    _assert_colours(frames, released_frame_indices(16, 8))


def test_time_window_frames(media):
    frames = read_video_frames(media["long_clip"], num_frames=8, window=TimeWindow(2.0, 3.0).widened(1.0))
    expected = [7 + i for i in uniform_frame_indices(25, 8)]
    _assert_colours(frames, expected)


def test_empty_window_gives_black_frames(media):
    frames = read_video_frames(media["long_clip"], num_frames=8, window=TimeWindow(50.0, 51.0), empty_frame_size=(224, 224))
    assert frames.shape == (8, 224, 224, 3) and frames.max() == 0


def test_torch_fast_path_matches_pil_processor():
    image_processor = MagtkdProcessor.default_image_processor()
    rng = np.random.default_rng(0)
    for height, width in [(240, 320), (300, 200), (48, 64)]:
        y, x = np.mgrid[0:height, 0:width]
        base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height) + 60], -1)
        frames = np.stack(
            [np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8) for _ in range(8)]
        )
        fast = frames_to_pixel_values_torch(frames, image_processor)
        reference = frames_to_pixel_values_processor(frames, image_processor)
        assert fast.shape == reference.shape == (8, 3, 224, 224)
        difference = (fast - reference).abs()
        # rounding of the uint8 resize: almost all within 0.02 (one grey level / std), a handful
        # of pixels two levels off
        assert (difference > 0.02).float().mean() < 1e-5
        assert difference.max() <= 2 / 255 / 0.224 + 1e-4


def test_imagenet_normalisation_of_a_colour(media):
    frames = read_video_frames(media["clip"], num_frames=8)
    pixels = frames_to_pixel_values_torch(frames, MagtkdProcessor.default_image_processor())
    # frame 1 is green: R channel ~ (0 - 0.485) / 0.229, G ~ (1 - 0.456) / 0.224
    centre = pixels[0, :, 112, 112]
    assert torch.allclose(centre, torch.tensor([-0.485 / 0.229, 0.544 / 0.224, -0.406 / 0.225]), atol=0.25)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "call, key, reason",
    [
        (lambda p: load_audio(p, 16000), "missing", "no such file"),
        (lambda p: read_video_frames(p), "missing", "no such file"),
        (lambda p: load_audio(p, 16000), "garbage_mp4", "unreadable"),
        (lambda p: load_audio(p, 16000), "garbage_wav", "unreadable"),
        (lambda p: read_video_frames(p), "garbage_mp4", "unreadable"),
        (lambda p: load_audio(p, 16000), "silent_clip", "no audio track"),
    ],
)
def test_media_errors_name_the_file(media, call, key, reason):
    with pytest.raises(MediaError) as caught:
        call(media[key])
    assert media[key] in str(caught.value) and reason in str(caught.value)
