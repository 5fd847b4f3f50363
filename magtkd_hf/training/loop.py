"""The one training loop of every MAGTKD stage, in the style of transformers' `run_glue_no_trainer.py`: Accelerator
-> a stage's [`StageJob`] (model, datasets, collator) -> AdamW and a linear schedule -> epochs (`model(**batch).loss`,
dev evaluation, the best dev weighted F1 saved, a checkpoint; resumable) -> test once, on the selected model as saved.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from ..loading import load_model
from ..losses import IGNORE_INDEX
from ..metrics import erc_scores
from ..precision import default_inference_dtype
from .checkpointing import find_resumable_checkpoint, load_checkpoint, save_checkpoint
from .data import EpochSampler
from .reporting import stage_metrics, write_stage_report
from .settings import StageSettings

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"


@dataclass
class StageJob:
    """What one stage trains, on what: `model(**batch)` returns `.loss` and `.logits`; `eval_datasets` holds
    "validation" (model selection) and may hold "test"; `eval_collator` (default `collator`) makes the batches of the
    saved model ([`saved_model`]); `train_lengths` group batches by length; `description` goes into the metrics."""

    name: str
    model: nn.Module
    train_dataset: Dataset
    eval_datasets: Mapping[str, Dataset]
    collator: Callable
    label_names: Sequence[str]
    eval_collator: Callable | None = None
    processor: Any = None
    train_lengths: Sequence[int] | None = None
    description: dict = field(default_factory=dict)


@dataclass
class PreparedStage:
    """A stage's job, its objects after `accelerator.prepare` and its schedule (warm-up, total steps)."""

    accelerator: Any
    job: StageJob
    model: nn.Module
    optimizer: Any
    scheduler: Any
    train_loader: DataLoader
    eval_loaders: dict
    schedule: tuple[int, int]


def saved_model(model: nn.Module) -> nn.Module:
    """The model that the stage saves and evaluates: the model itself, or a distillation model's student."""
    return getattr(model, "student", model)


def train_stage(build_job: Callable[[Any], StageJob], settings: StageSettings, output_dir: str | Path,
                resume: bool | str | Path | None = False, stop_after_epochs: int | None = None,
                cpu: bool = False) -> dict:
    """Train one stage into `output_dir` (the selected model, `metrics.json`, `confusion_matrix.png`, `checkpoints/`);
    `build_job(accelerator)` is called after seeding. `resume`: True or "latest" (the newest complete checkpoint, if
    any) or a checkpoint folder. Returns the metrics, or `{"stopped_after_epoch": k}` after `stop_after_epochs`."""
    output_dir = Path(output_dir)
    stage = prepare_stage(build_job, settings, output_dir, cpu)
    state = restore(stage, output_dir / CHECKPOINTS, resume)
    # Accelerate's tracking calls (init_trackers, log) do nothing without a tracker (report_to "none").
    stage.accelerator.init_trackers(f"magtkd-{stage.job.name}", config=asdict(settings))
    stopped = train_epochs(stage, settings, state, output_dir, stop_after_epochs)
    if stopped:
        result = {"stopped_after_epoch": stopped}
    else:
        stage.accelerator.wait_for_everyone()
        result = test_selected(stage, settings, state, output_dir)
    for tracker in stage.accelerator.trackers:  # not `end_training`: it ends the process group `train all` still needs
        tracker.finish()
    stage.accelerator.wait_for_everyone()
    return result


def prepare_stage(build_job, settings: StageSettings, output_dir: Path, cpu: bool) -> PreparedStage:
    """The Accelerator, the seeded job, its loaders, AdamW and the linear schedule, prepared."""
    accelerator = make_accelerator(settings, output_dir, cpu)
    set_seed(settings.seed)
    job = build_job(accelerator)
    train_loader, eval_loaders = make_loaders(job, settings)
    optimizer = make_optimizer(job.model, settings, accelerator.device)
    schedule = schedule_lengths(settings, math.ceil(len(train_loader) / accelerator.num_processes),
                                len(job.train_dataset))
    # Accelerate steps a prepared scheduler once per process at every optimiser step: count in those units.
    scheduler = get_linear_schedule_with_warmup(
        optimizer, schedule[0] * accelerator.num_processes, max(schedule[1], 1) * accelerator.num_processes
    )
    model, optimizer, train_loader, scheduler = accelerator.prepare(job.model, optimizer, train_loader, scheduler)
    eval_loaders = {split: accelerator.prepare_data_loader(loader) for split, loader in eval_loaders.items()}
    return PreparedStage(accelerator, job, model, optimizer, scheduler, train_loader, eval_loaders, schedule)


def train_epochs(stage: PreparedStage, settings, state: dict, output_dir: Path, stop_after_epochs) -> int | None:
    """The epochs left from `state`: train, evaluate on dev, keep the best, checkpoint; one progress bar for them all.
    Returns the last epoch done when `stop_after_epochs` stopped the run early, else None."""
    accelerator, loader = stage.accelerator, stage.train_loader
    epochs = planned_epochs(settings, len(loader))
    remaining_batches = (stage.schedule[1] - state["global_step"]) * settings.gradient_accumulation_steps
    progress = tqdm(total=min(remaining_batches, (epochs - state["completed_epochs"]) * len(loader)),
                    desc=stage.job.name, dynamic_ncols=True, disable=not accelerator.is_local_main_process)
    stopped = None
    for epochs_run, epoch in enumerate(range(state["completed_epochs"], epochs), start=1):
        entry = train_epoch(accelerator, stage.model, loader, stage.optimizer, stage.scheduler, settings, state,
                            epoch, progress)
        dev = run_evaluations(stage, settings, entry)
        progress.set_postfix(epoch=f"{epoch + 1}/{epochs}", dev_f1=f"{dev['weighted_f1']:.1f}")
        record_epoch(stage, output_dir, state, entry, dev)
        accelerator.log({"train/loss": entry["train_loss"], "dev/weighted_f1": dev["weighted_f1"],
                         "dev/accuracy": dev["accuracy"], "learning_rate": entry["learning_rate"]}, step=epoch + 1)
        save_checkpoint(accelerator, output_dir / CHECKPOINTS, epoch + 1,
                        {**state, "scheduler": stage.scheduler.state_dict(), **checkpoint_identity(stage.job)},
                        settings.keep_checkpoints)
        if stop_after_epochs is not None and epochs_run >= stop_after_epochs and epoch + 1 < epochs:
            stopped = epoch + 1
            break
    progress.close()
    return stopped


def train_epoch(accelerator, model, loader, optimizer, scheduler, settings, state, epoch, progress) -> dict:
    """One epoch of `loss = model(**batch).loss` with accumulation and clipping; returns its history entry."""
    started = time.perf_counter()
    loader.set_epoch(epoch)  # the EpochSampler's order: (seed, epoch) alone
    model.train()
    loss_sum, loss_count = torch.zeros((), device=accelerator.device), 0
    for batch in loader:
        with accelerator.accumulate(model):
            with accelerator.autocast():
                loss = model(**batch).loss
            accelerator.backward(loss)
            if accelerator.sync_gradients and settings.max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        state["global_step"] += int(accelerator.sync_gradients)
        loss_sum += loss.detach().float()
        loss_count += 1
        progress.update(1)
        if settings.max_steps and state["global_step"] >= settings.max_steps:
            break
    train_loss = accelerator.reduce(loss_sum, reduction="mean").item() / max(loss_count, 1)
    return {"epoch": epoch + 1, "train_loss": train_loss, "learning_rate": scheduler.get_last_lr()[0],
            "train_seconds": time.perf_counter() - started, "started": started}


def run_evaluations(stage: PreparedStage, settings, entry: dict) -> dict:
    """Dev (and, with `track_test`, test) metrics of this epoch's model, summarised into `entry`; returns dev's."""
    job, evaluated_at = stage.job, time.perf_counter()
    splits = ("validation", "test") if settings.track_test and "test" in stage.eval_loaders else ("validation",)
    for split in splits:
        metrics, _ = evaluate(stage.accelerator, stage.model, stage.eval_loaders[split], job.label_names,
                              f"{job.name} {split}")
        entry[split] = {"weighted_f1": metrics["weighted_f1"], "accuracy": metrics["accuracy"]}
        if split == "validation":
            dev_metrics, entry["dev_seconds"] = metrics, time.perf_counter() - evaluated_at
    logger.info("%s epoch %d: loss %.4f, dev weighted F1 %.2f", job.name, entry["epoch"], entry["train_loss"],
                dev_metrics["weighted_f1"])
    return dev_metrics


@torch.no_grad()
def evaluate(accelerator, model, loader, label_names: Sequence[str], description: str = "evaluating") -> tuple[dict, Any]:
    """`saved_model(model)(**batch).logits.argmax(-1)` against `batch["labels"]`, gathered from every process ->
    (metrics of [`~magtkd_hf.metrics.erc_scores`], (labels, predictions)): those of a single-process evaluation."""
    evaluated = saved_model(accelerator.unwrap_model(model))
    evaluated.eval()
    all_predictions, all_labels = [], []
    for batch in tqdm(loader, desc=description, leave=False, dynamic_ncols=True,
                      disable=not accelerator.is_local_main_process):
        labels = batch.pop("labels")
        with accelerator.autocast():
            predictions = evaluated(**batch).logits.argmax(-1)
        if predictions.dim() == 2:  # (B, N): conversations of different lengths on different processes
            predictions = accelerator.pad_across_processes(predictions, dim=1, pad_index=IGNORE_INDEX)
            labels = accelerator.pad_across_processes(labels, dim=1, pad_index=IGNORE_INDEX)
        predictions, labels = accelerator.gather_for_metrics((predictions.contiguous(), labels.contiguous()))
        all_predictions.append(predictions.flatten().cpu())
        all_labels.append(labels.flatten().cpu())
    labels = torch.cat(all_labels).numpy() if all_labels else torch.empty(0, dtype=torch.long).numpy()
    predictions = torch.cat(all_predictions).numpy() if all_predictions else labels
    return erc_scores(predictions, labels, list(label_names)), (labels, predictions)


def record_epoch(stage: PreparedStage, output_dir: Path, state: dict, entry: dict, dev_metrics) -> None:
    """Save the epoch's model (and the processor) when its dev weighted F1 is the best so far; add it to the history."""
    if state["best_dev_weighted_f1"] is None or dev_metrics["weighted_f1"] > state["best_dev_weighted_f1"]:
        state.update(best_dev_weighted_f1=dev_metrics["weighted_f1"], best_epoch=entry["epoch"],
                     best_validation=dev_metrics)
        if stage.accelerator.is_main_process:
            saved_model(stage.accelerator.unwrap_model(stage.model)).save_pretrained(str(output_dir))
            if stage.job.processor is not None:
                stage.job.processor.save_pretrained(str(output_dir))
    entry["seconds"] = time.perf_counter() - entry.pop("started")
    state["history"].append(entry)
    state["completed_epochs"] = entry["epoch"]


def test_selected(stage: PreparedStage, settings, state, output_dir) -> dict:
    """Reload the selected model as saved, evaluate it once on test (dev when there is none) and write the report."""
    accelerator, job = stage.accelerator, stage.job
    if state["best_epoch"] is None:
        raise RuntimeError(f"stage {job.name!r}: no epoch was run (epochs={settings.epochs}), nothing to select")
    target = saved_model(accelerator.unwrap_model(stage.model))
    target.load_state_dict(load_model(output_dir, expected=type(target)).state_dict())
    split = "test" if "test" in stage.eval_loaders else "validation"
    final_metrics, _ = evaluate(accelerator, stage.model, stage.eval_loaders[split], job.label_names,
                                f"{job.name} {split}")
    metrics = stage_metrics(job, settings, state, split, final_metrics, accelerator.num_processes, stage.schedule)
    if accelerator.is_main_process:
        write_stage_report(output_dir, metrics, split, job.label_names)
    accelerator.log({f"{split}/weighted_f1": metrics[split]["weighted_f1"]}, step=settings.epochs)
    return metrics


def checkpoint_identity(job: StageJob) -> dict:
    """What a checkpoint records of its stage, so that resuming another stage from it is refused."""
    return {"stage": job.name, "model_class": type(job.model).__name__}


def restore(stage: PreparedStage, checkpoints_dir: Path, resume) -> dict:
    """The loop's state: fresh, or restored (with the model, optimiser, scheduler and random states) from the
    checkpoint `resume` names (True/"latest": the newest complete one, if any), which this stage must have saved."""
    accelerator, name = stage.accelerator, stage.job.name
    checkpoint = Path(resume) if resume and resume not in (True, "latest") else None
    if resume in (True, "latest"):
        checkpoint, skipped = find_resumable_checkpoint(checkpoints_dir)
        for folder, reason in skipped:
            accelerator.print(f"{name}: not resuming from {folder}: {reason}")
    if checkpoint is None:
        if resume:
            logger.info("%s: no checkpoint in %s, starting from scratch", name, checkpoints_dir)
        return {"completed_epochs": 0, "best_dev_weighted_f1": None, "best_epoch": None, "global_step": 0,
                "history": []}
    state = load_checkpoint(accelerator, checkpoint, checkpoint_identity(stage.job))
    stage.scheduler.load_state_dict(state.pop("scheduler"))  # the JSON copy (Accelerate's scheduler.bin holds the same)
    accelerator.print(f"{name}: resumed from {checkpoint} (epoch {state['completed_epochs']} done)")
    return state


def reset_accelerator_state() -> None:
    """Forget the previous Accelerator's settings (keeping the distributed set-up): stages run one after another in
    one process (`train all`, tests) may differ in mixed precision, which Accelerate's `AcceleratorState` singleton
    refuses to change. Accelerate has no public call for this (transformers' Trainer uses the same private one);
    checked on accelerate 1.16.0, and tests/test_training_fusion.py fails if it changes."""
    AcceleratorState._reset_state(reset_partial_state=False)


def _has_accelerator_device() -> bool:
    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def resolve_mixed_precision(mixed_precision: str, cpu: bool = False) -> str:
    """`"auto"` -> "bf16" where the device this process computes on has native bfloat16 (see
    `magtkd_hf.precision.default_inference_dtype`), else "no"; any other value as given."""
    if mixed_precision != "auto":
        return mixed_precision
    device = "cuda" if torch.cuda.is_available() and not cpu else "cpu"
    return "bf16" if default_inference_dtype(device) == torch.bfloat16 else "no"


def make_accelerator(settings: StageSettings, output_dir: Path, cpu: bool = False):
    """An Accelerator for one stage. DDP runs without `find_unused_parameters` (its default): every stage model uses
    all of its trainable parameters in every step (a distillation's teacher is frozen)."""
    reset_accelerator_state()
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if launched > 1 and not cpu and not _has_accelerator_device():
        # Accelerate would give each process its own single-process run (all writing the same folder); on a machine
        # without GPUs the launched processes form one CPU (gloo) group instead.
        logger.info("No GPU found: the %d launched processes train together on CPU (gloo).", launched)
        cpu = True
    mixed_precision = resolve_mixed_precision(settings.mixed_precision, cpu)
    if mixed_precision == "fp16" and (cpu or not _has_accelerator_device()):
        warnings.warn("fp16 mixed precision needs a GPU: this stage runs in full precision (use bf16 on CPU).")
        mixed_precision = "no"
    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=cpu, project_dir=str(output_dir),
                              gradient_accumulation_steps=settings.gradient_accumulation_steps,
                              log_with=None if settings.report_to == "none" else settings.report_to)
    if launched > 1 and accelerator.num_processes != launched:
        raise RuntimeError(
            f"{launched} processes were launched (WORLD_SIZE) but they did not form one group "
            f"({accelerator.num_processes} process in Accelerate's state): refusing to run {launched} separate "
            "trainings into one folder. Launch with `accelerate launch` or pass --cpu."
        )
    return accelerator


def make_loaders(job: StageJob, settings: StageSettings) -> tuple[DataLoader, dict]:
    """The training loader in the epoch-seeded order (resuming replays an epoch's batches), one per evaluated split."""
    if "validation" not in job.eval_datasets:
        raise ValueError(f"stage {job.name!r}: a 'validation' split is needed for model selection")
    if len(job.train_dataset) == 0:
        raise ValueError(f"stage {job.name!r}: the training split is empty")
    sampler = EpochSampler(len(job.train_dataset), settings.seed, job.train_lengths, settings.batch_size)
    train_loader = DataLoader(job.train_dataset, batch_size=settings.batch_size, sampler=sampler,
                              collate_fn=job.collator, num_workers=settings.num_workers)
    eval_loaders = {
        split: DataLoader(dataset, batch_size=settings.eval_batch_size, shuffle=False,
                          collate_fn=job.eval_collator or job.collator, num_workers=settings.num_workers)
        for split, dataset in job.eval_datasets.items()
    }
    return train_loader, eval_loaders


def make_optimizer(model: nn.Module, settings: StageSettings, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; the fused implementation where this torch has it for `device`."""
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    kwargs = dict(lr=settings.learning_rate, weight_decay=settings.weight_decay)
    if settings.fused_optimizer:
        try:
            probe = torch.zeros(2, device=device, requires_grad=True)  # fails here where fused is not supported
            probe.sum().backward()
            torch.optim.AdamW([probe], fused=True).step()
            return torch.optim.AdamW(parameters, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError) as error:
            logger.info("fused AdamW unavailable on %s (%s): using the default implementation", device, error)
    return torch.optim.AdamW(parameters, **kwargs)


def schedule_lengths(settings: StageSettings, batches_per_epoch: int, num_samples: int) -> tuple[int, int]:
    """(warm-up steps, total steps) of the linear schedule, in optimiser steps: `warmup_ratio` of the run's steps
    (every epoch's, or `max_steps` when fewer); with `schedule="released"`, the released scripts' count in samples
    (warm-up one epoch's), stepped per optimiser step, so the rate barely decays."""
    if settings.schedule == "released":
        return num_samples, num_samples * settings.epochs
    total = math.ceil(batches_per_epoch / settings.gradient_accumulation_steps) * settings.epochs
    total = min(total, settings.max_steps) if settings.max_steps else total
    return round(settings.warmup_ratio * total), total


def planned_epochs(settings: StageSettings, batches_per_epoch: int) -> int:
    """The epochs the loop runs: all of them, or those that `max_steps` reaches into."""
    if not settings.max_steps:
        return settings.epochs
    steps_per_epoch = max(math.ceil(batches_per_epoch / settings.gradient_accumulation_steps), 1)
    return min(settings.epochs, math.ceil(settings.max_steps / steps_per_epoch))
