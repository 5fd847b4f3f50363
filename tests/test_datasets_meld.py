"""`load_meld`: the real official CSVs (labels only) and a small MELD tree with tiny real MP4 clips."""

import csv
import logging
import math
import shutil
from pathlib import Path

import pytest
from datasets import ClassLabel, List, Value

from magtkd_hf.configuration_magtkd import MELD_LABELS
from magtkd_hf.datasets_scripts import LabelFilesError, MediaProblemsError, load_meld
from magtkd_hf.datasets_scripts.meld import parse_meld_timestamp, read_meld_csv
from magtkd_hf.datasets_scripts.synthetic import write_meld_tree, write_tiny_mp4

SHARED_MELD = Path(__file__).resolve().parents[2] / "shared" / "data" / "meld"
CSV_NAMES = {"train": "train_sent_emo.csv", "validation": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}


def real_meld_rows(split, dialogue_ids):
    """Rows of the real CSV of `split` for the given dialogues, in file order."""
    path = SHARED_MELD / CSV_NAMES[split]
    assert path.is_file(), f"the real MELD CSVs are expected in {SHARED_MELD} (shared/ beside the repository)"
    with open(path, encoding="utf-8", newline="") as handle:
        return [row for row in csv.DictReader(handle) if int(row["Dialogue_ID"]) in dialogue_ids]


@pytest.fixture(scope="module")
def real_meld():
    for name in CSV_NAMES.values():
        assert (SHARED_MELD / name).is_file(), f"{SHARED_MELD / name} is missing (shared/ must sit beside the repo)"
    return load_meld(SHARED_MELD, check_media=False)


# Dialogues of the small tree, per split: real rows of these dialogue ids.
SMALL_TREE_DIALOGUES = {"train": {0, 1}, "validation": {0, 1}, "test": {0, 1}}


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return {
        "short": write_tiny_mp4(folder / "short.mp4", duration=0.3),
        "long": write_tiny_mp4(folder / "long.mp4", duration=1.5),
    }


@pytest.fixture
def small_meld(tmp_path, clip_files):
    rows = {split: real_meld_rows(split, ids) for split, ids in SMALL_TREE_DIALOGUES.items()}
    root = write_meld_tree(tmp_path / "MELD.Raw", rows, clip_files["short"])
    return root, rows


@pytest.mark.parametrize(
    "timestamp, seconds",
    [("0:02:57,802", 177.802), ("00:02:48,021", 168.021), ("00:16:16,059", 976.059), ("1:00:00,000", 3600.0),
     ("00:05:11,82", 311.82)],
)
def test_both_timestamp_formats_parse_to_seconds(timestamp, seconds):
    assert parse_meld_timestamp(timestamp) == pytest.approx(seconds, abs=1e-9)


@pytest.mark.parametrize("bad", ["", "02:57,802", "0:02:57;802", "a:02:57,802"])
def test_malformed_timestamp_is_refused(bad):
    with pytest.raises(ValueError, match="timestamp"):
        parse_meld_timestamp(bad)


def test_real_csvs_give_the_official_counts(real_meld):
    expected = {"train": (1038, 9989), "validation": (114, 1109), "test": (280, 2610)}
    for split, (num_dialogues, num_utterances) in expected.items():
        dataset = real_meld[split]
        assert dataset.num_rows == num_dialogues
        for column in dataset.column_names[1:]:
            assert sum(len(values) for values in dataset[column]) == num_utterances, (split, column)


def test_real_csvs_features_are_typed(real_meld):
    features = real_meld["train"].features
    assert features["labels"] == List(ClassLabel(names=list(MELD_LABELS)))
    assert features["video_paths"] == List(Value("string"))
    assert features["start_times"] == List(Value("float32")) and features["end_times"] == List(Value("float32"))
    assert "audio_paths" not in features


def test_real_csvs_rows_match_the_csv(real_meld):
    """Every utterance of every split equals its CSV row; utterances are in Utterance_ID order."""
    for split, dataset in real_meld.items():
        by_key = {(int(r["Dialogue_ID"]), int(r["Utterance_ID"])): r for r in real_meld_rows(split, range(10**6))}
        seen = 0
        for row in dataset:
            assert row["utterance_ids"] == sorted(row["utterance_ids"])
            for i, utterance_id in enumerate(row["utterance_ids"]):
                source = by_key[(row["dialogue_id"], utterance_id)]
                assert row["texts"][i] == source["Utterance"]
                assert row["speakers"][i] == source["Speaker"]
                assert MELD_LABELS[row["labels"][i]] == source["Emotion"]
                assert math.isclose(row["start_times"][i], parse_meld_timestamp(source["StartTime"]), rel_tol=1e-6)
                assert Path(row["video_paths"][i]).name == f"dia{row['dialogue_id']}_utt{utterance_id}.mp4"
                seen += 1
        assert seen == len(by_key)


def test_real_csv_specific_utterances(real_meld):
    train = real_meld["train"]
    first = train[0]
    assert first["dialogue_id"] == 0 and first["speakers"][0] == "Chandler"
    # The CSV's cp1252 apostrophe stored as U+0092 is kept as it is.
    assert first["texts"][0] == (
        "also I was the point person on my company\x92s transition from the KL-5 to GR-6 system."
    )
    assert first["start_times"][0] == pytest.approx(976.059, abs=1e-3)
    assert first["end_times"][0] == pytest.approx(981.731, abs=1e-3)
    dialogue_1 = train[1]
    position = dialogue_1["utterance_ids"].index(8)
    assert dialogue_1["start_times"][position] == pytest.approx(2219.425, abs=1e-3)  # "0:36:59,425"
    assert Path(dialogue_1["video_paths"][position]) == SHARED_MELD / "train_splits" / "dia1_utt8.mp4"
    assert Path(real_meld["validation"][0]["video_paths"][0]).parent.name == "dev_splits_complete"
    assert Path(real_meld["test"][0]["video_paths"][0]).parent.name == "output_repeated_splits_test"


def test_csv_that_is_not_utf8_is_read_as_cp1252(tmp_path):
    path = tmp_path / "train_sent_emo.csv"
    header = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\r\n"
    line = '1,It\u2019s me,Joey,joy,positive,0,0,1,1,"0:00:01,000","0:00:02,000"\r\n'
    path.write_bytes((header + line).encode("cp1252"))
    assert read_meld_csv(path)[0]["Utterance"] == "It\u2019s me"


def test_small_tree_with_every_clip_builds_with_media_checks(small_meld):
    root, rows = small_meld
    dataset = load_meld(root)
    for split, split_rows in rows.items():
        assert sum(len(ids) for ids in dataset[split]["utterance_ids"]) == len(split_rows)
        assert dataset[split]["dialogue_id"] == sorted(SMALL_TREE_DIALOGUES[split])
        assert all(Path(path).is_file() for paths in dataset[split]["video_paths"] for path in paths)


def test_deleted_and_corrupted_clips_are_all_named_in_one_error(small_meld):
    root, _ = small_meld
    (root / "dev_splits_complete" / "dia1_utt7.mp4").unlink()
    truncated = root / "train_splits" / "dia1_utt3.mp4"
    truncated.write_bytes(truncated.read_bytes()[:200])
    (root / "output_repeated_splits_test" / "dia0_utt1.mp4").write_bytes(b"\x00not an mp4 at all" * 10)
    with pytest.raises(MediaProblemsError) as caught:
        load_meld(root)
    message = str(caught.value)
    assert "validation / dialogue 1 / utterance 7" in message and "dia1_utt7.mp4 (missing" in message
    assert "train / dialogue 1 / utterance 3" in message and "dia1_utt3.mp4 (unreadable" in message
    assert "test / dialogue 0 / utterance 1" in message and "dia0_utt1.mp4 (unreadable" in message
    assert sorted((p.split, p.dialogue_id, p.utterance_ids) for p in caught.value.problems) == [
        ("test", 0, (1,)), ("train", 1, (3,)), ("validation", 1, (7,))
    ]


def test_drop_leaves_out_exactly_the_broken_utterances_and_records_them(small_meld, caplog):
    root, rows = small_meld
    (root / "dev_splits_complete" / "dia1_utt7.mp4").unlink()
    (root / "train_splits" / "dia1_utt3.mp4").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        dataset = load_meld(root, on_missing="drop")
    validation_dialogue_1 = dataset["validation"][dataset["validation"]["dialogue_id"].index(1)]
    assert 7 not in validation_dialogue_1["utterance_ids"] and 6 in validation_dialogue_1["utterance_ids"]
    assert sum(len(ids) for ids in dataset["validation"]["utterance_ids"]) == len(rows["validation"]) - 1
    assert sum(len(ids) for ids in dataset["train"]["utterance_ids"]) == len(rows["train"]) - 1
    assert sum(len(ids) for ids in dataset["test"]["utterance_ids"]) == len(rows["test"])
    assert "Dropped 1 utterance" in dataset["validation"].info.description
    assert "dia1_utt7.mp4" in dataset["validation"].info.description
    assert "Dropped" not in dataset["test"].info.description
    assert "dia1_utt3.mp4" in caplog.text and "dia1_utt7.mp4" in caplog.text


def test_without_media_checks_missing_clips_do_not_matter(small_meld):
    root, rows = small_meld
    shutil.rmtree(root / "train_splits")
    dataset = load_meld(root, check_media=False)
    assert sum(len(ids) for ids in dataset["train"]["utterance_ids"]) == len(rows["train"])


def test_long_clips_are_reported(small_meld, clip_files, caplog):
    root, _ = small_meld
    shutil.copyfile(clip_files["long"], root / "output_repeated_splits_test" / "dia1_utt2.mp4")
    with caplog.at_level(logging.WARNING):
        load_meld(root, max_clip_duration=1.0)
    long_lines = [record.getMessage() for record in caplog.records if "longer than" in record.getMessage()]
    assert len(long_lines) == 1 and "test / dialogue 1 / utterance 2" in long_lines[0]


def test_absent_csv_and_bad_rows_are_listed_together(small_meld):
    root, rows = small_meld
    (root / "test_sent_emo.csv").unlink()
    bad = [dict(row) for row in rows["validation"]]
    bad[0]["Emotion"] = "boredom"
    bad[1]["StartTime"] = "noon"
    write_meld_tree(root, {"train": rows["train"], "validation": bad})
    (root / "test_sent_emo.csv").unlink()
    with pytest.raises(LabelFilesError) as caught:
        load_meld(root, check_media=False)
    message = str(caught.value)
    assert "test_sent_emo.csv not found" in message
    assert "unknown emotion 'boredom'" in message and "line 2" in message
    assert "'noon'" in message and "line 3" in message


def test_on_missing_value_is_checked(small_meld):
    with pytest.raises(ValueError, match="on_missing"):
        load_meld(small_meld[0], on_missing="replace")
