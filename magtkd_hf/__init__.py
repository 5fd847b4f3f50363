"""magtkd-hf: MAGTKD for emotion recognition in conversation, Hugging Face compatible."""

from transformers import AutoConfig, AutoModel, AutoProcessor
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_magtkd import (
    DATASETS,
    IEMOCAP_LABELS,
    MELD_LABELS,
    MagtkdAudioConfig,
    MagtkdConfig,
    MagtkdFusionConfig,
    MagtkdTextConfig,
    MagtkdVideoConfig,
    dataset_facts,
)
from .datasets_scripts import load_iemocap, load_meld
from .data_collator import MagtkdDataCollator
from .modeling_magtkd import MagtkdEmotionRecognitionOutput, MagtkdForEmotionRecognition
from .modeling_magtkd_fusion import MagtkdFusionModel, MagtkdFusionOutput
from .modeling_magtkd_stages import (
    MagtkdAudioModel,
    MagtkdDistillationModel,
    MagtkdDistillationOutput,
    MagtkdTextModel,
    MagtkdUnimodalOutput,
    MagtkdVideoModel,
)
from .inference import EmotionRecognitionInConversationPipeline, predict_emotions
from .processors import MagtkdProcessor

__version__ = "0.1.0"


# One model class per config class: a saved folder's `model_type` names the class that loads it.
MODEL_CLASSES = {
    MagtkdTextConfig: MagtkdTextModel,
    MagtkdAudioConfig: MagtkdAudioModel,
    MagtkdVideoConfig: MagtkdVideoModel,
    MagtkdFusionConfig: MagtkdFusionModel,
    MagtkdConfig: MagtkdForEmotionRecognition,
}


def _register_auto_classes():
    for config_class, model_class in MODEL_CLASSES.items():
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)
        # `save_pretrained` then writes the module files and `auto_map`, for `trust_remote_code=True` loading.
        config_class.register_for_auto_class()
        model_class.register_for_auto_class("AutoModel")
    AutoProcessor.register(MagtkdConfig, MagtkdProcessor, exist_ok=True)
    PIPELINE_REGISTRY.register_pipeline(
        "emotion-recognition-in-conversation",
        pipeline_class=EmotionRecognitionInConversationPipeline,
        pt_model=MagtkdForEmotionRecognition,
        type="multimodal",
    )


_register_auto_classes()

__all__ = [
    "DATASETS",
    "IEMOCAP_LABELS",
    "MELD_LABELS",
    "MODEL_CLASSES",
    "MagtkdAudioConfig",
    "MagtkdAudioModel",
    "MagtkdConfig",
    "MagtkdDistillationModel",
    "MagtkdDistillationOutput",
    "MagtkdDataCollator",
    "MagtkdEmotionRecognitionOutput",
    "MagtkdForEmotionRecognition",
    "MagtkdFusionConfig",
    "MagtkdFusionModel",
    "MagtkdFusionOutput",
    "MagtkdProcessor",
    "MagtkdTextConfig",
    "MagtkdTextModel",
    "MagtkdUnimodalOutput",
    "MagtkdVideoConfig",
    "MagtkdVideoModel",
    "dataset_facts",
    "EmotionRecognitionInConversationPipeline",
    "load_iemocap",
    "load_meld",
    "predict_emotions",
]
