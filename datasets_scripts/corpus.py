"""
What the MELD and IEMOCAP builders share: a release's conversations as its label files give them, the label and media
checks, the missing-file policy, and the `datasets.DatasetDict` with one row per conversation.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple, Optional, Sequence, Union

from datasets import ClassLabel, Dataset, DatasetDict, DatasetInfo, Features, List, Value

from .media import probe_many

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
ON_MISSING_CHOICES = ("raise", "drop")
DEFAULT_MAX_CLIP_DURATION = 30.0
TOO_LONG = "too long"  # the status of a clip over the limit


def conversation_features(id_type: str, label_names: Sequence[str], **extra_columns) -> Features:
    """The row schema: `dialogue_id` and the per-utterance lists, `extra_columns` (name -> feature) after `labels`."""
    string = Value("string")
    return Features({
        "dialogue_id": Value(id_type), "utterance_ids": List(Value(id_type)), "speakers": List(string),
        "texts": List(string), "labels": List(ClassLabel(names=list(label_names))),
        **{name: List(feature) for name, feature in extra_columns.items()},
        "video_paths": List(string), "start_times": List(Value("float32")), "end_times": List(Value("float32")),
    })


def counts_text(counts: Counter) -> str:
    return ", ".join(f"{label} {n}" for label, n in sorted(counts.items()))


def count_utterances(problems) -> int:
    return sum(len(problem.utterance_ids) for problem in problems)


@dataclass(frozen=True)
class LabelProblem:
    """
    Label-file rows (end before start, repeated) or a split without utterances, which a build refuses unless
    `on_missing="drop"`: `source` is the file (and lines); `utterance_ids` the utterances a drop leaves out.
    """

    split: str
    source: str
    reason: str
    dialogue_id: Union[int, str, None] = None
    utterance_ids: tuple = ()

    def __str__(self) -> str:
        where = self.split if self.dialogue_id is None else f"{self.split} / dialogue {self.dialogue_id}"
        return f"{where}: {self.reason} ({self.source})"


@dataclass(frozen=True)
class MediaProblem:
    """A missing, unreadable or (status "too long") over-long file, with every utterance of a dialogue needing it."""

    split: str
    dialogue_id: Union[int, str]
    utterance_ids: tuple
    path: str
    status: str
    reason: str

    def __str__(self) -> str:
        noun = "utterance" if len(self.utterance_ids) == 1 else "utterances"
        utterances = ", ".join(map(str, self.utterance_ids))
        where = f"{self.split} / dialogue {self.dialogue_id} / {noun} {utterances}"
        return f"{where}: {self.path} ({self.status}: {self.reason})"


class LabelFilesError(ValueError):
    """Raised when a release's label files are absent or cannot be parsed; the message lists every fault found."""

    def __init__(self, dataset_name: str, faults: Sequence[str], headline: Optional[str] = None):
        self.faults = list(faults)
        headline = headline or f"{dataset_name}: {len(self.faults)} fault(s) in the label files:"
        super().__init__("\n".join([headline, *(f"  {fault}" for fault in self.faults)]))


def check_release_root(dataset_name: str, root: Path, expected: Sequence[str], description: str) -> None:
    """One short line for a root that is no folder, or holds none of `expected`, instead of a fault per label file."""
    if not root.is_dir():
        state = "does not exist" if not root.exists() else "is not a folder"
    elif not any((root / name).exists() for name in expected):
        state = "is not the release folder"
    else:
        return
    raise LabelFilesError(dataset_name, [], f"{dataset_name} root {root} {state}: expected {description}.")


class LabelProblemsError(LabelFilesError):
    """Raised with `on_missing="raise"` for label-file rows or empty splits; `problems` lists them (`LabelProblem`)."""

    def __init__(self, dataset_name: str, problems: Sequence[LabelProblem]):
        self.problems = list(problems)
        splits = ", ".join(dict.fromkeys(problem.split for problem in self.problems))
        headline = (
            f"{dataset_name}: {len(self.problems)} label-file problem(s) make split(s) {splits} unusable. Pass "
            "`on_missing=\"drop\"` to build without the rows named (a split left empty is then built empty and "
            "recorded in its `info.description`):"
        )
        super().__init__(dataset_name, [str(problem) for problem in self.problems], headline)


class MediaProblemsError(ValueError):
    """Raised when media files are missing or unreadable; `problems` lists all of them (`MediaProblem`)."""

    def __init__(self, dataset_name: str, problems: Sequence[MediaProblem]):
        self.problems = list(problems)
        headline = (
            f"{dataset_name}: {len(self.problems)} media file(s) missing or unreadable, needed by "
            f"{count_utterances(self.problems)} utterance(s). No file is replaced; pass `on_missing=\"drop\"` to build "
            "without these utterances, or `check_media=False` to build from the labels alone."
        )
        super().__init__("\n".join([headline, *(f"  {problem}" for problem in self.problems)]))


class LabelRow(NamedTuple):
    """One utterance as a label file gives it (a dict of per-utterance columns plus `media`), where, and its times."""

    dialogue_id: Union[int, str]
    utterance: dict
    file: str
    line: int
    start_text: str
    end_text: str


@dataclass
class Corpus:
    """
    A release as its label files give it, before any media check. `splits`: split -> {dialogue id: utterances}, each
    utterance a dict of the per-utterance columns plus `media` (its `MediaFile`s). `label_faults` make the label
    files unreadable (a build raises on them); `label_problems` are rows left out that a build refuses unless
    `on_missing="drop"`; `excluded_labels`: per split, the labels outside the classes; `split_sources`: per split,
    where it comes from.
    """

    name: str
    root: str
    features: Features
    splits: dict = field(default_factory=dict)
    label_faults: list = field(default_factory=list)
    label_problems: list = field(default_factory=list)
    excluded_labels: dict = field(default_factory=dict)
    split_sources: dict = field(default_factory=dict)

    def utterances(self):
        """`(split, dialogue id, utterance)` for every utterance."""
        for split, dialogues in self.splits.items():
            for dialogue_id, utterances in dialogues.items():
                for utterance in utterances:
                    yield split, dialogue_id, utterance

    def add_split(self, split: str, rows: Sequence[LabelRow], sort: bool = False) -> None:
        """
        The dialogues of `split` from its label rows (in file order; with `sort`, dialogues and utterances in id
        order). Left out as `LabelProblem`s: a row whose end is before its start, and an utterance on several rows
        (of identical rows the first is kept; of rows that differ none, as which one is right is unknown).
        """
        copies = {}
        for row in rows:
            utterance_id = row.utterance["utterance_ids"]
            if row.utterance["end_times"] < row.utterance["start_times"]:
                reason = (f"utterance {utterance_id}: EndTime {row.end_text} is before StartTime {row.start_text}; "
                          "the row is left out")
                source = f"{row.file}, line {row.line}"
                self.label_problems.append(LabelProblem(split, source, reason, row.dialogue_id, (utterance_id,)))
            else:
                copies.setdefault((row.dialogue_id, utterance_id), []).append(row)
        dialogues = {}
        for (dialogue_id, utterance_id), found in copies.items():
            if len(found) == 1 or self._repeated(split, utterance_id, found):
                dialogues.setdefault(dialogue_id, []).append(found[0].utterance)
        if sort:
            dialogues = {key: sorted(dialogues[key], key=lambda u: u["utterance_ids"]) for key in sorted(dialogues)}
        self.splits[split] = dialogues

    def _repeated(self, split: str, utterance_id, found: list[LabelRow]) -> bool:
        """Records an utterance on several rows; whether the first row is kept (all rows identical)."""
        first = found[0].utterance
        differing = sorted(column for column in first if any(row.utterance[column] != first[column] for row in found))
        source = f"{found[0].file}, lines {', '.join(str(row.line) for row in found)}"
        if differing:
            reason, left_out = f"rows that differ ({', '.join(differing)}); all are left out", (utterance_id,)
        else:
            reason, left_out = "identical rows; the first is kept, the repeats are left out", ()
        reason = f"utterance {utterance_id} is on {len(found)} {reason}"
        self.label_problems.append(LabelProblem(split, source, reason, found[0].dialogue_id, left_out))
        return not differing


def find_empty_splits(corpus: Corpus) -> list[LabelProblem]:
    """A `LabelProblem` for every split of `corpus` without any utterance, naming where the split comes from."""
    problems = []
    for split in (split for split, dialogues in corpus.splits.items() if not dialogues):
        notes = []
        excluded = corpus.excluded_labels.get(split)
        if excluded:
            notes.append(f"{sum(excluded.values())} utterance(s) with a label outside the classes "
                         f"({counts_text(excluded)})")
        dropped = [problem for problem in corpus.label_problems if problem.split == split]
        if dropped:
            notes.append(f"{len(dropped)} problem row(s) left out")
        reason = "no utterance in this split" + (f" after filtering: {'; '.join(notes)}" if notes else "")
        problems.append(LabelProblem(split, corpus.split_sources.get(split, corpus.root), reason))
    return problems


def check_media_files(
    corpus: Corpus, max_clip_duration: Optional[float], num_workers: int = 8, decode: bool = False, progress=False
) -> tuple[int, list[MediaProblem], list[MediaProblem]]:
    """
    Checks every file of `corpus` once (`probe_many`). Returns the number of files, the missing and unreadable ones
    and the utterance clips longer than `max_clip_duration` seconds, each with the utterances needing it.
    """
    probes = probe_many((m for _, _, u in corpus.utterances() for m in u["media"]), num_workers, decode, progress)
    needing = {}
    for split, dialogue_id, utterance in corpus.utterances():
        for media in utterance["media"]:
            probe = probes[media.path]
            status, reason = probe.status, probe.reason
            too_long = max_clip_duration is not None and (probe.duration or 0) > max_clip_duration
            if status is None and media.is_utterance_clip and too_long:
                status, reason = TOO_LONG, f"{probe.duration:.2f} s"
            if status is not None:
                key = (split, dialogue_id, media.path, status, reason)
                needing.setdefault(key, []).append(utterance["utterance_ids"])
    found = [MediaProblem(split, dialogue_id, tuple(ids), path, status, reason)
             for (split, dialogue_id, path, status, reason), ids in needing.items()]
    return len(probes), [p for p in found if p.status != TOO_LONG], [p for p in found if p.status == TOO_LONG]


def drop_utterances(corpus: Corpus, problems: Sequence[MediaProblem]) -> Corpus:
    """A copy of `corpus` without the utterances named by `problems`; a dialogue left empty is removed."""
    dropped = {(p.split, p.dialogue_id, utterance_id) for p in problems for utterance_id in p.utterance_ids}
    splits = {}
    for split, dialogues in corpus.splits.items():
        kept = {key: [u for u in value if (split, key, u["utterance_ids"]) not in dropped]
                for key, value in dialogues.items()}
        splits[split] = {key: value for key, value in kept.items() if value}
    return replace(corpus, splits=splits)


def _drop_sentence(template: str, problems: list) -> list[str]:
    details = "; ".join(map(str, problems))
    return [f"{template.format(count_utterances(problems))}: {details}."] if problems else []


def describe_drops(label_problems, media_problems, empty_splits) -> dict[str, str]:
    """Per split, sentences naming every label-file row and utterance left out and whether the split is empty."""
    notes = {}
    for split in SPLITS:
        sentences = _drop_sentence("Left out label-file rows ({} utterance(s) dropped)",
                                   [p for p in label_problems if p.split == split])
        sentences += _drop_sentence("Dropped {} utterance(s) whose media is missing or unreadable",
                                    [p for p in media_problems if p.split == split])
        sentences += [f"Empty split: {problem}." for problem in empty_splits if problem.split == split]
        if sentences:
            notes[split] = " ".join(sentences)
    return notes


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
) -> DatasetDict:
    """
    The `DatasetDict` of `corpus` under the checks and the missing-file policy that `load_meld`/`load_iemocap`
    document. Label-file problems are refused before any media is opened; clips over the limit are logged; a tqdm
    bar shows the media checks on a terminal.
    """
    validate_options(on_missing, max_clip_duration)
    if corpus.label_faults:
        raise LabelFilesError(corpus.name, corpus.label_faults)
    refused = corpus.label_problems + find_empty_splits(corpus)
    if refused and on_missing == "raise":
        raise LabelProblemsError(corpus.name, refused)
    media_problems = []
    if check_media:
        _, media_problems, long_clips = check_media_files(corpus, max_clip_duration, num_workers, decode, None)
        for clip in long_clips:
            logger.warning("%s: clip longer than %s s: %s", corpus.name, max_clip_duration, clip)
        if media_problems and on_missing == "raise":
            raise MediaProblemsError(corpus.name, media_problems)
    built = drop_utterances(corpus, media_problems)
    notes = describe_drops(corpus.label_problems, media_problems, find_empty_splits(built))
    for split, note in notes.items():
        logger.warning("%s %s: %s", corpus.name, split, note)
    columns = [column for column in corpus.features if column != "dialogue_id"]
    dataset_dict = {}
    for split, dialogues in built.splits.items():
        data = {"dialogue_id": list(dialogues)}
        data.update({column: [[u[column] for u in us] for us in dialogues.values()] for column in columns})
        split_description = " ".join(text for text in (description, notes.get(split)) if text)
        info = DatasetInfo(description=split_description, features=corpus.features, dataset_name=corpus.name.lower())
        dataset_dict[split] = Dataset.from_dict(data, info=info, split=split)
    return DatasetDict(dataset_dict)


def decode_text_file(path: Union[str, Path]) -> str:
    """
    The text of `path` as UTF-8, else cp1252, else Latin-1 (which decodes anything), characters kept as they are
    (MELD's CSVs hold cp1252 punctuation stored as C1 control characters, e.g. `\\x92` for an apostrophe).
    """
    raw = Path(path).read_bytes()
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            pass
    return raw.decode("latin-1")
