"""The files of `predict_dataset`: the per-process partial rows a stopped run resumes from (`OUTPUT.partial/`), their
merge into the output (JSON lines or parquet, written whole or not at all), and the launched processes' group."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import warnings
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

try:
    import fcntl
except ImportError:  # Windows: no flock (see output_lock)
    fcntl = None

MANIFEST_FILE = "manifest.json"
PART_PATTERN = "rows-*.jsonl"
OUTPUT_FORMATS = (".jsonl", ".parquet")


def part_file(partial: Path, rank: int) -> Path:
    """The file process `rank` appends its rows to."""
    return partial / f"rows-{rank:05d}.jsonl"


def check_output(output: Path, overwrite: bool, formats: tuple[str, ...] = OUTPUT_FORMATS) -> None:
    """Every check on OUTPUT that needs no work done: its format, a folder in its way, an existing file without
    `overwrite` (unless a stopped run's rows wait beside it), a missing or read-only parent folder."""
    if output.suffix not in formats:
        raise ValueError(f"{output}: the output must end in one of {formats}.")
    if output.is_dir():
        raise IsADirectoryError(f"{output} is a folder: --output names the file to write (FILE.jsonl or FILE.parquet).")
    resumable = (partial_folder(output) / MANIFEST_FILE).is_file()
    if output.exists() and not overwrite and not resumable:
        raise FileExistsError(f"{output} exists: pass --overwrite to replace it.")
    parent = output.absolute().parent
    if not parent.is_dir():
        raise FileNotFoundError(f"{output}: the folder {parent} does not exist.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"{output}: the folder {parent} is not writable.")


def partial_folder(output: Path) -> Path:
    return output.with_name(output.name + ".partial")


def conversations_fingerprint(rows: Iterable) -> str:
    """sha256 of what the input holds (every conversation's place, id, texts, speakers, media paths, times, labels):
    a changed file, dataset or release folder at the same path gives another fingerprint."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, default=str).encode("utf-8", "surrogatepass") + b"\n")
    return digest.hexdigest()


def start_or_resume(partial: Path, description: dict, overwrite: bool) -> None:
    """Resume the rows in `partial` when its manifest equals `description` (the input's fingerprint included);
    refuse another run's rows naming the difference, or discard them with `overwrite`; else start afresh."""
    manifest = partial / MANIFEST_FILE
    if partial.is_dir() and manifest.is_file():
        saved = json.loads(manifest.read_text(encoding="utf-8"))
        if saved == description:
            return
        if not overwrite:
            raise ValueError(
                f"{partial} holds the rows of another prediction run ({_differences(saved, description)}); pass "
                "--overwrite to start afresh, or resume that run with its own arguments and input."
            )
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps(description, indent=2, sort_keys=True), encoding="utf-8")


def _differences(saved: Mapping, wanted: Mapping) -> str:
    keys = sorted(key for key in set(saved) | set(wanted) if saved.get(key) != wanted.get(key))
    return "; ".join(f"{key}: {saved.get(key)!r} there, {wanted.get(key)!r} now" for key in keys)


@contextmanager
def output_lock(output: Path, main_process: bool = True):
    """One run per OUTPUT at a time: an exclusive `flock` on OUTPUT.lock (holding the PID), refused at once while
    another process holds it. The kernel drops the lock of a process that dies, so a stale file is simply taken
    over. Nested uses in one process (the CLI, then `predict_dataset`) share the lock; launched processes other than
    the main one take none. (flock: Linux and macOS; on NFS Linux maps it to a POSIX lock the server enforces;
    Windows has no flock: a warning, no lock.)"""
    lock = output.absolute().with_name(output.name + ".lock")
    if lock in _HELD_LOCKS or fcntl is None or not main_process:
        if fcntl is None and main_process:
            warnings.warn(f"no file locks on this system: nothing stops a second run writing {output} at once")
        yield
        return
    handle = _locked_file(lock, output)
    _HELD_LOCKS.add(lock)
    try:
        yield
    finally:
        _HELD_LOCKS.discard(lock)
        lock.unlink(missing_ok=True)  # while still locked: a waiting opener then finds it gone and retries
        handle.close()


_HELD_LOCKS: set[Path] = set()


def _locked_file(lock: Path, output: Path):
    while True:
        handle = open(lock, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RuntimeError(f"{output} is being written by another run (process {holder}, lock {lock}); wait for "
                               "it to end or stop it, then run again.") from None
        if _is_the_file_at(handle, lock):
            handle.truncate(0)
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            return handle
        handle.close()  # the previous holder removed this file between our open and our lock: take the new one


def _is_the_file_at(handle, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


def read_partial_rows(partial: Path) -> list[dict]:
    """Every complete JSON line of the partial files; a line cut short by a kill is dropped (and cut from its file,
    so that the resumed run appends after whole lines)."""
    rows = []
    for part in sorted(partial.glob(PART_PATTERN)):
        data = part.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        if len(complete) != len(data):
            with open(part, "r+b") as handle:
                handle.truncate(len(complete))
        rows += [json.loads(line) for line in complete.decode("utf-8").splitlines() if line.strip()]
    return rows


def completed_conversations(partial: Path, lengths: Mapping[tuple[str, int], int]) -> set[tuple[str, int]]:
    """The conversations whose every utterance has a row in `partial` (none when it does not exist)."""
    if not partial.is_dir():
        return set()
    seen: dict[tuple[str, int], set[int]] = {}
    for row in read_partial_rows(partial):
        seen.setdefault((row["split"], row["conversation_index"]), set()).add(row["utterance_index"])
    return {key for key, utterances in seen.items() if key in lengths and len(utterances) == lengths[key]}


def merge_rows(partial: Path, order: Sequence[tuple[str, int]]) -> list[dict]:
    """The rows of every conversation of `order`, in that order and in utterance order; one row per utterance (a
    conversation begun, stopped and predicted again has rows twice: the later ones are kept)."""
    by_key: dict[tuple[str, int], dict[int, dict]] = {}
    for row in read_partial_rows(partial):
        by_key.setdefault((row["split"], row["conversation_index"]), {})[row["utterance_index"]] = row
    missing = [key for key in order if key not in by_key]
    if missing:
        raise RuntimeError(f"{partial}: no rows for {len(missing)} conversations (first: {missing[0]}); run again to resume.")
    return [by_key[key][index] for key in order for index in sorted(by_key[key])]


def write_output(rows: Sequence[Mapping], output: Path) -> None:
    """JSON lines, CSV (nested values as JSON text) or parquet, by `output`'s suffix, written beside and renamed:
    never a half-written OUTPUT."""
    if output.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        with _written_beside(output) as temporary:
            pq.write_table(pa.Table.from_pylist(list(rows)), temporary)
    elif output.suffix == ".csv":
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows({key: json.dumps(value) if isinstance(value, (dict, list)) else value
                          for key, value in row.items()} for row in rows)
        write_text_atomically(output, text.getvalue())
    else:
        write_text_atomically(output, "".join(json.dumps(row, allow_nan=False) + "\n" for row in rows))


def write_text_atomically(output: Path, text: str) -> None:
    with _written_beside(output) as temporary:
        temporary.write_text(text, encoding="utf-8", newline="")


@contextmanager
def _written_beside(output: Path):
    """A temporary path beside `output`, renamed onto it when the block succeeds and removed in any case."""
    temporary = output.with_name(output.name + ".tmp")
    try:
        yield temporary
        os.replace(temporary, output)
    finally:
        temporary.unlink(missing_ok=True)


def remove_partial(partial: Path) -> None:
    shutil.rmtree(partial)


# ------------------------------------------------------------------------------------------------------- processes


@dataclass
class ProcessGroup:
    """This process's rank among the launched ones (`accelerate launch`, torchrun: WORLD_SIZE > 1), and a barrier."""

    rank: int = 0
    size: int = 1
    state: object = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def current(cls) -> "ProcessGroup":
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        from accelerate import PartialState

        state = PartialState(cpu=not torch.cuda.is_available())
        return cls(state.process_index, state.num_processes, state)

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()


__all__ = ["ProcessGroup", "check_output", "completed_conversations", "conversations_fingerprint", "merge_rows",
           "output_lock", "part_file", "partial_folder", "read_partial_rows", "remove_partial", "start_or_resume",
           "write_output", "write_text_atomically"]
