import json

import pytest
import torch
from transformers import AutoConfig, AutoModel, TimesformerConfig

from magtkd_hf import (
    DATASETS,
    IEMOCAP_LABELS,
    MELD_LABELS,
    MagtkdAudioConfig,
    MagtkdConfig,
    MagtkdFusionConfig,
    MagtkdFusionModel,
    MagtkdTextConfig,
    MagtkdVideoConfig,
    dataset_facts,
)
from magtkd_hf.losses import fusion_loss

HIDDEN, HEADS = 32, 4


def tiny_config(**overrides):
    settings = dict(hidden_size=HIDDEN, num_attention_heads=HEADS, intermediate_size=HIDDEN)
    return MagtkdFusionConfig(**{**settings, **overrides})


def make_batch(lengths, seed=0, num_labels=7):
    generator = torch.Generator().manual_seed(seed)
    batch_size, length = len(lengths), max(lengths)
    mask = (torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]).long()
    labels = torch.randint(0, num_labels, (batch_size, length), generator=generator).masked_fill(mask == 0, -100)
    return {
        "text_features": torch.randn(batch_size, length, HIDDEN, generator=generator),
        "audio_features": torch.randn(batch_size, length, HIDDEN, generator=generator),
        "video_features": torch.randn(batch_size, length, HIDDEN, generator=generator),
        "speaker_ids": torch.randint(0, 3, (batch_size, length), generator=generator),
        "attention_mask": mask,
        "labels": labels,
    }


def test_forward_shapes_and_every_parameter_gets_a_gradient():
    model = MagtkdFusionModel(tiny_config())
    output = model(**make_batch([5, 3, 1]))
    assert output.logits.shape == output.audio_logits.shape == output.video_logits.shape == (3, 5, 7)
    assert output.text_anchor_hidden_states.shape == (3, 5, HIDDEN)
    assert torch.isfinite(output.loss)
    output.loss.backward()
    no_grad = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    # the missing-modality embeddings are used (and trained) only where a modality is absent: none is here
    assert no_grad == ["missing_audio_embedding", "missing_video_embedding"]


def test_a_conversation_alone_equals_it_batched_beside_longer_ones():
    model = MagtkdFusionModel(tiny_config()).eval()
    batch = make_batch([6, 2, 4], seed=1)
    batch.pop("labels")
    together = model(**batch).logits
    for index, length in enumerate([6, 2, 4]):
        alone = model(**{key: value[index : index + 1, :length] for key, value in batch.items()}).logits
        torch.testing.assert_close(alone[0], together[index, :length], atol=1e-6, rtol=0)
    # padded positions' inputs never reach real utterances
    noisy = dict(batch)
    for key in ("text_features", "audio_features", "video_features"):
        noisy[key] = batch[key].masked_fill(batch["attention_mask"][..., None] == 0, 1e3)
    noisy["speaker_ids"] = batch["speaker_ids"].masked_fill(batch["attention_mask"] == 0, 999)
    torch.testing.assert_close(model(**noisy).logits, together, atol=1e-6, rtol=0)


def test_loss_ignores_label_minus_100_and_uses_the_labelled_utterances():
    model = MagtkdFusionModel(tiny_config(anchor_feature_loss=True)).eval()
    batch = make_batch([4, 4], seed=2)
    batch["labels"][0, 1] = -100
    output = model(**batch)
    keep = batch["labels"] != -100
    expected = fusion_loss(
        output.logits[keep], output.audio_logits[keep], output.video_logits[keep],
        output.text_anchor_hidden_states[keep], output.audio_anchor_hidden_states[keep],
        output.video_anchor_hidden_states[keep], batch["labels"][keep],
        audio_weight=0.01, video_weight=0.08, feature_loss=True,
    )
    torch.testing.assert_close(output.loss, expected)
    batch["labels"][:] = -100
    assert model(**batch).loss.item() == 0.0


def test_self_attention_path_is_chosen_by_the_call_site_not_by_tensor_values():
    model = MagtkdFusionModel(tiny_config(dropout=0.5)).train()
    calls = []
    for anchor in (model.audio_anchor, model.video_anchor, model.text_anchor):
        anchor.input_dropout.register_forward_hook(lambda module, args, out: calls.append(1))
    batch = make_batch([3, 2], seed=3)
    same = batch["text_features"]
    batch.update(audio_features=same.clone(), video_features=same.clone())
    model(**batch)
    assert len(calls) == 12  # 2 cross paths x (queries + keys/values) x 3 anchors, even with equal modalities


def test_unshared_text_anchor_has_its_own_blocks_and_runs():
    shared = MagtkdFusionModel(tiny_config())
    own = MagtkdFusionModel(tiny_config(share_text_anchor_block=False))
    assert len(shared.text_anchor.blocks) == 1 and len(own.text_anchor.blocks) == 3
    assert own.num_parameters() > shared.num_parameters()
    assert torch.isfinite(own(**make_batch([3, 2])).loss)


def test_the_anchor_residual_adds_the_audio_and_video_anchors_and_no_weight():
    torch.manual_seed(0)
    paper = MagtkdFusionModel(tiny_config(dropout=0.0)).eval()
    residual = MagtkdFusionModel(tiny_config(dropout=0.0, anchor_residual=True)).eval()
    residual.load_state_dict(paper.state_dict(), strict=True)
    assert not MagtkdFusionConfig().anchor_residual  # the paper's model by default
    batch = {key: value for key, value in make_batch([4, 2]).items() if key != "labels"}
    with torch.no_grad():
        a, b = paper(**batch), residual(**batch)
    torch.testing.assert_close(b.audio_anchor_hidden_states, a.audio_anchor_hidden_states)
    torch.testing.assert_close(
        b.text_anchor_hidden_states,
        a.text_anchor_hidden_states + a.audio_anchor_hidden_states + a.video_anchor_hidden_states,
    )
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(b.logits[real], residual.text_head(b.text_anchor_hidden_states[real]))


def test_save_and_load_give_equal_outputs(tmp_path):
    model = MagtkdFusionModel(tiny_config()).eval()
    batch = make_batch([4, 2], seed=4)
    expected = model(**batch)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert type(AutoConfig.from_pretrained(tmp_path)) is MagtkdFusionConfig
    for loaded in (AutoModel.from_pretrained(tmp_path), MagtkdFusionModel.from_pretrained(tmp_path)):
        assert type(loaded) is MagtkdFusionModel
        output = loaded.eval()(**batch)
        torch.testing.assert_close(output.logits, expected.logits, atol=0, rtol=0)
        torch.testing.assert_close(output.loss, expected.loss)


def test_bfloat16_forward_and_backward():
    model = MagtkdFusionModel(tiny_config()).to(torch.bfloat16)
    batch = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in make_batch([3, 2]).items()}
    output = model(**batch)
    assert output.logits.dtype == torch.bfloat16 and torch.isfinite(output.loss)
    output.loss.backward()


def test_bad_inputs_raise_clear_errors():
    model = MagtkdFusionModel(tiny_config())
    batch = make_batch([3, 2])
    with pytest.raises(ValueError, match="speaker_ids must lie in"):
        model(**{**batch, "speaker_ids": batch["speaker_ids"] + 20})
    with pytest.raises(ValueError, match="audio_features"):
        model(**{**batch, "audio_features": batch["audio_features"][..., :8]})
    with pytest.raises(ValueError, match="no utterance"):
        model(**{**batch, "attention_mask": torch.zeros_like(batch["attention_mask"])})


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(hidden_size=30, num_attention_heads=4), r"`hidden_size` must be an even multiple of .*\(4\).*, got 30\."),
        (dict(id2label={0: "a", 1: "b"}, label2id={"a": 1, "b": 0}), "disagrees"),
        (dict(dropout=1.5), "dropout"),
        (dict(num_speakers=3, speaker_padding_index=7), "speaker_padding_index"),
        (dict(video_feature_source="audio"), "video_feature_source"),
        (dict(id2label={0: "only"}), r"`num_labels` must be an integer >= 2 .*, got 1\."),
        (dict(hidden_size=0), r"`hidden_size` must be an integer >= 1, got 0\."),
        (dict(hidden_size="768"), r"`hidden_size` must be an integer >= 1, got '768'\."),
        (dict(intermediate_size=-1), r"`intermediate_size` must be an integer >= 1, got -1\."),
        (dict(max_position_embeddings=0), r"`max_position_embeddings` must be an integer >= 1, got 0\."),
        (dict(layer_norm_eps=0.0), r"`layer_norm_eps` must be a number > 0, got 0.0\."),
        (dict(modality_dropout=-0.1), r"`modality_dropout` must be in \[0, 1\), got -0.1\."),
        (dict(audio_anchor_loss_weight=-1.0), r"`audio_anchor_loss_weight` must be a number >= 0, got -1.0\."),
        (dict(logit_loss_temperature=0), r"`logit_loss_temperature` must be a number > 0, got 0\."),
    ],
)
def test_invalid_config_values_raise(settings, message, tmp_path):
    """One line naming the setting, its value and the allowed range, when the config is built and when loaded."""
    with pytest.raises(ValueError, match=message) as raised:
        MagtkdFusionConfig(**settings)
    assert "\n" not in str(raised.value)
    saved = MagtkdFusionConfig().to_dict()
    (tmp_path / "config.json").write_text(json.dumps({**saved, **settings}))
    with pytest.raises(ValueError, match=message):
        AutoConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "config_class, encoder_settings, message",
    [
        (MagtkdVideoConfig, dict(num_frames=0), r"MagtkdVideoConfig: `encoder_config.num_frames` must be .*, got 0\."),
        (MagtkdVideoConfig, dict(image_size=8, patch_size=16), r"`encoder_config.image_size` must be >= "
                                                               r"encoder_config.patch_size \(16\), got 8\."),
        (MagtkdAudioConfig, dict(hidden_size=0), r"MagtkdAudioConfig: `encoder_config.hidden_size` must .*, got 0\."),
        (MagtkdTextConfig, dict(hidden_size=50, num_attention_heads=4), r"`encoder_config.hidden_size` must be a "
                                                                       r"multiple of .* \(4\), got 50\."),
    ],
)
def test_invalid_stage_config_values_raise(config_class, encoder_settings, message):
    with pytest.raises(ValueError, match=message):
        config_class(encoder_config=encoder_settings)
    with pytest.raises(ValueError, match=r"MagtkdTextConfig: `feature_size` must be an integer >= 1, got 0\."):
        MagtkdTextConfig(feature_size=0)


def test_presets_and_unknown_preset():
    meld = MagtkdConfig.for_meld()
    assert meld.id2label[0] == "anger" and meld.num_labels == 7
    assert meld.text_config.encoder_config.hidden_size == 1024 and meld.audio_config.feature_size == 768
    assert meld.text_config.encoder_config.vocab_size == 50274 and meld.text_config.feature_size == 768
    assert meld.video_config.encoder_config.num_frames == 8 and meld.audio_config.encoder_config.mask_time_length == 3
    assert meld.fusion_model_config.video_feature_source == "video_kd"
    iemocap = MagtkdFusionConfig.for_iemocap(released_speaker_table=True)
    assert [iemocap.id2label[i] for i in range(6)] == ["ang", "exc", "fru", "hap", "neu", "sad"]
    assert (iemocap.audio_anchor_loss_weight, iemocap.video_anchor_loss_weight) == (0.7, 0.8)
    assert iemocap.anchor_feature_loss and iemocap.video_feature_source == "video"
    assert iemocap.speaker_table_size == 3 and iemocap.speaker_padding_index == 2
    assert MagtkdFusionConfig.for_meld(released_speaker_table=True).speaker_table_size == 305
    for config_class in (MagtkdFusionConfig, MagtkdConfig, MagtkdTextConfig):
        with pytest.raises(ValueError, match="Unknown dataset 'cmu-mosei'.*iemocap.*meld"):
            config_class.from_preset("cmu-mosei")


def test_dataset_table_is_what_the_presets_read():
    assert set(DATASETS) == {"meld", "iemocap"} and dataset_facts("MELD") is DATASETS["meld"]
    for name, facts in DATASETS.items():
        fusion = MagtkdFusionConfig.from_preset(name, released_speaker_table=True)
        assert tuple(fusion.label_names) == facts["labels"]
        assert fusion.audio_anchor_loss_weight == facts["audio_anchor_loss_weight"]
        assert fusion.video_anchor_loss_weight == facts["video_anchor_loss_weight"]
        assert fusion.anchor_feature_loss == facts["anchor_feature_loss"]
        assert fusion.audio_feature_source == facts["audio_feature_source"]
        assert fusion.video_feature_source == facts["video_feature_source"]
        assert fusion.num_speakers == facts["released_num_speakers"]
    assert tuple(IEMOCAP_LABELS) == DATASETS["iemocap"]["labels"] and tuple(MELD_LABELS) == DATASETS["meld"]["labels"]


@pytest.mark.parametrize("config_class", [MagtkdTextConfig, MagtkdAudioConfig, MagtkdVideoConfig])
def test_stage_config_presets_give_the_dataset_labels(config_class):
    assert config_class().label_names == list(MELD_LABELS)  # MELD by default
    iemocap = config_class.for_iemocap()
    assert iemocap.label_names == list(IEMOCAP_LABELS) and iemocap.label2id["sad"] == 5
    assert config_class.for_meld().label_names == list(MELD_LABELS)


def test_end_to_end_preset_shares_the_fusion_labels_with_every_stage():
    config = MagtkdConfig.from_preset("iemocap", audio_anchor_loss_weight=0.5)
    assert config.label_names == list(IEMOCAP_LABELS)
    for sub_config in (config.text_config, config.audio_config, config.video_config, config.fusion_model_config):
        assert sub_config.label_names == list(IEMOCAP_LABELS)
    fusion = config.fusion_model_config
    assert fusion.audio_anchor_loss_weight == 0.5 and fusion.video_anchor_loss_weight == 0.8  # override, preset
    assert fusion.video_feature_source == "video"
    # The labels of a fusion given without a preset win over the stage configs' defaults.
    custom = MagtkdConfig(fusion_model_config=MagtkdFusionConfig(id2label={0: "calm", 1: "angry"}))
    assert custom.label_names == custom.text_config.label_names == ["calm", "angry"] and custom.num_labels == 2


def test_end_to_end_config_round_trips_with_its_stage_and_encoder_configs(tmp_path):
    config = MagtkdConfig(
        text_config=MagtkdTextConfig(
            encoder_config={"model_type": "roberta", "hidden_size": 64, "num_hidden_layers": 1,
                            "num_attention_heads": 4},
            feature_size=HIDDEN,
        ),
        # a plain encoder config (object or dict of another model type) becomes the stage's `encoder_config`
        audio_config={"model_type": "data2vec-audio", "hidden_size": HIDDEN, "num_attention_heads": HEADS},
        video_config=TimesformerConfig(hidden_size=HIDDEN, num_attention_heads=HEADS),
        fusion_model_config=tiny_config(),
    )
    assert type(config.audio_config) is MagtkdAudioConfig and type(config.video_config) is MagtkdVideoConfig
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is MagtkdConfig and type(loaded.text_config) is MagtkdTextConfig
    assert loaded.text_config.encoder_config.model_type == "roberta"
    assert loaded.text_config.encoder_config.hidden_size == 64 and loaded.text_config.feature_size == HIDDEN
    assert loaded.audio_config.encoder_config.model_type == "data2vec-audio"
    assert loaded.video_config.encoder_config.model_type == "timesformer" and loaded.video_config.feature_size == HIDDEN
    assert type(loaded.fusion_model_config) is MagtkdFusionConfig and loaded.fusion_model_config.hidden_size == HIDDEN
    assert loaded.fusion_model_config.to_dict() == config.fusion_model_config.to_dict()


@pytest.mark.parametrize("config_class", [MagtkdTextConfig, MagtkdAudioConfig, MagtkdVideoConfig, MagtkdFusionConfig])
def test_every_config_loads_as_its_own_class(tmp_path, config_class):
    config = config_class.for_iemocap()
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is config_class and loaded.label_names == list(IEMOCAP_LABELS)
    if config_class is not MagtkdFusionConfig:
        assert loaded.encoder_config.to_dict() == config.encoder_config.to_dict()


def test_forward_rejects_unknown_keywords():
    model = MagtkdFusionModel(tiny_config())
    with pytest.raises(TypeError, match="head_mask"):
        model(**make_batch([2, 1]), head_mask=None)


def test_bfloat16_model_takes_float32_features():
    model = MagtkdFusionModel(tiny_config()).eval()
    batch = make_batch([3, 2], seed=6)
    with torch.no_grad():
        expected = model(**batch)
        half = model.to(torch.bfloat16)
        output = half(**batch)  # float32 features, as cached features or float32 encoders give them
    assert output.logits.dtype == torch.bfloat16 and torch.isfinite(output.loss)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(output.logits.float()[real], expected.logits[real], atol=0.1, rtol=0.1)


def test_torch_export_gives_the_eager_outputs():
    torch.manual_seed(0)
    model = MagtkdFusionModel(tiny_config()).eval()
    batch = make_batch([3, 2], seed=7)  # B=2, N=3: the second conversation has one padded position
    batch.pop("labels")
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    with torch.no_grad():
        exported = torch.export.export(model, args=(), kwargs=batch)
        expected = model(**batch)
        output = exported.module()(**batch)
    for name in ("logits", "audio_logits", "video_logits", "text_anchor_hidden_states"):
        torch.testing.assert_close(output[name], expected[name], atol=1e-5, rtol=1e-5)


def test_torch_export_with_labels_gives_the_eager_loss():
    """The training graph exports: the loss is a masked mean, without a branch on which labels are ignored."""
    torch.manual_seed(0)
    model = MagtkdFusionModel(tiny_config(anchor_feature_loss=True)).eval()
    batch = make_batch([3, 2], seed=7)
    exported = torch.export.export(model, args=(), kwargs=batch)
    for labels in (batch["labels"], batch["labels"].masked_fill(batch["labels"] != 0, -100),
                   torch.full_like(batch["labels"], -100)):
        inputs = {**batch, "labels": labels}
        with torch.no_grad():
            torch.testing.assert_close(exported.module()(**inputs)["loss"], model(**inputs).loss)


def test_a_causal_fusion_gives_each_utterance_the_output_of_its_prefix():
    """With `causal=True` utterance i's outputs depend only on utterances 0..i: equal to the model run on the prefix
    (and on the conversation with later utterances changed); the paper's model reads the whole conversation."""
    torch.manual_seed(0)
    causal = MagtkdFusionModel(tiny_config(causal=True)).eval()
    paper = MagtkdFusionModel(tiny_config()).eval()
    paper.load_state_dict(causal.state_dict())
    full = {key: value for key, value in make_batch([6]).items() if key != "labels"}
    changed = {key: value.clone() for key, value in full.items()}
    changed["audio_features"][:, 4:] = torch.randn(1, 2, HIDDEN)
    with torch.no_grad():
        whole = causal(**full)
        assert (causal(**changed).logits[:, :4] - whole.logits[:, :4]).abs().max() < 1e-5
        for end in (1, 3, 6):
            prefix = causal(**{key: value[:, :end] for key, value in full.items()})
            for name in ("logits", "audio_logits", "video_logits", "text_anchor_hidden_states"):
                assert (getattr(prefix, name)[0, end - 1] - getattr(whole, name)[0, end - 1]).abs().max() < 1e-5
        assert (paper(**changed).logits[:, :4] - paper(**full).logits[:, :4]).abs().max() > 1e-3


def test_a_causal_fusion_trains_and_round_trips(tmp_path):
    model = MagtkdFusionModel(tiny_config(causal=True))
    model(**make_batch([4, 2])).loss.backward()
    model.save_pretrained(tmp_path / "causal")
    assert AutoModel.from_pretrained(tmp_path / "causal").config.causal is True


def test_dropout_scaled_mask_draws_the_reference_bits_and_is_the_identity_when_inactive():
    from magtkd_hf.modeling_magtkd_fusion import MagtkdDropout

    hidden = torch.randn(37, HIDDEN)
    dropout = MagtkdDropout(0.5).train()
    torch.manual_seed(3)
    dropped = dropout(hidden)
    torch.manual_seed(3)  # the reference: the same random words, one bit each, `x * keep * 2`
    words = torch.empty((hidden.numel() + 15) // 16, dtype=torch.int32).random_()
    bits = (words[:, None] >> torch.arange(16, dtype=torch.int32)) & 1
    keep = bits.flatten()[: hidden.numel()].view(hidden.shape).bool()
    assert torch.equal(dropped, hidden * keep * 2.0)
    other = MagtkdDropout(0.3).train()
    torch.manual_seed(4)
    dropped = other(hidden)
    torch.manual_seed(4)
    assert torch.equal(dropped, hidden * (torch.rand_like(hidden) >= 0.3) * (1.0 / 0.7))
    assert dropout.eval()(hidden) is hidden and MagtkdDropout(0.0).train()(hidden) is hidden


def test_a_block_projects_queries_shared_by_stacked_copies_once_with_the_same_result():
    from magtkd_hf.modeling_magtkd_fusion import ConversationLayout, MagtkdFusionBlock

    torch.manual_seed(0)
    block = MagtkdFusionBlock(tiny_config()).eval()
    layout = ConversationLayout((torch.arange(5)[None, :] < torch.tensor([[5], [2], [4]])).long())
    queries = torch.randn(11, HIDDEN)
    keys_values = torch.randn(3 * 11, HIDDEN)
    with torch.no_grad():
        stacked = block(torch.cat([queries] * 3), keys_values, layout.repeated(3))
        shared = block(queries, keys_values, layout.repeated(3), query_copies=3)
    torch.testing.assert_close(shared, stacked, rtol=0, atol=1e-6)


def test_evaluation_text_anchor_with_one_query_tensor_equals_three_copies():
    torch.manual_seed(0)
    model = MagtkdFusionModel(tiny_config()).eval()
    batch = make_batch([4, 1, 6])
    with torch.no_grad():
        fast = model(**batch)
        anchor = model.text_anchor
        original = anchor._shared_paths

        def distinct_queries(queries, keys_values, layout, output_attentions):  # the stacked path, as in training
            return original([query.clone() for query in queries], keys_values, layout, output_attentions)

        anchor._shared_paths = distinct_queries
        slow = model(**batch)
    for key in ("logits", "audio_logits", "video_logits", "text_anchor_hidden_states", "loss"):
        torch.testing.assert_close(fast[key], slow[key], rtol=0, atol=1e-5)
