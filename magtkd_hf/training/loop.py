"""The one Accelerate training loop shared by every MAGTKD stage.

A stage hands the loop a [`StageTask`]: the model to train, its data, how to compute the loss and the predictions,
how to save and reload the selected model. The loop does the rest, in the style of transformers'
`examples/pytorch/*_no_trainer.py`: seeding, mixed precision, gradient accumulation, clipping after unscaling,
a linear warm-up schedule counted in optimiser steps, a checkpoint per epoch (`accelerator.save_state`) and resuming
from it, model selection on dev weighted F1, one test evaluation of the selected model, metrics gathered over all
processes, a metrics JSON and a confusion-matrix PNG.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup
from transformers.trainer_pt_utils import LengthGroupedSampler

from ..metrics import classification_metrics
from .recipe import StageSettings
from .reporting import confusion_matrix, save_confusion_matrix_png, write_json

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
TRAINER_STATE = "trainer_state.json"
METRICS_FILE = "metrics.json"


@dataclass
class StageTask:
    """What one stage trains, on what, with which loss.

    Attributes:
        name: the stage's name (for messages, trackers and files).
        model: the model to train (on CPU; the loop places it).
        train_dataset, eval_datasets: map-style datasets; `eval_datasets` must hold `"validation"` (model selection)
            and may hold `"test"` (evaluated once, on the selected model).
        collate_fn: items -> batch (a mapping of tensors).
        loss_fn: `(model, batch, frozen) -> loss` (a scalar tensor).
        predict_fn: `(model, batch, frozen) -> (predictions, labels)`, long tensors of one shape, (b,) or (B, N);
            labels -100 are ignored.
        save_fn: `(unwrapped model, folder)`: writes the selected model (e.g. `save_pretrained`).
        load_fn: `(folder) -> model`: reads it back (the test evaluation uses what was saved).
        label_names: class names in index order.
        frozen: modules used but not trained (e.g. a teacher); placed on the device, kept in eval mode.
        train_lengths: per-item lengths: batches are then grouped by length (`LengthGroupedSampler`).
        description: facts recorded in the metrics JSON (input folders, sizes).
    """

    name: str
    model: nn.Module
    train_dataset: Dataset
    eval_datasets: Mapping[str, Dataset]
    collate_fn: Callable
    loss_fn: Callable
    predict_fn: Callable
    save_fn: Callable
    load_fn: Callable
    label_names: Sequence[str]
    frozen: dict = field(default_factory=dict)
    train_lengths: Sequence[int] | None = None
    description: dict = field(default_factory=dict)


class EpochSampler(Sampler):
    """A shuffling sampler whose order depends only on (seed, epoch): resuming at epoch k replays epoch k's order.
    With `lengths`, transformers' `LengthGroupedSampler` order (batches of similar lengths, a bit of randomness)."""

    def __init__(self, num_items: int, seed: int, lengths: Sequence[int] | None = None, batch_size: int = 1):
        self.num_items, self.seed, self.epoch = num_items, seed, 0
        self.grouped = None if lengths is None else LengthGroupedSampler(batch_size, lengths=list(lengths))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_items

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.grouped is not None:
            self.grouped.generator = generator
            return iter(self.grouped)
        return iter(torch.randperm(self.num_items, generator=generator).tolist())


def _reset_accelerate_singletons() -> None:
    """Stages run one after another in one process (`train all`, tests) may differ in mixed precision and gradient
    accumulation: forget the previous stage's settings, keep the distributed set-up."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


def _has_accelerator_device() -> bool:
    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def make_accelerator(settings: StageSettings, output_dir: Path, cpu: bool = False, find_unused_parameters=False):
    from accelerate import Accelerator, DistributedDataParallelKwargs

    _reset_accelerate_singletons()
    mixed_precision = settings.mixed_precision
    if mixed_precision == "fp16" and (cpu or not _has_accelerator_device()):
        warnings.warn("fp16 mixed precision needs a GPU: this stage runs in full precision (use bf16 on CPU).")
        mixed_precision = "no"
    log_with = None if settings.report_to in ("none", "", None) else settings.report_to
    return Accelerator(
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        cpu=cpu,
        log_with=log_with,
        project_dir=str(output_dir),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)],
    )


def make_optimizer(model: nn.Module, settings: StageSettings, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; the fused implementation where this torch has it for `device`."""
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    kwargs = dict(lr=settings.learning_rate, weight_decay=settings.weight_decay)
    if settings.fused_optimizer:
        try:
            optimizer = torch.optim.AdamW(parameters, fused=True, **kwargs)
            _probe_fused(device)
            return optimizer
        except (RuntimeError, TypeError, ValueError) as error:
            logger.info("fused AdamW unavailable on %s (%s): using the default implementation", device, error)
    return torch.optim.AdamW(parameters, **kwargs)


def _probe_fused(device: torch.device) -> None:
    probe = torch.zeros(2, device=device, requires_grad=True)
    optimizer = torch.optim.AdamW([probe], fused=True)
    probe.sum().backward()
    optimizer.step()


def schedule_lengths(settings: StageSettings, batches_per_epoch: int, num_samples: int) -> tuple[int, int]:
    """(warm-up steps, total steps) of the linear schedule. `optimizer_steps` (default): in optimiser steps,
    `warmup_epochs` epochs of warm-up. `released`: the released scripts' count in samples (utterances or
    conversations), warm-up one epoch's samples; stepped per optimiser step, so the rate barely decays."""
    if settings.schedule == "released":
        return num_samples, num_samples * settings.epochs
    steps_per_epoch = math.ceil(batches_per_epoch / settings.gradient_accumulation_steps)
    return round(settings.warmup_epochs * steps_per_epoch), steps_per_epoch * settings.epochs


@torch.no_grad()
def evaluate(accelerator, model, loader, task: StageTask, frozen: Mapping[str, nn.Module]) -> tuple[dict, Any]:
    """Predictions over `loader`, gathered from every process (duplicates of the last uneven batch dropped) ->
    (metrics, (labels, predictions) as numpy arrays)."""
    model.eval()
    all_predictions, all_labels = [], []
    for batch in loader:
        with accelerator.autocast():
            predictions, labels = task.predict_fn(model, batch, frozen)
        if predictions.dim() == 2:  # (B, N): conversations of different lengths on different processes
            predictions = accelerator.pad_across_processes(predictions, dim=1, pad_index=-100)
            labels = accelerator.pad_across_processes(labels, dim=1, pad_index=-100)
        predictions, labels = accelerator.gather_for_metrics((predictions.contiguous(), labels.contiguous()))
        all_predictions.append(predictions.flatten().cpu())
        all_labels.append(labels.flatten().cpu())
    labels = torch.cat(all_labels).numpy() if all_labels else torch.empty(0, dtype=torch.long).numpy()
    predictions = torch.cat(all_predictions).numpy() if all_predictions else labels
    metrics = classification_metrics(labels, predictions, list(task.label_names))
    return metrics, (labels, predictions)


def _summary(metrics: Mapping) -> dict:
    return {"weighted_f1": metrics["weighted_f1"], "accuracy": metrics["accuracy"]}


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete epoch checkpoint under `output_dir/checkpoints`, or None."""
    folder = Path(output_dir) / CHECKPOINTS
    candidates = sorted(
        (path for path in folder.glob("epoch_*") if (path / TRAINER_STATE).is_file()),
        key=lambda path: int(path.name.split("_")[-1]),
    )
    return candidates[-1] if candidates else None


def train_stage(
    build_task: Callable[[Any], StageTask],
    settings: StageSettings,
    output_dir: str | Path,
    resume: bool | str | Path = False,
    stop_after_epochs: int | None = None,
    cpu: bool = False,
    find_unused_parameters: bool = False,
) -> dict:
    """
    Train one stage and write, in `output_dir`: the selected model (by `task.save_fn`), `metrics.json`,
    `confusion_matrix.png` (test, or dev when there is no test split) and `checkpoints/epoch_K/` after every epoch.

    Args:
        build_task: `(accelerator) -> StageTask`; called after seeding, so model initialisation is reproducible.
        settings: the stage's resolved settings.
        resume: False; True (the newest checkpoint in `output_dir`, if any); or a checkpoint folder.
        stop_after_epochs: stop (without testing) once this many epochs have run in this call: simulates an
            interruption (tests, time-limited jobs); `--resume` then continues.
    Returns:
        the metrics dict (also written to `metrics.json`); `{"stopped_after_epoch": k}` when stopped early.
    """
    from accelerate.utils import set_seed

    output_dir = Path(output_dir)
    accelerator = make_accelerator(settings, output_dir, cpu, find_unused_parameters)
    set_seed(settings.seed)
    task = build_task(accelerator)
    if "validation" not in task.eval_datasets:
        raise ValueError(f"stage {task.name!r}: a 'validation' split is needed for model selection")
    if len(task.train_dataset) == 0:
        raise ValueError(f"stage {task.name!r}: the training split is empty")
    sampler = EpochSampler(len(task.train_dataset), settings.seed, task.train_lengths, settings.batch_size)
    train_loader = DataLoader(
        task.train_dataset, batch_size=settings.batch_size, sampler=sampler, collate_fn=task.collate_fn,
        num_workers=settings.num_workers, persistent_workers=False,
    )
    eval_loaders = {
        split: DataLoader(
            dataset, batch_size=settings.eval_batch_size, shuffle=False, collate_fn=task.collate_fn,
            num_workers=settings.num_workers,
        )
        for split, dataset in task.eval_datasets.items()
    }
    optimizer = make_optimizer(task.model, settings, accelerator.device)
    model, optimizer, train_loader = accelerator.prepare(task.model, optimizer, train_loader)
    eval_loaders = {split: accelerator.prepare_data_loader(loader) for split, loader in eval_loaders.items()}
    frozen = {name: module.to(accelerator.device).eval() for name, module in task.frozen.items()}
    for module in frozen.values():
        module.requires_grad_(False)

    warmup_steps, total_steps = schedule_lengths(settings, len(train_loader), len(task.train_dataset))
    scheduler = get_linear_schedule_with_warmup(optimizer.optimizer, warmup_steps, max(total_steps, 1))

    state = {"completed_epochs": 0, "best_dev_weighted_f1": None, "best_epoch": None, "global_step": 0, "history": []}
    if resume:
        checkpoint = latest_checkpoint(output_dir) if resume is True else Path(resume)
        if checkpoint is None:
            logger.info("%s: no checkpoint in %s, starting from scratch", task.name, output_dir / CHECKPOINTS)
        else:
            if not (checkpoint / TRAINER_STATE).is_file():
                raise FileNotFoundError(f"{checkpoint}: not a checkpoint of this loop ({TRAINER_STATE} missing)")
            accelerator.load_state(str(checkpoint))
            state = json.loads((checkpoint / TRAINER_STATE).read_text())
            # Kept in the JSON trainer state: Accelerate would unpickle a registered scheduler with weights_only=False.
            scheduler.load_state_dict(state.pop("scheduler"))
            accelerator.print(f"{task.name}: resumed from {checkpoint} (epoch {state['completed_epochs']} done)")

    tracker_config = {key: value for key, value in settings.to_dict().items() if isinstance(value, (int, float, str, bool))}
    if settings.report_to not in ("none", "", None):
        accelerator.init_trackers(f"magtkd-{task.name}", config=tracker_config)

    unwrapped = accelerator.unwrap_model(model)
    epochs_run = 0
    for epoch in range(state["completed_epochs"], settings.epochs):
        started = time.perf_counter()
        sampler.set_epoch(epoch)
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        model.train()
        progress = tqdm(
            total=len(train_loader), desc=f"{task.name} epoch {epoch + 1}/{settings.epochs}", leave=True,
            disable=not accelerator.is_local_main_process, dynamic_ncols=True,
        )
        loss_sum, loss_count = torch.zeros((), device=accelerator.device), 0
        for step, batch in enumerate(train_loader):
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    loss = task.loss_fn(model, batch, frozen)
                accelerator.backward(loss)
                if accelerator.sync_gradients and settings.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), settings.max_grad_norm)  # after unscaling
                optimizer.step()
                if accelerator.sync_gradients:
                    if not accelerator.optimizer_step_was_skipped:
                        scheduler.step()
                    state["global_step"] += 1
                optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach().float()
            loss_count += 1
            progress.update(1)
            if step % 10 == 0 or step == len(train_loader) - 1:
                progress.set_postfix(loss=f"{loss_sum.item() / loss_count:.4f}", refresh=False)
        train_loss = accelerator.reduce(loss_sum, reduction="mean").item() / max(loss_count, 1)
        trained_at = time.perf_counter()

        dev_metrics, _ = evaluate(accelerator, model, eval_loaders["validation"], task, frozen)
        entry = {
            "epoch": epoch + 1, "train_loss": train_loss, "learning_rate": scheduler.get_last_lr()[0],
            "validation": _summary(dev_metrics), "train_seconds": trained_at - started,
            "dev_seconds": time.perf_counter() - trained_at,
        }
        if settings.track_test and "test" in eval_loaders:
            test_metrics, _ = evaluate(accelerator, model, eval_loaders["test"], task, frozen)
            entry["test"] = _summary(test_metrics)
        improved = state["best_dev_weighted_f1"] is None or dev_metrics["weighted_f1"] > state["best_dev_weighted_f1"]
        if improved:
            state["best_dev_weighted_f1"], state["best_epoch"] = dev_metrics["weighted_f1"], epoch + 1
            state["best_validation"] = dev_metrics
            if accelerator.is_main_process:
                task.save_fn(unwrapped, output_dir)
        entry["seconds"] = time.perf_counter() - started
        state["history"].append(entry)
        state["completed_epochs"] = epoch + 1
        progress.set_postfix(loss=f"{train_loss:.4f}", dev_f1=f"{dev_metrics['weighted_f1']:.2f}", refresh=True)
        progress.close()
        if settings.report_to not in ("none", "", None):
            accelerator.log(
                {"train/loss": train_loss, "dev/weighted_f1": dev_metrics["weighted_f1"],
                 "dev/accuracy": dev_metrics["accuracy"], "learning_rate": entry["learning_rate"]},
                step=epoch + 1,
            )
        _save_checkpoint(
            accelerator, output_dir, epoch + 1, {**state, "scheduler": scheduler.state_dict()}, settings.keep_checkpoints
        )
        epochs_run += 1
        if stop_after_epochs is not None and epochs_run >= stop_after_epochs and epoch + 1 < settings.epochs:
            accelerator.wait_for_everyone()
            if settings.report_to not in ("none", "", None):
                accelerator.end_training()
            return {"stopped_after_epoch": epoch + 1}

    accelerator.wait_for_everyone()
    if state["best_epoch"] is None:
        raise RuntimeError(f"stage {task.name!r}: no epoch was run (epochs={settings.epochs}), nothing to select")
    # The test split is evaluated once, on the selected model as saved.
    selected = task.load_fn(output_dir)
    unwrapped.load_state_dict(selected.state_dict())
    del selected
    final_split = "test" if "test" in eval_loaders else "validation"
    final_metrics, (labels, predictions) = evaluate(accelerator, model, eval_loaders[final_split], task, frozen)
    final_metrics["confusion_matrix"] = confusion_matrix(labels, predictions, len(task.label_names))

    metrics = {
        "stage": task.name,
        "selection": "best dev (validation) weighted F1; test evaluated once, on the selected model",
        "selected_epoch": state["best_epoch"],
        "validation": state.get("best_validation"),
        final_split: final_metrics,
        "history": state["history"],
        "num_processes": accelerator.num_processes,
        "settings": settings.to_dict(),
        "schedule": {"warmup_steps": warmup_steps, "total_steps": total_steps, "optimizer_steps": state["global_step"]},
        **task.description,
    }
    if settings.track_test:
        tracked = [entry for entry in state["history"] if "test" in entry]
        if tracked:
            best = max(tracked, key=lambda entry: entry["test"]["weighted_f1"])
            metrics["test_selected_on_test"] = {
                "note": "the released scripts' selection (best test F1 over epochs): leaks the test set; for "
                "comparison with published numbers only",
                "epoch": best["epoch"], **best["test"],
            }
    if accelerator.is_main_process:
        write_json(output_dir / METRICS_FILE, metrics)
        save_confusion_matrix_png(
            final_metrics["confusion_matrix"], list(task.label_names), output_dir / "confusion_matrix.png",
            title=f"{task.name}: {final_split} (epoch {state['best_epoch']}, weighted F1 "
            f"{final_metrics['weighted_f1']:.2f})",
        )
    if settings.report_to not in ("none", "", None):
        accelerator.log({f"{final_split}/weighted_f1": final_metrics["weighted_f1"]}, step=settings.epochs)
        accelerator.end_training()
    accelerator.wait_for_everyone()
    return metrics


def _save_checkpoint(accelerator, output_dir: Path, epoch: int, state: dict, keep: int) -> None:
    folder = output_dir / CHECKPOINTS / f"epoch_{epoch}"
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        write_json(folder / TRAINER_STATE, state)
        if keep and keep > 0:
            done = sorted(
                (path for path in (output_dir / CHECKPOINTS).glob("epoch_*") if path != folder),
                key=lambda path: int(path.name.split("_")[-1]),
            )
            for old in done[: max(len(done) - (keep - 1), 0)]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
