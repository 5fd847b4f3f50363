"""Predict an emotion for every utterance of a conversation: a function, a JSON-file reader, and a pipeline task.

A conversation file (JSON) is either a list of utterances or `{"utterances": [...]}`; each utterance is an object with
`speaker` (str), `text` (str), `video` (path to the utterance's clip, or to a longer video with `start`/`end`),
optionally `audio` (a WAV/FLAC path; by default the video's sound track is used), `start` and `end` (seconds, to cut
the utterance out of a longer video). Relative paths are read from the file's folder.
"""

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from .pipeline_magtkd import EmotionRecognitionInConversationPipeline  # noqa: F401 (the package's pipeline)

UTTERANCE_KEYS = {"speaker", "text", "video", "audio", "start", "end"}
MEDIA_KEYS = ("video", "audio")


def read_conversation_file(path: str | Path) -> list[dict]:
    """A conversation JSON file -> a list of utterance mappings the processor takes, media paths made absolute."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"Cannot read the conversation file {path}: {error}") from error
    utterances = data.get("utterances") if isinstance(data, Mapping) else data
    if not isinstance(utterances, list) or not utterances:
        raise ValueError(f"{path}: expected a non-empty list of utterances (or {{'utterances': [...]}}).")
    conversation = []
    for index, utterance in enumerate(utterances):
        if not isinstance(utterance, Mapping) or not {"speaker", "text"} <= set(utterance):
            raise ValueError(f"{path}: utterance {index} needs at least 'speaker' and 'text'.")
        unknown = set(utterance) - UTTERANCE_KEYS
        if unknown:
            raise ValueError(f"{path}: utterance {index} has unknown keys {sorted(unknown)}; known: {sorted(UTTERANCE_KEYS)}.")
        _check_field_types(path, index, utterance)
        resolved = dict(utterance)
        for key in MEDIA_KEYS:
            if resolved.get(key) is not None:
                resolved[key] = str((path.parent / resolved[key]).resolve())
        conversation.append(resolved)
    return conversation


def _check_field_types(path: Path, index: int, utterance: Mapping) -> None:
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
    from .loading import load_model, load_processor

    model = load_model(model_dir, trust_remote_code=trust_remote_code).eval()
    processor = load_processor(model_dir, trust_remote_code=trust_remote_code)
    processor.check_fits_model(model)
    return model.to(device or "cpu"), processor


@torch.inference_mode()
def predict_emotions(model, processor, conversation: Sequence[Mapping]) -> list[dict]:
    """
    One conversation (a list of utterance mappings) -> per utterance: speaker, text, the predicted emotion, its
    probability and the probability of every emotion.
    """
    inputs = processor(list(conversation), return_tensors="pt")
    check_finite_inputs(inputs, conversation)
    logits = model(**inputs.to(model.device)).logits[0, : len(conversation)]
    check_finite_logits(logits, conversation)
    return _rows(conversation, logits.float().softmax(-1), model.config.id2label)


_MEDIA_INPUTS = {"input_values": "audio", "pixel_values": "video"}


def check_finite_inputs(inputs, conversation: Sequence[Mapping], name: str = "the conversation") -> None:
    """Refuse NaN or infinite samples or pixels, naming the utterance and its file (one conversation's inputs)."""
    for key, medium in _MEDIA_INPUTS.items():
        values = inputs.get(key)
        if values is None:
            continue
        bad = (~values.isfinite()).flatten(1).any(dim=1).nonzero().flatten().tolist()
        if bad:
            utterance = conversation[bad[0]]
            source = utterance.get("audio") if medium == "audio" and utterance.get("audio") else utterance.get("video")
            raise ValueError(
                f"{name}, utterance {bad[0]} ({utterance.get('speaker')}: {utterance.get('text')!r}): the {medium} "
                f"from {source} holds NaN or infinite values."
            )


def check_finite_logits(logits, conversation: Sequence[Mapping], name: str = "the conversation") -> None:
    bad = (~logits.isfinite()).any(dim=-1).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"{name}, utterances {bad}: the model gave NaN or infinite scores; no emotion is reported.")


def _rows(conversation, probabilities, id2label) -> list[dict]:
    rows = []
    for utterance, probs in zip(conversation, probabilities):
        best = int(probs.argmax())
        rows.append({
            "speaker": str(utterance["speaker"]),
            "text": utterance["text"],
            "emotion": id2label[best],
            "probability": float(probs[best]),
            "probabilities": {id2label[index]: float(value) for index, value in enumerate(probs)},
        })
    return rows


def format_predictions(rows: Sequence[Mapping], text_width: int = 60) -> str:
    """A plain-text table: speaker, text, predicted emotion, probability."""
    speaker_width = max([len("speaker"), *(len(row["speaker"]) for row in rows)])
    lines = [f"{'speaker':<{speaker_width}}  {'text':<{text_width}}  {'emotion':<9}  prob"]
    for row in rows:
        text = row["text"] if len(row["text"]) <= text_width else row["text"][: text_width - 3] + "..."
        lines.append(f"{row['speaker']:<{speaker_width}}  {text:<{text_width}}  {row['emotion']:<9}  "
                     f"{row['probability']:.2f}")
    return "\n".join(lines)
