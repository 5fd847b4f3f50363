"""The entry points: check the file's size, scan its opcodes, and only then let the C unpickler build it."""

import gc
import mmap
import os
from pathlib import Path

from .allowed import PlainDataUnpickler
from .limits import PickleLimits, PickleScan, UnsafePickleError, _limit_error
from .loaded import _check_loaded
from .machine import _Scanner


def load_plain_pickle(path: str | Path, limits: PickleLimits | None = None):
    """
    Load a pickle of plain data: [`scan_plain_pickle`] first checks the whole opcode stream against `limits`
    (default [`PickleLimits`]`()`), then [`PlainDataUnpickler`] builds it, then the result is checked (no numpy
    object arrays, no reference cycles, nesting and expanded size within `limits`).

    Raises:
        `UnsafePickleError` (a `pickle.UnpicklingError`) naming the file, or its subclass `PickleLimitError` when a
        budget is exceeded; nothing from the file is executed.
    """
    limits = PickleLimits() if limits is None else limits
    source = str(path)
    with open(path, "rb") as handle:
        _scan_handle(handle, source, limits)
        handle.seek(0)
        data = PlainDataUnpickler(handle, source=source).load()
    _check_loaded(data, source, limits)
    return data


def scan_plain_pickle(path: str | Path, limits: PickleLimits | None = None) -> PickleScan:
    """
    Check a pickle's opcode stream against the plain-data allow-list and `limits` without building anything.

    Returns:
        A [`PickleScan`] of what the file would cost to load.
    Raises:
        `UnsafePickleError` / `PickleLimitError` naming the file, as [`load_plain_pickle`].
    """
    limits = PickleLimits() if limits is None else limits
    with open(path, "rb") as handle:
        return _scan_handle(handle, str(path), limits)


def _reject_object_arrays(value, path, limits: PickleLimits | None = None):
    """Check loaded data (iteratively, each shared container once): no numpy object arrays, no cycles, limits."""
    _check_loaded(value, str(path), PickleLimits() if limits is None else limits)


def _scan_handle(handle, source: str, limits: PickleLimits) -> PickleScan:
    size = os.fstat(handle.fileno()).st_size
    if size > limits.max_file_bytes:
        raise _limit_error(source, f"the file holds {size} bytes, more than {limits.max_file_bytes}", "max_file_bytes")
    if size == 0:
        raise UnsafePickleError(f"{source}: the file is empty, not a pickle.")
    try:
        data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):  # not mappable: read it (its size is within max_file_bytes)
        handle.seek(0)
        data = handle.read(size)
    collecting = gc.isenabled()
    gc.disable()  # the scan builds many small acyclic nodes; cyclic GC passes over them would cost more than the scan
    try:
        return _Scanner(data, len(data), source, limits).run()
    finally:
        if collecting:
            gc.enable()
        if isinstance(data, mmap.mmap):
            data.close()
