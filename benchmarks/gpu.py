"""GPU benchmark: end-to-end inference throughput, one stage-1 video training step and peak memory, beside the ideal.

On a CUDA machine, at the paper's encoder sizes (`MagtkdConfig()`: RoBERTa-large, data2vec-audio-base, TimeSformer-base;
random weights, nothing downloaded) on MELD-like clips (1280x720 H.264 + AAC, `--seconds` long):

1. end-to-end inference: conversations through a `DataLoader` whose `--num-workers` workers decode the media of the
   next batches while the model runs (bf16 by default, `torch.inference_mode`; the first batch is a warm-up, excluded):
   utterances/s, beside the ideal utterances/s = peak FLOP/s / FLOP per utterance. The peak rate (`--peak-tflops`,
   400 by default) is an ASSUMPTION, roughly an H200-class dense bf16 rate achievable in practice (the data sheet says
   ~990 dense); FLOP per utterance is the paper-size figure 5.0e15 FLOP per pass over MELD train / 9989 utterances
   (~5.0e11) at real size, and the count of `torch.utils.flop_counter` on the warm-up batch (matmuls, convolutions,
   attention) is printed beside it (`--flop-source counted` takes that one for the ideal);
2. one stage-1 video training step (`MagtkdVideoModel`, `--video-batch` utterances of 8 frames 224 x 224, random
   pixels, AdamW, bf16 autocast when the dtype is bf16): seconds per step, the first step a warm-up, excluded;
3. peak memory: `torch.cuda.max_memory_allocated` per phase on CUDA, the process's max RSS on CPU.

`--tiny`: tiny encoders, 64 x 64 clips of 1 s, 2 conversations -- seconds on a CPU (the test runs it).

`--estimate`: no GPU, no media: the README's table of ESTIMATED GPU memory and time per stage of the MELD recipe, in
markdown. Each stage model is built on the meta device (the fusion on the CPU: its forward calls `.item()`); one
training forward at the recipe's batch counts the forward FLOP (`torch.utils.flop_counter`) and the bytes of the
tensors autograd saves for backward (`torch.autograd.graph.saved_tensors_hooks`; float32, parameters not counted,
each storage once). Memory = 16 bytes per trained parameter (float32 weights, gradients, two AdamW moments) + 4 per
frozen parameter + those activations; time per epoch = 3 x forward FLOP per training utterance (+ 1 x a frozen
teacher's) and 1 x per dev utterance, at `--peak-tflops` (extract-features: one pass over MELD's 13,708 utterances
through the five feature models; the fusion: conversations of 10 utterances). Ranges: a 128-token prompt and a 3.2 s
clip (MELD's median) to the processor's crops (511 tokens, 25 s).

    python benchmarks/gpu.py [--device cuda] [--conversations 32] [--utterances-per-conversation 10] [--seconds 3.2]
                             [--num-workers 8] [--dtype native|bfloat16|float32] [--tiny] [--estimate] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from magtkd_hf import (
    MagtkdAudioConfig, MagtkdConfig, MagtkdDataCollator, MagtkdForEmotionRecognition, MagtkdFusionConfig,
    MagtkdProcessor, MagtkdTextConfig, MagtkdVideoConfig,
)
from magtkd_hf.apps.tiny import (
    SMALL_TALK, TINY_HEADS, TINY_HIDDEN, TINY_IMAGE_SIZE, tiny_audio_config, tiny_text_config, tiny_video_config,
    train_tiny_roberta_tokenizer,
)
from magtkd_hf.datasets_scripts.synthetic import MELD_LIKE_CLIP, write_mp4
from magtkd_hf.modeling_magtkd_fusion import MagtkdFusionModel
from magtkd_hf.modeling_magtkd_stages import MagtkdVideoModel
from magtkd_hf.precision import resolve_dtype
from magtkd_hf.training.extract import MODALITY_MODEL_CLASSES
from magtkd_hf.training.recipe import load_recipe
from magtkd_hf.training.settings import STAGES

WORDS = " ".join(SMALL_TALK).split()
MELD_UTTERANCES = {"train": 9989, "validation": 1109, "test": 2610}
PAPER_FLOP_PER_UTTERANCE = 5.0e15 / MELD_UTTERANCES["train"]  # FLOP per pass over MELD train / its utterances
TINY_VOCAB = 300
# --estimate: (prompt tokens, audio samples at 16 kHz) at the two ends of the ranges; utterances per conversation
ESTIMATE_SIZES = ((128, 51_200), (511, 400_000))
UTTERANCES_PER_CONVERSATION = 10
TINY_CLIP = dict(size=64, height=64, fps=8, sample_rate=16000)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--conversations", type=int, default=None, help="default 32 (--tiny: 2)")
    parser.add_argument("--utterances-per-conversation", type=int, default=None, help="default 10 (--tiny: 3)")
    parser.add_argument("--conversations-per-batch", type=int, default=None, help="default 4 (--tiny: 1)")
    parser.add_argument("--seconds", type=float, default=None, help="clip length, default 3.2 (MELD median; --tiny: 1)")
    parser.add_argument("--num-workers", type=int, default=None, help="DataLoader decoding workers, default 8 (--tiny: 1)")
    parser.add_argument("--dtype", choices=("native", "bfloat16", "float32"), default="native")
    parser.add_argument("--peak-tflops", type=float, default=400.0, help="assumed peak dense rate for the ideal")
    parser.add_argument("--flop-source", choices=("paper", "counted"), default=None,
                        help="FLOP per utterance for the ideal: the 5.0e15/9989 figure (default at real size) or "
                             "the flop counter on the warm-up batch (default with --tiny)")
    parser.add_argument("--video-batch", type=int, default=8, help="utterances per stage-1 video training step")
    parser.add_argument("--train-steps", type=int, default=None, help="timed training steps, default 3 (--tiny: 1)")
    parser.add_argument("--tiny", action="store_true", help="tiny encoders and clips (CPU test)")
    parser.add_argument("--estimate", action="store_true",
                        help="print the estimated GPU memory and time per stage (markdown; meta device, no GPU)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    defaults = dict(conversations=(32, 2), utterances_per_conversation=(10, 3), conversations_per_batch=(4, 1),
                    seconds=(3.2, 1.0), num_workers=(8, 1), train_steps=(3, 1),
                    flop_source=("paper", "counted"))
    for name, (real, tiny) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, tiny if args.tiny else real)
    return args


def check_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"error: --device {name} but no CUDA GPU is available here (torch.cuda.is_available() is False)")
    return device


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def write_rows(folder: Path, args) -> list[dict]:
    """`--conversations` dataset rows over `--utterances-per-conversation` distinct clips (decoded anew each time)."""
    clip = TINY_CLIP if args.tiny else MELD_LIKE_CLIP
    start = time.perf_counter()
    paths = [str(write_mp4(folder / f"utt{u}.mp4", args.seconds, tone_hz=220.0 + 40 * u, **clip))
             for u in range(args.utterances_per_conversation)]
    print(f"media: {len(paths)} distinct clips ({clip['size']}x{clip['height']}, {args.seconds} s) written in "
          f"{time.perf_counter() - start:.1f} s")
    rows = []
    for dialogue in range(args.conversations):
        rows.append({
            "dialogue_id": str(dialogue), "utterance_ids": [str(u) for u in range(len(paths))],
            "speakers": [["Ross", "Rachel", "Monica"][u % 3] for u in range(len(paths))],
            "texts": [" ".join(WORDS[(3 * (dialogue + u) + k) % len(WORDS)] for k in range(16))
                      for u in range(len(paths))],
            "video_paths": paths,
        })
    return rows


def make_processor(tiny: bool) -> MagtkdProcessor:
    size = TINY_IMAGE_SIZE if tiny else 224
    return MagtkdProcessor(train_tiny_roberta_tokenizer(SMALL_TALK * 4, vocab_size=TINY_VOCAB),
                           MagtkdProcessor.default_feature_extractor(), MagtkdProcessor.default_image_processor(size))


def model_config(tiny: bool, vocab_size: int) -> MagtkdConfig:
    if not tiny:
        return MagtkdConfig()
    return MagtkdConfig(
        text_config=MagtkdTextConfig.from_preset("meld", encoder_config=tiny_text_config(vocab_size),
                                                 feature_size=TINY_HIDDEN),
        audio_config=MagtkdAudioConfig.from_preset("meld", encoder_config=tiny_audio_config()),
        video_config=MagtkdVideoConfig.from_preset("meld", encoder_config=tiny_video_config()),
        fusion_model_config=MagtkdFusionConfig.from_preset(
            "meld", hidden_size=TINY_HIDDEN, num_attention_heads=TINY_HEADS, intermediate_size=TINY_HIDDEN),
    )


def to_device(batch, device):
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)


def inference(args, rows, processor, device, dtype) -> dict:
    """Utterances/s through the overlapped pipeline, the warm-up batch excluded; FLOP per utterance counted on it."""
    torch.manual_seed(0)
    model = MagtkdForEmotionRecognition(model_config(args.tiny, len(processor.tokenizer)))
    model = model.to(device=device, dtype=dtype).eval()
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters ({dtype}, {device})")
    loader = torch.utils.data.DataLoader(
        rows, batch_size=args.conversations_per_batch, collate_fn=MagtkdDataCollator(processor),
        num_workers=args.num_workers, prefetch_factor=4 if args.num_workers else None,
        pin_memory=device.type == "cuda",
    )
    reset_peak(device)
    utterances, waits, flop_per_utterance, start = 0, 0.0, None, None
    with torch.inference_mode():
        iterator = iter(loader)
        while True:
            fetch = time.perf_counter()
            batch = next(iterator, None)
            if batch is None:
                break
            count = int(batch["input_ids"].shape[0])
            if start is None:  # warm-up batch: lazy initialisation, workers starting; FLOP counted
                counter = FlopCounterMode(display=False)
                with counter:
                    model(**to_device(batch, device))
                synchronize(device)
                flop_per_utterance = counter.get_total_flops() / count
                start = time.perf_counter()
                continue
            waits += time.perf_counter() - fetch
            model(**to_device(batch, device))
            utterances += count
        synchronize(device)
    seconds = time.perf_counter() - start
    if utterances == 0:
        sys.exit("error: only the warm-up batch ran; give more --conversations than --conversations-per-batch")
    return {"utterances": utterances, "seconds": seconds, "utterances_per_s": utterances / seconds,
            "waiting_for_batches_s": waits, "counted_flop_per_utterance": flop_per_utterance,
            "peak_memory_gib": peak_memory_gib(device)}


def video_training(args, device, dtype) -> dict:
    """Seconds per stage-1 video training step (AdamW, bf16 autocast when `dtype` is bf16), the warm-up excluded."""
    torch.manual_seed(0)
    config = MagtkdVideoConfig.from_preset("meld", encoder_config=tiny_video_config()) if args.tiny else \
        MagtkdVideoConfig()
    model = MagtkdVideoModel(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    size = config.encoder_config.image_size
    pixels = torch.randn(args.video_batch, config.encoder_config.num_frames, 3, size, size, device=device)
    labels = torch.randint(0, config.num_labels, (args.video_batch,), device=device)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
    reset_peak(device)
    times = []
    for _ in range(1 + args.train_steps):
        synchronize(device)
        start = time.perf_counter()
        with autocast:
            loss = model(pixel_values=pixels, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        times.append(time.perf_counter() - start)
    step = sum(times[1:]) / args.train_steps
    return {"video_batch": args.video_batch, "frames": list(pixels.shape[1:]), "step_s": step,
            "utterances_per_s": args.video_batch / step, "loss": loss.item(), "peak_memory_gib": peak_memory_gib(device)}


def report(args, device, dtype, infer: dict, train: dict) -> dict:
    counted = infer["counted_flop_per_utterance"]
    flop = PAPER_FLOP_PER_UTTERANCE if args.flop_source == "paper" else counted
    ideal = args.peak_tflops * 1e12 / flop
    source = ("paper figure 5.0e15 FLOP / 9989 MELD train utterances" if args.flop_source == "paper"
              else "flop counter on the warm-up batch")
    memory = "CUDA max allocated" if device.type == "cuda" else "process max RSS"
    print(f"\n== MAGTKD benchmark ({'tiny' if args.tiny else 'real size'}, {device}, {dtype}) ==")
    print(f"{'figure':<44}{'measured':>14}{'ideal':>14}")
    print(f"{'end-to-end inference (utterances/s)':<44}{infer['utterances_per_s']:>14.2f}{ideal:>14.2f}")
    print(f"{'  fraction of ideal':<44}{infer['utterances_per_s'] / ideal:>14.2%}")
    print(f"{'  waiting for decoded batches (s)':<44}{infer['waiting_for_batches_s']:>14.2f}")
    print(f"{'video training step, batch ' + str(train['video_batch']) + ' (s)':<44}{train['step_s']:>14.3f}")
    print(f"{'peak memory, inference (GiB, ' + memory + ')':<44}{infer['peak_memory_gib']:>14.2f}")
    print(f"{'peak memory, training (GiB, ' + memory + ')':<44}{train['peak_memory_gib']:>14.2f}")
    print(f"ideal = {args.peak_tflops:g} TFLOP/s (an assumed peak rate, --peak-tflops) / {flop:.3g} FLOP per utterance "
          f"({source}); counted on the warm-up batch: {counted:.3g} FLOP per utterance")
    print(f"{infer['utterances']} timed utterances in {infer['seconds']:.2f} s, {args.conversations_per_batch} "
          f"conversation(s) per batch, {args.num_workers} decoding worker(s)")
    return {"device": str(device), "dtype": str(dtype).removeprefix("torch."), "tiny": args.tiny,
            "peak_tflops_assumed": args.peak_tflops, "flop_source": args.flop_source,
            "flop_per_utterance": flop, "ideal_utterances_per_s": ideal, "inference": infer, "video_training": train,
            "peak_memory_gib": max(infer["peak_memory_gib"], train["peak_memory_gib"]), "peak_memory_kind": memory}


def stage_models(config: MagtkdConfig) -> dict:
    """The text, audio and video models on the meta device (no memory, no weights) and the fusion on the CPU."""
    with torch.device("meta"):
        models = {modality: model_class(getattr(config, f"{modality}_config"))
                  for modality, model_class in MODALITY_MODEL_CLASSES.items()}
    models["fusion"] = MagtkdFusionModel(config.fusion_model_config)
    return models


def training_inputs(modality: str, model, batch: int, tokens: int, samples: int) -> tuple[dict, int]:
    """One training batch of `modality` (zeros; meta tensors but for the fusion) and its number of utterances."""
    if modality == "fusion":
        shape = (batch, UTTERANCES_PER_CONVERSATION)
        width = model.config.hidden_size
        inputs = {f"{name}_features": torch.randn(*shape, width) for name in ("text", "audio", "video")}
        inputs.update(speaker_ids=torch.zeros(shape, dtype=torch.long), labels=torch.zeros(shape, dtype=torch.long),
                      attention_mask=torch.ones(shape, dtype=torch.long))
        return inputs, batch * UTTERANCES_PER_CONVERSATION
    with torch.device("meta"):
        labels = torch.zeros(batch, dtype=torch.long)
        if modality == "text":  # no attention_mask: the encoder's `.all()` on it fails on the meta device
            return {"input_ids": torch.zeros(batch, tokens, dtype=torch.long), "labels": labels}, batch
        if modality == "audio":
            return {"input_values": torch.zeros(batch, samples), "labels": labels}, batch
        video = model.config.encoder_config
        frames = torch.zeros(batch, video.num_frames, 3, video.image_size, video.image_size)
        return {"pixel_values": frames, "labels": labels}, batch


def measure(model, inputs: dict, utterances: int) -> dict:
    """Parameters, forward FLOP per utterance and the bytes autograd saves for backward in one training forward
    (each saved storage once; parameters, and views of them, not counted: they are the weights)."""
    parameters = {id(parameter) for parameter in model.parameters()}
    saved = {}

    def pack(tensor):  # a view's `_base`: meta storages have no address (`data_ptr`) to tell shared ones apart
        base = tensor if tensor._base is None else tensor._base
        if id(base) not in parameters:
            saved[id(base)] = base  # kept: the id stays unique while counting
        return tensor

    counter = FlopCounterMode(display=False)
    with counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model.train()(**inputs)
    return {"parameters": sum(parameter.numel() for parameter in model.parameters()),
            "flop_per_utterance": counter.get_total_flops() / utterances,
            "saved_bytes": sum(tensor.numel() * tensor.element_size() for tensor in saved.values())}


def stage_estimate(name: str, profiles: dict, peak_tflops: float) -> dict:
    """Memory and ideal time per epoch of one recipe stage from its models' profiles (`measure`)."""
    spec = STAGES[name]
    if spec.kind == "extract":
        trained, frozen = None, [STAGES[stage].modality for stage in STAGES if STAGES[stage].feature]
    else:
        trained = "fusion" if spec.kind == "fusion" else spec.modality
        frozen = [STAGES[spec.teacher].modality] if spec.teacher else []
    frozen_flop = sum(profiles[modality]["flop_per_utterance"] for modality in frozen)
    if trained is None:  # one pass over every split, no gradients
        flop = frozen_flop * sum(MELD_UTTERANCES.values())
    else:
        forward = profiles[trained]["flop_per_utterance"]
        flop = (3 * forward + frozen_flop) * MELD_UTTERANCES["train"] + forward * MELD_UTTERANCES["validation"]
    weight_bytes = 4 * sum(profiles[modality]["parameters"] for modality in frozen)
    trained_parameters = profiles[trained]["parameters"] if trained else 0
    weights_gib = (16 * trained_parameters + weight_bytes) / 2**30
    activations_gib = profiles[trained]["saved_bytes"] / 2**30 if trained else 0.0
    return {"trained_parameters": trained_parameters, "weights_optimiser_gib": weights_gib,
            "activations_gib": activations_gib, "total_gib": weights_gib + activations_gib,
            "forward_flop_per_utterance": frozen_flop + (profiles[trained]["flop_per_utterance"] if trained else 0),
            "epoch_s": flop / (peak_tflops * 1e12)}


def estimates(args) -> dict:
    """{stage: [estimate at the short end, at the long end of ESTIMATE_SIZES]} for the MELD recipe's stages."""
    recipe = load_recipe("meld")
    config = model_config(args.tiny, TINY_VOCAB)
    config.audio_config.encoder_config.layerdrop = 0.0  # in training each layer is skipped at random: count all
    models = stage_models(config)
    results = {name: [] for name in STAGES}
    for tokens, samples in ESTIMATE_SIZES:
        profiles = {}
        for modality, model in models.items():
            inputs, utterances = training_inputs(modality, model, recipe.stage_settings(modality).batch_size,
                                                 tokens, samples)
            profiles[modality] = measure(model, inputs, utterances)
        for name in STAGES:
            results[name].append(stage_estimate(name, profiles, args.peak_tflops))
    return {"recipe": recipe, "stages": results}


def duration(seconds: float) -> str:
    if seconds < 0.1:
        return "< 0.1 s"
    if seconds < 120:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def spread(values: list, form) -> str:
    """`form(value)` of both ends, once where they agree."""
    low, high = (form(value) for value in values)
    return low if low == high else f"{low} - {high}"


def estimate_table(figures: dict, args) -> str:
    recipe = figures["recipe"]
    lines = ["| stage | trained parameters | batch | weights + optimiser (GiB) | activations, one batch (GiB) | "
             "total (GiB) | forward FLOP / utterance | ideal time per epoch | epochs: ideal total |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, ends in figures["stages"].items():
        settings, extract = recipe.stage_settings(name), STAGES[name].kind == "extract"
        batch = f"{settings.batch_size} x {UTTERANCES_PER_CONVERSATION}" if name == "fusion" else settings.batch_size
        epochs = 1 if extract else settings.epochs
        cells = [name, f"{ends[0]['trained_parameters'] / 1e6:.3g} M" if ends[0]["trained_parameters"] else "0", batch,
                 spread([end["weights_optimiser_gib"] for end in ends], "{:.3g}".format),
                 "no backward" if extract else spread([end["activations_gib"] for end in ends], "{:.3g}".format),
                 spread([end["total_gib"] for end in ends], "{:.3g}".format),
                 spread([end["forward_flop_per_utterance"] for end in ends], "{:.2e}".format),
                 spread([end["epoch_s"] for end in ends], duration),
                 f"{epochs}: " + spread([epochs * end["epoch_s"] for end in ends], duration)]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    (tokens, samples), (long_tokens, long_samples) = ESTIMATE_SIZES
    lines.append(f"\nESTIMATES, not measured ({'tiny encoders' if args.tiny else 'paper sizes'}, MELD recipe): "
                 f"float32; ranges from {tokens} to {long_tokens} prompt tokens and {samples / 16000:g} to "
                 f"{long_samples / 16000:g} s of audio; time = the ideal at an assumed {args.peak_tflops:g} TFLOP/s "
                 "sustained (--peak-tflops).")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.estimate:
        figures = estimates(args)
        print(estimate_table(figures, args))
        if args.json:
            Path(args.json).write_text(json.dumps({"tiny": args.tiny, "peak_tflops_assumed": args.peak_tflops,
                                                   "stages": figures["stages"]}, indent=2))
        return
    device = check_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    with tempfile.TemporaryDirectory(prefix="magtkd-gpu-bench-") as folder:
        rows = write_rows(Path(folder), args)
        infer = inference(args, rows, make_processor(args.tiny), device, dtype)
    train = video_training(args, device, dtype)
    figures = report(args, device, dtype, infer, train)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
