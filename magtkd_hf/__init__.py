"""magtkd-hf: MAGTKD for emotion recognition in conversation, Hugging Face compatible.

`import magtkd_hf` registers the package's configs with `AutoConfig` and defers the rest: the models, the processor,
the builders and the pipeline are imported on first use (`magtkd_hf.MagtkdForEmotionRecognition`, the first MAGTKD
config built, e.g. by `AutoModel.from_pretrained`, or the first `transformers.pipelines` import), because their
dependencies (`transformers.modeling_utils`, `processing_utils`, `datasets`) take about as long to import again as
`import torch, transformers` itself.
"""

import importlib
import importlib.abc
import importlib.util
import sys

from transformers import AutoConfig

from . import configuration_magtkd
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

__version__ = "0.1.0"

PIPELINE_TASK = "emotion-recognition-in-conversation"

# Public name -> the module defining it, imported on first access.
_LAZY_NAMES = {
    "MagtkdDataCollator": ".data_collator",
    "MagtkdEmotionRecognitionOutput": ".modeling_magtkd",
    "MagtkdForEmotionRecognition": ".modeling_magtkd",
    "MagtkdFusionModel": ".modeling_magtkd_fusion",
    "MagtkdFusionOutput": ".modeling_magtkd_fusion",
    "MagtkdAudioModel": ".modeling_magtkd_stages",
    "MagtkdDistillationModel": ".modeling_magtkd_stages",
    "MagtkdDistillationOutput": ".modeling_magtkd_stages",
    "MagtkdTextModel": ".modeling_magtkd_stages",
    "MagtkdUnimodalOutput": ".modeling_magtkd_stages",
    "MagtkdVideoModel": ".modeling_magtkd_stages",
    "EmotionRecognitionInConversationPipeline": ".pipeline_magtkd",
    "predict_emotions": ".inference",
    "MagtkdStream": ".streaming",
    "online_logits": ".streaming",
    "MagtkdProcessor": ".processors",
    "load_iemocap": ".datasets_scripts",
    "load_meld": ".datasets_scripts",
    "ERC_METRIC_PATH": ".metrics",
    "erc_compute_metrics": ".metrics",
    "erc_scores": ".metrics",
    "load_erc_metric": ".metrics",
}
# config class name -> model class name: one model class per config class, so that a saved folder's `model_type`
# names the class that loads it.
MODEL_CLASS_NAMES = {
    "MagtkdTextConfig": "MagtkdTextModel",
    "MagtkdAudioConfig": "MagtkdAudioModel",
    "MagtkdVideoConfig": "MagtkdVideoModel",
    "MagtkdFusionConfig": "MagtkdFusionModel",
    "MagtkdConfig": "MagtkdForEmotionRecognition",
}
CONFIG_CLASSES = (MagtkdTextConfig, MagtkdAudioConfig, MagtkdVideoConfig, MagtkdFusionConfig, MagtkdConfig)


def __getattr__(name: str):
    if name == "MODEL_CLASSES":
        register_models()
        return {config: __getattr__(MODEL_CLASS_NAMES[config.__name__]) for config in CONFIG_CLASSES}
    if name not in _LAZY_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY_NAMES[name], __name__), name)
    globals()[name] = value
    register_models()
    return value


def __dir__():
    return sorted({*globals(), *_LAZY_NAMES, "MODEL_CLASSES"})


def _register_configs() -> None:
    for config_class in CONFIG_CLASSES:
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        # `save_pretrained` then writes the module files and `auto_map`, for `trust_remote_code=True` loading.
        config_class.register_for_auto_class()


_models_registered = False


def register_models() -> None:
    """Registers the model classes with `AutoModel`, the processor with `AutoProcessor` and the pipeline task (once).
    Runs by itself when a MAGTKD config is first built, a model class first accessed or `transformers.pipelines`
    imported; call it to register eagerly."""
    global _models_registered
    if _models_registered:
        return
    _models_registered = True
    configuration_magtkd.on_first_config = None
    from transformers import AutoModel, AutoProcessor

    for config_class in CONFIG_CLASSES:
        model_class = __getattr__(MODEL_CLASS_NAMES[config_class.__name__])
        AutoModel.register(config_class, model_class, exist_ok=True)
        model_class.register_for_auto_class("AutoModel")
    AutoProcessor.register(MagtkdConfig, __getattr__("MagtkdProcessor"), exist_ok=True)
    from transformers.pipelines import PIPELINE_REGISTRY  # already imported by the pipeline module

    PIPELINE_REGISTRY.register_pipeline(
        PIPELINE_TASK,
        pipeline_class=__getattr__("EmotionRecognitionInConversationPipeline"),
        pt_model=__getattr__("MagtkdForEmotionRecognition"),
        type="multimodal",
    )


class _RegisterAfterPipelineImports(importlib.abc.MetaPathFinder):
    """Runs `register_models` right after `transformers.pipelines` (imported by `from transformers import pipeline`)
    or the package's pipeline module is imported, so that `pipeline("emotion-recognition-in-conversation", ...)` knows
    the task although `import magtkd_hf` did not import that heavy module itself. While the package's pipeline module
    is still loading (it imports `transformers.pipelines`), registration waits for it to finish."""

    WATCHED = ("transformers.pipelines", f"{__name__}.pipeline_magtkd")

    def __init__(self):
        self.loading: set[str] = set()

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.WATCHED or fullname in self.loading:
            return None
        self.loading.add(fullname)  # the lookup below comes back here: let the other finders answer it
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self.loading.discard(fullname)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def execute_then_register(module):
            self.loading.add(fullname)
            try:
                execute(module)
            finally:
                self.loading.discard(fullname)
            if not self.loading:
                sys.meta_path.remove(self)
                register_models()

        spec.loader.exec_module = execute_then_register
        return spec


_register_configs()
configuration_magtkd.on_first_config = register_models
if "transformers.pipelines" in sys.modules:
    register_models()
else:
    sys.meta_path.insert(0, _RegisterAfterPipelineImports())

__all__ = [
    "CONFIG_CLASSES",
    "DATASETS",
    "IEMOCAP_LABELS",
    "MELD_LABELS",
    "MODEL_CLASSES",
    "MagtkdConfig",
    "MagtkdAudioConfig",
    "MagtkdTextConfig",
    "MagtkdVideoConfig",
    "MagtkdFusionConfig",
    "dataset_facts",
    "register_models",
    *_LAZY_NAMES,
]
