"""`magtkd-hf predict` (one conversation file to a table or JSON, or a whole dataset to a file of rows) and `magtkd-hf
stream` (utterances as JSON lines on stdin -> one emotion per line on stdout, as each arrives). Options: cli.py."""

import json
import os
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path

from ..inference import UTTERANCE_KEYS, conversation_from_json, format_predictions, load_emotion_model
from ..inference import predict_emotions, read_conversation_file
from ..precision import resolve_dtype
from ..predict_dataset import predict_dataset, read_prediction_input
from ..streaming import MagtkdStream


def load_model_for_inference(args):
    """(model, processor) of `args.model_dir` on `args.device` in `args.dtype`."""
    model, processor = load_emotion_model(args.model_dir, args.device, trust_remote_code=args.trust_remote_code)
    dtype = resolve_dtype(args.dtype, args.device)
    return (model if dtype is None else model.to(dtype)), processor


def run_predict(args) -> None:
    if args.output is not None or Path(args.input).suffix != ".json":
        return run_predict_dataset(args)
    conversation = read_conversation_file(args.input)
    model, processor = load_model_for_inference(args)
    rows = predict_emotions(model, processor, conversation)
    print(json.dumps(rows, indent=2, allow_nan=False) if args.json else format_predictions(rows))


def default_decoding_workers(device: str) -> int:
    """Media-decoding DataLoader workers for `predict --output`. Measured on 2 CPU cores at the paper's sizes
    (`benchmarks/inference.py`, bf16): one worker made the run 1.26x slower than decoding in the main process
    (21.3 s vs 16.9 s for 9 utterances), as it takes a core from the model's two threads."""
    cpus = os.cpu_count() or 1
    if device.startswith("cuda"):
        return max(0, min(8, cpus - 1))
    return 0 if cpus <= 2 else 2


def run_predict_dataset(args) -> None:
    if args.output is None:
        raise SystemExit(f"magtkd-hf predict: {args.input} is not a CONVERSATION.json: predicting a dataset needs "
                         "--output FILE.jsonl or FILE.parquet.")
    conversations = read_prediction_input(args.input, args.dataset, args.split, args.on_missing)
    if args.device == "cuda" and "LOCAL_RANK" in os.environ:  # one GPU per launched process
        args.device = f"cuda:{os.environ['LOCAL_RANK']}"
    model, processor = load_model_for_inference(args)
    description = {"model": str(Path(args.model_dir).resolve()), "input": str(Path(args.input).resolve()),
                   "splits": args.split, "dtype": str(resolve_dtype(args.dtype, args.device)),
                   "max_utterances": args.max_utterances}
    workers = default_decoding_workers(args.device) if args.num_workers is None else args.num_workers
    summary = predict_dataset(model, processor, conversations, args.output, max_utterances=args.max_utterances,
                              num_workers=workers, overwrite=args.overwrite, run_description=description)
    if not summary["main_process"]:
        return
    if summary["resumed_with"]:
        print(f"Resumed: {summary['resumed_with']} conversations were already predicted.", file=sys.stderr)
    utterances = sum(len(conversation) for conversation in conversations)
    processes = f" ({summary['processes']} processes)" if summary["processes"] > 1 else ""
    print(f"{summary['conversations']} conversations, {utterances} utterances -> {args.output}{processes}",
          file=sys.stderr)


def run_stream(args) -> None:
    model, processor = load_model_for_inference(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # said once here, on stderr, in one line
        stream = MagtkdStream(model, processor)
    if not stream.causal:
        print("magtkd-hf stream: the model's fusion is not causal: each emotion is computed from the conversation "
              "so far (context 'prefix').", file=sys.stderr)
    for number, line in enumerate(sys.stdin, start=1):
        if not line.strip():
            continue
        utterance = utterance_from_line(line, number, Path(args.base_dir))
        try:
            row = stream.add(utterance)
        except ValueError as error:
            raise ValueError(f"stdin line {number}: {error}") from error
        sys.stdout.write(json.dumps(row, allow_nan=False) + "\n")
        sys.stdout.flush()  # the caller reads each emotion as soon as it exists, not when the buffer fills


def utterance_from_line(line: str, number: int, base_dir: Path) -> dict:
    """One JSON line -> an utterance mapping, checked as predict's files are, media paths resolved in `base_dir`."""
    where = f"stdin line {number}"
    try:
        utterance = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: not JSON ({error}).") from None
    if not isinstance(utterance, Mapping) or not {"speaker", "text"} <= set(utterance):
        raise ValueError(f"{where}: expected a JSON object with at least 'speaker' and 'text'.")
    unknown = set(utterance) - UTTERANCE_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(UTTERANCE_KEYS)}.")
    try:
        return conversation_from_json([utterance], "stdin", base_dir)[0]
    except ValueError as error:  # "stdin: utterance 0: ..." -> "stdin line N: ...", as the command's other errors
        raise ValueError(str(error).replace("stdin: utterance 0:", f"{where}:", 1)) from None
