import collections
import dataclasses
import os
import pickle
import struct
import time
import tracemalloc

import numpy as np
import pytest

from magtkd_hf.safe_pickle import (
    PickleLimitError,
    PickleLimits,
    PlainDataUnpickler,
    UnsafePickleError,
    _reject_object_arrays,
    load_plain_pickle,
    scan_plain_pickle,
)

SOURCES = ("text", "audio", "video", "audio_kd", "video_kd")
MELD_UTTERANCES = 13_708  # the larger released corpus (IEMOCAP: 7,433)
FAST = 1.0  # seconds: every hostile file must be refused well within this


def released_layout(num_dialogues=50, hidden=768, seed=0):
    """A stage-3 feature dict in the released layout: dialogue id -> one float32 vector per utterance."""
    rng = np.random.default_rng(seed)
    data = {key: {} for key in (*SOURCES, "speakers", "labels", "dia2utt")}
    lengths = rng.integers(1, 12, num_dialogues)
    for dialogue, length in enumerate(lengths):
        for key in SOURCES:
            data[key][dialogue] = [rng.standard_normal(hidden).astype(np.float32) for _ in range(length)]
        data["speakers"][dialogue] = [int(speaker) for speaker in rng.integers(0, 304, length)]
        data["labels"][dialogue] = [int(label) for label in rng.integers(0, 7, length)]
        data["dia2utt"][dialogue] = [f"dia{dialogue}_utt{utterance}" for utterance in range(length)]
    data["vids"] = list(range(num_dialogues))
    return data, int(lengths.sum())


def assert_same(loaded, data):
    assert set(loaded) == set(data)
    assert loaded["vids"] == data["vids"]
    for key in ("speakers", "labels", "dia2utt"):
        assert loaded[key] == data[key]
    for key in SOURCES:
        assert list(loaded[key]) == list(data[key])
        for dialogue, vectors in data[key].items():
            assert len(loaded[key][dialogue]) == len(vectors)
            for got, expected in zip(loaded[key][dialogue], vectors):
                assert got.dtype == np.float32 and got.shape == expected.shape
                np.testing.assert_array_equal(got, expected)


def write(tmp_path, name, blob):
    path = tmp_path / name
    path.write_bytes(blob)
    return path


def refuse(path, limits=None, error=UnsafePickleError, traced=False):
    """
    Load `path`, which must be refused with `error` within `FAST` seconds; when `traced`, a second try under
    tracemalloc must also allocate little before the refusal.
    """
    start = time.perf_counter()
    with pytest.raises(error) as raised:
        load_plain_pickle(path, limits)
    elapsed = time.perf_counter() - start
    assert elapsed < FAST, f"{path.name} took {elapsed:.3f}s to refuse"
    assert str(path) in str(raised.value)
    if traced:
        tracemalloc.start()
        try:
            with pytest.raises(error):
                load_plain_pickle(path, limits)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 1 << 20, f"{path.name} allocated {peak} bytes before being refused"
    return raised.value


def short_str(text):
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw  # SHORT_BINUNICODE


def stack_global(module, name):
    return short_str(module) + short_str(name) + b"\x93"  # STACK_GLOBAL


# --- plain data loads unchanged --------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_released_layout_round_trips_exactly(tmp_path, protocol):
    data, _ = released_layout()
    path = tmp_path / "features_train.pkl"
    with open(path, "wb") as handle:
        pickle.dump(data, handle, protocol=protocol)
    assert_same(load_plain_pickle(path), data)


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
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    loaded = load_plain_pickle(path)
    arrays = loaded.pop("arrays")
    expected_arrays = data.pop("arrays")
    assert loaded == data
    assert isinstance(loaded["ordered"], collections.OrderedDict) and list(loaded["ordered"]) == ["b", "a"]
    for got, expected in zip(arrays, expected_arrays, strict=True):
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)


def test_the_default_limits_admit_a_meld_sized_file_twice_over(tmp_path):
    limits = PickleLimits()
    data, utterances = released_layout(num_dialogues=40)
    for protocol in (2, 4, 5):
        path = tmp_path / f"features_{protocol}.pkl"
        path.write_bytes(pickle.dumps(data, protocol=protocol))
        scan = scan_plain_pickle(path)
        assert scan.protocol == protocol and scan.file_bytes == path.stat().st_size
        assert scan.array_bytes == sum(v.nbytes for key in SOURCES for vs in data[key].values() for v in vs)
        assert scan.depth == 4  # dict -> dict -> list -> array
        assert scan.depth * 2 <= limits.max_depth
        # Everything but the depth grows with the utterances: scale the measured cost per utterance up to MELD.
        for measured, limit in [
            (scan.objects, limits.max_objects),
            (scan.expanded_objects, limits.max_objects),
            (scan.array_bytes, limits.max_total_array_bytes),
            (scan.file_bytes, limits.max_file_bytes),
        ]:
            assert 2 * measured / utterances * MELD_UTTERANCES <= limit, (protocol, measured, limit)


def test_limits_are_validated_and_frozen():
    assert PickleLimits() == PickleLimits(8 << 30, 5_000_000, 100, 4 << 30)
    with pytest.raises(dataclasses.FrozenInstanceError):
        PickleLimits().max_depth = 5
    for bad in (0, -1, 1.5, True, None):
        with pytest.raises(ValueError, match="max_depth"):
            PickleLimits(max_depth=bad)
    assert issubclass(PickleLimitError, UnsafePickleError) and issubclass(UnsafePickleError, pickle.UnpicklingError)


# --- hostile files are refused fast ----------------------------------------------------------------------------------


def shared_nested_lists(levels=60):
    value = []
    for _ in range(levels):
        value = [value, value]
    return value


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_shared_nested_lists_are_refused_fast(tmp_path, protocol, capsys):
    path = write(tmp_path, "features_train.pkl", pickle.dumps(shared_nested_lists(), protocol=protocol))
    assert path.stat().st_size < 5_000  # expands to 2**61 - 1 lists
    error = refuse(path, error=PickleLimitError)
    assert error.limit == "max_objects" and error.path == str(path)
    assert "expands to more than 5000000 objects through shared references" in str(error)
    assert "raise PickleLimits(max_objects=...) if the file is trusted" in str(error)
    assert capsys.readouterr() == ("", "")


def test_shared_nested_lists_under_raised_limits_are_checked_once_per_list(tmp_path):
    path = write(tmp_path, "shared.pkl", pickle.dumps(shared_nested_lists(), protocol=4))
    start = time.perf_counter()
    value = load_plain_pickle(path, PickleLimits(max_objects=2**62))
    assert time.perf_counter() - start < FAST
    assert value[0] is value[1] and value[0][0] is value[0][1]


@pytest.mark.parametrize(
    "name, blob",
    [
        ("BINBYTES8", b"\x80\x04\x8e" + struct.pack("<Q", 16 << 30) + b"."),
        ("BINUNICODE8", b"\x80\x04\x8d" + struct.pack("<Q", 16 << 30) + b"."),
        ("BYTEARRAY8", b"\x80\x05\x96" + struct.pack("<Q", 16 << 30) + b"."),
        ("FRAME", b"\x80\x04\x95" + struct.pack("<Q", 16 << 30) + b"N."),
        ("BINBYTES", b"\x80\x03B" + struct.pack("<I", 2**32 - 1) + b"."),
        ("BINUNICODE", b"\x80\x03X" + struct.pack("<I", 2**32 - 1) + b"."),
        ("LONG4", b"\x80\x02\x8b" + struct.pack("<i", 2**31 - 1) + b"."),
    ],
)
def test_a_length_beyond_the_end_of_the_file_is_refused_before_allocating(tmp_path, name, blob, capsys):
    path = write(tmp_path, "tiny.pkl", blob)
    assert path.stat().st_size <= 13
    error = refuse(path, traced=True)
    assert f"{name} at byte" in str(error) and "remain in the file" in str(error)
    assert capsys.readouterr() == ("", "")


def test_a_huge_memo_index_is_refused(tmp_path):
    # The C unpickler grows its memo table to twice the index: 2**31 -> 32 GiB from 9 bytes.
    path = write(tmp_path, "memo.pkl", b"\x80\x02Nr" + struct.pack("<I", 2**31) + b".")
    error = refuse(path, error=PickleLimitError, traced=True)
    assert error.limit == "max_objects" and "memo index 2147483648" in str(error)


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
        top_down_chain(),  # only the check of the loaded data sees this one's depth
    ],
    ids=["lists", "marks", "tuples", "dicts", "linked-after-memoizing"],
)
def test_deep_nesting_is_refused_fast(tmp_path, blob, capsys):
    path = write(tmp_path, "features_train.pkl", blob)
    error = refuse(path, error=PickleLimitError)
    assert error.limit == "max_depth"
    assert str(error) == (
        f"{path}: nesting deeper than 100 levels (limit max_depth); raise PickleLimits(max_depth=...) if the file is "
        "trusted"
    )
    assert capsys.readouterr() == ("", "")


def test_deep_nesting_within_a_raised_limit_loads(tmp_path):
    path = write(tmp_path, "deep.pkl", b"\x80\x04" + b"]" * 500 + b"a" * 499 + b".")
    value = load_plain_pickle(path, PickleLimits(max_depth=500))
    for _ in range(499):
        (value,) = value
    assert value == []


def test_the_check_of_loaded_data_is_iterative_and_visits_shared_containers_once():
    deep = []
    for _ in range(DEPTH):
        deep = [deep]
    start = time.perf_counter()
    with pytest.raises(PickleLimitError, match="nesting deeper than 100 levels"):
        _reject_object_arrays({"x": deep}, "walk.pkl")
    with pytest.raises(PickleLimitError, match="expands to more than"):
        _reject_object_arrays(shared_nested_lists(), "walk.pkl")
    _reject_object_arrays(shared_nested_lists(), "walk.pkl", PickleLimits(max_objects=2**62))
    assert time.perf_counter() - start < FAST
    cycle = []
    cycle.append({"again": cycle})
    with pytest.raises(UnsafePickleError, match="reference cycle"):
        _reject_object_arrays(cycle, "walk.pkl")


def test_arrays_beyond_the_array_budget_are_refused_before_allocating(tmp_path, capsys):
    array = np.zeros(1_000, np.float32)
    small = PickleLimits(max_total_array_bytes=3_999)
    for protocol in (2, 4, 5):
        path = write(tmp_path, f"array{protocol}.pkl", pickle.dumps({"x": [array]}, protocol=protocol))
        error = refuse(path, small, PickleLimitError)
        assert error.limit == "max_total_array_bytes" and "more than 3999 bytes" in str(error)
        assert load_plain_pickle(path, PickleLimits(max_total_array_bytes=4_000))["x"][0].shape == (1_000,)
    # 70 bytes asking numpy for a 1 TiB array (`_reconstruct(ndarray, (2**40,), b"b")`), refused with the defaults.
    blob = (
        b"\x80\x04" + stack_global("numpy._core.multiarray", "_reconstruct") + stack_global("numpy", "ndarray")
        + b"\x8a\x06" + (2**40).to_bytes(6, "little") + b"\x85" + b"C\x01b" + b"\x87R."
    )
    error = refuse(write(tmp_path, "huge.pkl", blob), error=PickleLimitError, traced=True)
    assert error.limit == "max_total_array_bytes"
    # A numpy scalar of a 2 GiB dtype, from a 1-byte payload.
    dtype = stack_global("numpy", "dtype") + short_str(f"V{2**31 - 1}") + b"\x89\x88\x87R"
    blob = b"\x80\x04" + stack_global("numpy._core.multiarray", "scalar") + dtype + b"C\x01\x00\x86R."
    path = write(tmp_path, "scalar.pkl", blob)
    error = refuse(path, PickleLimits(max_total_array_bytes=1 << 30), PickleLimitError, traced=True)
    assert error.limit == "max_total_array_bytes"
    assert capsys.readouterr() == ("", "")


def test_calling_ndarray_directly_is_refused(tmp_path):
    blob = b"\x80\x04" + stack_global("numpy", "ndarray") + b"J\x00\x00\x00\x40\x85\x85R."
    assert "numpy.ndarray" in str(refuse(write(tmp_path, "ndarray.pkl", blob)))


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
    data, _ = released_layout(num_dialogues=3, hidden=8)
    data["labels"][1] = _Payload(function, command)
    path = write(tmp_path, "train.pkl", pickle.dumps(data, protocol=protocol))
    error = refuse(path)
    assert "eval'" in str(error) if function is eval else "system'" in str(error)
    with open(path, "rb") as handle, pytest.raises(UnsafePickleError, match="system|eval"):
        PlainDataUnpickler(handle).load()  # the allow-list alone refuses it too
    assert not marker.exists()
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize(
    "value",
    [np.array([1, "a"], dtype=object), np.zeros(2, dtype=[("a", "O"), ("b", "f4")]), np.zeros((2, 2), "O")],
    ids=["object", "object-field", "2d-object"],
)
def test_numpy_object_arrays_are_refused(tmp_path, protocol, value):
    path = write(tmp_path, "objects.pkl", pickle.dumps({"x": [value]}, protocol=protocol))
    assert "numpy arrays of Python objects are not admitted" in str(refuse(path))
    with pytest.raises(UnsafePickleError, match="Python objects"):
        _reject_object_arrays({"x": [value]}, "objects.pkl")


def test_out_of_band_buffers_are_refused(tmp_path):
    buffers = []
    blob = pickle.dumps(np.arange(10), protocol=5, buffer_callback=buffers.append)
    assert buffers
    assert "out-of-band buffers" in str(refuse(write(tmp_path, "oob.pkl", blob)))


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"", "empty"),
        (pickle.dumps(list(range(100)), protocol=2)[:60], "ends"),
        (pickle.dumps(list(range(100)), protocol=4)[:60], "remain in the file"),
        (b"\x80\x04N\xff.", "unknown opcode"),
        (b"\x80\x04h\x05.", "never stored"),
        (b"\x80\x04a.", "underflow"),
        (b"\x80\x04N", "without STOP"),
        (b"\x80\x04KQ\x94Q.", "persistent ids"),
        (b"\x80\x02\x82\x01.", "extension-registry"),
        (b"\x80\x04K\x01}K\x01b.", "state of an object other than"),
    ],
)
def test_malformed_files_are_refused(tmp_path, blob, message):
    assert message in str(refuse(write(tmp_path, "bad.pkl", blob)))


def test_files_over_the_size_limit_are_refused_before_reading(tmp_path):
    path = write(tmp_path, "big.pkl", pickle.dumps(list(range(100))))
    error = refuse(path, PickleLimits(max_file_bytes=100), PickleLimitError)
    assert error.limit == "max_file_bytes"
    assert load_plain_pickle(path) == list(range(100))
