"""`magtkd-hf predict` over whole datasets: inputs, batch-invariant rows, JSON lines and parquet, resuming after a
stop, and two processes under `accelerate launch` giving the single-process file."""

import json
import os
import subprocess
import sys

import datasets
import pytest
import torch
from tiny_magtkd import tiny_config, tiny_processor, write_conversation_rows

from magtkd_hf import MagtkdForEmotionRecognition
from magtkd_hf.apps.cli import main
from magtkd_hf.inference import load_emotion_model, predict_emotions
from magtkd_hf.predict_dataset import batches_by_size, predict_dataset, read_prediction_input

LENGTHS = {"validation": (3, 1, 4), "test": (2, 5)}
MELD_LABELS = ["neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny end-to-end model folder and a saved DatasetDict of generated clips (two splits, 5 conversations)."""
    folder = tmp_path_factory.mktemp("predict-dataset")
    processor = tiny_processor()
    torch.manual_seed(0)
    MagtkdForEmotionRecognition(tiny_config(processor)).save_pretrained(folder / "model")
    processor.save_pretrained(folder / "model")
    features = datasets.Features({
        "dialogue_id": datasets.Value("string"), "utterance_ids": datasets.List(datasets.Value("string")),
        "speakers": datasets.List(datasets.Value("string")), "texts": datasets.List(datasets.Value("string")),
        "labels": datasets.List(datasets.ClassLabel(names=MELD_LABELS)),
        "video_paths": datasets.List(datasets.Value("string")),
    })
    splits = {}
    for number, (split, lengths) in enumerate(LENGTHS.items()):
        rows = write_conversation_rows(folder / split, lengths, seed=number)
        for row in rows:
            row["dialogue_id"] = f"{split}-{row['dialogue_id']}"
        rows[1]["video_paths"][0] = None  # a text-only utterance
        splits[split] = datasets.Dataset.from_list(rows, features=features)
    datasets.DatasetDict(splits).save_to_disk(str(folder / "data"))
    return folder


def read_jsonl(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def loaded(saved):
    model, processor = load_emotion_model(saved / "model")
    return model, processor


def test_rows_are_those_of_each_conversation_alone_in_input_order(saved, tmp_path):
    model, processor = loaded(saved)
    conversations = read_prediction_input(saved / "data")
    summary = predict_dataset(model, processor, conversations, tmp_path / "out.jsonl", max_utterances=6, progress=False)
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert summary["conversations"] == 5 and len(rows) == sum(map(sum, LENGTHS.values()))
    assert [(r["split"], r["conversation_index"], r["utterance_index"]) for r in rows] == [
        (split, c, u) for split, lengths in LENGTHS.items() for c, n in enumerate(lengths) for u in range(n)
    ]
    source = datasets.load_from_disk(str(saved / "data"))
    for conversation in conversations:
        row = source[conversation.split][conversation.index]
        alone = predict_emotions(model, processor, [
            {"speaker": s, "text": t, "video": v} for s, t, v in zip(row["speakers"], row["texts"], row["video_paths"])
        ])
        mine = [r for r in rows if (r["split"], r["conversation_index"]) == conversation.key]
        assert [r["label"] for r in mine] == [r["label"] for r in alone]
        assert [r["score"] for r in mine] == pytest.approx([r["score"] for r in alone], abs=1e-5)
        assert [r["true_label"] for r in mine] == [MELD_LABELS[label] for label in row["labels"]]
        assert mine[0]["conversation_id"] == row["dialogue_id"]
    text_only = [r for r in rows if r["conversation_index"] == 1 and r["utterance_index"] == 0]
    assert len(text_only) == 2 and all(r["modalities"] == ["text"] for r in text_only)  # no video, so no sound
    assert not (tmp_path / "out.jsonl.partial").exists()


def test_batches_group_by_size_longest_first():
    class Sized(list):
        pass

    conversations = [Sized([0] * n) for n in (3, 1, 4, 2, 5)]
    assert batches_by_size(conversations, 6) == [[4], [2], [0, 3, 1]]
    assert batches_by_size(conversations, 1) == [[4], [2], [0], [3], [1]]


def test_parquet_holds_the_json_lines_rows(saved, tmp_path):
    import pyarrow.parquet as pq

    model, processor = loaded(saved)
    conversations = read_prediction_input(saved / "data", splits=["test"])
    assert [c.split for c in read_prediction_input(saved / "data", splits=["dev"])] == ["validation"] * 3
    predict_dataset(model, processor, conversations, tmp_path / "out.jsonl", progress=False)
    predict_dataset(model, processor, conversations, tmp_path / "out.parquet", progress=False)
    assert pq.read_table(tmp_path / "out.parquet").to_pylist() == read_jsonl(tmp_path / "out.jsonl")


def test_a_stopped_run_resumes_where_it_stopped(saved, tmp_path, monkeypatch):
    model, processor = loaded(saved)
    conversations = read_prediction_input(saved / "data")
    output = tmp_path / "out.jsonl"
    predict_dataset(model, processor, conversations, tmp_path / "whole.jsonl", max_utterances=4, progress=False)

    calls, forward = [], model.forward

    def stop_at_the_third_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", stop_at_the_third_batch)
    with pytest.raises(KeyboardInterrupt):
        predict_dataset(model, processor, conversations, output, max_utterances=4, progress=False)
    part = tmp_path / "out.jsonl.partial" / "rows-00000.jsonl"
    with open(part, "a", encoding="utf-8") as handle:
        handle.write('{"split": "test", "conversation_ind')  # a line cut by a kill
    calls.clear()
    summary = predict_dataset(model, processor, conversations, output, max_utterances=4, progress=False)
    assert summary["resumed_with"] == 2 and len(calls) == len(batches_by_size(conversations, 4)) - 2
    assert read_jsonl(output) == read_jsonl(tmp_path / "whole.jsonl")


def test_another_run_or_an_existing_output_is_refused(saved, tmp_path):
    model, processor = loaded(saved)
    conversations = read_prediction_input(saved / "data", splits=["test"])
    output = tmp_path / "out.jsonl"
    predict_dataset(model, processor, conversations, output, progress=False)
    with pytest.raises(FileExistsError, match="--overwrite"):
        predict_dataset(model, processor, conversations, output, progress=False)
    (tmp_path / "out.jsonl.partial").mkdir()
    (tmp_path / "out.jsonl.partial" / "manifest.json").write_text(json.dumps({"model": "another"}))
    with pytest.raises(ValueError, match="another prediction run.*model: 'another' there, 'this' now.*--overwrite"):
        predict_dataset(model, processor, conversations, output, run_description={"model": "this"})
    predict_dataset(model, processor, conversations, output, overwrite=True, run_description={"model": "this"})
    assert len(read_jsonl(output)) == sum(LENGTHS["test"]) and not (tmp_path / "out.jsonl.partial").exists()
    with pytest.raises(ValueError, match="must end in"):
        predict_dataset(model, processor, conversations, tmp_path / "out.csv")


def test_json_lines_input_and_its_errors(saved, tmp_path):
    clips = sorted((saved / "test").glob("*.mp4"))
    lines = [
        [{"speaker": "Ann", "text": "hi there", "video": os.path.relpath(clips[0], tmp_path)}],
        {"id": "second", "utterances": [{"speaker": "Bob", "text": "hello"}, {"speaker": "Ann", "text": "bye now"}]},
    ]
    source = tmp_path / "conversations.jsonl"
    source.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    conversations = read_prediction_input(source)
    assert [c.conversation_id for c in conversations] == ["1", "second"]
    assert conversations[0].row["video_paths"] == [str(clips[0].resolve())]
    model, processor = loaded(saved)
    predict_dataset(model, processor, conversations, tmp_path / "out.jsonl", progress=False)
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert [r["modalities"] for r in rows] == [["text", "audio", "video"], ["text"], ["text"]]
    assert "true_label" not in rows[0]
    source.write_text(json.dumps(lines[0]) + "\n" + '[{"speaker": "Ann"}]\n')
    with pytest.raises(ValueError, match=r"conversations.jsonl, line 2: utterance 0 needs"):
        read_prediction_input(source)


def test_a_bad_clip_is_named_with_its_conversation(saved, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    source = tmp_path / "bad.jsonl"
    source.write_text(json.dumps({"id": "d7", "utterances": [{"speaker": "A", "text": "x", "video": str(broken)}]}) + "\n")
    model, processor = loaded(saved)
    with pytest.raises(ValueError, match=r"d7.*broken.mp4"):
        predict_dataset(model, processor, read_prediction_input(source), tmp_path / "out.jsonl", num_workers=1,
                        progress=False)


def test_the_command_with_workers_and_two_processes_give_the_single_process_file(saved, tmp_path):
    arguments = ["predict", str(saved / "model"), str(saved / "data"), "--dtype", "float32", "--max-utterances", "4"]
    assert main([*arguments, "--output", str(tmp_path / "one.jsonl"), "--num-workers", "0"]) == 0
    assert main([*arguments, "--output", str(tmp_path / "workers.jsonl"), "--num-workers", "2"]) == 0
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    launched = subprocess.run(
        # without GPUs the launched processes form one CPU (gloo) group, as `train` does
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "magtkd_hf", *arguments,
         "--output", str(tmp_path / "two.jsonl"), "--num-workers", "0"],
        capture_output=True, text=True, env=environment, timeout=300,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert "2 processes" in launched.stderr
    single = read_jsonl(tmp_path / "one.jsonl")
    assert read_jsonl(tmp_path / "workers.jsonl") == single
    two = read_jsonl(tmp_path / "two.jsonl")
    assert [{k: v for k, v in r.items() if k not in ("score", "probabilities")} for r in two] == [
        {k: v for k, v in r.items() if k not in ("score", "probabilities")} for r in single
    ]
    assert [r["score"] for r in two] == pytest.approx([r["score"] for r in single], abs=1e-6)


def test_released_iemocap_speaker_numbering_survives_batching_by_size(saved):
    from magtkd_hf.predict_dataset import add_running_speakers

    processor = tiny_processor(speaker_mode="released_iemocap")
    conversations = [c for c in read_prediction_input(saved / "data") if c.split == "validation"]
    chained = processor([c.row for c in conversations], modalities=("text",))["speaker_ids"]
    add_running_speakers(conversations)
    for number, conversation in enumerate(conversations):  # each alone, as a batch of any order would see it
        alone = processor([conversation.row], modalities=("text",))["speaker_ids"][0, : len(conversation)]
        assert alone.tolist() == chained[number, : len(conversation)].tolist()
