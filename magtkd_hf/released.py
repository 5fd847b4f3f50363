"""Bring the authors' released artefacts in: unimodal and fusion checkpoints (torch state dicts, read with
`weights_only=True`) and the stage-3 feature pickles (per-utterance features of each conversation), without ever running
code from a file."""

import copy
import logging
import re
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path

import datasets
import numpy as np
import torch

from .configuration_magtkd import (
    FEATURE_SOURCES, MagtkdAudioConfig, MagtkdConfig, MagtkdFusionConfig, MagtkdTextConfig, MagtkdVideoConfig,
    dataset_facts,
)
from .features import feature_dataset_features
from .modeling_magtkd import MagtkdForEmotionRecognition
from .modeling_magtkd_fusion import MagtkdFusionModel
from .released_pickle import PickleLimits, UnsafePickleError, load_plain_pickle  # noqa: F401 (UnsafePickleError: API)

logger = logging.getLogger(__name__)
_MODALITY_NAMES = {"t": "text", "a": "audio", "v": "video"}
# Released encoder names of each anchor's (self, first cross, second cross) paths; the released text anchor runs all
# three of its paths through `t_t` and `t_t_gate`.
_ANCHOR_PATHS = {"a": ("a_a", "t_a", "v_a"), "v": ("v_v", "t_v", "a_v"), "t": ("t_t",)}
_UNUSED_RELEASED_KEYS = re.compile(
    r"^(a_t|v_t|a_t_gate|v_t_gate|fc)\.|\.pos_emb\.pe$|\.transformer_inter\.0\.layer_norm\."
)
_BLOCK_KEYS = {
    "self_attn.proj_q": "query",
    "self_attn.proj_k": "key",
    "self_attn.proj_v": "value",
    "self_attn.fc": "attention_output",
    "feed_forward.w_1": "feed_forward.intermediate",
    "feed_forward.w_2": "feed_forward.output",
    "feed_forward.layer_norm": "feed_forward.layer_norm",
}


# `MagtkdFusionModel` parameters the released checkpoints do not have (initialised, not converted).
RELEASED_ABSENT_FUSION_KEYS = ("missing_audio_embedding", "missing_video_embedding")


def released_fusion_key_map() -> dict[str, str]:
    """Released fusion state-dict key -> `MagtkdFusionModel` key (every used key)."""
    mapping = {"speaker_embeddings.weight": "speaker_embeddings.weight"}
    for modality, encoders in _ANCHOR_PATHS.items():
        name = _MODALITY_NAMES[modality]
        for parameter in ("weight", "bias"):
            for index, encoder in enumerate(encoders):
                for released, ours in _BLOCK_KEYS.items():
                    mapping[f"{encoder}.transformer_inter.0.{released}.{parameter}"] = (
                        f"{name}_anchor.blocks.{index}.{ours}.{parameter}"
                    )
                mapping[f"{encoder}_gate.fc.{parameter}"] = f"{name}_anchor.gates.{index}.dense.{parameter}"
            mapping[f"features_reduce_{modality}.{parameter}"] = f"{name}_anchor.reduce.{parameter}"
            mapping[f"w_{modality}.{parameter}"] = f"{name}_head.{parameter}"
    return mapping


def _renamed(state_dict: Mapping[str, torch.Tensor], expected: Mapping, target_of, is_unused):
    """`(renamed state dict, unused keys, unexpected keys, wrong shapes)`: each key renamed by `target_of` (None: not
    in the target's layout, then unused when `is_unused(key)`), its shape checked against `expected`."""
    renamed, unused, unexpected, wrong_shapes = {}, [], [], []
    for key, tensor in state_dict.items():
        target = target_of(key)
        if target is None:
            (unused if is_unused(key) else unexpected).append(key)
            continue
        if tuple(tensor.shape) != tuple(expected[target].shape):
            shapes = f"shape {tuple(tensor.shape)}, expected {tuple(expected[target].shape)}"
            wrong_shapes.append(f"key {key!r} has {shapes} (for {target!r})")
        renamed[target] = tensor
    return renamed, sorted(unused), unexpected, wrong_shapes


def load_torch_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A pickled torch state dict, loaded with `weights_only=True` (no code runs)."""
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for bad or unsafe files
        raise ValueError(f"Cannot load {path} as a state dict with weights_only=True: {error}") from error
    if not isinstance(state_dict, Mapping) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError(f"{path} is not a state dict (a mapping of names to tensors).")
    return dict(state_dict)


def released_fusion_config(state_dict: Mapping[str, torch.Tensor], dataset: str) -> MagtkdFusionConfig:
    """The fusion config matching a released checkpoint's shapes and the dataset's released settings."""
    labels = dataset_facts(dataset)["labels"]
    for key in ("speaker_embeddings.weight", "w_t.weight", "t_t.transformer_inter.0.self_attn.proj_q.weight"):
        if key not in state_dict:
            raise ValueError(f"Not a released MAGTKD fusion checkpoint: key {key!r} is missing.")
    num_labels, hidden_size = state_dict["w_t.weight"].shape
    if num_labels != len(labels):
        raise ValueError(f"Key 'w_t.weight' has {num_labels} classes but released {dataset} models have {len(labels)}.")
    return MagtkdFusionConfig.from_preset(
        dataset,
        released_speaker_table=True,
        hidden_size=hidden_size,
        intermediate_size=state_dict["t_t.transformer_inter.0.feed_forward.w_1.weight"].shape[0],
        num_speakers=state_dict["speaker_embeddings.weight"].shape[0] - 1,
        share_text_anchor_block=True,
    )


def convert_released_fusion_state_dict(
    state_dict: Mapping[str, torch.Tensor], model: MagtkdFusionModel
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """
    Rename a released fusion state dict to `model`'s keys, checking every shape (a `ValueError` names a missing,
    unexpected or wrongly shaped key). Returns `(converted_state_dict, unused_keys)`: the released model's dead weights
    (`a_t`, `v_t`, their gates, `fc`, the per-block second LayerNorm) and its fixed positional buffers.
    """
    key_map = released_fusion_key_map()
    expected = model.state_dict()
    converted, unused, unexpected, shapes = _renamed(state_dict, expected, key_map.get, _UNUSED_RELEASED_KEYS.search)
    if shapes:
        raise ValueError(f"Released fusion {'; '.join(shapes[:5])}.")
    if unexpected:
        raise ValueError(f"Keys not in the released fusion layout: {unexpected[:10]}")
    missing = sorted(set(key_map) - set(state_dict))
    if missing:
        raise ValueError(f"Keys of the released fusion layout are missing: {missing[:10]}")
    # The released model has no missing-modality embeddings: they keep `model`'s initial values (zeros), so that the
    # strict load still checks every released key. A converted released model was not trained for missing modalities.
    for key in RELEASED_ABSENT_FUSION_KEYS:
        converted[key] = expected[key]
    return converted, unused


@contextmanager
def _naming(path, source: str):
    """A conversion error names the released file it is about, and the option that gave it."""
    try:
        yield
    except ValueError as error:
        raise ValueError(f"{path} ({source}): {error}") from None


def load_released_fusion(path: str | Path, dataset: str) -> tuple[MagtkdFusionModel, list[str]]:
    """A released `multimodal_fusion_best.bin` -> (`MagtkdFusionModel` computing what the released model computes,
    the released keys that were dropped as unused)."""
    state_dict = load_torch_state_dict(path)
    with _naming(path, "fusion"):
        model = MagtkdFusionModel(released_fusion_config(state_dict, dataset))
        converted, unused = convert_released_fusion_state_dict(state_dict, model)
    model.load_state_dict(converted, strict=True)
    return model.eval(), unused


# --- stage-1/2 unimodal checkpoints and the end-to-end model ---------------------------------------------------------

# Released unimodal layout: the encoder's prefix, and the heads' key prefixes -> ours (relative to a feature module:
# the text model's `W` is the projection to the fusion width; the audio/video models' `W` is their classifier).
_RELEASED_UNIMODAL_LAYOUT = {
    "text": ("text_model.", {"W.": "projection.", "classifier.": "classifier."}),
    "audio": ("model.", {"W.": "classifier."}),
    "video": ("model.", {"W.": "classifier."}),
}
# Encoder entries of a released checkpoint that MAGTKD's encoders do not have: RoBERTa's pooler (never used) and the
# position/token-type id buffers older transformers versions saved.
_UNUSED_RELEASED_ENCODER_KEYS = re.compile(r"^pooler\.|(^|\.)(position_ids|token_type_ids)$")


def _released_target(key: str, modality: str, expected: Mapping, feature_prefix: str) -> str | None:
    """Our key for a released unimodal key (None: not in our layout). `feature_prefix` is where the feature module
    sits in the target model ("text_encoder." in a stage model, "" in a bare feature module)."""
    prefix, heads = _RELEASED_UNIMODAL_LAYOUT[modality]
    if key.startswith(prefix):
        target = f"{feature_prefix}encoder.{key[len(prefix):]}"
        return target if target in expected else None
    for released, ours in heads.items():
        if key.startswith(released):
            target_prefix = ours if ours == "classifier." else feature_prefix + ours
            target = target_prefix + key[len(released):]
            return target if target in expected else None
    return None


def _is_unused_released_key(key: str, modality: str, expected: Mapping) -> bool:
    """RoBERTa's pooler and saved id buffers; a classifier where the target has none (an end-to-end feature module)."""
    prefix, heads = _RELEASED_UNIMODAL_LAYOUT[modality]
    if key.startswith(prefix):
        return bool(_UNUSED_RELEASED_ENCODER_KEYS.search(key[len(prefix):]))
    head = next((ours for released, ours in heads.items() if key.startswith(released)), None)
    return head == "classifier." and not any(name.startswith("classifier.") for name in expected)


def convert_released_unimodal_state_dict(
    state_dict: Mapping[str, torch.Tensor], model: torch.nn.Module, modality: str | None = None
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """
    Rename a released stage-1/2 state dict (`text.bin`: `text_model.*`, `W`, `classifier`; `audio.bin`,
    `video.bin`, `text_KD_audio.bin`, `text_KD_video.bin`: `model.*`, `W`) to `model`'s keys, checking every shape.
    `model` is a stage model ([`MagtkdTextModel`], ...) or a feature module of the end-to-end model (then give
    `modality`; its classifier-less layout leaves the released classifier unused).

    Returns:
        `(converted_state_dict, unused_keys)` (RoBERTa's pooler, saved id buffers, heads the target lacks).
    Raises:
        `ValueError` naming the key, for a missing, unexpected or wrongly shaped key.
    """
    modality = modality or model.modality
    feature_prefix = f"{modality}_encoder." if hasattr(model, "modality") else ""
    prefix, heads = _RELEASED_UNIMODAL_LAYOUT[modality]
    expected = model.state_dict()
    converted, unused, unexpected, wrong_shapes = _renamed(
        state_dict,
        expected,
        lambda key: _released_target(key, modality, expected, feature_prefix),
        lambda key: _is_unused_released_key(key, modality, expected),
    )
    if unexpected:
        raise ValueError(
            f"Keys not in the released {modality} layout (`{prefix}*` + head), or not in this encoder: "
            f"{unexpected[:10]}"
        )
    if wrong_shapes:
        raise ValueError(f"{'; '.join(wrong_shapes[:5])}: check the {modality} encoder's config.")
    missing = sorted(set(expected) - set(converted))
    if missing:
        raise ValueError(f"Keys of the {modality} model missing from the released checkpoint: {missing[:10]}")
    return converted, unused


def _with_settings(config, **settings):
    """A copy of an encoder config (a `PreTrainedConfig` or a dict) with `settings` set."""
    config = copy.deepcopy(config)
    config.update(settings)  # `PreTrainedConfig.update` sets the attributes
    return config


def _end_to_end_config(fusion_config, text_state_dict, text_config, audio_config, video_config) -> MagtkdConfig:
    """Stage configs over the encoder configs (`PreTrainedConfig`s or dicts) beside the released fusion's: the text
    vocabulary of the released text checkpoint (roberta-large resized to 50,274 rows), the released audio
    `mask_time_length=3`."""
    embeddings_key = "text_model.embeddings.word_embeddings.weight"
    if embeddings_key in text_state_dict:
        text_config = _with_settings(text_config, vocab_size=text_state_dict[embeddings_key].shape[0])
    labels = dict(id2label=dict(fusion_config.id2label), label2id=dict(fusion_config.label2id))
    return MagtkdConfig(
        text_config=MagtkdTextConfig(encoder_config=text_config, feature_size=fusion_config.hidden_size, **labels),
        audio_config=MagtkdAudioConfig(encoder_config=_with_settings(audio_config, mask_time_length=3), **labels),
        video_config=MagtkdVideoConfig(encoder_config=copy.deepcopy(video_config), **labels),
        fusion_model_config=fusion_config,
    )


def load_released_end_to_end(
    fusion: str | Path,
    unimodal: Mapping[str, str | Path],
    dataset: str,
    text_config,
    audio_config,
    video_config,
) -> tuple[MagtkdForEmotionRecognition, dict[str, list[str]]]:
    """
    Released checkpoints -> a [`MagtkdForEmotionRecognition`] computing what the released models compute.

    Args:
        fusion: `multimodal_fusion_best.bin`.
        unimodal: released state dicts by source, keys among `text`, `audio`, `video`, `audio_kd`, `video_kd`:
            `text` and the audio and video sources of the dataset's released fusion (MELD: `audio_kd`, `video_kd`;
            IEMOCAP: `audio_kd`, `video`) are needed; the others are not used.
        dataset: "meld" or "iemocap".
        text_config, audio_config, video_config: the encoders' architectures (e.g. `AutoConfig.from_pretrained` of
            roberta-large, data2vec-audio-base-960h, timesformer-base-finetuned-k400).

    Returns:
        `(model, unused_keys)`, the unused keys per file (`"fusion"`, `"text"`, ...): the stage classifiers are among
        them, as the end-to-end model predicts with the fusion's heads.
    """
    fusion_state = load_torch_state_dict(fusion)
    with _naming(fusion, "fusion"):
        config = released_fusion_config(fusion_state, dataset)
    sources = {"text": "text", "audio": config.audio_feature_source, "video": config.video_feature_source}
    needed = [source for source in sources.values() if source not in unimodal]
    if needed:
        flags = ", ".join("--" + source.replace("_", "-") for source in needed)
        raise ValueError(
            f"The released {dataset} fusion takes its inputs from {sorted(set(sources.values()))}: the checkpoint(s) "
            f"for {needed} are missing ({flags})."
        )
    states = {modality: load_torch_state_dict(unimodal[source]) for modality, source in sources.items()}
    model = MagtkdForEmotionRecognition(
        _end_to_end_config(config, states["text"], text_config, audio_config, video_config)
    )
    with _naming(fusion, "fusion"):
        fusion_converted, unused_fusion = convert_released_fusion_state_dict(fusion_state, model.fusion)
    model.fusion.load_state_dict(fusion_converted, strict=True)
    unused = {"fusion": unused_fusion}
    for modality, source in sources.items():
        module = model.feature_module(modality)
        with _naming(unimodal[source], source):
            converted, unused[source] = convert_released_unimodal_state_dict(states[modality], module, modality)
        module.load_state_dict(converted, strict=True)
    return model.eval(), unused


# --- stage-3 feature pickles -----------------------------------------------------------------------------------------

_RELEASED_FEATURE_KEYS = (*FEATURE_SOURCES, "speakers", "labels", "vids", "dia2utt")


def released_features_to_dataset(
    data: Mapping, source: str = "", label_names=None, speaker_indexing: str = "conversation"
) -> datasets.Dataset:
    """
    One released stage-3 feature dict -> a features dataset, one row per conversation in `vids`
    order. `speaker_indexing="conversation"` re-indexes speakers by order of first appearance in each conversation
    (this package's default); `"released"` keeps the released ids (MELD: the global 304-name map).
    """
    missing = [key for key in _RELEASED_FEATURE_KEYS if key not in data]
    if missing:
        raise ValueError(f"{source}: not a released feature file, keys {missing} are missing.")
    if speaker_indexing not in ("conversation", "released"):
        raise ValueError(f"speaker_indexing must be 'conversation' or 'released', got {speaker_indexing!r}.")
    first = data["vids"][0]
    hidden_size = int(np.asarray(data["text"][first][0]).shape[-1])
    features = feature_dataset_features(hidden_size, label_names)
    rows = {column: [] for column in features}
    for dialogue in data["vids"]:
        num_utterances = len(data["labels"][dialogue])
        for key in (*FEATURE_SOURCES, "speakers", "dia2utt"):
            if len(data[key][dialogue]) != num_utterances:
                raise ValueError(
                    f"{source}: conversation {dialogue!r} has {len(data[key][dialogue])} entries in {key!r} but "
                    f"{num_utterances} labels."
                )
        rows["dialogue_id"].append(str(dialogue))
        rows["utterance_ids"].append([str(utterance) for utterance in data["dia2utt"][dialogue]])
        for feature in FEATURE_SOURCES:
            array = np.stack([np.asarray(vector, dtype=np.float32) for vector in data[feature][dialogue]])
            if array.shape != (num_utterances, hidden_size):
                raise ValueError(
                    f"{source}: conversation {dialogue!r}, {feature!r} features have shape {array.shape}, expected "
                    f"({num_utterances}, {hidden_size})."
                )
            rows[feature].append(array)
        speakers = [int(speaker) for speaker in data["speakers"][dialogue]]
        rows["speaker_ids"].append(_first_appearance(speakers) if speaker_indexing == "conversation" else speakers)
        rows["labels"].append([int(label) for label in data["labels"][dialogue]])
    dataset = datasets.Dataset.from_dict(rows, features=features)
    dataset.info.description = (
        f"MAGTKD stage-3 features imported from {Path(source).name}; speakers: {speaker_indexing}."
    )
    return dataset


def _first_appearance(speakers: list[int]) -> list[int]:
    order = {}
    return [order.setdefault(speaker, len(order)) for speaker in speakers]


def import_released_features(
    split_files: Mapping[str, str | Path],
    output_dir: str | Path | None = None,
    dataset: str | None = None,
    speaker_indexing: str = "conversation",
    limits: PickleLimits | None = None,
) -> datasets.DatasetDict:
    """
    The authors' stage-3 feature pickles, one per split (`{"train": path, "validation": path, "test": path}`), ->
    a `DatasetDict`, saved to `output_dir` when given. Each pickle is read with [`load_plain_pickle`]: plain data
    only, in a child process within `limits` (memory, time; the defaults admit the released MELD/IEMOCAP files).
    """
    label_names = dataset_facts(dataset)["labels"] if dataset else None
    splits = {}
    for split, path in split_files.items():
        data = load_plain_pickle(path, limits)
        splits[split] = released_features_to_dataset(data, str(path), label_names, speaker_indexing)
        logger.info("%s: %d conversations from %s", split, len(splits[split]), path)
    dataset_dict = datasets.DatasetDict(splits)
    if output_dir is not None:
        dataset_dict.save_to_disk(str(output_dir))
    return dataset_dict
