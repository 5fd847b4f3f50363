"""The globals a plain-data pickle may name, and the C unpickler restricted to them."""

import pickle

from .limits import UnsafePickleError

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


def _admitted_global(module: str, name: str, source: str | None = None) -> str:
    """The canonical module of an admitted global; raises `UnsafePickleError` for anything else."""
    # numpy 1.x pickles name `numpy.core`, numpy 2 `numpy._core`: both load the same functions.
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
