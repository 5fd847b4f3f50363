"""Loading saved folders safely: the package's own classes for the package's model types, no code from the folder unless
the user asks (`trust_remote_code=True`), and a refusal, naming the file, for weights that do not fit the model."""

import importlib
import json
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError
from transformers import AutoConfig, AutoModel, AutoProcessor, PreTrainedConfig, PreTrainedModel

from .configuration_magtkd import CONFIG_CLASSES

CONFIG_CLASSES_BY_TYPE = {config_class.model_type: config_class for config_class in CONFIG_CLASSES}


class ModelFolderError(ValueError):
    """A model folder that cannot be loaded as asked: missing, of an unknown kind, or with unfit weights."""


def read_json_object(path: Path, what: str) -> dict:
    """A JSON file that must hold an object (`what` it is, for the message), or a one-line [`ModelFolderError`]."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ModelFolderError(f"{path}: not valid JSON ({error}).") from None
    if not isinstance(value, dict):
        raise ModelFolderError(f"{path}: {what} must be a JSON object, not a {type(value).__name__}.")
    return value


def read_config_dict(folder: Path) -> dict:
    """The folder's config.json as a dict, or a one-line [`ModelFolderError`] naming the file."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ModelFolderError(
            f"{folder}: no such model folder (no {config_file.name}); give a folder saved by magtkd-hf "
            "(`save_pretrained`, `magtkd-hf train`, `convert-released`)."
        )
    return read_json_object(config_file, "a model config")


def load_config(folder, trust_remote_code: bool = False) -> PreTrainedConfig:
    """The config of a saved folder: the package's class for a magtkd model type; anything else only with
    `trust_remote_code=True` (which may run the folder's code)."""
    folder = Path(folder)
    model_type = read_config_dict(folder).get("model_type")
    if model_type in CONFIG_CLASSES_BY_TYPE:
        return CONFIG_CLASSES_BY_TYPE[model_type].from_pretrained(folder)
    if not trust_remote_code:
        raise ModelFolderError(
            f"{folder / 'config.json'}: model_type {model_type!r} is not one of magtkd-hf's ({sorted(CONFIG_CLASSES_BY_TYPE)}); "
            "loading it would run code from the folder. Pass --trust-remote-code (trust_remote_code=True) only if you "
            "trust its source."
        )
    return AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)


def check_model_class(folder, config: PreTrainedConfig, expected) -> None:
    """Refuse a folder that holds another model than `expected` (a model class or a tuple of them), naming the folder,
    the class found (the config's `architectures`, else its model type) and the class(es) expected."""
    expected = expected if isinstance(expected, tuple) else (expected,)
    found = (getattr(config, "architectures", None) or [f"a model of type {config.model_type!r}"])[0]
    # By model type (each class has its own), or by name: a folder's own code (`trust_remote_code`) has its own types.
    if config.model_type in {cls.config_class.model_type for cls in expected} or found in {cls.__name__ for cls in expected}:
        return
    wanted = " or ".join(model_class.__name__ for model_class in expected)
    raise ModelFolderError(f"{folder}: holds a {found}, not a {wanted} as expected here; give a {wanted} folder.")


def load_model(folder, expected=None, trust_remote_code: bool = False, **kwargs) -> PreTrainedModel:
    """
    The model of a saved folder, checked: of the `expected` class(es) when given (see [`check_model_class`]), every
    weight of the model present in the folder's checkpoint with its shape, no unexpected weight. Raises
    [`ModelFolderError`] naming the folder or its checkpoint file otherwise: no model with random weights is returned.
    """
    folder = Path(folder)
    config = load_config(folder, trust_remote_code)
    if expected is not None:
        check_model_class(folder, config, expected)
    # Mismatched shapes are reported in the loading info (and refused below) rather than raised deep inside.
    try:
        with quiet_loading():  # transformers' load report would precede the one-line refusal
            model, info = AutoModel.from_pretrained(
                folder, config=config, trust_remote_code=trust_remote_code, output_loading_info=True,
                ignore_mismatched_sizes=True, **kwargs,
            )
    except (SafetensorError, OSError) as error:  # a truncated or missing checkpoint
        raise ModelFolderError(f"{_weights_file(folder)}: cannot read the weights ({error}).") from error
    kinds = ("missing_keys", "unexpected_keys", "mismatched_keys")
    problems = {kind: sorted(map(str, info[kind])) for kind in kinds if info.get(kind)}
    if problems:
        details = "; ".join(f"{kind.replace('_', ' ')}: {', '.join(keys[:5])}" for kind, keys in problems.items())
        raise ModelFolderError(
            f"{_weights_file(folder)}: the weights do not fit {type(model).__name__} ({details}). The folder is "
            "damaged or was saved by another model."
        )
    check_finite_weights(model, _weights_file(folder))
    return model


def check_finite_weights(model: PreTrainedModel, source="the model") -> None:
    """Refuse NaN or infinite weights, naming the first such tensor: they would give NaN emotions silently."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
            raise ModelFolderError(f"{source}: tensor {name!r} holds NaN or infinite values.")


def _weights_file(folder: Path) -> Path:
    candidates = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    return candidates[0] if candidates else folder


def load_processor(folder, trust_remote_code: bool = False):
    """The processor of a saved folder (the package's `MagtkdProcessor` unless `trust_remote_code=True`)."""
    folder = Path(folder)
    if not trust_remote_code:
        from .processors import MagtkdProcessor

        return MagtkdProcessor.from_pretrained(folder)
    return AutoProcessor.from_pretrained(folder, trust_remote_code=trust_remote_code)


@contextmanager
def quiet_loading(datasets_bars: bool = False):
    """No "Loading weights" bar or loading report per model (the demo loads about forty; `predict` one) and, with
    `datasets_bars`, no dataset-saving bars (a training run's); other progress bars (a training stage's) stay.
    `predict` leaves `datasets` unimported."""
    from transformers.utils import logging as transformers_logging

    datasets = importlib.import_module("datasets") if datasets_bars else None
    verbosity, bars = transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled()
    dataset_bars = datasets is not None and datasets.is_progress_bar_enabled()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    if datasets is not None:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars:
            transformers_logging.enable_progress_bar()
        if dataset_bars:
            datasets.enable_progress_bars()

__all__ = [
    "CONFIG_CLASSES_BY_TYPE", "ModelFolderError", "check_finite_weights", "check_model_class", "load_config", "load_model",
    "load_processor", "quiet_loading", "read_config_dict", "read_json_object",
]
