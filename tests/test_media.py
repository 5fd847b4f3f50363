"""Audio/video loading of the MAGTKD processor (processors/media.py), on generated media."""

import itertools
import logging
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from magtkd_hf.processors import MagtkdProcessor
from magtkd_hf.processors import media as media_module
from magtkd_hf.processors.media import (
    MediaError,
    TimeWindow,
    choose_frames,
    frames_to_pixel_values_processor,
    frames_to_pixel_values_torch,
    load_audio,
    read_video_frames,
    released_frame_indices,
    released_iemocap_frame_indices,
    uniform_frame_indices,
    window_frame_range,
)

from media_fixtures import frame_colour, sine, write_mp4, write_wav

# 216 colours 51 levels apart: after H.264 / MPEG-4 (within ~10) each frame's index is known
PALETTE = list(itertools.product((0, 51, 102, 153, 204, 255), repeat=3))
NTSC = Fraction(30000, 1001)

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
        # 200 uniquely coloured frames (6.67 s), keyframe every 30 frames
        "palette_2997": str(write_mp4(folder / "p2997.mp4", num_frames=200, fps=NTSC, width=32, height=32,
                                      colours=PALETTE, keyframe_interval=30)),
        "palette_30": str(write_mp4(folder / "p30.mp4", num_frames=200, fps=30, width=32, height=32,
                                    colours=PALETTE, keyframe_interval=30)),
        # MPEG-4 part 2 in AVI (IEMOCAP's DivX layout), without and with B-frames
        "avi": write_avi(folder / "dialog.avi", 200, NTSC, b_frames=0),
        "avi_b_frames": write_avi(folder / "dialog_b.avi", 200, NTSC, b_frames=2),
    }


def write_avi(path, num_frames, fps, b_frames=0, size=32):
    """An AVI with an MPEG-4 part 2 track (as IEMOCAP's DivX videos), frame i in PALETTE[i]."""
    container = av.open(str(path), mode="w")
    stream = container.add_stream("mpeg4", rate=fps)
    stream.width = stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.options = {"g": "30", "qscale": "2", "bf": str(b_frames)}
    for index in range(num_frames):
        image = np.empty((size, size, 3), dtype=np.uint8)
        image[:] = PALETTE[index]
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return str(path)


def palette_indices(frames):
    """The frame index each decoded frame shows (nearest PALETTE colour of its centre pixel)."""
    palette = np.array(PALETTE)
    found = []
    for frame in frames:
        centre = frame[frame.shape[0] // 2, frame.shape[1] // 2].astype(int)
        distance = np.abs(palette - centre).max(axis=1)
        assert distance.min() <= 20, centre
        found.append(int(distance.argmin()))
    return found


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
    assert len(load_audio(media["clip"], 48000)) == 3 * 48000  # AAC decodes to 3.008 s; the stream says 3.000 s
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


def test_audio_window_past_the_end_is_an_error(media):
    with pytest.raises(MediaError) as caught:
        load_audio(media["clip"], 16000, window=TimeWindow(3.5, 4.0))  # the track is 3 s long
    message = str(caught.value)
    assert media["clip"] in message and "[3.5, 4] s" in message and "starts past the end" in message
    assert "3 s" in message
    with pytest.raises(MediaError, match="starts past the end"):
        load_audio((np.zeros(16000, np.float32), 16000), 16000, window=TimeWindow(1.0, 2.0))  # start == length


def test_audio_window_cut_at_the_end_is_logged(media, caplog):
    with caplog.at_level(logging.WARNING, logger=media_module.__name__):
        waveform = load_audio(media["clip"], 16000, window=TimeWindow(2.5, 4.0), context="conversation 'd' (#0), utterance 'u' (#1)")
    assert len(waveform) == 8000  # 2.5 s .. 3.0 s
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "conversation 'd' (#0), utterance 'u' (#1)" in message and "[2.5, 4] s" in message
    assert "3 s" in message and "cut at the end" in message


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


def test_window_without_frames_gives_black_frames(media):
    # at 8 fps frames 8 and 9 (1-based) lie at 1.0 s and 1.125 s: none inside [1.01, 1.1]
    frames = read_video_frames(media["long_clip"], num_frames=8, window=TimeWindow(1.01, 1.1), empty_frame_size=(224, 224))
    assert frames.shape == (8, 224, 224, 3) and frames.max() == 0


@pytest.mark.parametrize("selection", ["uniform", "released"])
def test_video_window_past_the_end_is_an_error(media, selection):
    # long_clip: 48 frames at 8 fps = 6 s; the utterance window starts after it (widened, it would not)
    with pytest.raises(MediaError) as caught:
        read_video_frames(media["long_clip"], selection=selection, window=TimeWindow(6.5, 8.0), padding=1.0)
    message = str(caught.value)
    assert media["long_clip"] in message and "[6.5, 8] s" in message and "starts past the end of the video" in message
    assert "6 s, 48 frames at 8 fps" in message


def test_video_window_cut_at_the_end_is_logged(media, caplog):
    with caplog.at_level(logging.WARNING, logger=media_module.__name__):
        frames = read_video_frames(media["long_clip"], window=TimeWindow(5.0, 7.0), padding=1.0, context="conversation #0, utterance #2")
    assert frames.shape[0] == 8
    _assert_colours(frames, [31 + i for i in uniform_frame_indices(17, 8)])  # frames 32..48 (1-based)
    message = caplog.records[-1].getMessage()
    assert "conversation #0, utterance #2" in message and "[5, 7] s" in message and "6 s" in message


# ----------------------------------------------------------------------------- released IEMOCAP frame rule


def released_iemocap_loop(num_frames_in_file, fps, start, end, num_frames=8):
    """The released IEMOCAP loader's rule as the spec states it, frame by frame: read the frames in
    order; the frame just read is number `position` (1-based); inside [t0 * fps, t1 * fps] it
    increments a counter and is kept when counter % step == 0; step from the float window."""
    t0, t1 = max(start - 1, 0), end + 1
    step = fps * (t1 - t0) // num_frames
    kept, counter = [], 0
    for position in range(1, num_frames_in_file + 1):
        if t0 * fps <= position <= t1 * fps:
            counter += 1
            if counter % step == 0:
                kept.append(position - 1)
    kept = kept[:num_frames]
    return kept + kept[-1:] * (num_frames - len(kept))


@pytest.mark.parametrize("fps", [float(NTSC), 30.0, 25.0])
def test_released_iemocap_rule_matches_a_direct_computation(fps):
    rng = np.random.default_rng(0)
    count = 600  # 20 s at 30 fps
    windows = [(0.0, 0.4), (0.3, 1.7), (0.9999, 1.0001), (5.0, 5.5), (18.5, 19.9), (19.0, 21.0), (19.8, 25.0)]
    for _ in range(400):
        start = round(float(rng.uniform(0, count / fps - 0.2)), 4)  # IEMOCAP gives 4 decimals
        windows.append((start, round(start + float(rng.uniform(0.2, 12.0)), 4)))
    for start, end in windows:
        expected = released_iemocap_loop(count, fps, start, end)
        assert released_iemocap_frame_indices(count, fps, TimeWindow(start, end).widened(1.0)) == expected, (start, end)


def test_released_iemocap_rule_differs_from_counting_frames():
    # 29.97 fps, utterance [2.1, 4.6] s: t0 = 1.1, t1 = 5.6; fps * 4.5 = 134.87 -> step 16; the window
    # holds frames 33..167 (135 frames; 135 // 8 = 16 too) but when cut at the video's end (100 frames)
    # the released rule keeps its step of 16: frames 48, 64, 80, 96, then the last repeated
    fps = float(NTSC)
    window = TimeWindow(2.1, 4.6).widened(1.0)
    assert released_iemocap_frame_indices(100, fps, window) == [47, 63, 79, 95, 95, 95, 95, 95]
    counted = window_frame_range(100, fps, window)  # the MELD rule over the clipped window: step 68 // 8 = 8
    assert [counted[i] for i in released_frame_indices(len(counted), 8)] != released_iemocap_frame_indices(100, fps, window)
    # [0.95, 2.0]: t0 = max(-0.05, 0) = 0, t1 = 3.0; fps * 3 = 89.91 -> step 11, from frame 1 on
    assert released_iemocap_frame_indices(300, fps, TimeWindow(0.95, 2.0).widened(1.0)) == [10, 21, 32, 43, 54, 65, 76, 87]


def test_released_iemocap_rule_errors():
    with pytest.raises(ValueError, match="no step"):
        released_iemocap_frame_indices(100, 2.0, TimeWindow(0.0, 3.0))  # 6 frame periods < 8
    # cut at the end with fewer frames than one step: nothing kept
    assert released_iemocap_frame_indices(100, 10.0, TimeWindow(9.5, 20.0)) == []


@pytest.mark.parametrize("key, fps", [("palette_2997", float(NTSC)), ("palette_30", 30.0), ("avi", float(NTSC))])
def test_released_iemocap_frames_decoded(media, key, fps):
    path = media[key]
    # 200 frames: 6.67 s at 29.97 fps, 6.67 s at 30 fps; windows at the start, inside, past the
    # seek threshold (decoded after a seek), and cut at the end
    for start, end in [(0.2, 1.5), (1.0, 3.0), (2.1, 3.4), (4.4, 5.2), (5.0, 6.6), (5.5, 7.5)]:
        expected = released_iemocap_loop(200, fps, start, end)
        frames = read_video_frames(path, selection="released", window=TimeWindow(start, end), padding=1.0)
        assert palette_indices(frames) == expected, (key, start, end)


# ----------------------------------------------------------------------------- an independent decoder agrees


def decord_frames(path, selection="uniform", window=None):
    """The same frame choice decoded by decord's `get_batch` (it seeks, and counts frames by packets)."""
    import decord

    reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=2)
    return reader.get_batch(choose_frames(len(reader), float(reader.get_avg_fps()), 8, selection, window)).asnumpy()


@pytest.mark.parametrize("key", ["clip", "palette_2997", "palette_30", "avi"])
@pytest.mark.parametrize("selection", ["uniform", "released"])
def test_pyav_and_decord_give_the_same_frames(media, key, selection):
    for window in [None, TimeWindow(0.5, 1.0), TimeWindow(4.5, 5.0)]:
        if key == "clip" and window is not None and window.start > 1:
            continue
        frames = read_video_frames(media[key], selection=selection, window=window, padding=1.0)
        reference = decord_frames(media[key], selection, None if window is None else window.widened(1.0))
        assert frames.shape == reference.shape
        assert np.array_equal(frames, reference), (key, selection, window)  # measured: identical


@pytest.mark.parametrize("selection", ["uniform", "released"])
def test_b_frame_avi_gives_the_right_frames(media, selection):
    # (decord returns other frames on this file, from the start and after seeking)
    for window in [None, TimeWindow(0.5, 1.0), TimeWindow(4.2, 5.1)]:
        frames = read_video_frames(media["avi_b_frames"], selection=selection, window=window, padding=1.0)
        widened = None if window is None else window.widened(1.0)
        assert palette_indices(frames) == choose_frames(200, float(NTSC), 8, selection, widened)


def test_file_with_fewer_frames_than_its_header(media, tmp_path, caplog):
    # the first 60 % of the AVI: its header still says 200 frames, 99 can be decoded
    cut = tmp_path / "cut.avi"
    data = open(media["avi"], "rb").read()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with caplog.at_level(logging.WARNING, logger=media_module.__name__):
        frames = read_video_frames(str(cut))
    decodable = sum(1 for _ in av.open(str(cut)).decode(video=0))
    assert f"{decodable} decodable" in caplog.text
    assert palette_indices(frames) == uniform_frame_indices(decodable, 8)
    assert np.array_equal(frames, decord_frames(str(cut)))  # decord counts packets
    window = TimeWindow(2.0, 3.0)
    frames = read_video_frames(str(cut), selection="released", window=window, padding=1.0)
    assert palette_indices(frames) == released_iemocap_frame_indices(decodable, float(NTSC), window.widened(1.0))
    with pytest.raises(MediaError, match=rf"starts past the end of the video \(.* s, {decodable} frames"):
        read_video_frames(str(cut), window=TimeWindow(4.0, 5.0), padding=1.0)


@pytest.mark.parametrize("key", ["palette_2997", "avi", "avi_b_frames"])
def test_seeking_gives_the_frames_of_decoding_from_the_start(media, key, monkeypatch):
    fps = float(NTSC)
    windows = [TimeWindow(4.2, 5.1), TimeWindow(5.9, 6.6)]  # first kept frame past SEEK_AFTER_SECONDS
    seeking = [read_video_frames(media[key], window=w, padding=1.0) for w in windows]
    monkeypatch.setattr(media_module, "SEEK_AFTER_SECONDS", 1e9)
    straight = [read_video_frames(media[key], window=w, padding=1.0) for w in windows]
    for window, a, b in zip(windows, seeking, straight):
        assert np.array_equal(a, b)
        expected = choose_frames(200, fps, 8, "uniform", window.widened(1.0))
        assert palette_indices(a) == expected


@pytest.mark.parametrize("key", ["palette_2997", "palette_30", "avi", "avi_b_frames", "long_clip"])
def test_indexed_timestamps_are_the_packet_timestamps(media, key):
    with media_module._Video(media[key], 2) as video:
        assert tuple(video._indexed_timestamps()) == media_module._packet_timestamps(media[key])


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
