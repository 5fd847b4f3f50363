"""Epoch checkpoints that are either complete and verified, or not used.

A checkpoint is the folder `checkpoints/epoch_K/`, holding what `accelerator.save_state` writes (`model.safetensors`,
`optimizer.bin`, `random_states_<rank>.pkl`, ...), the loop's `trainer_state.json` (the loop's state and the
scheduler's `state_dict`, kept in JSON because Accelerate would unpickle a registered scheduler with
`weights_only=False`) and a `manifest.json` listing every other file with its size and sha256.

Saving goes to `epoch_K.partial/` first; only once every file is written, fsynced and listed in the manifest is the
folder renamed to `epoch_K/` (`os.replace`, then the parent folder is fsynced). So a run interrupted while saving
leaves a `.partial` folder, which is never resumed from.

Resuming ([`find_resumable_checkpoint`]) takes the newest checkpoint whose files all match their manifest entries,
and reports the newer ones it skipped with the reason (file and what is wrong). [`load_checkpoint`] checks again and
raises [`CheckpointError`], naming the folder and the file, rather than letting a decode error through, and it checks
the random states itself: Accelerate's `load_state` only logs when it cannot restore them, and a resumed run would
then silently differ from an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .reporting import _plain

logger = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
PARTIAL_SUFFIX = ".partial"
RNG_STATE_PATTERN = "random_states_{index}.pkl"
INCOMPLETE_REASON = "incomplete (interrupted while saving)"

_COMPLETE = re.compile(r"^epoch_(\d+)$")
_PARTIAL = re.compile(r"^epoch_(\d+)" + re.escape(PARTIAL_SUFFIX) + r"$")
_STALE = re.compile(r"^epoch_\d+\.stale-[0-9a-f]+$")
_CHUNK = 1 << 20


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from. `folder` is the checkpoint, `file` the file at fault (or None),
    `reason` the message without the folder (e.g. "optimizer.bin: 1234 bytes, manifest says 5678")."""

    def __init__(self, folder: str | Path, reason: str, file: str | None = None):
        self.folder = Path(folder)
        self.file = file
        self.reason = reason
        super().__init__(f"checkpoint {self.folder}: {reason}")


# --------------------------------------------------------------------------------------------------------- file I/O


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Make a folder's entries (new files, renames) durable; not possible on every platform (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write `data` as JSON (indented; NaN and infinities as null, numpy scalars as numbers, paths as strings) so that
    `path` holds either its old content or the whole new one: a temporary file in the same folder, flushed and
    fsynced, then `os.replace`d onto `path`, then the folder fsynced."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_plain(data), indent=2) + "\n"
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files_under(folder: Path) -> list[str]:
    """Relative POSIX paths of the regular files under `folder`, sorted, the manifest excluded."""
    found = []
    for root, _dirs, files in os.walk(folder):
        for name in files:
            relative = (Path(root) / name).relative_to(folder).as_posix()
            if relative != MANIFEST:
                found.append(relative)
    return sorted(found)


# ------------------------------------------------------------------------------------------------------------ save


def _epoch_of(path: Path) -> int | None:
    match = _COMPLETE.match(path.name)
    return int(match.group(1)) if match else None


def _complete_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """`epoch_K` folders, oldest first."""
    if not checkpoints_dir.is_dir():
        return []
    found = [path for path in checkpoints_dir.iterdir() if path.is_dir() and _epoch_of(path) is not None]
    return sorted(found, key=_epoch_of)


def save_checkpoint(accelerator, checkpoints_dir: str | Path, epoch: int, trainer_state: dict, keep: int) -> Path:
    """
    Save the checkpoint of `epoch` as `checkpoints_dir/epoch_<epoch>/`, atomically, and keep the newest `keep`
    checkpoints (0: all). Call it on every process: `accelerator.save_state` writes each process's random states; the
    main process alone writes `trainer_state.json` and the manifest, renames and prunes.

    Args:
        trainer_state: JSON-able (the loop's state, with the scheduler's `state_dict`).
    Returns:
        the checkpoint folder.
    """
    if accelerator.project_configuration.automatic_checkpoint_naming:
        raise ValueError("save_checkpoint names its folders: use an Accelerator without automatic_checkpoint_naming")
    checkpoints_dir = Path(checkpoints_dir)
    name = f"epoch_{int(epoch)}"
    final = checkpoints_dir / name
    # Not random: every process must write its random states into the same folder.
    partial = checkpoints_dir / (name + PARTIAL_SUFFIX)

    if accelerator.is_main_process:
        checkpoints_dir.mkdir(parents=True, exist_ok=True)
        if partial.exists():  # left by an interrupted save: its files must not get into this manifest
            shutil.rmtree(partial)
    accelerator.wait_for_everyone()

    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()

    if accelerator.is_main_process:
        write_json_atomic(partial / TRAINER_STATE, trainer_state)
        files = {}
        for relative in _files_under(partial):
            path = partial / relative
            _fsync_file(path)
            files[relative] = {"size": path.stat().st_size, "sha256": _sha256(path)}
        write_json_atomic(partial / MANIFEST, {"format": MANIFEST_FORMAT, "epoch": int(epoch), "files": files})
        for root, _dirs, _files in os.walk(partial):
            _fsync_dir(Path(root))

        if final.exists():  # from an earlier run (e.g. resumed from an older checkpoint than this one)
            stale = checkpoints_dir / f"{name}.stale-{uuid.uuid4().hex[:8]}"
            os.replace(final, stale)
            os.replace(partial, final)
            _fsync_dir(checkpoints_dir)
            shutil.rmtree(stale, ignore_errors=True)
        else:
            os.replace(partial, final)
        _fsync_dir(checkpoints_dir)
        _prune(checkpoints_dir, final, keep)
    accelerator.wait_for_everyone()
    return final


def _prune(checkpoints_dir: Path, newest: Path, keep: int) -> None:
    if keep and keep > 0:
        complete = _complete_checkpoints(checkpoints_dir)
        older = [path for path in complete if path != newest]
        for old in older[: max(len(older) - (keep - 1), 0)]:
            shutil.rmtree(old, ignore_errors=True)
    # Interrupted saves of this epoch or earlier ones are superseded by `newest`.
    newest_epoch = _epoch_of(newest)
    for path in checkpoints_dir.iterdir():
        match = _PARTIAL.match(path.name)
        if match and int(match.group(1)) <= newest_epoch and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif _STALE.match(path.name) and path.is_dir():  # a replaced checkpoint whose removal failed
            shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------------------------------ verify, load


def _read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.is_file():
        raise CheckpointError(folder, f"{MANIFEST}: missing (incomplete, or not written by this version)", MANIFEST)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(folder, f"{MANIFEST}: not valid JSON ({error})", MANIFEST) from error
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not files:
        raise CheckpointError(folder, f"{MANIFEST}: no file list", MANIFEST)
    for relative, entry in files.items():
        pure = Path(relative)
        well_formed = isinstance(entry, dict) and {"size", "sha256"} <= set(entry)
        if pure.is_absolute() or ".." in pure.parts or not well_formed:
            raise CheckpointError(folder, f"{MANIFEST}: bad entry {relative!r}", MANIFEST)
    return manifest


def _read_trainer_state(folder: Path) -> dict:
    path = folder / TRAINER_STATE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise CheckpointError(folder, f"{TRAINER_STATE}: missing", TRAINER_STATE) from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(folder, f"{TRAINER_STATE}: not valid JSON ({error})", TRAINER_STATE) from error
    if not isinstance(state, dict):
        raise CheckpointError(folder, f"{TRAINER_STATE}: not a JSON object", TRAINER_STATE)
    return state


def verify_checkpoint(folder: str | Path) -> dict:
    """Check that every file the manifest of `folder` lists is there with its size and sha256, and that
    `trainer_state.json` is listed and parses. Returns the trainer state; raises [`CheckpointError`] otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(folder, "not a folder")
    manifest = _read_manifest(folder)
    epoch = _epoch_of(folder)
    if epoch is not None and manifest.get("epoch") not in (None, epoch):
        raise CheckpointError(folder, f"{MANIFEST}: written for epoch {manifest.get('epoch')}", MANIFEST)
    files = manifest["files"]
    if TRAINER_STATE not in files:
        raise CheckpointError(folder, f"{TRAINER_STATE}: not in {MANIFEST}", TRAINER_STATE)
    for relative, entry in files.items():
        path = folder / relative
        if not path.is_file():
            raise CheckpointError(folder, f"{relative}: missing", relative)
        size = path.stat().st_size
        if size != entry["size"]:
            raise CheckpointError(folder, f"{relative}: {size} bytes, manifest says {entry['size']}", relative)
        if _sha256(path) != entry["sha256"]:
            raise CheckpointError(folder, f"{relative}: sha256 differs from the manifest (corrupt)", relative)
    return _read_trainer_state(folder)


def find_resumable_checkpoint(checkpoints_dir: str | Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """
    The newest checkpoint under `checkpoints_dir` that verifies ([`verify_checkpoint`]), or None; and the newer
    folders passed over, newest first, each with the reason (`epoch_K.partial` folders: "incomplete (interrupted
    while saving)").
    """
    checkpoints_dir = Path(checkpoints_dir)
    if not checkpoints_dir.is_dir():
        return None, []
    candidates = []  # (epoch, 1 = complete / 0 = partial, path): a partial sorts just after the complete one
    for path in checkpoints_dir.iterdir():
        if not path.is_dir():
            continue
        if (match := _COMPLETE.match(path.name)) is not None:
            candidates.append((int(match.group(1)), 0, path))
        elif (match := _PARTIAL.match(path.name)) is not None:
            candidates.append((int(match.group(1)), 1, path))
    skipped: list[tuple[Path, str]] = []
    for _epoch, is_partial, path in sorted(candidates, key=lambda item: (-item[0], -item[1])):
        if is_partial:
            skipped.append((path, INCOMPLETE_REASON))
            continue
        try:
            verify_checkpoint(path)
        except CheckpointError as error:
            skipped.append((path, error.reason))
            continue
        return path, skipped
    return None, skipped


def _rng_states_file(folder: Path, process_index: int, listed: dict) -> dict:
    """This process's random states, checked: listed in the manifest, present, loadable with weights_only=True."""
    from accelerate.utils import load  # torch.load(weights_only=True) that allows the numpy parts of RNG states

    name = RNG_STATE_PATTERN.format(index=process_index)
    if name not in listed:
        saved = sorted(key for key in listed if re.fullmatch(RNG_STATE_PATTERN.format(index=r"\d+"), key))
        raise CheckpointError(
            folder,
            f"{name}: not in the checkpoint (it holds {', '.join(saved) or 'no random states'}; saved with another "
            "number of processes?): the random states of this process cannot be restored",
            name,
        )
    path = folder / name
    try:
        states = load(path)
    except Exception as error:
        raise CheckpointError(folder, f"{name}: cannot be read ({type(error).__name__}: {error})", name) from error
    needed = {"random_state", "numpy_random_seed", "torch_manual_seed"}
    if torch.cuda.is_available():
        needed.add("torch_cuda_manual_seed")
    if not isinstance(states, dict) or not needed <= set(states):
        missing = sorted(needed - set(states)) if isinstance(states, dict) else sorted(needed)
        raise CheckpointError(folder, f"{name}: lacks {', '.join(missing)}", name)
    return states


def _rng_restored(states: dict) -> bool:
    if random.getstate() != states["random_state"]:
        return False
    current, saved = np.random.get_state(), states["numpy_random_seed"]
    if current[0] != saved[0] or not np.array_equal(current[1], saved[1]) or tuple(current[2:]) != tuple(saved[2:]):
        return False
    if not torch.equal(torch.get_rng_state(), states["torch_manual_seed"]):
        return False
    if torch.cuda.is_available():
        now, then = torch.cuda.get_rng_state_all(), states["torch_cuda_manual_seed"]
        if len(now) != len(then) or any(not torch.equal(a.cpu(), b.cpu()) for a, b in zip(now, then)):
            return False
    return True


def load_checkpoint(accelerator, folder: str | Path) -> dict:
    """
    Restore a checkpoint written by [`save_checkpoint`] into the objects registered with `accelerator` (prepared model,
    optimizer, data loaders) and the random generators, and return its trainer state (the caller restores the
    scheduler from `state["scheduler"]`). Raises [`CheckpointError`] naming the folder and the file when a file is
    missing, does not match the manifest, cannot be decoded, or when this process's random states are not restored.
    """
    folder = Path(folder)
    state = verify_checkpoint(folder)
    listed = _read_manifest(folder)["files"]
    states = _rng_states_file(folder, accelerator.process_index, listed)
    try:
        accelerator.load_state(str(folder))
    except Exception as error:
        raise CheckpointError(folder, f"cannot be restored ({type(error).__name__}: {error})") from error
    # Accelerate catches any error while restoring the random states and only logs it: check they were restored.
    if not _rng_restored(states):
        name = RNG_STATE_PATTERN.format(index=accelerator.process_index)
        raise CheckpointError(folder, f"{name}: the random states were not restored", name)
    return state
