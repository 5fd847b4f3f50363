"""Epoch checkpoints `checkpoints/epoch_K/`: `accelerator.save_state`, the loop's `trainer_state.json` (the scheduler's
state in JSON: Accelerate would unpickle it with `weights_only=False`) and, written last, `manifest.json` (size and
sha256 of every other file). Resuming takes the newest folder that verifies; loading checks that the random states
were restored (Accelerate only logs a failure, and the resumed run would silently differ)."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import load  # torch.load(weights_only=True) that allows the numpy parts of RNG states

from .reporting import write_json

TRAINER_STATE = "trainer_state.json"
MANIFEST = "manifest.json"
INCOMPLETE_REASON = f"{MANIFEST}: missing (incomplete: interrupted while saving)"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from: its `folder`, the `file` at fault (or None) and the `reason`."""

    def __init__(self, folder: str | Path, reason: str, file: str | None = None):
        self.folder, self.reason, self.file = Path(folder), reason, file
        super().__init__(f"checkpoint {self.folder}: {reason}")


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def epoch_folders(checkpoints_dir: str | Path) -> list[Path]:
    """The `epoch_K` folders under `checkpoints_dir`, newest first."""
    folders = [path for path in Path(checkpoints_dir).glob("epoch_*") if path.name[len("epoch_"):].isdecimal()]
    return sorted(folders, key=lambda path: -int(path.name[len("epoch_"):]))


def save_checkpoint(accelerator, checkpoints_dir: str | Path, epoch: int, trainer_state: dict, keep: int) -> Path:
    """Save `checkpoints_dir/epoch_<epoch>/` (on every process: `save_state` writes each one's random states) and
    keep the newest `keep` checkpoints up to this one (0: all)."""
    folder = Path(checkpoints_dir) / f"epoch_{int(epoch)}"
    if accelerator.is_main_process and folder.exists():  # from a run resumed from an older checkpoint
        shutil.rmtree(folder)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(folder))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(folder / TRAINER_STATE, trainer_state)
        files = {path.relative_to(folder).as_posix(): {"size": path.stat().st_size, "sha256": _sha256(path)}
                 for path in sorted(folder.rglob("*")) if path.is_file()}
        write_json(folder / MANIFEST, {"epoch": int(epoch), "files": files})  # last: the checkpoint is complete
        older = epoch_folders(checkpoints_dir)
        older = older[older.index(folder) + 1:]
        for old in older[max(keep - 1, 0):] if keep else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return folder


def _read_json(folder: Path, name: str):
    try:
        return json.loads((folder / name).read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        reason = INCOMPLETE_REASON if name == MANIFEST else f"{name}: missing"
        raise CheckpointError(folder, reason, name) from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(folder, f"{name}: not valid JSON ({error})", name) from error


def verify_checkpoint(folder: str | Path) -> dict:
    """Check every file the manifest of `folder` lists against its size and sha256; returns the trainer state, or
    raises [`CheckpointError`]."""
    folder = Path(folder)
    files = _read_json(folder, MANIFEST).get("files")
    well_formed = isinstance(files, dict) and all(isinstance(entry, dict) and {"size", "sha256"} <= entry.keys()
                                                  for entry in files.values())
    if not well_formed or TRAINER_STATE not in files:
        raise CheckpointError(folder, f"{MANIFEST}: no file list holding {TRAINER_STATE}", MANIFEST)
    for name, entry in files.items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(folder, f"{name}: missing", name)
        if path.stat().st_size != entry["size"]:
            raise CheckpointError(folder, f"{name}: {path.stat().st_size} bytes, manifest says {entry['size']}", name)
        if _sha256(path) != entry["sha256"]:
            raise CheckpointError(folder, f"{name}: sha256 differs from the manifest (corrupt)", name)
    return _read_json(folder, TRAINER_STATE)


def find_resumable_checkpoint(checkpoints_dir: str | Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest checkpoint under `checkpoints_dir` that verifies, or None; and the newer folders passed over,
    newest first, each with the reason."""
    skipped = []
    for folder in epoch_folders(checkpoints_dir):
        try:
            verify_checkpoint(folder)
            return folder, skipped
        except CheckpointError as error:
            skipped.append((folder, error.reason))
    return None, skipped


def check_identity(folder: Path, state: dict, identity: dict) -> None:
    """Refuse a checkpoint that another stage or model class saved (`identity`: this run's "stage" and "model_class",
    as the loop records them in the trainer state); a checkpoint that records neither is left to the strict load."""
    recorded = {key: state[key] for key in identity if key in state}
    if recorded and recorded != {key: identity[key] for key in recorded}:
        raise CheckpointError(
            folder, f"saved by stage {state.get('stage')!r} ({state.get('model_class')}), not by this stage "
            f"{identity['stage']!r} ({identity['model_class']}): resume from this stage's own checkpoints", TRAINER_STATE)


def load_checkpoint(accelerator, folder: str | Path, identity: dict | None = None) -> dict:
    """Verify `folder` (of the stage and model class `identity` names, when given: see [`check_identity`]), restore it
    with `accelerator.load_state` (random states included, checked) and return the trainer state, or raise
    [`CheckpointError`]."""
    folder = Path(folder)
    state = verify_checkpoint(folder)
    check_identity(folder, state, identity or {})
    name = f"random_states_{accelerator.process_index}.pkl"
    if not (folder / name).is_file():
        raise CheckpointError(folder, f"{name}: not in the checkpoint (saved with another number of processes?)", name)
    try:
        saved = load(folder / name)
    except Exception as error:
        raise CheckpointError(folder, f"{name}: cannot be read ({type(error).__name__}: {error})", name) from error
    try:
        accelerator.load_state(str(folder))
    except Exception as error:
        message = " ".join(str(error).split())  # one line: torch lists each mismatched tensor on its own
        raise CheckpointError(folder, f"cannot be restored ({type(error).__name__}: {message})") from error
    if not _random_states_restored(saved):
        raise CheckpointError(folder, f"{name}: the random states were not restored", name)
    return state


def _random_states_restored(saved) -> bool:
    current = {"random_state": random.getstate(), "numpy_random_seed": np.random.get_state(),
               "torch_manual_seed": torch.get_rng_state()}
    if torch.cuda.is_available():
        current["torch_cuda_manual_seed"] = torch.cuda.get_rng_state_all()
    return isinstance(saved, dict) and all(key in saved and _equal(now, saved[key]) for key, now in current.items())


def _equal(a, b) -> bool:
    if isinstance(a, (tuple, list)):
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(map(_equal, a, b))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a.cpu(), b.cpu())
    return bool(np.array_equal(a, b))
