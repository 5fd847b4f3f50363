"""`pipeline("emotion-recognition-in-conversation")`, and the one row schema every inference path gives.

Self-contained (no import of the package): every saved end-to-end folder carries this file and names it in its
config's `custom_pipelines`, so `pipeline(model=folder, trust_remote_code=True)` works where magtkd-hf is not
installed. `predict_emotions`, `MagtkdStream` and dataset prediction build their rows with `emotion_rows` below.
"""

from collections.abc import Callable, Mapping, Sequence

import torch
from transformers import Pipeline

TASK = "emotion-recognition-in-conversation"
SCORE_FUNCTIONS = {"softmax": lambda logits: logits.softmax(-1), "sigmoid": torch.sigmoid, "none": lambda x: x}
MEDIA_INPUTS = {"input_values": "audio", "pixel_values": "video"}
ROW_MEDIA_COLUMNS = {"video_paths": "video", "audio_paths": "audio", "start_times": "start", "end_times": "end"}


def _is_utterance(value) -> bool:
    return isinstance(value, Mapping) and "text" in value and "texts" not in value


def as_conversations(inputs) -> tuple[list, bool]:
    """The pipeline's inputs -> (conversations, whether a single one was given). A conversation is a list of
    utterance mappings, `{"utterances": [...]}` or a dataset row (`texts`, `speakers`, media columns)."""
    if isinstance(inputs, Mapping):
        return [inputs["utterances"] if "utterances" in inputs else inputs], True
    if isinstance(inputs, Sequence) and inputs and _is_utterance(inputs[0]):
        return [list(inputs)], True
    if isinstance(inputs, Sequence) and inputs:
        return [item["utterances"] if isinstance(item, Mapping) and "utterances" in item else item for item in inputs], False
    raise ValueError(
        "Give a conversation (a list of utterance mappings with 'speaker' and 'text', or {'utterances': [...]}, or a "
        f"dataset row), or a list of conversations; got {type(inputs).__name__}."
    )


def row_utterances(conversation) -> list[dict]:
    """A conversation as utterance mappings (`speaker`, `text`, media): a dataset row is turned into them."""
    if not isinstance(conversation, Mapping):
        return list(conversation)
    utterances = [{"speaker": s, "text": t} for s, t in zip(conversation["speakers"], conversation["texts"])]
    for column, key in ROW_MEDIA_COLUMNS.items():
        for utterance, value in zip(utterances, conversation.get(column) or []):
            utterance[key] = value
    return utterances


def utterance_modalities(inputs, conversation: int = 0) -> list[list[str]]:
    """The modalities of each utterance of the processor's `conversation`-th conversation: text always, audio and
    video where the processor's `has_audio`/`has_video` flags say so (a processor without the flags required both)."""
    positions = (inputs["conversation_index"] == conversation).nonzero().flatten().tolist()
    flags = {modality: inputs.get(f"has_{modality}") for modality in ("audio", "video")}
    return [["text", *(m for m, has in flags.items() if has is None or bool(has[p]))] for p in positions]


def refuse_non_finite_media(inputs, conversations: Sequence[Sequence[Mapping]], where: Callable[[int, int], str]):
    """Refuse NaN or infinite samples or pixels in the processor's output, naming the utterance (`where(conversation,
    utterance)`) and its file."""
    for key, medium in MEDIA_INPUTS.items():
        values = inputs.get(key)
        if values is None or values.numel() == 0:
            continue
        bad = (~values.isfinite()).flatten(1).any(dim=1).nonzero().flatten().tolist()
        if bad:
            conversation, index = int(inputs["conversation_index"][bad[0]]), int(inputs["utterance_index"][bad[0]])
            utterance = conversations[conversation][index]
            source = utterance.get("audio") if medium == "audio" and utterance.get("audio") else utterance.get("video")
            raise ValueError(
                f"{where(conversation, index)} ({utterance.get('speaker')}: {utterance.get('text')!r}): the {medium} "
                f"from {source} holds NaN or infinite values."
            )


def emotion_rows(
    utterances: Sequence[Mapping],
    logits: torch.Tensor,
    id2label: Mapping[int, str],
    modalities: Sequence[Sequence[str]],
    where: str = "the conversation",
    top_k="unset",
    function_to_apply: str = "softmax",
) -> list[dict]:
    """
    One conversation's logits (U, C) -> one row per utterance: `speaker`, `text`, `label` (the predicted emotion),
    `score` (its score by `function_to_apply`), `probabilities` (every emotion's softmax probability) and
    `modalities`; with `top_k` (an int, or None for every class) also `scores`, the best `top_k` as `{"label",
    "score"}` in decreasing order. NaN or infinite logits are refused, naming `where`.
    """
    bad = (~logits.isfinite()).any(dim=-1).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"{where}, utterances {bad}: the model gave NaN or infinite scores; no emotion is reported.")
    logits = logits.float()
    scores, probabilities = SCORE_FUNCTIONS[function_to_apply](logits), logits.softmax(-1)
    rows = []
    for utterance, utterance_scores, probs, used in zip(utterances, scores, probabilities, modalities):
        order = utterance_scores.argsort(descending=True).tolist()
        row = {"speaker": str(utterance["speaker"]), "text": utterance["text"], "label": id2label[order[0]],
               "score": float(utterance_scores[order[0]]),
               "probabilities": {id2label[i]: float(value) for i, value in enumerate(probs)}, "modalities": list(used)}
        if top_k != "unset":
            kept = order if top_k is None else order[:top_k]
            row["scores"] = [{"label": id2label[i], "score": float(utterance_scores[i])} for i in kept]
        rows.append(row)
    return rows


class EmotionRecognitionInConversationPipeline(Pipeline):
    """
    Call with a conversation, a list of conversations or dataset rows. Returns, per conversation, one row per
    utterance (see `emotion_rows`): `speaker`, `text`, `label`, `score`, `probabilities`, `modalities`, and with
    `top_k` also `scores`. `function_to_apply`: "softmax" (default), "sigmoid" or "none" (raw logits).
    `batch_size` and `num_workers` work as in every pipeline (media are decoded in `preprocess`, hence in the
    DataLoader's workers); the model runs one conversation at a time, in the dtype it was loaded with.
    """

    _load_processor = True
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        check = getattr(self.processor, "check_fits_model", None)
        if check is not None:
            check(self.model)

    def _sanitize_parameters(self, top_k="unset", function_to_apply=None, **unknown):
        if unknown:
            raise TypeError(f"Unknown arguments {sorted(unknown)}; known: top_k, function_to_apply, batch_size.")
        postprocess = {}
        if top_k != "unset":
            if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
                raise ValueError(f"top_k must be a positive int or None, got {top_k!r}.")
            postprocess["top_k"] = top_k
        if function_to_apply is not None:
            if function_to_apply not in SCORE_FUNCTIONS:
                raise ValueError(f"function_to_apply must be one of {tuple(SCORE_FUNCTIONS)}, got {function_to_apply!r}.")
            postprocess["function_to_apply"] = function_to_apply
        return {}, {}, postprocess

    def __call__(self, inputs, **kwargs):
        conversations, single = as_conversations(inputs)
        results = super().__call__(conversations, **kwargs)
        return results[0] if single else results

    def preprocess(self, conversation):
        utterances = row_utterances(conversation)
        inputs = self.processor([conversation], return_tensors="pt")
        refuse_non_finite_media(inputs, [utterances], lambda _, index: f"the conversation, utterance {index}")
        return {"inputs": inputs, "utterances": utterances, "modalities": utterance_modalities(inputs)}

    def _forward(self, model_inputs):
        if isinstance(model_inputs["inputs"], list):  # batch_size > 1: the base class collated items into lists
            outputs = [self._forward({key: value[i] for key, value in model_inputs.items()})
                       for i in range(len(model_inputs["inputs"]))]
            return {key: [output[key] for output in outputs] for key in outputs[0]}
        logits = self.model(**model_inputs["inputs"]).logits[0, : len(model_inputs["utterances"])]
        return {"logits": logits, "utterances": model_inputs["utterances"], "modalities": model_inputs["modalities"]}

    def postprocess(self, model_outputs, top_k="unset", function_to_apply="softmax"):
        logits = model_outputs["logits"]
        return emotion_rows(model_outputs["utterances"], logits.reshape(-1, logits.shape[-1]),
                            self.model.config.id2label, model_outputs["modalities"], top_k=top_k,
                            function_to_apply=function_to_apply)


def custom_pipelines_entry() -> dict:
    """The `custom_pipelines` entry of a saved end-to-end config (this module, the AutoModel class)."""
    return {
        TASK: {
            "impl": f"{__name__.rsplit('.', 1)[-1]}.{EmotionRecognitionInConversationPipeline.__name__}",
            "pt": ["AutoModel"],
            "tf": [],
            "type": "multimodal",
        }
    }
