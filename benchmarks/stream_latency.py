"""Latency of the latest utterance's emotion as a conversation unfolds (a script, not a test).

For one conversation of `--utterances` MELD-like clips, the time from a new utterance's media to its emotion at the
utterances `--at` (default the 1st, 10th and 30th), two ways side by side in one run:

- stream: `MagtkdStream.add(utterance)`: the new utterance's prompt (from the history), its audio and video decoded
  and encoded alone, then one fusion pass over the cached features of the conversation so far;
- re-run: `predict_emotions` on the prefix that ends there: every clip decoded and every encoder run again.

Prints both times, their ratio and, for the stream step, how much was decoding + prompt, each encoder and the fusion.
At the paper's sizes (`MagtkdConfig()`: roberta-large, data2vec-audio-base, timesformer-base; random weights, nothing
downloaded; a tiny offline tokenizer with MELD-sized prompts), bf16 where the CPU has bf16 instructions (AVX512-BF16
or AMX), else float32 (`--dtype` forces one). `--tiny` uses the test suite's tiny encoders to check the script.

    python benchmarks/stream_latency.py [--utterances 30] [--at 1 10 30] [--seconds 3.2] [--words 16]
                                        [--threads N] [--device cpu|cuda] [--dtype native|float32|bfloat16]
                                        [--causal] [--tiny] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import torch

from magtkd_hf import MagtkdConfig, MagtkdForEmotionRecognition, MagtkdProcessor, MagtkdStream
from magtkd_hf.apps.tiny import SMALL_TALK, train_tiny_roberta_tokenizer
from magtkd_hf.datasets_scripts.synthetic import MELD_LIKE_CLIP, write_mp4
from magtkd_hf.inference import predict_emotions

WORDS = " ".join(SMALL_TALK).split()
PARTS = ("text", "audio", "video", "fusion")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, default=30, help="utterances in the conversation")
    parser.add_argument("--at", type=int, nargs="+", default=[1, 10, 30], help="utterances timed (1-based)")
    parser.add_argument("--seconds", type=float, default=3.2, help="clip length (MELD median ~3.2 s)")
    parser.add_argument("--words", type=int, default=16, help="words per utterance (sets the prompt lengths)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("native", "float32", "bfloat16"), default="native")
    parser.add_argument("--causal", action="store_true", help="a causal fusion (the stream then equals re-running)")
    parser.add_argument("--tiny", action="store_true", help="tiny encoders and clips: checks the script in seconds")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args()
    args.at = sorted({k for k in args.at if 1 <= k <= args.utterances}) or [args.utterances]
    return args


def cpu_has_bf16() -> bool:
    """bf16 matrix products are fast on this CPU: AVX512-BF16 or AMX-BF16 (oneDNN uses them); elsewhere bf16 is
    emulated and slower than float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose_dtype(name: str, device: torch.device) -> torch.dtype:
    if name != "native":
        return getattr(torch, name)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_bf16() else torch.float32


def build(args, device, dtype):
    """(model, processor): the paper's encoder sizes, or the tiny test encoders with `--tiny`."""
    tokenizer = train_tiny_roberta_tokenizer(SMALL_TALK * 4, vocab_size=300)
    if args.tiny:
        from magtkd_hf.apps.tiny import TINY_HEADS, TINY_HIDDEN, tiny_processor
        from magtkd_hf.apps.tiny import tiny_audio_config, tiny_text_config, tiny_video_config
        from magtkd_hf import MagtkdAudioConfig, MagtkdFusionConfig, MagtkdTextConfig, MagtkdVideoConfig

        processor = tiny_processor(tokenizer)
        config = MagtkdConfig(
            text_config=MagtkdTextConfig.from_preset(
                "meld", encoder_config=tiny_text_config(len(processor.tokenizer)), feature_size=TINY_HIDDEN),
            audio_config=MagtkdAudioConfig.from_preset("meld", encoder_config=tiny_audio_config()),
            video_config=MagtkdVideoConfig.from_preset("meld", encoder_config=tiny_video_config()),
            fusion_model_config=MagtkdFusionConfig.from_preset(
                "meld", hidden_size=TINY_HIDDEN, num_attention_heads=TINY_HEADS, intermediate_size=TINY_HIDDEN,
                causal=args.causal),
        )
    else:
        processor = MagtkdProcessor(
            tokenizer, MagtkdProcessor.default_feature_extractor(), MagtkdProcessor.default_image_processor()
        )
        config = MagtkdConfig()
        config.fusion_model_config.causal = args.causal
    torch.manual_seed(0)
    model = MagtkdForEmotionRecognition(config).to(device=device, dtype=dtype).eval()
    return model, processor


def write_conversation(folder: Path, args) -> list[dict]:
    clip = dict(num_frames=8) if args.tiny else MELD_LIKE_CLIP
    conversation = []
    for index in range(args.utterances):
        path = write_mp4(folder / f"utt{index}.mp4", args.seconds, **clip)
        text = " ".join(WORDS[(3 * index + k) % len(WORDS)] for k in range(args.words))
        conversation.append({"speaker": ["Ross", "Rachel", "Monica"][index % 3], "text": text, "video": str(path)})
    return conversation


class PartTimer:
    """Wall time of the encoders' and the fusion's forward passes (hooks; synchronised on CUDA), since `reset`."""

    def __init__(self, model, device):
        self.device, self.handles = device, []
        modules = {"text": model.text_encoder, "audio": model.audio_encoder, "video": model.video_encoder,
                   "fusion": model.fusion}
        for name, module in modules.items():
            self.handles.append(module.register_forward_pre_hook(lambda m, i, name=name: self._start(name)))
            self.handles.append(module.register_forward_hook(lambda m, i, o, name=name: self._stop(name)))
        self.reset()

    def reset(self):
        self.times, self.starts = {name: 0.0 for name in PARTS}, {}

    def _start(self, name):
        synchronize(self.device)
        self.starts[name] = time.perf_counter()

    def _stop(self, name):
        synchronize(self.device)
        self.times[name] += time.perf_counter() - self.starts.pop(name)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(function, timer, device):
    """(seconds, {part: seconds}) of one call."""
    timer.reset()
    synchronize(device)
    start = time.perf_counter()
    function()
    synchronize(device)
    return time.perf_counter() - start, dict(timer.times)


def measure(model, processor, conversation, args, device) -> list[dict]:
    """Per timed utterance: the stream step's time and parts, and the re-run's time."""
    timer = PartTimer(model, device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the paper's fusion: the stream's 'prefix' context is what is timed here
        stream = MagtkdStream(model, processor)
    stream.add(conversation[0])  # warm-up: first calls of every module (allocations, kernel choice)
    stream.reset()
    predict_emotions(model, processor, conversation[:1])
    results = []
    for index, utterance in enumerate(conversation):
        seconds, parts = timed(lambda: stream.add(utterance), timer, device)
        position = index + 1
        if position not in args.at:
            continue
        rerun, rerun_parts = timed(lambda: predict_emotions(model, processor, conversation[:position]), timer, device)
        results.append({"utterance": position, "stream_s": seconds, "stream_parts_s": parts, "rerun_s": rerun,
                        "rerun_parts_s": rerun_parts})
        print_row(results[-1])
    return results


def print_row(result: dict) -> None:
    parts = result["stream_parts_s"]
    encoders = parts["text"] + parts["audio"] + parts["video"]
    decode = result["stream_s"] - encoders - parts["fusion"]
    print(
        f"{result['utterance']:>9}  {result['stream_s'] * 1000:>9.0f}  {result['rerun_s'] * 1000:>9.0f}  "
        f"{result['rerun_s'] / result['stream_s']:>6.1f}x   decode+prompt {decode * 1000:.0f} | encoders "
        f"{encoders * 1000:.0f} (text {parts['text'] * 1000:.0f}, audio {parts['audio'] * 1000:.0f}, video "
        f"{parts['video'] * 1000:.0f}) | fusion {parts['fusion'] * 1000:.1f}",
        flush=True,
    )


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = choose_dtype(args.dtype, device)
    start = time.perf_counter()
    model, processor = build(args, device, dtype)
    parameters = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"model: {parameters:.1f} M parameters, {str(dtype).removeprefix('torch.')} on {device} "
          f"({torch.get_num_threads()} threads, CPU {torch.backends.cpu.get_cpu_capability()}), "
          f"fusion {'causal' if args.causal else 'bidirectional'}; built in {time.perf_counter() - start:.1f} s")
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        conversation = write_conversation(Path(folder), args)
        print(f"media: {len(conversation)} clips of {args.seconds} s written in {time.perf_counter() - start:.1f} s")
        print(f"{'utterance':>9}  {'stream ms':>9}  {'re-run ms':>9}  {'ratio':>7}  stream step: where the time goes")
        results = measure(model, processor, conversation, args, device)
    if args.json:
        Path(args.json).write_text(json.dumps({"dtype": str(dtype), "tiny": args.tiny, "results": results}, indent=2))


if __name__ == "__main__":
    main()
