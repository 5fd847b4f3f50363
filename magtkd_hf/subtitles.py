"""Subtitles in, an emotion per cue out: SRT or WebVTT cues become the utterances of conversations cut from one video,
and the predictions go back into the subtitles.

Parsing and writing use pysubs2 (well kept, pure Python, reads and writes SRT and WebVTT with each cue's timing
untouched, in milliseconds), not hand-written parsing. How a cue becomes an utterance:

- the file must be UTF-8 (with or without a BOM); other encodings are refused naming the file;
- markup (`<i>`, `<b>`, `{\\an8}`, ...) is removed, escapes (`&amp;`) read as their characters, line breaks become
  spaces, and sound descriptions in brackets or parentheses (`[laughs]`, `(door slams)`) are removed; a cue left with
  no text (a sound description alone, or `NAME:` and one) is skipped: no row, its annotation left as it was;
- a cue holding a line with `-->` (a malformed timing, which pysubs2 would read as text) is refused;
- the speaker is a WebVTT voice tag (`<v Anna>`), else a `NAME:` prefix (1 to 3 words, the first upper-case:
  `JOEY:`, `Mr. Geller:`), else `default_speaker` (`--speaker NAME`), else the cue is refused;
- cues must follow one another: a cue ending at or before its start, starting before the previous one ends, or ending
  past the video's end is refused naming the file and the cue number (1-based, in file order).
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import pysubs2

from .inference import check_regular_file, predict_emotions
from .prediction_files import write_text_atomically

SUBTITLE_FORMATS = ("srt", "vtt")
# From MELD's dialogues (benchmarks/meld_dialogue_stats.py on train/dev/test_sent_emo.csv: 1,432 dialogues, 13,708
# utterances): the silence between consecutive utterances of a dialogue has median 0.21 s, 95th percentile 5.17 s and
# 99th 12.14 s; a dialogue has 9.6 utterances on average, 20 at the 95th percentile, 23 at the 99th, 33 at most.
DEFAULT_MAX_GAP = 5.0
DEFAULT_MAX_UTTERANCES = 24
# A film's SRT is about 100 KB: far larger is not subtitles, and is not read into memory.
MAX_SUBTITLE_BYTES = 16 << 20
# Past-the-end tolerance: subtitle times are whole milliseconds, a container's duration need not be.
END_TOLERANCE = 0.001

_VOICE_TAG = re.compile(r"<v(?:\.[^\s>]*)?\s+([^>]+)>")
_TAG = re.compile(r"</?[^>]*>")
_SOUND_DESCRIPTION = re.compile(r"\[[^\]]*\]|\([^)]*\)")
# A timing line, valid or not ("00:00:01,000 -> 00:00:02"): pysubs2 reads a malformed one as the text of the cue before.
_TIMING_LINE = re.compile(r"^.*(?:\d:\d\d(?:[,.]\d+)?\s*-+>|-->).*$", re.M)
_SPEAKER_PREFIX = re.compile(r"([A-Z][\w'.-]*(?: [\w'.-]+){0,2}):(?:\s+(.*))?")


@dataclass(frozen=True)
class Cue:
    """One subtitle cue: its 1-based number in the file, start and end seconds, speaker (or None) and clean text."""

    number: int
    start: float
    end: float
    speaker: str | None
    text: str


def load_subtitles(path: str | Path, **options) -> pysubs2.SSAFile:
    """An SRT or WebVTT file read as UTF-8 (a BOM allowed) with pysubs2; one-line errors naming the file."""
    path = Path(path)
    check_regular_file(path)
    if path.stat().st_size > MAX_SUBTITLE_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size:,} bytes, more than subtitles take (at most "
                         f"{MAX_SUBTITLE_BYTES:,}).")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text (byte {error.object[error.start]:#04x} at position {error.start}); "
                         "subtitles are read as UTF-8 only: convert the file, e.g. `iconv -f CP1252 -t UTF-8`.") from None
    if not text.strip():
        raise ValueError(f"{path}: an empty file: no subtitle cues.")
    try:
        subtitles = pysubs2.SSAFile.from_string(text, **options)
    except pysubs2.Pysubs2Error as error:
        raise ValueError(f"{path}: not SRT or WebVTT subtitles ({error}).") from None
    if subtitles.format not in SUBTITLE_FORMATS:
        raise ValueError(f"{path}: {subtitles.format} subtitles; only SRT and WebVTT are read.")
    if not subtitles.events:
        raise ValueError(f"{path}: no subtitle cues.")
    return subtitles


def read_cues(path: str | Path, default_speaker: str | None = None) -> list[Cue]:
    """The cues of an SRT or WebVTT file, cleaned as the module docstring says (cues left empty skipped)."""
    subtitles = load_subtitles(path, keep_unknown_html_tags=True)  # keeps WebVTT voice tags, which carry speakers
    cues, previous_end = [], None
    for number, event in enumerate(subtitles.events, start=1):
        start, end = event.start / 1000, event.end / 1000
        if end <= start:
            raise ValueError(f"{path}: cue {number} ends at {end:.3f} s, not after its start ({start:.3f} s).")
        if previous_end is not None and start < previous_end:
            raise ValueError(f"{path}: cue {number} starts at {start:.3f} s, before cue {number - 1} ends "
                             f"({previous_end:.3f} s): cues must not overlap.")
        previous_end = end
        timing = _TIMING_LINE.search(event.plaintext)
        if timing:
            raise ValueError(f"{path}: cue {number} is followed by a line that is not a valid timing "
                             f"({timing.group().strip()!r}; expected HH:MM:SS,mmm --> HH:MM:SS,mmm): fix it.")
        speaker, text = _speaker_and_text(event.plaintext)
        if not text:
            continue
        speaker = speaker or default_speaker
        if not speaker:
            raise ValueError(f"{path}: cue {number} has no speaker (no 'NAME:' prefix or <v NAME> tag): give "
                             "--speaker NAME.")
        cues.append(Cue(number, start, end, speaker, text))
    return cues


def _speaker_and_text(plaintext: str) -> tuple[str | None, str]:
    voice = _VOICE_TAG.search(plaintext)
    text = _SOUND_DESCRIPTION.sub(" ", html.unescape(_TAG.sub("", plaintext)))
    text = " ".join(text.split())
    prefix = _SPEAKER_PREFIX.fullmatch(text)
    if prefix:
        return (voice.group(1).strip() if voice else prefix.group(1)), prefix.group(2) or ""
    return (voice.group(1).strip() if voice else None), text


def video_duration(path: str | Path) -> float:
    """The video's length in seconds, from its container header (PyAV; nothing is decoded)."""
    check_regular_file(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path}: no video stream: INPUT is the VIDEO (its subtitles go in --subtitles).")
            if container.duration is not None:
                return container.duration / av.time_base
            stream = container.streams.video[0]
            return float(stream.duration * stream.time_base)
    except (av.FFmpegError, IndexError, TypeError) as error:
        raise ValueError(f"{path}: cannot read the video's duration ({error}).") from None


def subtitle_conversations(cues: Sequence[Cue], video: str | Path, duration: float, max_gap: float = DEFAULT_MAX_GAP,
                           max_utterances: int = DEFAULT_MAX_UTTERANCES,
                           subtitles: str | Path = "subtitles") -> list[tuple[list[int], list[dict]]]:
    """Consecutive cues -> conversations of the video, each (its cue numbers, its utterances), split where the
    silence between two cues exceeds `max_gap` seconds and after `max_utterances` cues. Each utterance is
    {"speaker", "text", "video", "start", "end"} (`inference.conversation_from_json`'s schema). A cue ending past the
    video's `duration` is refused naming the `subtitles` file and the cue."""
    if not max_gap > 0:
        raise ValueError(f"--max-gap must be more than 0 seconds, got {max_gap}.")
    if max_utterances < 1:
        raise ValueError(f"--max-utterances must be at least 1, got {max_utterances}.")
    conversations: list[tuple[list[int], list[dict]]] = []
    previous = None
    for cue in cues:
        if cue.end > duration + END_TOLERANCE:
            raise ValueError(f"{subtitles}: cue {cue.number} ends at {cue.end:.3f} s, past the end of {video} "
                             f"({duration:.3f} s).")
        if previous is None or cue.start - previous.end > max_gap or len(conversations[-1][0]) >= max_utterances:
            conversations.append(([], []))
        conversations[-1][0].append(cue.number)
        conversations[-1][1].append({"speaker": cue.speaker, "text": cue.text, "video": str(video),
                                     "start": cue.start, "end": cue.end})
        previous = cue
    return conversations


def read_subtitled_video(video: str | Path, subtitles: str | Path, speaker: str | None = None,
                         max_gap: float = DEFAULT_MAX_GAP,
                         max_utterances: int = DEFAULT_MAX_UTTERANCES) -> list[tuple[list[int], list[dict]]]:
    """A video and its subtitles -> its conversations (`subtitle_conversations`), every check made before a model is
    needed."""
    cues = read_cues(subtitles, speaker)
    return subtitle_conversations(cues, video, video_duration(video), max_gap, max_utterances, subtitles)


def predict_cues(model, processor, conversations: Sequence[tuple[list[int], list[dict]]]) -> list[dict]:
    """`read_subtitled_video`'s conversations -> one row per cue: `inference.predict_emotions`' row plus `cue`,
    `start` and `end` (seconds)."""
    rows = []
    for numbers, conversation in conversations:
        predicted = predict_emotions(model, processor, conversation)
        rows += [{"cue": number, "start": utterance["start"], "end": utterance["end"], **row}
                 for number, utterance, row in zip(numbers, conversation, predicted)]
    return rows


def annotate_subtitles(source: str | Path, cues_rows: Sequence[Mapping], output: str | Path) -> None:
    """`source`'s subtitles written to `output` in the same format, every cue's timing and markup unchanged, each
    predicted cue's text followed by its emotion and probability ("[joy 0.83]"; rows carry `cue`, `label`, `score`).
    Written beside `output` and renamed: never a half-written file."""
    subtitles = load_subtitles(source, keep_html_tags=True)
    for row in cues_rows:
        event = subtitles.events[row["cue"] - 1]
        event.text = f"{event.text} [{row['label']} {row['score']:.2f}]"
    write_text_atomically(Path(output), subtitles.to_string(subtitles.format))


__all__ = ["DEFAULT_MAX_GAP", "DEFAULT_MAX_UTTERANCES", "Cue", "annotate_subtitles", "load_subtitles", "predict_cues",
           "read_cues", "read_subtitled_video", "subtitle_conversations", "video_duration"]
