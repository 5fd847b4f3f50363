"""Fusion stage, ours against the released module, side by side in one run (CPU by default).

MELD-train-sized synthetic features (1,038 conversations with the real utterance counts of train_sent_emo.csv),
H = 768, 8 heads, batch 16 conversations, dropout 0.5, AdamW 1e-4 with the linear warm-up schedule and gradient
clipping at 10, as in the released recipe. Each round runs a training epoch, then an inference pass over the set, of
every variant below, interleaved batch by batch (one batch of each in turn, so that other work on a shared machine
slows all alike); wall-clock and process CPU seconds are summed per variant:

- released: the authors' `Transformer_Based_Model` (MELD/model.py) driven by their own `train_or_eval_model`
  (MELD/multimodel_fusion.py: its loss, backward, clip, AdamW, scheduler) over shuffled batches in their padded
  layout; "inference" is the same function with `train=False` (how their script evaluates: with autograd on) and,
  as a second figure, their forward alone under `torch.inference_mode()`. Their `.cuda()` calls become no-ops here.
  Needs `--released-code DIR` (a folder holding their MELD/ scripts, outside this repository, never committed:
  `git --git-dir=/path/to/MAGTKD.git archive HEAD MELD | tar -x -C /tmp/released`); skipped without it.
- ours fp32: `MagtkdFusionModel` over length-grouped batches (our recipe's sampler), fused AdamW; inference over
  length-sorted batches in `torch.inference_mode()`.
- ours bf16: the same under `torch.autocast("cpu", torch.bfloat16)` (float32 master weights and optimiser state);
  inference also with the weights cast to bfloat16 (`model.to(torch.bfloat16)`, what `dtype="auto"` loads).

Prints the fastest round of each, the ratios to the released module and the compute floors (FLOPs / measured matmul
rate, float32 and bfloat16). `--save-outputs PATH` / `--compare-outputs PATH` store or check the float32 outputs of a
seeded model on seeded inputs (eval logits and loss, a seeded training step's loss and gradients), to prove that a
faster implementation computes the same thing. `--learnable` instead trains float32 against bf16 autocast on the
learnable synthetic features of `magtkd_hf.apps.fusion_demo` (at H = 768): seconds per epoch, dev weighted F1 and
accuracy of both.

    python benchmarks/fusion_vs_released.py [--threads 2] [--rounds 1] [--released-code /tmp/released/MELD]
        [--conversations 1038] [--skip-bf16] [--save-outputs PATH | --compare-outputs PATH]
    python benchmarks/fusion_vs_released.py --learnable [--learnable-epochs 4]
"""

import argparse
import contextlib
import copy
import sys
import time
import types
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, RandomSampler
from transformers import get_linear_schedule_with_warmup
from transformers.trainer_pt_utils import LengthGroupedSampler

from fusion import MELD_TRAIN_CSV, flops_per_utterance, meld_train_lengths, synthetic_rows

from magtkd_hf import MagtkdFusionConfig, MagtkdFusionModel
from magtkd_hf.features import FusionFeatureCollator

EPOCHS_IN_SCHEDULE = 30  # the released recipe's


# ------------------------------------------------------------------------------------------------------ batches


def our_batches(rows, lengths, batch_size, grouped: bool, seed: int = 0) -> list[dict]:
    """Collated `MagtkdFusionModel` batches: length-grouped (training) or length-sorted (inference)."""
    if grouped:
        order = list(LengthGroupedSampler(batch_size, lengths=lengths, generator=torch.Generator().manual_seed(seed)))
    else:
        order = sorted(range(len(rows)), key=lambda index: lengths[index])
    loader = DataLoader([rows[i] for i in order], batch_size=batch_size, collate_fn=FusionFeatureCollator())
    return list(loader)


def released_batches(rows, batch_size, shuffle: bool, seed: int = 0) -> list[list]:
    """Batches in the released layout (`MELD_MM_Dataset.collate_fn`): features (N, B, H) for text, audio, video,
    audio_kd, video_kd (the model reads text, audio_kd, video_kd; audio/video are the same tensors here), speakers
    and utterance mask (B, N) float, labels (B, N) long (padded with 0), and the conversation ids."""
    order = list(RandomSampler(rows, generator=torch.Generator().manual_seed(seed))) if shuffle else range(len(rows))
    order = list(order)
    batches = []
    for start in range(0, len(order), batch_size):
        chunk = [rows[i] for i in order[start : start + batch_size]]
        text, audio, video = (pad_sequence([torch.from_numpy(row[key]) for row in chunk]) for key in ("text", "audio_kd", "video_kd"))
        speakers = pad_sequence([torch.tensor(row["speaker_ids"], dtype=torch.float32) for row in chunk], True)
        umask = pad_sequence([torch.ones(len(row["labels"])) for row in chunk], True)
        labels = pad_sequence([torch.tensor(row["labels"]) for row in chunk], True)
        batches.append([text, audio, video, audio, video, speakers, umask, labels, list(range(start, start + len(chunk)))])
    return batches


# ------------------------------------------------------------------------------------------------- ours
#
# Every run is a generator that does one batch per `next()`: the main loop interleaves the runs batch by batch, so
# that other work on a shared machine slows them alike.


def our_training(config, batches, autocast_dtype=None, seed: int = 0):
    """A fresh seeded model, fused AdamW and the linear schedule; returns it and an epoch generator (one step each)."""
    torch.manual_seed(seed)
    model = MagtkdFusionModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-6, fused=True)
    scheduler = get_linear_schedule_with_warmup(optimizer, len(batches), len(batches) * EPOCHS_IN_SCHEDULE)

    def epoch():
        model.train()
        for batch in batches:
            with _autocast(autocast_dtype):
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            yield loss.item()

    return model, epoch


def our_inference(model, batches, autocast_dtype=None):
    """Predictions batch by batch under `torch.inference_mode()`."""
    for batch in batches:
        with torch.inference_mode(), _autocast(autocast_dtype):
            model.eval()
            logits = model(**{key: value for key, value in batch.items() if key != "labels"}).logits
            yield logits.argmax(-1)[batch["attention_mask"].bool()]


def _autocast(dtype):
    return torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()


# --------------------------------------------------------------------------------------------- released


@contextlib.contextmanager
def cuda_calls_are_noops():
    """The released code calls `.cuda()` on tensors and modules unconditionally; on CPU they return their object."""
    saved = torch.Tensor.cuda, nn.Module.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    nn.Module.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda, nn.Module.cuda = saved


def released_module(code: Path):
    """The authors' `multimodel_fusion` module (imports their `model` and `dataset` from `code`)."""
    if not (code / "multimodel_fusion.py").is_file() or not (code / "model.py").is_file():
        raise FileNotFoundError(f"{code} holds no multimodel_fusion.py/model.py (the released MELD/ folder)")
    sys.path.insert(0, str(code))
    import multimodel_fusion  # noqa: E402  (the authors' script, outside this repository)

    multimodel_fusion.args = types.SimpleNamespace(
        lr=1e-4, l2=1e-6, batch_size=16, seed=2024, epochs=EPOCHS_IN_SCHEDULE, dropout=0.5, hidden_dim=768, n_head=8,
        temp=2.0, clsNum=7, train=True,
    )
    return multimodel_fusion


def released_training(released, batches, seed: int = 0):
    """Their model, AdamW and schedule; the epoch generator runs their `train_or_eval_model` one batch at a time (its
    per-call metrics over one batch add about a millisecond)."""
    torch.manual_seed(seed)
    with cuda_calls_are_noops():
        model = released.Transformer_Based_Model(released.args)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-6)  # as their script
    scheduler = get_linear_schedule_with_warmup(optimizer, len(batches), len(batches) * EPOCHS_IN_SCHEDULE)

    def epoch():
        for batch in batches:
            with cuda_calls_are_noops():
                yield released.train_or_eval_model(model, [batch], 0, optimizer, scheduler, True)[0]

    return model, epoch


def released_eval(released, model, batches):
    """Their evaluation: `train_or_eval_model(train=False)` (autograd on, as their script runs it), batch by batch."""
    for batch in batches:
        with cuda_calls_are_noops():
            yield released.train_or_eval_model(model, [batch], 0)[3]


def released_forward(model, batches):
    """Their forward alone, autograd off: the released module's best case."""
    for text, _, _, audio_kd, video_kd, speakers, umask, _, _ in batches:
        with torch.inference_mode(), cuda_calls_are_noops():
            model.eval()
            lengths = umask.sum(1).long().tolist()
            logits = model(text, audio_kd, video_kd, umask, speakers.clone(), lengths)[0]
            yield logits.argmax(-1)[umask.bool()]


# ----------------------------------------------------------------------------------------- output check


def reference_outputs(threads: int) -> dict:
    """Float32 outputs of a seeded MELD-preset model (H = 768) on seeded inputs of MELD-like lengths: eval logits of
    the three heads and eval loss, and a seeded training forward's loss and parameter gradients."""
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    lengths = [9, 1, 24, 5, 14, 3]
    batch_size, max_length, hidden = len(lengths), max(lengths), 768
    attention_mask = (torch.arange(max_length)[None, :] < torch.tensor(lengths)[:, None]).long()
    batch = {
        "text_features": torch.randn(batch_size, max_length, hidden, generator=generator),
        "audio_features": torch.randn(batch_size, max_length, hidden, generator=generator),
        "video_features": torch.randn(batch_size, max_length, hidden, generator=generator),
        "speaker_ids": torch.randint(0, 9, (batch_size, max_length), generator=generator),
        "attention_mask": attention_mask,
        "labels": torch.where(attention_mask.bool(), torch.randint(0, 7, (batch_size, max_length), generator=generator), -100),
    }
    torch.manual_seed(0)
    model = MagtkdFusionModel(MagtkdFusionConfig.for_meld()).eval()
    outputs = {}
    with torch.no_grad():
        result = model(**batch)
    for key in ("loss", "logits", "audio_logits", "video_logits", "text_anchor_hidden_states"):
        outputs[f"eval.{key}"] = result[key]
    model.train()
    torch.manual_seed(1)
    loss = model(**batch).loss
    loss.backward()
    outputs["train.loss"] = loss.detach()
    for name, parameter in model.named_parameters():
        if parameter.grad is not None:
            outputs[f"grad.{name}"] = parameter.grad
    return outputs


def compare_outputs(path: Path, threads: int) -> None:
    saved, now = torch.load(path), reference_outputs(threads)
    worst = {}
    for key, value in saved.items():
        kind = key.split(".")[0]
        difference = (value - now[key]).abs().max().item() if key in now else float("inf")
        worst[kind] = max(worst.get(kind, 0.0), difference)
    print("max |saved - now| over " + ", ".join(f"{kind}: {value:.2e}" for kind, value in worst.items())
          + (" (equal within 1e-5)" if max(worst.values()) <= 1e-5 else " (DIFFERENT)"))


# ---------------------------------------------------------------------------------------------------- main


# ----------------------------------------------------------------------------- bf16 on a learnable set


def learnable_comparison(args) -> None:
    """Train two identically seeded models on the same batches of `magtkd_hf.apps.fusion_demo`'s learnable synthetic
    features at H = 768 (MELD preset: 8 heads, dropout 0.5), one in float32 and one under bf16 autocast, interleaved
    batch by batch; per epoch the seconds of each and its dev weighted F1 / accuracy (each evaluated in its own
    precision), and how many dev predictions the two share."""
    from magtkd_hf.apps.fusion_demo import synthetic_feature_splits
    from magtkd_hf.metrics import classification_metrics

    config = MagtkdFusionConfig.for_meld()
    splits = synthetic_feature_splits(hidden_size=config.hidden_size, num_labels=config.num_labels, seed=0)
    splits = splits.with_format("numpy")
    train, dev = list(splits["train"]), list(splits["validation"])
    lengths = [len(row["speaker_ids"]) for row in train]
    train_batches = our_batches(train, lengths, args.batch_size, grouped=True)
    dev_batches = our_batches(dev, [len(row["speaker_ids"]) for row in dev], args.batch_size, grouped=False)
    runs = {}
    for name, dtype in (("fp32", None), ("bf16 autocast", torch.bfloat16)):
        model, _ = our_training(config, train_batches)  # the same seeded initial weights
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.learnable_lr, weight_decay=1e-6, fused=True)
        steps = len(train_batches) * args.learnable_epochs
        scheduler = get_linear_schedule_with_warmup(optimizer, steps // 10, steps)
        runs[name] = (model, optimizer, scheduler, dtype)
    label_names = [config.id2label[index] for index in range(config.num_labels)]
    print(f"learnable synthetic set: {len(train)} train / {len(dev)} dev conversations ({sum(lengths)} train "
          f"utterances), H = {config.hidden_size}, batch {args.batch_size}, AdamW lr {args.learnable_lr}, "
          f"{args.learnable_epochs} epochs, dropout seeds shared")

    # Each run keeps its own RNG state across the interleaving: both draw the same dropout masks.
    rng_states = {name: torch.manual_seed(1000).get_state() for name in runs}

    def epoch(name):
        model, optimizer, scheduler, dtype = runs[name]
        model.train()
        for batch in train_batches:
            torch.set_rng_state(rng_states[name])
            with _autocast(dtype):
                loss = model(**batch).loss
            rng_states[name] = torch.get_rng_state()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            yield

    for epoch_index in range(args.learnable_epochs):
        seconds = interleaved({name: epoch(name) for name in runs})
        predictions, scores = {}, {}
        for name, (model, _, _, dtype) in runs.items():
            predictions[name] = torch.cat(list(our_inference(model, dev_batches, dtype)))
            labels = torch.cat([batch["labels"][batch["attention_mask"].bool()] for batch in dev_batches])
            scores[name] = classification_metrics(labels.numpy(), predictions[name].numpy(), label_names)
        same = (predictions["fp32"] == predictions["bf16 autocast"]).float().mean().item()
        print(f"epoch {epoch_index + 1}: " + "; ".join(
            f"{name} {seconds[name][0]:.1f} s ({seconds[name][1]:.1f} CPU s), dev weighted F1 "
            f"{scores[name]['weighted_f1']:.2f}, accuracy {scores[name]['accuracy']:.2f}" for name in runs)
            + f"; dev predictions equal {100 * same:.1f}%", flush=True)


def matmul_rate(dtype, rows: int = 160, repeats: int = 60) -> float:
    """FLOP/s of a (rows, 768) x (768, 768) linear map, about a batch of 16 MELD conversations, over rotating weights
    (the model's weights are not in cache either)."""
    weights = [torch.randn(768, 768, dtype=dtype) for _ in range(12)]
    inputs = torch.randn(rows, 768, dtype=dtype)
    for weight in weights:
        torch.nn.functional.linear(inputs, weight)
    start = time.perf_counter()
    for index in range(repeats):
        torch.nn.functional.linear(inputs, weights[index % len(weights)])
    return 2 * rows * 768 * 768 * repeats / (time.perf_counter() - start)


def interleaved(runs: dict) -> dict:
    """Drive the generators round-robin, one batch each in turn (the starting run rotates); wall and CPU seconds."""
    seconds = {name: [0.0, 0.0] for name in runs}
    active = {name: iter(generator) for name, generator in runs.items()}
    turn = 0
    while active:
        names = list(active)
        for name in names[turn % len(names) :] + names[: turn % len(names)]:
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                next(active[name])
            except StopIteration:
                del active[name]
            seconds[name][0] += time.perf_counter() - wall
            seconds[name][1] += time.process_time() - cpu
        turn += 1
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--conversations", type=int, default=None, help="first N train conversations (all by default)")
    parser.add_argument("--released-code", type=Path, default=None, help="folder of the released MELD/ scripts")
    parser.add_argument("--skip-bf16", action="store_true")
    parser.add_argument("--csv", type=Path, default=MELD_TRAIN_CSV)
    parser.add_argument("--save-outputs", type=Path, default=None)
    parser.add_argument("--compare-outputs", type=Path, default=None)
    parser.add_argument("--learnable", action="store_true", help="only the bf16-vs-fp32 run on the learnable set")
    parser.add_argument("--learnable-epochs", type=int, default=4)
    parser.add_argument("--learnable-lr", type=float, default=1e-4)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.learnable:
        learnable_comparison(args)
        return
    if args.save_outputs or args.compare_outputs:
        if args.save_outputs:
            torch.save(reference_outputs(args.threads), args.save_outputs)
            print(f"saved the reference outputs to {args.save_outputs}")
        else:
            compare_outputs(args.compare_outputs, args.threads)
        return

    lengths = meld_train_lengths(args.csv)[: args.conversations]
    config = MagtkdFusionConfig.for_meld()
    rows = synthetic_rows(lengths, config.hidden_size, config.num_labels, torch.Generator().manual_seed(0))
    utterances = sum(lengths)
    train_batches = our_batches(rows, lengths, args.batch_size, grouped=True)
    eval_batches = our_batches(rows, lengths, args.batch_size, grouped=False)

    training, inference = {}, {}  # name -> a function making a fresh generator
    if args.released_code is not None:
        released = released_module(args.released_code)
        shuffled, in_order = released_batches(rows, args.batch_size, True), released_batches(rows, args.batch_size, False)
        released_model, training["released"] = released_training(released, shuffled)
        inference["released (its train_or_eval_model)"] = lambda: released_eval(released, released_model, in_order)
        inference["released forward, inference_mode"] = lambda: released_forward(released_model, in_order)
    else:
        print("released module: skipped (no --released-code)")
    model, training["ours fp32"] = our_training(config, train_batches)
    inference["ours fp32"] = lambda: our_inference(model, eval_batches)
    if not args.skip_bf16:
        bf16_model, training["ours bf16 autocast"] = our_training(config, train_batches, autocast_dtype=torch.bfloat16)
        inference["ours bf16 autocast"] = lambda: our_inference(bf16_model, eval_batches, torch.bfloat16)
        cast_model = copy.deepcopy(bf16_model).to(torch.bfloat16)
        inference["ours bf16 weights"] = lambda: our_inference(cast_model, eval_batches)

    print(f"{len(lengths)} conversations, {utterances} utterances (longest {max(lengths)}), H = {config.hidden_size}, "
          f"{config.num_attention_heads} heads, batch {args.batch_size}, {torch.get_num_threads()} threads; "
          f"runs interleaved batch by batch, {args.rounds} round(s)", flush=True)
    for runs in (training, inference):  # warm-up: one batch each
        for make in runs.values():
            next(iter(make()))
    best = {}
    rates = {"fp32": [], "bf16": []}
    for round_index in range(args.rounds):
        rates["fp32"].append(matmul_rate(torch.float32))
        rates["bf16"].append(matmul_rate(torch.bfloat16))
        for phase, runs in (("training epoch", training), ("inference", inference)):
            seconds = interleaved({name: make() for name, make in runs.items()})
            for name, (wall, cpu) in seconds.items():
                key = (phase, name)
                best[key] = [min(a, b) for a, b in zip(best.get(key, (wall, cpu)), (wall, cpu))]
            print(f"round {round_index + 1} {phase}: " + "; ".join(
                f"{name} {wall:.1f} s ({cpu:.1f} CPU s)" for name, (wall, cpu) in seconds.items()), flush=True)

    rate32, rate16 = max(rates["fp32"]), max(rates["bf16"])
    forward_flops = flops_per_utterance(config) * utterances
    print(f"\nmatmul rate (160x768 @ 768x768, best round): fp32 {rate32 / 1e9:.0f} GFLOP/s, bf16 {rate16 / 1e9:.0f} "
          f"GFLOP/s; forward {flops_per_utterance(config) / 1e6:.0f} MFLOP/utterance")
    print(f"compute floor: training epoch fp32 {3 * forward_flops / rate32:.1f} s, bf16 {3 * forward_flops / rate16:.1f} "
          f"s; inference fp32 {forward_flops / rate32:.1f} s, bf16 {forward_flops / rate16:.1f} s")
    references = {"training epoch": "released", "inference": "released (its train_or_eval_model)"}
    print(f"\n{'fastest round':58s} {'wall s':>7s} {'CPU s':>7s} {'released/this (wall, CPU)':>26s}")
    for (phase, name), (wall, cpu) in best.items():
        reference = best.get((phase, references[phase]))
        ratio = f"{reference[0] / wall:.2f}x, {reference[1] / cpu:.2f}x" if reference else "-"
        print(f"{phase + ': ' + name:58s} {wall:7.1f} {cpu:7.1f} {ratio:>26s}")
    forward_only = best.get(("inference", "released forward, inference_mode"))
    if forward_only:
        print("inference against the released forward under inference_mode (wall, CPU): " + "; ".join(
            f"{name} {forward_only[0] / wall:.2f}x, {forward_only[1] / cpu:.2f}x"
            for (phase, name), (wall, cpu) in best.items() if phase == "inference" and name.startswith("ours")))


if __name__ == "__main__":
    main()
