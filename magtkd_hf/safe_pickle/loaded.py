"""The exact check of data the C unpickler built: an iterative walk that visits each shared container once."""

import itertools

import numpy as np

from .limits import PickleLimits, UnsafePickleError, _limit_error

_CONTAINER_TYPES = (list, tuple, dict, set, frozenset)


def _children(container):
    if isinstance(container, dict):
        return itertools.chain.from_iterable(container.items())
    return iter(container)


def _check_loaded(data, source: str, limits: PickleLimits):
    """
    Walk loaded data iteratively, each distinct container once: refuse numpy object arrays and reference cycles, and
    check the exact nesting depth, expanded size (shared references counted again) and array bytes against `limits`.
    """
    _LoadedCheck(source, limits).run(data)


class _LoadedCheck:
    """The walk's state. A frame is `[container, its children, height so far, expanded size so far]`."""

    def __init__(self, source: str, limits: PickleLimits):
        self.source = source
        self.limits = limits
        self.max_depth, self.max_objects = limits.max_depth, limits.max_objects
        self.arrays: set[int] = set()
        self.array_bytes = 0
        self.done: dict[int, tuple[int, int]] = {}  # id -> (height, expanded size) of each finished container
        self.on_path: set[int] = set()  # ids of the containers being walked: meeting one again is a cycle
        self.frames: list[list] = []

    def run(self, data):
        if not isinstance(data, _CONTAINER_TYPES):
            if isinstance(data, np.ndarray):
                self.check_array(data)
            return
        self.on_path.add(id(data))
        frames = self.frames
        frames.append([data, _children(data), 1, 1])
        while frames:
            if not self.descend(frames[-1]):
                self.finish()

    def descend(self, frame) -> bool:
        """Count `frame`'s children until one is a container not walked yet; open it and return True."""
        frames, done, on_path = self.frames, self.done, self.on_path
        max_depth, max_objects = self.max_depth, self.max_objects
        for child in frame[1]:
            if isinstance(child, _CONTAINER_TYPES):
                key = id(child)
                known = done.get(key)
                if known is None:
                    if key in on_path:
                        raise UnsafePickleError(
                            f"{self.source}: the data contains itself (a reference cycle), which plain feature data "
                            "never does."
                        )
                    if len(frames) >= max_depth:
                        raise self.too_deep()
                    on_path.add(key)
                    frames.append([child, _children(child), 1, 1])
                    return True
                height, size = known
            elif isinstance(child, np.ndarray):
                self.check_array(child)
                height, size = 1, 1
            else:
                height, size = 0, 1
            if height >= frame[2]:
                frame[2] = height + 1
                if len(frames) - 1 + frame[2] > max_depth:
                    raise self.too_deep()
            frame[3] += size
            if frame[3] > max_objects:
                raise self.too_large()
        return False

    def finish(self):
        """Close the innermost container: remember its height and size, and add them to its parent."""
        frames = self.frames
        frame = frames.pop()
        self.on_path.discard(id(frame[0]))
        self.done[id(frame[0])] = (frame[2], frame[3])
        if frames:
            parent = frames[-1]
            if frame[2] >= parent[2]:
                parent[2] = frame[2] + 1
                if len(frames) - 1 + parent[2] > self.max_depth:
                    raise self.too_deep()
            parent[3] += frame[3]
            if parent[3] > self.max_objects:
                raise self.too_large()

    def check_array(self, array):
        if array.dtype.hasobject:
            raise UnsafePickleError(f"{self.source}: numpy arrays of Python objects are not admitted.")
        if id(array) not in self.arrays:  # a shared array costs its bytes once
            self.arrays.add(id(array))
            self.array_bytes += array.nbytes
            if self.array_bytes > self.limits.max_total_array_bytes:
                limit = self.limits.max_total_array_bytes
                raise _limit_error(self.source, f"numpy arrays hold more than {limit} bytes", "max_total_array_bytes")

    def too_deep(self):
        return _limit_error(self.source, f"nesting deeper than {self.max_depth} levels", "max_depth")

    def too_large(self):
        return _limit_error(
            self.source,
            f"the data expands to more than {self.max_objects} objects through shared references",
            "max_objects",
        )
