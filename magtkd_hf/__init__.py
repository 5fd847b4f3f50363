"""magtkd-hf: MAGTKD for emotion recognition in conversation, Hugging Face compatible."""

from transformers import AutoConfig, AutoModel, AutoProcessor
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_magtkd import IEMOCAP_LABELS, MELD_LABELS, MagtkdConfig, MagtkdFusionConfig
from .datasets_scripts import load_iemocap, load_meld
from .data_collator import MagtkdDataCollator
from .modeling_magtkd import (
    MagtkdAudioModel,
    MagtkdEmotionRecognitionOutput,
    MagtkdForEmotionRecognition,
    MagtkdFusionModel,
    MagtkdFusionOutput,
    MagtkdTextModel,
    MagtkdUnimodalOutput,
    MagtkdVideoModel,
)
from .inference import EmotionRecognitionInConversationPipeline, predict_emotions
from .processors import MagtkdProcessor

__version__ = "0.1.0"


def _register_auto_classes():
    AutoConfig.register(MagtkdFusionConfig.model_type, MagtkdFusionConfig, exist_ok=True)
    AutoConfig.register(MagtkdConfig.model_type, MagtkdConfig, exist_ok=True)
    AutoModel.register(MagtkdFusionConfig, MagtkdFusionModel, exist_ok=True)
    AutoModel.register(MagtkdConfig, MagtkdForEmotionRecognition, exist_ok=True)
    AutoProcessor.register(MagtkdConfig, MagtkdProcessor, exist_ok=True)
    # `save_pretrained` then writes the module files and `auto_map`, for `trust_remote_code=True` loading.
    MagtkdFusionConfig.register_for_auto_class()
    MagtkdConfig.register_for_auto_class()
    MagtkdFusionModel.register_for_auto_class("AutoModel")
    MagtkdForEmotionRecognition.register_for_auto_class("AutoModel")
    PIPELINE_REGISTRY.register_pipeline(
        "emotion-recognition-in-conversation",
        pipeline_class=EmotionRecognitionInConversationPipeline,
        pt_model=MagtkdForEmotionRecognition,
        type="multimodal",
    )


_register_auto_classes()

__all__ = [
    "IEMOCAP_LABELS",
    "MELD_LABELS",
    "MagtkdAudioModel",
    "MagtkdConfig",
    "MagtkdDataCollator",
    "MagtkdEmotionRecognitionOutput",
    "MagtkdForEmotionRecognition",
    "MagtkdFusionConfig",
    "MagtkdFusionModel",
    "MagtkdFusionOutput",
    "MagtkdProcessor",
    "MagtkdTextModel",
    "MagtkdUnimodalOutput",
    "MagtkdVideoModel",
    "EmotionRecognitionInConversationPipeline",
    "load_iemocap",
    "load_meld",
    "predict_emotions",
]
