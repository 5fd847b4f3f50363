"""Tiny encoder configs, a tiny processor and generated conversations for the end-to-end tests (no download)."""

from __future__ import annotations

from magtkd_hf import MagtkdAudioConfig, MagtkdConfig, MagtkdFusionConfig, MagtkdProcessor, MagtkdTextConfig, MagtkdVideoConfig
from magtkd_hf.apps.tiny import TINY_HEADS as HEADS
from magtkd_hf.apps.tiny import TINY_HIDDEN as HIDDEN
from magtkd_hf.apps.tiny import TINY_IMAGE_SIZE as IMAGE_SIZE
from magtkd_hf.apps.tiny import tiny_audio_config, tiny_text_config, tiny_video_config  # noqa: F401 (re-exported)
from magtkd_hf.apps.tiny import tiny_processor as package_tiny_processor
from media_fixtures import make_tiny_roberta_tokenizer, write_mp4


def tiny_processor(**settings) -> MagtkdProcessor:
    """The tiny RoBERTa tokenizer (+ the 9 speaker tokens), data2vec audio settings, 32 x 32 frames."""
    return package_tiny_processor(make_tiny_roberta_tokenizer(), **settings)


STAGE_CONFIG_CLASSES = {"text": MagtkdTextConfig, "audio": MagtkdAudioConfig, "video": MagtkdVideoConfig}


def tiny_stage_config(processor: MagtkdProcessor, modality: str, preset: str = "meld"):
    """The tiny text (vocabulary of the processor's tokenizer, speaker tokens included), audio or video stage config."""
    encoder_config = {
        "text": lambda: tiny_text_config(len(processor.tokenizer)), "audio": tiny_audio_config, "video": tiny_video_config,
    }[modality]()
    extra = {"feature_size": HIDDEN} if modality == "text" else {}
    return STAGE_CONFIG_CLASSES[modality].from_preset(preset, encoder_config=encoder_config, **extra)


def tiny_fusion_config(preset: str = "meld", **overrides) -> MagtkdFusionConfig:
    settings = dict(hidden_size=HIDDEN, num_attention_heads=HEADS, intermediate_size=HIDDEN, dropout=0.1)
    return MagtkdFusionConfig.from_preset(preset, **{**settings, **overrides})


def tiny_config(processor: MagtkdProcessor, preset: str | None = None, **fusion_overrides) -> MagtkdConfig:
    """The end-to-end config of the tiny stage configs and a tiny fusion (`fusion_overrides` win)."""
    preset = preset or "meld"
    stages = {f"{modality}_config": tiny_stage_config(processor, modality, preset) for modality in STAGE_CONFIG_CLASSES}
    return MagtkdConfig(**stages, fusion_model_config=tiny_fusion_config(preset, **fusion_overrides))


TEXTS = [
    "hello there how are you today",
    "I am fine thanks and you",
    "what a day it was for all of us",
    "the weather is nice and the sun is out",
    "we are going to the coffee house",
    "Now she feels happy about it",
]


def save_tiny_end_to_end(folder):
    """A seeded tiny end-to-end model and its processor, saved in `folder` as `magtkd-hf train all` saves them."""
    import torch

    from magtkd_hf import MagtkdForEmotionRecognition

    processor = tiny_processor()
    torch.manual_seed(0)
    MagtkdForEmotionRecognition(tiny_config(processor)).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


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
