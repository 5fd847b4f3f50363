"""The stage models' contracts: loss in forward over (U,) labels, the stage-2 distillation model, saving and loading
as their own class, unknown keywords refused, resized vocabularies."""

import pytest
import torch
import torch.nn.functional as F
from tiny_magtkd import tiny_processor, tiny_stage_config, write_conversation_rows
from transformers import AutoModel

from magtkd_hf import (
    MagtkdAudioModel,
    MagtkdDistillationModel,
    MagtkdTextModel,
    MagtkdVideoModel,
)
from magtkd_hf.losses import distillation_loss

STAGE_CLASSES = {"text": MagtkdTextModel, "audio": MagtkdAudioModel, "video": MagtkdVideoModel}


@pytest.fixture(scope="module", autouse=True)
def _threads(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


@pytest.fixture(scope="module")
def batch(processor, tmp_path_factory):
    rows = write_conversation_rows(tmp_path_factory.mktemp("stage_media"), lengths=(3, 2))
    return processor(rows)


def stage_inputs(batch, modality):
    """The stage model's forward arguments from the processor's output."""
    return {
        "text": lambda: {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]},
        "audio": lambda: {"input_values": batch["input_values"], "attention_mask": batch["audio_attention_mask"]},
        "video": lambda: {"pixel_values": batch["pixel_values"]},
    }[modality]()


@pytest.fixture(scope="module")
def stage_models(processor):
    models = {}
    for seed, (modality, model_class) in enumerate(STAGE_CLASSES.items()):
        torch.manual_seed(seed)
        models[modality] = model_class(tiny_stage_config(processor, modality)).eval()
    return models


@pytest.mark.parametrize("modality", list(STAGE_CLASSES))
def test_stage_loss_is_cross_entropy_over_the_labelled_utterances(stage_models, batch, modality):
    model = stage_models[modality]
    inputs = stage_inputs(batch, modality)
    labels = torch.tensor([3, -100, 0, 6, -100])
    keep = labels != -100
    output = model(**inputs, labels=labels)
    assert output.logits.shape == (5, 7)
    torch.testing.assert_close(output.loss, F.cross_entropy(output.logits[keep], labels[keep]))
    with torch.no_grad():
        unlabelled = model(**inputs)
        torch.testing.assert_close(unlabelled.logits, output.logits)
        assert unlabelled.loss is None
    ignored = model(**inputs, labels=torch.full((5,), -100))
    assert ignored.loss.item() == 0.0 and ignored.loss.requires_grad
    # Labels per conversation (the processor's (B, N)) or of another length are refused.
    for wrong in (batch["labels"], labels[:4], labels[:, None]):
        with pytest.raises(ValueError, match=r"`labels` has shape .* expected \(5,\)"):
            model(**inputs, labels=wrong)
    # Tuples when asked, loss first.
    as_tuple = model(**inputs, labels=labels, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], output.loss)


@pytest.mark.parametrize("modality", list(STAGE_CLASSES))
def test_stage_forward_rejects_unknown_keywords(stage_models, batch, modality):
    inputs = stage_inputs(batch, modality)
    with pytest.raises(TypeError, match="output_hidden_states"):
        stage_models[modality](**inputs, output_hidden_states=True)
    # The processor's whole output is not a stage model's input (no `utterance_mask`, `speaker_ids`, ...).
    with pytest.raises(TypeError):
        stage_models[modality](**inputs, utterance_mask=batch["utterance_mask"])


@pytest.mark.parametrize("modality", list(STAGE_CLASSES))
def test_stage_models_save_and_load_as_their_own_class(stage_models, batch, modality, tmp_path):
    model = stage_models[modality]
    model.save_pretrained(tmp_path)
    loaded, info = AutoModel.from_pretrained(tmp_path, output_loading_info=True)
    assert type(loaded) is STAGE_CLASSES[modality]
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert loaded.config.feature_size == model.config.feature_size and loaded.config.id2label == model.config.id2label
    assert type(STAGE_CLASSES[modality].from_pretrained(tmp_path)) is STAGE_CLASSES[modality]
    with torch.no_grad():
        expected = model(**stage_inputs(batch, modality))
        output = loaded.eval()(**stage_inputs(batch, modality))
    torch.testing.assert_close(output.features, expected.features, atol=0, rtol=0)
    torch.testing.assert_close(output.logits, expected.logits, atol=0, rtol=0)


def test_text_model_resize_token_embeddings_updates_the_config_and_survives_saving(processor, tmp_path):
    torch.manual_seed(0)
    model = MagtkdTextModel(tiny_stage_config(processor, "text"))
    before = len(processor.tokenizer)
    model.resize_token_embeddings(before + 5)
    assert model.get_input_embeddings().num_embeddings == before + 5
    assert model.text_encoder.encoder.get_input_embeddings().weight.shape[0] == before + 5
    assert model.config.encoder_config.vocab_size == before + 5
    assert model.text_encoder.encoder.config.vocab_size == before + 5
    model.save_pretrained(tmp_path)
    loaded, info = AutoModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]
    assert loaded.config.encoder_config.vocab_size == before + 5
    torch.testing.assert_close(loaded.get_input_embeddings().weight, model.get_input_embeddings().weight)


# --- stage 2 ---------------------------------------------------------------------------------------------------------

LOSS_SETTINGS = dict(
    logit_weight=0.5, feature_weight=0.3, logit_temperature=3.0, inter_weight=0.7, intra_weight=1.3,
    feature_temperature=0.5,
)


@pytest.fixture(scope="module")
def teacher(processor):
    torch.manual_seed(10)
    return MagtkdTextModel(tiny_stage_config(processor, "text"))


@pytest.mark.parametrize("modality", ["audio", "video"])
def test_distillation_loss_is_the_stage_2_objective_on_the_two_models_outputs(processor, teacher, batch, modality):
    torch.manual_seed(3)
    student = STAGE_CLASSES[modality](tiny_stage_config(processor, modality))
    model = MagtkdDistillationModel(student, teacher, **LOSS_SETTINGS).eval()
    assert model.student is student and model.teacher is teacher
    student_inputs, teacher_inputs = stage_inputs(batch, modality), stage_inputs(batch, "text")
    labels = torch.tensor([1, 4, -100, 0, 2])
    output = model(student_inputs, teacher_inputs, labels)
    with torch.no_grad():
        own = student(**student_inputs)
        taught_by = teacher(**teacher_inputs)
    keep = labels != -100
    expected = distillation_loss(
        own.logits[keep], taught_by.logits[keep], labels[keep], own.features[keep], taught_by.features[keep],
        **LOSS_SETTINGS,
    )
    torch.testing.assert_close(output.loss, expected)
    torch.testing.assert_close(output.logits, own.logits)
    torch.testing.assert_close(output.teacher_logits, taught_by.logits)
    # Every weight counts: with other weights the loss differs.
    other = MagtkdDistillationModel(student, teacher, logit_weight=0.0, feature_weight=0.0).eval()
    torch.testing.assert_close(
        other(student_inputs, teacher_inputs, labels).loss, F.cross_entropy(own.logits[keep], labels[keep])
    )
    assert model(student_inputs, teacher_inputs).loss is None
    assert model(student_inputs, teacher_inputs, torch.full((5,), -100)).loss.item() == 0.0


def test_teacher_is_frozen_and_stays_in_eval_mode(processor, teacher, batch):
    torch.manual_seed(4)
    student = MagtkdVideoModel(tiny_stage_config(processor, "video"))
    model = MagtkdDistillationModel(student, teacher, logit_weight=1.0, feature_weight=1.0)
    model.train()
    assert model.training and student.training
    assert not teacher.training and not any(module.training for module in teacher.modules())
    assert not any(parameter.requires_grad for parameter in teacher.parameters())
    output = model(stage_inputs(batch, "video"), stage_inputs(batch, "text"), torch.tensor([0, 1, 2, 3, 4]))
    assert output.teacher_logits.grad_fn is None
    output.loss.backward()
    assert all(parameter.grad is None for parameter in teacher.parameters())
    assert student.classifier.weight.grad is not None
    assert student.video_encoder.encoder.embeddings.cls_token.grad is not None
    model.eval()
    assert not student.training and not teacher.training


def test_the_loop_saves_the_distillation_models_student(processor, teacher, batch, tmp_path):
    from magtkd_hf.training.loop import saved_model

    torch.manual_seed(5)
    student = MagtkdAudioModel(tiny_stage_config(processor, "audio")).eval()
    model = MagtkdDistillationModel(student, teacher, logit_weight=1.0, feature_weight=0.0)
    assert saved_model(model) is student
    saved_model(model).save_pretrained(tmp_path)
    loaded, info = AutoModel.from_pretrained(tmp_path, output_loading_info=True)
    assert type(loaded) is MagtkdAudioModel
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    expected = student.state_dict()
    assert set(loaded.state_dict()) == set(expected)  # the student alone: no teacher weights
    for name, tensor in loaded.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], atol=0, rtol=0, msg=name)


def test_distillation_forward_rejects_unknown_keywords(processor, teacher, batch):
    student = MagtkdAudioModel(tiny_stage_config(processor, "audio"))
    model = MagtkdDistillationModel(student, teacher, logit_weight=1.0, feature_weight=1.0).eval()
    student_inputs, teacher_inputs = stage_inputs(batch, "audio"), stage_inputs(batch, "text")
    with pytest.raises(TypeError, match="output_hidden_states"):
        model(student_inputs, teacher_inputs, output_hidden_states=True)
    with pytest.raises(TypeError, match="output_hidden_states"):
        model({**student_inputs, "output_hidden_states": True}, teacher_inputs)
    with pytest.raises(TypeError, match="input_values"):
        model(student_inputs, {**teacher_inputs, "input_values": batch["input_values"]})


def test_student_and_teacher_must_share_labels(processor, teacher):
    student = MagtkdAudioModel(tiny_stage_config(processor, "audio", preset="iemocap"))
    with pytest.raises(ValueError, match="labels"):
        MagtkdDistillationModel(student, teacher, logit_weight=1.0, feature_weight=1.0)
