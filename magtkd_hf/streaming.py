"""The emotion of the latest utterance as a conversation unfolds (`MagtkdStream`), and the fusion's online logits over
a batch of conversations (`online_logits`: each utterance's prediction from its prefix only).

A stream keeps every earlier utterance's encoder features, so a new utterance costs one pass of each encoder (its text
prompt built from the history, its audio and video alone) and one fusion pass over the conversation so far, not a
re-run of every encoder over the whole conversation.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from contextlib import contextmanager

import torch

from .configuration_magtkd import MODALITIES
from .inference import refuse_mixed_speaker_kinds
from .pipeline_magtkd import emotion_rows, refuse_non_finite_media, utterance_modalities

CAUSAL, PREFIX = "causal", "prefix"


class MagtkdStream:
    """
    Emotion recognition utterance by utterance: `stream.add(utterance)` returns the new utterance's emotion at once.

    `utterance` is one mapping as `predict_emotions` takes them: `speaker`, `text`, `video` and/or `audio`, optional
    `start`/`end` seconds. The row returned is predict's (speaker, text, label, score, probabilities, modalities) plus
    `index` (its position in the conversation) and `context`:

    - "causal": the model's fusion is causal (`config.fusion_model_config.causal`), every utterance attends only to
      itself and earlier ones, so the row equals what `predict_emotions` gives that utterance on the whole
      conversation, whatever comes later;
    - "prefix": the paper's bidirectional fusion; the row is the emotion computed from the conversation up to this
      utterance. `predict_emotions` on the finished conversation may differ, as later utterances change it.

    `stream.history` holds the rows so far, `stream.reset()` starts a new conversation. An utterance that fails
    (unreadable media, NaN, too many speakers) raises and leaves the stream as it was. Runs under
    `torch.inference_mode()` on the model's device; the model is used as it is (put it in eval mode, as
    `load_emotion_model` does).
    """

    def __init__(self, model, processor):
        processor.check_fits_model(model)
        self.model = model
        self.processor = processor
        self.causal = bool(getattr(model.config.fusion_model_config, "causal", False))
        self.context = CAUSAL if self.causal else PREFIX
        if not self.causal:
            warnings.warn(
                "The model's fusion is not causal: each streamed emotion is computed from the conversation up to its "
                "utterance (context 'prefix'), and may differ from predicting the finished conversation.",
                UserWarning,
                stacklevel=2,
            )
        self.reset()

    def reset(self) -> None:
        """Forget the conversation: the next utterance starts a new one."""
        self._dialogue: list[dict] = []  # speaker and text of every utterance so far: the prompts' history
        self._features: dict[str, list[torch.Tensor]] = {modality: [] for modality in MODALITIES}
        self._rows: list[dict] = []
        # Per utterance, whether it has audio / video (a processor without presence flags: always).
        self._present: dict[str, list[bool]] = {"audio": [], "video": []}
        self.last_logits: torch.Tensor | None = None  # the latest utterance's logits (C,), on the model's device

    @property
    def history(self) -> list[dict]:
        """The rows returned so far, in order (copies)."""
        return [dict(row) for row in self._rows]

    def __len__(self) -> int:
        return len(self._rows)

    @torch.inference_mode()
    def add(self, utterance: Mapping) -> dict:
        """The next utterance of the conversation -> its emotion row (see the class docstring)."""
        index = len(self._rows)
        _check_utterance(utterance, index, self._dialogue)
        dialogue = [*self._dialogue, {"speaker": utterance["speaker"], "text": utterance["text"]}]
        text_inputs, speaker_ids = self._text_inputs(dialogue, index)
        media_inputs = self._media_inputs(utterance, index)
        features = self.encode(text_inputs, media_inputs)
        logits = self.fuse(features, speaker_ids, media_inputs)
        where = f"utterance {index} of the stream ({utterance['speaker']}: {utterance['text']!r})"
        row = emotion_rows([utterance], logits[None], self.model.config.id2label,
                           utterance_modalities(media_inputs), where=where)[0]
        row.update(index=index, context=self.context)
        # Kept only now that everything succeeded: a failed utterance leaves the stream unchanged.
        self._dialogue = dialogue
        for modality in MODALITIES:
            self._features[modality].append(features[modality])
        for modality, flags in self._present.items():
            flags.append(_present(media_inputs, modality))
        self._rows.append(row)
        self.last_logits = logits
        return dict(row)

    def _text_inputs(self, dialogue: list[dict], index: int):
        """The new utterance's prompt (its history: earlier speakers and texts) and the speaker ids so far (1, n).
        The whole prefix is processed so that every speaker mode indexes the speakers as for the full conversation."""
        with _naming(index):
            processed = self.processor(dialogue, modalities=("text",), return_tensors="pt")
        real = processed["attention_mask"][-1].bool()
        # The last prompt alone, its left padding dropped: the text encoder reads the mask token at the last position.
        text_inputs = {
            "input_ids": processed["input_ids"][-1:, real],
            "attention_mask": processed["attention_mask"][-1:, real],
        }
        return text_inputs, processed["speaker_ids"]

    def _media_inputs(self, utterance: Mapping, index: int) -> dict:
        """The new utterance's audio and video inputs, processed alone (each utterance's media are independent)."""
        with _naming(index):
            processed = self.processor([dict(utterance)], modalities=("audio", "video"), return_tensors="pt")
        refuse_non_finite_media(processed, [[utterance]], lambda *_: f"utterance {index} of the stream")
        return processed

    def encode(self, text_inputs: Mapping, media_inputs: Mapping) -> dict[str, torch.Tensor]:
        """One pass of each encoder over the new utterance -> {modality: (1, H) feature}, by the model's own rule: an
        absent audio or video (the processor's `has_audio`/`has_video` 0) is not encoded but zeros, and the fusion is
        told it is absent."""
        device = self.model.device
        inputs = {
            "text": {name: value.to(device) for name, value in text_inputs.items()},
            "audio": {"input_values": media_inputs["input_values"].to(device),
                      "attention_mask": media_inputs["audio_attention_mask"].to(device)},
            "video": {"pixel_values": media_inputs["pixel_values"].to(device)},
        }
        present = {modality: media_inputs.get(f"has_{modality}") for modality in ("audio", "video")}
        return self.model._utterance_features(dict.fromkeys(MODALITIES), inputs, present)

    def fuse(self, features: Mapping[str, torch.Tensor], speaker_ids: torch.Tensor, media_inputs=None) -> torch.Tensor:
        """The fusion over the cached features and the new ones -> the new utterance's logits (C,)."""
        device = self.model.device
        every = {
            f"{modality}_features": torch.cat([*self._features[modality], features[modality]])
            for modality in MODALITIES
        }
        if media_inputs is not None and any(f"has_{modality}" in media_inputs for modality in self._present):
            # The presence flags exist (a processor and model with missing-modality support): pass them all along.
            for modality, flags in self._present.items():
                every[f"has_{modality}"] = torch.tensor([*flags, _present(media_inputs, modality)], device=device)
        speaker_ids = speaker_ids.to(device)
        output = self.model(**every, speaker_ids=speaker_ids, utterance_mask=torch.ones_like(speaker_ids))
        return output.logits[0, -1]


def _present(media_inputs: Mapping, modality: str) -> bool:
    """Whether the one processed utterance has `modality` (the rule of `utterance_modalities`)."""
    return modality in utterance_modalities(media_inputs)[0]


def _check_utterance(utterance, index: int, dialogue: list[dict]) -> None:
    if not isinstance(utterance, Mapping) or "speaker" not in utterance or "text" not in utterance:
        raise ValueError(f"utterance {index} of the stream: expected a mapping with at least 'speaker' and 'text'.")
    refuse_mixed_speaker_kinds("the stream", [*(earlier["speaker"] for earlier in dialogue), utterance["speaker"]])


@contextmanager
def _naming(index: int):
    """Re-raise the processor's input errors (which say "conversation #0", the processor's view of the call) with the
    utterance's place in the stream."""
    from .processors.prompt import MagtkdInputError

    try:
        yield
    except MagtkdInputError as error:
        raise MagtkdInputError(f"utterance {index} of the stream: {error}") from error


@torch.inference_mode()
def online_logits(fusion_model, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """
    The fusion's online predictions over a batch of right-padded conversations (`MagtkdFusionModel` inputs:
    `text_features`, `audio_features`, `video_features` (B, N, H), `speaker_ids` and `attention_mask` (B, N)):
    utterance i's logits come from the fusion run on utterances 0..i of its conversation alone. (B, N, C), zeros
    at padding. Equal to the offline logits for a causal fusion; one fusion pass per prefix length otherwise.
    """
    mask = batch.get("attention_mask")
    speaker_ids = batch["speaker_ids"]
    mask = torch.ones_like(speaker_ids) if mask is None else mask.to(speaker_ids.device)
    lengths = mask.sum(dim=1)
    if not bool((mask.bool() == (torch.arange(mask.shape[1], device=mask.device)[None] < lengths[:, None])).all()):
        raise ValueError("online_logits needs right-padded conversations (attention_mask 1...1 0...0 in every row).")
    features = {name: batch[name] for name in ("text_features", "audio_features", "video_features")}
    logits = None
    for end in range(1, int(lengths.max()) + 1):
        # Every conversation at least `end` long, cut to its first `end` utterances: one fusion call per length.
        rows = (lengths >= end).nonzero().flatten()
        output = fusion_model(
            **{name: value[rows, :end] for name, value in features.items()},
            speaker_ids=speaker_ids[rows, :end],
            attention_mask=mask[rows, :end],
        )
        last = output.logits[:, end - 1]
        if logits is None:
            logits = last.new_zeros(*mask.shape, last.shape[-1])
        logits[rows, end - 1] = last
    return logits


class OnlineFusion(torch.nn.Module):
    """A fusion model whose forward gives `online_logits` (for evaluation loops that read `model(**batch).logits`)."""

    def __init__(self, fusion_model):
        super().__init__()
        self.fusion_model = fusion_model

    def forward(self, labels=None, return_dict=None, **batch):
        from .modeling_magtkd_fusion import MagtkdFusionOutput

        return MagtkdFusionOutput(logits=online_logits(self.fusion_model, batch))


__all__ = ["MagtkdStream", "OnlineFusion", "online_logits"]
