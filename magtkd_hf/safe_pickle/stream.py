"""Reading opcode arguments and taking values off the stack, each checked before it is trusted."""

from .limits import _limit_error
from .model import _I4, _LONG_LINE, _LONG_STR, _SHORT, _U2, _U4, _U8, _Node, _TUPLE


def _utf8(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogatepass")  # what pickle itself writes for lone surrogates


def _ascii(raw: bytes) -> str:
    return raw.decode("ascii")


def _raw_unicode_escape(raw: bytes) -> str:
    return raw.decode("raw-unicode-escape")


def _args_of(value):
    """A call's arguments, when the pickle gave a tuple the model kept."""
    return value.items if type(value) is _Node and value.kind == _TUPLE else None


class _Stream:
    """Argument readers and stack operations of the scan; `at` is always the offset of the opcode being read."""

    # --- fixed-width arguments: each returns (value, offset after it) ---

    def u1(self, at: int):
        return self.data[at + 1], at + 2

    def u2(self, at: int):
        return _U2(self.data, at + 1)[0], at + 3

    def i4(self, at: int):
        return _I4(self.data, at + 1)[0], at + 5

    def u4(self, at: int):
        return _U4(self.data, at + 1)[0], at + 5

    def u8(self, at: int):
        return _U8(self.data, at + 1)[0], at + 9

    def i4_length(self, at: int):
        length = _I4(self.data, at + 1)[0]
        if length < 0:
            raise self.malformed(at, "a negative length")
        return length, at + 5

    def text_index(self, at: int):
        newline = self.line(at, at + 1)
        return self.text_int(at, at + 1, newline), newline + 1

    # --- text and counted arguments ---

    def line(self, at: int, start: int) -> int:
        newline = self.data.find(b"\n", start)
        if newline < 0:
            raise self.malformed(at, "a text argument without its end of line")
        return newline

    def payload(self, at: int, start: int, length: int) -> int:
        """The end of `length` bytes from `start`, checked against the file before anything reads them."""
        end = self.end
        if length > end - start:
            raise self.malformed(
                at, f"declares {length} bytes but only {max(end - start, 0)} remain in the file (truncated)"
            )
        return start + length

    def text_int(self, at: int, start: int, newline: int) -> int:
        if newline - start > _LONG_LINE:  # int() of a huge decimal takes quadratic time
            raise self.malformed(at, f"a number written with more than {_LONG_LINE} characters")
        try:
            return int(bytes(self.data[start:newline]).rstrip(b"L"))
        except ValueError:
            raise self.malformed(at, "a number that does not parse") from None

    def short_text(self, at: int, start: int, stop: int, decode):
        if stop - start > _SHORT:
            return _LONG_STR
        try:
            return decode(bytes(self.data[start:stop]))
        except (UnicodeDecodeError, ValueError):
            raise self.malformed(at, "text that does not decode") from None

    def text_pair(self, at: int, start: int):
        """The module and name lines of GLOBAL and INST, and the offset after them."""
        data = self.data
        first = self.line(at, start)
        second = self.line(at, first + 1)
        if second - start > 2 * _SHORT:
            raise self.refused(at, "a global name longer than any admitted one")
        try:
            module = bytes(data[start:first]).decode("utf-8")
            name = bytes(data[first + 1 : second]).decode("utf-8")
        except UnicodeDecodeError:
            raise self.malformed(at, "a global name that does not decode") from None
        return module, name, second + 1

    # --- the stack and the memo ---

    def top_items(self, at: int, count: int) -> list:
        stack, marks = self.stack, self.marks
        if len(stack) - (marks[-1] if marks else 0) < count:
            raise self.malformed(at, "stack underflow")
        items = stack[-count:]
        del stack[-count:]
        return items

    def pop_mark(self, at: int) -> list:
        if not self.marks:
            raise self.malformed(at, "no MARK to pop to")
        stack = self.stack
        start = self.marks.pop()
        items = stack[start:]
        del stack[start:]
        return items

    def top(self, at: int):
        stack, marks = self.stack, self.marks
        if len(stack) <= (marks[-1] if marks else 0):
            raise self.malformed(at, "stack underflow")
        return stack[-1]

    def memo_index(self, at: int, index: int) -> int:
        if index < 0:
            raise self.malformed(at, "a negative memo index")
        max_objects = self.limits.max_objects
        if index > max_objects:  # the C unpickler sizes its memo table by the largest index
            raise _limit_error(
                self.source, f"memo index {index} at byte {at} is larger than {max_objects}", "max_objects"
            )
        return index
