import json

import pytest
import torch
from media_fixtures import write_mp4
from tiny_magtkd import tiny_config, tiny_processor
from transformers import pipeline

from magtkd_hf import MagtkdForEmotionRecognition
from magtkd_hf.inference import format_predictions, load_emotion_model, predict_emotions, read_conversation_file


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("predict")
    processor = tiny_processor()
    torch.manual_seed(0)
    MagtkdForEmotionRecognition(tiny_config(processor)).save_pretrained(folder / "model")
    processor.save_pretrained(folder / "model")
    for name, seconds in (("a.mp4", 0.5), ("b.mp4", 0.7)):
        write_mp4(folder / name, num_frames=8, audio_seconds=seconds)
    conversation = {"utterances": [
        {"speaker": "Ann", "text": "did you hear that", "video": "a.mp4"},
        {"speaker": "Bob", "text": "hear what", "video": "b.mp4"},
        {"speaker": "Ann", "text": "the door", "video": "a.mp4"},
    ]}
    (folder / "conversation.json").write_text(json.dumps(conversation))
    return folder


def test_predict_gives_one_emotion_per_utterance_matching_the_model(saved_model):
    conversation = read_conversation_file(saved_model / "conversation.json")
    assert conversation[0]["video"] == str(saved_model / "a.mp4")
    model, processor = load_emotion_model(saved_model / "model")
    rows = predict_emotions(model, processor, conversation)
    assert [row["speaker"] for row in rows] == ["Ann", "Bob", "Ann"]
    with torch.no_grad():
        logits = model(**processor(conversation, return_tensors="pt")).logits[0]
    for row, utterance_logits in zip(rows, logits):
        assert row["emotion"] == model.config.id2label[int(utterance_logits.argmax())]
        assert abs(sum(row["probabilities"].values()) - 1) < 1e-5
    table = format_predictions(rows)
    assert table.splitlines()[0].split() == ["speaker", "text", "emotion", "prob"] and "hear what" in table


def test_pipeline_task_matches_predict(saved_model):
    conversation = read_conversation_file(saved_model / "conversation.json")
    model, processor = load_emotion_model(saved_model / "model")
    classifier = pipeline("emotion-recognition-in-conversation", model=str(saved_model / "model"), device="cpu")
    rows = classifier({"utterances": conversation})
    expected = predict_emotions(model, processor, conversation)
    assert [(row["label"], row["score"]) for row in rows] == [(row["emotion"], row["probability"]) for row in expected]


def test_bad_conversation_files_are_reported(tmp_path):
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(ValueError, match="non-empty list"):
        read_conversation_file(tmp_path / "empty.json")
    (tmp_path / "typo.json").write_text(json.dumps([{"speaker": "A", "text": "hi", "vidoe": "x.mp4"}]))
    with pytest.raises(ValueError, match="utterance 0 has unknown keys"):
        read_conversation_file(tmp_path / "typo.json")
    with pytest.raises(ValueError, match="Cannot read"):
        read_conversation_file(tmp_path / "missing.json")
