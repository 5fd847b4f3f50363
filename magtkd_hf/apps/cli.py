"""`magtkd-hf` command line: each sub-command parses its arguments and calls the package's functions."""

import argparse
import os
import pickle
import re
import sys
from pathlib import Path

from .cli_predict import add_predict_command
from .cli_train import add_train_command
from ..configuration_magtkd import DATASETS, dataset_facts


def build_parser() -> argparse.ArgumentParser:
    from transformers import HfArgumentParser

    from .. import __version__

    parser = argparse.ArgumentParser(prog="magtkd-hf", description=__doc__)
    parser.add_argument("--version", action="version", version=f"magtkd-hf {__version__}")
    # HfArgumentParser: a sub-command can declare its options as dataclasses (`train`); the others add them as usual.
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=HfArgumentParser)
    for add_command in _COMMANDS:
        add_command(subparsers)
    return parser


# Each entry adds one sub-command whose `func(args) -> int` is the exit status.
_COMMANDS = []


def _add_fusion_demo_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "fusion-demo",
        help="train a small fusion model on synthetic features and show dev weighted F1 rising",
        description="Trains a small MagtkdFusionModel for a few hundred steps on synthetic utterance features whose "
        "labels depend on them, reports dev weighted F1 as it trains, tests the best dev model, saves it and "
        "reloads it with AutoModel. Runs on CPU in about a minute; downloads nothing.",
    )
    parser.add_argument("--output-dir", default="magtkd-fusion-demo", help="where the trained model is saved")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)

    def run(args) -> int:
        from .fusion_demo import print_fusion_demo_report, run_fusion_demo

        result = run_fusion_demo(args.output_dir, steps=args.steps, eval_every=args.eval_every, seed=args.seed)
        print_fusion_demo_report(result, args.output_dir)
        return 0 if result["reload_matches"] else 1

    parser.set_defaults(func=run)


def _add_demo_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the whole recipe in miniature on the shipped sample data, then a prediction",
        description="Builds tiny random-weight encoders (the real RoBERTa, data2vec-audio and TimeSformer "
        "architectures) and a tokenizer offline, runs `train all` on the sample conversations shipped with the "
        "package, reloads the model with AutoModel/AutoProcessor and predicts the sample test conversation. A few "
        "minutes on 2 CPU cores; downloads nothing.",
    )
    parser.add_argument("--output-dir", default="magtkd-demo", help="where the run and its models are written")

    def run(args) -> int:
        from .demo import print_demo_report, run_demo

        print_demo_report(run_demo(args.output_dir))
        return 0

    parser.set_defaults(func=run)


def _add_convert_released_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert-released",
        help="turn the released MAGTKD training scripts' checkpoints into a save_pretrained folder",
        description="Loads released state dicts with torch.load(weights_only=True) and saves them with "
        "save_pretrained. --fusion alone: a fusion-only MagtkdFusionModel folder (the text anchor's shared block, the "
        "released speaker table). With --text and the audio/video checkpoints the released fusion takes (MELD: "
        "--audio-kd and --video-kd; IEMOCAP: --audio-kd and --video): an end-to-end MagtkdForEmotionRecognition + "
        "MagtkdProcessor folder in the released tokenization and speaker modes. The released models' unused weights "
        "are listed, not converted.",
    )
    parser.add_argument("--fusion", required=True, metavar="FILE.bin", help="released fusion state dict")
    parser.add_argument("--dataset", required=True, choices=tuple(DATASETS), help="dataset it was trained on")
    parser.add_argument("--output", required=True, metavar="DIR", help="output folder")
    unimodal = parser.add_argument_group("end-to-end conversion (released stage-1/2 state dicts)")
    for flag, released_name in (
        ("--text", "text.bin"), ("--audio", "audio.bin"), ("--video", "video.bin"),
        ("--audio-kd", "text_KD_audio.bin"), ("--video-kd", "text_KD_video.bin"),
    ):
        unimodal.add_argument(flag, metavar="FILE.bin", help=f"released {released_name}")
    unimodal.add_argument(
        "--text-encoder", default="FacebookAI/roberta-large", metavar="NAME_OR_PATH",
        help="text encoder checkpoint (Hub name or folder): its config and tokenizer (default %(default)s)",
    )
    unimodal.add_argument(
        "--audio-encoder", default="facebook/data2vec-audio-base-960h", metavar="NAME_OR_PATH",
        help="audio encoder checkpoint: its config and feature extractor (default %(default)s)",
    )
    unimodal.add_argument(
        "--video-encoder", default="facebook/timesformer-base-finetuned-k400", metavar="NAME_OR_PATH",
        help="video encoder checkpoint: its config (default %(default)s)",
    )
    unimodal.add_argument(
        "--speaker-map", metavar="FILE.json",
        help="MELD: the released speaker2id.json (MELD/feature/ in the released scripts), for speaker_mode='global_map'",
    )

    def run(args) -> int:
        sources = {name: getattr(args, name) for name in ("text", "audio", "video", "audio_kd", "video_kd")}
        given = {name: path for name, path in sources.items() if path is not None}
        if not given:
            from ..released import load_released_fusion

            model, unused = load_released_fusion(args.fusion, args.dataset)
            model.save_pretrained(args.output)
            print(f"Converted {args.fusion} ({args.dataset}) to {args.output}.")
            print(f"Dropped {len(unused)} unused released keys: {', '.join(unused)}")
            return 0
        return _convert_released_end_to_end(args, given)

    parser.set_defaults(func=run)


def _convert_released_end_to_end(args, given: dict) -> int:
    from transformers import AutoConfig

    from ..processors import MagtkdProcessor
    from ..released import load_released_end_to_end

    speaker_mode = dataset_facts(args.dataset)["released_speaker_mode"]
    if speaker_mode == "global_map" and args.speaker_map is None:
        raise SystemExit(
            "--dataset meld: the released MELD models index speakers with a global map; pass --speaker-map "
            "speaker2id.json (MELD/feature/speaker2id.json of the released scripts)."
        )
    configs = [AutoConfig.from_pretrained(name) for name in (args.text_encoder, args.audio_encoder, args.video_encoder)]
    model, unused = load_released_end_to_end(args.fusion, given, args.dataset, *configs)
    speaker_settings = {"speaker_mode": speaker_mode}
    if speaker_mode == "global_map":
        speaker_settings["speaker_map"] = args.speaker_map
    try:
        processor = MagtkdProcessor.from_encoders(
            args.text_encoder, args.audio_encoder, video_size=int(configs[2].image_size),
            tokenization_mode="released", num_frames=int(configs[2].num_frames), frame_selection="released",
            audio_mode="released", **speaker_settings,
        )
    except OSError:  # an audio checkpoint without a feature extractor file: data2vec's settings
        processor = MagtkdProcessor.from_encoders(
            args.text_encoder, None, video_size=int(configs[2].image_size), tokenization_mode="released",
            num_frames=int(configs[2].num_frames), frame_selection="released", audio_mode="released", **speaker_settings,
        )
    text_rows = model.config.text_config.encoder_config.vocab_size
    if len(processor.tokenizer) != text_rows:
        raise SystemExit(
            f"The tokenizer of {args.text_encoder} has {len(processor.tokenizer)} tokens with the speaker tokens, the "
            f"released text model {text_rows} rows: not the tokenizer it was trained with."
        )
    model.save_pretrained(args.output)
    processor.save_pretrained(args.output)
    fusion = model.config.fusion_model_config
    used = {"text": "text", "audio": fusion.audio_feature_source, "video": fusion.video_feature_source}
    print(f"Converted the released {args.dataset} model to {args.output} (MagtkdForEmotionRecognition + processor).")
    for modality, source in used.items():
        print(f"  {modality} encoder <- --{source.replace('_', '-')} {given[source]}")
    ignored = sorted(set(given) - set(used.values()))
    if ignored:
        print(f"Not used by the released {args.dataset} fusion: {', '.join('--' + n.replace('_', '-') for n in ignored)}")
    for name, keys in unused.items():
        print(f"Dropped {len(keys)} unused keys of {name}: {', '.join(keys)}")
    return 0


def _split_files(arguments: list[str]) -> dict[str, str]:
    """`SPLIT=FILE` or a file whose name says train/dev/valid/test -> {split: file}."""
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


def _add_import_released_features_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "import-released-features",
        help="import the authors' stage-3 feature pickles safely as a datasets DatasetDict",
        description="Reads the authors' per-split feature pickles with an unpickler that admits only plain "
        "containers, numbers, strings and numpy arrays (anything else is refused, naming the offending global, and "
        "nothing is executed), and saves one row per conversation with datasets' save_to_disk.",
    )
    parser.add_argument(
        "files", nargs="+", metavar="FILE.pkl",
        help="one pickle per split; the split is read from the file name (train/dev/test) or given as SPLIT=FILE",
    )
    parser.add_argument("--output", required=True, metavar="DIR")
    parser.add_argument("--dataset", choices=tuple(DATASETS), help="names the labels (ClassLabel) when given")
    parser.add_argument(
        "--speaker-indexing", choices=("conversation", "released"), default="conversation",
        help="'conversation' (default): speakers numbered by first appearance in each conversation; 'released': the "
        "released ids (MELD: a global map of 304 names)",
    )

    def run(args) -> int:
        from ..released import import_released_features

        splits = import_released_features(
            _split_files(args.files), args.output, dataset=args.dataset, speaker_indexing=args.speaker_indexing
        )
        for split, dataset in splits.items():
            utterances = sum(len(labels) for labels in dataset["labels"])
            print(f"{split}: {len(dataset)} conversations, {utterances} utterances")
        print(f"Saved to {args.output}")
        return 0

    parser.set_defaults(func=run)


_COMMANDS.extend([_add_demo_command, add_predict_command, _add_fusion_demo_command, _add_convert_released_command, _add_import_released_features_command])


def _add_check_data_command(subparsers) -> None:
    """`check-data {meld,iemocap} ROOT`: counts per split and class, missing/unreadable files, long clips."""
    parser = subparsers.add_parser(
        "check-data",
        help="check a MELD or IEMOCAP release folder before building the dataset",
        description="Prints utterance counts per split and class, every missing or unreadable media file (container "
        "header opened with PyAV; --decode decodes everything), label faults (EndTime < StartTime, repeated rows, "
        "empty splits) and clips longer than a limit, all in one run. Exit status: 0 usable as asked, 1 media files "
        "missing, unreadable or truncated (or a split left empty), 2 label files absent or unreadable, or (with "
        "--on-missing raise) rows with EndTime < StartTime or repeated utterances.",
    )
    parser.add_argument("dataset", choices=tuple(DATASETS), help="which release ROOT holds")
    parser.add_argument("root", metavar="ROOT", help="the MELD release folder or the IEMOCAP_full_release folder")
    parser.add_argument("--no-media", action="store_true", help="check the label files only, not the media files")
    parser.add_argument(
        "--on-missing", choices=("raise", "drop"), default="raise",
        help="'raise' (default): any missing/unreadable file makes the data unusable; 'drop': the utterances that "
        "need them would be left out",
    )
    parser.add_argument(
        "--max-duration", type=float, default=30.0, metavar="SECONDS",
        help="report utterance clips longer than this (default 30; 0 turns it off)",
    )
    parser.add_argument(
        "--split-file", default=None, help="IEMOCAP split.json (default: the one shipped with the package)"
    )
    parser.add_argument("--num-workers", type=int, default=8,
                        help="threads opening (with --decode, decoding) media files (default 8)")
    parser.add_argument(
        "--decode", action="store_true",
        help="decode every media file fully with PyAV (every video frame and the whole sound track) instead of "
        "opening its header, to find files cut or damaged after a good header (about 0.05-0.5 s CPU per 3 s 720p clip)",
    )

    def run_check_data(args) -> int:
        from ..datasets_scripts.check import run_check_data as check

        return check(args)

    parser.set_defaults(func=run_check_data)


_COMMANDS.append(_add_check_data_command)


_COMMANDS.append(add_train_command)


def _add_cache_frames_command(subparsers) -> None:
    from .cli_cache import add_cache_frames_command

    add_cache_frames_command(subparsers)


_COMMANDS.append(_add_cache_frames_command)


def _add_stream_and_evaluate_commands(subparsers) -> None:
    from .cli_stream import add_evaluate_command, add_stream_command

    add_stream_command(subparsers)
    add_evaluate_command(subparsers)


_COMMANDS.append(_add_stream_and_evaluate_commands)


# Errors a user can cause and fix (bad input, missing or damaged files, refused pickles, full disk, no memory): one
# or two lines on stderr and exit status 1; `--debug` or MAGTKD_HF_DEBUG=1 shows the traceback instead.
EXPECTED_ERRORS = (ValueError, OSError, KeyError, RuntimeError, MemoryError, pickle.UnpicklingError)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("MAGTKD_HF_DEBUG", "") not in ("", "0")
    argv = [argument for argument in argv if argument != "--debug"]
    args = build_parser().parse_args(argv)
    if debug:
        return args.func(args) or 0
    try:
        return args.func(args) or 0
    except EXPECTED_ERRORS as error:
        message = str(error).strip() or type(error).__name__
        if isinstance(error, OSError) and error.errno == 28:
            message = f"no space left on the device ({message})"
        print(f"magtkd-hf {argv[0] if argv else ''}: error: {message}", file=sys.stderr)
        print("(run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
