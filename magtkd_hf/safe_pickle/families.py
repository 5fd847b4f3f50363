"""Handler factories for families of opcodes that differ only in an argument's encoding or a container's kind.

A handler takes the scanner and the offset of its opcode, and returns the offset of the next opcode.
"""

from .model import _BIG_INT, _LONG_BYTES, _SHORT, _TUPLE, _Node
from .stream import _args_of


def _memo_get(read):
    def handler(self, at):
        index, pos = read(self, at)
        memo = self.memo
        if index not in memo:
            raise self.malformed(at, f"memo key {index} was never stored")
        self.stack.append(memo[index])
        return pos

    return handler


def _memo_put(read):
    def handler(self, at):
        index, pos = read(self, at)
        value = self.top(at)  # underflow is reported before a bad index
        self.memo[self.memo_index(at, index)] = value
        return pos

    return handler


def _push_number(read):
    def handler(self, at):
        value, pos = read(self, at)
        self.stack.append(value)
        return pos

    return handler


def _counted_text(read, decode):
    def handler(self, at):
        length, pos = read(self, at)
        stop = self.payload(at, pos, length)
        self.stack.append(self.short_text(at, pos, stop, decode))
        return stop

    return handler


def _counted_bytes(read, opaque=None):
    def handler(self, at):
        length, pos = read(self, at)
        stop = self.payload(at, pos, length)
        if opaque is not None:
            self.stack.append(opaque)
        else:
            self.stack.append(bytes(self.data[pos:stop]) if length <= _SHORT else _LONG_BYTES)
        return stop

    return handler


def _long_int(read):
    def handler(self, at):
        length, pos = read(self, at)
        stop = self.payload(at, pos, length)
        self.stack.append(int.from_bytes(self.data[pos:stop], "little", signed=True) if length <= 64 else _BIG_INT)
        return stop

    return handler


def _text_number(booleans):
    """INT (whose `00` / `01` are False / True) and LONG: a decimal line."""

    def handler(self, at):
        pos = at + 1
        newline = self.line(at, pos)
        raw = bytes(self.data[pos:newline]) if newline - pos <= 2 else b""
        value = {b"00": False, b"01": True}.get(raw) if booleans else None
        self.stack.append(value if value is not None else self.text_int(at, pos, newline))
        return newline + 1

    return handler


def _skip_line(opaque):
    """FLOAT and STRING: a text line the model does not keep."""

    def handler(self, at):
        newline = self.line(at, at + 1)
        self.stack.append(opaque)
        return newline + 1

    return handler


def _push_constant(value):
    def handler(self, at):
        self.stack.append(value)
        return at + 1

    return handler


def _push_empty(kind, items=None):
    def handler(self, at):
        self.stack.append(_Node(kind, items=items))
        return at + 1

    return handler


def _from_mark(kind, keep_items=False, pairs_of=None):
    """LIST, DICT, TUPLE, FROZENSET: a container of the items above the last MARK."""

    def handler(self, at):
        items = self.pop_mark(at)
        if pairs_of and len(items) % 2:
            raise self.malformed(at, f"an odd number of items for {pairs_of}")
        self.stack.append(self.container(kind, items, keep_items))
        return at + 1

    return handler


def _tuple_of(count):
    def handler(self, at):
        self.stack.append(self.container(_TUPLE, self.top_items(at, count), keep_items=True))
        return at + 1

    return handler


def _add_marked(kind, pairs_of=None):
    """APPENDS, SETITEMS, ADDITEMS: add the items above the last MARK to the container below it."""

    def handler(self, at):
        items = self.pop_mark(at)
        if pairs_of and len(items) % 2:
            raise self.malformed(at, f"an odd number of items for {pairs_of}")
        self.absorb(at, self.top(at), kind, items)
        return at + 1

    return handler


def _add_top(kind, count):
    """APPEND, SETITEM: add the top `count` values to the container below them."""

    def handler(self, at):
        items = self.top_items(at, count)
        self.absorb(at, self.top(at), kind, items)
        return at + 1

    return handler


def _call_top(new):
    """REDUCE and NEWOBJ: a callable and its argument tuple."""

    def handler(self, at):
        func, args = self.top_items(at, 2)
        self.stack.append(self.call(at, func, _args_of(args), new=new))
        return at + 1

    return handler


def _refuse(why):
    def handler(self, at):
        raise self.refused(at, why)

    return handler
