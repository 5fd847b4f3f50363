"""`magtkd-hf predict`: one conversation file to a table (or JSON), or a whole dataset to a file of rows."""

import os
import sys
from pathlib import Path

from ..configuration_magtkd import DATASETS
from .cli_model_options import add_model_options, load_model_for_inference


def add_predict_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="an emotion for every utterance of a conversation, or of a whole dataset",
        description="Loads MODEL_DIR (a folder saved by magtkd-hf: model and processor) and predicts INPUT. A "
        "CONVERSATION.json: a list of utterances (or {\"utterances\": [...]}), each with 'speaker', 'text', 'video' "
        "(a clip, or a longer video with 'start'/'end' seconds) and optionally 'audio' (WAV/FLAC; default: the "
        "video's sound track); relative paths are read from the JSON file's folder; printed as a table (--json: "
        "JSON). A dataset, with --output FILE.jsonl or FILE.parquet: a JSON lines file (one such conversation per "
        "line), a folder saved with save_to_disk, or a MELD/IEMOCAP release folder (with --dataset); one row per "
        "utterance, conversations batched by size, media decoded in --num-workers processes, resumable (run the "
        "same command again after a stop), shared between processes under `accelerate launch`.",
    )
    parser.add_argument("model_dir", metavar="MODEL_DIR")
    parser.add_argument("input", metavar="INPUT", help="CONVERSATION.json, or a dataset (see above) with --output")
    parser.add_argument("--json", action="store_true", help="print JSON (with every emotion's probability)")
    add_model_options(parser)
    dataset = parser.add_argument_group("a whole dataset")
    dataset.add_argument("--output", metavar="FILE", help="FILE.jsonl or FILE.parquet: one row per utterance")
    dataset.add_argument("--dataset", choices=tuple(DATASETS), help="the dataset of a release folder")
    dataset.add_argument("--split", action="append", help="only this split (repeatable; default: every split)")
    dataset.add_argument("--max-utterances", type=int, default=64, metavar="N",
                         help="utterances per model call (conversations batched by size; default %(default)s)")
    dataset.add_argument(
        "--num-workers", type=int, default=None,
        help="DataLoader workers decoding media while the model runs (default: up to 8 on a GPU; on the CPU 2, or 0 "
        "on a machine of 2 cores or fewer, where a decoding worker slows the model's threads more than it saves)",
    )
    dataset.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    dataset.add_argument("--on-missing", choices=("raise", "drop"), default="raise",
                         help="release folders: missing or unreadable media files are an error (default) or dropped")
    parser.set_defaults(func=_run_predict)


def _run_predict(args) -> int:
    import json

    from ..inference import format_predictions, predict_emotions, read_conversation_file

    if args.output is not None or Path(args.input).suffix != ".json":
        return _run_predict_dataset(args)
    conversation = read_conversation_file(args.input)
    model, processor = load_model_for_inference(args)
    rows = predict_emotions(model, processor, conversation)
    print(json.dumps(rows, indent=2, allow_nan=False) if args.json else format_predictions(rows))
    return 0


def default_decoding_workers(device: str) -> int:
    """Media-decoding DataLoader workers for `predict --output`. Measured on 2 CPU cores at the paper's sizes
    (`benchmarks/inference.py`, bf16): one worker made the run 1.26x slower than decoding in the main process
    (21.3 s vs 16.9 s for 9 utterances), as it takes a core from the model's two threads."""
    cpus = os.cpu_count() or 1
    if device.startswith("cuda"):
        return max(0, min(8, cpus - 1))
    return 0 if cpus <= 2 else 2


def _run_predict_dataset(args) -> int:
    from ..predict_dataset import predict_dataset, read_prediction_input
    from ..precision import resolve_dtype

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
        return 0
    if summary["resumed_with"]:
        print(f"Resumed: {summary['resumed_with']} conversations were already predicted.", file=sys.stderr)
    utterances = sum(len(conversation) for conversation in conversations)
    processes = f" ({summary['processes']} processes)" if summary["processes"] > 1 else ""
    print(f"{summary['conversations']} conversations, {utterances} utterances -> {args.output}{processes}",
          file=sys.stderr)
    return 0


__all__ = ["add_predict_command", "default_decoding_workers"]
