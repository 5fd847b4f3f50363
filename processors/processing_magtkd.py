"""MagtkdProcessor: conversations -> inputs of the three MAGTKD encoders + conversation structure.

This file travels as remote code with every saved processor folder: it imports its siblings relatively and nothing
from `magtkd_hf` (`save_pretrained` copies every module reached that way into the folder).
"""

from __future__ import annotations

import copy
import numbers
from typing import Mapping, Sequence

from transformers import BatchFeature
from transformers.tokenization_utils_base import VERY_LARGE_INTEGER
from transformers.processing_utils import ProcessorMixin

from .conversation import IGNORE_INDEX, normalise_input, structure  # noqa: F401  (IGNORE_INDEX: importable here)
from .media_frames import FRAME_SELECTIONS
from .media_pixels import setting, size_dict
from .model_inputs import audio_inputs, empty_frame_size, text_inputs, video_inputs
from .prompt import SPEAKER_MODES, SPEAKER_TOKENS, TEXT_CONTEXTS, TOKENIZATION_MODES, MagtkdInputError
from .prompt import load_speaker_map, refuse_special_token_parsing, register_speaker_tokens, speaker_indices

# As magtkd_hf.dataset_table.MODALITIES: the processor travels alone as a saved folder's remote code.
MODALITIES = ("text", "audio", "video")
IMAGE_BACKENDS = ("torch", "image_processor")
TIME_WINDOW_CHOICES = ("auto", True, False)
AUDIO_MODES = ("default", "released")
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
RETURN_TENSORS = ("pt", "np")
MAX_FRAMES = 96  # TimeSformer-L's clips: the most frames TimeSformer was trained on
IMAGE_SIZES = (16, 512)  # one TimeSformer patch .. a little over TimeSformer-HR's 448
SAMPLING_RATES = (8_000, 48_000)  # telephone speech .. studio audio
# The rate audio encoders were pretrained at: their feature extractors' `sampling_rate`, which their configs lack.
ENCODER_SAMPLING_RATES = {"data2vec-audio": 16_000, "wav2vec2": 16_000, "hubert": 16_000, "wavlm": 16_000}
# Text encoders whose position ids start after the padding index (RobertaEmbeddings): pad_token_id + 1 fewer positions.
POSITIONS_AFTER_PADDING = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text",
                           "roberta-prelayernorm")


class MagtkdSettingError(ValueError):
    """A processor setting out of its range or choices; the message names the setting, its value and what is allowed."""


class MagtkdProcessor(ProcessorMixin):
    r"""Turns conversations into the inputs of MAGTKD's text, audio and video encoders.

    A processor over a RoBERTa-family tokenizer (the speaker tokens `<s1>`..`<s9>` registered as special tokens,
    padding on the left), a `Wav2Vec2FeatureExtractor` (data2vec audio) and a video image processor
    (`VideoMAEImageProcessorPil` with TimeSformer's ImageNet mean/std).

    Args:
        tokenizer, feature_extractor, image_processor: their saved settings are used as they are; the feature
            extractor's `sampling_rate` is the target rate.
        tokenization_mode: "default" (speaker tokens are single tokens) or "released" (they split into sub-words, as
            with the released scripts' tokenizer).
        speaker_mode: "first_appearance", "global_map" (needs `speaker_map`: {name: id} or a JSON file path, saved
            inside the processor config) or "released_iemocap" (conversations in the split's order, or rows with a
            `previous_speakers` column); see `prompt.py`.
        max_text_tokens: prompt tokens kept (the last ones) before the mask token.
        text_context: "history" (the paper's prompt) or "utterance" (the utterance alone, the paper's ablation).
        max_audio_samples: waveform crop at the target rate (400,000 = 25 s at 16 kHz).
        audio_mode: "default" (crop, then the feature extractor normalises) or "released" (normalise the whole clip,
            then crop); they differ only for clips longer than the crop.
        num_frames: frames per utterance.
        frame_selection: "uniform" (segment centres) or "released" (the released MELD rule for whole clips, the
            released IEMOCAP rule for time windows).
        use_time_window: for dataset rows, whether `start_times`/`end_times` cut the video: True, False or "auto"
            (when the row's utterances share one video file, as IEMOCAP's dialogue videos do). Utterance mappings
            with `start`/`end` (seconds, 0 <= start < end) are cut unless this is False. A window starting past the
            end of its media is an error; one ending past it is cut there, with a warning.
        time_window_padding: seconds added on each side of the window for the video.
        image_backend: "torch" (fast path implementing the image processor's settings) or "image_processor".
        video_num_threads: decoder threads per video (0 = automatic).
        add_speaker_tokens: register the speaker tokens on the tokenizer (a new processor); False (as saved) when the
            tokenizer must already hold them, since a saved tokenizer without them encodes other ids than the model's.

    Call: `processor(conversations, modalities=("text", "audio", "video"))` -> `BatchFeature` with, for B
    conversations, N = the longest, U = all utterances in conversation order (`utterance_mask.bool()` selects them):

        input_ids, attention_mask      (U, L) long   prompt tokens, LEFT padded, mask token last
        input_values                   (U, T) float  normalised waveform at the target rate
        audio_attention_mask           (U, T) long   1 = real sample
        pixel_values                   (U, num_frames, 3, h, w) float
        has_audio, has_video           (U,) long     1 = the utterance has that modality
        speaker_ids                    (B, N) long   0 at padding
        utterance_mask                 (B, N) long   1 = real utterance
        conversation_index, utterance_index  (U,) long
        labels                         (B, N) long   -100 at padding (only when labels are given)

    Missing modalities: `text` is required. An utterance without `audio` takes its video's sound track; without both
    (or with a silent video) its audio is absent, without `video` its video is: not decoded, has_* 0, zero rows. A
    named file that does not exist is still an error.

    `frame_cache` (a runtime attribute, never saved): a `frame_cache.FrameCache` whose clips are read instead of
    decoded (same pixel values; torch image path only); `with_frame_cache` returns a copy that reads one.
    """

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
        add_speaker_tokens: bool = True,
        **kwargs,
    ):
        for name, value, choices in [
            ("tokenization_mode", tokenization_mode, TOKENIZATION_MODES),
            ("speaker_mode", speaker_mode, SPEAKER_MODES),
            ("text_context", text_context, TEXT_CONTEXTS),
            ("frame_selection", frame_selection, tuple(FRAME_SELECTIONS)),
            ("use_time_window", use_time_window, TIME_WINDOW_CHOICES),
            ("image_backend", image_backend, IMAGE_BACKENDS),
            ("audio_mode", audio_mode, AUDIO_MODES),
        ]:
            _check_choice(name, value, choices)
        if speaker_mode == "global_map" and speaker_map is None:
            raise ValueError("speaker_mode='global_map' needs a speaker_map (mapping or JSON path)")
        if tokenizer.mask_token_id is None:
            raise ValueError("the tokenizer has no mask token; MAGTKD's prompt ends with it")
        if add_speaker_tokens:
            register_speaker_tokens(tokenizer)
        if tokenization_mode == "released" and getattr(tokenizer, "backend_tokenizer", None) is None:
            raise ValueError(f"tokenization_mode='released' needs a fast tokenizer, got {type(tokenizer).__name__}")
        if tokenization_mode == "default":
            refuse_special_token_parsing(tokenizer)
        check_sizes(tokenizer, feature_extractor, image_processor, num_frames, max_text_tokens, max_audio_samples)
        missing = [token for token in SPEAKER_TOKENS if token not in tokenizer.get_vocab()]
        if missing:  # a saved tokenizer without them (or without its files) encodes other ids than the model's
            raise ValueError(
                f"{getattr(tokenizer, 'name_or_path', '') or 'the tokenizer'}: the saved tokenizer lacks the speaker "
                f"tokens {missing} (it holds {len(tokenizer)} tokens); the tokenizer files (tokenizer.json) are "
                "missing or are not the ones saved with this processor."
            )
        super().__init__(tokenizer, feature_extractor, image_processor, **kwargs)
        self.tokenizer.padding_side = "left"
        self.add_speaker_tokens = False  # the tokenizer holds them now, and a saved one must
        self.tokenization_mode, self.speaker_mode, self.text_context = tokenization_mode, speaker_mode, text_context
        self.speaker_map = None if speaker_map is None else load_speaker_map(speaker_map)
        self.max_text_tokens, self.max_audio_samples = int(max_text_tokens), int(max_audio_samples)
        self.audio_mode, self.num_frames, self.frame_selection = audio_mode, int(num_frames), frame_selection
        self.use_time_window, self.time_window_padding = use_time_window, float(time_window_padding)
        self.image_backend, self.video_num_threads = image_backend, int(video_num_threads)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """As `ProcessorMixin.from_pretrained`; a saved setting out of range is refused naming the file."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except MagtkdSettingError as error:
            raise MagtkdSettingError(f"{pretrained_model_name_or_path}/processor_config.json: {error}") from error

    @staticmethod
    def default_feature_extractor(sampling_rate: int = 16_000):
        """data2vec-audio's feature extractor settings: normalise, return an attention mask."""
        from transformers import Wav2Vec2FeatureExtractor

        return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=sampling_rate, padding_value=0.0,
                                        do_normalize=True, return_attention_mask=True)

    @staticmethod
    def default_image_processor(size: int = 224):
        """TimeSformer (Kinetics-400): shortest edge `size`, square crop, ImageNet mean/std (not the class's 0.5)."""
        from transformers import VideoMAEImageProcessorPil

        return VideoMAEImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                         image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)

    @classmethod
    def from_encoders(cls, text_encoder: str, audio_encoder: str | None = None, video_size: int = 224, **settings):
        """Built from encoder checkpoints (Hub names or folders): the text encoder's tokenizer, the audio encoder's
        feature extractor (made to normalise and return an attention mask) and TimeSformer's image settings."""
        from transformers import AutoTokenizer, Wav2Vec2FeatureExtractor

        tokenizer = AutoTokenizer.from_pretrained(text_encoder)
        if audio_encoder is None:
            feature_extractor = cls.default_feature_extractor()
        else:
            feature_extractor = Wav2Vec2FeatureExtractor.from_pretrained(
                audio_encoder, do_normalize=True, return_attention_mask=True
            )
        return cls(tokenizer, feature_extractor, cls.default_image_processor(video_size), **settings)

    def check_fits_model(self, model) -> None:
        """Refuse, in one line, a model this processor does not fit: text embeddings without one row per token of this
        tokenizer (another model's tokenizer, or a damaged folder: prompts would be encoded with other ids), prompts
        longer than its text encoder's positions, audio or frames unlike what its audio and video encoders take
        (sampling rate, frame count, image size). A fusion model takes features: nothing to check."""
        encoders = encoder_configs(model.config)
        rows = model.get_input_embeddings().num_embeddings if "text" in encoders else len(self.tokenizer)
        if rows != len(self.tokenizer):
            raise ValueError(
                f"The tokenizer ({getattr(self.tokenizer, 'name_or_path', '') or 'given'}) has {len(self.tokenizer)} "
                f"tokens but the model's text embeddings have {rows} rows: not the tokenizer the model was trained "
                "with (or a damaged tokenizer file)."
            )
        problem = model_mismatch(self, encoders)
        if problem:
            raise ValueError(f"The processor does not fit the model: {problem}.")

    def with_frame_cache(self, frame_cache) -> "MagtkdProcessor":
        """A shallow copy whose video inputs come from `frame_cache` (a `FrameCache`, or None) for the clips it holds
        (a cache built with other frame settings is never read); this processor is left as it is."""
        copied = copy.copy(self)
        copied.frame_cache = frame_cache
        return copied

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "input_values", "audio_attention_mask", "pixel_values", "has_audio",
                "has_video", "speaker_ids", "utterance_mask", "conversation_index", "utterance_index"]

    def __call__(
        self,
        conversations=None,
        modalities: Sequence[str] = MODALITIES,
        previous_speakers: Sequence[str] | None = None,
        use_time_window: str | bool | None = None,
        return_tensors: str = "pt",
        **kwargs,
    ) -> BatchFeature:
        """Process a conversation (a list of utterance mappings with `speaker`, `text`, `audio`, `video`, optional
        `start`/`end` seconds, `label`, `id`), a list of them, a dataset row (`dialogue_id`, `speakers`, `texts`,
        ...), a list of rows, or a column batch of rows (`datasets.map(batched=True)`).

        `modalities`: the subset of MODALITIES to compute. `previous_speakers` ("released_iemocap" mode): the running
        speaker list left by the conversation before the first one given (a row's own column takes precedence).
        `use_time_window` overrides the processor's for this call. `return_tensors`: "pt" (torch; None too) or
        "np" (numpy)."""
        if kwargs:
            raise TypeError(f"unexpected arguments: {sorted(kwargs)}")
        if return_tensors is not None and return_tensors not in RETURN_TENSORS:
            raise ValueError(f"return_tensors must be one of {RETURN_TENSORS} (None: 'pt'), got {return_tensors!r}")
        unknown = set(modalities) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; choose from {MODALITIES}")
        window_choice = self.use_time_window if use_time_window is None else use_time_window
        _check_choice("use_time_window", window_choice, TIME_WINDOW_CHOICES)
        batch = normalise_input(conversations, window_choice)
        speakers = speaker_indices(self, batch, previous_speakers)
        data = text_inputs(self, batch, speakers) if "text" in modalities else {}
        if "audio" in modalities:
            data.update(audio_inputs(self, batch))
        if "video" in modalities:
            data.update(video_inputs(self, batch))
        return BatchFeature(data={**data, **structure(batch, speakers)}, tensor_type=return_tensors or "pt")


def check_sizes(tokenizer, feature_extractor, image_processor, num_frames, max_text_tokens, max_audio_samples):
    """Refuse a size setting out of its range (it would fail late as a tensor shape error, or exhaust memory), in one
    line naming the setting, its value and the allowed range."""
    limit = tokenizer.model_max_length
    prompt_limit = limit - 1 if limit < VERY_LARGE_INTEGER else None
    within = f" (the prompt and its mask token within the tokenizer's model_max_length {limit})" if prompt_limit else ""
    _check_integer("max_text_tokens", max_text_tokens, 1, prompt_limit, within)
    _check_integer("max_audio_samples", max_audio_samples, 1)
    _check_integer("sampling_rate", feature_extractor.sampling_rate, *SAMPLING_RATES, " Hz")
    _check_integer("num_frames", num_frames, 1, MAX_FRAMES, " (TimeSformer-L's 96 is the most it was trained on)")
    used = {"size": setting(image_processor, "do_resize", True), "crop_size": setting(image_processor,
                                                                                     "do_center_crop", False)}
    for name in (name for name, is_used in used.items() if is_used):
        for key, value in size_dict(setting(image_processor, name, {})).items():
            _check_integer(f"image_processor.{name}[{key!r}]", value, *IMAGE_SIZES, " pixels")


def _check_integer(name: str, value, low: int, high: int | None = None, unit: str = "") -> None:
    is_integer = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if is_integer and low <= value and (high is None or value <= high):
        return
    allowed = f"from {low:,} to {high:,}" if high is not None else f"of at least {low:,}"
    raise MagtkdSettingError(f"{name} must be an integer {allowed}{unit}, got {value!r}")


def encoder_configs(config) -> dict:
    """{modality: encoder config} of an end-to-end model's config or of a stage model's (a fusion model's: none)."""
    stages = {modality: getattr(config, f"{modality}_config", None) for modality in MODALITIES}
    stages.update({modality: config for modality in MODALITIES if config.model_type == f"magtkd_{modality}"})
    return {modality: stage.encoder_config for modality, stage in stages.items()
            if getattr(stage, "encoder_config", None) is not None}


def model_mismatch(processor, encoders: Mapping) -> str | None:
    """What in the processor's settings the model's encoders (`encoder_configs`) do not take, or None."""
    text, audio, video = (encoders.get(modality) for modality in MODALITIES)
    if text is not None:
        positions = text.max_position_embeddings
        positions -= text.pad_token_id + 1 if text.model_type in POSITIONS_AFTER_PADDING else 0
        if processor.max_text_tokens + 1 > positions:
            return (f"max_text_tokens {processor.max_text_tokens} and the mask token exceed the {positions} positions "
                    f"of its text encoder ({text.model_type}): at most {positions - 1}")
    rate = getattr(audio, "sampling_rate", None) or ENCODER_SAMPLING_RATES.get(getattr(audio, "model_type", None))
    if rate and processor.feature_extractor.sampling_rate != rate:
        return (f"sampling_rate {processor.feature_extractor.sampling_rate} Hz, but its audio encoder "
                f"({audio.model_type}) takes {rate} Hz audio")
    if video is not None and processor.num_frames != video.num_frames:
        return f"num_frames {processor.num_frames}, but its video encoder takes {video.num_frames} frames"
    frame_size = empty_frame_size(processor)
    if video is not None and frame_size != (video.image_size, video.image_size):
        return (f"frames of {frame_size[0]} x {frame_size[1]} pixels (image_processor.crop_size), but its video "
                f"encoder takes {video.image_size} x {video.image_size}")
    return None


def _check_choice(name: str, value, choices) -> None:
    if not any(value is choice or (type(value) is type(choice) and value == choice) for choice in choices):
        raise MagtkdSettingError(f"{name} must be one of {choices}, got {value!r}")


MagtkdProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["MagtkdProcessor", "MagtkdInputError", "MagtkdSettingError"]
