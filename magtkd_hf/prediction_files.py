"""The files of `predict_dataset`: the per-process partial rows a stopped run resumes from (`OUTPUT.partial/`), their
merge into the output (JSON lines or parquet, written whole or not at all), and the launched processes' group."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

MANIFEST_FILE = "manifest.json"
PART_PATTERN = "rows-*.jsonl"


def part_file(partial: Path, rank: int) -> Path:
    """The file process `rank` appends its rows to."""
    return partial / f"rows-{rank:05d}.jsonl"



def start_or_resume(partial: Path, output: Path, description: dict, overwrite: bool) -> None:
    manifest = partial / MANIFEST_FILE
    if partial.is_dir() and manifest.is_file():
        saved = json.loads(manifest.read_text(encoding="utf-8"))
        if saved != description:
            raise ValueError(
                f"{partial} holds the rows of another prediction run ({_differences(saved, description)}); delete "
                "it to start again, or resume that run with its own arguments."
            )
        return
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists: pass --overwrite to replace it.")
    partial.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps(description, indent=2, sort_keys=True), encoding="utf-8")


def _differences(saved: Mapping, wanted: Mapping) -> str:
    keys = sorted(key for key in set(saved) | set(wanted) if saved.get(key) != wanted.get(key))
    return "; ".join(f"{key}: {saved.get(key)!r} there, {wanted.get(key)!r} now" for key in keys)


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
    """JSON lines or parquet (by `output`'s suffix), written beside and renamed: never a half-written OUTPUT."""
    temporary = output.with_name(output.name + ".tmp")
    if output.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(list(rows)), temporary)
    else:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, allow_nan=False) + "\n" for row in rows)
    os.replace(temporary, output)


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


__all__ = ["ProcessGroup", "completed_conversations", "merge_rows", "part_file", "read_partial_rows",
           "remove_partial", "start_or_resume", "write_output"]
