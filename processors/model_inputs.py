"""The per-utterance inputs of MAGTKD's three encoders, and the speaker indices, for a batch
of normalised conversations.

Each function takes the `MagtkdProcessor` whose tokenizer, feature extractor, image
processor and settings it applies.
"""

from __future__ import annotations

import contextlib
import copy
import sys

import numpy as np
import torch

from .conversation import Conversation, _naming, _where
from .media import (
    MissingSoundTrack,
    frames_to_pixel_values_processor,
    frames_to_pixel_values_torch,
    load_audio,
    read_video_frames,
    torch_path_supported,
    zero_mean_unit_variance,
)
from .prompt import (
    MAX_SPEAKERS,
    MagtkdInputError,
    build_prompts,
    encode_prompts,
    first_appearance_indices,
    global_map_indices,
    left_pad,
    prompt_separator,
    released_backend,
    released_iemocap_speaker_indices,
)

# Conversations at least this long get a progress bar over their media decoding when the processor's
# `show_progress` attribute is true (`predict_emotions` sets it on a copy): decoding takes ~0.2 s per
# utterance, so a long one would otherwise sit silent for many seconds; a short one needs no bar.
PROGRESS_MIN_UTTERANCES = 16


def _utterances(processor, batch: list[Conversation], what: str):
    """(conversation, utterance) pairs of the batch in order, through a tqdm bar on stderr when asked for
    (see PROGRESS_MIN_UTTERANCES). `disable=None` lets tqdm stay silent when stderr is not a terminal
    (logs, pipes). The bar only watches the loop: the pairs, hence the outputs, are the same."""
    pairs = [(conversation, utterance) for conversation in batch for utterance in conversation.utterances]
    if not getattr(processor, "show_progress", False) or len(pairs) < PROGRESS_MIN_UTTERANCES:
        return pairs
    from tqdm import tqdm  # a dependency (of transformers too); imported only when a bar is shown

    return tqdm(pairs, desc=f"decoding {what}", unit="utt", file=sys.stderr, disable=None, leave=False)


# ---------------------------------------------------------------------- speakers


def conversation_speaker_indices(processor, batch: list[Conversation], previous_speakers) -> list[list[int]]:
    """Per conversation, the speaker index of every utterance (mode-dependent)."""
    indices = []
    running = None if previous_speakers is None else list(previous_speakers)
    for conversation in batch:
        names = [u.speaker for u in conversation.utterances]
        if processor.speaker_mode == "first_appearance":
            conversation_indices = first_appearance_indices(names)
            if max(conversation_indices) >= MAX_SPEAKERS:
                raise MagtkdInputError(
                    f"conversation {conversation.name}: {max(conversation_indices) + 1} speakers "
                    f"({', '.join(dict.fromkeys(names))}); at most {MAX_SPEAKERS} are supported "
                    "(speaker tokens <s1>..<s9>)"
                )
        elif processor.speaker_mode == "global_map":
            try:
                conversation_indices = global_map_indices(names, processor.speaker_map)
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


# ---------------------------------------------------------------------- text


def text_inputs(processor, batch: list[Conversation], speaker_indices) -> dict[str, torch.Tensor]:
    separator = prompt_separator(processor.tokenizer, processor.tokenization_mode)
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
        prompts.extend(build_prompts(texts, indices, separator, processor.text_context))
    # Built on demand (cheap: a JSON round trip) so no tokenizers.Tokenizer sits in the
    # processor's state (which `to_dict` deep-copies).
    backend = released_backend(processor.tokenizer) if processor.tokenization_mode == "released" else None
    ids = encode_prompts(prompts, processor.tokenizer, processor.max_text_tokens, backend=backend)
    input_ids, attention_mask = left_pad(ids, processor.tokenizer.pad_token_id)
    return {
        "input_ids": torch.tensor(input_ids, dtype=torch.long),
        "attention_mask": torch.tensor(attention_mask, dtype=torch.long),
    }


# ---------------------------------------------------------------------- audio


def audio_inputs(processor, batch: list[Conversation]) -> dict[str, torch.Tensor]:
    """input_values, audio_attention_mask (U, T) and has_audio (U,). An utterance without `audio` takes its video's
    sound track; with neither (or a video without a sound track) its audio is absent: has_audio 0 and zeros in its
    rows (T = the longest present waveform; 0 when no utterance has audio)."""
    rate = int(processor.feature_extractor.sampling_rate)
    extractor = processor.feature_extractor
    # released order: normalise the whole clip, then crop (the feature extractor then only pads)
    normalise_first = processor.audio_mode == "released" and bool(getattr(extractor, "do_normalize", False))
    if normalise_first:
        extractor = copy.copy(extractor)
        extractor.do_normalize = False
    crop = None if normalise_first else processor.max_audio_samples
    waveforms, present = [], []
    for conversation, utterance in _utterances(processor, batch, "audio"):
        waveform = _utterance_audio(conversation, utterance, rate, crop)
        present.append(waveform is not None)
        if waveform is None:
            continue
        if normalise_first:
            waveform = zero_mean_unit_variance(waveform)[: processor.max_audio_samples]
        waveforms.append(waveform)
    has_audio = torch.tensor(present, dtype=torch.long)
    if not waveforms:
        empty = torch.zeros(len(present), 0)
        return {"input_values": empty, "audio_attention_mask": empty.long(), "has_audio": has_audio}
    # The extractor sees the present waveforms only, so their padding and normalisation are what they would be in a
    # batch without the absent ones; those get zero rows.
    features = extractor(waveforms, sampling_rate=rate, padding=True, return_attention_mask=True, return_tensors="pt")
    return {
        "input_values": _scatter_rows(features["input_values"].to(torch.float32), has_audio),
        "audio_attention_mask": _scatter_rows(features["attention_mask"].to(torch.long), has_audio),
        "has_audio": has_audio,
    }


def _utterance_audio(conversation, utterance, rate: int, crop):
    """The utterance's waveform, or None when it has no audio: neither `audio` nor `video`, or only a video without a
    sound track. A file that is named but missing or unreadable is an error (missing is not absent)."""
    source, window = utterance.audio, None
    if source is None:
        if utterance.video is None:
            return None
        source, window = utterance.video, utterance.window
    with _naming(conversation, utterance):
        try:
            return load_audio(source, rate, crop, window=window, context=_where(conversation, utterance))
        except MissingSoundTrack:
            if utterance.audio is not None:  # the audio source given explicitly must have sound
                raise
            return None


def _scatter_rows(present_rows: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
    """(P, ...) rows of the present utterances -> (U, ...), zeros where `flags` is 0."""
    if bool(flags.all()):
        return present_rows
    rows = present_rows.new_zeros((flags.shape[0], *present_rows.shape[1:]))
    rows[flags.bool()] = present_rows
    return rows


# ---------------------------------------------------------------------- video


def video_inputs(processor, batch: list[Conversation]) -> dict[str, torch.Tensor]:
    """pixel_values (U, num_frames, 3, h, w) and has_video (U,): an utterance without `video` has has_video 0 and
    zero pixels (a `video` path that does not exist is an error).

    With a frame cache attached (`processor.frame_cache`, see `frame_cache.py`) that was built with this processor's
    frame settings, an utterance found in it is not decoded: its cached resized frames (K, 3, h, w) uint8 are only
    normalised, which gives the same pixel values as decoding. The cache is used on the torch image path only."""
    use_torch = processor.image_backend == "torch" and torch_path_supported(processor.image_processor)
    cache = _usable_frame_cache(processor) if use_torch else None
    videos, present = [], []
    for conversation, utterance in _utterances(processor, batch, "video"):
        present.append(utterance.video is not None)
        if utterance.video is None:
            continue
        cached = cache.lookup(utterance.video, utterance.window) if cache is not None else None
        if cached is not None:
            videos.append(pixel_values_from_resized(cached, processor.image_processor))
            continue
        frames = decode_video_frames(processor, utterance.video, utterance.window, conversation, utterance)
        if use_torch:
            videos.append(frames_to_pixel_values_torch(frames, processor.image_processor))
        else:
            videos.append(frames_to_pixel_values_processor(frames, processor.image_processor))
    has_video = torch.tensor(present, dtype=torch.long)
    if not videos:
        empty = torch.zeros(len(present), processor.num_frames, 3, *empty_frame_size(processor))
        return {"pixel_values": empty, "has_video": has_video}
    return {"pixel_values": _scatter_rows(torch.stack(videos), has_video), "has_video": has_video}


def empty_frame_size(processor) -> tuple[int, int]:
    """(height, width) of the black frames of a clip without frames: the image processor's crop size (224 x 224)."""
    crop = getattr(processor.image_processor, "crop_size", None) or {"height": 224, "width": 224}
    return int(crop["height"]), int(crop["width"])


def decode_video_frames(processor, video: str, window, conversation=None, utterance=None) -> np.ndarray:
    """The kept frames of one utterance's video, RGB uint8 (num_frames, H, W, 3), decoded with the processor's
    settings (the one decoding call of `video_inputs` and of the frame cache's builder). With the conversation and
    the utterance given, a media error names them."""
    context = _where(conversation, utterance) if utterance is not None else None
    naming = _naming(conversation, utterance) if utterance is not None else contextlib.nullcontext()
    with naming:
        return read_video_frames(
            video,
            num_frames=processor.num_frames,
            selection=processor.frame_selection,
            window=window,
            num_threads=processor.video_num_threads,
            empty_frame_size=empty_frame_size(processor),
            padding=processor.time_window_padding,
            context=context,
        )


# ---------------------------------------------------------------------- video: the frame cache's two halves
#
# `frames_to_pixel_values_torch` = resize + center crop on uint8, then rescale + normalise. The frame cache stores
# what the first half gives and runs the second half on it. Both halves call that same function with some of the
# image processor's steps turned off (a settings view), so they cannot drift from it: the pixel values of a cached
# clip equal the decoded clip's exactly.


class _SettingsView:
    """The image processor's settings with some of them replaced (read by `frames_to_pixel_values_torch`)."""

    def __init__(self, image_processor, **replaced):
        self._image_processor, self._replaced = image_processor, replaced

    def __getattr__(self, name):
        replaced = self.__dict__.get("_replaced", {})
        if name in replaced:
            return replaced[name]
        return getattr(self.__dict__["_image_processor"], name)


def resized_frames(frames: np.ndarray, image_processor) -> torch.Tensor:
    """RGB uint8 frames (K, H, W, 3) -> resized and center-cropped frames uint8 (K, 3, h, w), contiguous: the first
    half of `frames_to_pixel_values_torch` (what the frame cache stores)."""
    view = _SettingsView(image_processor, do_rescale=False, do_normalize=False)
    # without rescaling and normalising the function returns the uint8 values as float32: exact integers 0..255
    return frames_to_pixel_values_torch(frames, view).to(torch.uint8).contiguous()


def pixel_values_from_resized(frames: np.ndarray | torch.Tensor, image_processor) -> torch.Tensor:
    """Resized frames uint8 (K, 3, h, w) (`resized_frames`, e.g. from the frame cache) -> pixel values float32
    (K, 3, h, w): the second half of `frames_to_pixel_values_torch` (rescale, normalise)."""
    frames = frames.numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    view = _SettingsView(image_processor, do_resize=False, do_center_crop=False)
    return frames_to_pixel_values_torch(frames.transpose(0, 2, 3, 1), view)


def _usable_frame_cache(processor):
    """The processor's frame cache when one is attached and built with its frame settings, else None (a cache built
    with other settings is never read: its frames would not be this processor's)."""
    cache = getattr(processor, "frame_cache", None)
    if cache is None or not cache.matches(processor):
        return None
    return cache
