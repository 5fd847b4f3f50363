"""Predict an emotion for every utterance of a conversation: a function, a JSON-file reader, and a pipeline task.

A conversation file (JSON) is either a list of utterances or `{"utterances": [...]}`; each utterance is an object with
`speaker` (str), `text` (str), optionally `video` (path to the utterance's clip, or to a longer video with
`start`/`end`), `audio` (a WAV/FLAC path; by default the video's sound track is used), `start` and `end` (seconds, to
cut the utterance out of a longer video). Relative paths are read from the file's folder. An utterance without video,
or without any sound, is predicted from what it has (each row's `modalities` says what that was).
"""

import copy
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from wcwidth import wcwidth

from .pipeline_magtkd import emotion_rows, refuse_non_finite_media, utterance_modalities

UTTERANCE_KEYS = {"speaker", "text", "video", "audio", "start", "end"}
MEDIA_KEYS = ("video", "audio")


def read_conversation_file(path: str | Path) -> list[dict]:
    """A conversation JSON file -> a list of utterance mappings the processor takes, media paths made absolute."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"Cannot read the conversation file {path}: {error}") from error
    return conversation_from_json(data, str(path), path.parent)


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
    return conversation


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


def load_emotion_model(
    model_dir: str | Path, device: str | torch.device | None = None, trust_remote_code: bool = False
):
    """(model, processor) from a folder saved by magtkd-hf, in eval mode on `device`. No code from the folder runs
    unless `trust_remote_code=True`; weights that do not fit the model are refused (see `magtkd_hf.loading`)."""
    from .loading import load_model, load_processor, quiet_loading

    with quiet_loading():
        model = load_model(model_dir, trust_remote_code=trust_remote_code).eval()
        processor = load_processor(model_dir, trust_remote_code=trust_remote_code)
    processor.check_fits_model(model)
    return model.to(device or "cpu"), processor


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
