"""What calls of the admitted globals (numpy reconstruction, OrderedDict, latin-1 encoding) would build and cost."""

import numpy as np

from .allowed import _admitted_global
from .limits import _limit_error
from .model import _ARRAY, _DICT, _DTYPE, _GLOBAL, _LONG_BYTES, _LONG_STR, _SCALAR, _TUPLE, _Model, _Node

_LATIN1 = {"latin1", "latin-1", "latin_1"}
_MAX_CACHED_DTYPES = 1024  # a hostile file could ask for endless distinct dtypes


class _NumpyModel(_Model):
    """Models globals, calls and BUILDs, counting the bytes numpy arrays ask for before any is allocated."""

    def global_node(self, at: int, module, name) -> _Node:
        if not (isinstance(module, str) and isinstance(name, str)):
            raise self.refused(at, "a global whose module and name are not plain strings")
        return _Node(_GLOBAL, 0, 1, info=(_admitted_global(module, name, self.source), name))

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
            if len(self.dtypes) < _MAX_CACHED_DTYPES:
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
                break  # already over budget: stop before the product grows huge
        return count

    def call(self, at: int, func, args, new: bool):
        """The value a call of `func(*args)` (`func.__new__(func, *args)` when `new`) would build."""
        if type(func) is not _Node or func.kind != _GLOBAL:
            raise self.refused(at, "calls something that is not an admitted global")
        if args is None:
            raise self.refused(at, "call arguments that are not a short tuple")
        target = func.info
        if target == ("collections", "OrderedDict"):
            return self.ordered_dict(at, args, new)
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
            return self.latin1_encode(at, args)
        raise self.refused(at, f"'{target[0]}.{target[1]}' cannot be called")  # numpy.ndarray

    def ordered_dict(self, at: int, args, new: bool) -> _Node:
        if new or not args:
            return _Node(_DICT)
        if len(args) > 1:
            raise self.refused(at, "OrderedDict called with more than one argument")
        (value,) = args
        height = max(1, value.height if type(value) is _Node else 0)
        size = 1 + (value.size if type(value) is _Node else 1)
        self.check(height, size)
        return _Node(_DICT, height, size)

    def latin1_encode(self, at: int, args):
        """Protocol 2 stores bytes as `_codecs.encode(text, 'latin1')`."""
        if len(args) != 2 or args[1] not in _LATIN1 or not (isinstance(args[0], str) or args[0] is _LONG_STR):
            raise self.refused(at, "_codecs.encode is admitted only as encode(text, 'latin1')")
        if args[0] is _LONG_STR:
            return _LONG_BYTES
        try:
            return args[0].encode("latin1")
        except UnicodeEncodeError:
            raise self.malformed(at, "text that latin-1 cannot encode") from None

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
                target.info = elsize  # the state may give a flexible dtype a larger itemsize than its constructor
        else:
            raise self.refused(at, "sets the state of an object other than a numpy array or dtype")
