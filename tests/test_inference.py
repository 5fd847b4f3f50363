import io
import json
import sys

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
        assert row["label"] == model.config.id2label[int(utterance_logits.argmax())]
        assert abs(sum(row["probabilities"].values()) - 1) < 1e-5
    table = format_predictions(rows)
    assert table.splitlines()[0].split() == ["speaker", "text", "emotion", "prob"] and "hear what" in table


def test_pipeline_task_matches_predict(saved_model):
    conversation = read_conversation_file(saved_model / "conversation.json")
    model, processor = load_emotion_model(saved_model / "model")
    classifier = pipeline("emotion-recognition-in-conversation", model=str(saved_model / "model"), device="cpu",
                          dtype=torch.float32)  # predict_emotions runs the model as loaded: float32
    rows = classifier({"utterances": conversation})
    expected = predict_emotions(model, processor, conversation)
    assert [(row["label"], row["score"]) for row in rows] == [(row["label"], row["score"]) for row in expected]


def test_bad_conversation_files_are_reported(tmp_path):
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(ValueError, match="non-empty list"):
        read_conversation_file(tmp_path / "empty.json")
    (tmp_path / "typo.json").write_text(json.dumps([{"speaker": "A", "text": "hi", "vidoe": "x.mp4"}]))
    with pytest.raises(ValueError, match="utterance 0 has unknown keys"):
        read_conversation_file(tmp_path / "typo.json")
    with pytest.raises(FileNotFoundError, match=r"missing\.json: no such file"):
        read_conversation_file(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"speaker": None}, "'speaker' must be a non-empty name or an integer id, got None"),
        ({"speaker": ""}, "'speaker' must be a non-empty name"),
        ({"text": 5}, "'text' must be a non-empty string, got 5"),
        ({"video": 5}, "'video' must be a file path"),
    ],
)
def test_wrongly_typed_fields_name_the_file_and_utterance(tmp_path, change, message):
    (tmp_path / "c.json").write_text(json.dumps([{"speaker": "A", "text": "hi", "video": "x.mp4"}, {"speaker": "B", "text": "yo", "video": "x.mp4", **change}]))
    with pytest.raises(ValueError, match=rf"c\.json: utterance 1: {message}"):
        read_conversation_file(tmp_path / "c.json")


def test_a_non_utf8_conversation_file_is_named(tmp_path):
    (tmp_path / "latin1.json").write_bytes('[{"speaker": "Ren\xe9e", "text": "hi"}]'.encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.json: not UTF-8 text \(byte 0xe9 at position 17\)"):
        read_conversation_file(tmp_path / "latin1.json")


def test_integer_speakers_are_names_and_null_speakers_are_refused(saved_model):
    from magtkd_hf.processors.prompt import MagtkdInputError

    conversation = read_conversation_file(saved_model / "conversation.json")
    model, processor = load_emotion_model(saved_model / "model")
    numbered = [dict(utterance, speaker=index % 2) for index, utterance in enumerate(conversation)]
    named = [dict(utterance, speaker=str(index % 2)) for index, utterance in enumerate(conversation)]
    rows = predict_emotions(model, processor, numbered)
    assert [row["speaker"] for row in rows] == ["0", "1", "0"]
    assert rows == predict_emotions(model, processor, named)
    assert "0" in format_predictions(rows)
    with pytest.raises(MagtkdInputError, match=r"utterance #1: the speaker must be .* got None"):
        processor([dict(conversation[0]), dict(conversation[1], speaker=None)])


def _columns(text):
    """Terminal columns, computed independently of the code under test: wide/fullwidth 2, combining marks 0."""
    import unicodedata

    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def test_table_stays_aligned_with_wide_characters():
    rows = [
        {"speaker": "王小明", "text": "你好，今天天气怎么样？" * 6, "label": "joy", "score": 0.5},
        {"speaker": "さくら", "text": "ありがとう、とても嬉しいです", "label": "surprise", "score": 0.25},
        {"speaker": "Ann", "text": "I love it 😀👍 a" + "😀" * 40, "label": "neutral", "score": 0.75},
        {"speaker": "Jose\u0301", "text": "cafe\u0301 and more", "label": "sadness", "score": 0.125},
    ]
    lines = format_predictions(rows, text_width=30).splitlines()
    starts = [_columns(lines[0][: lines[0].index("emotion")])]
    for line, row in zip(lines[1:], rows):
        starts.append(_columns(line[: line.rindex(f"{row['label']:<9}  {row['score']:.2f}")]))
    assert starts == [7 + 2 + 30 + 2] * 5  # "speaker" is the widest speaker (王小明 and さくら take 6 columns)
    # long wide texts are cut by columns (ellipsis included), even where a wide character straddles the limit
    assert "..." in lines[1] and "..." in lines[3] and "..." not in lines[2] + lines[4]
    # 27 columns before the ellipsis: 13 wide characters (26), the 14th would straddle; padded to 30 with 1 space
    assert lines[1].startswith("王小明   你好，今天天气怎么样？你好...   joy")
    assert lines[4].startswith("Jose\u0301     ")  # 4 columns + 3 spaces of padding


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal, so tqdm's `disable=None` shows the bar."""

    def isatty(self):
        return True


def test_long_conversation_shows_decoding_progress_without_changing_outputs(saved_model, monkeypatch):
    from magtkd_hf.inference import _with_progress
    from magtkd_hf.processors.model_inputs import PROGRESS_MIN_UTTERANCES

    model, processor = load_emotion_model(saved_model / "model")
    short = read_conversation_file(saved_model / "conversation.json")
    long = [dict(short[index % 3], text=f"{short[index % 3]['text']} {index}") for index in range(PROGRESS_MIN_UTTERANCES)]
    plain_inputs, plain_rows = processor(long), predict_emotions(model, processor, long)  # stderr is no terminal here

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    progress_inputs = _with_progress(processor)(long)
    assert "decoding audio" in terminal.getvalue() and "decoding video" in terminal.getvalue()
    assert f"/{PROGRESS_MIN_UTTERANCES}" in terminal.getvalue()
    assert progress_inputs.keys() == plain_inputs.keys()
    assert all(torch.equal(progress_inputs[key], plain_inputs[key]) for key in plain_inputs)
    terminal.seek(0), terminal.truncate()
    assert predict_emotions(model, processor, long) == plain_rows and "decoding video" in terminal.getvalue()
    assert not getattr(processor, "show_progress", False)  # predict_emotions changed a copy, not the caller's processor
    # a short conversation, or a processor called directly, stays silent
    terminal.seek(0), terminal.truncate()
    predict_emotions(model, processor, short), processor(long)
    assert terminal.getvalue() == ""


@pytest.mark.parametrize(
    ("error", "expected"),
    [(OSError(28, "No space left on device"), "no space left on the device"), (MemoryError(), "MemoryError")],
)
def test_a_full_disk_or_no_memory_is_one_line_with_status_1(saved_model, monkeypatch, capsys, error, expected):
    from magtkd_hf.apps.cli import main

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr("magtkd_hf.inference.predict_emotions", fail)
    assert main(["predict", str(saved_model / "model"), str(saved_model / "conversation.json")]) == 1
    err = capsys.readouterr().err
    assert expected in err.splitlines()[0] and "Traceback" not in err


def test_version_flag(capsys):
    from magtkd_hf import __version__
    from magtkd_hf.apps.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"magtkd-hf {__version__}"
