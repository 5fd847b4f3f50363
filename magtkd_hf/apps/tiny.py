"""Tiny random-weight MAGTKD components built offline (nothing downloaded): for the demo, the tests and the benchmarks.

The architectures are the real ones (RoBERTa, data2vec-audio, TimeSformer), only a few layers and 32-48 wide, so the
whole recipe runs on a CPU in seconds.
"""

import json
from collections.abc import Iterable
from pathlib import Path

from transformers import (
    Data2VecAudioConfig,
    Data2VecAudioModel,
    RobertaConfig,
    RobertaModel,
    RobertaTokenizer,
    TimesformerConfig,
    TimesformerModel,
)

from ..processors import MagtkdProcessor

TINY_HIDDEN, TINY_HEADS, TINY_IMAGE_SIZE = 32, 4, 32
ROBERTA_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
# A few sentences: the benchmarks train their tokenizer on them (x 4, vocabulary 300) and build prompts of their words.
SMALL_TALK = ("how are you doing today", "I am fine thanks", "what a day it was")


def train_tiny_roberta_tokenizer(texts: Iterable[str], vocab_size: int = 400) -> RobertaTokenizer:
    """A byte-level BPE RoBERTa tokenizer trained on `texts`: the project's one tiny-tokenizer builder (demo, tests,
    benchmarks). (Built from vocab and merges objects: transformers 5 silently ignores `vocab_file`/`merges_file`
    passed to the constructor.)"""
    from tokenizers import ByteLevelBPETokenizer

    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(
        list(texts), vocab_size=vocab_size, min_frequency=1, special_tokens=ROBERTA_SPECIAL_TOKENS,
        show_progress=False,
    )
    model = json.loads(trainer._tokenizer.to_str())["model"]
    merges = [tuple(merge.split(" ")) if isinstance(merge, str) else tuple(merge) for merge in model["merges"]]
    return RobertaTokenizer(vocab=model["vocab"], merges=merges)


def tiny_text_config(vocab_size: int, **overrides) -> RobertaConfig:
    settings = dict(
        vocab_size=vocab_size, hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=520, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1,
    )
    return RobertaConfig(**{**settings, **overrides})


def tiny_audio_config(**overrides) -> Data2VecAudioConfig:
    settings = dict(
        hidden_size=TINY_HIDDEN, num_hidden_layers=2, num_attention_heads=TINY_HEADS, intermediate_size=64,
        conv_dim=(32, 32, 32), conv_stride=(5, 4, 4), conv_kernel=(10, 8, 8), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4, conv_pos_kernel_size=5, mask_time_length=3,
    )
    return Data2VecAudioConfig(**{**settings, **overrides})


def tiny_video_config(**overrides) -> TimesformerConfig:
    settings = dict(
        image_size=TINY_IMAGE_SIZE, patch_size=16, num_frames=8, hidden_size=TINY_HIDDEN, num_hidden_layers=2,
        num_attention_heads=TINY_HEADS, intermediate_size=64,
    )
    return TimesformerConfig(**{**settings, **overrides})


def tiny_processor(tokenizer: RobertaTokenizer, **settings) -> MagtkdProcessor:
    """A processor over `tokenizer` (the 9 speaker tokens get registered), data2vec audio settings, 32 x 32 frames."""
    return MagtkdProcessor(
        tokenizer,
        MagtkdProcessor.default_feature_extractor(),
        MagtkdProcessor.default_image_processor(TINY_IMAGE_SIZE),
        **settings,
    )


def write_tiny_components(folder: str | Path, texts: Iterable[str]) -> dict[str, Path]:
    """
    Saves a tiny processor (tokenizer trained on `texts`) and random tiny text, audio and video encoders under
    `folder`, as the recipe takes them (`--processor`, `--text-encoder`, ...). Returns their paths.
    """
    folder = Path(folder)
    processor = tiny_processor(train_tiny_roberta_tokenizer(texts))
    paths = {name: folder / name for name in ("processor", "text-encoder", "audio-encoder", "video-encoder")}
    processor.save_pretrained(str(paths["processor"]))
    RobertaModel(tiny_text_config(len(processor.tokenizer)), add_pooling_layer=False).save_pretrained(
        str(paths["text-encoder"])
    )
    Data2VecAudioModel(tiny_audio_config()).save_pretrained(str(paths["audio-encoder"]))
    TimesformerModel(tiny_video_config()).save_pretrained(str(paths["video-encoder"]))
    return paths
