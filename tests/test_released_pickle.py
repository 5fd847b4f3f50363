"""`magtkd_hf.released_pickle`: plain data loads unchanged; code-running, malformed and bomb pickles are refused fast,
each with an `UnsafePickleError` naming the file and the reason, and nothing from them runs."""

import collections
import os
import pickle
import struct
import time

import numpy as np
import pytest

from magtkd_hf.released_pickle import PickleLimits, PlainDataUnpickler, UnsafePickleError, load_plain_pickle

SOURCES = ("text", "audio", "video", "audio_kd", "video_kd")
FAST = 5.0  # seconds: every hostile file must be refused within this (a child process starts in about 0.3 s)


def released_layout(num_dialogues=50, hidden=768, seed=0):
    """A stage-3 feature dict in the released layout: dialogue id -> one float32 vector per utterance."""
    rng = np.random.default_rng(seed)
    data = {key: {} for key in (*SOURCES, "speakers", "labels", "dia2utt")}
    for dialogue, length in enumerate(rng.integers(1, 12, num_dialogues)):
        for key in SOURCES:
            data[key][dialogue] = [rng.standard_normal(hidden).astype(np.float32) for _ in range(length)]
        data["speakers"][dialogue] = [int(speaker) for speaker in rng.integers(0, 304, length)]
        data["labels"][dialogue] = [int(label) for label in rng.integers(0, 7, length)]
        data["dia2utt"][dialogue] = [f"dia{dialogue}_utt{utterance}" for utterance in range(length)]
    data["vids"] = list(range(num_dialogues))
    return data


def assert_same(loaded, expected):
    """Equal plain data, numpy arrays compared by dtype, shape and values."""
    assert type(loaded) is type(expected)
    if isinstance(expected, np.ndarray):
        assert loaded.dtype == expected.dtype and loaded.shape == expected.shape
        np.testing.assert_array_equal(loaded, expected)
    elif isinstance(expected, dict):
        assert list(loaded) == list(expected)
        for key in expected:
            assert_same(loaded[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert len(loaded) == len(expected)
        for got, value in zip(loaded, expected):
            assert_same(got, value)
    else:
        assert loaded == expected


def write(tmp_path, name, blob):
    path = tmp_path / name
    path.write_bytes(blob)
    return path


def refuse(path, reason, limits=None):
    """`path` must be refused within `FAST` seconds with a message naming the file and `reason`."""
    start = time.perf_counter()
    with pytest.raises(UnsafePickleError) as raised:
        load_plain_pickle(path, limits)
    elapsed = time.perf_counter() - start
    assert elapsed < FAST, f"{path.name} took {elapsed:.3f}s to refuse"
    assert str(raised.value).startswith(f"{path}: ") and reason in str(raised.value), str(raised.value)
    return raised.value


def short_str(text):
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw  # SHORT_BINUNICODE


def stack_global(module, name):
    return short_str(module) + short_str(name) + b"\x93"  # STACK_GLOBAL


# --- plain data loads unchanged --------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 5])
def test_a_released_layout_round_trips_exactly(tmp_path, protocol):
    data = released_layout(num_dialogues=20)
    path = write(tmp_path, "features_train.pkl", pickle.dumps(data, protocol=protocol))
    assert_same(load_plain_pickle(path, PickleLimits(memory_gib=0.25)), data)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_other_plain_values_round_trip(tmp_path, protocol):
    data = {
        "ordered": collections.OrderedDict([("b", 1), ("a", [2.5, None, True, False])]),
        "tuples": ((), (1,), (1, 2), (1, 2, 3), tuple(range(100))),
        "sets": [{1, 2, 3}, frozenset({"x", "y"})],
        "numbers": [0, -1, 255, 65_535, 2**31, -(2**63), 2**200, 1.5, float("inf")],
        "text": ["", "short", "ü" * 300, "x" * 70_000],
        "bytes": [b"", b"ab", b"\xff" * 1000],
        "arrays": [np.zeros((2, 3), np.float64), np.arange(5, dtype=np.int64), np.ones(0, np.float32),
                   np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)), np.zeros(3, "V4")],
        "scalars": [np.float32(1.5), np.int64(7), np.bool_(True)],
        "shared": [[1, 2]] * 3,
    }
    if protocol < 3:  # protocol 0-2 pickles empty bytes through `builtins.bytes`, which stays refused
        data["bytes"] = data["bytes"][1:]
        data["arrays"] = [array for array in data["arrays"] if array.size]
    if protocol < 4:  # and sets through `builtins.set` / `builtins.frozenset`
        del data["sets"]
    loaded = load_plain_pickle(write(tmp_path, "plain.pkl", pickle.dumps(data, protocol=protocol)))
    assert_same(loaded, data)
    assert isinstance(loaded["ordered"], collections.OrderedDict) and loaded["shared"][0] is loaded["shared"][1]
    assert np.isfortran(next(array for array in loaded["arrays"] if array.dtype == np.int16))


def test_numpy_1_names_load_as_numpy_2_names(tmp_path):
    data = {"x": [np.arange(6, dtype=np.float32).reshape(2, 3), np.float64(2.5)]}
    blob = pickle.dumps(data, protocol=2)  # protocol 2 names globals as text lines: renaming keeps the file valid
    assert b"numpy._core" in blob
    assert_same(load_plain_pickle(write(tmp_path, "numpy1.pkl", blob.replace(b"numpy._core", b"numpy.core"))), data)


# --- code is never run -----------------------------------------------------------------------------------------------


class _Payload:
    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize("function", [os.system, eval])
def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path, function, protocol, capsys):
    marker = tmp_path / "ran"
    command = f"open({str(marker)!r}, 'w')" if function is eval else f"touch {marker}"
    data = released_layout(num_dialogues=3, hidden=8)
    data["labels"][1] = _Payload(function, command)
    path = write(tmp_path, "train.pkl", pickle.dumps(data, protocol=protocol))
    name = "eval'" if function is eval else f"'{os.system.__module__}.system'"  # protocols 0-2 name `__builtin__`
    with open(path, "rb") as handle, pytest.raises(UnsafePickleError, match=f"Refusing to unpickle global .*{name}"):
        PlainDataUnpickler(handle).load()
    if (function is eval) == (protocol < 3):  # through the child process too (it starts in about 0.3 s: only half)
        refuse(path, name)
    assert not marker.exists()
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize(
    "value, protocol",
    [
        (np.array([1, "a"], dtype=object), 2),
        (np.zeros(2, dtype=[("a", "O"), ("b", "f4")]), 4),
        (np.zeros((2, 2), "O"), 5),
    ],
    ids=["object", "object-field", "2d-object"],
)
def test_numpy_object_arrays_are_refused(tmp_path, value, protocol):
    path = write(tmp_path, "objects.pkl", pickle.dumps({"x": [value]}, protocol=protocol))
    refuse(path, "numpy arrays of Python objects are not admitted")


@pytest.mark.parametrize(
    "blob, reason",
    [
        (b"", "Ran out of input"),
        (pickle.dumps(list(range(100)), protocol=2)[:60], "Ran out of input"),
        (pickle.dumps(list(range(100)), protocol=4)[:60], "truncated"),
        (b"\x80\x04N\xff.", "invalid load key"),
        (b"\x80\x04h\x05.", "Memo value not found"),
        (b"\x80\x04a.", "underflow"),
        (b"\x80\x04N", "Ran out of input"),  # no STOP
        (b"\x80\x04KQ\x94Q.", "persistent ids are not admitted"),
        (b"\x80\x02\x82\x01.", "unregistered extension code"),
        (b"\x80\x04K\x01}K\x01b.", "state is not a dictionary"),  # BUILD of something other than an array
        (pickle.dumps(np.arange(10), protocol=5, buffer_callback=lambda buffer: False), "out-of-band data"),
    ],
    ids=["empty", "ends-2", "ends-4", "opcode", "memo", "underflow", "no-stop", "persid", "ext", "build", "oob"],
)
def test_malformed_files_are_refused(tmp_path, blob, reason):
    refuse(write(tmp_path, "bad.pkl", blob), reason)


def test_a_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_plain_pickle(tmp_path / "missing.pkl")


# --- bombs are refused fast, each named ------------------------------------------------------------------------------

MEMORY = "memory limit of 4 GiB exceeded; raise PickleLimits(memory_gib=...) if the file is trusted"
HUGE_ARRAY = (  # `_reconstruct(ndarray, (2**40,), b"b")`: 70 bytes asking numpy for 1 TiB
    b"\x80\x04" + stack_global("numpy._core.multiarray", "_reconstruct") + stack_global("numpy", "ndarray")
    + b"\x8a\x06" + (2**40).to_bytes(6, "little") + b"\x85" + b"C\x01b" + b"\x87R."
)


@pytest.mark.parametrize(
    "blob, reason",
    [
        (b"\x80\x04\x8e" + struct.pack("<Q", 16 << 30) + b".", MEMORY),  # BINBYTES8 claiming 16 GiB
        (b"\x80\x04\x8d" + struct.pack("<Q", 16 << 30) + b".", MEMORY),  # BINUNICODE8
        (b"\x80\x05\x96" + struct.pack("<Q", 16 << 30) + b".", MEMORY),  # BYTEARRAY8
        (b"\x80\x04\x95" + struct.pack("<Q", 16 << 30) + b"N.", MEMORY),  # FRAME
        (b"\x80\x03B" + struct.pack("<I", 2**31) + b".", "truncated"),  # BINBYTES: 2 GiB fit the budget
        (b"\x80\x03X" + struct.pack("<I", 2**31) + b".", "truncated"),  # BINUNICODE
        (b"\x80\x02\x8b" + struct.pack("<i", 2**31 - 1) + b".", "truncated"),  # LONG4
        (b"\x80\x02Nr" + struct.pack("<I", 2**31) + b".", MEMORY),  # a memo index of 2**31: a 32 GiB memo table
        (HUGE_ARRAY, MEMORY),
        (b"\x80\x04" + stack_global("numpy", "ndarray") + b"J\x00\x00\x00\x40\x85\x85R.", MEMORY),  # 8 GiB ndarray
    ],
    ids=["BINBYTES8", "BINUNICODE8", "BYTEARRAY8", "FRAME", "BINBYTES", "BINUNICODE", "LONG4", "memo", "1TiB",
         "ndarray"],
)
def test_memory_bombs_are_refused_fast(tmp_path, blob, reason, capsys):
    path = write(tmp_path, "tiny.pkl", blob)
    assert path.stat().st_size <= 100
    refuse(path, reason)
    assert capsys.readouterr() == ("", "")


def test_the_memory_budget_is_configurable(tmp_path):
    path = write(tmp_path, "array.pkl", pickle.dumps({"x": [np.zeros(4 << 20)]}, protocol=4))  # 32 MiB
    refuse(path, "memory limit of 0.01 GiB exceeded", PickleLimits(memory_gib=0.01))
    assert load_plain_pickle(path)["x"][0].shape == (4 << 20,)
    # A numpy scalar of a 2 GiB dtype from a 1-byte payload.
    dtype = stack_global("numpy", "dtype") + short_str(f"V{2**31 - 1}") + b"\x89\x88\x87R"
    blob = b"\x80\x04" + stack_global("numpy._core.multiarray", "scalar") + dtype + b"C\x01\x00\x86R."
    refuse(write(tmp_path, "scalar.pkl", blob), "initialization string is too small", PickleLimits(memory_gib=1))


def test_a_load_over_the_time_limit_is_killed(tmp_path):
    path = write(tmp_path, "slow.pkl", pickle.dumps(released_layout(num_dialogues=2)))
    refuse(path, "took longer than 0.01 s to load; raise PickleLimits(seconds=...) if the file is trusted",
           PickleLimits(seconds=0.01))


def shared_nested_lists(levels=60):
    value = []
    for _ in range(levels):
        value = [value, value]
    return value


@pytest.mark.parametrize("protocol", [0, 4])
def test_shared_nested_lists_are_refused_fast(tmp_path, protocol, capsys):
    path = write(tmp_path, "features_train.pkl", pickle.dumps(shared_nested_lists(), protocol=protocol))
    assert path.stat().st_size < 5_000  # expands to 2**61 - 1 lists
    refuse(path, "the data expands to more than 5000000 objects through shared references")
    assert capsys.readouterr() == ("", "")


DEPTH = 100_000


def top_down_chain(length=200):
    """`length` lists, memoized while empty and only then linked each into the one before."""
    blob = b"\x80\x04" + b"]\x94\x30" * length  # EMPTY_LIST MEMOIZE POP
    for index in range(length - 1):  # BINGET i, BINGET i + 1, APPEND, POP
        blob += b"h" + bytes([index]) + b"h" + bytes([index + 1]) + b"a0"
    return blob + b"h\x00."


@pytest.mark.parametrize(
    "blob",
    [
        b"\x80\x04" + b"]" * DEPTH + b"a" * (DEPTH - 1) + b".",  # EMPTY_LIST ..., APPEND ...
        b"(" * DEPTH + b"l" * DEPTH + b".",  # MARK ..., LIST ... (protocol 0)
        b"\x80\x04)" + b"\x85" * DEPTH + b".",  # EMPTY_TUPLE, TUPLE1 ...
        b"\x80\x04}" + b"K\x00}" * DEPTH + b"s" * DEPTH + b".",  # EMPTY_DICT, (key 0, EMPTY_DICT) ..., SETITEM ...
        top_down_chain(),
    ],
    ids=["lists", "marks", "tuples", "dicts", "linked-after-memoizing"],
)
def test_deep_nesting_is_refused_fast(tmp_path, blob):
    refuse(write(tmp_path, "features_train.pkl", blob), "nesting deeper than 100 levels")


def test_nesting_of_100_levels_loads_and_a_cycle_is_refused(tmp_path):
    path = write(tmp_path, "deep.pkl", b"\x80\x04" + b"]" * 100 + b"a" * 99 + b".")
    value = load_plain_pickle(path)
    for _ in range(99):
        (value,) = value
    assert value == []
    cycle = []
    cycle.append({"again": cycle})
    refuse(write(tmp_path, "cycle.pkl", pickle.dumps(cycle)), "the data contains itself (a reference cycle)")
