"""The frame cache (processors/frame_cache.py, `magtkd-hf cache-frames`): the same pixel values as decoding, keys that
miss when a file or a setting changes, damaged files named, DataLoader workers, and a video stage trained with and
without it giving the same model."""

import json
import logging
import os
import pickle

import datasets
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from magtkd_hf.apps import cli as cli_module
from magtkd_hf.apps.tiny import write_tiny_components
from magtkd_hf.datasets_scripts.synthetic import write_scenes_mp4
from magtkd_hf.processors import FrameCache, FrameCacheError, MagtkdProcessor, TimeWindow, build_frame_cache
from magtkd_hf.processors import model_inputs
from magtkd_hf.processors.media_pixels import resize_and_crop
from magtkd_hf.training import StageInputs, TrainingConfig, run_stage
from magtkd_hf.training.data import UtteranceCollator, UtteranceItems

from media_fixtures import write_mp4
from tiny_magtkd import TEXTS, tiny_processor, write_conversation_rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    """Two MELD-like conversations (one clip per utterance, 40 x 32) and an IEMOCAP-like one (a dialogue video, each
    utterance a time window of it)."""
    folder = tmp_path_factory.mktemp("clips")
    meld = write_conversation_rows(folder, lengths=(3, 2))
    dialogue = write_scenes_mp4(folder / "dialogue.mp4", [((255, 0, 0), 300.0), ((0, 0, 255), 500.0)], size=48)
    iemocap = {
        "dialogue_id": "Ses01F", "utterance_ids": ["u0", "u1"], "speakers": ["F", "M"], "texts": TEXTS[:2],
        "labels": [0, 1], "video_paths": [str(dialogue)] * 2, "start_times": [1.0, 4.0], "end_times": [2.0, 5.0],
    }
    return [*meld, iemocap]


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


@pytest.fixture(scope="module")
def cache(rows, processor, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cache") / "frame-cache"
    summary = build_frame_cache(rows, processor, folder, window_choices=("auto",), progress=False)
    assert summary["failed"] == [] and summary["clips"] == summary["added"] == 7  # 5 clips, 2 windows
    return FrameCache(folder)


def _no_decoding(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a cached clip was decoded")

    monkeypatch.setattr(model_inputs, "read_video_frames", refuse)


def test_cached_pixel_values_equal_decoded_ones(rows, processor, cache, monkeypatch):
    decoded = processor(rows, modalities=("video",))
    assert cache.matches(processor) and len(cache) == 7
    _no_decoding(monkeypatch)
    cached = processor.with_frame_cache(cache)(rows, modalities=("video",))
    assert processor.frame_cache is None  # the copy reads the cache, the processor is left as it was
    assert cached["pixel_values"].shape == decoded["pixel_values"].shape == (7, 8, 3, 32, 32)
    assert torch.equal(cached["has_video"], decoded["has_video"])
    assert (cached["pixel_values"] - decoded["pixel_values"]).abs().max().item() == 0.0
    frames = cache.lookup(rows[2]["video_paths"][0], None)
    assert frames is None  # the dialogue video is cached by window only
    first = resize_and_crop(np.zeros((2, 48, 64, 3), np.uint8), processor.image_processor)
    assert first.dtype == torch.uint8 and first.shape == (2, 3, 32, 32)


def test_the_image_processor_backend_does_not_read_the_cache(rows, cache, monkeypatch):
    pil = tiny_processor(image_backend="image_processor")
    decoded = pil(rows[:1], modalities=("video",))["pixel_values"]
    monkeypatch.setattr(FrameCache, "lookup", lambda *args: pytest.fail("the PIL path read the cache"))
    assert torch.equal(pil.with_frame_cache(cache)(rows[:1], modalities=("video",))["pixel_values"], decoded)
    with pytest.raises(ValueError, match="torch image path"):
        build_frame_cache(rows, pil, cache.folder.parent / "pil-cache", progress=False)


def test_a_changed_file_or_changed_settings_is_a_miss(tmp_path, processor):
    clip = write_mp4(tmp_path / "clip.mp4", num_frames=8, width=40, height=32)
    row = {"dialogue_id": "0", "speakers": ["A"], "texts": ["hi"], "labels": [0], "video_paths": [str(clip)]}
    build_frame_cache([row], processor, tmp_path / "cache", progress=False)
    cache = FrameCache(tmp_path / "cache")
    assert cache.lookup(str(clip)) is not None and cache.lookup(str(tmp_path / "other.mp4")) is None
    # the same file under another name is the same clip (the key holds the resolved path)
    os.symlink(clip, tmp_path / "link.mp4")
    assert cache.lookup(str(tmp_path / "link.mp4")) is not None

    write_mp4(clip, num_frames=8, width=40, height=32, colours=[(9, 9, 9)])  # replaced: other bytes, size, mtime
    assert cache.lookup(str(clip)) is None
    fresh = processor(row, modalities=("video",))["pixel_values"]
    assert torch.equal(processor.with_frame_cache(cache)(row, modalities=("video",))["pixel_values"], fresh)
    stamp = clip.stat()
    assert build_frame_cache([row], processor, tmp_path / "cache", progress=False)["added"] == 1
    os.utime(clip, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))  # touched: same bytes, a miss all the same
    assert FrameCache(tmp_path / "cache").lookup(str(clip)) is None

    four = tiny_processor(num_frames=4)
    assert not cache.matches(four) and cache.differences(four) == ["num_frames"]
    assert four.with_frame_cache(cache)(row, modalities=("video",))["pixel_values"].shape == (1, 4, 3, 32, 32)
    summary = build_frame_cache([row], four, tmp_path / "cache", progress=False)
    assert summary["folder_state"] == "rebuilt" and summary["changed_settings"] == ["num_frames"]
    assert summary["clips"] == 1 and FrameCache(tmp_path / "cache").matches(four)


def test_a_window_is_part_of_the_key(rows, processor, cache):
    video = rows[2]["video_paths"][0]
    first, second = cache.lookup(video, TimeWindow(1.0, 2.0)), cache.lookup(video, TimeWindow(4.0, 5.0))
    assert first is not None and second is not None and not np.array_equal(first, second)
    assert cache.lookup(video, TimeWindow(1.0, 2.5)) is None


def test_damaged_cache_files_name_the_folder(tmp_path, rows, processor):
    folder = tmp_path / "cache"
    build_frame_cache(rows[:1], processor, folder, progress=False)
    cache = FrameCache(folder)
    clip = next((folder / "frames").glob("*.npy"))
    clip.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    damaged = rf"frame cache {folder}: the clip file frames/{clip.stem}.npy is damaged"
    with pytest.raises(FrameCacheError, match=damaged):
        [cache.lookup(video) for video in rows[0]["video_paths"]]
    (folder / "frame_cache.json").write_text("{not json")
    with pytest.raises(FrameCacheError, match=rf"frame cache {folder}: frame_cache.json is damaged"):
        FrameCache(folder)
    with pytest.raises(FrameCacheError, match="--rebuild"):
        build_frame_cache(rows[:1], processor, folder, progress=False)
    assert build_frame_cache(rows[:1], processor, folder, rebuild=True, progress=False)["clips"] == 3
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FrameCacheError, match="not a frame cache"):
        build_frame_cache(rows[:1], processor, tmp_path / "other", progress=False)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_the_cache_is_not_saved_and_survives_pickling_and_workers(tmp_path, rows, processor, cache):
    reader = processor.with_frame_cache(cache)
    reader.save_pretrained(str(tmp_path / "saved"))
    assert "frame_cache" not in (tmp_path / "saved" / "processor_config.json").read_text()
    assert MagtkdProcessor.from_pretrained(str(tmp_path / "saved")).frame_cache is None
    copied = pickle.loads(pickle.dumps(reader))
    assert isinstance(copied.frame_cache, FrameCache) and copied.frame_cache is not cache
    assert len(copied.frame_cache) == len(cache)

    items = UtteranceItems(rows[:2], "train")
    plain = [batch["pixel_values"] for batch in DataLoader(items, batch_size=2, collate_fn=UtteranceCollator(
        processor, "video"))]
    for context in ("fork", "spawn"):
        loader = DataLoader(items, batch_size=2, num_workers=2 if context == "fork" else 1,
                            multiprocessing_context=context, collate_fn=UtteranceCollator(reader, "video"))
        assert all(torch.equal(a, b["pixel_values"]) for a, b in zip(plain, loader, strict=True))


def _cli_with_cache_frames(monkeypatch):
    """The `magtkd-hf` entry point (`cache-frames` is one of its commands)."""
    return cli_module.main


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A saved DatasetDict of generated clips and tiny components (processor and encoders) saved as folders."""
    root = tmp_path_factory.mktemp("tiny_run")
    splits = {
        "train": write_conversation_rows(root / "clips", lengths=(3, 3, 2), seed=0),
        "validation": write_conversation_rows(root / "clips-dev", lengths=(2, 2), seed=3),
    }
    datasets.DatasetDict({name: datasets.Dataset.from_list(split) for name, split in splits.items()}).save_to_disk(
        str(root / "data"))
    paths = write_tiny_components(root / "components", TEXTS * 4)
    return root, paths


def _run_arguments(root, paths):
    return ["--data", str(root / "data"), "--processor", str(paths["processor"]),
            "--text-encoder", str(paths["text-encoder"]), "--audio-encoder", str(paths["audio-encoder"]),
            "--video-encoder", str(paths["video-encoder"])]


def test_the_cache_frames_command(tiny_run, tmp_path, monkeypatch, capsys):
    root, paths = tiny_run
    cli = _cli_with_cache_frames(monkeypatch)
    output = tmp_path / "run"
    assert cli(["cache-frames", "--output-dir", str(output), *_run_arguments(root, paths), "--num-workers", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"Frame cache: {output / 'frame-cache'} (new)" in printed
    assert "clips cached: 12 (12 decoded now, 0 already there, 0 failed)" in printed
    assert "bytes per clip: 24,576 of frames" in printed and "seconds:" in printed  # 8 x 3 x 32 x 32
    assert cli(["cache-frames", "--output-dir", str(output), *_run_arguments(root, paths), "--num-workers", "0"]) == 0
    assert "clips cached: 12 (0 decoded now, 12 already there, 0 failed)" in capsys.readouterr().out


def _video_stage(output, root, paths, **run):
    config = TrainingConfig(output_dir=str(output), recipe="meld", data=str(root / "data"),
                            processor=str(paths["processor"]), text_encoder=str(paths["text-encoder"]),
                            audio_encoder=str(paths["audio-encoder"]), video_encoder=str(paths["video-encoder"]),
                            cpu=True, overrides={"*": {"epochs": 2, "eval_batch_size": 8, "num_workers": 0}}, **run)
    return run_stage("video", config)


def _without_timings(value):
    if isinstance(value, dict):
        return {key: _without_timings(item) for key, item in value.items()
                if "seconds" not in key and key != "frame_cache"}
    if isinstance(value, list):
        return [_without_timings(item) for item in value]
    return value


def test_a_video_stage_with_the_cache_trains_the_same_model(tiny_run, tmp_path, monkeypatch):
    root, paths = tiny_run
    build_frame_cache([row for split in ("train", "validation") for row in datasets.load_from_disk(
        str(root / "data"))[split].to_list()], MagtkdProcessor.from_pretrained(str(paths["processor"])),
        tmp_path / "cached" / "frame-cache", window_choices=(False, "auto"), progress=False)
    without = _video_stage(tmp_path / "decoded", root, paths)
    _no_decoding(monkeypatch)
    with_cache = _video_stage(tmp_path / "cached", root, paths)
    assert with_cache["frame_cache"] == str(tmp_path / "cached" / "frame-cache") and "frame_cache" not in without
    assert _without_timings(with_cache) == _without_timings(without)
    weights = [load_file(str(tmp_path / run / "video" / "model.safetensors")) for run in ("decoded", "cached")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    assert not (tmp_path / "cached" / "video" / "frame-cache").exists()


def test_training_ignores_a_cache_of_other_settings_with_a_warning(tiny_run, tmp_path, caplog):
    root, paths = tiny_run
    rows = datasets.load_from_disk(str(root / "data"))["train"].to_list()
    build_frame_cache(rows, tiny_processor(num_frames=4), tmp_path / "frame-cache", progress=False)
    config = TrainingConfig(output_dir=str(tmp_path), data=str(root / "data"), processor=str(paths["processor"]))
    inputs = StageInputs(config)
    with caplog.at_level(logging.WARNING, logger="magtkd_hf.training.inputs"):
        processor = inputs.media_processor("video")
    assert processor.frame_cache is None and processor is inputs.processor()
    assert len(caplog.records) == 1 and "\n" not in caplog.records[0].getMessage()
    assert "num_frames differ" in caplog.records[0].getMessage() and "clips are decoded" in caplog.text
    none = StageInputs(TrainingConfig(output_dir=str(tmp_path), data=str(root / "data"), frame_cache="none"))
    assert none.frame_cache_folder() is None and none.frame_cache() is None
    missing = StageInputs(TrainingConfig(output_dir=str(tmp_path), frame_cache=str(tmp_path / "nowhere"),
                                         processor=str(paths["processor"])))
    with pytest.raises(FileNotFoundError, match="no frame cache there"):
        missing.frame_cache()
    assert StageInputs(TrainingConfig(output_dir=str(tmp_path / "fresh"))).frame_cache() is None


def test_the_frame_cache_is_a_train_option():
    parser = cli_module.build_parser()
    args = parser.parse_args(["train", "video", "--output-dir", "runs/x", "--frame-cache", "cache"])
    assert args.frame_cache == "cache"


def test_the_cache_frames_help_lists_its_options(monkeypatch, capsys):
    cli = _cli_with_cache_frames(monkeypatch)
    with pytest.raises(SystemExit):
        cli(["cache-frames", "--help"])
    printed = capsys.readouterr().out
    for option in ("--output-dir", "--data", "--processor", "--frame-cache", "--num-workers", "--rebuild"):
        assert option in printed


def test_extract_features_reads_the_run_cache(tiny_run, tmp_path, monkeypatch):
    from magtkd_hf.training.data import ConversationCollator

    root, paths = tiny_run
    rows = datasets.load_from_disk(str(root / "data"))["validation"].to_list()
    config = TrainingConfig(output_dir=str(tmp_path), data=str(root / "data"), processor=str(paths["processor"]))
    build_frame_cache(rows, StageInputs(config).processor(), tmp_path / "frame-cache", progress=False)
    inputs = StageInputs(config)
    assert inputs.media_processor("audio") is inputs.processor() and inputs.processor().frame_cache is None
    reader = inputs.media_processor("all")
    assert reader.frame_cache.folder == tmp_path / "frame-cache"
    items = list(enumerate(rows))
    decoded = ConversationCollator(inputs.processor())(items)["inputs"]
    _no_decoding(monkeypatch)
    cached = ConversationCollator(reader)(items)["inputs"]
    assert torch.equal(cached["pixel_values"], decoded["pixel_values"])
