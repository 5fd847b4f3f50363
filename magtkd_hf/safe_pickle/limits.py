"""The budgets of a load, the scan's measurements, and the errors a refused pickle raises."""

import dataclasses
import pickle

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
