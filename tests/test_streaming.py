"""Streaming: the emotion of the latest utterance as the conversation unfolds (`MagtkdStream`, `magtkd-hf stream`),
and the fusion's online evaluation (`online_logits`, `evaluate_saved_fusion(online=True)`, `magtkd-hf evaluate`)."""

import io
import json
import math
import re
import sys

import pytest
import torch
from media_fixtures import write_mp4
from tiny_magtkd import tiny_config, tiny_fusion_config, tiny_processor

from magtkd_hf import MagtkdForEmotionRecognition, MagtkdFusionModel, MagtkdStream, online_logits
from magtkd_hf.apps.cli import main as cli
from magtkd_hf.inference import predict_emotions

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEAKERS = ["Ann", "Bob", "Ann", "Cid", "Bob", "Ann"]
TEXTS = ["did you hear that", "hear what", "the door", "it was me all along", "oh no", "why"]


def _model(processor, causal: bool, seed: int = 0):
    torch.manual_seed(seed)
    return MagtkdForEmotionRecognition(tiny_config(processor, causal=causal)).eval()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Clips of different lengths (the whole conversation's audio is padded; the stream's is not)."""
    folder = tmp_path_factory.mktemp("stream")
    paths = []
    for index, seconds in enumerate((0.5, 0.7, 0.4, 0.9, 0.6, 0.5)):
        paths.append(str(write_mp4(folder / f"c{index}.mp4", num_frames=8, audio_seconds=seconds, tone_hz=200 + 70 * index)))
    return folder, paths


@pytest.fixture(scope="module")
def conversation(clips):
    return [{"speaker": s, "text": t, "video": p} for s, t, p in zip(SPEAKERS, TEXTS, clips[1])]


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


def test_a_causal_stream_equals_the_whole_conversation_at_every_utterance(processor, conversation):
    model = _model(processor, causal=True)
    with torch.no_grad():
        whole = model(**processor(conversation, return_tensors="pt")).logits[0]
    stream = MagtkdStream(model, processor)
    for index, utterance in enumerate(conversation):
        row = stream.add(utterance)
        logits = stream.last_logits
        assert (logits - whole[index]).abs().max() <= 1e-5, index
        assert row["index"] == index and row["context"] == "causal" and row["speaker"] == utterance["speaker"]
    assert [row["label"] for row in stream.history] == [
        row["label"] for row in predict_emotions(model, processor, conversation)
    ]


def test_a_bidirectional_stream_gives_each_prefix_its_emotion_and_says_so(processor, conversation):
    model = _model(processor, causal=False)
    with pytest.warns(UserWarning, match="not causal"):
        stream = MagtkdStream(model, processor)
    rows = [stream.add(utterance) for utterance in conversation[:4]]
    for index, row in enumerate(rows):
        prefix = predict_emotions(model, processor, conversation[: index + 1])[-1]
        assert row["context"] == "prefix"
        assert row["label"] == prefix["label"]
        assert row["score"] == pytest.approx(prefix["score"], abs=1e-5)
    whole = predict_emotions(model, processor, conversation[:4])
    assert any(abs(a["score"] - b["score"]) > 1e-4 for a, b in zip(rows[:3], whole[:3]))


def test_reset_starts_a_new_conversation_and_failures_leave_the_stream_unchanged(processor, conversation, tmp_path):
    stream = MagtkdStream(_model(processor, causal=True), processor)
    first = stream.add(conversation[2])
    stream.add(conversation[3])
    with pytest.raises(ValueError, match="utterance 2 of the stream"):
        stream.add({"speaker": "Ann", "text": "hi", "video": str(tmp_path / "missing.mp4")})
    with pytest.raises(ValueError, match="utterance 2 of the stream: expected a mapping"):
        stream.add({"text": "no speaker"})
    assert len(stream) == 2 and len(stream.history) == 2
    stream.reset()
    again = stream.add(conversation[2])
    assert again["index"] == 0 and again["probabilities"] == pytest.approx(first["probabilities"], abs=1e-6)
    assert len(stream.history) == 1


def test_nan_media_are_refused_naming_the_utterance(processor, conversation, tmp_path):
    import numpy as np
    import soundfile

    soundfile.write(tmp_path / "nan.wav", np.full(8000, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    stream = MagtkdStream(_model(processor, causal=True), processor)
    stream.add(conversation[0])
    bad = dict(conversation[1], audio=str(tmp_path / "nan.wav"))
    with pytest.raises(ValueError, match=r"utterance 1 of the stream \(Bob: 'hear what'\): the audio from .*nan\.wav"):
        stream.add(bad)
    assert len(stream) == 1


# ---------------------------------------------------------------------- magtkd-hf stream


@pytest.fixture(scope="module")
def saved_causal_model(processor, tmp_path_factory):
    folder = tmp_path_factory.mktemp("stream-model") / "model"
    _model(processor, causal=True).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


class _FlushedLines(io.StringIO):
    """stdout that keeps what had been flushed when each input line was read."""

    def __init__(self):
        super().__init__()
        self.flushed = ""

    def flush(self):
        self.flushed = self.getvalue()


class _StdinCheckingFlushes:
    """stdin whose line k is handed out only after k - 1 output lines were flushed (one emotion per utterance, at once)."""

    def __init__(self, lines, stdout):
        self.lines, self.stdout, self.given = lines, stdout, 0

    def readline(self, limit=-1):
        if self.given == len(self.lines):
            return ""
        expected = sum(1 for earlier in self.lines[: self.given] if earlier.strip())
        assert self.stdout.flushed.count("\n") == expected
        self.given += 1
        return self.lines[self.given - 1]


def test_the_stream_command_writes_one_json_line_per_utterance_as_it_comes(
    monkeypatch, saved_causal_model, conversation, clips
):
    folder = clips[0]
    lines = [json.dumps({"speaker": u["speaker"], "text": u["text"], "video": f"c{i}.mp4"}) + "\n"
             for i, u in enumerate(conversation[:3])]
    lines.insert(1, "\n")
    stdout = _FlushedLines()
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(sys, "stdin", _StdinCheckingFlushes(lines, stdout))
    assert cli(["stream", str(saved_causal_model), "--base-dir", str(folder), "--dtype", "float32"]) == 0
    rows = [json.loads(line) for line in stdout.getvalue().splitlines()]
    from magtkd_hf.inference import load_emotion_model

    stream = MagtkdStream(*load_emotion_model(saved_causal_model))
    expected = [stream.add(utterance) for utterance in conversation[:3]]
    assert [row["index"] for row in rows] == [0, 1, 2] and {row["context"] for row in rows} == {"causal"}
    for row, reference in zip(rows, expected):
        assert row["label"] == reference["label"]
        assert row["score"] == pytest.approx(reference["score"], abs=1e-6)


def test_the_stream_command_reads_paths_from_the_current_directory(monkeypatch, saved_causal_model, clips, capsys):
    monkeypatch.chdir(clips[0])
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({"speaker": "A", "text": "hi", "video": "c0.mp4"}) + "\n"))
    assert cli(["stream", str(saved_causal_model)]) == 0
    assert json.loads(capsys.readouterr().out)["index"] == 0


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (b"{not json", r"stdin line 2: not JSON"),
        (b'["speaker", "text"]', r"stdin line 2: expected a JSON object with at least 'speaker' and 'text'"),
        (b'{"speaker": "A", "text": "hi", "vidoe": "c0.mp4"}', r"stdin line 2: unknown keys \['vidoe'\]"),
        (b'{"speaker": "A", "text": 5, "video": "c0.mp4"}', r"stdin line 2: 'text' must be a non-empty string"),
        (b'{"speaker": "A", "text": "hi", "video": "gone.mp4"}', r"stdin line 2: utterance 1 of the stream: .*gone\.mp4"),
        (b'{"speaker": "A", "text": "caf\xe9"}', r"stdin line 2: not UTF-8 text \(byte 0xe9 at position 29\)"),
        (b'{"speaker": "A", "text": "hi \\ud800"}', r"stdin line 2: 'text' is not valid Unicode: a lone surrogate"),
        (b'{"speaker": 1, "text": "hi"}', r"stdin line 2: the stream: utterance 1: speaker 1 is an integer id but "),
        (b'{"speaker": "A", "text": "' + b"ha " * 400_000 + b'"}', r"stdin line 2: longer than 1,048,576 bytes"),
    ],
)
def test_a_bad_line_gets_an_error_row_and_the_stream_goes_on(monkeypatch, saved_causal_model, clips, capsys, bad, message):
    good = json.dumps({"speaker": "A", "text": "hi", "video": "c0.mp4"}).encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\n".join([good, bad, good]) + b"\n")))
    assert cli(["stream", str(saved_causal_model), "--base-dir", str(clips[0])]) == 1
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert [row.get("index") for row in rows] == [0, None, 1]  # the failed line left the stream as it was
    assert rows[1]["line"] == 2 and re.search(message, rows[1]["error"]), rows[1]
    assert captured.err.splitlines()[-1] == "magtkd-hf stream: 1 of 3 lines failed (their rows hold 'error')."


# ---------------------------------------------------------------------- online evaluation


def _fusion_batch(lengths, seed=0):
    from tiny_magtkd import HIDDEN

    generator = torch.Generator().manual_seed(seed)
    size, longest = len(lengths), max(lengths)
    mask = (torch.arange(longest)[None] < torch.tensor(lengths)[:, None]).long()
    batch = {f"{m}_features": torch.randn(size, longest, HIDDEN, generator=generator) * mask[..., None]
             for m in ("text", "audio", "video")}
    batch["speaker_ids"] = torch.randint(0, 3, (size, longest), generator=generator) * mask
    batch["attention_mask"] = mask
    return batch


def _hand_online(model, batch):
    """Each conversation alone, each prefix alone: utterance i's logits from utterances 0..i."""
    logits = torch.zeros(*batch["attention_mask"].shape, model.config.num_labels)
    for row, length in enumerate(batch["attention_mask"].sum(1).tolist()):
        for end in range(1, length + 1):
            prefix = {key: value[row : row + 1, :end] for key, value in batch.items()}
            with torch.no_grad():
                logits[row, end - 1] = model(**prefix).logits[0, end - 1]
    return logits


@pytest.mark.parametrize("causal", [True, False])
def test_online_logits_are_the_fusion_over_each_prefix(causal):
    torch.manual_seed(1)
    model = MagtkdFusionModel(tiny_fusion_config(causal=causal)).eval()
    batch = _fusion_batch([5, 2, 4])
    online = online_logits(model, batch)
    assert (online - _hand_online(model, batch)).abs().max() < 1e-5
    with torch.no_grad():
        offline = model(**batch).logits
    difference = (online - offline).abs().max()
    assert difference < 1e-5 if causal else difference > 1e-3
    assert online[1, 2:].abs().max() == 0  # padding


def test_online_logits_refuse_left_padding():
    model = MagtkdFusionModel(tiny_fusion_config()).eval()
    batch = _fusion_batch([3, 2])
    batch["attention_mask"] = batch["attention_mask"].flip(1)
    with pytest.raises(ValueError, match="right-padded"):
        online_logits(model, batch)


@pytest.fixture(scope="module")
def features_dir(tmp_path_factory):
    import datasets
    from tiny_magtkd import HIDDEN

    from magtkd_hf.apps.fusion_demo import synthetic_feature_splits

    splits = synthetic_feature_splits(hidden_size=HIDDEN, seed=4)
    folder = tmp_path_factory.mktemp("online") / "features"
    sizes = {"train": 4, "validation": 9, "test": 7}
    datasets.DatasetDict({split: splits[split].select(range(size)) for split, size in sizes.items()}).save_to_disk(str(folder))
    return folder


def _saved_fusion(folder, causal):
    torch.manual_seed(2)
    MagtkdFusionModel(tiny_fusion_config(causal=causal)).save_pretrained(folder)
    return folder


def test_online_evaluation_equals_offline_for_a_causal_fusion(tmp_path, features_dir):
    from magtkd_hf.training import evaluate_saved_fusion

    fusion = _saved_fusion(tmp_path / "causal", causal=True)
    offline = evaluate_saved_fusion(fusion, features_dir, batch_size=4)
    online = evaluate_saved_fusion(fusion, features_dir, batch_size=4, online=True)
    assert online == offline


def test_online_evaluation_scores_the_prefix_predictions(tmp_path, features_dir, capsys):
    from magtkd_hf.features import FusionFeatureCollator
    from magtkd_hf.metrics import erc_scores
    from magtkd_hf.training import evaluate_saved_fusion
    from magtkd_hf.training.data import FeatureRows, load_feature_splits

    fusion = _saved_fusion(tmp_path / "paper", causal=False)
    model = MagtkdFusionModel.from_pretrained(fusion).eval()
    config = model.config
    online = evaluate_saved_fusion(fusion, features_dir, batch_size=4, online=True)
    split = load_feature_splits(features_dir)["test"]
    rows = FeatureRows(split, ("text", config.audio_feature_source, config.video_feature_source), config.num_labels)
    batch = FusionFeatureCollator.from_config(config)([rows[i] for i in range(len(rows))])
    labels = batch.pop("labels")
    predictions = _hand_online(model, batch).argmax(-1)
    expected = erc_scores(predictions.flatten().numpy(), labels.flatten().numpy(), config.label_names)
    assert online["test"]["weighted_f1"] == pytest.approx(expected["weighted_f1"], abs=1e-12)
    assert online["test"]["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-12)

    assert cli(["evaluate", str(fusion), "--features", str(features_dir), "--online"]) == 0
    out = capsys.readouterr().out
    assert "online (prefixes)" in out
    test_line = next(line for line in out.splitlines() if line.strip().startswith("test"))
    assert f"weighted F1 {online['test']['weighted_f1']:.4f}" in test_line
    assert not math.isnan(online["validation"]["weighted_f1"])


def test_a_causal_stream_handles_utterances_missing_audio_or_video(processor, clips, tmp_path):
    silent = str(write_mp4(tmp_path / "silent.mp4", num_frames=8))  # no sound track
    conversation = [
        {"speaker": "A", "text": "hello there", "video": clips[1][0]},
        {"speaker": "B", "text": "no media at all"},
        {"speaker": "A", "text": "a silent clip", "video": silent},
        {"speaker": "C", "text": "and again", "video": clips[1][1]},
    ]
    model = _model(processor, causal=True)
    with torch.no_grad():
        whole = model(**processor(conversation, return_tensors="pt")).logits[0]
    stream = MagtkdStream(model, processor)
    for index, utterance in enumerate(conversation):
        stream.add(utterance)
        assert (stream.last_logits - whole[index]).abs().max() <= 1e-5, index
    assert [row["modalities"] for row in stream.history] == [
        row["modalities"] for row in predict_emotions(model, processor, conversation)
    ]
