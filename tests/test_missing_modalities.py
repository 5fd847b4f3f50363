"""Conversations with missing modalities: the processor's presence flags, the fusion's missing embeddings and modality
dropout, the end-to-end model skipping absent media, and the `modalities` of predict and pipeline rows."""

import pytest
import torch
from media_fixtures import sine, write_mp4, write_wav
from tiny_magtkd import tiny_config, tiny_fusion_config, tiny_processor
from transformers import pipeline

from magtkd_hf import MagtkdForEmotionRecognition, MagtkdFusionConfig, MagtkdFusionModel
from magtkd_hf.inference import predict_emotions
from magtkd_hf.processors import MagtkdInputError


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("missing_media")
    return {
        "clip": str(write_mp4(folder / "clip.mp4", num_frames=8, width=40, height=32, audio_seconds=0.5)),
        "clip_b": str(write_mp4(folder / "clip_b.mp4", num_frames=8, width=40, height=32, audio_seconds=0.7)),
        "silent": str(write_mp4(folder / "silent.mp4", num_frames=8, width=40, height=32)),
        "wav": str(write_wav(folder / "utt.wav", sine(440.0, 0.6, 16000), 16000)),
        "missing": str(folder / "nowhere.mp4"),
    }


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


def _utterance(text, **media):
    return {"speaker": "A" if len(text) % 2 else "B", "text": text, **media}


def mixed_conversation(media):
    """Full; no video (a WAV); neither; a video without a sound track; no audio key (the video's track)."""
    return [
        _utterance("hello there", video=media["clip"], audio=media["wav"]),
        _utterance("only sound here", audio=media["wav"]),
        _utterance("just words"),
        _utterance("a silent film", video=media["silent"]),
        _utterance("and back again", video=media["clip_b"]),
    ]


# --- processor -------------------------------------------------------------------------------------------------------


def test_processor_flags_and_zeros_for_absent_media(processor, media):
    conversation = mixed_conversation(media)
    out = processor(conversation)
    assert out["has_audio"].tolist() == [1, 1, 0, 0, 1] and out["has_video"].tolist() == [1, 0, 0, 1, 1]
    assert out["has_audio"].dtype == out["has_video"].dtype == torch.long
    assert out["input_values"].shape[0] == out["pixel_values"].shape[0] == 5
    for u in (2, 3):
        assert not out["input_values"][u].any() and not out["audio_attention_mask"][u].any()
    for u in (1, 2):
        assert not out["pixel_values"][u].any()
    # the present utterances get what they get alone (absent ones are left out of the padding and normalisation)
    present = processor([conversation[0], conversation[1], conversation[4]])
    assert torch.equal(out["input_values"][[0, 1, 4]], present["input_values"])
    with_video = processor([conversation[0], conversation[3], conversation[4]])
    assert torch.equal(out["pixel_values"][[0, 3, 4]], with_video["pixel_values"])


def test_processor_all_present_flags_are_ones_and_text_only_conversations_work(processor, media):
    out = processor([_utterance("hi", video=media["clip"]), _utterance("yo", video=media["clip_b"])])
    assert out["has_audio"].tolist() == [1, 1] and out["has_video"].tolist() == [1, 1]
    text_only = processor([_utterance("hi"), _utterance("yo there")])
    assert text_only["has_audio"].tolist() == [0, 0] and text_only["has_video"].tolist() == [0, 0]
    assert text_only["input_values"].shape == (2, 0) and text_only["pixel_values"].shape[:2] == (2, 8)
    assert not text_only["pixel_values"].any()


def test_missing_files_are_still_errors(processor, media):
    for change in ({"video": media["missing"]}, {"audio": media["missing"]}, {"audio": media["silent"]}):
        with pytest.raises(MagtkdInputError, match="utterance #1"):
            processor([_utterance("hi"), _utterance("yo", **change)])
    with pytest.raises(MagtkdInputError, match="empty or non-text transcript"):
        processor([{"speaker": "A", "text": "", "video": media["clip"]}])


# --- fusion ----------------------------------------------------------------------------------------------------------


def _fusion_inputs(seed=0, batch=2, length=4):
    generator = torch.Generator().manual_seed(seed)
    hidden = tiny_fusion_config().hidden_size
    features = [torch.randn(batch, length, hidden, generator=generator) for _ in range(3)]
    speakers = torch.randint(0, 3, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, -1] = 0
    return features, speakers, mask


@pytest.fixture(scope="module")
def fusion():
    torch.manual_seed(0)
    model = MagtkdFusionModel(tiny_fusion_config()).eval()
    with torch.no_grad():  # distinct embeddings, so that using them shows
        model.missing_audio_embedding.normal_()
        model.missing_video_embedding.normal_()
    return model


def test_all_present_masks_equal_no_masks(fusion):
    (text, audio, video), speakers, mask = _fusion_inputs()
    plain = fusion(text, audio, video, speakers, mask)
    ones = torch.ones_like(mask)
    masked = fusion(text, audio, video, speakers, mask, audio_mask=ones, video_mask=ones)
    for name in ("logits", "audio_logits", "video_logits"):
        assert torch.equal(plain[name], masked[name])


def test_absent_positions_use_the_missing_embedding(fusion):
    (text, audio, video), speakers, mask = _fusion_inputs()
    audio_mask, video_mask = torch.ones_like(mask), torch.ones_like(mask)
    audio_mask[0, 1], video_mask[1, 0], video_mask[0, 2] = 0, 0, 0
    reference = fusion(text, audio, video, speakers, mask, audio_mask=audio_mask, video_mask=video_mask).logits
    changed_audio, changed_video = audio.clone(), video.clone()
    changed_audio[audio_mask == 0] = 1e3
    changed_video[video_mask == 0] = -7.0
    changed = fusion(text, changed_audio, changed_video, speakers, mask, audio_mask=audio_mask, video_mask=video_mask)
    assert torch.equal(reference, changed.logits)
    # the embedding is what stands in: writing it into the features without a mask gives the same logits
    filled_audio, filled_video = audio.clone(), video.clone()
    filled_audio[audio_mask == 0] = fusion.missing_audio_embedding.detach()
    filled_video[video_mask == 0] = fusion.missing_video_embedding.detach()
    torch.testing.assert_close(fusion(text, filled_audio, filled_video, speakers, mask).logits, reference)
    assert not torch.equal(fusion(text, audio, video, speakers, mask).logits, reference)


def test_masks_of_a_wrong_shape_are_refused(fusion):
    (text, audio, video), speakers, mask = _fusion_inputs()
    with pytest.raises(ValueError, match="`audio_mask` shape"):
        fusion(text, audio, video, speakers, mask, audio_mask=torch.ones(2, 3, dtype=torch.long))


def test_modality_dropout_only_in_training_and_only_audio_and_video():
    torch.manual_seed(0)
    model = MagtkdFusionModel(tiny_fusion_config(dropout=0.0, modality_dropout=0.5))
    (text, audio, video), speakers, mask = _fusion_inputs(length=6)
    model.eval()
    reference = MagtkdFusionModel(tiny_fusion_config(dropout=0.0))
    reference.load_state_dict(model.state_dict())
    evaluated = model(text, audio, video, speakers, mask).logits
    assert torch.equal(evaluated, reference.eval()(text, audio, video, speakers, mask).logits)  # eval: no dropping
    model.train()
    calls = {"audio": [], "video": []}
    original = model._with_missing

    def spy(packed, present, embedding, layout):
        result = original(packed, present, embedding, layout)
        name = "audio" if embedding is model.missing_audio_embedding else "video"
        calls[name].append((result == embedding).all(dim=1))
        return result

    model._with_missing = spy
    torch.manual_seed(1)
    first = model(text, audio, video, speakers, mask).logits
    torch.manual_seed(1)
    assert torch.equal(first, model(text, audio, video, speakers, mask).logits)  # seeded like dropout
    dropped = torch.cat([torch.stack(calls[name]) for name in calls])
    assert dropped.any() and not dropped.all()  # about half of the utterances, per modality
    assert len(calls["audio"]) == len(calls["video"]) == 2


def test_modality_dropout_never_drops_text():
    torch.manual_seed(0)
    model = MagtkdFusionModel(tiny_fusion_config(dropout=0.0, modality_dropout=0.999)).train()
    (text, audio, video), speakers, mask = _fusion_inputs(length=3)

    def run(text, audio, video):
        torch.manual_seed(3)  # the same draws each run: every audio and video feature dropped (p = 0.999)
        return model(text, audio, video, speakers, mask).logits

    reference = run(text, audio, video)
    assert torch.equal(reference, run(text, audio + 5.0, video - 5.0))  # audio and video: all replaced
    assert not torch.equal(reference, run(text + 1.0, audio, video))  # text: always used


def test_modality_dropout_is_validated():
    with pytest.raises(ValueError, match="`modality_dropout` must be in"):
        MagtkdFusionConfig(modality_dropout=1.0)


def test_model_settings_carry_modality_dropout():
    from magtkd_hf.training import ModelSettings

    assert ModelSettings(modality_dropout=0.3).given() == {"modality_dropout": 0.3}


# --- end to end ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(processor):
    torch.manual_seed(0)
    return MagtkdForEmotionRecognition(tiny_config(processor)).eval()


def test_end_to_end_runs_encoders_on_present_utterances_only(model, processor, media):
    inputs = processor(mixed_conversation(media))
    seen = {}

    def record(name):
        def hook(module, args, kwargs):
            first = kwargs.get("input_values", kwargs.get("pixel_values"))
            seen[name] = first.shape[0]
        return hook

    handles = [model.audio_encoder.register_forward_pre_hook(record("audio"), with_kwargs=True),
               model.video_encoder.register_forward_pre_hook(record("video"), with_kwargs=True)]
    try:
        with torch.no_grad():
            output = model(**inputs)
            again = model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    assert seen == {"audio": 3, "video": 3}
    assert output.logits.isfinite().all() and torch.equal(output.logits, again.logits)
    assert not output.audio_features[[2, 3]].any() and not output.video_features[[1, 2]].any()


def test_end_to_end_all_present_flags_change_nothing(model, processor, media):
    inputs = processor([_utterance("hi", video=media["clip"]), _utterance("yo", video=media["clip_b"])])
    with torch.no_grad():
        with_flags = model(**inputs)
        without = model(**{key: value for key, value in inputs.items() if not key.startswith("has_")})
    assert torch.equal(with_flags.logits, without.logits)


def test_text_only_conversation_runs_without_media_encoders(model, processor):
    inputs = processor([_utterance("hi"), _utterance("yo there")])
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[:2] == (1, 2) and logits.isfinite().all()


@pytest.fixture(scope="module")
def saved(model, processor, tmp_path_factory):
    folder = tmp_path_factory.mktemp("missing_model") / "model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_save_load_round_trip_keeps_the_embeddings(model, processor, saved, media):
    loaded = MagtkdForEmotionRecognition.from_pretrained(saved).eval()
    assert torch.equal(loaded.fusion.missing_audio_embedding, model.fusion.missing_audio_embedding)
    inputs = processor(mixed_conversation(media))
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)


def test_folders_saved_without_the_embeddings_load_them_as_zeros(saved, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    old = tmp_path / "old"
    shutil.copytree(saved, old)
    weights = load_file(old / "model.safetensors")
    kept = {key: value for key, value in weights.items() if "missing_" not in key}
    save_file(kept, old / "model.safetensors", metadata={"format": "pt"})
    loaded, info = MagtkdForEmotionRecognition.from_pretrained(old, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not loaded.fusion.missing_audio_embedding.any() and not loaded.fusion.missing_video_embedding.any()


def test_predict_and_pipeline_rows_carry_modalities(model, processor, saved, media):
    conversation = mixed_conversation(media)
    expected = [["text", "audio", "video"], ["text", "audio"], ["text"], ["text", "video"], ["text", "audio", "video"]]
    rows = predict_emotions(model, processor, conversation)
    assert [row["modalities"] for row in rows] == expected
    classifier = pipeline("emotion-recognition-in-conversation", model=str(saved), device="cpu")
    first, second = classifier([conversation, conversation[:3]], batch_size=2)
    assert [row["modalities"] for row in first] == expected and [row["modalities"] for row in second] == expected[:3]
    assert [row["label"] for row in first] == [row["label"] for row in rows]


def test_model_card_says_when_the_model_was_not_trained_for_missing_modalities(saved, tmp_path):
    from magtkd_hf.apps.hub import build_model_card

    assert "not trained for missing modalities" in str(build_model_card(saved))
    MagtkdFusionModel(tiny_fusion_config(modality_dropout=0.3)).save_pretrained(tmp_path / "fusion")
    assert "missing modalities" not in str(build_model_card(tmp_path / "fusion"))
