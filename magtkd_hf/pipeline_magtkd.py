"""`pipeline("emotion-recognition-in-conversation")`: an emotion for every utterance of one or more conversations.

Self-contained (no import of the package; its one relative import, `precision`, travels with it): every saved
end-to-end folder carries this file and names it in its config's `custom_pipelines`, so
`pipeline(model=folder, trust_remote_code=True)` works where magtkd-hf is not installed.
"""

from collections.abc import Mapping, Sequence

import torch
from transformers import Pipeline

from .precision import default_inference_dtype

TASK = "emotion-recognition-in-conversation"
# The task name under which saved folders register this file: another name than the package's registered task, so
# that with the package installed `pipeline(TASK, model=folder)` uses the package's code and never the folder's.
REMOTE_TASK = "magtkd-emotion-recognition-in-conversation"
SCORE_FUNCTIONS = ("softmax", "sigmoid", "none")


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


def _speakers_and_texts(conversation) -> list[tuple]:
    if isinstance(conversation, Mapping):  # a dataset row
        return list(zip(conversation["speakers"], conversation["texts"]))
    return [(utterance.get("speaker"), utterance.get("text")) for utterance in conversation]


class EmotionRecognitionInConversationPipeline(Pipeline):
    """
    Call with a conversation, a list of conversations or dataset rows. Returns, per conversation, one entry per
    utterance: `speaker`, `text`, `label` (the predicted emotion), `score` and `modalities` (those the utterance had:
    "text", and "audio"/"video" unless absent); with `top_k` (an int, or None for every
    class) also `scores`, the best `top_k` as `{"label", "score"}` in decreasing order. `function_to_apply`:
    "softmax" (default), "sigmoid" or "none" (raw logits). `batch_size` conversations are processed together.

    `dtype`: "auto" (`pipeline()`'s default) runs a float32 model in bfloat16 on GPUs and CPUs that compute it
    natively (`magtkd_hf.precision.default_inference_dtype`; 4x faster on an AVX512-BF16 CPU, 100 % equal emotions
    on the measured models); pass `dtype=torch.float32` to keep float32. Like the device, the cast is applied to the
    model in place.
    """

    _load_processor = True
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False

    def __init__(self, *args, dtype="auto", **kwargs):
        super().__init__(*args, **kwargs)
        if dtype in ("auto", None) and self.model.dtype == torch.float32:
            native = default_inference_dtype(self.device)
            if native != torch.float32:
                self.model.to(native)
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
                raise ValueError(f"function_to_apply must be one of {SCORE_FUNCTIONS}, got {function_to_apply!r}.")
            postprocess["function_to_apply"] = function_to_apply
        return {}, {}, postprocess

    def __call__(self, inputs, batch_size: int | None = None, **kwargs):
        conversations, single = as_conversations(inputs)
        _, _, postprocess_params = self._sanitize_parameters(**kwargs)
        size = batch_size or self._batch_size or 1
        results = []
        for start in range(0, len(conversations), size):
            chunk = conversations[start : start + size]
            outputs = self.forward(self.preprocess(chunk))
            results += [self.postprocess(output, **postprocess_params) for output in outputs]
        return results[0] if single else results

    def preprocess(self, conversations):
        return {"inputs": self.processor(list(conversations), return_tensors="pt"), "conversations": conversations}

    def _forward(self, model_inputs):
        inputs = model_inputs["inputs"]
        logits = self.model(**inputs).logits
        return [
            {
                "logits": logits[index, : len(_speakers_and_texts(conversation))].float(),
                "conversation": conversation,
                "modalities": _modalities(inputs, index),
            }
            for index, conversation in enumerate(model_inputs["conversations"])
        ]

    def forward(self, model_inputs, **forward_params):
        with torch.inference_mode():
            model_inputs["inputs"] = model_inputs["inputs"].to(self.device)
            return self._forward(model_inputs)

    def postprocess(self, model_outputs, top_k="unset", function_to_apply="softmax"):
        logits = model_outputs["logits"]
        if not bool(logits.isfinite().all()):
            raise ValueError("The model gave NaN or infinite scores; no emotion is reported.")
        scores = {"softmax": lambda x: x.softmax(-1), "sigmoid": torch.sigmoid, "none": lambda x: x}[function_to_apply](
            logits
        )
        id2label = self.model.config.id2label
        rows = []
        pairs = _speakers_and_texts(model_outputs["conversation"])
        modalities = model_outputs.get("modalities") or [["text", "audio", "video"]] * len(pairs)
        for (speaker, text), utterance_scores, used in zip(pairs, scores, modalities):
            order = utterance_scores.argsort(descending=True).tolist()
            row = {"speaker": speaker, "text": text, "label": id2label[order[0]], "score": float(utterance_scores[order[0]])}
            row["modalities"] = used
            if top_k != "unset":
                kept = order if top_k is None else order[:top_k]
                row["scores"] = [{"label": id2label[index], "score": float(utterance_scores[index])} for index in kept]
            rows.append(row)
        return rows


def _modalities(inputs, conversation: int) -> list[list[str]]:
    """The modalities of each utterance of one conversation of the batch, from the processor's presence flags
    (a processor without them required every modality)."""
    mine = (inputs["conversation_index"] == conversation).nonzero().flatten().tolist()
    flags = {modality: inputs.get(f"has_{modality}") for modality in ("audio", "video")}
    return [["text", *(m for m, has in flags.items() if has is None or bool(has[u]))] for u in mine]


def custom_pipelines_entry() -> dict:
    """The `custom_pipelines` entry of a saved end-to-end config (this module, the AutoModel class)."""
    return {
        REMOTE_TASK: {
            "impl": f"{__name__.rsplit('.', 1)[-1]}.{EmotionRecognitionInConversationPipeline.__name__}",
            "pt": ["AutoModel"],
            "tf": [],
            "type": "multimodal",
        }
    }
