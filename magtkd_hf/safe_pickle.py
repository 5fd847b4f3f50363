"""
Load pickles of plain data (containers, numbers, strings and numpy arrays) without running code from them, within a
budget that refuses hostile files fast.

[`load_plain_pickle`] reads a file in three steps:

1. the file's size is checked against [`PickleLimits`] before a byte is read;
2. [`scan_plain_pickle`] walks the opcode stream without building anything: it checks every global against the
   plain-data allow-list, checks every declared length against the bytes left in the file, refuses out-of-band
   buffers, persistent ids and extension codes, counts the values the pickle would push, follows how deep the
   containers nest and how many objects they expand to when every shared reference is counted again, and adds up the
   bytes every numpy array asks for, all before anything is allocated;
3. only then does [`PlainDataUnpickler`] (the C unpickler, with the same allow-list) build the data, and an iterative
   walk that visits every shared container once checks the result exactly: no numpy object arrays, no reference
   cycles, nesting and expanded size within the limits.

Every refusal is an [`UnsafePickleError`]; a refusal because a budget was exceeded is a [`PickleLimitError`] naming
the file and the limit, for example `features_train.pkl: nesting deeper than 100 levels (limit max_depth); raise
PickleLimits(max_depth=...) if the file is trusted`.
"""

import dataclasses
import gc
import itertools
import mmap
import os
import pickle
import struct
from pathlib import Path

import numpy as np

__all__ = [
    "PickleLimitError",
    "PickleLimits",
    "PickleScan",
    "PlainDataUnpickler",
    "UnsafePickleError",
    "load_plain_pickle",
    "scan_plain_pickle",
]

# The only globals a pickle of plain containers and numpy arrays needs.
_ALLOWED_PICKLE_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("collections", "OrderedDict"),
}

_GiB = 1 << 30


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle was refused (a global outside the plain-data allow-list, a malformed or hostile opcode stream, a
    budget exceeded); nothing from it was executed."""


class PickleLimitError(UnsafePickleError):
    """A pickle was refused because it exceeds a [`PickleLimits`] budget; `limit` names the field, `path` the file."""

    def __init__(self, message: str, *, path: str | None = None, limit: str | None = None):
        super().__init__(message)
        self.path = path
        self.limit = limit


@dataclasses.dataclass(frozen=True)
class PickleLimits:
    """
    Budgets for [`load_plain_pickle`]. The defaults admit the authors' released MELD and IEMOCAP stage-3 feature files
    with wide margins and refuse hostile files before they cost real time or memory.

    Sizing (MELD is the larger corpus: 13,708 utterances; IEMOCAP has 7,433): a released file is a dict of sources
    (`text`, `audio`, `video`, `audio_kd`, `video_kd`), each a dict of dialogue id -> list of one 768-float32 numpy
    vector per utterance, plus dicts of per-dialogue `speakers`, `labels` and `dia2utt` lists and the `vids` list.

    Args:
        max_file_bytes (`int`, defaults to 8 GiB):
            Files larger than this are refused before anything is read. Twice `max_total_array_bytes`, because pickle
            protocol 2 stores array data as latin-1 text, which UTF-8 writes in up to 2 bytes per data byte.
        max_objects (`int`, defaults to 5,000,000):
            The most values the pickle may push while loading (every object it builds and every repeated reference to
            an object it built), and the most objects the result may hold when every shared reference is counted
            again (so a few hundred bytes of `a = [a, a]` layers, which expand to 2**60 objects, are refused). A
            released file costs at most about 95 pushes per utterance (protocol 2; about 75 with protocol 4, 45 with
            protocol 5), so all of MELD in one file needs about 1.3 million: the default leaves more than 3x headroom
            while bounding what loading builds to about 1 GB of Python objects even when every value is an empty set
            (the largest empty container, about 200 bytes), and the scan's own model to a few hundred MB.
        max_depth (`int`, defaults to 100):
            The deepest nesting of containers (lists, tuples, dicts, sets, numpy arrays; the scan also counts open
            MARKs). The released layout nests 4 levels (dict -> dict -> list -> array). 100 is far above any plain
            data yet far below Python's recursion limit (1000), so code that walks the result recursively (repr, json,
            deepcopy) still works.
        max_total_array_bytes (`int`, defaults to 4 GiB):
            The bytes all numpy arrays (and numpy scalars) may ask for together, counted from the shapes and dtypes
            the pickle declares before any array is allocated. All of MELD is 13,708 x 5 x 768 x 4 bytes = 210 MB, so
            the default leaves about 20x headroom.
    """

    max_file_bytes: int = 8 * _GiB
    max_objects: int = 5_000_000
    max_depth: int = 100
    max_total_array_bytes: int = 4 * _GiB

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"PickleLimits.{field.name} must be a positive int, got {value!r}.")


@dataclasses.dataclass(frozen=True)
class PickleScan:
    """What [`scan_plain_pickle`] measured: the file's size and protocol, the values the pickle pushes (`objects`),
    the deepest container nesting it builds (`depth`), the size of its result counting shared references again
    (`expanded_objects`) and the bytes its numpy arrays ask for (`array_bytes`)."""

    path: str
    file_bytes: int
    protocol: int
    objects: int
    depth: int
    expanded_objects: int
    array_bytes: int


def _limit_error(source: str, what: str, limit: str) -> PickleLimitError:
    return PickleLimitError(
        f"{source}: {what} (limit {limit}); raise PickleLimits({limit}=...) if the file is trusted",
        path=source,
        limit=limit,
    )


def _admitted_global(module: str, name: str, source: str | None = None) -> str:
    """The canonical module of an admitted global; raises `UnsafePickleError` for anything else."""
    canonical = module.replace("numpy.core.", "numpy._core.", 1) if module.startswith("numpy.core.") else module
    if (canonical, name) not in _ALLOWED_PICKLE_GLOBALS:
        message = (
            f"Refusing to unpickle global '{module}.{name}': only plain containers, numbers, strings and numpy arrays "
            "are admitted."
        )
        raise UnsafePickleError(f"{source}: {message}" if source else message)
    return canonical


class PlainDataUnpickler(pickle.Unpickler):
    """
    Unpickles only plain containers, numbers, strings and numpy arrays; any other global is refused by name. It does
    not enforce [`PickleLimits`]: use [`load_plain_pickle`] for files that may be hostile.
    """

    def __init__(self, file, *, source: str | None = None, **kwargs):
        super().__init__(file, **kwargs)
        self._source = source

    def find_class(self, module: str, name: str):
        return super().find_class(_admitted_global(module, name, self._source), name)


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


# --- the opcode scan ------------------------------------------------------------------------------------------------


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


# Node kinds of the scan's model of what the pickle builds.
_LIST, _DICT, _SET, _FROZENSET, _TUPLE, _ARRAY, _DTYPE, _GLOBAL = range(8)
_KIND_NAMES = ("list", "dict", "set", "frozenset", "tuple", "numpy array", "numpy dtype", "global")
_TUPLE_ITEMS_KEPT = 64  # tuples up to this length keep their items (array shapes, call arguments, states)
_SHORT = 256  # strings and bytes up to this length keep their value (module names, dtype codes)
_LONG_LINE = 8192  # text-protocol numbers longer than this are refused


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

_LATIN1 = {"latin1", "latin-1", "latin_1"}

_U2 = struct.Struct("<H").unpack_from
_I4 = struct.Struct("<i").unpack_from
_U4 = struct.Struct("<I").unpack_from
_U8 = struct.Struct("<Q").unpack_from


# Opcode bytes (`pickle.MARK[0]`, ...).
_MARK = pickle.MARK[0]
_STOP = pickle.STOP[0]
_POP = pickle.POP[0]
_POP_MARK = pickle.POP_MARK[0]
_DUP = pickle.DUP[0]
_FLOAT_OP = pickle.FLOAT[0]
_INT = pickle.INT[0]
_BININT = pickle.BININT[0]
_BININT1 = pickle.BININT1[0]
_LONG = pickle.LONG[0]
_BININT2 = pickle.BININT2[0]
_NONE = pickle.NONE[0]
_PERSID = pickle.PERSID[0]
_BINPERSID = pickle.BINPERSID[0]
_REDUCE = pickle.REDUCE[0]
_STRING = pickle.STRING[0]
_BINSTRING = pickle.BINSTRING[0]
_SHORT_BINSTRING = pickle.SHORT_BINSTRING[0]
_UNICODE = pickle.UNICODE[0]
_BINUNICODE = pickle.BINUNICODE[0]
_APPEND = pickle.APPEND[0]
_BUILD = pickle.BUILD[0]
_GLOBAL_OP = pickle.GLOBAL[0]
_DICT_OP = pickle.DICT[0]
_EMPTY_DICT = pickle.EMPTY_DICT[0]
_APPENDS = pickle.APPENDS[0]
_GET = pickle.GET[0]
_BINGET = pickle.BINGET[0]
_INST = pickle.INST[0]
_LONG_BINGET = pickle.LONG_BINGET[0]
_LIST_OP = pickle.LIST[0]
_EMPTY_LIST = pickle.EMPTY_LIST[0]
_OBJ = pickle.OBJ[0]
_PUT = pickle.PUT[0]
_BINPUT = pickle.BINPUT[0]
_LONG_BINPUT = pickle.LONG_BINPUT[0]
_SETITEM = pickle.SETITEM[0]
_TUPLE_OP = pickle.TUPLE[0]
_EMPTY_TUPLE = pickle.EMPTY_TUPLE[0]
_SETITEMS = pickle.SETITEMS[0]
_BINFLOAT = pickle.BINFLOAT[0]
_PROTO = pickle.PROTO[0]
_NEWOBJ = pickle.NEWOBJ[0]
_EXT1 = pickle.EXT1[0]
_EXT2 = pickle.EXT2[0]
_EXT4 = pickle.EXT4[0]
_TUPLE1 = pickle.TUPLE1[0]
_TUPLE2 = pickle.TUPLE2[0]
_TUPLE3 = pickle.TUPLE3[0]
_NEWTRUE = pickle.NEWTRUE[0]
_NEWFALSE = pickle.NEWFALSE[0]
_LONG1 = pickle.LONG1[0]
_LONG4 = pickle.LONG4[0]
_BINBYTES = pickle.BINBYTES[0]
_SHORT_BINBYTES = pickle.SHORT_BINBYTES[0]
_SHORT_BINUNICODE = pickle.SHORT_BINUNICODE[0]
_BINUNICODE8 = pickle.BINUNICODE8[0]
_BINBYTES8 = pickle.BINBYTES8[0]
_EMPTY_SET = pickle.EMPTY_SET[0]
_ADDITEMS = pickle.ADDITEMS[0]
_FROZENSET_OP = pickle.FROZENSET[0]
_NEWOBJ_EX = pickle.NEWOBJ_EX[0]
_STACK_GLOBAL = pickle.STACK_GLOBAL[0]
_MEMOIZE = pickle.MEMOIZE[0]
_FRAME = pickle.FRAME[0]
_BYTEARRAY8 = pickle.BYTEARRAY8[0]
_NEXT_BUFFER = pickle.NEXT_BUFFER[0]
_READONLY_BUFFER = pickle.READONLY_BUFFER[0]

# Opcodes that push one value (memo gets and DUP included: each costs a reference); MARK pushes a mark, not a value.
_PUSHES = bytearray(256)
for _code in (
    _FLOAT_OP, _INT, _BININT, _BININT1, _LONG, _BININT2, _NONE, _STRING, _BINSTRING, _SHORT_BINSTRING, _UNICODE,
    _BINUNICODE, _GLOBAL_OP, _EMPTY_DICT, _GET, _BINGET, _INST, _LONG_BINGET, _LIST_OP, _EMPTY_LIST, _OBJ, _DICT_OP,
    _TUPLE_OP, _EMPTY_TUPLE, _BINFLOAT, _NEWOBJ, _TUPLE1, _TUPLE2, _TUPLE3, _NEWTRUE, _NEWFALSE, _LONG1, _LONG4,
    _BINBYTES, _SHORT_BINBYTES, _SHORT_BINUNICODE, _BINUNICODE8, _BINBYTES8, _EMPTY_SET, _FROZENSET_OP, _NEWOBJ_EX,
    _STACK_GLOBAL, _BYTEARRAY8, _DUP, _REDUCE,
):
    _PUSHES[_code] = 1
del _code
_OPCODE_NAMES = {}
for _name in dir(pickle):
    _value = getattr(pickle, _name)
    if _name.isupper() and isinstance(_value, bytes) and len(_value) == 1 and _name not in ("TRUE", "FALSE"):
        _OPCODE_NAMES.setdefault(_value[0], _name)
del _name, _value


class _Scanner:
    """Follows a pickle's opcodes like the unpickler does, but with a model of the values that allocates nothing."""

    def __init__(self, data, end: int, source: str, limits: PickleLimits):
        self.data = data
        self.end = end
        self.source = source
        self.limits = limits
        self.array_bytes = 0
        self.deepest = 0
        self.dtypes = {}  # numpy.dtype arguments -> itemsize, for the dtypes already checked

    # --- refusals ---

    def malformed(self, at: int, why: str) -> UnsafePickleError:
        op = self.data[at] if at < self.end else None
        name = _OPCODE_NAMES.get(op, f"opcode {op!r}") if op is not None else "end of file"
        return UnsafePickleError(f"{self.source}: {name} at byte {at}: {why}; the file is malformed or hostile.")

    def refused(self, at: int, why: str) -> UnsafePickleError:
        name = _OPCODE_NAMES.get(self.data[at], "opcode")
        return UnsafePickleError(f"{self.source}: {name} at byte {at}: {why}.")

    def too_deep(self) -> PickleLimitError:
        return _limit_error(self.source, f"nesting deeper than {self.limits.max_depth} levels", "max_depth")

    def too_large(self) -> PickleLimitError:
        return _limit_error(
            self.source,
            f"the data expands to more than {self.limits.max_objects} objects through shared references",
            "max_objects",
        )

    # --- the model ---

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

    def add_array_bytes(self, nbytes: int):
        self.array_bytes += nbytes
        if self.array_bytes > self.limits.max_total_array_bytes:
            raise _limit_error(
                self.source,
                f"numpy arrays ask for more than {self.limits.max_total_array_bytes} bytes in total "
                f"({self.array_bytes} so far)",
                "max_total_array_bytes",
            )

    def itemsize(self, at: int, dtype) -> int:
        if type(dtype) is _Node and dtype.kind == _DTYPE:
            return dtype.info
        if isinstance(dtype, (str, bytes)):
            return self.make_dtype(at, (dtype,)).info
        raise self.refused(at, "a numpy array without a plain dtype")

    def make_dtype(self, at: int, args) -> _Node:
        args = tuple(args)
        itemsize = self.dtypes.get(args)
        if itemsize is None:
            if not all(value is None or isinstance(value, (str, bytes, bool, int)) for value in args):
                raise self.refused(at, "numpy.dtype called with arguments that are not plain strings or flags")
            try:
                dtype = np.dtype(*args)
            except Exception as error:  # numpy raises several types for bad dtype specifications
                raise self.malformed(at, f"numpy.dtype{args!r} fails ({error})") from None
            if dtype.hasobject:
                raise self.refused(at, "numpy arrays of Python objects are not admitted")
            itemsize = dtype.itemsize
            if len(self.dtypes) < 1024:
                self.dtypes[args] = itemsize
        return _Node(_DTYPE, 0, 1, info=itemsize)

    def nbytes(self, at: int, shape, itemsize: int) -> int:
        if type(shape) is int:
            dims = (shape,)
        elif type(shape) is _Node and shape.kind == _TUPLE and shape.items is not None:
            dims = shape.items
        else:
            raise self.refused(at, "a numpy array shape that is not a tuple of ints")
        count = itemsize
        for dim in dims:
            if type(dim) is not int or dim < 0:
                raise self.refused(at, "a numpy array shape that is not a tuple of non-negative ints")
            count *= dim
            if count > self.limits.max_total_array_bytes:
                break
        return count

    def call(self, at: int, func, args, new: bool):
        """The value a call of `func(*args)` (`func.__new__(func, *args)` when `new`) would build."""
        if type(func) is not _Node or func.kind != _GLOBAL:
            raise self.refused(at, "calls something that is not an admitted global")
        if args is None:
            raise self.refused(at, "call arguments that are not a short tuple")
        target = func.info
        if target == ("collections", "OrderedDict"):
            if new or not args:
                return _Node(_DICT)
            if len(args) > 1:
                raise self.refused(at, "OrderedDict called with more than one argument")
            (value,) = args
            height = max(1, value.height if type(value) is _Node else 0)
            size = 1 + (value.size if type(value) is _Node else 1)
            self.check(height, size)
            return _Node(_DICT, height, size)
        if target == ("numpy", "dtype"):
            return self.make_dtype(at, args)
        if new:
            raise self.refused(at, f"NEWOBJ of '{target[0]}.{target[1]}', which plain numpy pickles never use")
        if target == ("numpy._core.multiarray", "_reconstruct"):
            if len(args) != 3 or not (type(args[0]) is _Node and args[0].info == ("numpy", "ndarray")):
                raise self.refused(at, "numpy _reconstruct called with arguments other than (ndarray, shape, dtype)")
            self.add_array_bytes(self.nbytes(at, args[1], self.itemsize(at, args[2])))
            return _Node(_ARRAY)
        if target == ("numpy._core.numeric", "_frombuffer"):
            if len(args) != 4:
                raise self.refused(at, "_frombuffer called with arguments other than (data, dtype, shape, order)")
            self.add_array_bytes(self.nbytes(at, args[2], self.itemsize(at, args[1])))
            return _Node(_ARRAY)
        if target == ("numpy._core.multiarray", "scalar"):
            if len(args) not in (1, 2):
                raise self.refused(at, "numpy scalar called with arguments other than (dtype, data)")
            self.add_array_bytes(self.itemsize(at, args[0]))
            return _SCALAR
        if target == ("_codecs", "encode"):
            if len(args) != 2 or args[1] not in _LATIN1 or not (isinstance(args[0], str) or args[0] is _LONG_STR):
                raise self.refused(at, "_codecs.encode is admitted only as encode(text, 'latin1')")
            if args[0] is _LONG_STR:
                return _LONG_BYTES
            try:
                return args[0].encode("latin1")
            except UnicodeEncodeError:
                raise self.malformed(at, "text that latin-1 cannot encode") from None
        raise self.refused(at, f"'{target[0]}.{target[1]}' cannot be called")  # numpy.ndarray

    def build(self, at: int, target, state):
        """BUILD (`__setstate__`): admitted only on numpy arrays and dtypes."""
        items = state.items if type(state) is _Node and state.kind == _TUPLE else None
        if type(target) is _Node and target.kind == _ARRAY:
            if items is None or len(items) not in (4, 5):
                raise self.refused(at, "a numpy array state that is not (version, shape, dtype, fortran, data)")
            shape, dtype = items[-4], items[-3]
            if not (type(dtype) is _Node and dtype.kind == _DTYPE):
                raise self.refused(at, "a numpy array state without a numpy dtype")
            self.add_array_bytes(self.nbytes(at, shape, dtype.info))
        elif type(target) is _Node and target.kind == _DTYPE:
            if items is None or len(items) < 8:
                raise self.refused(at, "a numpy dtype state that is not numpy's")
            elsize, flags = items[5], items[7]
            if type(flags) is int and flags & 1:  # NPY_ITEM_REFCOUNT: the dtype holds Python objects
                raise self.refused(at, "numpy arrays of Python objects are not admitted")
            if type(elsize) is int and elsize > target.info:
                target.info = elsize
        else:
            raise self.refused(at, "sets the state of an object other than a numpy array or dtype")

    # --- the opcode loop ---

    def run(self) -> PickleScan:
        data, end, limits = self.data, self.end, self.limits
        max_objects, max_depth = limits.max_objects, limits.max_depth
        stack, marks, memo = [], [], {}
        push = stack.append
        pushes = protocol = pos = 0
        pushing = _PUSHES

        def line(at, start):
            newline = data.find(b"\n", start)
            if newline < 0:
                raise self.malformed(at, "a text argument without its end of line")
            return newline

        def payload(at, start, length):
            if length > end - start:
                raise self.malformed(
                    at, f"declares {length} bytes but only {max(end - start, 0)} remain in the file (truncated)"
                )
            return start + length

        def top_items(at, count):
            if len(stack) - (marks[-1] if marks else 0) < count:
                raise self.malformed(at, "stack underflow")
            items = stack[-count:]
            del stack[-count:]
            return items

        def pop_mark(at):
            if not marks:
                raise self.malformed(at, "no MARK to pop to")
            start = marks.pop()
            items = stack[start:]
            del stack[start:]
            return items

        def top(at):
            if len(stack) <= (marks[-1] if marks else 0):
                raise self.malformed(at, "stack underflow")
            return stack[-1]

        def memo_index(at, index):
            if index < 0:
                raise self.malformed(at, "a negative memo index")
            if index > max_objects:
                raise _limit_error(
                    self.source, f"memo index {index} at byte {at} is larger than {max_objects}", "max_objects"
                )
            return index

        def text_int(at, start, newline):
            if newline - start > _LONG_LINE:
                raise self.malformed(at, f"a number written with more than {_LONG_LINE} characters")
            try:
                return int(bytes(data[start:newline]).rstrip(b"L"))
            except ValueError:
                raise self.malformed(at, "a number that does not parse") from None

        def short_text(at, start, stop, decode):
            if stop - start > _SHORT:
                return _LONG_STR
            try:
                return decode(bytes(data[start:stop]))
            except (UnicodeDecodeError, ValueError):
                raise self.malformed(at, "text that does not decode") from None

        def global_node(at, module, name):
            if not (isinstance(module, str) and isinstance(name, str)):
                raise self.refused(at, "a global whose module and name are not plain strings")
            return _Node(_GLOBAL, 0, 1, info=(_admitted_global(module, name, self.source), name))

        def text_pair(at, start):
            first = line(at, start)
            second = line(at, first + 1)
            if second - start > 2 * _SHORT:
                raise self.refused(at, "a global name longer than any admitted one")
            try:
                module = bytes(data[start:first]).decode("utf-8")
                name = bytes(data[first + 1 : second]).decode("utf-8")
            except UnicodeDecodeError:
                raise self.malformed(at, "a global name that does not decode") from None
            return module, name, second + 1

        def args_of(value):
            return value.items if type(value) is _Node and value.kind == _TUPLE else None

        utf8 = lambda raw: raw.decode("utf-8", "surrogatepass")  # noqa: E731
        ascii_ = lambda raw: raw.decode("ascii")  # noqa: E731

        while True:
            if pos >= end:
                raise self.malformed(pos, "the pickle ends without STOP")
            at = pos
            op = data[pos]
            pos += 1
            if pushing[op]:
                pushes += 1
                if pushes > max_objects:
                    raise _limit_error(self.source, f"more than {max_objects} objects", "max_objects")
            try:
                # Most frequent opcodes first.
                if op == _BINPUT or op == _MEMOIZE:
                    if len(stack) <= (marks[-1] if marks else 0):
                        raise self.malformed(at, "stack underflow")
                    if op == _BINPUT:
                        memo[data[pos]] = stack[-1]
                        pos += 1
                    else:
                        memo[memo_index(at, len(memo))] = stack[-1]
                elif op == _BINGET or op == _LONG_BINGET or op == _GET:
                    if op == _BINGET:
                        index, pos = data[pos], pos + 1
                    elif op == _LONG_BINGET:
                        index, pos = _U4(data, pos)[0], pos + 4
                    else:
                        newline = line(at, pos)
                        index, pos = text_int(at, pos, newline), newline + 1
                    if index not in memo:
                        raise self.malformed(at, f"memo key {index} was never stored")
                    push(memo[index])
                elif op == _SHORT_BINUNICODE or op == _BINUNICODE or op == _BINUNICODE8:
                    if op == _SHORT_BINUNICODE:
                        length, pos = data[pos], pos + 1
                    elif op == _BINUNICODE:
                        length, pos = _U4(data, pos)[0], pos + 4
                    else:
                        length, pos = _U8(data, pos)[0], pos + 8
                    stop = payload(at, pos, length)
                    push(short_text(at, pos, stop, utf8))
                    pos = stop
                elif op == _BININT1:
                    push(data[pos])
                    pos += 1
                elif op == _BININT2:
                    push(_U2(data, pos)[0])
                    pos += 2
                elif op == _BININT:
                    push(_I4(data, pos)[0])
                    pos += 4
                elif op == _MARK:
                    marks.append(len(stack))
                    if len(marks) > max_depth:
                        raise self.too_deep()
                elif op == _TUPLE1 or op == _TUPLE2 or op == _TUPLE3:
                    push(self.container(_TUPLE, top_items(at, op - _TUPLE1 + 1), keep_items=True))
                elif op == _TUPLE_OP:
                    push(self.container(_TUPLE, pop_mark(at), keep_items=True))
                elif op == _EMPTY_TUPLE:
                    push(_Node(_TUPLE, items=()))
                elif op == _APPENDS:
                    items = pop_mark(at)
                    self.absorb(at, top(at), _LIST, items)
                elif op == _APPEND:
                    (value,) = top_items(at, 1)
                    self.absorb(at, top(at), _LIST, (value,))
                elif op == _SETITEMS:
                    items = pop_mark(at)
                    if len(items) % 2:
                        raise self.malformed(at, "an odd number of items for SETITEMS")
                    self.absorb(at, top(at), _DICT, items)
                elif op == _SETITEM:
                    items = top_items(at, 2)
                    self.absorb(at, top(at), _DICT, items)
                elif op == _EMPTY_LIST:
                    push(_Node(_LIST))
                elif op == _EMPTY_DICT:
                    push(_Node(_DICT))
                elif op == _NEWFALSE:
                    push(False)
                elif op == _NEWTRUE:
                    push(True)
                elif op == _NONE:
                    push(None)
                elif op == _BINFLOAT:
                    if pos + 8 > end:
                        raise self.malformed(at, "truncated")
                    push(_FLOAT)
                    pos += 8
                elif op == _SHORT_BINBYTES or op == _BINBYTES or op == _BINBYTES8 or op == _BYTEARRAY8:
                    if op == _SHORT_BINBYTES:
                        length, pos = data[pos], pos + 1
                    elif op == _BINBYTES:
                        length, pos = _U4(data, pos)[0], pos + 4
                    else:
                        length, pos = _U8(data, pos)[0], pos + 8
                    stop = payload(at, pos, length)
                    if op == _BYTEARRAY8:
                        push(_BYTEARRAY)
                    else:
                        push(bytes(data[pos:stop]) if length <= _SHORT else _LONG_BYTES)
                    pos = stop
                elif op == _REDUCE:
                    func, args = top_items(at, 2)
                    push(self.call(at, func, args_of(args), new=False))
                elif op == _BUILD:
                    (state,) = top_items(at, 1)
                    self.build(at, top(at), state)
                elif op == _STACK_GLOBAL:
                    module, name = top_items(at, 2)
                    push(global_node(at, module, name))
                elif op == _GLOBAL_OP:
                    module, name, pos = text_pair(at, pos)
                    push(global_node(at, module, name))
                elif op == _LONG_BINPUT or op == _PUT:
                    if op == _LONG_BINPUT:
                        index, pos = _U4(data, pos)[0], pos + 4
                    else:
                        newline = line(at, pos)
                        index, pos = text_int(at, pos, newline), newline + 1
                    memo[memo_index(at, index)] = top(at)
                elif op == _FRAME:
                    length, pos = _U8(data, pos)[0], pos + 8
                    payload(at, pos, length)
                elif op == _PROTO:
                    protocol, pos = data[pos], pos + 1
                    if protocol > pickle.HIGHEST_PROTOCOL:
                        raise self.malformed(at, f"unsupported pickle protocol {protocol}")
                elif op == _STOP:
                    (result,) = top_items(at, 1)
                    break
                elif op == _POP:
                    if marks and marks[-1] == len(stack):
                        marks.pop()
                    else:
                        top_items(at, 1)
                elif op == _POP_MARK:
                    pop_mark(at)
                elif op == _DUP:
                    push(top(at))
                elif op == _LIST_OP:
                    push(self.container(_LIST, pop_mark(at)))
                elif op == _DICT_OP:
                    items = pop_mark(at)
                    if len(items) % 2:
                        raise self.malformed(at, "an odd number of items for DICT")
                    push(self.container(_DICT, items))
                elif op == _EMPTY_SET:
                    push(_Node(_SET))
                elif op == _ADDITEMS:
                    items = pop_mark(at)
                    self.absorb(at, top(at), _SET, items)
                elif op == _FROZENSET_OP:
                    push(self.container(_FROZENSET, pop_mark(at)))
                elif op == _NEWOBJ:
                    cls, args = top_items(at, 2)
                    push(self.call(at, cls, args_of(args), new=True))
                elif op == _NEWOBJ_EX:
                    cls, args, kwargs = top_items(at, 3)
                    if not (type(kwargs) is _Node and kwargs.kind == _DICT and kwargs.size == 1):
                        raise self.refused(at, "keyword arguments, which plain data never passes")
                    push(self.call(at, cls, args_of(args), new=True))
                elif op == _INST:
                    module, name, pos = text_pair(at, pos)
                    func = global_node(at, module, name)
                    push(self.call(at, func, tuple(pop_mark(at)), new=False))
                elif op == _OBJ:
                    items = pop_mark(at)
                    if not items:
                        raise self.malformed(at, "OBJ without a class")
                    push(self.call(at, items[0], tuple(items[1:]), new=False))
                elif op == _INT or op == _LONG:
                    newline = line(at, pos)
                    raw = bytes(data[pos:newline]) if newline - pos <= 2 else b""
                    value = {b"00": False, b"01": True}.get(raw) if op == _INT else None
                    push(value if value is not None else text_int(at, pos, newline))
                    pos = newline + 1
                elif op == _LONG1 or op == _LONG4:
                    if op == _LONG1:
                        length, pos = data[pos], pos + 1
                    else:
                        length, pos = _I4(data, pos)[0], pos + 4
                        if length < 0:
                            raise self.malformed(at, "a negative length")
                    stop = payload(at, pos, length)
                    push(int.from_bytes(data[pos:stop], "little", signed=True) if length <= 64 else _BIG_INT)
                    pos = stop
                elif op == _FLOAT_OP:
                    pos = line(at, pos) + 1
                    push(_FLOAT)
                elif op == _SHORT_BINSTRING or op == _BINSTRING:
                    if op == _SHORT_BINSTRING:
                        length, pos = data[pos], pos + 1
                    else:
                        length, pos = _I4(data, pos)[0], pos + 4
                        if length < 0:
                            raise self.malformed(at, "a negative length")
                    stop = payload(at, pos, length)
                    push(short_text(at, pos, stop, ascii_) if length <= _SHORT else _LONG_STR)
                    pos = stop
                elif op == _STRING:
                    newline = line(at, pos)
                    push(_TEXT)
                    pos = newline + 1
                elif op == _UNICODE:
                    newline = line(at, pos)
                    push(short_text(at, pos, newline, lambda raw: raw.decode("raw-unicode-escape")))
                    pos = newline + 1
                elif op == _NEXT_BUFFER or op == _READONLY_BUFFER:
                    raise self.refused(at, "out-of-band buffers are not admitted")
                elif op == _PERSID or op == _BINPERSID:
                    raise self.refused(at, "persistent ids are not admitted")
                elif op == _EXT1 or op == _EXT2 or op == _EXT4:
                    raise self.refused(at, "extension-registry globals are not admitted")
                else:
                    raise self.malformed(at, f"unknown opcode {bytes([op])!r}")
            except (IndexError, struct.error):
                raise self.malformed(at, "the file ends inside this opcode") from None
        expanded = result.size if type(result) is _Node else 1
        return PickleScan(
            path=self.source,
            file_bytes=end,
            protocol=protocol,
            objects=pushes,
            depth=self.deepest,
            expanded_objects=expanded,
            array_bytes=self.array_bytes,
        )


# --- the check of the loaded data ------------------------------------------------------------------------------------

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
    max_depth, max_objects = limits.max_depth, limits.max_objects
    arrays: set[int] = set()
    array_bytes = 0

    def check_array(array):
        nonlocal array_bytes
        if array.dtype.hasobject:
            raise UnsafePickleError(f"{source}: numpy arrays of Python objects are not admitted.")
        if id(array) not in arrays:
            arrays.add(id(array))
            array_bytes += array.nbytes
            if array_bytes > limits.max_total_array_bytes:
                limit = limits.max_total_array_bytes
                raise _limit_error(source, f"numpy arrays hold more than {limit} bytes", "max_total_array_bytes")

    def too_deep():
        return _limit_error(source, f"nesting deeper than {max_depth} levels", "max_depth")

    def too_large():
        return _limit_error(
            source, f"the data expands to more than {max_objects} objects through shared references", "max_objects"
        )

    if not isinstance(data, _CONTAINER_TYPES):
        if isinstance(data, np.ndarray):
            check_array(data)
        return
    done: dict[int, tuple[int, int]] = {}  # id -> (height, expanded size) of each finished container
    on_path = {id(data)}
    frames = [[data, _children(data), 1, 1]]  # container, its children, height so far, expanded size so far
    while frames:
        frame = frames[-1]
        descended = False
        for child in frame[1]:
            if isinstance(child, _CONTAINER_TYPES):
                key = id(child)
                known = done.get(key)
                if known is None:
                    if key in on_path:
                        raise UnsafePickleError(
                            f"{source}: the data contains itself (a reference cycle), which plain feature data never "
                            "does."
                        )
                    if len(frames) >= max_depth:
                        raise too_deep()
                    on_path.add(key)
                    frames.append([child, _children(child), 1, 1])
                    descended = True
                    break
                height, size = known
            elif isinstance(child, np.ndarray):
                check_array(child)
                height, size = 1, 1
            else:
                height, size = 0, 1
            if height >= frame[2]:
                frame[2] = height + 1
                if len(frames) - 1 + frame[2] > max_depth:
                    raise too_deep()
            frame[3] += size
            if frame[3] > max_objects:
                raise too_large()
        if descended:
            continue
        frames.pop()
        on_path.discard(id(frame[0]))
        done[id(frame[0])] = (frame[2], frame[3])
        if frames:
            parent = frames[-1]
            if frame[2] >= parent[2]:
                parent[2] = frame[2] + 1
                if len(frames) - 1 + parent[2] > max_depth:
                    raise too_deep()
            parent[3] += frame[3]
            if parent[3] > max_objects:
                raise too_large()
