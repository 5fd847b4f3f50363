"""A frame cache: the kept, resized frames of every video clip, decoded once and memory-mapped.

Decoding is what a video epoch costs (~170-200 ms of CPU per 3 s 720p MELD clip, every clip, every epoch); the
cache stores what `MagtkdProcessor` computes from a clip before normalising it, the kept frames after the uint8
resize and center crop, (K, 3, h, w) uint8, so that the pixel values of a cached clip equal those of the decoded
clip exactly (`model_inputs.resized_frames` / `pixel_values_from_resized`). It serves the torch image path only
(`image_backend="torch"`): the PIL image processor resizes differently, and with it the cache is not read.

Layout of a cache folder (built by `frame_cache_build.build_frame_cache`, `magtkd-hf cache-frames`):

    frame_cache.json        format, the frame settings and their fingerprint, the complete shards, clips, bytes
    shards/00000.arrow ...  Arrow files in the `datasets` format (`datasets.Dataset.from_file` memory-maps them):
                            key (string), path (string), shape (list int32: K, 3, h, w), frames (large_binary:
                            the uint8 frames in C order)

Keys. The cache holds the frames of one set of frame settings (`frame_settings`: frames per clip, frame selection,
time-window padding, the image processor's resize and crop, the decoder and the library versions that decode and
resize; their fingerprint is in `frame_cache.json`); a processor with other settings does not read it (its
`matches` is False). A clip's key is a hash of that fingerprint, the video's resolved path, its size and mtime, and
the utterance's time window when one is used: a file replaced or touched since is a miss (decoded again), never
stale frames.

Attached to a processor as `processor.frame_cache` (a runtime attribute: `save_pretrained` does not save it), a
cache is read by `video_inputs` for the clips it holds; the others are decoded as before. A `FrameCache` pickles as
its folder (a DataLoader worker started with "spawn" reopens it) and is shared, not copied, by `copy.deepcopy`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from .media_common import TimeWindow
from .media_pixels import _setting, _size_dict

FORMAT_VERSION = 1
METADATA_FILE = "frame_cache.json"
SHARDS_FOLDER = "shards"
DEFAULT_SHARD_BYTES = 512 * 2**20  # a shard is committed (and the build resumable from it) every ~512 MiB
_BATCH_ROWS = 8  # clips per Arrow record batch
_COLUMNS = ("key", "path", "shape", "frames")


class FrameCacheError(ValueError):
    """A frame cache folder that cannot be used (damaged, or not a frame cache); the message names the folder."""

    def __init__(self, folder, reason: str):
        self.folder = str(folder)
        super().__init__(f"frame cache {folder}: {reason}")


# ---------------------------------------------------------------------- keys


def frame_settings(processor) -> dict:
    """Everything that decides a clip's cached frames besides the file and its window: the processor's frame
    settings, the image processor's resize and crop (not rescale/normalise: they run on the cached frames), the
    decoder and the versions of the libraries that decode (PyAV) and resize (torch)."""
    import av
    import torch

    image_processor = processor.image_processor
    crop = getattr(image_processor, "crop_size", None) or {"height": 224, "width": 224}

    def size(name: str) -> dict:
        return {key: int(value) for key, value in sorted(_size_dict(_setting(image_processor, name)).items())}

    return {
        "format": FORMAT_VERSION,
        "num_frames": int(processor.num_frames),
        "frame_selection": str(processor.frame_selection),
        "time_window_padding": float(processor.time_window_padding),
        "image_backend": str(processor.image_backend),
        "do_resize": bool(_setting(image_processor, "do_resize", True)),
        "size": size("size"),
        "resample": int(_setting(image_processor, "resample", 2)),
        "do_center_crop": bool(_setting(image_processor, "do_center_crop", False)),
        "crop_size": size("crop_size"),
        "empty_frame_size": [int(crop["height"]), int(crop["width"])],
        "decoder": "pyav",
        "av": str(av.__version__),
        "torch": str(torch.__version__).split("+")[0],  # the CPU resize kernels of a version, whatever its build
    }


def settings_fingerprint(settings: Mapping) -> str:
    """sha256 (hex) of the frame settings, in a canonical JSON form."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def clip_key(video: str, window: TimeWindow | None, fingerprint: str) -> str | None:
    """The key of one utterance's clip: a hash of the settings fingerprint, the video's resolved path, its size and
    mtime (ns) and the time window (start, end) when one is used. None when the file cannot be read (not cached:
    decoding then reports it)."""
    try:
        path = os.path.realpath(video)
        status = os.stat(path)
    except (OSError, TypeError, ValueError):
        return None
    span = None if window is None else [float(window.start), None if window.end is None else float(window.end)]
    identity = [fingerprint, path, int(status.st_size), int(status.st_mtime_ns), span]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()


def setting_differences(built: Mapping, wanted: Mapping) -> list[str]:
    """The names of the frame settings that differ between two `frame_settings` dicts."""
    return sorted(name for name in set(built) | set(wanted) if built.get(name) != wanted.get(name))


# ---------------------------------------------------------------------- reading


def _arrow_features():
    import datasets

    return datasets.Features({
        "key": datasets.Value("string"),
        "path": datasets.Value("string"),
        "shape": datasets.List(datasets.Value("int32")),
        "frames": datasets.Value("large_binary"),
    })


def read_metadata(folder: str | Path) -> dict | None:
    """The cache's `frame_cache.json`, or None when the folder has none; a damaged one raises `FrameCacheError`."""
    path = Path(folder) / METADATA_FILE
    if not path.is_file():
        return None
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(metadata, dict) or not isinstance(metadata.get("shards"), list):
            raise ValueError("not a frame cache description")
        for key in ("format", "fingerprint", "settings"):
            if key not in metadata:
                raise ValueError(f"no {key!r}")
    except (ValueError, UnicodeDecodeError) as error:
        raise FrameCacheError(folder, f"{METADATA_FILE} is damaged ({error}); rebuild the cache "
                                      "(`magtkd-hf cache-frames ... --rebuild`)") from None
    if metadata["format"] != FORMAT_VERSION:
        raise FrameCacheError(folder, f"format {metadata['format']!r}, this version reads format {FORMAT_VERSION}; "
                                      "rebuild the cache (`magtkd-hf cache-frames ... --rebuild`)")
    return metadata


class FrameCache:
    """A frame cache folder, opened read-only: {clip key: resized frames (K, 3, h, w) uint8}, memory-mapped.

    Args:
        folder: a folder written by `build_frame_cache` (it must hold `frame_cache.json`).

    Raises `FrameCacheError` (naming the folder) when the folder is not a frame cache or a file of it is damaged.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        metadata = read_metadata(self.folder)
        if metadata is None:
            raise FrameCacheError(self.folder, f"no {METADATA_FILE} (build one with `magtkd-hf cache-frames`)")
        self.metadata = metadata
        self.settings, self.fingerprint = metadata["settings"], metadata["fingerprint"]
        self._open_shards()

    def _open_shards(self) -> None:
        """Memory-map every shard and index its keys: {key: (shard, row)}."""
        import datasets

        self._frames, self._shapes, self._index = [], [], {}
        for number, name in enumerate(self.metadata["shards"]):
            path = self.folder / name
            try:
                shard = datasets.Dataset.from_file(str(path), in_memory=False)
                missing = [column for column in _COLUMNS if column not in shard.column_names]
                if missing:
                    raise ValueError(f"columns {missing} are missing")
                keys = shard.data.column("key").to_pylist()
                shapes = shard.data.column("shape").to_pylist()
                frames = shard.data.column("frames")
            except Exception as error:  # a missing, truncated or foreign file (pyarrow.ArrowInvalid, OSError, ...)
                raise FrameCacheError(self.folder, f"the shard {name} is damaged or missing ({error}); rebuild the "
                                                   "cache (`magtkd-hf cache-frames ... --rebuild`)") from None
            self._frames.append(frames)
            self._shapes.append(shapes)
            self._index.update((key, (number, row)) for row, key in enumerate(keys))

    # -- pickling (DataLoader workers) and copying (ProcessorMixin.to_dict deep-copies the processor's attributes)
    def __getstate__(self) -> dict:
        return {"folder": str(self.folder)}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["folder"])

    def __deepcopy__(self, memo):
        return self  # read-only: copies share the memory-mapped files

    def __repr__(self) -> str:
        return f"FrameCache({str(self.folder)!r}, clips={len(self)})"

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def keys(self) -> Iterable[str]:
        return self._index.keys()

    def matches(self, processor) -> bool:
        """Whether the cache was built with this processor's frame settings (else it must not be read)."""
        return settings_fingerprint(frame_settings(processor)) == self.fingerprint

    def differences(self, processor) -> list[str]:
        """The frame settings of `processor` that differ from the cache's."""
        return setting_differences(self.settings, frame_settings(processor))

    def get(self, key: str) -> np.ndarray | None:
        """The cached frames of `key`, (K, 3, h, w) uint8, a read-only view of the memory-mapped file; None when
        absent."""
        found = self._index.get(key)
        if found is None:
            return None
        shard, row = found
        shape = tuple(self._shapes[shard][row])
        buffer = self._frames[shard][row].as_buffer()
        if buffer is None or len(shape) != 4 or buffer.size != int(np.prod(shape)):
            raise FrameCacheError(self.folder, f"the entry of {key} in {self.metadata['shards'][shard]} is damaged "
                                               f"(shape {list(shape)}, {0 if buffer is None else buffer.size} bytes)")
        return np.frombuffer(buffer, dtype=np.uint8).reshape(shape)

    def lookup(self, video: str, window: TimeWindow | None = None) -> np.ndarray | None:
        """The cached frames (K, 3, h, w) uint8 of an utterance's clip (its video file as it is now and its time
        window), or None: not cached, or the file changed since."""
        key = clip_key(video, window, self.fingerprint)
        return None if key is None else self.get(key)


def open_frame_cache(folder: str | Path) -> FrameCache | None:
    """The cache in `folder`, or None when the folder holds none (no `frame_cache.json`); a damaged one raises."""
    return FrameCache(folder) if (Path(folder) / METADATA_FILE).is_file() else None
