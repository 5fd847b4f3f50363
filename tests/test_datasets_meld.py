"""`load_meld`: the real official CSVs (labels only) and a small MELD tree with tiny real MP4 clips."""

import csv
import logging
import math
import shutil
from pathlib import Path

import pytest
from datasets import ClassLabel, List, Value
from media_fixtures import write_mp4

from magtkd_hf.configuration_magtkd import MELD_LABELS
from magtkd_hf.datasets_scripts import LabelFilesError, LabelProblemsError, MediaProblemsError, load_meld, synthetic
from magtkd_hf.datasets_scripts.media import TRUNCATED, MediaFile, probe_media
from magtkd_hf.datasets_scripts.meld import parse_meld_timestamp, read_meld_csv
from magtkd_hf.datasets_scripts.synthetic import write_meld_tree

# The official MELD label CSVs (GPL-3.0, see tests/data/meld/LICENSE.md), shipped with the tests.
MELD_LABEL_DIR = Path(__file__).resolve().parent / "data" / "meld"
CSV_NAMES = {"train": "train_sent_emo.csv", "validation": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}


def real_meld_rows(split, dialogue_ids):
    """Rows of the real CSV of `split` for the given dialogues, in file order."""
    path = MELD_LABEL_DIR / CSV_NAMES[split]
    assert path.is_file(), f"the real MELD CSVs are expected in {MELD_LABEL_DIR}"
    with open(path, encoding="utf-8", newline="") as handle:
        return [row for row in csv.DictReader(handle) if int(row["Dialogue_ID"]) in dialogue_ids]


@pytest.fixture(scope="module")
def real_meld():
    for name in CSV_NAMES.values():
        assert (MELD_LABEL_DIR / name).is_file(), f"{MELD_LABEL_DIR / name} is missing"
    return load_meld(MELD_LABEL_DIR, check_media=False)


# Dialogues of the small tree, per split: real rows of these dialogue ids.
SMALL_TREE_DIALOGUES = {"train": {0, 1}, "validation": {0, 1}, "test": {0, 1}}


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return {
        "short": synthetic.write_mp4(folder / "short.mp4", duration=0.3),
        "long": synthetic.write_mp4(folder / "long.mp4", duration=1.5),
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
    assert Path(dialogue_1["video_paths"][position]) == MELD_LABEL_DIR / "train_splits" / "dia1_utt8.mp4"
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


def utterance_count(dataset, split):
    return sum(len(ids) for ids in dataset[split]["utterance_ids"])


def utterance_keys(dataset, split):
    return [(row["dialogue_id"], u) for row in dataset[split] for u in row["utterance_ids"]]


def test_end_before_start_raises_naming_split_file_and_line_unless_dropped(small_meld):
    root, rows = small_meld
    bad = [dict(row) for row in rows["validation"]]
    bad[2]["StartTime"], bad[2]["EndTime"] = "0:00:05,000", "0:00:04,500"
    write_meld_tree(root, {**rows, "validation": bad})
    with pytest.raises(LabelProblemsError) as caught:
        load_meld(root, check_media=False)
    message = str(caught.value)
    assert isinstance(caught.value, LabelFilesError) and len(caught.value.problems) == 1
    assert f"validation / dialogue {bad[2]['Dialogue_ID']}: utterance {bad[2]['Utterance_ID']}" in message
    assert "EndTime 0:00:04,500 is before StartTime 0:00:05,000" in message
    assert "dev_sent_emo.csv, line 4" in message and 'on_missing="drop"' in message

    dataset = load_meld(root, on_missing="drop")  # media checked too: every clip is there
    key = (int(bad[2]["Dialogue_ID"]), int(bad[2]["Utterance_ID"]))
    assert key not in utterance_keys(dataset, "validation")
    assert utterance_count(dataset, "validation") == len(rows["validation"]) - 1
    assert utterance_count(dataset, "train") == len(rows["train"])
    description = dataset["validation"].info.description
    assert "Left out label-file rows (1 utterance(s) dropped)" in description and "line 4" in description
    assert "Left out" not in dataset["train"].info.description


def test_duplicate_rows_raise_and_drop_keeps_one_identical_copy_and_no_conflicting_one(small_meld):
    root, rows = small_meld
    train = [dict(row) for row in rows["train"]]
    identical, conflicting = dict(train[0]), dict(train[3])
    conflicting["Emotion"] = "anger" if conflicting["Emotion"] != "anger" else "joy"
    train += [identical, conflicting]
    write_meld_tree(root, {**rows, "train": train})
    with pytest.raises(LabelProblemsError) as caught:
        load_meld(root, check_media=False)
    message = str(caught.value)
    assert len(caught.value.problems) == 2
    first, last = len(rows["train"]) + 2, len(rows["train"]) + 3  # CSV lines of the two repeats
    assert f"utterance {identical['Utterance_ID']} is on 2 identical rows" in message
    assert f"train_sent_emo.csv, lines 2, {first}" in message
    assert f"utterance {conflicting['Utterance_ID']} is on 2 rows that differ (labels)" in message
    assert f"lines 5, {last}" in message

    dataset = load_meld(root, check_media=False, on_missing="drop")
    keys = utterance_keys(dataset, "train")
    assert keys.count((int(identical["Dialogue_ID"]), int(identical["Utterance_ID"]))) == 1
    assert (int(conflicting["Dialogue_ID"]), int(conflicting["Utterance_ID"])) not in keys
    assert len(keys) == len(rows["train"]) - 1
    assert "(1 utterance(s) dropped)" in dataset["train"].info.description


def test_empty_dev_split_raises_unless_dropped_then_is_built_empty_and_recorded(small_meld, caplog):
    root, rows = small_meld
    write_meld_tree(root, {**rows, "validation": []})
    with pytest.raises(LabelProblemsError) as caught:
        load_meld(root)
    message = str(caught.value)
    assert "split(s) validation unusable" in message
    assert "validation: no utterance in this split" in message and "dev_sent_emo.csv" in message
    with caplog.at_level(logging.WARNING):
        dataset = load_meld(root, on_missing="drop")
    assert dataset["validation"].num_rows == 0 and utterance_count(dataset, "train") == len(rows["train"])
    assert "Empty split: validation: no utterance in this split" in dataset["validation"].info.description
    assert "Empty split" in caplog.text


def test_split_emptied_by_dropped_media_is_recorded(small_meld):
    root, _ = small_meld
    shutil.rmtree(root / "dev_splits_complete")
    with pytest.raises(MediaProblemsError):
        load_meld(root)
    dataset = load_meld(root, on_missing="drop")
    assert dataset["validation"].num_rows == 0
    description = dataset["validation"].info.description
    assert "whose media is missing or unreadable" in description and "Empty split: validation" in description


def truncated_mp4(folder: Path) -> Path:
    """
    A real 3 s MP4 (H.264 + AAC) with its header (moov) before the data, its bytes cut in half: the header still
    opens and declares 3 s, the data ends half-way.
    """
    header_first = write_mp4(folder / "header_first.mp4", num_frames=24, fps=8, audio_seconds=3.0, header_first=True)
    data = header_first.read_bytes()
    truncated = folder / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    return truncated


def test_truncated_clip_with_a_good_header_is_found_by_the_full_decode_only(small_meld, tmp_path):
    root, rows = small_meld
    truncated = truncated_mp4(tmp_path)
    assert probe_media(MediaFile(str(truncated), ("video", "audio"))).is_usable  # the header opens
    row = rows["train"][1]
    shutil.copyfile(truncated, root / "train_splits" / f"dia{row['Dialogue_ID']}_utt{row['Utterance_ID']}.mp4")
    load_meld(root)  # header only: not seen
    with pytest.raises(MediaProblemsError) as caught:
        load_meld(root, decode=True, num_workers=2)
    (problem,) = caught.value.problems
    assert problem.status == TRUNCATED
    assert (problem.split, problem.utterance_ids) == ("train", (int(row["Utterance_ID"]),))
    message = str(caught.value)
    assert f"dia{row['Dialogue_ID']}_utt{row['Utterance_ID']}.mp4 (truncated: video decodes to" in message
    assert "of the 3.00 s its header declares" in message
    dataset = load_meld(root, decode=True, on_missing="drop")
    assert utterance_count(dataset, "train") == len(rows["train"]) - 1
