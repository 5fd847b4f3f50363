"""
`magtkd-hf check-data {meld,iemocap} ROOT`: is a release folder usable as asked? One run reports the counts per split
and class, the label-file faults, the rows a build refuses, empty splits, the missing and unreadable files and the
duration outliers; the exit status says whether a build would succeed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Optional

from .corpus import (
    DEFAULT_MAX_CLIP_DURATION,
    Corpus,
    check_media_files,
    count_utterances,
    counts_text,
    drop_utterances,
    find_empty_splits,
    validate_options,
)
from .iemocap import read_iemocap_corpus
from .media import MISSING
from .meld import read_meld_corpus

DATASETS = ("meld", "iemocap")
EXIT_USABLE, EXIT_MEDIA_PROBLEMS, EXIT_LABEL_PROBLEMS = 0, 1, 2


@dataclass
class DataCheckReport:
    """
    The outcome of `check_data`: the release as its label files give it (`corpus`), what a build under `on_missing`
    gives (`built`), the media findings (`num_media_files` is `None` when media were not checked) and the splits of
    `built` without any utterance.
    """

    corpus: Corpus
    built: Corpus
    on_missing: str
    decode: bool
    max_clip_duration: Optional[float]
    num_media_files: Optional[int]
    media_problems: list
    long_clips: list
    empty_splits: list

    @property
    def refusals(self) -> list[str]:
        """Why a build with these options would fail or leave a split empty (none: usable)."""
        corpus, raises = self.corpus, self.on_missing == "raise"
        reasons = []
        if corpus.label_faults:
            reasons.append(f"the label files cannot be read ({len(corpus.label_faults)} fault(s))")
        if raises and corpus.label_problems:
            reasons.append(f"{len(corpus.label_problems)} label-file row problem(s) (EndTime < StartTime, repeated "
                           "utterances; --on-missing drop builds without them)")
        if raises and self.media_problems:
            reasons.append(f"{len(self.media_problems)} media file(s) missing or unreadable "
                           "(--on-missing drop builds without the utterances that need them)")
        if self.empty_splits:
            reasons.append(f"no utterance left in split(s) {', '.join(p.split for p in self.empty_splits)}")
        return reasons

    @property
    def is_usable(self) -> bool:
        return not self.refusals

    @property
    def exit_code(self) -> int:
        """0 usable; 2 label files unreadable or with refused rows; 1 otherwise (media problems, an empty split)."""
        if self.corpus.label_faults or (self.corpus.label_problems and self.on_missing == "raise"):
            return EXIT_LABEL_PROBLEMS
        return EXIT_USABLE if self.is_usable else EXIT_MEDIA_PROBLEMS


def check_data(
    dataset: str,
    root,
    check_media: bool = True,
    on_missing: str = "raise",
    max_clip_duration: Optional[float] = DEFAULT_MAX_CLIP_DURATION,
    split_file=None,
    num_workers: int = 8,
    decode: bool = False,
    progress: Optional[bool] = False,
) -> DataCheckReport:
    """
    Reads the label files of `dataset` (`"meld"` or `"iemocap"`) under `root` and, with `check_media`, checks every
    media file of every readable row (`load_meld` documents the options; `progress`: a tqdm bar, `None`: only on a
    terminal), so that one run reports both. Raises only when IEMOCAP's split file cannot be read.
    """
    validate_options(on_missing, max_clip_duration)
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
    corpus = read_iemocap_corpus(root, split_file) if dataset == "iemocap" else read_meld_corpus(root)
    num_files, problems, long_clips = (
        check_media_files(corpus, max_clip_duration, num_workers, decode, progress) if check_media else (None, [], [])
    )
    built = drop_utterances(corpus, problems) if on_missing == "drop" else corpus
    return DataCheckReport(corpus, built, on_missing, decode, max_clip_duration, num_files, problems, long_clips,
                           find_empty_splits(built))


def _listed(title: str, items) -> list[str]:
    return [f"{title}: {len(items)}", *(f"  {item}" for item in items)]


def _count_table(corpus: Corpus) -> list[str]:
    names = corpus.features["labels"].feature.names
    header = ["split", "dialogues", "utterances", *names]
    rows = []
    for split, dialogues in corpus.splits.items():
        counts = Counter(utterance["labels"] for utterances in dialogues.values() for utterance in utterances)
        rows.append([split, str(len(dialogues)), str(counts.total()), *(str(counts[name]) for name in names)])
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    return ["  " + "  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in [header, *rows]]


def _media_lines(report: DataCheckReport) -> list[str]:
    if report.num_media_files is None:
        return ["Media not checked (--no-media)."]
    how = "fully decoded" if report.decode else "headers opened"
    limit = "off" if report.max_clip_duration is None else f"{report.max_clip_duration:g} s"
    return [
        f"Media files checked: {report.num_media_files} ({how})",
        *_listed("Missing files", [p for p in report.media_problems if p.status == MISSING]),
        *_listed("Unreadable files", [p for p in report.media_problems if p.status != MISSING]),
        *_listed(f"Clips longer than the limit ({limit})", report.long_clips),
    ]


def format_report(report: DataCheckReport) -> str:
    """The human-readable report `check-data` prints."""
    corpus = report.corpus
    lines = [f"{corpus.name} at {corpus.root}", "", *_listed("Label file faults", corpus.label_faults)]
    lines += ["", "Utterances per split and class (from the label files):", *_count_table(corpus)]
    excluded = [f"  {split}: {counts_text(counts)}" for split, counts in corpus.excluded_labels.items() if counts]
    if excluded:
        lines += ["", "Left out, label not one of the classes:", *excluded]
    lines += ["", *_listed("Rows with EndTime < StartTime or repeated", corpus.label_problems)]
    lines += ["", *_media_lines(report)]
    if report.on_missing == "drop" and (corpus.label_problems or report.media_problems):
        what = " and those with missing/unreadable media" if report.media_problems else ""
        lines += ["", f"Utterances per split and class after dropping those rows{what}:", *_count_table(report.built)]
    lines += ["", *_listed("Empty splits", report.empty_splits), ""]
    if report.refusals:
        return "\n".join([*lines, "Result: NOT usable: " + "; ".join(report.refusals) + "."])
    dropped = count_utterances(corpus.label_problems) + count_utterances(report.media_problems)
    return "\n".join([*lines, f"Result: usable ({dropped} utterance(s) left out)." if dropped else "Result: usable."])


def run_check_data(args) -> int:
    """The `check-data` sub-command: prints the report, returns the exit status (0 usable, 1 media, 2 labels)."""
    try:
        max_duration = args.max_duration if args.max_duration > 0 else None
        report = check_data(args.dataset, args.root, not args.no_media, args.on_missing, max_duration, args.split_file,
                            args.num_workers, args.decode, progress=None)
    except (OSError, ValueError) as error:  # a split file that cannot be read
        print(f"check-data: {error}")
        print("Result: NOT usable: the label files cannot be read.")
        return EXIT_LABEL_PROBLEMS
    print(format_report(report))
    return report.exit_code
