"""A frame cache (`magtkd-hf cache-frames`, docs/recipe.md): the kept, resized frames (K, 3, h, w) uint8 of every
video clip, decoded once, equal to what the processor's torch image path computes before normalising. A clip's key
hashes the frame settings with the video's resolved path, size and mtime and the time window: a changed file misses.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from .conversation import normalise_input
from .media_pixels import resize_and_crop, setting, size_dict, torch_path_supported
from .model_inputs import decode_video_frames, empty_frame_size

FORMAT_VERSION = 2  # 1: Arrow shards
METADATA_FILE = "frame_cache.json"
FRAMES_FOLDER = "frames"
REBUILD = "rebuild the cache (`magtkd-hf cache-frames ... --rebuild`)"


class FrameCacheError(ValueError):
    """A frame cache folder that cannot be used (damaged, or not a frame cache); the message names the folder."""

    def __init__(self, folder, reason: str):
        self.folder = str(folder)
        super().__init__(f"frame cache {folder}: {reason}")


def frame_settings(processor) -> dict:
    """The processor's frame settings, the image processor's resize and crop (not rescale/normalise: they run on the
    cached frames) and the versions of the libraries that decode (PyAV) and resize (torch)."""
    import av
    import torch

    image_processor = processor.image_processor

    def size(name: str) -> dict:
        return {key: int(value) for key, value in sorted(size_dict(setting(image_processor, name, {})).items())}

    return {
        "format": FORMAT_VERSION, "num_frames": int(processor.num_frames),
        "frame_selection": str(processor.frame_selection),
        "time_window_padding": float(processor.time_window_padding), "image_backend": str(processor.image_backend),
        "do_resize": bool(setting(image_processor, "do_resize", True)), "size": size("size"),
        "resample": int(setting(image_processor, "resample", 2)),
        "do_center_crop": bool(setting(image_processor, "do_center_crop", False)), "crop_size": size("crop_size"),
        "empty_frame_size": list(empty_frame_size(processor)), "decoder": "pyav", "av": str(av.__version__),
        "torch": str(torch.__version__).split("+")[0],  # the CPU resize kernels of a version, whatever its build
    }


def _fingerprint(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _differences(built: Mapping, wanted: Mapping) -> list[str]:
    return sorted(name for name in set(built) | set(wanted) if built.get(name) != wanted.get(name))


def clip_key(video: str, window, fingerprint: str) -> str | None:
    """The key of one utterance's clip; None when the file cannot be read (not cached: decoding reports it)."""
    try:
        path = os.path.realpath(video)
        status = os.stat(path)
    except (OSError, TypeError, ValueError):
        return None
    span = None if window is None else [float(window.start), None if window.end is None else float(window.end)]
    return _fingerprint([fingerprint, path, int(status.st_size), int(status.st_mtime_ns), span])


def read_metadata(folder: str | Path) -> dict | None:
    """The cache's `frame_cache.json`, or None when the folder has none; a damaged one raises `FrameCacheError`."""
    path = Path(folder) / METADATA_FILE
    if not path.is_file():
        return None
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(metadata, dict) or not {"format", "fingerprint", "settings"} <= set(metadata):
            raise ValueError("not a frame cache description")
    except (ValueError, UnicodeDecodeError) as error:
        raise FrameCacheError(folder, f"{METADATA_FILE} is damaged ({error}); {REBUILD}") from None
    if metadata["format"] != FORMAT_VERSION:
        raise FrameCacheError(folder, f"format {metadata['format']!r}, this version reads format {FORMAT_VERSION}; "
                                      f"{REBUILD}")
    return metadata


class FrameCache:
    """A frame cache folder, read-only: {clip key: resized frames (K, 3, h, w) uint8}. Raises `FrameCacheError`
    (naming the folder) when the folder is not a frame cache or a file of it is damaged."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        metadata = read_metadata(self.folder)
        if metadata is None:
            raise FrameCacheError(self.folder, f"no {METADATA_FILE} (build one with `magtkd-hf cache-frames`)")
        self.settings, self.fingerprint = metadata["settings"], metadata["fingerprint"]
        self.keys = {path.stem for path in (self.folder / FRAMES_FOLDER).glob("*.npy")}

    def __repr__(self) -> str:
        return f"FrameCache({str(self.folder)!r}, clips={len(self)})"

    def __len__(self) -> int:
        return len(self.keys)

    def matches(self, processor) -> bool:
        """Whether the cache was built with this processor's frame settings (else it must not be read)."""
        return _fingerprint(frame_settings(processor)) == self.fingerprint

    def differences(self, processor) -> list[str]:
        """The names of the frame settings of `processor` that differ from the cache's."""
        return _differences(self.settings, frame_settings(processor))

    def lookup(self, video: str, window=None) -> np.ndarray | None:
        """The cached frames (K, 3, h, w) uint8 of an utterance's clip (its video file as it is now and its time
        window), or None: not cached, or the file changed since."""
        key = clip_key(video, window, self.fingerprint)
        if key not in self.keys:
            return None
        name = f"{FRAMES_FOLDER}/{key}.npy"
        try:
            frames = np.load(self.folder / name)
            if frames.dtype != np.uint8 or frames.ndim != 4:
                raise ValueError(f"{frames.dtype} frames of shape {list(frames.shape)}")
        except (OSError, ValueError, EOFError) as error:
            raise FrameCacheError(self.folder, f"the clip file {name} is damaged or missing ({error}); "
                                               f"{REBUILD}") from None
        return frames


# ---------------------------------------------------------------------- building


def build_frame_cache(rows: Iterable[Mapping], processor, folder: str | Path, *, window_choices: Sequence = ("auto",),
                      num_workers: int = 0, rebuild: bool = False, progress: bool = True) -> dict:
    """Decode every clip of conversation `rows` once with `processor`'s frame settings into the cache in `folder`.

    Incremental: a cache of the same settings keeps its clips and gets the missing ones; one of other settings (or
    with `rebuild`) is emptied first. `window_choices`: the `use_time_window` values the stages call the processor
    with. Clips that fail to decode are reported, not cached (training then decodes them and raises as it would
    without a cache). `num_workers`: DataLoader worker processes decoding clips.

    Returns {"folder", "clips", "added", "reused", "failed", "frame_bytes_per_clip", "disk_bytes_per_clip", "seconds",
    "folder_state" ("new", "kept", "rebuilt"), "changed_settings"}."""
    started = time.perf_counter()
    if processor.image_backend != "torch" or not torch_path_supported(processor.image_processor):
        raise ValueError("the frame cache serves the torch image path (image_backend='torch' with a resize it "
                         f"implements); this processor uses image_backend={processor.image_backend!r}")
    folder = Path(folder)
    state, changed = _prepare_folder(folder, frame_settings(processor), rebuild)
    before = FrameCache(folder)
    entries, problems = _clips_to_cache(rows, window_choices, before.fingerprint)
    todo = [(key, clip) for key, clip in entries.items() if key not in before.keys]
    added = _decode_clips(folder, processor, todo, problems, num_workers, progress)
    cache = FrameCache(folder)
    files = [folder / FRAMES_FOLDER / f"{key}.npy" for key in cache.keys]
    frame_bytes = sum(np.load(path, mmap_mode="r").nbytes for path in files)
    disk_bytes = sum(path.stat().st_size for path in [folder / METADATA_FILE, *files])
    return {
        "folder": str(folder), "clips": len(cache), "added": added, "reused": len(before.keys & set(entries)),
        "failed": problems, "frame_bytes_per_clip": frame_bytes / len(cache) if len(cache) else 0.0,
        "disk_bytes_per_clip": disk_bytes / len(cache) if len(cache) else 0.0,
        "seconds": time.perf_counter() - started, "folder_state": state, "changed_settings": changed,
    }


def _prepare_folder(folder: Path, settings: dict, rebuild: bool) -> tuple[str, list[str]]:
    """Make `folder` a cache of `settings`: ("new" | "kept" | "rebuilt", the settings that differed). A folder with
    other files and no `frame_cache.json` is refused (nothing of it is deleted)."""
    fresh = {"format": FORMAT_VERSION, "fingerprint": _fingerprint(settings), "settings": settings}
    state, changed = "new", []
    if folder.is_dir() and any(folder.iterdir()):
        if not (folder / METADATA_FILE).is_file():
            raise FrameCacheError(folder, f"the folder is not empty and holds no {METADATA_FILE}: not a frame cache "
                                          "(choose another folder)")
        try:
            metadata = read_metadata(folder)
        except FrameCacheError:
            if not rebuild:
                raise
            metadata = None
        if metadata is not None and metadata["fingerprint"] == fresh["fingerprint"] and not rebuild:
            for leftover in (folder / FRAMES_FOLDER).glob("*.tmp"):  # of an interrupted build
                leftover.unlink()
            return "kept", []
        changed = [] if metadata is None else _differences(metadata["settings"], settings)
        for name in (FRAMES_FOLDER, "shards"):  # "shards": format 1
            shutil.rmtree(folder / name, ignore_errors=True)
        state = "rebuilt"
    (folder / FRAMES_FOLDER).mkdir(parents=True, exist_ok=True)
    _write_atomically(folder / METADATA_FILE, lambda handle: handle.write(json.dumps(fresh, indent=2).encode()))
    return state, changed


def _write_atomically(path: Path, write) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        write(handle)
    os.replace(temporary, path)


def _clips_to_cache(rows: Iterable[Mapping], window_choices: Sequence, fingerprint: str):
    """{key: (video, window)} of every utterance with a video under each of `window_choices`, and the problems found
    (rows that do not normalise, video files that cannot be read)."""
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
                        problems.append(f"{conversation.where(utterance)}: file {utterance.video}: cannot be read")
                    else:
                        entries.setdefault(key, (utterance.video, utterance.window))
    return entries, list(dict.fromkeys(problems))


class _ClipFrames:
    """Map-style dataset of the clips to decode: position -> (position, resized frames or None, error or None)."""

    def __init__(self, processor, clips: Sequence):
        self.processor, self.clips = processor, list(clips)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, position: int):
        video, window = self.clips[position]
        try:
            frames = decode_video_frames(self.processor, video, window)
            return position, resize_and_crop(frames, self.processor.image_processor).contiguous(), None
        except (ValueError, OSError) as error:  # MediaError names the file
            return position, None, str(error)


def _decode_clips(folder: Path, processor, todo: list, problems: list, num_workers: int, progress: bool) -> int:
    """Decode the clips of `todo` ([(key, (video, window))]) in DataLoader workers and write each one; failures are
    added to `problems`. Returns the number of clips written."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    loader = DataLoader(_ClipFrames(processor, [clip for _, clip in todo]), batch_size=None, shuffle=False,
                        num_workers=int(num_workers))
    added = 0
    for position, frames, error in tqdm(loader, total=len(todo), desc="caching frames", unit="clip", file=sys.stderr,
                                        disable=None if progress else True):
        if frames is None:
            problems.append(error)
            continue
        path = folder / FRAMES_FOLDER / f"{todo[position][0]}.npy"
        _write_atomically(path, lambda handle: np.save(handle, np.ascontiguousarray(frames.numpy())))
        added += 1
    return added
