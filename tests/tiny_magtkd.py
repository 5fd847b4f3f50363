"""Tiny encoder configs, a tiny processor and generated conversations for the end-to-end tests (no download)."""

from __future__ import annotations

from transformers import Data2VecAudioConfig, RobertaConfig, TimesformerConfig

from magtkd_hf import MagtkdConfig, MagtkdProcessor
from media_fixtures import make_tiny_roberta_tokenizer, write_mp4

HIDDEN, HEADS = 32, 4
IMAGE_SIZE = 32


def tiny_text_config(vocab_size: int, **overrides) -> RobertaConfig:
    settings = dict(
        vocab_size=vocab_size, hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=520, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1,
    )
    return RobertaConfig(**{**settings, **overrides})


def tiny_audio_config(**overrides) -> Data2VecAudioConfig:
    settings = dict(
        hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=HEADS, intermediate_size=64,
        conv_dim=(32, 32, 32), conv_stride=(5, 4, 4), conv_kernel=(10, 8, 8), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4, conv_pos_kernel_size=5, mask_time_length=3,
    )
    return Data2VecAudioConfig(**{**settings, **overrides})


def tiny_video_config(**overrides) -> TimesformerConfig:
    settings = dict(
        image_size=IMAGE_SIZE, patch_size=16, num_frames=8, hidden_size=HIDDEN, num_hidden_layers=2,
        num_attention_heads=HEADS, intermediate_size=64,
    )
    return TimesformerConfig(**{**settings, **overrides})


def tiny_processor(**settings) -> MagtkdProcessor:
    """The tiny RoBERTa tokenizer (+ the 9 speaker tokens), data2vec audio settings, 32 x 32 frames."""
    return MagtkdProcessor(
        make_tiny_roberta_tokenizer(),
        MagtkdProcessor.default_feature_extractor(),
        MagtkdProcessor.default_image_processor(IMAGE_SIZE),
        **settings,
    )


def tiny_config(processor: MagtkdProcessor, preset: str | None = None, **overrides) -> MagtkdConfig:
    """A MagtkdConfig whose text vocabulary covers the processor's tokenizer (speaker tokens included)."""
    settings = dict(
        text_config=tiny_text_config(len(processor.tokenizer)), audio_config=tiny_audio_config(),
        video_config=tiny_video_config(), hidden_size=HIDDEN, num_attention_heads=HEADS, intermediate_size=HIDDEN,
        dropout=0.1,
    )
    settings.update(overrides)
    if preset is not None:
        return MagtkdConfig.from_preset(preset, **settings)
    return MagtkdConfig(**settings)


TEXTS = [
    "hello there how are you today",
    "I am fine thanks and you",
    "what a day it was for all of us",
    "the weather is nice and the sun is out",
    "we are going to the coffee house",
    "Now she feels happy about it",
]


def write_conversation_rows(folder, lengths=(3, 2), seed=0, audio_seconds=None):
    """Dataset rows (the `load_meld` schema) over generated MP4 clips with a sound track; labels vary."""
    rows = []
    for dialogue, length in enumerate(lengths):
        paths, labels, speakers, texts = [], [], [], []
        for utterance in range(length):
            k = dialogue * 7 + utterance + seed
            seconds = audio_seconds if audio_seconds is not None else 0.4 + 0.1 * (k % 3)
            paths.append(str(write_mp4(
                f"{folder}/dia{dialogue}_utt{utterance}.mp4", num_frames=8, width=40, height=32,
                audio_seconds=seconds, tone_hz=220.0 + 60 * (k % 5),
            )))
            labels.append(k % 7)
            speakers.append(["Ross", "Rachel", "Joey"][k % 3])
            texts.append(TEXTS[k % len(TEXTS)])
        rows.append({
            "dialogue_id": str(dialogue), "utterance_ids": [str(u) for u in range(length)], "speakers": speakers,
            "texts": texts, "labels": labels, "video_paths": paths,
        })
    return rows
