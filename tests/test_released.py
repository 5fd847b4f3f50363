import os
import pickle

import datasets
import numpy as np
import pytest
import torch
from released_reference import make_released_state_dict, released_reference_logits
from transformers import AutoModel

from magtkd_hf import MagtkdFusionConfig, MagtkdFusionModel, dataset_facts
from magtkd_hf.apps.cli import main as cli
from magtkd_hf.released import (
    UnsafePickleError,
    import_released_features,
    load_plain_pickle,
    load_released_fusion,
    released_fusion_config,
)

HIDDEN, HEADS = 32, 8  # the released models have 8 heads; the converter keeps that


def conversations(num_speakers, lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    batch, length = len(lengths), max(lengths)
    mask = (torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]).long()
    features = [torch.randn(batch, length, HIDDEN, generator=generator) for _ in range(3)]
    speakers = torch.randint(0, num_speakers, (batch, length), generator=generator)
    return features, speakers, mask


@pytest.mark.parametrize("dataset, num_labels, num_speakers", [("meld", 7, 304), ("iemocap", 6, 2)])
def test_converted_checkpoint_matches_the_released_computation(tmp_path, dataset, num_labels, num_speakers):
    state = make_released_state_dict(HIDDEN, HEADS, num_labels, num_speakers, seed=num_labels)
    checkpoint = tmp_path / "multimodal_fusion_best.bin"
    torch.save(state, checkpoint)
    model, unused = load_released_fusion(checkpoint, dataset)
    assert model.config.speaker_table_size == num_speakers + 1 and model.config.speaker_padding_index == 2
    assert "fc.weight" in unused and "a_t.transformer_inter.0.self_attn.proj_q.weight" in unused
    assert "v_t_gate.fc.bias" in unused and "t_t.pos_emb.pe" in unused
    (text, audio, video), speakers, mask = conversations(num_speakers, [5, 3, 2])
    video_equal_to_text = text.clone()  # equal modalities must not change the computation
    for video_input in (video, video_equal_to_text):
        expected = released_reference_logits(state, text, audio, video_input, speakers, mask, HEADS)
        with torch.no_grad():
            logits = model(text, audio, video_input, speakers, mask).logits
        real = mask.bool()
        torch.testing.assert_close(logits[real], expected[real], atol=1e-5, rtol=1e-5)


def test_convert_released_command_writes_a_loadable_folder(tmp_path, capsys):
    state = make_released_state_dict(HIDDEN, HEADS, 6, 2, seed=1)
    torch.save(state, tmp_path / "fusion.bin")
    output = tmp_path / "converted"
    assert cli(["convert-released", "--fusion", str(tmp_path / "fusion.bin"), "--dataset", "iemocap",
                "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "Dropped" in printed and "a_t_gate.fc.weight" in printed
    model = AutoModel.from_pretrained(output)
    assert type(model) is MagtkdFusionModel and model.config.id2label[5] == "sad"
    (text, audio, video), speakers, mask = conversations(2, [4, 1], seed=2)
    expected = released_reference_logits(state, text, audio, video, speakers, mask, HEADS)
    with torch.no_grad():
        logits = model.eval()(text, audio, video, speakers, mask).logits
    torch.testing.assert_close(logits[mask.bool()], expected[mask.bool()], atol=1e-5, rtol=1e-5)


def test_loaded_released_fusion_saves_a_folder_that_loads_as_the_fusion_model(tmp_path):
    """What `convert-released --fusion` does, at the library level."""
    state = make_released_state_dict(HIDDEN, HEADS, 6, 2, seed=1)
    torch.save(state, tmp_path / "fusion.bin")
    model, unused = load_released_fusion(tmp_path / "fusion.bin", "iemocap")
    assert "a_t_gate.fc.weight" in unused and not model.training
    model.save_pretrained(tmp_path / "converted")
    loaded, info = AutoModel.from_pretrained(tmp_path / "converted", output_loading_info=True)
    assert type(loaded) is MagtkdFusionModel and loaded.config.id2label[5] == "sad"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert loaded.config.speaker_padding_index == 2 and loaded.config.share_text_anchor_block
    (text, audio, video), speakers, mask = conversations(2, [4, 1], seed=2)
    expected = released_reference_logits(state, text, audio, video, speakers, mask, HEADS)
    with torch.no_grad():
        logits = loaded.eval()(text, audio, video, speakers, mask).logits
    torch.testing.assert_close(logits[mask.bool()], expected[mask.bool()], atol=1e-5, rtol=1e-5)


def test_released_fusion_config_reads_the_checkpoint_shapes_and_the_dataset_table():
    state = make_released_state_dict(HIDDEN, HEADS, 7, 304)
    config = released_fusion_config(state, "MELD")
    assert type(config) is MagtkdFusionConfig and config.hidden_size == HIDDEN and config.intermediate_size == HIDDEN
    assert config.num_speakers == 304 and config.label_names == list(dataset_facts("meld")["labels"])
    assert config.audio_anchor_loss_weight == dataset_facts("meld")["audio_anchor_loss_weight"]
    with pytest.raises(ValueError, match="Unknown dataset 'cmu-mosei'"):
        released_fusion_config(state, "cmu-mosei")


def test_converter_names_the_offending_key(tmp_path):
    state = make_released_state_dict(HIDDEN, HEADS, 7, 304)
    wrong_shape = dict(state)
    wrong_shape["t_a_gate.fc.weight"] = torch.zeros(HIDDEN, HIDDEN + 1)
    torch.save(wrong_shape, tmp_path / "shape.bin")
    with pytest.raises(ValueError, match="t_a_gate.fc.weight"):
        load_released_fusion(tmp_path / "shape.bin", "meld")
    missing = {key: value for key, value in state.items() if key != "v_v.transformer_inter.0.self_attn.proj_k.bias"}
    torch.save(missing, tmp_path / "missing.bin")
    with pytest.raises(ValueError, match="v_v.transformer_inter.0.self_attn.proj_k.bias"):
        load_released_fusion(tmp_path / "missing.bin", "meld")
    torch.save({**state, "extra.weight": torch.zeros(1)}, tmp_path / "extra.bin")
    with pytest.raises(ValueError, match="extra.weight"):
        load_released_fusion(tmp_path / "extra.bin", "meld")
    with pytest.raises(ValueError, match="w_t.weight"):
        load_released_fusion(tmp_path / "missing.bin", "iemocap")  # 7 classes is not IEMOCAP
    torch.save({"model.encoder.weight": torch.zeros(2)}, tmp_path / "other.bin")
    with pytest.raises(ValueError, match="speaker_embeddings.weight"):
        load_released_fusion(tmp_path / "other.bin", "meld")


class _Payload:
    """A pickle that runs `function(argument)` when loaded."""

    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


def released_feature_dict(seed=0, hidden=16):
    rng = np.random.default_rng(seed)
    dialogues = {7: 3, 2: 1, 11: 4}
    data = {key: {} for key in ("text", "audio", "video", "audio_kd", "video_kd", "speakers", "labels", "dia2utt")}
    for dialogue, length in dialogues.items():
        for key in ("text", "audio", "video", "audio_kd", "video_kd"):
            data[key][dialogue] = [rng.standard_normal(hidden).astype(np.float32) for _ in range(length)]
        data["speakers"][dialogue] = [int(s) for s in rng.choice([40, 3, 17], length)]
        data["labels"][dialogue] = [int(label) for label in rng.integers(0, 7, length)]
        data["dia2utt"][dialogue] = list(range(length))
    data["vids"] = list(dialogues)
    return data


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_released_features_round_trip_exactly(tmp_path, protocol):
    data = released_feature_dict()
    for split in ("train", "dev", "test"):
        with open(tmp_path / f"{split}_features.pkl", "wb") as handle:
            pickle.dump(data, handle, protocol=protocol)
    output = tmp_path / "features"
    splits = import_released_features(
        {"train": tmp_path / "train_features.pkl", "validation": tmp_path / "dev_features.pkl"},
        output, dataset="meld", speaker_indexing="released",
    )
    reloaded = datasets.load_from_disk(str(output))
    assert set(reloaded) == {"train", "validation"} == set(splits)
    rows = reloaded["train"].with_format("numpy")
    assert list(rows["dialogue_id"]) == ["7", "2", "11"]
    for index, dialogue in enumerate(data["vids"]):
        row = rows[index]
        for key in ("text", "audio", "video", "audio_kd", "video_kd"):
            np.testing.assert_array_equal(row[key], np.stack(data[key][dialogue]))
        assert list(row["speaker_ids"]) == data["speakers"][dialogue]
        assert list(row["labels"]) == data["labels"][dialogue]
        assert list(row["utterance_ids"]) == [str(u) for u in data["dia2utt"][dialogue]]
    assert reloaded["train"].features["labels"].feature.names[0] == "anger"


def test_import_command_reindexes_speakers_per_conversation(tmp_path, capsys):
    data = released_feature_dict(seed=1)
    with open(tmp_path / "meld_train.pkl", "wb") as handle:
        pickle.dump(data, handle)
    assert cli(["import-released-features", str(tmp_path / "meld_train.pkl"), f"test={tmp_path / 'meld_train.pkl'}",
                "--output", str(tmp_path / "out")]) == 0
    assert "train: 3 conversations, 8 utterances" in capsys.readouterr().out
    train = datasets.load_from_disk(str(tmp_path / "out"))["train"]
    for row, dialogue in zip(train, data["vids"]):
        order = {}
        assert row["speaker_ids"] == [order.setdefault(s, len(order)) for s in data["speakers"][dialogue]]


def test_imported_speakers_are_numbered_per_conversation_by_default(tmp_path):
    """What `import-released-features` does by default, at the library level."""
    data = released_feature_dict(seed=1)
    with open(tmp_path / "meld_train.pkl", "wb") as handle:
        pickle.dump(data, handle)
    splits = import_released_features({"train": tmp_path / "meld_train.pkl"}, tmp_path / "out")
    assert set(datasets.load_from_disk(str(tmp_path / "out"))) == {"train"}
    train = splits["train"]
    assert len(train) == 3 and sum(len(labels) for labels in train["labels"]) == 8
    for row, dialogue in zip(train, data["vids"]):
        order = {}
        assert row["speaker_ids"] == [order.setdefault(s, len(order)) for s in data["speakers"][dialogue]]
    with pytest.raises(ValueError, match="speaker_indexing"):
        import_released_features({"train": tmp_path / "meld_train.pkl"}, speaker_indexing="global")


@pytest.mark.parametrize("function", [os.system, eval])
def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path, function):
    marker = tmp_path / "ran"
    command = f"open({str(marker)!r}, 'w')" if function is eval else f"touch {marker}"
    data = released_feature_dict()
    data["labels"][7] = _Payload(function, command)
    path = tmp_path / "train.pkl"
    path.write_bytes(pickle.dumps(data))
    expected_global = "builtins.eval" if function is eval else "system"
    with pytest.raises(UnsafePickleError, match=expected_global):
        import_released_features({"train": path}, tmp_path / "out")
    with pytest.raises(UnsafePickleError):
        load_plain_pickle(path)
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_the_import_command_names_the_split_file_that_holds_a_refused_global(tmp_path, capsys):
    good, bad = tmp_path / "meld_train.pkl", tmp_path / "dev_features.pkl"
    good.write_bytes(pickle.dumps(released_feature_dict()))
    data = released_feature_dict()
    data["labels"][7] = _Payload(os.system, f"touch {tmp_path / 'ran'}")
    bad.write_bytes(pickle.dumps(data))
    assert cli(["import-released-features", str(good), f"validation={bad}", "--output", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert f"{bad}: Refusing to unpickle global" in error and "Traceback" not in error
    assert not (tmp_path / "ran").exists() and not (tmp_path / "out").exists()


def test_numpy_object_arrays_are_refused(tmp_path):
    path = tmp_path / "objects.pkl"
    path.write_bytes(pickle.dumps({"x": np.array([1, "a"], dtype=object)}))
    with pytest.raises(UnsafePickleError):
        load_plain_pickle(path)
