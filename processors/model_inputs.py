"""The per-utterance inputs of MAGTKD's three encoders for a batch of normalised conversations, each function applying
the `MagtkdProcessor`'s tokenizer, feature extractor or image processor and settings."""

from __future__ import annotations

import contextlib
import copy
import reprlib
import sys

import numpy as np
import torch

from .conversation import Conversation
from .media import MissingSoundTrack, load_audio, read_video_frames
from .media_pixels import frames_to_pixel_values_processor, frames_to_pixel_values_torch, rescale_and_normalise
from .media_pixels import torch_path_supported
from .prompt import MAX_CHARS_PER_TOKEN, MagtkdInputError, bounded_text, encode_prompts, text_encoder

# Conversations at least this long get a progress bar over their media decoding when the processor's `show_progress`
# attribute is true (`predict_emotions` sets it on a copy): decoding takes ~0.2 s per utterance.
PROGRESS_MIN_UTTERANCES = 16


def _utterances(processor, batch: list[Conversation], what: str):
    """(conversation, utterance) pairs in order; through a tqdm bar on stderr when asked for (silent when stderr is not
    a terminal)."""
    pairs = [(conversation, utterance) for conversation in batch for utterance in conversation.utterances]
    if not getattr(processor, "show_progress", False) or len(pairs) < PROGRESS_MIN_UTTERANCES:
        return pairs
    from tqdm import tqdm

    return tqdm(pairs, desc=f"decoding {what}", unit="utt", file=sys.stderr, disable=None, leave=False)


def _scatter_rows(present_rows: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
    """(P, ...) rows of the present utterances -> (U, ...), zeros where `flags` is 0."""
    if bool(flags.all()):
        return present_rows
    rows = present_rows.new_zeros((flags.shape[0], *present_rows.shape[1:]))
    rows[flags.bool()] = present_rows
    return rows


def text_inputs(processor, batch: list[Conversation], speaker_indices) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask (U, L): the prompts, LEFT padded, the mask token last."""
    released = processor.tokenization_mode == "released"
    encode = text_encoder(processor.tokenizer, released)
    ids = []
    for conversation, indices in zip(batch, speaker_indices):
        texts = [_transcript(processor, conversation, utterance, encode) for utterance in conversation.utterances]
        ids += encode_prompts(texts, indices, processor.tokenizer, processor.max_text_tokens, processor.text_context,
                              released, encode)
    longest = max(len(row) for row in ids)
    input_ids = [[processor.tokenizer.pad_token_id] * (longest - len(row)) + row for row in ids]
    attention_mask = [[0] * (longest - len(row)) + [1] * len(row) for row in ids]
    return {"input_ids": torch.tensor(input_ids, dtype=torch.long),
            "attention_mask": torch.tensor(attention_mask, dtype=torch.long)}


def _transcript(processor, conversation, utterance, encode) -> str:
    """The utterance's text, stripped and cut to a bounded length (`bounded_text`); a cut text must still hold the
    `max_text_tokens` the prompt keeps, else it is refused rather than read short."""
    text, max_tokens = utterance.text.strip() if isinstance(utterance.text, str) else None, processor.max_text_tokens
    if not text:
        raise MagtkdInputError(f"{conversation.where(utterance)}: empty or non-text transcript "
                               f"{reprlib.repr(utterance.text)}")
    cut = bounded_text(text, max_tokens)
    if len(cut) < len(text) and len(encode([cut])[0]) < max_tokens:
        raise MagtkdInputError(
            f"{conversation.where(utterance)}: the transcript has {len(text):,} characters; only its last "
            f"{max_tokens * MAX_CHARS_PER_TOKEN:,} are read (max_text_tokens {max_tokens} x {MAX_CHARS_PER_TOKEN}), "
            f"and from their first word start they hold fewer than {max_tokens} tokens: shorten it"
        )
    return cut


def audio_inputs(processor, batch: list[Conversation]) -> dict[str, torch.Tensor]:
    """input_values, audio_attention_mask (U, T) and has_audio (U,). An utterance without `audio` takes its video's
    sound track; with neither (or a video without one) its audio is absent: has_audio 0 and zero rows."""
    rate = int(processor.feature_extractor.sampling_rate)
    extractor = processor.feature_extractor
    # "released": normalise the whole clip, then crop (the feature extractor then only pads)
    normalise_first = processor.audio_mode == "released" and bool(getattr(extractor, "do_normalize", False))
    if normalise_first:
        extractor = copy.copy(extractor)
        extractor.do_normalize = False
    crop = None if normalise_first else processor.max_audio_samples
    waveforms, present = [], []
    for conversation, utterance in _utterances(processor, batch, "audio"):
        waveform = _utterance_audio(conversation, utterance, rate, crop)
        present.append(waveform is not None)
        if waveform is not None and normalise_first:  # the feature extractor's rule, on the whole clip
            waveform = ((waveform - waveform.mean()) / np.sqrt(waveform.var() + 1e-7))[: processor.max_audio_samples]
        if waveform is not None:
            waveforms.append(waveform)
    has_audio = torch.tensor(present, dtype=torch.long)
    if not waveforms:
        empty = torch.zeros(len(present), 0)
        return {"input_values": empty, "audio_attention_mask": empty.long(), "has_audio": has_audio}
    # Only the present waveforms are padded and normalised together, as in a batch without the absent ones.
    features = extractor(waveforms, sampling_rate=rate, padding=True, return_attention_mask=True, return_tensors="pt")
    return {
        "input_values": _scatter_rows(features["input_values"].to(torch.float32), has_audio),
        "audio_attention_mask": _scatter_rows(features["attention_mask"].to(torch.long), has_audio),
        "has_audio": has_audio,
    }


def _utterance_audio(conversation, utterance, rate: int, crop):
    """The waveform, or None without audio: neither `audio` nor `video`, or only a video without a sound track. A file
    named but missing or unreadable is an error (missing is not absent)."""
    source, window = (utterance.audio, None) if utterance.audio is not None else (utterance.video, utterance.window)
    if source is None:
        return None
    with conversation.naming(utterance):
        try:
            return load_audio(source, rate, crop, window=window, context=conversation.where(utterance))
        except MissingSoundTrack:
            if utterance.audio is not None:  # an audio source given explicitly must have sound
                raise
            return None


def video_inputs(processor, batch: list[Conversation]) -> dict[str, torch.Tensor]:
    """pixel_values (U, num_frames, 3, h, w) and has_video (U,): without `video`, has_video 0 and zero pixels.

    A frame cache attached to the processor (`processor.frame_cache`, see `frame_cache.py`) and built with its frame
    settings serves the clips it holds: their resized frames are only normalised, the same pixel values as decoding
    (torch image path only)."""
    use_torch = processor.image_backend == "torch" and torch_path_supported(processor.image_processor)
    cache = getattr(processor, "frame_cache", None) if use_torch else None
    cache = cache if cache is not None and cache.matches(processor) else None
    to_pixels = frames_to_pixel_values_torch if use_torch else frames_to_pixel_values_processor
    videos, present = [], []
    for conversation, utterance in _utterances(processor, batch, "video"):
        present.append(utterance.video is not None)
        if utterance.video is None:
            continue
        cached = cache.lookup(utterance.video, utterance.window) if cache is not None else None
        if cached is not None:
            videos.append(rescale_and_normalise(torch.from_numpy(cached), processor.image_processor))
            continue
        frames = decode_video_frames(processor, utterance.video, utterance.window, conversation, utterance)
        videos.append(to_pixels(frames, processor.image_processor))
    has_video = torch.tensor(present, dtype=torch.long)
    if not videos:
        empty = torch.zeros(len(present), processor.num_frames, 3, *empty_frame_size(processor))
        return {"pixel_values": empty, "has_video": has_video}
    return {"pixel_values": _scatter_rows(torch.stack(videos), has_video), "has_video": has_video}


def empty_frame_size(processor) -> tuple[int, int]:
    """(height, width) of the black frames of a clip without frames: the image processor's crop size."""
    crop = getattr(processor.image_processor, "crop_size", None) or {"height": 224, "width": 224}
    return int(crop["height"]), int(crop["width"])


def decode_video_frames(processor, video: str, window, conversation=None, utterance=None) -> np.ndarray:
    """The kept frames of one utterance's video, RGB uint8 (num_frames, H, W, 3), with the processor's settings; with
    the conversation and utterance given, a media error names them."""
    naming = conversation.naming(utterance) if utterance is not None else contextlib.nullcontext()
    with naming:
        return read_video_frames(
            video, processor.num_frames, processor.frame_selection, window, processor.video_num_threads,
            empty_frame_size(processor), padding=processor.time_window_padding,
            context=conversation.where(utterance) if utterance is not None else None,
        )
