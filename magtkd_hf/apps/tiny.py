"""Tiny random-weight MAGTKD components (real architectures, 32-48 wide) built offline for demo, tests, benchmarks."""

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import ByteLevelBPETokenizer
from transformers import Data2VecAudioConfig, Data2VecAudioModel, RobertaConfig, RobertaModel, RobertaTokenizer
from transformers import TimesformerConfig, TimesformerModel

from ..processors import MagtkdProcessor

TINY_HIDDEN, TINY_HEADS, TINY_IMAGE_SIZE = 32, 4, 32
SMALL_TALK = ("how are you doing today", "I am fine thanks", "what a day it was")


def train_tiny_roberta_tokenizer(texts: Iterable[str], vocab_size: int = 400) -> RobertaTokenizer:
    """A byte-level BPE RoBERTa tokenizer trained on `texts` (transformers 5 ignores `vocab_file`/`merges_file`)."""
    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(list(texts), vocab_size=vocab_size, min_frequency=1, show_progress=False,
                                special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    model = json.loads(trainer.to_str())["model"]
    merges = [tuple(merge.split(" ")) if isinstance(merge, str) else tuple(merge) for merge in model["merges"]]
    return RobertaTokenizer(vocab=model["vocab"], merges=merges)


def tiny_text_config(vocab_size: int, **overrides) -> RobertaConfig:
    return RobertaConfig(**{
        "vocab_size": vocab_size, "hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 64, "max_position_embeddings": 520, "type_vocab_size": 1, "layer_norm_eps": 1e-5,
        "pad_token_id": 1, **overrides,
    })


def tiny_audio_config(**overrides) -> Data2VecAudioConfig:
    return Data2VecAudioConfig(**{
        "hidden_size": TINY_HIDDEN, "num_hidden_layers": 2, "num_attention_heads": TINY_HEADS, "intermediate_size": 64,
        "conv_dim": (32, 32, 32), "conv_stride": (5, 4, 4), "conv_kernel": (10, 8, 8), "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4, "conv_pos_kernel_size": 5, "mask_time_length": 3, **overrides,
    })


def tiny_video_config(**overrides) -> TimesformerConfig:
    return TimesformerConfig(**{
        "image_size": TINY_IMAGE_SIZE, "patch_size": 16, "num_frames": 8, "hidden_size": TINY_HIDDEN,
        "num_hidden_layers": 2, "num_attention_heads": TINY_HEADS, "intermediate_size": 64, **overrides,
    })


def tiny_processor(tokenizer: RobertaTokenizer, **settings) -> MagtkdProcessor:
    """A processor over `tokenizer` (the 9 speaker tokens get registered), data2vec audio settings, 32 x 32 frames."""
    return MagtkdProcessor(tokenizer, MagtkdProcessor.default_feature_extractor(),
                           MagtkdProcessor.default_image_processor(TINY_IMAGE_SIZE), **settings)


def write_tiny_components(folder: str | Path, texts: Iterable[str]) -> dict[str, Path]:
    """Saves a tiny processor (tokenizer trained on `texts`) and random tiny encoders under `folder`: their paths."""
    paths = {name: Path(folder) / name for name in ("processor", "text-encoder", "audio-encoder", "video-encoder")}
    processor = tiny_processor(train_tiny_roberta_tokenizer(texts))
    processor.save_pretrained(str(paths["processor"]))
    text_encoder = RobertaModel(tiny_text_config(len(processor.tokenizer)), add_pooling_layer=False)
    for name, encoder in (("text-encoder", text_encoder), ("audio-encoder", Data2VecAudioModel(tiny_audio_config())),
                          ("video-encoder", TimesformerModel(tiny_video_config()))):
        encoder.save_pretrained(str(paths[name]))
    return paths
