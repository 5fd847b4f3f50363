"""
Read pickles of plain data (containers, numbers, strings and numpy arrays) without running code from them.

[`PlainDataUnpickler`] admits only the globals such a pickle names. A few bytes of pickle can still ask for terabytes
or expand to billions of objects through shared references, so [`load_plain_pickle`] loads in a child process under
memory (`RLIMIT_AS`, Linux) and wall-clock limits, and the child checks what it built before handing it back. The
child runs this very file as a script: it imports only the standard library and numpy, not torch.
"""

import dataclasses
import io
import itertools
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np

# The globals a pickle of plain data names (numpy 2 writes `numpy._core`, numpy 1.x `numpy.core`).
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("collections", "OrderedDict"),
}
_NUMPY_CORE = "numpy._core" if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else "numpy.core"
_CONTAINERS = (list, tuple, dict, set, frozenset)
# The released layout nests 4 levels (dict -> dict -> list -> array) and holds about 50 objects per utterance (MELD:
# 13,708 utterances); 100 levels also stays far below Python's recursion limit for code that walks the result.
MAX_DEPTH = 100
MAX_OBJECTS = 5_000_000
_REFUSED = 3  # the child's exit status for a refusal, whose reason is the last line of its stderr


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle was refused (a global outside the plain-data allow-list, a malformed or hostile file, a limit
    exceeded); nothing from it was executed."""


@dataclasses.dataclass(frozen=True)
class PickleLimits:
    """
    Budgets of [`load_plain_pickle`]. The defaults admit the authors' released MELD and IEMOCAP stage-3 feature files
    with wide margins: a MELD-sized file (13,708 utterances x 5 sources x 768 float32, 323 MB with protocol 2) loads
    within 1 GiB (not within 0.5) in about 15 s on 2 busy CPU cores.

    Args:
        memory_gib (`float`, defaults to 4): the memory the load may take beyond the child's interpreter and numpy.
        seconds (`float`, defaults to 300): the wall-clock time the load may take; the child is then killed.
    """

    memory_gib: float = 4.0
    seconds: float = 300.0


class PlainDataUnpickler(pickle.Unpickler):
    """Unpickles only plain containers, numbers, strings and numpy arrays; any other global is refused by name. It
    bounds neither memory nor time: use [`load_plain_pickle`] for files that may be hostile."""

    def find_class(self, module: str, name: str):
        key = (module.replace("numpy._core.", "numpy.core.", 1), name)
        if key not in _ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"Refusing to unpickle global '{module}.{name}': only plain containers, numbers, strings and numpy "
                "arrays are admitted."
            )
        return super().find_class(key[0].replace("numpy.core", _NUMPY_CORE, 1), name)

    def persistent_load(self, pid):
        raise UnsafePickleError("persistent ids are not admitted in plain data.")


def load_plain_pickle(path: str | Path, limits: PickleLimits | None = None):
    """
    Load a pickle of plain data in a child process within `limits` (default [`PickleLimits`]`()`).

    Raises:
        `UnsafePickleError` (a `pickle.UnpicklingError`) naming the file and the reason; nothing from it is executed.
        `OSError` when the file cannot be opened.
    """
    limits = PickleLimits() if limits is None else limits
    open(path, "rb").close()  # a missing or unreadable file is the usual OSError, raised here
    run_this_file = "import runpy, sys; runpy.run_path(sys.argv.pop(1), run_name='__main__')"
    command = [sys.executable, "-c", run_this_file, __file__, str(path), f"{limits.memory_gib:g}"]
    try:
        child = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=limits.seconds)
    except subprocess.TimeoutExpired:  # `run` has killed the child
        raise UnsafePickleError(
            f"{path}: took longer than {limits.seconds:g} s to load; raise PickleLimits(seconds=...) if the file is "
            "trusted."
        ) from None
    if child.returncode != 0:
        lines = child.stderr.decode(errors="replace").strip().splitlines() or ["(no message)"]
        reason = lines[-1] if child.returncode == _REFUSED else f"the loading process failed ({lines[-1]})"
        raise UnsafePickleError(f"{path}: {reason}")
    # The child built the data with the allow-list and checked it, then pickled it again: only plain data comes back,
    # and reading it with the same unpickler keeps that true.
    return PlainDataUnpickler(io.BytesIO(child.stdout)).load()


def _read_plain(path: str):
    """What the child computes: the file's data, loaded with the allow-list and checked."""
    try:
        with open(path, "rb") as handle:
            data = PlainDataUnpickler(handle).load()
    except (UnsafePickleError, MemoryError):
        raise
    except Exception as error:  # a malformed pickle raises many types (EOFError, ValueError, UnpicklingError, ...)
        reason = f"{type(error).__name__}: {str(error).rstrip('.')}"
        raise UnsafePickleError(f"not a plain-data pickle ({reason}).") from None
    _check_plain(data)
    return data


def _check_plain(data) -> None:
    """Refuse numpy object arrays, reference cycles, nesting deeper than `MAX_DEPTH` and data that expands to more
    than `MAX_OBJECTS` objects when shared references are counted again; each distinct container is walked once."""
    measured: dict[int, tuple[int, int]] = {}  # id -> (height, expanded size) of each container walked
    open_ids: set[int] = set()  # the containers being walked: meeting one again is a cycle

    def measure(value, depth: int) -> tuple[int, int]:
        if isinstance(value, (np.ndarray, np.generic)) and value.dtype.hasobject:
            raise UnsafePickleError("numpy arrays of Python objects are not admitted.")
        if not isinstance(value, _CONTAINERS):
            return 0, 1
        key = id(value)
        if key in open_ids:
            raise UnsafePickleError("the data contains itself (a reference cycle), which plain data never does.")
        if key not in measured:
            if depth >= MAX_DEPTH:  # the recursion stops here, far below Python's limit
                raise UnsafePickleError(f"nesting deeper than {MAX_DEPTH} levels.")
            open_ids.add(key)
            height, size = 0, 1
            for child in itertools.chain.from_iterable(value.items()) if isinstance(value, dict) else value:
                child_height, child_size = measure(child, depth + 1)
                height, size = max(height, child_height), size + child_size
                if size > MAX_OBJECTS:
                    raise UnsafePickleError(
                        f"the data expands to more than {MAX_OBJECTS} objects through shared references."
                    )
            open_ids.discard(key)
            measured[key] = (height + 1, size)
        if depth + measured[key][0] > MAX_DEPTH:  # a shared container met again, deeper than before
            raise UnsafePickleError(f"nesting deeper than {MAX_DEPTH} levels.")
        return measured[key]

    measure(data, 0)


def _child_main(path: str, memory_gib: str) -> int:
    """The child: write the checked data of `path` to stdout (exit 0), or the reason of a refusal to stderr (exit
    `_REFUSED`)."""
    import resource

    # The budget counts from the interpreter's current size: numpy and its thread pools already reserve address space.
    with open("/proc/self/statm") as statm:
        in_use = int(statm.read().split()[0]) * resource.getpagesize()
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    limit = in_use + int(float(memory_gib) * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    try:
        pickle.dump(_read_plain(path), sys.stdout.buffer, protocol=5)
    except MemoryError:
        print(f"memory limit of {memory_gib} GiB exceeded; raise PickleLimits(memory_gib=...) if the file is trusted.",
              file=sys.stderr)
        return _REFUSED
    except UnsafePickleError as error:
        print(error, file=sys.stderr)
        return _REFUSED
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(*sys.argv[1:]))
