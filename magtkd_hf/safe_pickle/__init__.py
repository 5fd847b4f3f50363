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

from .allowed import PlainDataUnpickler
from .limits import PickleLimitError, PickleLimits, PickleScan, UnsafePickleError
from .loader import _reject_object_arrays, load_plain_pickle, scan_plain_pickle

__all__ = [
    "PickleLimitError",
    "PickleLimits",
    "PickleScan",
    "PlainDataUnpickler",
    "UnsafePickleError",
    "load_plain_pickle",
    "scan_plain_pickle",
]
