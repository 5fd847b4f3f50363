"""MagtkdProcessor: conversations -> inputs of the three MAGTKD encoders + conversation structure.

This file travels as remote code with every saved processor folder, so it imports its
siblings relatively (`.prompt`, `.media`) and nothing from `magtkd_hf`.
"""

from __future__ import annotations

import copy
import math
import numbers
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .media import (
    FRAME_SELECTIONS,
    MediaError,
    TimeWindow,
    frames_to_pixel_values_processor,
    frames_to_pixel_values_torch,
    load_audio,
    read_video_frames,
    torch_path_supported,
    zero_mean_unit_variance,
)
from .prompt import (
    MAX_SPEAKERS,
    SPEAKER_MODES,
    TOKENIZATION_MODES,
    MagtkdInputError,
    build_prompts,
    encode_prompts,
    first_appearance_indices,
    global_map_indices,
    left_pad,
    load_speaker_map,
    register_speaker_tokens,
    released_backend,
    released_iemocap_speaker_indices,
)

MODALITIES = ("text", "audio", "video")
IMAGE_BACKENDS = ("torch", "image_processor")
TIME_WINDOW_CHOICES = ("auto", True, False)
AUDIO_MODES = ("default", "released")
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
IGNORE_INDEX = -100


@dataclass
class Utterance:
    """One utterance, normalised from a mapping or a dataset row."""

    speaker: str
    text: Any
    audio: Any = None
    video: str | None = None
    window: TimeWindow | None = None
    label: int | None = None
    name: str = ""


@dataclass
class Conversation:
    name: str
    utterances: list[Utterance]
    previous_speakers: list[str] | None = None
    has_previous_speakers: bool = False


class MagtkdProcessor(ProcessorMixin):
    r"""Turns conversations into the inputs of MAGTKD's text, audio and video encoders.

    A processor over a RoBERTa-family tokenizer, a `Wav2Vec2FeatureExtractor` (data2vec
    audio) and a video image processor (`VideoMAEImageProcessorPil` with TimeSformer's
    ImageNet mean/std). The speaker tokens `<s1>`..`<s9>` are registered on the tokenizer
    as special tokens and its padding side is set to left.

    Args:
        tokenizer: RoBERTa-family tokenizer (needs a mask token).
        feature_extractor: audio feature extractor; its `sampling_rate` is the target rate,
            its `do_normalize` / `padding_side` settings are used as saved.
        image_processor: image processor whose saved settings (resize, crop, rescale,
            normalise) define the pixels.
        tokenization_mode: "default" (speaker tokens are single special tokens) or
            "released" (they split into sub-words, as the released scripts' tokenizer did).
        speaker_mode: "first_appearance" (default), "global_map" (needs `speaker_map`) or
            "released_iemocap" (see `prompt.py`; conversations must be given in the split's
            order, or each row must carry `previous_speakers`).
        speaker_map: {name: id} for "global_map" (e.g. MELD's `speaker2id.json`), or a path
            to such a JSON file (read once, then saved inside the processor config).
        max_text_tokens: prompt tokens kept (the last ones) before the mask token (511).
        max_audio_samples: waveform crop at the target rate (400,000 = 25 s at 16 kHz).
        audio_mode: "default" (crop to `max_audio_samples`, then the feature extractor
            normalises what is kept) or "released" (the released scripts' order: the whole
            clip is normalised by the feature extractor's zero-mean unit-variance rule, then
            cropped). The two differ only for clips longer than the crop.
        num_frames: frames per utterance (8).
        frame_selection: "uniform" (centres of equal segments) or "released": the released
            MELD rule for whole clips, the released IEMOCAP rule for time windows (see
            `media.released_iemocap_frame_indices`).
        use_time_window: for dataset rows, whether `start_times`/`end_times` cut the video:
            True, False or "auto" (cut when several utterances of the row share one video
            file, as IEMOCAP's dialogue videos do; MELD's per-utterance clips are never cut).
            Utterance mappings with `start`/`end` keys are cut unless this is False.
            A window that is used must give both `start` and `end` (seconds: numbers or
            numeric strings, finite, 0 <= start < end); one starting past the end of its
            media is an error, one ending past it is cut there (a `logging` warning names the
            utterance, the window and the media's length).
        time_window_padding: seconds added on each side of the window for the video (1.0).
        image_backend: "torch" (fast path implementing the image processor's settings) or
            "image_processor" (the image processor itself).
        video_num_threads: decoder threads per video (PyAV frame threads; 0 = automatic).

    Call: `processor(conversations, modalities=("text", "audio", "video"))` -> `BatchFeature`
    with, for B conversations, N = longest conversation, U = all utterances:

        input_ids, attention_mask      (U, L) long   prompt tokens, LEFT padded, mask token last
        input_values                   (U, T) float  normalised waveform at the target rate
        audio_attention_mask           (U, T) long   1 = real sample
        pixel_values                   (U, num_frames, 3, h, w) float
        speaker_ids                    (B, N) long   0 at padding
        utterance_mask                 (B, N) long   1 = real utterance
        conversation_index, utterance_index  (U,) long
        labels                         (B, N) long   -100 at padding (only when labels are given)

    Utterances are ordered conversation by conversation, so `utterance_mask.bool()` selects
    them in row-major order.
    """

    def __init__(
        self,
        tokenizer,
        feature_extractor,
        image_processor,
        tokenization_mode: str = "default",
        speaker_mode: str = "first_appearance",
        speaker_map: Mapping[str, int] | str | None = None,
        max_text_tokens: int = 511,
        max_audio_samples: int = 400_000,
        audio_mode: str = "default",
        num_frames: int = 8,
        frame_selection: str = "uniform",
        use_time_window: str | bool = "auto",
        time_window_padding: float = 1.0,
        image_backend: str = "torch",
        video_num_threads: int = 2,
        **kwargs,
    ):
        _check_choice("tokenization_mode", tokenization_mode, TOKENIZATION_MODES)
        _check_choice("speaker_mode", speaker_mode, SPEAKER_MODES)
        _check_choice("frame_selection", frame_selection, tuple(FRAME_SELECTIONS))
        _check_choice("use_time_window", use_time_window, TIME_WINDOW_CHOICES)
        _check_choice("image_backend", image_backend, IMAGE_BACKENDS)
        _check_choice("audio_mode", audio_mode, AUDIO_MODES)
        if speaker_mode == "global_map" and speaker_map is None:
            raise ValueError("speaker_mode='global_map' needs a speaker_map (mapping or JSON path)")
        if tokenizer.mask_token_id is None:
            raise ValueError("the tokenizer has no mask token; MAGTKD's prompt ends with it")
        super().__init__(tokenizer, feature_extractor, image_processor, **kwargs)
        register_speaker_tokens(self.tokenizer)
        self.tokenizer.padding_side = "left"
        self.tokenization_mode = tokenization_mode
        self.speaker_mode = speaker_mode
        self.speaker_map = None if speaker_map is None else load_speaker_map(speaker_map)
        self.max_text_tokens = int(max_text_tokens)
        self.max_audio_samples = int(max_audio_samples)
        self.audio_mode = audio_mode
        self.num_frames = int(num_frames)
        self.frame_selection = frame_selection
        self.use_time_window = use_time_window
        self.time_window_padding = float(time_window_padding)
        self.image_backend = image_backend
        self.video_num_threads = int(video_num_threads)

    # ------------------------------------------------------------------ construction

    @staticmethod
    def default_feature_extractor(sampling_rate: int = 16_000):
        """data2vec-audio's feature extractor settings: normalise, return an attention mask."""
        from transformers import Wav2Vec2FeatureExtractor

        return Wav2Vec2FeatureExtractor(
            feature_size=1,
            sampling_rate=sampling_rate,
            padding_value=0.0,
            do_normalize=True,
            return_attention_mask=True,
        )

    @staticmethod
    def default_image_processor(size: int = 224):
        """TimeSformer (Kinetics-400) settings: shortest edge 224, 224 crop, ImageNet mean/std.
        (`VideoMAEImageProcessorPil` alone defaults to mean/std 0.5.)"""
        from transformers import VideoMAEImageProcessorPil

        return VideoMAEImageProcessorPil(
            size={"shortest_edge": size},
            crop_size={"height": size, "width": size},
            image_mean=IMAGENET_MEAN,
            image_std=IMAGENET_STD,
        )

    @classmethod
    def from_encoders(cls, text_encoder: str, audio_encoder: str | None = None, video_size: int = 224, **settings):
        """Build from encoder checkpoints (Hub names or folders): the text encoder's tokenizer,
        the audio encoder's feature extractor (forced to normalise and return an attention
        mask), and TimeSformer's image settings."""
        from transformers import AutoTokenizer, Wav2Vec2FeatureExtractor

        tokenizer = AutoTokenizer.from_pretrained(text_encoder)
        if audio_encoder is None:
            feature_extractor = cls.default_feature_extractor()
        else:
            feature_extractor = Wav2Vec2FeatureExtractor.from_pretrained(
                audio_encoder, do_normalize=True, return_attention_mask=True
            )
        return cls(tokenizer, feature_extractor, cls.default_image_processor(video_size), **settings)

    # ------------------------------------------------------------------ call

    @property
    def model_input_names(self) -> list[str]:
        return [
            "input_ids",
            "attention_mask",
            "input_values",
            "audio_attention_mask",
            "pixel_values",
            "speaker_ids",
            "utterance_mask",
            "conversation_index",
            "utterance_index",
        ]

    def __call__(
        self,
        conversations=None,
        modalities: Sequence[str] = MODALITIES,
        previous_speakers: Sequence[str] | None = None,
        use_time_window: str | bool | None = None,
        return_tensors: str = "pt",
        **kwargs,
    ) -> BatchFeature:
        """Process one conversation, a list of conversations, a dataset row or a list of rows.

        Args:
            conversations: a conversation (list of utterance mappings with `speaker`, `text`,
                `audio`, `video`, optional `start`/`end` seconds, `label`, `id`), a list of
                them, a dataset row (mapping with `dialogue_id`, `speakers`, `texts`, ...),
                a list of rows, or a column batch of rows (as `datasets.map(batched=True)`).
            modalities: subset of ("text", "audio", "video") to compute.
            previous_speakers: "released_iemocap" mode only: the running speaker list left by
                the conversation before the first one given (None: the first is the split's
                first). Conversations of one call are chained in order; a row's own
                `previous_speakers` column takes precedence.
            use_time_window: overrides the processor's `use_time_window` for this call.
            return_tensors: only "pt".
        """
        if kwargs:
            raise TypeError(f"unexpected arguments: {sorted(kwargs)}")
        if return_tensors not in ("pt", None):
            raise ValueError("MagtkdProcessor returns torch tensors only (return_tensors='pt')")
        unknown = set(modalities) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; choose from {MODALITIES}")
        window_choice = self.use_time_window if use_time_window is None else use_time_window
        _check_choice("use_time_window", window_choice, TIME_WINDOW_CHOICES)
        batch = self._normalise_input(conversations, window_choice)

        speaker_indices = self._speaker_indices(batch, previous_speakers)
        data: dict[str, Any] = {}
        if "text" in modalities:
            data.update(self._text_inputs(batch, speaker_indices))
        if "audio" in modalities:
            data.update(self._audio_inputs(batch))
        if "video" in modalities:
            data["pixel_values"] = self._video_inputs(batch)
        data.update(_structure(batch, speaker_indices))
        return BatchFeature(data=data)

    # ------------------------------------------------------------------ input forms

    def _normalise_input(self, conversations, window_choice) -> list[Conversation]:
        if conversations is None:
            raise MagtkdInputError("no conversations given")
        if isinstance(conversations, Mapping):
            if "texts" not in conversations:
                raise MagtkdInputError(
                    "a mapping input must be a dataset row (with 'texts', 'speakers', ...); "
                    "give a conversation as a list of utterance mappings"
                )
            rows = _column_batch_to_rows(conversations) if _is_column_batch(conversations) else [conversations]
            return [self._row_to_conversation(r, i, window_choice) for i, r in enumerate(rows)]
        conversations = list(conversations)
        if not conversations:
            raise MagtkdInputError("no conversations given (empty list)")
        first = conversations[0]
        if isinstance(first, Mapping) and "texts" in first:
            return [self._row_to_conversation(r, i, window_choice) for i, r in enumerate(conversations)]
        if isinstance(first, Mapping):
            conversations = [conversations]
        return [self._list_to_conversation(c, i, window_choice) for i, c in enumerate(conversations)]

    def _list_to_conversation(self, utterances, index: int, window_choice) -> Conversation:
        name = f"#{index}"
        if not isinstance(utterances, (list, tuple)) or not utterances:
            raise MagtkdInputError(f"conversation {name}: expected a non-empty list of utterance mappings")
        normalised = []
        for position, item in enumerate(utterances):
            if not isinstance(item, Mapping):
                raise MagtkdInputError(f"conversation {name}, utterance #{position}: expected a mapping")
            label = f"{item['id']!r} (#{position})" if item.get("id") is not None else f"#{position}"
            if "speaker" not in item or "text" not in item:
                raise MagtkdInputError(f"conversation {name}, utterance {label}: needs 'speaker' and 'text'")
            window = None
            if window_choice is not False:
                window = _time_window(item.get("start"), item.get("end"), f"conversation {name}, utterance {label}")
            normalised.append(
                Utterance(
                    speaker=str(item["speaker"]),
                    text=item["text"],
                    audio=item.get("audio"),
                    video=_optional_path(item.get("video")),
                    window=window,
                    label=item.get("label"),
                    name=label,
                )
            )
        return Conversation(name=name, utterances=normalised)

    def _row_to_conversation(self, row: Mapping, index: int, window_choice) -> Conversation:
        dialogue = row.get("dialogue_id")
        name = f"{dialogue!r} (#{index})" if dialogue is not None else f"#{index}"
        texts = list(row.get("texts") or [])
        if not texts:
            raise MagtkdInputError(f"conversation {name}: the row has no utterances")
        count = len(texts)
        columns = {}
        for key in ("speakers", "utterance_ids", "labels", "video_paths", "audio_paths", "start_times", "end_times"):
            value = row.get(key)
            if value is not None:
                if len(value) != count:
                    raise MagtkdInputError(
                        f"conversation {name}: column {key!r} has {len(value)} entries for {count} texts"
                    )
                columns[key] = list(value)
        if "speakers" not in columns:
            raise MagtkdInputError(f"conversation {name}: the row has no 'speakers' column")
        if window_choice is not False and ("start_times" in columns) != ("end_times" in columns):
            given, missing = ("start_times", "end_times") if "start_times" in columns else ("end_times", "start_times")
            raise MagtkdInputError(
                f"conversation {name}: the row has a {given!r} column but no {missing!r}; give both or neither"
            )
        cut = self._row_uses_windows(columns, window_choice)
        utterances = []
        for j in range(count):
            uid = columns.get("utterance_ids", [None] * count)[j]
            label = f"{uid!r} (#{j})" if uid is not None else f"#{j}"
            window = None
            if cut:
                window = _time_window(
                    columns["start_times"][j], columns["end_times"][j], f"conversation {name}, utterance {label}"
                )
            utterances.append(
                Utterance(
                    speaker=str(columns["speakers"][j]),
                    text=texts[j],
                    audio=_optional_path(columns.get("audio_paths", [None] * count)[j]),
                    video=_optional_path(columns.get("video_paths", [None] * count)[j]),
                    window=window,
                    label=columns.get("labels", [None] * count)[j],
                    name=label,
                )
            )
        has_previous = "previous_speakers" in row
        previous = row.get("previous_speakers")
        return Conversation(
            name=name,
            utterances=utterances,
            previous_speakers=None if previous is None else list(previous),
            has_previous_speakers=has_previous,
        )

    @staticmethod
    def _row_uses_windows(columns: Mapping, window_choice) -> bool:
        """Explicit True/False, or "auto": cut when the row has times and its utterances share
        a video file (IEMOCAP dialogue videos); MELD's per-utterance clips are never cut."""
        has_times = "start_times" in columns and "end_times" in columns
        if window_choice is False or not has_times:
            return False
        if window_choice is True:
            return True
        videos = [v for v in columns.get("video_paths", []) if v is not None]
        return len(set(videos)) < len(videos)

    # ------------------------------------------------------------------ speakers

    def _speaker_indices(self, batch: list[Conversation], previous_speakers) -> list[list[int]]:
        """Per conversation, the speaker index of every utterance (mode-dependent)."""
        indices = []
        running = None if previous_speakers is None else list(previous_speakers)
        for conversation in batch:
            names = [u.speaker for u in conversation.utterances]
            if self.speaker_mode == "first_appearance":
                conversation_indices = first_appearance_indices(names)
                if max(conversation_indices) >= MAX_SPEAKERS:
                    raise MagtkdInputError(
                        f"conversation {conversation.name}: {max(conversation_indices) + 1} speakers "
                        f"({', '.join(dict.fromkeys(names))}); at most {MAX_SPEAKERS} are supported "
                        "(speaker tokens <s1>..<s9>)"
                    )
            elif self.speaker_mode == "global_map":
                try:
                    conversation_indices = global_map_indices(names, self.speaker_map)
                except KeyError as error:
                    position = names.index(error.args[0])
                    raise MagtkdInputError(
                        f"conversation {conversation.name}, utterance {conversation.utterances[position].name}: "
                        f"speaker {error.args[0]!r} is not in the speaker map"
                    ) from None
            else:
                if conversation.has_previous_speakers:
                    running = conversation.previous_speakers
                conversation_indices, running = released_iemocap_speaker_indices(names, running)
            indices.append(conversation_indices)
        return indices

    # ------------------------------------------------------------------ text

    def _text_inputs(self, batch: list[Conversation], speaker_indices) -> dict[str, torch.Tensor]:
        prompts = []
        for conversation, indices in zip(batch, speaker_indices):
            texts = []
            for utterance in conversation.utterances:
                if not isinstance(utterance.text, str) or not utterance.text.strip():
                    raise MagtkdInputError(
                        f"conversation {conversation.name}, utterance {utterance.name}: "
                        f"empty or non-text transcript {utterance.text!r}"
                    )
                texts.append(utterance.text.strip())
            prompts.extend(build_prompts(texts, indices))
        backend = self._released_tokenizer_backend() if self.tokenization_mode == "released" else None
        ids = encode_prompts(prompts, self.tokenizer, self.max_text_tokens, backend=backend)
        input_ids, attention_mask = left_pad(ids, self.tokenizer.pad_token_id)
        return {
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "attention_mask": torch.tensor(attention_mask, dtype=torch.long),
        }

    def _released_tokenizer_backend(self):
        # Built on demand (cheap: a JSON round trip) so no tokenizers.Tokenizer sits in the
        # processor's state (which `to_dict` deep-copies).
        return released_backend(self.tokenizer)

    # ------------------------------------------------------------------ audio

    def _audio_inputs(self, batch: list[Conversation]) -> dict[str, torch.Tensor]:
        rate = int(self.feature_extractor.sampling_rate)
        extractor = self.feature_extractor
        # released order: normalise the whole clip, then crop (the feature extractor then only pads)
        normalise_first = self.audio_mode == "released" and bool(getattr(extractor, "do_normalize", False))
        if normalise_first:
            extractor = copy.copy(extractor)
            extractor.do_normalize = False
        crop = None if normalise_first else self.max_audio_samples
        waveforms = []
        for conversation in batch:
            for utterance in conversation.utterances:
                source, window = utterance.audio, None
                if source is None:
                    if utterance.video is None:
                        raise MagtkdInputError(
                            f"conversation {conversation.name}, utterance {utterance.name}: "
                            "no audio and no video to take the sound track from"
                        )
                    source, window = utterance.video, utterance.window
                with _naming(conversation, utterance):
                    waveform = load_audio(source, rate, crop, window=window, context=_where(conversation, utterance))
                if normalise_first:
                    waveform = zero_mean_unit_variance(waveform)[: self.max_audio_samples]
                waveforms.append(waveform)
        features = extractor(
            waveforms,
            sampling_rate=rate,
            padding=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        return {
            "input_values": features["input_values"].to(torch.float32),
            "audio_attention_mask": features["attention_mask"].to(torch.long),
        }

    # ------------------------------------------------------------------ video

    def _video_inputs(self, batch: list[Conversation]) -> torch.Tensor:
        use_torch = self.image_backend == "torch" and torch_path_supported(self.image_processor)
        crop = getattr(self.image_processor, "crop_size", None) or {"height": 224, "width": 224}
        empty_size = (int(crop["height"]), int(crop["width"]))
        videos = []
        for conversation in batch:
            for utterance in conversation.utterances:
                if utterance.video is None:
                    raise MagtkdInputError(f"conversation {conversation.name}, utterance {utterance.name}: no video")
                with _naming(conversation, utterance):
                    frames = read_video_frames(
                        utterance.video,
                        num_frames=self.num_frames,
                        selection=self.frame_selection,
                        window=utterance.window,
                        num_threads=self.video_num_threads,
                        empty_frame_size=empty_size,
                        padding=self.time_window_padding,
                        context=_where(conversation, utterance),
                    )
                if use_torch:
                    videos.append(frames_to_pixel_values_torch(frames, self.image_processor))
                else:
                    videos.append(frames_to_pixel_values_processor(frames, self.image_processor))
        return torch.stack(videos)


# ---------------------------------------------------------------------- helpers


def _structure(batch: list[Conversation], speaker_indices) -> dict[str, torch.Tensor]:
    """speaker_ids, utterance_mask (+ labels) (B, N); conversation_index, utterance_index (U,)."""
    longest = max(len(c.utterances) for c in batch)
    speaker_ids = torch.zeros(len(batch), longest, dtype=torch.long)
    utterance_mask = torch.zeros(len(batch), longest, dtype=torch.long)
    labels = torch.full((len(batch), longest), IGNORE_INDEX, dtype=torch.long)
    conversation_index, utterance_index = [], []
    any_label = False
    for b, (conversation, indices) in enumerate(zip(batch, speaker_indices)):
        count = len(conversation.utterances)
        speaker_ids[b, :count] = torch.tensor(indices, dtype=torch.long)
        utterance_mask[b, :count] = 1
        conversation_index += [b] * count
        utterance_index += list(range(count))
        for n, utterance in enumerate(conversation.utterances):
            if utterance.label is not None:
                labels[b, n] = _label_value(conversation, utterance)
                any_label = True
    data = {
        "speaker_ids": speaker_ids,
        "utterance_mask": utterance_mask,
        "conversation_index": torch.tensor(conversation_index, dtype=torch.long),
        "utterance_index": torch.tensor(utterance_index, dtype=torch.long),
    }
    if any_label:
        data["labels"] = labels
    return data


def _label_value(conversation: Conversation, utterance: Utterance) -> int:
    label = utterance.label
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
        raise MagtkdInputError(
            f"conversation {conversation.name}, utterance {utterance.name}: label must be an int "
            f"class index, got {label!r}"
        )
    return int(label)


def _where(conversation: Conversation, utterance: Utterance) -> str:
    return f"conversation {conversation.name}, utterance {utterance.name}"


@contextmanager
def _naming(conversation: Conversation, utterance: Utterance):
    """Re-raise media errors with the conversation and utterance in the message."""
    try:
        yield
    except MediaError as error:
        raise MagtkdInputError(f"{_where(conversation, utterance)}, {error}") from error


def _is_column_batch(row: Mapping) -> bool:
    texts = row.get("texts")
    return bool(texts) and isinstance(texts[0], (list, tuple))


def _column_batch_to_rows(columns: Mapping) -> list[dict]:
    count = len(columns["texts"])
    return [{key: values[i] for key, values in columns.items()} for i in range(count)]


def _optional_path(value):
    if value is None:
        return None
    if isinstance(value, Mapping) and "array" not in value and value.get("path") is not None:
        return os.fspath(value["path"])  # `datasets` Audio/Video(decode=False) values
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    return value  # in-memory audio (array + rate)


def _time_window(start, end, where: str) -> TimeWindow | None:
    """An utterance's `start`/`end` (seconds) -> a validated window; None when both are absent."""
    if start is None and end is None:
        return None
    if start is None or end is None:
        given, missing, value = ("an end", "start", end) if start is None else ("a start", "end", start)
        raise MagtkdInputError(
            f"{where}: the time window has {given} ({value!r}) but no {missing}; give both or neither"
        )
    start_s, end_s = _seconds(start, "start", where), _seconds(end, "end", where)
    if start_s < 0:
        raise MagtkdInputError(f"{where}: time window start {start!r} is negative")
    if not start_s < end_s:
        raise MagtkdInputError(f"{where}: time window start {start!r} is not before its end {end!r}")
    return TimeWindow(start_s, end_s)


def _seconds(value, which: str, where: str) -> float:
    """A number of seconds: an int/float (numpy scalars included) or a numeric string; finite."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, str)):
        raise MagtkdInputError(f"{where}: time window {which} must be a number of seconds, got {value!r}")
    try:
        seconds = float(value.strip() if isinstance(value, str) else value)
    except ValueError:
        raise MagtkdInputError(f"{where}: time window {which} {value!r} is not a number of seconds") from None
    if not math.isfinite(seconds):
        raise MagtkdInputError(f"{where}: time window {which} {value!r} is not finite")
    return seconds


def _check_choice(name: str, value, choices) -> None:
    if not any(value is choice or (type(value) is type(choice) and value == choice) for choice in choices):
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


MagtkdProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["MagtkdProcessor", "MagtkdInputError"]
