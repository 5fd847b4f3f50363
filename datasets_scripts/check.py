"""
`magtkd-hf check-data {meld,iemocap} ROOT`: is a release folder usable as asked? Prints counts per split and class,
the missing and unreadable files and the duration outliers; the exit status says whether a build would succeed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .corpus import (
    DEFAULT_MAX_CLIP_DURATION,
    Corpus,
    LabelFilesError,
    MediaReport,
    check_corpus_media,
    drop_utterances,
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
        corpus (`Corpus`): the release as its label files give it.
        built (`Corpus`): what a build would give under the chosen policy (utterances dropped with `on_missing="drop"`).
        media (`MediaReport`, *optional*): the media checks; `None` when they were off.
        on_missing (`str`): the policy asked for.
    """

    corpus: Corpus
    built: Corpus
    media: Optional[MediaReport]
    on_missing: str

    @property
    def is_usable(self) -> bool:
        """Whether a build with these options would succeed and leave every split non-empty."""
        if self.media is not None and self.media.problems and self.on_missing == "raise":
            return False
        return all(self.built.splits.get(split) for split in self.corpus.splits)

    @property
    def exit_code(self) -> int:
        return EXIT_USABLE if self.is_usable else EXIT_MEDIA_PROBLEMS


def check_data(
    dataset: str,
    root,
    check_media: bool = True,
    on_missing: str = "raise",
    max_clip_duration: Optional[float] = DEFAULT_MAX_CLIP_DURATION,
    split_file=None,
    num_workers: int = 8,
) -> DataCheckReport:
    """
    Reads the label files of `dataset` (`"meld"` or `"iemocap"`) under `root` and, with `check_media`, opens every
    media file's header. `split_file` is IEMOCAP's split.json (default: the shipped one). Raises `LabelFilesError`
    when the label files themselves are unusable.
    """
    validate_options(on_missing, max_clip_duration)
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
    corpus = read_iemocap_corpus(root, split_file) if dataset == "iemocap" else read_meld_corpus(root)
    if not check_media:
        return DataCheckReport(corpus, corpus, None, on_missing)
    media = check_corpus_media(corpus, max_clip_duration, num_workers)
    built = drop_utterances(corpus, media.problems) if on_missing == "drop" else corpus
    return DataCheckReport(corpus, built, media, on_missing)


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
    lines = [f"{corpus.name} at {corpus.root}", "", "Utterances per split and class (from the label files):"]
    lines += _count_table(corpus)
    excluded = {split: counts for split, counts in corpus.excluded_labels.items() if counts}
    if excluded:
        lines += ["", "Left out, label not one of the classes:"]
        for split, counts in excluded.items():
            lines.append(f"  {split}: " + ", ".join(f"{label} {n}" for label, n in sorted(counts.items())))
    if report.media is None:
        lines += ["", "Media not checked (--no-media)."]
    else:
        media = report.media
        missing = [problem for problem in media.problems if problem.status == MISSING]
        unreadable = [problem for problem in media.problems if problem.status != MISSING]
        lines += ["", f"Media files checked: {media.num_files}"]
        lines += [f"Missing files: {len(missing)}", *(f"  {problem.describe()}" for problem in missing)]
        lines += [f"Unreadable files: {len(unreadable)}", *(f"  {problem.describe()}" for problem in unreadable)]
        limit = "off" if media.max_clip_duration is None else f"{media.max_clip_duration:g} s"
        lines += [f"Clips longer than the limit ({limit}): {len(media.long_clips)}"]
        lines += [f"  {long_clip.describe()}" for long_clip in media.long_clips]
        if media.problems and report.on_missing == "drop":
            lines += ["", "Utterances per split and class after dropping those with missing/unreadable media:"]
            lines += _count_table(report.built)
    lines += ["", _verdict(report)]
    return "\n".join(lines)


def _verdict(report: DataCheckReport) -> str:
    if report.is_usable:
        dropped = sum(len(problem.utterance_ids) for problem in report.media.problems) if report.media else 0
        return f"Result: usable ({dropped} utterance(s) left out)." if dropped else "Result: usable."
    if report.media is not None and report.media.problems and report.on_missing == "raise":
        return (f"Result: NOT usable: {len(report.media.problems)} media file(s) missing or unreadable "
                "(--on-missing drop builds without the utterances that need them).")
    empty = [split for split in report.corpus.splits if not report.built.splits.get(split)]
    return f"Result: NOT usable: no utterance left in split(s) {', '.join(empty)}."


def run_check_data(args) -> int:
    """The `check-data` sub-command: prints the report, returns the exit status (0 usable, 1 media, 2 labels)."""
    try:
        report = check_data(
            args.dataset,
            args.root,
            check_media=not args.no_media,
            on_missing=args.on_missing,
            max_clip_duration=args.max_duration if args.max_duration > 0 else None,
            split_file=getattr(args, "split_file", None),
            num_workers=args.num_workers,
        )
    except (LabelFilesError, FileNotFoundError, ValueError) as error:
        print(f"check-data: {error}")
        print("Result: NOT usable: the label files cannot be read.")
        return EXIT_LABEL_PROBLEMS
    print(format_report(report))
    return report.exit_code
