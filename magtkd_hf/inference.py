"""Predict an emotion for every utterance of a conversation: a function, a JSON-file reader, and a pipeline task.

A conversation file (JSON) is either a list of utterances or `{"utterances": [...]}`; each utterance is an object with
`speaker` (str), `text` (str), optionally `video` (path to the utterance's clip, or to a longer video with
`start`/`end`), `audio` (a WAV/FLAC path; by default the video's sound track is used), `start` and `end` (seconds, to
cut the utterance out of a longer video). Relative paths are read from the file's folder. An utterance without video,
or without any sound, is predicted from what it has (each row's `modalities` says what that was).
"""

import copy
import json
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from wcwidth import wcwidth

from .pipeline_magtkd import emotion_rows, refuse_non_finite_media, utterance_modalities

UTTERANCE_KEYS = {"speaker", "text", "video", "audio", "start", "end"}
MEDIA_KEYS = ("video", "audio")


PROCESSOR_FILE = "processor_config.json"
_SPECIAL_FILES = {stat.S_ISDIR: "folder", stat.S_ISFIFO: "FIFO (named pipe)", stat.S_ISCHR: "character device",
                  stat.S_ISBLK: "block device", stat.S_ISSOCK: "socket"}


def read_conversation_file(path: str | Path) -> list[dict]:
    """A conversation JSON file -> a list of utterance mappings the processor takes, media paths made absolute."""
    path = Path(path)
    check_regular_file(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ValueError(f"Cannot read the conversation file {path}: {error}") from error
    return conversation_from_json(parse_json(data, str(path)), str(path), path.parent)


def check_regular_file(path: str | Path) -> None:
    """Refuse at once what is not a regular file, naming what it is: reading a FIFO blocks until a writer comes, a
    device such as /dev/zero never ends."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file.") from None
    for is_kind, kind in _SPECIAL_FILES.items():
        if is_kind(mode):
            raise ValueError(f"{path} is a {kind}, not a regular file.")


def parse_json(text: str | bytes, where: str):
    """UTF-8 bytes or text -> `json.loads`, with one-line errors naming `where`: not UTF-8, not JSON, or nested deeper
    than Python's recursion limit (about 1,000 levels; a conversation has 3)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"{where}: not UTF-8 text (byte {text[error.start]:#04x} at position {error.start}).") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: not JSON ({error}).") from None
    except RecursionError:
        raise ValueError(f"{where}: JSON nested too deeply (a conversation is {{'utterances': [{{...}}, ...]}}).") from None


def conversation_from_json(data, where: str, base_dir: Path) -> list[dict]:
    """A decoded conversation (a list of utterances or `{"utterances": [...]}`) -> checked utterance mappings, media
    paths resolved in `base_dir`; errors start with `where` (the file, or the file and line)."""
    utterances = data.get("utterances") if isinstance(data, Mapping) else data
    if not isinstance(utterances, list) or not utterances:
        raise ValueError(f"{where}: expected a non-empty list of utterances (or {{'utterances': [...]}}).")
    conversation = []
    for index, utterance in enumerate(utterances):
        if not isinstance(utterance, Mapping) or not {"speaker", "text"} <= set(utterance):
            raise ValueError(f"{where}: utterance {index} needs at least 'speaker' and 'text'.")
        unknown = set(utterance) - UTTERANCE_KEYS
        if unknown:
            raise ValueError(f"{where}: utterance {index} has unknown keys {sorted(unknown)}; known: {sorted(UTTERANCE_KEYS)}.")
        _check_field_types(where, index, utterance)
        resolved = dict(utterance)
        for key in MEDIA_KEYS:
            if resolved.get(key) is not None:
                resolved[key] = str((base_dir / resolved[key]).resolve())
        conversation.append(resolved)
    refuse_mixed_speaker_kinds(where, [utterance["speaker"] for utterance in conversation])
    return conversation


def refuse_mixed_speaker_kinds(where: str, speakers: Sequence) -> None:
    """Speakers are all names or all integer ids: the prompt writes `1` and `"1"` alike, so mixing the two kinds
    would merge distinct speakers silently."""
    for index, speaker in enumerate(speakers):
        if isinstance(speaker, str) != isinstance(speakers[0], str):
            raise ValueError(f"{where}: utterance {index}: speaker {speaker!r} is {_speaker_kind(speaker)} but utterance "
                             f"0's ({speakers[0]!r}) is {_speaker_kind(speakers[0])}; use one kind in a conversation.")


def _speaker_kind(speaker) -> str:
    return "a name" if isinstance(speaker, str) else "an integer id"


def _check_field_types(path: Path | str, index: int, utterance: Mapping) -> None:
    """Transcripts and paths are strings, speakers names or integer ids: anything else is refused here, naming the
    file and the utterance, rather than becoming a speaker called "None" or failing later."""
    if not isinstance(utterance["text"], str) or not utterance["text"].strip():
        raise ValueError(f"{path}: utterance {index}: 'text' must be a non-empty string, got {utterance['text']!r}.")
    speaker = utterance["speaker"]
    if not (isinstance(speaker, str) and speaker.strip()) and (not isinstance(speaker, int) or isinstance(speaker, bool)):
        raise ValueError(f"{path}: utterance {index}: 'speaker' must be a non-empty name or an integer id, got {speaker!r}.")
    for key in MEDIA_KEYS:
        if utterance.get(key) is not None and not isinstance(utterance[key], str):
            raise ValueError(f"{path}: utterance {index}: '{key}' must be a file path (a string), got {utterance[key]!r}.")
    for key in ("speaker", "text", *MEDIA_KEYS):
        if isinstance(utterance.get(key), str):
            _refuse_lone_surrogates(utterance[key], f"{path}: utterance {index}: '{key}'")


def _refuse_lone_surrogates(text: str, where: str) -> None:
    """A JSON escape such as \\ud800 decodes to half a UTF-16 pair: no character, and no tokenizer takes it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"{where} is not valid Unicode: a lone surrogate {text[error.start]!r} at character "
                         f"{error.start}.") from None


def load_emotion_model(
    model_dir: str | Path, device: str | torch.device | None = None, trust_remote_code: bool = False, dtype=None
):
    """(model, processor) from a folder saved by magtkd-hf, in eval mode on `device`, in `dtype` (`precision.
    resolve_dtype`'s choices; None: as saved). No code from the folder runs unless `trust_remote_code=True`; weights
    that do not fit the model are refused (see `magtkd_hf.loading`)."""
    from .precision import resolve_dtype

    from .loading import load_model, load_processor, quiet_loading
    from .modeling_magtkd import MagtkdForEmotionRecognition

    folder = Path(model_dir)
    if (folder / "config.json").is_file() and not (folder / PROCESSOR_FILE).is_file():
        raise ValueError(f"{folder}: no processor ({PROCESSOR_FILE}) beside the model to read conversations with: give "
                         "an end-to-end folder saved with its processor (`train all`'s OUTPUT_DIR/model); a fusion-only "
                         "folder is scored on features with `magtkd-hf evaluate FOLDER --features FEATURES_DIR`.")
    with quiet_loading():
        model = load_model(model_dir, expected=MagtkdForEmotionRecognition, trust_remote_code=trust_remote_code)
        processor = load_processor(model_dir, trust_remote_code=trust_remote_code)
    try:
        processor.check_fits_model(model.eval())
    except ValueError as error:
        raise ValueError(f"{folder}: {error}") from None
    dtype = resolve_dtype(dtype, device or "cpu")
    return model.to(device or "cpu", dtype), processor


@torch.inference_mode()
def predict_emotions(model, processor, conversation: Sequence[Mapping]) -> list[dict]:
    """
    One conversation (a list of utterance mappings) -> one row per utterance, the pipeline's (`emotion_rows`):
    `speaker`, `text`, `label` (the predicted emotion), `score` (its probability), `probabilities` (every emotion's)
    and `modalities` (those it was predicted from: `["text", "audio", "video"]`, less the absent ones).

    A long conversation shows a progress bar over its media decoding on stderr (a terminal only; see
    `processors.model_inputs.PROGRESS_MIN_UTTERANCES`); the inputs, hence the predictions, are the same.
    """
    conversation = list(conversation)
    inputs = _with_progress(processor)([conversation], return_tensors="pt")
    refuse_non_finite_media(inputs, [conversation], lambda _, index: f"the conversation, utterance {index}")
    logits = model(**inputs.to(model.device)).logits[0, : len(conversation)]
    return emotion_rows(conversation, logits, model.config.id2label, utterance_modalities(inputs))


def _with_progress(processor):
    """A shallow copy of the processor with `show_progress` on (its tokenizer, feature extractor and image processor
    shared): the caller's processor is not changed, so threads sharing it (the demo) do not race on the flag and a
    later `save_pretrained` or batch call of it stays silent. A processor whose code predates the flag ignores it."""
    copied = copy.copy(processor)
    copied.show_progress = True
    return copied


def format_predictions(rows: Sequence[Mapping], text_width: int = 60, true_emotions: Sequence[str] | None = None) -> str:
    """A plain-text table: speaker, text, (the true emotion, when given,) predicted emotion, probability.

    Columns are padded and cut by terminal display width (`display_width`), not by character count, so that a row
    of CJK text or emoji (two columns per character) does not push its emotion column to the right.
    """
    speaker_width = max([display_width("speaker"), *(display_width(row["speaker"]) for row in rows)])
    truth = f"{'true':<9}  " if true_emotions is not None else ""
    lines = [f"{pad_to_width('speaker', speaker_width)}  {pad_to_width('text', text_width)}  {truth}{'emotion':<9}  prob"]
    for index, row in enumerate(rows):
        text = truncate_to_width(row["text"], text_width)
        truth = f"{true_emotions[index]:<9}  " if true_emotions is not None else ""
        lines.append(f"{pad_to_width(row['speaker'], speaker_width)}  {pad_to_width(text, text_width)}  {truth}"
                     f"{row['label']:<9}  {row['score']:.2f}")
    return "\n".join(lines)


def display_width(text: str) -> int:
    """Terminal columns `text` takes (`wcwidth`: CJK and most emoji 2, combining and control characters 0)."""
    return sum(max(wcwidth(char), 0) for char in text)


def pad_to_width(text: str, width: int) -> str:
    """`text` followed by spaces up to `width` display columns (unchanged when already that wide)."""
    return text + " " * max(0, width - display_width(text))


def truncate_to_width(text: str, width: int, ellipsis: str = "...") -> str:
    """`text` if it fits in `width` display columns, else its longest prefix that fits with `ellipsis` after it (a
    wide character that would straddle the limit is dropped; the result may then be one column narrower)."""
    if display_width(text) <= width:
        return text
    room = max(0, width - display_width(ellipsis))
    kept, used = [], 0
    for char in text:
        used += max(wcwidth(char), 0)
        if used > room:
            break
        kept.append(char)
    return "".join(kept) + ellipsis
