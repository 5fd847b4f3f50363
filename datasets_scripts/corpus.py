"""
What the MELD and IEMOCAP builders share: conversations read from a release's label files, the label and media
checks, the missing-file policy, and the conversion to a `datasets.DatasetDict` with one row per conversation.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Optional, Sequence, Union

from datasets import ClassLabel, Dataset, DatasetDict, DatasetInfo, Features

from .media import MediaFile, MediaProbe, probe_many

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
ON_MISSING_CHOICES = ("raise", "drop")
DEFAULT_MAX_CLIP_DURATION = 30.0

DialogueId = Union[int, str]
UtteranceId = Union[int, str]


@dataclass(frozen=True)
class UtteranceRecord:
    """
    One utterance as the label files give it.

    Args:
        utterance_id (`int` or `str`): the release's id of the utterance.
        values (`dict`): the utterance's value for every per-utterance column of a row (`"speakers"`, `"texts"`, ...).
        media (`tuple[MediaFile, ...]`): the files the utterance needs.
    """

    utterance_id: UtteranceId
    values: dict[str, Any]
    media: tuple[MediaFile, ...] = ()


@dataclass(frozen=True)
class DialogueRecord:
    """A conversation: its id and its utterances in order."""

    dialogue_id: DialogueId
    utterances: tuple[UtteranceRecord, ...]


@dataclass
class Corpus:
    """
    Every split of a release as read from its label files, before any media check.

    Args:
        name (`str`): the dataset's name, used in messages.
        root (`str`): the release folder.
        splits (`dict[str, list[DialogueRecord]]`): `train`, `validation`, `test`.
        label_names (`tuple[str, ...]`): the classes, in the order of the dataset's table (`magtkd_hf.DATASETS`).
        features (`datasets.Features`): the row schema.
        excluded_labels (`dict[str, Counter]`): per split, utterances left out because their label is not a class.
        label_problems (`list[LabelProblem]`): rows left out of `splits` that a build refuses unless
            `on_missing="drop"` (EndTime < StartTime, an utterance listed twice).
        label_faults (`list[str]`): faults that make the label files unreadable (an absent file, a bad row); only
            a corpus read with `strict=False` has any (a strict read raises `LabelFilesError` instead).
        split_sources (`dict[str, str]`): per split, the label file (or split-file entry) it comes from, for messages.
    """

    name: str
    root: str
    splits: dict[str, list[DialogueRecord]]
    label_names: tuple[str, ...]
    features: Features
    excluded_labels: dict[str, Counter] = field(default_factory=dict)
    label_problems: list["LabelProblem"] = field(default_factory=list)
    label_faults: list[str] = field(default_factory=list)
    split_sources: dict[str, str] = field(default_factory=dict)

    def iter_utterances(self):
        """Yields `(split, dialogue, utterance)` for every utterance."""
        for split, dialogues in self.splits.items():
            for dialogue in dialogues:
                for utterance in dialogue.utterances:
                    yield split, dialogue, utterance

    def label_counts(self) -> dict[str, Counter]:
        """Per split, utterances per class name."""
        counts = {split: Counter() for split in self.splits}
        for split, _, utterance in self.iter_utterances():
            counts[split][self.label_names[utterance.values["labels"]]] += 1
        return counts


@dataclass(frozen=True)
class MediaProblem:
    """A missing or unreadable file, with every utterance that needs it."""

    split: str
    dialogue_id: DialogueId
    utterance_ids: tuple[UtteranceId, ...]
    path: str
    status: str
    reason: str

    def describe(self) -> str:
        utterances = ", ".join(str(utterance_id) for utterance_id in self.utterance_ids)
        noun = "utterance" if len(self.utterance_ids) == 1 else "utterances"
        where = f"{self.split} / dialogue {self.dialogue_id} / {noun} {utterances}"
        return f"{where}: {self.path} ({self.status}: {self.reason})"


END_BEFORE_START = "end before start"
DUPLICATE = "duplicate"
EMPTY_SPLIT = "empty split"


@dataclass(frozen=True)
class LabelProblem:
    """
    Label-file rows (or a whole split) that a build refuses unless `on_missing="drop"`.

    Args:
        split (`str`): the split.
        kind (`str`): `"end before start"` (EndTime < StartTime), `"duplicate"` (an utterance listed more than once),
            or `"empty split"` (no utterance in the split).
        source (`str`): the file (with line numbers) the problem is in.
        reason (`str`): what is wrong and what a drop leaves out.
        dialogue_id (`int` or `str`, *optional*): the dialogue, for row problems.
        utterance_ids (`tuple`): the utterances left out (empty for a split problem, or for a repeated row whose
            first copy is kept).
    """

    split: str
    kind: str
    source: str
    reason: str
    dialogue_id: Optional[DialogueId] = None
    utterance_ids: tuple[UtteranceId, ...] = ()

    def describe(self) -> str:
        where = self.split if self.dialogue_id is None else f"{self.split} / dialogue {self.dialogue_id}"
        return f"{where}: {self.reason} ({self.source})"


def find_empty_splits(corpus: Corpus) -> list[LabelProblem]:
    """A `LabelProblem` for every split of `corpus` without any utterance, naming where the split comes from."""
    problems = []
    for split, dialogues in corpus.splits.items():
        if any(dialogue.utterances for dialogue in dialogues):
            continue
        excluded = corpus.excluded_labels.get(split) or Counter()
        dropped = [p for p in corpus.label_problems if p.split == split and p.kind != EMPTY_SPLIT]
        notes = []
        if excluded:
            labels = ", ".join(f"{label} {n}" for label, n in sorted(excluded.items()))
            notes.append(f"{sum(excluded.values())} utterance(s) with a label outside the classes ({labels})")
        if dropped:
            notes.append(f"{len(dropped)} problem row(s) left out")
        reason = "no utterance in this split" + (f" after filtering: {'; '.join(notes)}" if notes else "")
        problems.append(LabelProblem(split, EMPTY_SPLIT, corpus.split_sources.get(split, corpus.root), reason))
    return problems


@dataclass(frozen=True)
class LongClip:
    """An utterance clip longer than the limit."""

    split: str
    dialogue_id: DialogueId
    utterance_id: UtteranceId
    path: str
    duration: float

    def describe(self) -> str:
        where = f"{self.split} / dialogue {self.dialogue_id} / utterance {self.utterance_id}"
        return f"{where}: {self.path} ({self.duration:.2f} s)"


class MediaProblemsError(ValueError):
    """Raised when media files are missing or unreadable; `problems` lists all of them."""

    def __init__(self, dataset_name: str, problems: Sequence[MediaProblem]):
        self.problems = list(problems)
        num_files = len(self.problems)
        num_utterances = sum(len(problem.utterance_ids) for problem in self.problems)
        lines = [
            f"{dataset_name}: {num_files} media file(s) missing or unreadable, "
            f"needed by {num_utterances} utterance(s). "
            "No file is replaced; pass `on_missing=\"drop\"` to build without these utterances, or "
            "`check_media=False` to build from the labels alone."
        ]
        lines += [f"  {problem.describe()}" for problem in self.problems]
        super().__init__("\n".join(lines))


class LabelFilesError(ValueError):
    """Raised when a release's label files are absent or cannot be parsed; the message lists every fault found."""

    def __init__(self, dataset_name: str, faults: Sequence[str], headline: Optional[str] = None):
        self.faults = list(faults)
        lines = [headline or f"{dataset_name}: {len(self.faults)} fault(s) in the label files:"]
        lines += [f"  {fault}" for fault in self.faults]
        super().__init__("\n".join(lines))


class LabelProblemsError(LabelFilesError):
    """
    Raised with `on_missing="raise"` when label-file rows make a split unusable (EndTime < StartTime, an utterance
    listed twice, an empty split); `problems` lists all of them (`LabelProblem`).
    """

    def __init__(self, dataset_name: str, problems: Sequence[LabelProblem]):
        self.problems = list(problems)
        splits = ", ".join(dict.fromkeys(problem.split for problem in self.problems))
        headline = (
            f"{dataset_name}: {len(self.problems)} label-file problem(s) make split(s) {splits} unusable. Pass "
            "`on_missing=\"drop\"` to build without the rows named (a split left empty is then built empty and "
            "recorded in its `info.description`):"
        )
        super().__init__(dataset_name, [problem.describe() for problem in self.problems], headline)


@dataclass
class MediaReport:
    """The outcome of the media checks of a corpus."""

    problems: list[MediaProblem]
    long_clips: list[LongClip]
    max_clip_duration: Optional[float]
    num_files: int


def find_media_problems(corpus: Corpus, probes: dict[str, MediaProbe]) -> list[MediaProblem]:
    """Groups the unusable files by split and dialogue, each with the utterances that need it."""
    needing: dict[tuple[str, DialogueId, str], list[UtteranceId]] = {}
    for split, dialogue, utterance in corpus.iter_utterances():
        for media in utterance.media:
            if not probes[media.path].is_usable:
                needing.setdefault((split, dialogue.dialogue_id, media.path), []).append(utterance.utterance_id)
    return [
        MediaProblem(split, dialogue_id, tuple(utterance_ids), path, probes[path].status, probes[path].reason)
        for (split, dialogue_id, path), utterance_ids in needing.items()
    ]


def find_long_clips(corpus: Corpus, probes: dict[str, MediaProbe], max_clip_duration: float) -> list[LongClip]:
    """The utterance clips whose header duration exceeds `max_clip_duration` seconds."""
    long_clips = []
    for split, dialogue, utterance in corpus.iter_utterances():
        for media in utterance.media:
            duration = probes[media.path].duration
            if media.is_utterance_clip and duration is not None and duration > max_clip_duration:
                long_clips.append(LongClip(split, dialogue.dialogue_id, utterance.utterance_id, media.path, duration))
    return long_clips


def check_corpus_media(
    corpus: Corpus,
    max_clip_duration: Optional[float] = DEFAULT_MAX_CLIP_DURATION,
    num_workers: int = 8,
    decode: bool = False,
    progress: Optional[bool] = False,
) -> MediaReport:
    """
    Checks every file of the corpus once (the header; with `decode`, a full decode of the streams used) and lists
    the unusable files and the long clips. `progress`: a tqdm bar (`None`: only on a terminal).
    """
    media_files = (media for _, _, utterance in corpus.iter_utterances() for media in utterance.media)
    probes = probe_many(media_files, num_workers, decode=decode, progress=progress)
    long_clips = find_long_clips(corpus, probes, max_clip_duration) if max_clip_duration is not None else []
    return MediaReport(find_media_problems(corpus, probes), long_clips, max_clip_duration, len(probes))


def drop_utterances(corpus: Corpus, problems: Iterable[MediaProblem]) -> Corpus:
    """A copy of `corpus` without the utterances named by `problems`; a dialogue left empty is removed."""
    dropped = {(p.split, p.dialogue_id, utterance_id) for p in problems for utterance_id in p.utterance_ids}
    splits = {}
    for split, dialogues in corpus.splits.items():
        kept_dialogues = []
        for dialogue in dialogues:
            kept = tuple(u for u in dialogue.utterances if (split, dialogue.dialogue_id, u.utterance_id) not in dropped)
            if kept:
                kept_dialogues.append(replace(dialogue, utterances=kept))
        splits[split] = kept_dialogues
    return replace(corpus, splits=splits)


def summarize_drops(
    problems: Sequence[MediaProblem], label_problems: Sequence[LabelProblem] = ()
) -> dict[str, str]:
    """
    Per split, sentences naming every utterance dropped for a media problem, every label-file row left out
    (EndTime < StartTime, repeated) and whether the split is empty (for `info.description`).
    """
    summaries = {}
    for split in SPLITS:
        sentences = []
        split_label_problems = [p for p in label_problems if p.split == split and p.kind != EMPTY_SPLIT]
        if split_label_problems:
            count = sum(len(problem.utterance_ids) for problem in split_label_problems)
            details = "; ".join(problem.describe() for problem in split_label_problems)
            sentences.append(f"Left out label-file rows ({count} utterance(s) dropped): {details}.")
        split_problems = [problem for problem in problems if problem.split == split]
        if split_problems:
            count = sum(len(problem.utterance_ids) for problem in split_problems)
            details = "; ".join(problem.describe() for problem in split_problems)
            sentences.append(f"Dropped {count} utterance(s) whose media is missing or unreadable: {details}.")
        empty = [problem for problem in label_problems if problem.split == split and problem.kind == EMPTY_SPLIT]
        sentences += [f"Empty split: {problem.describe()}." for problem in empty]
        if sentences:
            summaries[split] = " ".join(sentences)
    return summaries


def corpus_to_dataset_dict(
    corpus: Corpus, description: str, split_notes: Optional[dict[str, str]] = None
) -> DatasetDict:
    """One row per dialogue: `dialogue_id` plus, for every other column of `corpus.features`, the per-utterance list."""
    split_notes = split_notes or {}
    list_columns = [column for column in corpus.features if column != "dialogue_id"]
    dataset_dict = {}
    for split, dialogues in corpus.splits.items():
        columns = {"dialogue_id": [dialogue.dialogue_id for dialogue in dialogues]}
        for column in list_columns:
            columns[column] = [[u.values[column] for u in dialogue.utterances] for dialogue in dialogues]
        split_description = " ".join(text for text in (description, split_notes.get(split)) if text)
        info = DatasetInfo(description=split_description, features=corpus.features, dataset_name=corpus.name.lower())
        dataset_dict[split] = Dataset.from_dict(columns, info=info, split=split)
    return DatasetDict(dataset_dict)


def validate_options(on_missing: str, max_clip_duration: Optional[float]) -> None:
    if on_missing not in ON_MISSING_CHOICES:
        raise ValueError(f"`on_missing` must be one of {ON_MISSING_CHOICES}, got {on_missing!r}.")
    if max_clip_duration is not None and max_clip_duration <= 0:
        raise ValueError(f"`max_clip_duration` must be positive or None, got {max_clip_duration!r}.")


def build_dataset_dict(
    corpus: Corpus,
    description: str,
    check_media: bool = True,
    on_missing: str = "raise",
    max_clip_duration: Optional[float] = DEFAULT_MAX_CLIP_DURATION,
    num_workers: int = 8,
    decode: bool = False,
    progress: Optional[bool] = None,
) -> DatasetDict:
    """
    Applies the label and media checks and the missing-file policy to `corpus`, then builds the `DatasetDict`.

    With `on_missing="raise"`, label-file rows that make a split unusable (EndTime < StartTime, an utterance listed
    twice) and empty splits raise one `LabelProblemsError` listing all of them, before any media is opened; then
    missing or unreadable files (never replaced) raise one `MediaProblemsError`. With `on_missing="drop"` those rows
    and the utterances needing those files are left out, and a split left empty is built empty; all of it is logged
    and recorded in each split's `info.description`. Clips longer than `max_clip_duration` seconds are logged.
    `decode` fully decodes every media file instead of reading its header (finds files cut after a good header).
    `progress`: a tqdm bar over the media files (`None`: only when stderr is a terminal).
    """
    validate_options(on_missing, max_clip_duration)
    label_problems = list(corpus.label_problems)
    if on_missing == "raise":
        refused = label_problems + find_empty_splits(corpus)
        if refused:
            raise LabelProblemsError(corpus.name, refused)
    media_problems: list[MediaProblem] = []
    if check_media:
        report = check_corpus_media(corpus, max_clip_duration, num_workers, decode=decode, progress=progress)
        for long_clip in report.long_clips:
            logger.warning("%s: clip longer than %s s: %s", corpus.name, max_clip_duration, long_clip.describe())
        media_problems = report.problems
        if media_problems and on_missing == "raise":
            raise MediaProblemsError(corpus.name, media_problems)
    built = drop_utterances(corpus, media_problems) if media_problems else corpus
    split_notes = summarize_drops(media_problems, label_problems + find_empty_splits(built))
    for split, note in split_notes.items():
        logger.warning("%s %s: %s", corpus.name, split, note)
    return corpus_to_dataset_dict(built, description, split_notes)


def class_label_index(label_names: Sequence[str]) -> dict[str, int]:
    return {name: index for index, name in enumerate(label_names)}


def class_label(label_names: Sequence[str]) -> ClassLabel:
    return ClassLabel(names=list(label_names))


def decode_text_file(path, encodings: Sequence[str] = ("utf-8-sig", "cp1252", "latin-1")) -> str:
    """
    The text of `path` in the first of `encodings` that decodes all of it. The characters are kept as they are
    (MELD's CSVs hold cp1252 punctuation stored as C1 control characters, e.g. `\\x92` for an apostrophe).
    """
    raw = open(path, "rb").read()
    for encoding in encodings:
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise UnicodeDecodeError(encodings[-1], raw, 0, len(raw), f"{path}: none of {list(encodings)} decodes this file")
