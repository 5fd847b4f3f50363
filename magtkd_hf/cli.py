"""`magtkd-hf` command line: each sub-command parses its arguments and calls the package's functions."""

import argparse
import re
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="magtkd-hf", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
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


def _add_convert_released_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert-released",
        help="turn the released MAGTKD training scripts' checkpoints into a save_pretrained folder",
        description="Loads a released fusion state dict (multimodal_fusion_best.bin) with torch.load(weights_only="
        "True), maps it onto MagtkdFusionModel (the text anchor's shared block, the released speaker table) and saves "
        "it with save_pretrained. The released model's unused weights are listed, not converted.",
    )
    parser.add_argument("--fusion", required=True, metavar="FILE.bin", help="released fusion state dict")
    parser.add_argument("--dataset", required=True, choices=("meld", "iemocap"), help="dataset it was trained on")
    parser.add_argument("--output", required=True, metavar="DIR", help="output folder")

    def run(args) -> int:
        from .released import load_released_fusion

        model, unused = load_released_fusion(args.fusion, args.dataset)
        model.save_pretrained(args.output)
        print(f"Converted {args.fusion} ({args.dataset}) to {args.output}.")
        print(f"Dropped {len(unused)} unused released keys: {', '.join(unused)}")
        return 0

    parser.set_defaults(func=run)


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
    parser.add_argument("--dataset", choices=("meld", "iemocap"), help="names the labels (ClassLabel) when given")
    parser.add_argument(
        "--speaker-indexing", choices=("conversation", "released"), default="conversation",
        help="'conversation' (default): speakers numbered by first appearance in each conversation; 'released': the "
        "released ids (MELD: a global map of 304 names)",
    )

    def run(args) -> int:
        from .released import import_released_features

        splits = import_released_features(
            _split_files(args.files), args.output, dataset=args.dataset, speaker_indexing=args.speaker_indexing
        )
        for split, dataset in splits.items():
            utterances = sum(len(labels) for labels in dataset["labels"])
            print(f"{split}: {len(dataset)} conversations, {utterances} utterances")
        print(f"Saved to {args.output}")
        return 0

    parser.set_defaults(func=run)


_COMMANDS.extend([_add_fusion_demo_command, _add_convert_released_command, _add_import_released_features_command])


def _add_check_data_command(subparsers) -> None:
    """`check-data {meld,iemocap} ROOT`: counts per split and class, missing/unreadable files, long clips."""
    parser = subparsers.add_parser(
        "check-data",
        help="check a MELD or IEMOCAP release folder before building the dataset",
        description="Prints utterance counts per split and class, every missing or unreadable media file (container "
        "header opened with PyAV, nothing decoded) and clips longer than a limit. Exit status: 0 usable as asked, "
        "1 media files missing or unreadable (or a split left empty), 2 label files absent or unreadable.",
    )
    parser.add_argument("dataset", choices=("meld", "iemocap"), help="which release ROOT holds")
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
    parser.add_argument("--num-workers", type=int, default=8, help="threads opening file headers (default 8)")

    def run_check_data(args) -> int:
        from .datasets_scripts.check import run_check_data as check

        return check(args)

    parser.set_defaults(func=run_check_data)


_COMMANDS.append(_add_check_data_command)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
