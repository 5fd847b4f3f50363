"""The scan's opcode machine: a dispatch table from each opcode byte to a small handler."""

import pickle
import struct

from . import opcodes as op
from .families import (
    _add_marked,
    _add_top,
    _call_top,
    _counted_bytes,
    _counted_text,
    _from_mark,
    _long_int,
    _memo_get,
    _memo_put,
    _push_constant,
    _push_empty,
    _push_number,
    _refuse,
    _skip_line,
    _text_number,
    _tuple_of,
)
from .limits import PickleScan, _limit_error
from .model import _BYTEARRAY, _DICT, _FLOAT, _FROZENSET, _LIST, _SET, _TEXT, _TUPLE, _Node
from .numpy_model import _NumpyModel
from .stream import _args_of, _ascii, _raw_unicode_escape, _Stream, _utf8


class _Scanner(_Stream, _NumpyModel):
    """Follows a pickle's opcodes like the unpickler does, but with a model of the values that allocates nothing."""

    def run(self) -> PickleScan:
        data, end, dispatch, pushing = self.data, self.end, _DISPATCH, op.PUSHES
        max_objects = self.limits.max_objects
        pushes = pos = at = 0
        try:
            while pos < end:
                at = pos
                code = data[pos]
                if pushing[code]:  # counted before the handler builds anything
                    pushes += 1
                    if pushes > max_objects:
                        raise _limit_error(self.source, f"more than {max_objects} objects", "max_objects")
                pos = dispatch[code](self, at)
        except (IndexError, struct.error):
            raise self.malformed(at, "the file ends inside this opcode") from None
        if not self.stopped:
            raise self.malformed(pos, "the pickle ends without STOP")
        result = self.result
        return PickleScan(
            path=self.source,
            file_bytes=end,
            protocol=self.protocol,
            objects=pushes,
            depth=self.deepest,
            expanded_objects=result.size if type(result) is _Node else 1,
            array_bytes=self.array_bytes,
        )

    # --- framing ---

    def op_proto(self, at):
        protocol = self.data[at + 1]
        if protocol > pickle.HIGHEST_PROTOCOL:
            raise self.malformed(at, f"unsupported pickle protocol {protocol}")
        self.protocol = protocol
        return at + 2

    def op_frame(self, at):
        length, pos = self.u8(at)
        self.payload(at, pos, length)  # the frame's opcodes are read in place, but it must fit in the file
        return pos

    def op_stop(self, at):
        (self.result,) = self.top_items(at, 1)
        self.stopped = True
        return self.end  # anything after STOP is ignored, as the unpickler does

    def op_unknown(self, at):
        raise self.malformed(at, f"unknown opcode {bytes([self.data[at]])!r}")

    # --- the stack and the memo ---

    def op_mark(self, at):
        marks = self.marks
        marks.append(len(self.stack))
        if len(marks) > self.limits.max_depth:
            raise self.too_deep()
        return at + 1

    def op_pop(self, at):
        marks = self.marks
        if marks and marks[-1] == len(self.stack):
            marks.pop()  # POP of a bare MARK drops the mark
        else:
            self.top_items(at, 1)
        return at + 1

    def op_pop_mark(self, at):
        self.pop_mark(at)
        return at + 1

    def op_dup(self, at):
        self.stack.append(self.top(at))
        return at + 1

    def op_binput(self, at):
        # A one-byte index is never negative and 256 memo slots cost nothing, so it skips memo_index.
        value = self.top(at)
        self.memo[self.data[at + 1]] = value
        return at + 2

    def op_memoize(self, at):
        value = self.top(at)
        memo = self.memo
        memo[self.memo_index(at, len(memo))] = value
        return at + 1

    # --- leaves that need more than a reader ---

    def op_binfloat(self, at):
        if at + 9 > self.end:
            raise self.malformed(at, "truncated")
        self.stack.append(_FLOAT)
        return at + 9

    def op_unicode(self, at):
        newline = self.line(at, at + 1)
        self.stack.append(self.short_text(at, at + 1, newline, _raw_unicode_escape))
        return newline + 1

    # --- globals, calls and states ---

    def op_global(self, at):
        module, name, pos = self.text_pair(at, at + 1)
        self.stack.append(self.global_node(at, module, name))
        return pos

    def op_stack_global(self, at):
        module, name = self.top_items(at, 2)
        self.stack.append(self.global_node(at, module, name))
        return at + 1

    def op_newobj_ex(self, at):
        cls, args, kwargs = self.top_items(at, 3)
        if not (type(kwargs) is _Node and kwargs.kind == _DICT and kwargs.size == 1):
            raise self.refused(at, "keyword arguments, which plain data never passes")
        self.stack.append(self.call(at, cls, _args_of(args), new=True))
        return at + 1

    def op_inst(self, at):
        module, name, pos = self.text_pair(at, at + 1)
        func = self.global_node(at, module, name)
        self.stack.append(self.call(at, func, tuple(self.pop_mark(at)), new=False))
        return pos

    def op_obj(self, at):
        items = self.pop_mark(at)
        if not items:
            raise self.malformed(at, "OBJ without a class")
        self.stack.append(self.call(at, items[0], tuple(items[1:]), new=False))
        return at + 1

    def op_build(self, at):
        (state,) = self.top_items(at, 1)
        self.build(at, self.top(at), state)
        return at + 1


_S = _Scanner
_HANDLERS = {
    # framing
    op.PROTO: _S.op_proto,
    op.FRAME: _S.op_frame,
    op.STOP: _S.op_stop,
    # the stack and the memo
    op.MARK: _S.op_mark,
    op.POP: _S.op_pop,
    op.POP_MARK: _S.op_pop_mark,
    op.DUP: _S.op_dup,
    op.BINPUT: _S.op_binput,
    op.LONG_BINPUT: _memo_put(_S.u4),
    op.PUT: _memo_put(_S.text_index),
    op.MEMOIZE: _S.op_memoize,
    op.BINGET: _memo_get(_S.u1),
    op.LONG_BINGET: _memo_get(_S.u4),
    op.GET: _memo_get(_S.text_index),
    # numbers
    op.NONE: _push_constant(None),
    op.NEWTRUE: _push_constant(True),
    op.NEWFALSE: _push_constant(False),
    op.BININT1: _push_number(_S.u1),
    op.BININT2: _push_number(_S.u2),
    op.BININT: _push_number(_S.i4),
    op.LONG1: _long_int(_S.u1),
    op.LONG4: _long_int(_S.i4_length),
    op.INT: _text_number(booleans=True),
    op.LONG: _text_number(booleans=False),
    op.BINFLOAT: _S.op_binfloat,
    op.FLOAT: _skip_line(_FLOAT),
    # strings and bytes
    op.SHORT_BINUNICODE: _counted_text(_S.u1, _utf8),
    op.BINUNICODE: _counted_text(_S.u4, _utf8),
    op.BINUNICODE8: _counted_text(_S.u8, _utf8),
    op.SHORT_BINSTRING: _counted_text(_S.u1, _ascii),
    op.BINSTRING: _counted_text(_S.i4_length, _ascii),
    op.UNICODE: _S.op_unicode,
    op.STRING: _skip_line(_TEXT),
    op.SHORT_BINBYTES: _counted_bytes(_S.u1),
    op.BINBYTES: _counted_bytes(_S.u4),
    op.BINBYTES8: _counted_bytes(_S.u8),
    op.BYTEARRAY8: _counted_bytes(_S.u8, opaque=_BYTEARRAY),
    # containers
    op.EMPTY_LIST: _push_empty(_LIST),
    op.EMPTY_DICT: _push_empty(_DICT),
    op.EMPTY_SET: _push_empty(_SET),
    op.EMPTY_TUPLE: _push_empty(_TUPLE, items=()),
    op.LIST: _from_mark(_LIST),
    op.DICT: _from_mark(_DICT, pairs_of="DICT"),
    op.FROZENSET: _from_mark(_FROZENSET),
    op.TUPLE: _from_mark(_TUPLE, keep_items=True),
    op.TUPLE1: _tuple_of(1),
    op.TUPLE2: _tuple_of(2),
    op.TUPLE3: _tuple_of(3),
    op.APPEND: _add_top(_LIST, 1),
    op.SETITEM: _add_top(_DICT, 2),
    op.APPENDS: _add_marked(_LIST),
    op.SETITEMS: _add_marked(_DICT, pairs_of="SETITEMS"),
    op.ADDITEMS: _add_marked(_SET),
    # globals, calls and states
    op.GLOBAL: _S.op_global,
    op.STACK_GLOBAL: _S.op_stack_global,
    op.REDUCE: _call_top(new=False),
    op.NEWOBJ: _call_top(new=True),
    op.NEWOBJ_EX: _S.op_newobj_ex,
    op.INST: _S.op_inst,
    op.OBJ: _S.op_obj,
    op.BUILD: _S.op_build,
    # never in plain data
    op.NEXT_BUFFER: _refuse("out-of-band buffers are not admitted"),
    op.READONLY_BUFFER: _refuse("out-of-band buffers are not admitted"),
    op.PERSID: _refuse("persistent ids are not admitted"),
    op.BINPERSID: _refuse("persistent ids are not admitted"),
    op.EXT1: _refuse("extension-registry globals are not admitted"),
    op.EXT2: _refuse("extension-registry globals are not admitted"),
    op.EXT4: _refuse("extension-registry globals are not admitted"),
}
del _S
# Indexed by opcode byte: a tuple lookup is faster than a dict lookup in the scan's innermost loop.
_DISPATCH = tuple(_HANDLERS.get(code, _Scanner.op_unknown) for code in range(256))
