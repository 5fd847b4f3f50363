"""MagtkdProcessor: conversations -> inputs of the three MAGTKD encoders + conversation structure.

This file travels as remote code with every saved processor folder, so it imports its
siblings relatively (`.conversation`, `.model_inputs`, `.prompt`, `.media`...) and nothing
from `magtkd_hf`; `save_pretrained` copies every module reached that way into the folder.
The input forms live in `conversation.py`, the encoders' inputs in `model_inputs.py`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .conversation import IGNORE_INDEX, Conversation, Utterance  # noqa: F401  (importable from here too)
from .conversation import _structure, normalise_input
from .media import FRAME_SELECTIONS
from .model_inputs import audio_inputs, conversation_speaker_indices, text_inputs, video_inputs
from .prompt import (
    SPEAKER_MODES,
    TEXT_CONTEXTS,
    TOKENIZATION_MODES,
    SPEAKER_TOKENS,
    MagtkdInputError,
    load_speaker_map,
    register_speaker_tokens,
)

MODALITIES = ("text", "audio", "video")
IMAGE_BACKENDS = ("torch", "image_processor")
TIME_WINDOW_CHOICES = ("auto", True, False)
AUDIO_MODES = ("default", "released")
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


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
        text_context: "history" (the paper's prompt: the conversation up to the utterance) or
            "utterance" (the same template on the utterance alone, the paper's text ablation).
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
        has_audio, has_video           (U,) long     1 = the utterance has that modality (with it computed)
        speaker_ids                    (B, N) long   0 at padding
        utterance_mask                 (B, N) long   1 = real utterance
        conversation_index, utterance_index  (U,) long
        labels                         (B, N) long   -100 at padding (only when labels are given)

    Utterances are ordered conversation by conversation, so `utterance_mask.bool()` selects
    them in row-major order.

    Frame cache: `frame_cache` (a runtime attribute, None by default, never saved by
    `save_pretrained`) may hold a `frame_cache.FrameCache` built with this processor's frame
    settings (`magtkd-hf cache-frames`); the clips it holds are then not decoded, with the
    same pixel values (torch image path only). `with_frame_cache` returns a copy that reads one.

    Missing modalities: `text` is required; `video` and `audio` are optional. An utterance
    without `audio` takes its video's sound track; without both (or with a video that has no
    sound track) its audio is absent; without `video` its video is absent. Absent media are
    not decoded: `has_audio`/`has_video` are 0 there and the utterance's rows of
    `input_values`/`audio_attention_mask`/`pixel_values` are zeros (kept in the (U, ...)
    tensors, rather than a compact tensor and an index, so that every per-utterance tensor
    keeps the one utterance order callers index by). A named file that does not exist is
    still an error: missing is not absent.
    """

    # A runtime attribute (see "Frame cache" above): not an `__init__` argument, so `save_pretrained` leaves it out.
    frame_cache = None

    def __init__(
        self,
        tokenizer,
        feature_extractor,
        image_processor,
        tokenization_mode: str = "default",
        speaker_mode: str = "first_appearance",
        speaker_map: Mapping[str, int] | str | None = None,
        max_text_tokens: int = 511,
        text_context: str = "history",
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
        _check_choice("text_context", text_context, TEXT_CONTEXTS)
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
        self.text_context = text_context
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

    @classmethod
    def from_args_and_dict(cls, args, processor_dict: dict[str, Any], **kwargs):
        # Called by `from_pretrained` with the saved tokenizer, BEFORE `__init__` would register missing speaker
        # tokens: a saved tokenizer must already hold them, or its ids differ from those the model was trained on.
        check_saved_tokenizer(args[0])
        return super().from_args_and_dict(args, processor_dict, **kwargs)

    @classmethod
    def from_dict(cls, processor_dict: dict[str, Any], **kwargs):
        # transformers >= 5.25: `from_pretrained` loads the sub-processors into `processor_dict` and calls this
        # instead of `from_args_and_dict`; the same check on the saved tokenizer.
        tokenizer = kwargs.get("tokenizer", processor_dict.get("tokenizer"))
        if tokenizer is not None and hasattr(tokenizer, "get_vocab"):
            check_saved_tokenizer(tokenizer)
        return super().from_dict(processor_dict, **kwargs)

    def check_fits_model(self, model) -> None:
        """Refuse a model whose text embeddings do not have one row per token of this tokenizer (the tokenizer of
        another model, or a damaged folder): its prompts would be encoded with other ids."""
        get_embeddings = getattr(model, "get_input_embeddings", None)
        embeddings = get_embeddings() if get_embeddings is not None else None
        if embeddings is None or not hasattr(embeddings, "num_embeddings"):
            return  # a fusion model: it takes features, not token ids
        if embeddings.num_embeddings != len(self.tokenizer):
            raise ValueError(
                f"The tokenizer ({getattr(self.tokenizer, 'name_or_path', '') or 'given'}) has {len(self.tokenizer)} "
                f"tokens but the model's text embeddings have {embeddings.num_embeddings} rows: not the tokenizer the "
                "model was trained with (or a damaged tokenizer file)."
            )

    def with_frame_cache(self, frame_cache) -> "MagtkdProcessor":
        """A shallow copy of this processor whose video inputs come from `frame_cache` (a `FrameCache`, or None for
        none) for the clips it holds; this processor is left as it is. A cache built with other frame settings is
        never read (`frame_cache.matches(processor)`)."""
        import copy

        copied = copy.copy(self)
        copied.frame_cache = frame_cache
        return copied

    # ------------------------------------------------------------------ call

    @property
    def model_input_names(self) -> list[str]:
        return [
            "input_ids",
            "attention_mask",
            "input_values",
            "audio_attention_mask",
            "pixel_values",
            "has_audio",
            "has_video",
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
        batch = normalise_input(conversations, window_choice)

        speaker_indices = conversation_speaker_indices(self, batch, previous_speakers)
        data: dict[str, Any] = {}
        if "text" in modalities:
            data.update(text_inputs(self, batch, speaker_indices))
        if "audio" in modalities:
            data.update(audio_inputs(self, batch))
        if "video" in modalities:
            data.update(video_inputs(self, batch))
        data.update(_structure(batch, speaker_indices))
        return BatchFeature(data=data)


def check_saved_tokenizer(tokenizer) -> None:
    """A saved MAGTKD tokenizer has the mask token and the speaker tokens; a folder without its tokenizer files
    loads as a near-empty vocabulary that encodes every transcript to nothing."""
    source = getattr(tokenizer, "name_or_path", "") or "the saved tokenizer"
    if tokenizer.mask_token_id is None:
        raise ValueError(f"{source}: the tokenizer has no mask token; MAGTKD's prompt ends with it.")
    vocabulary = tokenizer.get_vocab()
    missing = [token for token in SPEAKER_TOKENS if token not in vocabulary]
    if missing:
        raise ValueError(
            f"{source}: the saved tokenizer lacks the speaker tokens {missing} (it holds {len(tokenizer)} tokens); "
            "the tokenizer files (tokenizer.json) are missing or are not the ones saved with this processor."
        )


def _check_choice(name: str, value, choices) -> None:
    if not any(value is choice or (type(value) is type(choice) and value == choice) for choice in choices):
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


MagtkdProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["MagtkdProcessor", "MagtkdInputError"]
