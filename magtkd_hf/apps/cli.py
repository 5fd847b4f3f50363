"""`magtkd-hf` command line: each sub-command parses its arguments and calls the package's functions."""

import argparse
import errno
import json
import os
import pickle
import re
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import AutoConfig, HfArgumentParser

from .. import __version__, inference, subtitles, timeline
from ..configuration_magtkd import DATASETS, FEATURE_SOURCES, dataset_facts
from ..datasets_scripts.check import run_check_data
from ..datasets_scripts.sample import SAMPLE_MELD_ROOT
from ..precision import DTYPE_CHOICES, resolve_dtype
from ..predict_dataset import predict_dataset, read_prediction_input
from ..prediction_files import ProcessGroup, check_output, output_lock, write_output
from ..processors import MagtkdProcessor
from ..released import import_released_features, load_released_end_to_end, load_released_fusion
from ..streaming import MagtkdStream
from ..training.assemble import evaluate_saved_fusion
from .cli_cache import run_cache_frames
from .cli_train import add_train_command
from .fusion_demo import print_fusion_demo_report, run_fusion_demo
from . import web
from .hub import add_push_command

SAMPLE_CONVERSATION_FILE = SAMPLE_MELD_ROOT / "conversations" / "test_conversation.json"
# The options naming files a command reads (folders are options of their own): each must be a regular file.
FILE_OPTIONS = ("input", "subtitles", "fusion", *FEATURE_SOURCES, "speaker_map", "split_file", "files", "recipe")
# Errors a user can cause and fix: a short message and exit status 1 (`--debug`/MAGTKD_HF_DEBUG=1: the traceback).
EXPECTED_ERRORS = (ValueError, OSError, KeyError, RuntimeError, MemoryError, pickle.UnpicklingError)
# A stream line holds one utterance (its text is cut to max_text_tokens x 32 characters anyway): 1 MiB is far above.
MAX_STREAM_LINE_BYTES = 1 << 20
DATASET_MAX_UTTERANCES = 64
DEBUG_HELP = "on an error, print the full traceback instead of one line (also: environment MAGTKD_HF_DEBUG=1)"


class CommandParser(HfArgumentParser):
    """A sub-command's parser: options shown with dashes only (the underscore spellings HfArgumentParser adds for the
    `train` settings still parse, unlisted), defaults written in the help texts (not appended by the formatter), and
    `--debug` documented."""

    def __init__(self, *args, formatter_class=argparse.HelpFormatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)
        self.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)

    def add_argument(self, *names, **settings):
        return _shown_with_dashes(super().add_argument(*names, **_with_negation_help(settings)))

    def add_argument_group(self, *args, **kwargs):
        group = super().add_argument_group(*args, **kwargs)
        add = group.add_argument
        group.add_argument = lambda *names, **settings: _shown_with_dashes(add(*names, **_with_negation_help(settings)))
        return group


def _shown_with_dashes(action: argparse.Action) -> argparse.Action:
    action.option_strings = [name for name in action.option_strings if "_" not in name] or action.option_strings
    return action


def _with_negation_help(settings: dict) -> dict:
    """HfArgumentParser gives `--no-X` the help of `--X`: say what it does instead."""
    if settings.get("action") == "store_false" and "dest" in settings:
        settings = {**settings, "help": f"turn {_flag(settings['dest'])} off"}
    return settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="magtkd-hf", description=__doc__)
    parser.add_argument("--version", action="version", version=f"magtkd-hf {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=CommandParser)
    for add_command in (_add_demo, _add_predict, _add_fusion_demo, _add_convert_released, _add_import_released_features,
                        _add_check_data, add_train_command, _add_cache_frames, _add_stream, _add_evaluate,
                        add_push_command, _add_app):
        add_command(subparsers)
    return parser


def _command(subparsers, name: str, run, help: str, description: str) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help, description=description)
    parser.set_defaults(func=run)
    return parser


def _flag(source: str) -> str:
    return "--" + source.replace("_", "-")


def _add_demo(subparsers) -> None:
    parser = _command(
        subparsers, "demo", _run_demo,
        "the whole recipe in miniature on the shipped sample data, then a prediction",
        "Builds tiny random-weight encoders (the real RoBERTa, data2vec-audio and TimeSformer architectures) and a "
        "tokenizer offline, runs `train all` on the sample conversations shipped with the package, reloads the model "
        "with AutoModel/AutoProcessor and predicts the sample test conversation. About 3 minutes on 2 CPU cores "
        "(measured: 3 min 7 s, 182 s of CPU time); downloads nothing.",
    )
    parser.add_argument("--output-dir", default="magtkd-demo",
                        help="where the run and its models are written (default %(default)s)")


def _run_demo(args) -> None:
    from .demo import print_demo_report, run_demo  # loads the tiny encoders' model classes: not on every start

    print_demo_report(run_demo(args.output_dir))


def _add_fusion_demo(subparsers) -> None:
    parser = _command(
        subparsers, "fusion-demo", _run_fusion_demo,
        "train a small fusion model on synthetic features and show dev weighted F1 rising",
        "Trains a small MagtkdFusionModel for a few hundred steps on synthetic utterance features whose labels depend "
        "on them, reports dev weighted F1 as it trains, tests the best dev model, saves it and reloads it with "
        "AutoModel. Runs on CPU in about a minute; downloads nothing.",
    )
    parser.add_argument("--output-dir", default="magtkd-fusion-demo",
                        help="where the trained model is saved (default %(default)s)")
    parser.add_argument("--steps", type=int, default=300, help="training steps (default %(default)s)")
    parser.add_argument("--eval-every", type=int, default=50, metavar="STEPS",
                        help="evaluate on dev every this many steps (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and the model (default %(default)s)")


def _run_fusion_demo(args) -> int:
    result = run_fusion_demo(args.output_dir, steps=args.steps, eval_every=args.eval_every, seed=args.seed)
    print_fusion_demo_report(result, args.output_dir)
    return 0 if result["reload_matches"] else 1


def _add_model_options(parser) -> None:
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps (default %(default)s)")
    parser.add_argument("--dtype", default="native", choices=DTYPE_CHOICES,
                        help="weights' dtype; native (default, the package's choice): bfloat16 on GPUs and CPUs that "
                        "compute it natively (AVX512-BF16/AMX), else float32; auto: the checkpoint's dtype "
                        "(transformers' meaning)")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow a folder whose model_type is not "
                        "magtkd-hf's to run its own code (off: such folders are refused)")


def _add_app(subparsers) -> None:
    parser = _command(
        subparsers, "app", _run_app, "the web demo: a video and its subtitles in, emotions and a timeline out",
        "Serves the web demo (Gradio; pip install -e \".[app]\") on this machine: run the shipped sample with one "
        "click, or upload a video with its SRT/WebVTT subtitles, or a conversation JSON with the media it names; "
        "shows the table of emotions and the timeline, and offers the annotated subtitles and an HTML report. The "
        "predictions are `magtkd-hf predict`'s. app.py at the repository root serves the same page as a Hugging "
        f"Face Space does, the model named by ${web.MODEL_ENV}.",
    )
    parser.add_argument("model_dir", metavar="MODEL_DIR", nargs="?", help="a folder saved by magtkd-hf (model and "
                        f"processor), or a Hub model id (default: ${web.MODEL_ENV})")
    parser.add_argument("--host", default="127.0.0.1", help="the address to serve on (default %(default)s: this "
                        "machine only; 0.0.0.0 for every network interface)")
    parser.add_argument("--port", type=int, help="the port (default: Gradio's, 7860, or the next free one)")
    _add_model_options(parser)


def _run_app(args) -> None:
    _check_device(args.device)
    app = web.EmotionApp(args.model_dir or web.model_from_environment(), args.device, args.dtype,
                         args.trust_remote_code)
    web.serve(web.build_demo(app), args.host, args.port)


def _add_predict(subparsers) -> None:
    parser = _command(
        subparsers, "predict", _run_predict,
        "an emotion for every utterance of a conversation, or of a whole dataset",
        "Loads MODEL_DIR (a folder saved by magtkd-hf: model and processor) and predicts INPUT. A CONVERSATION.json: a "
        "list of utterances (or {\"utterances\": [...]}), each with 'speaker', 'text', 'video' (a clip, or a longer "
        "video with 'start'/'end' seconds) and optionally 'audio' (WAV/FLAC; default: the video's sound track); "
        "relative paths are read from the JSON file's folder; printed as a table (--json: JSON). A dataset, with "
        "--output FILE.jsonl or FILE.parquet: a JSON lines file (one such conversation per line), a folder saved with "
        "save_to_disk, or a MELD/IEMOCAP release folder (with --dataset); one row per utterance, conversations batched "
        "by size, media decoded in --num-workers processes, resumable (run the same command again after a stop), "
        "shared between processes under `accelerate launch`. A VIDEO with --subtitles FILE (SRT or WebVTT): each cue "
        "an utterance cut from the video by its timing, consecutive cues grouped into conversations; rows printed, "
        "or written to every --output (see 'subtitles').",
    )
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="a folder saved by magtkd-hf (model and processor)")
    parser.add_argument("input", metavar="INPUT", nargs="?",
                        help="CONVERSATION.json, or a dataset (see above) with --output; not with --sample")
    parser.add_argument("--sample", action="store_true", help="predict the sample test conversation shipped with "
                        f"the package ({SAMPLE_CONVERSATION_FILE.name}) instead of INPUT")
    parser.add_argument("--json", action="store_true", help="print JSON (with every emotion's probability)")
    _add_model_options(parser)
    dataset = parser.add_argument_group("a whole dataset")
    dataset.add_argument("--output", metavar="FILE", action="append", help="FILE.jsonl or FILE.parquet: one row per "
                         "utterance (with --subtitles: repeatable, see there)")
    dataset.add_argument("--dataset", choices=tuple(DATASETS), help="the dataset of a release folder")
    dataset.add_argument("--split", action="append", help="only this split (repeatable; default: every split)")
    dataset.add_argument("--max-utterances", type=int, metavar="N", help="utterances per model call (conversations "
                         f"batched by size; default {DATASET_MAX_UTTERANCES}); with --subtitles: cues per conversation")
    dataset.add_argument("--num-workers", type=int, help="DataLoader workers decoding media while the model runs "
                         "(default: up to 8 on a GPU; on the CPU 2, or 0 on a machine of 2 cores or fewer)")
    dataset.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    dataset.add_argument("--on-missing", choices=("raise", "drop"), default="raise",
                         help="release folders: missing or unreadable media files are an error (default) or dropped")
    _add_subtitle_options(parser)


def _add_subtitle_options(parser) -> None:
    group = parser.add_argument_group(
        "subtitles", "INPUT is a VIDEO and --subtitles its SRT or WebVTT file (UTF-8). Markup and line breaks are "
        "dropped, sound descriptions in [] or () removed (a cue left empty is skipped); the speaker is a <v NAME> "
        "voice tag, else a 'NAME:' prefix (1-3 words, upper-case first), else --speaker. Outputs by extension, any "
        "number of --output: .jsonl, .csv, .parquet (one row per cue: the rows of predict plus 'cue', 'start', "
        "'end'), .srt or .vtt (the subtitles in their own format, timing unchanged, each cue's text followed by "
        "'[emotion probability]'); without --output the table is printed.")
    group.add_argument("--subtitles", metavar="FILE", help="the VIDEO's subtitles: .srt or .vtt")
    group.add_argument("--speaker", metavar="NAME", help="the speaker of cues without a voice tag or 'NAME:' prefix "
                       "(default: such cues are refused)")
    group.add_argument("--max-gap", type=float, metavar="S", help="a new conversation after a silence longer than S "
                       f"seconds between cues (default {subtitles.DEFAULT_MAX_GAP}; --max-utterances default "
                       f"{subtitles.DEFAULT_MAX_UTTERANCES}: both from MELD's dialogues, see magtkd_hf/subtitles.py)")


def _check_device(device: str) -> None:
    """A device this torch cannot use, refused before any work in one line (torch would fail deep in loading)."""
    try:
        device = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"--device {device}: not a torch device ({error}).") from None
    count = {"cuda": torch.cuda.device_count, "mps": lambda: int(torch.backends.mps.is_available())}.get(device.type)
    if count is not None and (device.index or 0) >= count():
        raise ValueError(f"--device {device}: this torch {torch.__version__} sees {count()} {device.type} device(s) "
                         "(not built with it, or none visible); use --device cpu.")


def _load_model_for_inference(args):
    return inference.load_emotion_model(args.model_dir, args.device, args.trust_remote_code, args.dtype)


def _run_predict(args) -> None:
    if args.sample == (args.input is not None):
        raise ValueError("give INPUT (a CONVERSATION.json or a dataset) or --sample, not both" if args.sample else
                         "give INPUT (a CONVERSATION.json or a dataset), or --sample for the shipped sample conversation")
    args.input = str(SAMPLE_CONVERSATION_FILE) if args.sample else args.input
    _check_device(args.device)
    if args.subtitles is not None or args.speaker is not None or args.max_gap is not None:
        return _run_predict_subtitles(args)
    if args.output is not None and len(args.output) > 1:
        raise ValueError(f"--output is given {len(args.output)} times: one file for a dataset (several only with "
                         "--subtitles)")
    args.output = args.output[0] if args.output else None
    if args.output is not None or Path(args.input).suffix != ".json":
        return _run_predict_dataset(args)
    conversation = inference.read_conversation_file(args.input)
    model, processor = _load_model_for_inference(args)
    rows = inference.predict_emotions(model, processor, conversation)
    print(json.dumps(rows, indent=2, allow_nan=False) if args.json else inference.format_predictions(rows))


def _default_decoding_workers(device: str) -> int:
    """On 2 CPU cores a decoding worker takes a core from the model: 1.26x slower (`benchmarks/inference.py`)."""
    cpus = os.cpu_count() or 1
    return max(0, min(8, cpus - 1)) if device.startswith("cuda") else (0 if cpus <= 2 else 2)


def _run_predict_dataset(args) -> None:
    if args.output is None:
        raise SystemExit(f"magtkd-hf predict: {args.input} is not a CONVERSATION.json: predicting a dataset needs "
                         "--output FILE.jsonl or FILE.parquet.")
    output = Path(args.output)
    check_output(output, args.overwrite)
    with output_lock(output, ProcessGroup.current().is_main):
        _predict_dataset_into(args)


def _predict_dataset_into(args) -> None:
    conversations = read_prediction_input(args.input, args.dataset, args.split, args.on_missing)
    if args.device == "cuda" and "LOCAL_RANK" in os.environ:  # one GPU per launched process
        args.device = f"cuda:{os.environ['LOCAL_RANK']}"
    model, processor = _load_model_for_inference(args)
    max_utterances = DATASET_MAX_UTTERANCES if args.max_utterances is None else args.max_utterances
    description = {"model": str(Path(args.model_dir).resolve()), "input": str(Path(args.input).resolve()),
                   "splits": args.split, "dtype": str(resolve_dtype(args.dtype, args.device)),
                   "max_utterances": max_utterances}
    workers = _default_decoding_workers(args.device) if args.num_workers is None else args.num_workers
    summary = predict_dataset(model, processor, conversations, args.output, max_utterances=max_utterances,
                              num_workers=workers, overwrite=args.overwrite, run_description=description)
    if not summary["main_process"]:
        return
    if summary["resumed_with"]:
        print(f"Resumed: {summary['resumed_with']} conversations were already predicted.", file=sys.stderr)
    utterances = sum(len(conversation) for conversation in conversations)
    processes = f" ({summary['processes']} processes)" if summary["processes"] > 1 else ""
    print(f"{summary['conversations']} conversations, {utterances} utterances -> {args.output}{processes}",
          file=sys.stderr)


def _run_predict_subtitles(args) -> None:
    if args.subtitles is None or args.sample:
        raise ValueError("--speaker and --max-gap go with --subtitles FILE." if args.subtitles is None else
                         "--subtitles FILE goes with a VIDEO as INPUT, not with --sample.")
    outputs = [Path(output) for output in args.output or []]
    _check_subtitle_outputs(outputs, subtitles.load_subtitles(args.subtitles).format, args.overwrite)
    args.max_gap = subtitles.DEFAULT_MAX_GAP if args.max_gap is None else args.max_gap
    args.max_utterances = subtitles.DEFAULT_MAX_UTTERANCES if args.max_utterances is None else args.max_utterances
    conversations = subtitles.read_subtitled_video(Path(args.input).resolve(), args.subtitles, args.speaker,
                                                   args.max_gap, args.max_utterances)
    model, processor = _load_model_for_inference(args)
    rows = subtitles.predict_cues(model, processor, conversations)
    if not outputs:
        print(json.dumps(rows, indent=2, allow_nan=False) if args.json else inference.format_predictions(rows))
    for output in outputs:
        _write_subtitle_output(rows, args, output)
        print(f"{len(rows)} cues ({len(conversations)} conversations) -> {output}", file=sys.stderr)


SUBTITLE_OUTPUTS = (".jsonl", ".csv", ".parquet", ".srt", ".vtt", ".png", ".html")


def _check_subtitle_outputs(outputs: list[Path], subtitle_format: str, overwrite: bool) -> None:
    """Every --output checked before any work: its extension, a subtitle output in the input's own format, each named
    once, a folder in its way, an existing file without --overwrite, its folder missing or read-only."""
    for index, output in enumerate(outputs):
        if output.suffix not in SUBTITLE_OUTPUTS:
            raise ValueError(f"--output {output}: must end in one of {SUBTITLE_OUTPUTS} (rows, annotated subtitles, "
                             "the timeline picture or an HTML report).")
        if output.suffix in (".srt", ".vtt") and output.suffix != f".{subtitle_format}":
            raise ValueError(f"--output {output}: the annotated subtitles keep the input's format ({subtitle_format}): "
                             f"name it {output.with_suffix('.' + subtitle_format).name}.")
        if output.absolute() in [earlier.absolute() for earlier in outputs[:index]]:
            raise ValueError(f"--output {output} is given twice.")
        check_output(output, overwrite, SUBTITLE_OUTPUTS)


def _write_subtitle_output(rows: list[dict], args, output: Path) -> None:
    if output.suffix in (".srt", ".vtt"):
        subtitles.annotate_subtitles(args.subtitles, rows, output)
    elif output.suffix == ".png":
        timeline.timeline_png(rows, output, title=Path(args.input).name)
    elif output.suffix == ".html":
        settings = {name: getattr(args, name) for name in ("subtitles", "speaker", "max_gap", "max_utterances", "dtype")}
        timeline.html_report(rows, output, {"model": str(Path(args.model_dir).resolve()), "video": args.input}, settings)
    else:
        write_output(rows, output)


def _add_stream(subparsers) -> None:
    parser = _command(
        subparsers, "stream", _run_stream,
        "the emotion of each new utterance as a conversation unfolds (JSON lines in, JSON lines out)",
        "Loads MODEL_DIR (a folder saved by magtkd-hf) and reads one utterance per line on stdin, a JSON object with "
        "'speaker', 'text', 'video' and/or 'audio' and optional 'start'/'end' seconds (as predict's conversation "
        "files). For each it writes, as soon as it is computed, one JSON line: speaker, text, label (the emotion), "
        "score, probabilities, modalities, index and context ('causal': the model's fusion is causal, the emotion is "
        "the one the whole conversation would give; 'prefix': computed from the conversation so far). Blank lines are "
        "skipped.",
    )
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="a folder saved by magtkd-hf (model and processor)")
    parser.add_argument("--base-dir", default=".", metavar="DIR", help="folder of relative media paths (default .)")
    _add_model_options(parser)


def _run_stream(args) -> int:
    """A bad line gets an error row on stdout, in its place (a caller waiting for each line's answer is never left
    waiting), and the stream goes on; the count at the end goes to stderr, with exit status 1."""
    _check_device(args.device)
    model, processor = _load_model_for_inference(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # said once here, on stderr, in one line
        stream = MagtkdStream(model, processor)
    if not stream.causal:
        print("magtkd-hf stream: the model's fusion is not causal: each emotion is computed from the conversation "
              "so far (context 'prefix').", file=sys.stderr)
    failed, lines = 0, 0
    for number, line in enumerate(_stdin_lines(), start=1):
        if line is not None and not line.strip():
            continue
        lines += 1
        try:
            if line is None:
                raise ValueError(f"stdin line {number}: longer than {MAX_STREAM_LINE_BYTES:,} bytes (not read whole; "
                                 "an utterance's line is far shorter).")
            row = _streamed_row(stream, line, number, Path(args.base_dir))
        except (ValueError, OSError) as error:
            failed += 1
            row = {"line": number, "error": str(error)}
        sys.stdout.write(json.dumps(row, allow_nan=False) + "\n")
        sys.stdout.flush()  # the caller reads each emotion as soon as it exists, not when the buffer fills
    if failed:
        print(f"magtkd-hf stream: {failed} of {lines} lines failed (their rows hold 'error').", file=sys.stderr)
    return 1 if failed else 0


def _stdin_lines(limit: int = MAX_STREAM_LINE_BYTES):
    """stdin's lines (bytes, so that bad UTF-8 is one line's error); a line longer than `limit` is read through in
    blocks, never held whole, and given as None."""
    source = getattr(sys.stdin, "buffer", sys.stdin)
    while line := source.readline(limit + 1):
        if len(line) <= limit or line[-1:] in (b"\n", "\n"):
            yield line
            continue
        while line and line[-1:] not in (b"\n", "\n"):
            line = source.readline(limit)
        yield None


def _streamed_row(stream: MagtkdStream, line: str | bytes, number: int, base_dir: Path) -> dict:
    utterance = _utterance_from_line(line, number, base_dir)
    try:
        return stream.add(utterance)
    except (ValueError, OSError) as error:
        raise ValueError(f"stdin line {number}: {error}") from error


def _utterance_from_line(line: str | bytes, number: int, base_dir: Path) -> dict:
    where = f"stdin line {number}"
    utterance = inference.parse_json(line, where)
    if not isinstance(utterance, Mapping) or not {"speaker", "text"} <= set(utterance):
        raise ValueError(f"{where}: expected a JSON object with at least 'speaker' and 'text'.")
    try:
        return inference.conversation_from_json([utterance], "stdin", base_dir)[0]
    except ValueError as error:  # "stdin: utterance 0: ..." / "...utterance 0 has ..." -> "stdin line N: ..."
        raise ValueError(re.sub(r"^stdin: utterance 0(:| has)", f"{where}:", str(error))) from None


def _add_evaluate(subparsers) -> None:
    parser = _command(
        subparsers, "evaluate", _run_evaluate,
        "dev/test weighted F1 and accuracy of a saved fusion model on a features folder (--online: prefixes only)",
        "Evaluates FUSION_DIR (a saved MagtkdFusionModel) on the dev and test splits of FEATURES_DIR (a stage-3 "
        "features folder) in this process. --online: each utterance is predicted from the fusion run on its "
        "conversation up to it (as `magtkd-hf stream` sees it), not from the whole conversation.",
    )
    parser.add_argument("fusion_dir", metavar="FUSION_DIR", help="a saved MagtkdFusionModel folder")
    parser.add_argument("--features", required=True, metavar="FEATURES_DIR", help="a stage-3 features folder")
    parser.add_argument("--online", action="store_true", help="predict every utterance from its prefix only")
    parser.add_argument("--batch-size", type=int, default=64, help="conversations per fusion call (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON (with confusion matrices)")


def _run_evaluate(args) -> None:
    results = evaluate_saved_fusion(args.fusion_dir, args.features, batch_size=args.batch_size, online=args.online)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{args.fusion_dir}, {'online (prefixes)' if args.online else 'offline (whole conversations)'}:")
    for split, metrics in results.items():
        print(f"  {split:<10}  weighted F1 {metrics['weighted_f1']:.4f}  accuracy {metrics['accuracy']:.4f}  "
              f"({metrics['num_utterances']} utterances)")


def _add_convert_released(subparsers) -> None:
    parser = _command(
        subparsers, "convert-released", _run_convert_released,
        "turn the released MAGTKD training scripts' checkpoints into a save_pretrained folder",
        "Loads released state dicts with torch.load(weights_only=True) and saves them with save_pretrained. --fusion "
        "alone: a fusion-only MagtkdFusionModel folder (the text anchor's shared block, the released speaker table). "
        "With --text and the audio/video checkpoints the released fusion takes (MELD: --audio-kd and --video-kd; "
        "IEMOCAP: --audio-kd and --video): an end-to-end MagtkdForEmotionRecognition + MagtkdProcessor folder in the "
        "released tokenization and speaker modes. The released models' unused weights are listed, not converted.",
    )
    parser.add_argument("--fusion", required=True, metavar="FILE.bin", help="released fusion state dict")
    parser.add_argument("--dataset", required=True, choices=tuple(DATASETS), help="dataset it was trained on")
    parser.add_argument("--output", required=True, metavar="DIR", help="output folder")
    unimodal = parser.add_argument_group("end-to-end conversion (released stage-1/2 state dicts)")
    for source, released_name in zip(FEATURE_SOURCES, ("text", "audio", "video", "text_KD_audio", "text_KD_video")):
        unimodal.add_argument(_flag(source), metavar="FILE.bin", help=f"released {released_name}.bin")
    for modality, default, reads in (
        ("text", "FacebookAI/roberta-large", " (Hub name or folder): its config and tokenizer"),
        ("audio", "facebook/data2vec-audio-base-960h", ": its config and feature extractor"),
        ("video", "facebook/timesformer-base-finetuned-k400", ": its config"),
    ):
        unimodal.add_argument(f"--{modality}-encoder", default=default, metavar="NAME_OR_PATH",
                              help=f"{modality} encoder checkpoint{reads} (default %(default)s)")
    unimodal.add_argument("--speaker-map", metavar="FILE.json", help="MELD: the released speaker2id.json "
                          "(MELD/feature/ in the released scripts), for speaker_mode='global_map'")


def _run_convert_released(args) -> None:
    given = {source: getattr(args, source) for source in FEATURE_SOURCES if getattr(args, source) is not None}
    if given:
        return _convert_released_end_to_end(args, given)
    model, unused = load_released_fusion(args.fusion, args.dataset)
    model.save_pretrained(args.output)
    print(f"Converted {args.fusion} ({args.dataset}) to {args.output}.")
    print(f"Dropped {len(unused)} unused released keys: {', '.join(unused)}")


def _convert_released_end_to_end(args, given: dict) -> None:
    speaker_mode = dataset_facts(args.dataset)["released_speaker_mode"]
    if speaker_mode == "global_map" and args.speaker_map is None:
        raise SystemExit("--dataset meld: the released MELD models index speakers with a global map; pass "
                         "--speaker-map speaker2id.json (MELD/feature/speaker2id.json of the released scripts).")
    configs = [AutoConfig.from_pretrained(name) for name in (args.text_encoder, args.audio_encoder, args.video_encoder)]
    model, unused = load_released_end_to_end(args.fusion, given, args.dataset, *configs)
    processor = _released_processor(args, speaker_mode, configs[2])
    processor.check_fits_model(model)  # the tokenizer of --text-encoder has the released text model's rows
    model.save_pretrained(args.output)
    processor.save_pretrained(args.output)
    fusion = model.config.fusion_model_config
    used = {"text": "text", "audio": fusion.audio_feature_source, "video": fusion.video_feature_source}
    print(f"Converted the released {args.dataset} model to {args.output} (MagtkdForEmotionRecognition + processor).")
    for modality, source in used.items():
        print(f"  {modality} encoder <- {_flag(source)} {given[source]}")
    ignored = sorted(set(given) - set(used.values()))
    if ignored:
        print(f"Not used by the released {args.dataset} fusion: {', '.join(map(_flag, ignored))}")
    for name, keys in unused.items():
        print(f"Dropped {len(keys)} unused keys of {name}: {', '.join(keys)}")


def _released_processor(args, speaker_mode: str, video_config) -> MagtkdProcessor:
    settings = dict(video_size=int(video_config.image_size), num_frames=int(video_config.num_frames),
                    speaker_mode=speaker_mode, tokenization_mode="released", frame_selection="released",
                    audio_mode="released")
    if speaker_mode == "global_map":
        settings["speaker_map"] = args.speaker_map
    try:
        return MagtkdProcessor.from_encoders(args.text_encoder, args.audio_encoder, **settings)
    except OSError:  # an audio checkpoint without a feature extractor file: data2vec's settings
        return MagtkdProcessor.from_encoders(args.text_encoder, None, **settings)


def _add_import_released_features(subparsers) -> None:
    parser = _command(
        subparsers, "import-released-features", _run_import_released_features,
        "import the authors' stage-3 feature pickles safely as a datasets DatasetDict",
        "Reads the authors' per-split feature pickles with an unpickler that admits only plain containers, numbers, "
        "strings and numpy arrays (anything else is refused, naming the offending global, and nothing is executed), "
        "and saves one row per conversation with datasets' save_to_disk.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE.pkl", help="one pickle per split; the split is read from "
                        "the file name (train/dev/test) or given as SPLIT=FILE")
    parser.add_argument("--output", required=True, metavar="DIR", help="the DatasetDict folder to write")
    parser.add_argument("--dataset", choices=tuple(DATASETS), help="names the labels (ClassLabel) when given")
    parser.add_argument("--speaker-indexing", choices=("conversation", "released"), default="conversation",
                        help="'conversation' (default): speakers numbered by first appearance in each conversation; "
                        "'released': the released ids (MELD: a global map of 304 names)")


def _run_import_released_features(args) -> None:
    splits = import_released_features(_split_files(args.files), args.output, dataset=args.dataset,
                                      speaker_indexing=args.speaker_indexing)
    for split, dataset in splits.items():
        print(f"{split}: {len(dataset)} conversations, {sum(map(len, dataset['labels']))} utterances")
    print(f"Saved to {args.output}")


def _split_files(arguments: list[str]) -> dict[str, str]:
    names = {"train": "train", "dev": "validation", "valid": "validation", "validation": "validation", "test": "test"}
    splits = {}
    for argument in arguments:
        split, separator, path = argument.partition("=")
        if not separator:
            path = argument
            found = {names[word] for word in re.findall(r"[a-z]+", Path(path).name.lower()) if word in names}
            if len(found) != 1:
                raise SystemExit(f"Cannot tell the split of {path!r} from its name: pass it as SPLIT={path}.")
            split = found.pop()
        split = names.get(split, split)
        if split in splits:
            raise SystemExit(f"Two files for split {split!r}: {splits[split]!r} and {path!r}.")
        splits[split] = path
    return splits


def _add_check_data(subparsers) -> None:
    parser = _command(
        subparsers, "check-data", run_check_data,
        "check a MELD or IEMOCAP release folder before building the dataset",
        "Prints utterance counts per split and class, every missing or unreadable media file (container header opened "
        "with PyAV; --decode decodes everything), label faults (EndTime < StartTime, repeated rows, empty splits) and "
        "clips longer than a limit, all in one run. Exit status: 0 usable as asked, 1 media files missing, unreadable "
        "or truncated (or a split left empty), 2 label files absent or unreadable, or (with --on-missing raise) rows "
        "with EndTime < StartTime or repeated utterances.",
    )
    parser.add_argument("dataset", choices=tuple(DATASETS), help="which release ROOT holds")
    parser.add_argument("root", metavar="ROOT", help="the MELD release folder or the IEMOCAP_full_release folder")
    parser.add_argument("--no-media", action="store_true", help="check the label files only, not the media files")
    parser.add_argument("--on-missing", choices=("raise", "drop"), default="raise",
                        help="'raise' (default): any missing/unreadable file makes the data unusable; 'drop': the "
                        "utterances that need them would be left out")
    parser.add_argument("--max-duration", type=float, default=30.0, metavar="SECONDS",
                        help="report utterance clips longer than this (default 30; 0 turns it off)")
    parser.add_argument("--split-file", help="IEMOCAP split.json (default: the one shipped with the package)")
    parser.add_argument("--num-workers", type=int, default=8,
                        help="threads opening (with --decode, decoding) media files (default 8)")
    parser.add_argument("--decode", action="store_true", help="decode every media file fully with PyAV (every video "
                        "frame and the whole sound track) instead of opening its header, to find files cut or damaged "
                        "after a good header (about 0.05-0.5 s CPU per 3 s 720p clip)")


def _add_cache_frames(subparsers) -> None:
    parser = _command(
        subparsers, "cache-frames", run_cache_frames,
        "decode every video clip once into the run's frame cache (read by the video stages and extract-features)",
        "Decodes the video clip of every utterance of --data (every split) once, with the processor the run uses (as "
        "`train` does), and stores the kept frames after the resize and center crop (uint8, a .npy file per clip) in "
        "OUTPUT_DIR/frame-cache (or --frame-cache DIR), which `train video`, `train distill-video` and `train "
        "extract-features` then read instead of decoding, with the same pixel values. A changed clip is decoded "
        "again; a cache of other frame settings is rebuilt here (and ignored by training, with a warning). "
        "Incremental: a second call adds only the clips missing.",
    )
    parser.add_argument("--output-dir", required=True, help="the run's folder (its processor, its frame-cache/)")
    parser.add_argument("--data", required=True, help="a MELD/IEMOCAP release folder or a saved DatasetDict")
    parser.add_argument("--recipe", default="meld",
                        help="'meld', 'iemocap' or a recipe JSON file: the dataset and default encoders (%(default)s)")
    parser.add_argument("--processor", help="a saved MagtkdProcessor (default: OUTPUT_DIR/processor, else built "
                        "from the encoders)")
    for modality in ("text", "audio", "video"):
        parser.add_argument(f"--{modality}-encoder", help=f"pretrained {modality} encoder (default: the recipe's)")
    parser.add_argument("--on-missing", choices=("raise", "drop"), default="raise",
                        help="building from a release folder: missing clips raise, or are dropped")
    parser.add_argument("--frame-cache", metavar="DIR", help="the cache folder (default: OUTPUT_DIR/frame-cache)")
    parser.add_argument("--num-workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="processes decoding clips (DataLoader workers; 0: this process; default %(default)s)")
    parser.add_argument("--rebuild", action="store_true", help="empty the cache folder first")


def _check_input_files(args) -> None:
    """Refuse, before any work, a FIFO or device given where a file is read (reading one would block or never end);
    files that do not exist are left to each command's own message."""
    for name in FILE_OPTIONS:
        values = getattr(args, name, None)
        for value in values if isinstance(values, list) else [values] if values else []:
            path = Path(value.partition("=")[2] or value if name == "files" else value)
            if os.path.lexists(path) and not path.is_dir():
                inference.check_regular_file(path)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check_input_files(args)
        return args.func(args) or 0
    except EXPECTED_ERRORS as error:
        if args.debug or os.environ.get("MAGTKD_HF_DEBUG", "") not in ("", "0"):
            raise
        message = str(error).strip() or type(error).__name__
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            message = f"no space left on the device ({message})"
        print(f"magtkd-hf {args.command}: error: {message}", file=sys.stderr)
        print("(run with --debug for the traceback)", file=sys.stderr)
        return 1
