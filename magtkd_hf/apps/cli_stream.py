"""`magtkd-hf stream` (utterances as JSON lines on stdin -> one emotion per line on stdout, as each arrives) and
`magtkd-hf evaluate` (a saved fusion model on a features folder, offline or online)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path

from .cli_model_options import add_model_options, load_model_for_inference


def add_stream_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "stream",
        help="the emotion of each new utterance as a conversation unfolds (JSON lines in, JSON lines out)",
        description="Loads MODEL_DIR (a folder saved by magtkd-hf) and reads one utterance per line on stdin, a JSON "
        "object with 'speaker', 'text', 'video' and/or 'audio' and optional 'start'/'end' seconds (as predict's "
        "conversation files). For each it writes, as soon as it is computed, one JSON line: speaker, text, label "
        "(the emotion), score, probabilities, modalities, index and context ('causal': the model's fusion is causal, the emotion is the "
        "one the whole conversation would give; 'prefix': computed from the conversation so far). Blank lines are "
        "skipped. Relative media paths are read from --base-dir (default: the current directory).",
    )
    parser.add_argument("model_dir", metavar="MODEL_DIR")
    parser.add_argument("--base-dir", default=".", metavar="DIR", help="folder of relative media paths (default .)")
    add_model_options(parser)
    parser.set_defaults(func=run_stream)


def run_stream(args) -> int:
    import warnings

    from ..streaming import MagtkdStream

    model, processor = load_model_for_inference(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # said once here, on stderr, in one line
        stream = MagtkdStream(model, processor)
    if not stream.causal:
        print("magtkd-hf stream: the model's fusion is not causal: each emotion is computed from the conversation "
              "so far (context 'prefix').", file=sys.stderr)
    base_dir = Path(args.base_dir)
    for number, line in enumerate(sys.stdin, start=1):
        if not line.strip():
            continue
        utterance = utterance_from_line(line, number, base_dir)
        try:
            row = stream.add(utterance)
        except ValueError as error:
            raise ValueError(f"stdin line {number}: {error}") from error
        sys.stdout.write(json.dumps(row, allow_nan=False) + "\n")
        sys.stdout.flush()  # the caller reads each emotion as soon as it exists, not when the buffer fills
    return 0


def utterance_from_line(line: str, number: int, base_dir: Path) -> dict:
    """One JSON line -> an utterance mapping, checked as predict's files are, media paths resolved in `base_dir`."""
    from ..inference import MEDIA_KEYS, UTTERANCE_KEYS, _check_field_types

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
        _check_field_types(Path("stdin"), number, utterance)
    except ValueError as error:
        # Its message reads "stdin: utterance N: ..."; say "line N", as every other error of the command does.
        raise ValueError(str(error).replace(f"stdin: utterance {number}:", f"{where}:", 1)) from None
    resolved = dict(utterance)
    for key in MEDIA_KEYS:
        if resolved.get(key) is not None:
            resolved[key] = str((base_dir / resolved[key]).resolve())
    return resolved


def add_evaluate_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="dev/test weighted F1 and accuracy of a saved fusion model on a features folder (--online: prefixes only)",
        description="Evaluates FUSION_DIR (a saved MagtkdFusionModel) on the dev and test splits of FEATURES_DIR (a "
        "stage-3 features folder) in this process. --online: each utterance is predicted from the fusion run on its "
        "conversation up to it (as `magtkd-hf stream` sees it), not from the whole conversation.",
    )
    parser.add_argument("fusion_dir", metavar="FUSION_DIR")
    parser.add_argument("--features", required=True, metavar="FEATURES_DIR")
    parser.add_argument("--online", action="store_true", help="predict every utterance from its prefix only")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON (with confusion matrices)")

    def run(args) -> int:
        from ..training.assemble import evaluate_saved_fusion

        results = evaluate_saved_fusion(args.fusion_dir, args.features, batch_size=args.batch_size, online=args.online)
        if args.json:
            print(json.dumps(results, indent=2))
            return 0
        mode = "online (prefixes)" if args.online else "offline (whole conversations)"
        print(f"{args.fusion_dir}, {mode}:")
        for split, metrics in results.items():
            print(f"  {split:<10}  weighted F1 {metrics['weighted_f1']:.4f}  accuracy {metrics['accuracy']:.4f}  "
                  f"({metrics['num_utterances']} utterances)")
        return 0

    parser.set_defaults(func=run)


__all__ = ["add_evaluate_command", "add_stream_command", "run_stream", "utterance_from_line"]
