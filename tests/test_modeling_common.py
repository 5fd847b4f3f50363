"""The checks of `output_hidden_states`/`output_attentions` that transformers' `ModelTesterMixin` (run itself in
test_transformers_common.py when TRANSFORMERS_TESTS_DIR is set) skips for the fusion and the end-to-end model: outputs
per part (`text_hidden_states`, ..., `fusion_attentions`), index selections without `_can_record_outputs`, and the
encoders' outputs per utterance. Written for MAGTKD's inputs."""

import copy

import pytest
import torch
from test_end_to_end import _threads, processor  # noqa: F401 (module fixtures: one torch thread, tiny processor)
from tiny_magtkd import tiny_config, tiny_fusion_config, write_conversation_rows

from magtkd_hf import MagtkdDataCollator, MagtkdForEmotionRecognition, MagtkdFusionModel
from magtkd_hf.modeling_magtkd_fusion import FUSION_BLOCK_NAMES


@pytest.fixture(scope="module")
def batch(processor, tmp_path_factory):  # noqa: F811
    rows = write_conversation_rows(tmp_path_factory.mktemp("common_media"), lengths=(3, 1, 2))
    return MagtkdDataCollator(processor)(rows)


@pytest.fixture(scope="module", params=["fusion", "end-to-end"])
def model_and_inputs(request, processor, batch):  # noqa: F811
    """(model, inputs with labels, the names of its hidden-state and attention outputs)."""
    inputs = batch
    torch.manual_seed(0)
    if request.param == "end-to-end":
        model = MagtkdForEmotionRecognition(tiny_config(processor))
        names = [f"{part}_{kind}" for part in ("text", "audio", "video", "fusion")
                 for kind in ("hidden_states", "attentions")]
        return model.eval(), dict(inputs), names
    mask = inputs["utterance_mask"]
    features = {f"{m}_features": torch.randn(*mask.shape, 32) for m in ("text", "audio", "video")}
    fusion_inputs = {**features, "speaker_ids": inputs["speaker_ids"], "attention_mask": mask,
                     "labels": inputs["labels"]}
    return MagtkdFusionModel(tiny_fusion_config()).eval(), fusion_inputs, ["hidden_states", "attentions"]


def test_hidden_states_and_attentions_where_asked(model_and_inputs):
    """ModelTesterMixin.test_hidden_states_output / test_attention_outputs: the outputs come where asked (argument or
    config), not otherwise, and asking changes no prediction."""
    model, inputs, names = model_and_inputs
    with torch.no_grad():
        plain = model(**inputs)
        full = model(**inputs, output_hidden_states=True, output_attentions=True)
        model.config.output_hidden_states = True
        from_config = model(**inputs)
        model.config.output_hidden_states = False
    assert all(plain[name] is None for name in names if name in plain) and not set(names) & set(plain.keys())
    assert set(names) <= set(full.keys())
    hidden_names = [name for name in names if name.endswith("hidden_states")]
    assert set(hidden_names) <= set(from_config.keys()) and not {"attentions", "fusion_attentions"} & set(from_config)
    torch.testing.assert_close(full.logits, plain.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(full.loss, plain.loss, atol=1e-5, rtol=1e-5)
    fusion_states = full["fusion_hidden_states" if "fusion_hidden_states" in names else "hidden_states"]
    fusion_weights = full["fusion_attentions" if "fusion_attentions" in names else "attentions"]
    batch_size, length = inputs["speaker_ids"].shape
    assert len(fusion_states) == len(fusion_weights) == len(FUSION_BLOCK_NAMES)
    assert {tuple(state.shape) for state in fusion_states} == {(batch_size, length, 32)}
    assert {tuple(weights.shape) for weights in fusion_weights} == {(batch_size, 4, length, length)}
    mask = inputs["utterance_mask" if "utterance_mask" in inputs else "attention_mask"].bool()
    for weights in fusion_weights:  # rows are distributions over the conversation's real utterances
        torch.testing.assert_close(weights.sum(-1), torch.ones_like(weights.sum(-1)))
        assert (weights.masked_select(~mask[:, None, None, :]) == 0).all()


def test_can_capture_specific_layers_hidden_states(model_and_inputs):
    """ModelTesterMixin.test_can_capture_specific_layers_hidden_states: `output_hidden_states` as indices (negative
    from the end) gives those hidden states, equal to the full run's, and None for the others. (TimeSformer, not yet
    on transformers' `capture_outputs` in 5.25, takes the selection as `True` and returns all.)"""
    model, inputs, names = model_and_inputs
    with torch.no_grad():
        full = model(**inputs, output_hidden_states=True)
        selected = model(**inputs, output_hidden_states=[0, -1])
    for name in (name for name in names if name.endswith("hidden_states") and name != "video_hidden_states"):
        states, chosen = full[name], selected[name]
        assert len(chosen) == len(states) and [state is None for state in chosen][1:-1] == [True] * (len(states) - 2)
        torch.testing.assert_close(chosen[0], states[0])
        torch.testing.assert_close(chosen[-1], states[-1])


def test_encoder_layer_outputs_are_each_utterances_own(processor, batch):  # noqa: F811
    """The end-to-end model's encoder hidden states: one row per utterance, that of the encoder run on the utterance
    alone (audio of several lengths runs per length; zero padded past each utterance's own frames), zeros for an
    utterance without audio; eager attention gives every encoder's weights."""
    inputs = batch
    torch.manual_seed(0)
    model = MagtkdForEmotionRecognition(tiny_config(processor)).eval()
    lengths = inputs["audio_attention_mask"].sum(1)
    assert len(set(lengths.tolist())) > 1
    without_audio = {**inputs, "has_audio": torch.tensor([1, 0, 1, 1, 1, 1])}
    with torch.no_grad():
        output = model(**without_audio, output_hidden_states=True)
        for row in (0, 2):
            alone = model.audio_encoder.encoder(inputs["input_values"][row:row + 1, : int(lengths[row])],
                                                output_hidden_states=True).hidden_states[-1][0]
            frames = alone.shape[0]
            torch.testing.assert_close(output.audio_hidden_states[-1][row, :frames], alone, atol=1e-4, rtol=1e-4)
            assert (output.audio_hidden_states[-1][row, frames:] == 0).all()
        assert all((state[1] == 0).all() for state in output.audio_hidden_states)
        eager = copy.deepcopy(model)
        eager.set_attn_implementation("eager")
        weights = eager(**inputs, output_attentions=True)
    assert all(len(weights[f"{m}_attentions"]) == 2 for m in ("text", "audio", "video"))
