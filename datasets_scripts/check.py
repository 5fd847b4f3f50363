"""
`magtkd-hf check-data {meld,iemocap} ROOT`: is a release folder usable as asked? Prints counts per split and class,
the label-file faults, the rows a build refuses (EndTime < StartTime, repeated utterances), empty splits, the missing
and unreadable files and the duration outliers, all in one run; the exit status says whether a build would succeed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .corpus import (
    DEFAULT_MAX_CLIP_DURATION,
    Corpus,
    LabelFilesError,
    LabelProblem,
    MediaReport,
    check_corpus_media,
    drop_utterances,
    find_empty_splits,
    validate_options,
)
from .iemocap import read_iemocap_corpus
from .media import MISSING
from .meld import read_meld_corpus

DATASETS = ("meld", "iemocap")
EXIT_USABLE = 0
EXIT_MEDIA_PROBLEMS = 1
EXIT_LABEL_PROBLEMS = 2


@dataclass
class DataCheckReport:
    """
    The outcome of `check_data`.

    Args:
        corpus (`Corpus`): the release as its label files give it (without unreadable and refused rows).
        built (`Corpus`): what a build would give under the chosen policy (utterances dropped with `on_missing="drop"`).
        media (`MediaReport`, *optional*): the media checks; `None` when they were off.
        on_missing (`str`): the policy asked for.
        decode (`bool`): whether the media checks decoded every file fully.
        empty_splits (`list[LabelProblem]`): the splits of `built` without any utterance.
    """

    corpus: Corpus
    built: Corpus
    media: Optional[MediaReport]
    on_missing: str
    decode: bool = False
    empty_splits: list[LabelProblem] = field(default_factory=list)

    @property
    def label_faults(self) -> list[str]:
        """Faults that make the label files unreadable (a build always fails on them)."""
        return self.corpus.label_faults

    @property
    def label_problems(self) -> list[LabelProblem]:
        """Rows a build refuses unless `on_missing="drop"` (EndTime < StartTime, repeated utterances)."""
        return self.corpus.label_problems

    @property
    def refuses_label_problems(self) -> bool:
        return bool(self.label_problems) and self.on_missing == "raise"

    @property
    def refuses_media_problems(self) -> bool:
        return self.media is not None and bool(self.media.problems) and self.on_missing == "raise"

    @property
    def is_usable(self) -> bool:
        """Whether a build with these options would succeed and leave every split non-empty."""
        return not (self.label_faults or self.refuses_label_problems or self.refuses_media_problems
                    or self.empty_splits)

    @property
    def exit_code(self) -> int:
        """0 usable; 2 label files unreadable or with refused rows; 1 otherwise (media problems, an empty split)."""
        if self.label_faults or self.refuses_label_problems:
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
    Reads the label files of `dataset` (`"meld"` or `"iemocap"`) under `root` and, with `check_media`, opens every
    media file's header (with `decode`, decodes every file fully, `num_workers` threads at a time, a tqdm bar when
    `progress`; `None`: only on a terminal). The media of every readable row is checked even when the label files
    have faults, so one run reports both. `split_file` is IEMOCAP's split.json (default: the shipped one). Raises
    only when IEMOCAP's split file cannot be read (`ValueError`, `OSError`).
    """
    validate_options(on_missing, max_clip_duration)
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
    if dataset == "iemocap":
        corpus = read_iemocap_corpus(root, split_file, strict=False)
    else:
        corpus = read_meld_corpus(root, strict=False)
    media, built = None, corpus
    if check_media:
        media = check_corpus_media(corpus, max_clip_duration, num_workers, decode=decode, progress=progress)
        if on_missing == "drop" and media.problems:
            built = drop_utterances(corpus, media.problems)
    return DataCheckReport(corpus, built, media, on_missing, decode, find_empty_splits(built))


def _count_table(corpus: Corpus) -> list[str]:
    counts = corpus.label_counts()
    header = ["split", "dialogues", "utterances", *corpus.label_names]
    rows = [
        [split, str(len(dialogues)), str(sum(counts[split].values()))]
        + [str(counts[split][name]) for name in corpus.label_names]
        for split, dialogues in corpus.splits.items()
    ]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    return ["  " + "  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in [header, *rows]]


def format_report(report: DataCheckReport) -> str:
    """The human-readable report `check-data` prints."""
    corpus = report.corpus
    lines = [f"{corpus.name} at {corpus.root}", ""]
    lines += [f"Label file faults: {len(report.label_faults)}", *(f"  {fault}" for fault in report.label_faults)]
    lines += ["", "Utterances per split and class (from the label files):"]
    lines += _count_table(corpus)
    excluded = {split: counts for split, counts in corpus.excluded_labels.items() if counts}
    if excluded:
        lines += ["", "Left out, label not one of the classes:"]
        for split, counts in excluded.items():
            lines.append(f"  {split}: " + ", ".join(f"{label} {n}" for label, n in sorted(counts.items())))
    lines += ["", f"Rows with EndTime < StartTime or repeated: {len(report.label_problems)}"]
    lines += [f"  {problem.describe()}" for problem in report.label_problems]
    if report.media is None:
        lines += ["", "Media not checked (--no-media)."]
    else:
        media = report.media
        missing = [problem for problem in media.problems if problem.status == MISSING]
        unreadable = [problem for problem in media.problems if problem.status != MISSING]
        how = "fully decoded" if report.decode else "headers opened"
        lines += ["", f"Media files checked: {media.num_files} ({how})"]
        lines += [f"Missing files: {len(missing)}", *(f"  {problem.describe()}" for problem in missing)]
        lines += [f"Unreadable files: {len(unreadable)}", *(f"  {problem.describe()}" for problem in unreadable)]
        limit = "off" if media.max_clip_duration is None else f"{media.max_clip_duration:g} s"
        lines += [f"Clips longer than the limit ({limit}): {len(media.long_clips)}"]
        lines += [f"  {long_clip.describe()}" for long_clip in media.long_clips]
    media_dropped = report.media is not None and bool(report.media.problems)
    if report.on_missing == "drop" and (report.label_problems or media_dropped):
        what = " and those with missing/unreadable media" if media_dropped else ""
        lines += ["", f"Utterances per split and class after dropping those rows{what}:"]
        lines += _count_table(report.built)
    lines += ["", f"Empty splits: {len(report.empty_splits)}", *(f"  {p.describe()}" for p in report.empty_splits)]
    lines += ["", _verdict(report)]
    return "\n".join(lines)


def _dropped_count(report: DataCheckReport) -> int:
    dropped = sum(len(problem.utterance_ids) for problem in report.label_problems)
    if report.media is not None:
        dropped += sum(len(problem.utterance_ids) for problem in report.media.problems)
    return dropped


def _verdict(report: DataCheckReport) -> str:
    if report.is_usable:
        dropped = _dropped_count(report)
        return f"Result: usable ({dropped} utterance(s) left out)." if dropped else "Result: usable."
    reasons = []
    if report.label_faults:
        reasons.append(f"the label files cannot be read ({len(report.label_faults)} fault(s))")
    if report.refuses_label_problems:
        reasons.append(f"{len(report.label_problems)} label-file row problem(s) (EndTime < StartTime, repeated "
                       "utterances; --on-missing drop builds without them)")
    if report.refuses_media_problems:
        reasons.append(f"{len(report.media.problems)} media file(s) missing or unreadable "
                       "(--on-missing drop builds without the utterances that need them)")
    if report.empty_splits:
        reasons.append(f"no utterance left in split(s) {', '.join(p.split for p in report.empty_splits)}")
    return "Result: NOT usable: " + "; ".join(reasons) + "."


def run_check_data(args) -> int:
    """
    The `check-data` sub-command: prints the report, returns the exit status (0 usable, 1 media or an empty split,
    2 labels). Reads `args.decode` (full decode, default off) when the parser defines it.
    """
    try:
        report = check_data(
            args.dataset,
            args.root,
            check_media=not args.no_media,
            on_missing=args.on_missing,
            max_clip_duration=args.max_duration if args.max_duration > 0 else None,
            split_file=getattr(args, "split_file", None),
            num_workers=args.num_workers,
            decode=getattr(args, "decode", False),
            progress=None,
        )
    except (LabelFilesError, OSError, ValueError) as error:
        print(f"check-data: {error}")
        print("Result: NOT usable: the label files cannot be read.")
        return EXIT_LABEL_PROBLEMS
    print(format_report(report))
    return report.exit_code
