"""Building a frame cache (`processors.frame_cache`): decode the clips of a dataset's rows in DataLoader workers and
write their kept frames into Arrow shards, committed one at a time (an interrupted build keeps what it committed)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from .conversation import normalise_input
from .frame_cache import (
    _BATCH_ROWS,
    DEFAULT_SHARD_BYTES,
    FORMAT_VERSION,
    METADATA_FILE,
    SHARDS_FOLDER,
    FrameCache,
    FrameCacheError,
    _arrow_features,
    clip_key,
    frame_settings,
    open_frame_cache,
    read_metadata,
    setting_differences,
    settings_fingerprint,
)
from .media_common import TimeWindow
from .model_inputs import decode_video_frames, resized_frames


# ---------------------------------------------------------------------- writing


def _write_json_atomically(path: Path, value) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(value, indent=2), encoding="utf-8")
    os.replace(temporary, path)


class FrameCacheWriter:
    """Appends clips to a cache folder, one Arrow shard at a time; `frame_cache.json` lists only complete shards, so
    an interrupted build keeps what it committed (a later build adds the rest).

    Args:
        folder: the cache folder (prepared by `prepare_cache_folder`).
        metadata: its current metadata (`prepare_cache_folder`'s).
        shard_bytes: commit a shard once it holds this many frame bytes.
    """

    def __init__(self, folder: str | Path, metadata: dict, shard_bytes: int = DEFAULT_SHARD_BYTES):
        self.folder, self.metadata, self.shard_bytes = Path(folder), metadata, int(shard_bytes)
        self._schema = _arrow_features().arrow_schema
        self._rows: list[tuple[str, str, list[int], bytes]] = []
        self._writer = self._sink = self._name = None
        self._bytes = self._clips = 0

    def add(self, key: str, path: str, frames: np.ndarray) -> None:
        """Add one clip's resized frames (K, 3, h, w) uint8."""
        frames = np.ascontiguousarray(frames, dtype=np.uint8)
        if frames.ndim != 4:
            raise ValueError(f"frames must be (K, 3, h, w), got shape {frames.shape}")
        self._rows.append((key, path, [int(n) for n in frames.shape], frames.tobytes()))
        self._bytes += frames.nbytes
        self._clips += 1
        if len(self._rows) >= _BATCH_ROWS:
            self._write_rows()
        if self._bytes >= self.shard_bytes:
            self.commit()

    def _write_rows(self) -> None:
        import pyarrow as pa

        if not self._rows:
            return
        if self._writer is None:
            (self.folder / SHARDS_FOLDER).mkdir(parents=True, exist_ok=True)
            self._name = f"{SHARDS_FOLDER}/{_next_shard_number(self.folder, self.metadata):05d}.arrow"
            self._sink = pa.OSFile(str(self.folder / (self._name + ".partial")), "wb")
            self._writer = pa.ipc.new_stream(self._sink, self._schema)
        keys, paths, shapes, frames = zip(*self._rows)
        self._writer.write_batch(pa.record_batch([
            pa.array(keys, pa.string()), pa.array(paths, pa.string()),
            pa.array(shapes, pa.list_(pa.int32())), pa.array(frames, pa.large_binary()),
        ], schema=self._schema))
        self._rows = []

    def commit(self) -> None:
        """Close the open shard and list it in `frame_cache.json`."""
        self._write_rows()
        if self._writer is None:
            return
        self._writer.close()
        self._sink.close()
        os.replace(self.folder / (self._name + ".partial"), self.folder / self._name)
        self.metadata["shards"].append(self._name)
        self.metadata["clips"] = int(self.metadata.get("clips", 0)) + self._clips
        self.metadata["frame_bytes"] = int(self.metadata.get("frame_bytes", 0)) + self._bytes
        _write_json_atomically(self.folder / METADATA_FILE, self.metadata)
        self._writer = self._sink = self._name = None
        self._bytes = self._clips = 0

    def abandon(self) -> None:
        """Drop the open shard (an interrupted build): the committed shards stay usable."""
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            (self.folder / (self._name + ".partial")).unlink(missing_ok=True)
        self._writer = self._sink = self._name = None
        self._rows, self._bytes, self._clips = [], 0, 0


def _next_shard_number(folder: Path, metadata: dict) -> int:
    used = [int(Path(name).stem) for name in metadata["shards"] if Path(name).stem.isdigit()]
    present = [int(path.name.split(".")[0]) for path in (folder / SHARDS_FOLDER).glob("*.arrow*")
               if path.name.split(".")[0].isdigit()]
    return max([-1, *used, *present]) + 1


def prepare_cache_folder(folder: str | Path, settings: Mapping, rebuild: bool = False) -> tuple[dict, str]:
    """The metadata to build on in `folder`, and what was done: "new", "kept" (a cache of the same settings: its
    clips are reused) or "rebuilt" (other settings, damaged, or `rebuild`: its shards are deleted). A folder that
    holds other files and no `frame_cache.json` is refused (nothing of it is deleted)."""
    folder = Path(folder)
    fingerprint = settings_fingerprint(settings)
    fresh = {"format": FORMAT_VERSION, "fingerprint": fingerprint, "settings": dict(settings), "shards": [],
             "clips": 0, "frame_bytes": 0}
    if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
        folder.mkdir(parents=True, exist_ok=True)
        _write_json_atomically(folder / METADATA_FILE, fresh)
        return fresh, "new"
    if not (folder / METADATA_FILE).is_file():
        raise FrameCacheError(folder, f"the folder is not empty and holds no {METADATA_FILE}: not a frame cache "
                                      "(choose another folder)")
    try:
        metadata = read_metadata(folder)
        damaged = False
    except FrameCacheError:
        if not rebuild:
            raise
        metadata, damaged = None, True
    if metadata is not None and metadata["fingerprint"] == fingerprint and not rebuild:
        _remove_unlisted_shards(folder, metadata)
        return metadata, "kept"
    shutil.rmtree(folder / SHARDS_FOLDER, ignore_errors=True)
    _write_json_atomically(folder / METADATA_FILE, fresh)
    return fresh, "rebuilt" if (damaged or rebuild or metadata is not None) else "new"


def _remove_unlisted_shards(folder: Path, metadata: dict) -> None:
    """Shard files of an interrupted build that `frame_cache.json` does not list."""
    listed = {folder / name for name in metadata["shards"]}
    for path in (folder / SHARDS_FOLDER).glob("*.arrow*"):
        if path not in listed:
            path.unlink()


# ---------------------------------------------------------------------- building


def cache_entries(rows: Iterable[Mapping], window_choices: Sequence, fingerprint: str):
    """The clips to cache for conversation rows (the `load_meld`/`load_iemocap` schema): {key: (video, window)} of
    every utterance with a video, under each of `window_choices` (the `use_time_window` values the stages call the
    processor with), and the problems found (rows that do not normalise, video files that cannot be read)."""
    entries, problems = {}, []
    for row in rows:
        for choice in dict.fromkeys(window_choices):
            try:
                conversations = normalise_input(row, choice)
            except ValueError as error:
                problems.append(str(error))
                continue
            for conversation in conversations:
                for utterance in conversation.utterances:
                    if not isinstance(utterance.video, str):
                        continue
                    key = clip_key(utterance.video, utterance.window, fingerprint)
                    if key is None:
                        problems.append(f"conversation {conversation.name}, utterance {utterance.name}: "
                                        f"file {utterance.video}: cannot be read")
                    else:
                        entries.setdefault(key, (utterance.video, utterance.window))
    return entries, list(dict.fromkeys(problems))


class _ClipFrames:
    """Map-style dataset of the clips to decode: item -> (position, resized frames (K, 3, h, w) uint8 tensor or
    None, error message or None)."""

    def __init__(self, processor, clips: Sequence[tuple[str, TimeWindow | None]]):
        self.processor, self.clips = processor, list(clips)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, position: int):
        video, window = self.clips[position]
        try:
            frames = decode_video_frames(self.processor, video, window)
            return position, resized_frames(frames, self.processor.image_processor), None
        except (ValueError, OSError) as error:  # MediaError names the file
            return position, None, str(error)


def build_frame_cache(
    rows: Iterable[Mapping],
    processor,
    folder: str | Path,
    *,
    window_choices: Sequence = ("auto",),
    num_workers: int = 0,
    rebuild: bool = False,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    progress: bool = True,
) -> dict:
    """Decode every clip of `rows` once with `processor`'s frame settings and store its resized frames in `folder`.

    Incremental: a cache of the same settings in `folder` keeps its clips and gets the missing ones (an interrupted
    build continues); one of other settings (or with `rebuild`) is emptied first. Clips that fail to decode are
    reported, not cached (training then decodes them and raises as it would without a cache).

    Args:
        rows: conversation rows of every split to cache.
        processor: the `MagtkdProcessor` a run uses (torch image path).
        window_choices: the `use_time_window` values the stages call the processor with (keys include the window).
        num_workers: DataLoader worker processes decoding clips (0: this process).
        shard_bytes: frame bytes per Arrow shard.
        progress: a tqdm bar on stderr.

    Returns: {"folder", "clips" (in the cache), "added", "reused", "failed" (messages), "frame_bytes_per_clip",
    "disk_bytes_per_clip", "seconds", "folder_state" ("new", "kept", "rebuilt"), "changed_settings" (the frame
    settings that differed from the cache found, which was then rebuilt)}.
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from .media_pixels import torch_path_supported

    started = time.perf_counter()
    if processor.image_backend != "torch" or not torch_path_supported(processor.image_processor):
        raise ValueError("the frame cache serves the torch image path (image_backend='torch' with a resize it "
                         f"implements); this processor uses image_backend={processor.image_backend!r}")
    folder = Path(folder)
    settings = frame_settings(processor)
    changed = _changed_settings(folder, settings)
    metadata, state = prepare_cache_folder(folder, settings, rebuild)
    existing = set(FrameCache(folder).keys()) if metadata["shards"] else set()
    entries, problems = cache_entries(rows, window_choices, metadata["fingerprint"])
    todo = [(key, clip) for key, clip in entries.items() if key not in existing]
    writer = FrameCacheWriter(folder, metadata, shard_bytes)
    loader = DataLoader(_ClipFrames(processor, [clip for _, clip in todo]), batch_size=None, shuffle=False,
                        num_workers=int(num_workers))
    bar = tqdm(total=len(todo), desc="caching frames", unit="clip", file=sys.stderr, disable=None if progress else True)
    added = 0
    try:
        for position, frames, error in loader:
            bar.update(1)
            if frames is None:
                problems.append(error)
                continue
            key, (video, _) = todo[position]
            writer.add(key, os.path.realpath(video), frames.numpy() if isinstance(frames, torch.Tensor) else frames)
            added += 1
        writer.commit()
    except BaseException:
        writer.abandon()
        raise
    finally:
        bar.close()
    summary = _summary(folder, writer.metadata, added, len(existing & set(entries)), problems, started, state)
    return {**summary, "changed_settings": changed}


def _changed_settings(folder: Path, settings: Mapping) -> list[str]:
    """The frame settings that differ from those of the cache already in `folder` (none there, or damaged: [])."""
    try:
        metadata = read_metadata(folder)
    except FrameCacheError:
        return []
    return [] if metadata is None else setting_differences(metadata["settings"], settings)


def cache_disk_bytes(folder: str | Path) -> int:
    """Bytes on disk of the cache's files (its metadata and listed shards)."""
    folder = Path(folder)
    metadata = read_metadata(folder) or {"shards": []}
    files = [folder / METADATA_FILE, *(folder / name for name in metadata["shards"])]
    return sum(path.stat().st_size for path in files if path.is_file())


def _summary(folder: Path, metadata: dict, added: int, reused: int, problems: list, started: float, state: str):
    clips = int(metadata.get("clips", 0))
    return {
        "folder": str(folder), "clips": clips, "added": added, "reused": reused, "failed": problems,
        "frame_bytes_per_clip": metadata.get("frame_bytes", 0) / clips if clips else 0.0,
        "disk_bytes_per_clip": cache_disk_bytes(folder) / clips if clips else 0.0,
        "seconds": time.perf_counter() - started, "folder_state": state,
    }


__all__ = [
    "FrameCache",
    "FrameCacheError",
    "FrameCacheWriter",
    "build_frame_cache",
    "cache_entries",
    "clip_key",
    "frame_settings",
    "open_frame_cache",
    "prepare_cache_folder",
    "settings_fingerprint",
]
