"""The scan's model of what a pickle builds: nodes that record shape and cost instead of values."""

import struct

from . import opcodes
from .limits import PickleLimitError, PickleLimits, UnsafePickleError, _limit_error

# Node kinds.
_LIST, _DICT, _SET, _FROZENSET, _TUPLE, _ARRAY, _DTYPE, _GLOBAL = range(8)
_KIND_NAMES = ("list", "dict", "set", "frozenset", "tuple", "numpy array", "numpy dtype", "global")
_TUPLE_ITEMS_KEPT = 64  # tuples up to this length keep their items (array shapes, call arguments, states)
_SHORT = 256  # strings and bytes up to this length keep their value (module names, dtype codes)
_LONG_LINE = 8192  # text-protocol numbers longer than this are refused

_U2 = struct.Struct("<H").unpack_from
_I4 = struct.Struct("<i").unpack_from
_U4 = struct.Struct("<I").unpack_from
_U8 = struct.Struct("<Q").unpack_from


class _Node:
    """A container or numpy object the pickle would build: its kind, nesting height, expanded size, and a few facts."""

    __slots__ = ("kind", "height", "size", "items", "info")

    def __init__(self, kind, height=1, size=1, items=None, info=None):
        self.kind = kind
        self.height = height
        self.size = size
        self.items = items
        self.info = info


class _Opaque:
    """A leaf the scan does not keep the value of."""

    __slots__ = ("what",)

    def __init__(self, what):
        self.what = what

    def __repr__(self):
        return f"<{self.what}>"


_LONG_STR = _Opaque("long str")
_LONG_BYTES = _Opaque("long bytes")
_BYTEARRAY = _Opaque("bytearray")
_BIG_INT = _Opaque("big int")
_FLOAT = _Opaque("float")
_TEXT = _Opaque("protocol-0/1 string")
_SCALAR = _Opaque("numpy scalar")


class _Model:
    """The scan's state, its refusals, and the sizes of the containers it models."""

    def __init__(self, data, end: int, source: str, limits: PickleLimits):
        self.data = data
        self.end = end
        self.source = source
        self.limits = limits
        self.array_bytes = 0
        self.deepest = 0
        self.dtypes = {}  # numpy.dtype arguments -> itemsize, for the dtypes already checked
        self.stack = []
        self.marks = []  # stack lengths at each open MARK
        self.memo = {}
        self.protocol = 0
        self.result = None
        self.stopped = False

    # --- refusals ---

    def malformed(self, at: int, why: str) -> UnsafePickleError:
        op = self.data[at] if at < self.end else None
        name = opcodes.NAMES.get(op, f"opcode {op!r}") if op is not None else "end of file"
        return UnsafePickleError(f"{self.source}: {name} at byte {at}: {why}; the file is malformed or hostile.")

    def refused(self, at: int, why: str) -> UnsafePickleError:
        name = opcodes.NAMES.get(self.data[at], "opcode")
        return UnsafePickleError(f"{self.source}: {name} at byte {at}: {why}.")

    def too_deep(self) -> PickleLimitError:
        return _limit_error(self.source, f"nesting deeper than {self.limits.max_depth} levels", "max_depth")

    def too_large(self) -> PickleLimitError:
        return _limit_error(
            self.source,
            f"the data expands to more than {self.limits.max_objects} objects through shared references",
            "max_objects",
        )

    # --- container sizes ---

    def container(self, kind, items, keep_items=False) -> _Node:
        height, size = 0, 1
        for value in items:
            if type(value) is _Node:
                if value.height > height:
                    height = value.height
                size += value.size
            else:
                size += 1
        height += 1
        self.check(height, size)
        kept = tuple(items) if keep_items and len(items) <= _TUPLE_ITEMS_KEPT else None
        return _Node(kind, height, size, kept)

    def absorb(self, at: int, node, kind, items):
        """Grow `node` (which must be a `kind`) by `items`, as APPEND(S), SETITEM(S) and ADDITEMS do."""
        if type(node) is not _Node or node.kind != kind:
            found = _KIND_NAMES[node.kind] if type(node) is _Node else type(node).__name__
            raise self.refused(at, f"adds items to a {found}, not a {_KIND_NAMES[kind]}")
        height, size = node.height, node.size
        for value in items:
            if type(value) is _Node:
                if value.height >= height:
                    height = value.height + 1
                size += value.size
            else:
                size += 1
        self.check(height, size)
        node.height, node.size = height, size

    def check(self, height, size):
        if height > self.deepest:
            self.deepest = height
            if height > self.limits.max_depth:
                raise self.too_deep()
        if size > self.limits.max_objects:
            raise self.too_large()
