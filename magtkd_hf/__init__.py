"""magtkd-hf: MAGTKD for emotion recognition in conversation, Hugging Face compatible.

`import magtkd_hf` registers the configs, models, processor and the pipeline task with transformers, as transformers'
own models are registered: after it, `AutoConfig`, `AutoModel`, `AutoProcessor` and `pipeline(...)` load any saved
MAGTKD folder, in any order, without `trust_remote_code`.
"""

from transformers import AutoConfig, AutoModel, AutoProcessor
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_magtkd import (
    CONFIG_CLASSES,
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
from .data_collator import MagtkdDataCollator
from .datasets_scripts import load_iemocap, load_meld
from .inference import predict_emotions
from .metrics import ERC_METRIC_PATH, erc_compute_metrics, erc_scores, load_erc_metric
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
from .pipeline_magtkd import TASK as PIPELINE_TASK
from .pipeline_magtkd import EmotionRecognitionInConversationPipeline
from .processors import MagtkdProcessor
from .streaming import MagtkdStream, online_logits

__version__ = "0.1.0"

# One model class per config class, so that a saved folder's `model_type` names the class that loads it.
MODEL_CLASSES = dict(zip(CONFIG_CLASSES, (
    MagtkdTextModel, MagtkdAudioModel, MagtkdVideoModel, MagtkdFusionModel, MagtkdForEmotionRecognition
)))

for _config_class, _model_class in MODEL_CLASSES.items():
    AutoConfig.register(_config_class.model_type, _config_class, exist_ok=True)
    AutoModel.register(_config_class, _model_class, exist_ok=True)
    # `save_pretrained` then writes the module files and `auto_map`, for `trust_remote_code=True` loading.
    _config_class.register_for_auto_class()
    _model_class.register_for_auto_class("AutoModel")
AutoProcessor.register(MagtkdConfig, MagtkdProcessor, exist_ok=True)
PIPELINE_REGISTRY.register_pipeline(
    PIPELINE_TASK,
    pipeline_class=EmotionRecognitionInConversationPipeline,
    pt_model=MagtkdForEmotionRecognition,
    type="multimodal",
)

__all__ = [
    "CONFIG_CLASSES",
    "DATASETS",
    "ERC_METRIC_PATH",
    "EmotionRecognitionInConversationPipeline",
    "IEMOCAP_LABELS",
    "MELD_LABELS",
    "MODEL_CLASSES",
    "PIPELINE_TASK",
    "MagtkdAudioConfig",
    "MagtkdAudioModel",
    "MagtkdConfig",
    "MagtkdDataCollator",
    "MagtkdDistillationModel",
    "MagtkdDistillationOutput",
    "MagtkdEmotionRecognitionOutput",
    "MagtkdForEmotionRecognition",
    "MagtkdFusionConfig",
    "MagtkdFusionModel",
    "MagtkdFusionOutput",
    "MagtkdProcessor",
    "MagtkdStream",
    "MagtkdTextConfig",
    "MagtkdTextModel",
    "MagtkdUnimodalOutput",
    "MagtkdVideoConfig",
    "MagtkdVideoModel",
    "dataset_facts",
    "erc_compute_metrics",
    "erc_scores",
    "load_erc_metric",
    "load_iemocap",
    "load_meld",
    "online_logits",
    "predict_emotions",
]
