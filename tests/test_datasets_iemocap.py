"""`load_iemocap`: a miniature IEMOCAP_full_release tree (real line formats, tiny media) and a full-size label tree."""

import hashlib
import json
import logging
from pathlib import Path

import pytest
from datasets import ClassLabel, List, Value

from magtkd_hf.configuration_magtkd import IEMOCAP_LABELS
from magtkd_hf.datasets_scripts import (
    DEFAULT_IEMOCAP_SPLIT_FILE,
    LabelFilesError,
    LabelProblemsError,
    MediaProblemsError,
    load_iemocap,
)
from magtkd_hf.datasets_scripts.media import TRUNCATED
from magtkd_hf.datasets_scripts.iemocap import parse_emo_evaluation, parse_transcription
from iemocap_fixtures import SyntheticIemocapUtterance as U, write_iemocap_dialogue, write_tiny_avi, write_tiny_wav

# sha256 of `json.dumps(splits, sort_keys=True)` of the standard MAGTKD/TelME split.json (the dialogue lists).
STANDARD_SPLIT_SHA256 = "01a9d2df65a7451a003ed1a8e94882e9ffeb8b7096b29ab8e43c563e05901149"

# Real dialogue names of split.json; EmoEvaluation order on purpose not sorted by start time (F001 after M001).
MINI_DIALOGUES = {
    "train": {
        "Ses01F_impro01": [
            U("Ses01F_impro01_F000", "neu", 6.2901, 8.2357, "Excuse me."),
            U("Ses01F_impro01_M000", "xxx", 10.01, 11.3925, "Do you have your forms?"),
            U("Ses01F_impro01_M001", "ang", 14.8872, 18.0175, "Yeah, you need to fill that out."),
            U("Ses01F_impro01_F001", "fru", 12.5, 14.2, "Is there a problem?"),
            U("Ses01F_impro01_F002", "sur", 19.0, 20.5, "What?"),
            U("Ses01F_impro01_M002", "oth", 21.0, 22.0, "Hm."),
        ],
        "Ses01F_script01_1": [
            U("Ses01F_script01_1_F000", "exc", 0.5, 2.75, "I'm so glad you came."),
            U("Ses01F_script01_1_M000", "sad", 3.0, 5.5, "So am I."),
        ],
    },
    "validation": {"Ses01M_impro01": [U("Ses01M_impro01_F000", "hap", 1.25, 3.5, "Next.")]},
    "test": {
        "Ses05F_impro02": [
            U("Ses05F_impro02_M000", "neu", 2.0, 4.0, "Hi."),
            U("Ses05F_impro02_F000", "fea", 4.5, 5.0, "Oh!"),
            U("Ses05F_impro02_F001", "sad", 5.5, 9.25, "I got the letter."),
        ]
    },
}
EXTRA_TRANSCRIPT_LINES = ["Ses01F_impro01_MXX0 [012.0000-012.4000]: [BREATHING]", "M: [LAUGHTER]"]
KEPT = {"ang", "exc", "fru", "hap", "neu", "sad"}


@pytest.fixture(scope="module")
def media_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    return {"wav": write_tiny_wav(folder / "utt.wav", 0.2), "long_wav": write_tiny_wav(folder / "long.wav", 2.0),
            "avi": write_tiny_avi(folder / "dialog.avi", 1.0)}


@pytest.fixture
def mini_iemocap(tmp_path, media_files):
    root = tmp_path / "IEMOCAP_full_release"
    for dialogues in MINI_DIALOGUES.values():
        for dialogue, utterances in dialogues.items():
            write_iemocap_dialogue(
                root, dialogue, utterances, EXTRA_TRANSCRIPT_LINES, media_files["wav"], media_files["avi"]
            )
    split_file = tmp_path / "split.json"
    keys = {"train": "train", "dev": "validation", "test": "test"}
    names = {key: list(MINI_DIALOGUES[split]) for key, split in keys.items()}
    split_file.write_text(json.dumps({"splits": names}))
    return root, split_file


def test_shipped_split_file_is_the_standard_split():
    splits = json.loads(DEFAULT_IEMOCAP_SPLIT_FILE.read_text())["splits"]
    assert hashlib.sha256(json.dumps(splits, sort_keys=True).encode()).hexdigest() == STANDARD_SPLIT_SHA256
    assert {key: len(names) for key, names in splits.items()} == {"train": 108, "dev": 12, "test": 31}
    assert len({name for names in splits.values() for name in names}) == 151  # no dialogue in two splits
    assert {name[:5] for name in splits["train"] + splits["dev"]} == {"Ses01", "Ses02", "Ses03", "Ses04"}
    assert {name[:5] for name in splits["test"]} == {"Ses05"}


def test_line_parsers_keep_only_utterance_lines():
    evaluation = (
        "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
        "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]\n"
        "C-E2:\tNeutral;\t()\nA-E3:\tval 3; act 2; dom  2;\t()\n\n"
        "[10.0100 - 11.3925]\tSes01F_impro01_M000\txxx\t[2.0000, 3.5000, 3.5000]\n"
    )
    parsed = parse_emo_evaluation(evaluation)
    assert [(u.utterance_id, u.label, u.start_time, u.end_time) for u in parsed] == [
        ("Ses01F_impro01_F000", "neu", 6.2901, 8.2357), ("Ses01F_impro01_M000", "xxx", 10.01, 11.3925)
    ]
    transcription = (
        "Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.\n"
        "Ses01F_impro01_MXX0 [010.0-011.0]: [GARBAGE]\n"
        "M: hm\n"
    )
    expected = {"Ses01F_impro01_F000": "Excuse me.", "Ses01F_impro01_MXX0": "[GARBAGE]"}
    assert parse_transcription(transcription) == expected


def test_mini_tree_rows(mini_iemocap):
    root, split_file = mini_iemocap
    dataset = load_iemocap(root, split_file=split_file)
    features = dataset["train"].features
    assert features["labels"] == List(ClassLabel(names=list(IEMOCAP_LABELS)))
    assert features["audio_paths"] == List(Value("string")) and features["start_times"] == List(Value("float32"))
    for split, dialogues in MINI_DIALOGUES.items():
        assert dataset[split]["dialogue_id"] == list(dialogues)
        for row in dataset[split]:
            expected = [u for u in dialogues[row["dialogue_id"]] if u.label in KEPT]
            assert row["utterance_ids"] == [u.utterance_id for u in expected]
            assert [IEMOCAP_LABELS[label] for label in row["labels"]] == [u.label for u in expected]
            assert row["texts"] == [u.text for u in expected]
            assert row["speakers"] == [u.utterance_id.rsplit("_", 1)[1][0] for u in expected]
            assert row["start_times"] == pytest.approx([u.start_time for u in expected], abs=1e-4)
            assert row["end_times"] == pytest.approx([u.end_time for u in expected], abs=1e-4)
    impro = dataset["train"][0]
    assert impro["utterance_ids"] == ["Ses01F_impro01_F000", "Ses01F_impro01_M001", "Ses01F_impro01_F001"]
    assert impro["speakers"] == ["F", "M", "F"]
    assert impro["labels"] == [IEMOCAP_LABELS.index("neu"), IEMOCAP_LABELS.index("ang"), IEMOCAP_LABELS.index("fru")]
    assert Path(impro["audio_paths"][1]) == root / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M001.wav"
    assert set(impro["video_paths"]) == {str(root / "Session1/dialog/avi/DivX/Ses01F_impro01.avi")}
    assert Path(dataset["test"][0]["video_paths"][0]).parts[-5] == "Session5"


def test_missing_and_unreadable_media_are_all_listed(mini_iemocap):
    root, split_file = mini_iemocap
    (root / "Session1/sentences/wav/Ses01F_script01_1/Ses01F_script01_1_M000.wav").unlink()
    (root / "Session5/dialog/avi/DivX/Ses05F_impro02.avi").write_bytes(b"RIFF....AVI junk")
    with pytest.raises(MediaProblemsError) as caught:
        load_iemocap(root, split_file=split_file)
    message = str(caught.value)
    assert "train / dialogue Ses01F_script01_1 / utterance Ses01F_script01_1_M000" in message
    assert "Ses01F_script01_1_M000.wav (missing" in message
    assert "test / dialogue Ses05F_impro02 / utterances Ses05F_impro02_M000, Ses05F_impro02_F001" in message
    assert "Ses05F_impro02.avi (unreadable" in message
    assert len(caught.value.problems) == 2


def test_drop_removes_utterances_and_emptied_dialogues(mini_iemocap, caplog):
    root, split_file = mini_iemocap
    (root / "Session1/sentences/wav/Ses01F_script01_1/Ses01F_script01_1_M000.wav").unlink()
    (root / "Session5/dialog/avi/DivX/Ses05F_impro02.avi").unlink()
    with caplog.at_level(logging.WARNING):
        dataset = load_iemocap(root, split_file=split_file, on_missing="drop")
    assert dataset["train"][1]["utterance_ids"] == ["Ses01F_script01_1_F000"]
    assert dataset["test"].num_rows == 0
    assert "Dropped 2 utterance(s)" in dataset["test"].info.description
    assert "Dropped 1 utterance(s)" in dataset["train"].info.description
    assert "Ses05F_impro02.avi" in caplog.text


def test_long_utterance_wav_is_reported_but_not_the_dialogue_video(mini_iemocap, media_files, caplog):
    root, split_file = mini_iemocap
    long_wav = root / "Session1/sentences/wav/Ses01M_impro01/Ses01M_impro01_F000.wav"
    long_wav.write_bytes(media_files["long_wav"].read_bytes())
    with caplog.at_level(logging.WARNING):
        load_iemocap(root, split_file=split_file, max_clip_duration=0.5)  # the AVIs (1 s) are whole dialogues
    long_lines = [record.getMessage() for record in caplog.records if "longer than" in record.getMessage()]
    assert len(long_lines) == 1 and "Ses01M_impro01_F000.wav" in long_lines[0]


def test_label_file_faults_are_listed_together(mini_iemocap):
    root, split_file = mini_iemocap
    (root / "Session1/dialog/EmoEvaluation/Ses01M_impro01.txt").unlink()
    transcription = root / "Session5/dialog/transcriptions/Ses05F_impro02.txt"
    kept_lines = [line for line in transcription.read_text().splitlines() if "F001" not in line]
    transcription.write_text("\n".join(kept_lines) + "\n")
    with pytest.raises(LabelFilesError) as caught:
        load_iemocap(root, split_file=split_file, check_media=False)
    message = str(caught.value)
    assert "validation / dialogue Ses01M_impro01: evaluation file" in message
    assert "Ses01M_impro01.txt not found" in message
    assert "test / dialogue Ses05F_impro02 / utterance Ses05F_impro02_F001: no transcript line" in message


def _full_size_utterances(dialogue, count):
    """`count` kept utterances alternating F/M, plus two lines of dropped classes."""
    utterances = []
    for index in range(count):
        speaker = "FM"[index % 2]
        label = sorted(KEPT)[index % len(KEPT)]
        utterances.append(U(f"{dialogue}_{speaker}{index:03d}", label, 2.0 * index, 2.0 * index + 1.5, f"line {index}"))
    utterances.insert(1, U(f"{dialogue}_M900", "xxx", 0.25, 0.5, "uh"))
    utterances.append(U(f"{dialogue}_F901", "sur", 999.0, 1000.0, "oh"))
    return utterances


def test_full_size_label_tree_gives_the_standard_counts(tmp_path):
    """Every split.json dialogue, the standard per-split totals spread over them, media checks off."""
    splits = json.loads(DEFAULT_IEMOCAP_SPLIT_FILE.read_text())["splits"]
    totals = {"train": 5163, "dev": 647, "test": 1623}
    root = tmp_path / "IEMOCAP_full_release"
    for key, dialogues in splits.items():
        share, remainder = divmod(totals[key], len(dialogues))
        for position, dialogue in enumerate(dialogues):
            write_iemocap_dialogue(root, dialogue, _full_size_utterances(dialogue, share + (position < remainder)))
    dataset = load_iemocap(root, check_media=False)
    for key, split in (("train", "train"), ("dev", "validation"), ("test", "test")):
        assert dataset[split]["dialogue_id"] == splits[key]
        assert sum(len(labels) for labels in dataset[split]["labels"]) == totals[key]
    assert (dataset.num_rows["train"], dataset.num_rows["validation"], dataset.num_rows["test"]) == (108, 12, 31)


def rewrite_dialogue(root, media_files, dialogue, utterances):
    write_iemocap_dialogue(root, dialogue, utterances, EXTRA_TRANSCRIPT_LINES, media_files["wav"], media_files["avi"])


def test_end_before_start_raises_naming_split_and_file_unless_dropped(mini_iemocap, media_files):
    root, split_file = mini_iemocap
    utterances = list(MINI_DIALOGUES["train"]["Ses01F_impro01"])
    utterances[2] = U("Ses01F_impro01_M001", "ang", 18.0175, 14.8872, "Yeah, you need to fill that out.")
    rewrite_dialogue(root, media_files, "Ses01F_impro01", utterances)
    with pytest.raises(LabelProblemsError) as caught:
        load_iemocap(root, split_file=split_file)
    message = str(caught.value)
    assert ("train / dialogue Ses01F_impro01: utterance Ses01F_impro01_M001: EndTime 14.8872 is before StartTime "
            "18.0175") in message
    assert "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt, line 13" in message
    dataset = load_iemocap(root, split_file=split_file, on_missing="drop")
    assert dataset["train"][0]["utterance_ids"] == ["Ses01F_impro01_F000", "Ses01F_impro01_F001"]
    assert "Left out label-file rows (1 utterance(s) dropped)" in dataset["train"].info.description


def test_utterance_listed_twice_raises_and_drop_keeps_the_first_identical_line(mini_iemocap, media_files):
    root, split_file = mini_iemocap
    utterances = list(MINI_DIALOGUES["test"]["Ses05F_impro02"])
    rewrite_dialogue(root, media_files, "Ses05F_impro02", utterances + [utterances[0]])
    with pytest.raises(LabelProblemsError) as caught:
        load_iemocap(root, split_file=split_file, check_media=False)
    message = str(caught.value)
    assert "test / dialogue Ses05F_impro02: utterance Ses05F_impro02_M000 is on 2 identical rows" in message
    assert "Ses05F_impro02.txt, lines 3, 18" in message
    dataset = load_iemocap(root, split_file=split_file, on_missing="drop")
    assert dataset["test"][0]["utterance_ids"] == ["Ses05F_impro02_M000", "Ses05F_impro02_F001"]
    assert "is on 2 identical rows; the first is kept" in dataset["test"].info.description


def test_utterance_listed_twice_with_different_labels_is_left_out(mini_iemocap, media_files):
    root, split_file = mini_iemocap
    utterances = list(MINI_DIALOGUES["test"]["Ses05F_impro02"])
    conflicting = U("Ses05F_impro02_F001", "ang", 5.5, 9.25, "x")
    rewrite_dialogue(root, media_files, "Ses05F_impro02", utterances + [conflicting])
    dataset = load_iemocap(root, split_file=split_file, check_media=False, on_missing="drop")
    assert dataset["test"][0]["utterance_ids"] == ["Ses05F_impro02_M000"]
    assert "is on 2 rows that differ (labels); all are left out" in dataset["test"].info.description


def test_validation_empty_after_filtering_raises_unless_dropped(mini_iemocap, media_files):
    root, split_file = mini_iemocap
    rewrite_dialogue(root, media_files, "Ses01M_impro01", [U("Ses01M_impro01_F000", "xxx", 1.25, 3.5, "Next.")])
    with pytest.raises(LabelProblemsError) as caught:
        load_iemocap(root, split_file=split_file)
    message = str(caught.value)
    assert "split(s) validation unusable" in message
    assert ("validation: no utterance in this split after filtering: 1 utterance(s) with a label outside the "
            "classes (xxx 1)") in message
    assert f"{split_file}, list 'dev'" in message
    dataset = load_iemocap(root, split_file=split_file, on_missing="drop")
    assert dataset["validation"].num_rows == 0 and dataset["train"].num_rows == 2
    assert "Empty split: validation: no utterance in this split" in dataset["validation"].info.description


def test_truncated_wav_is_found_by_the_full_decode_only(mini_iemocap):
    root, split_file = mini_iemocap
    wav = root / "Session1/sentences/wav/Ses01F_script01_1/Ses01F_script01_1_F000.wav"
    data = wav.read_bytes()
    wav.write_bytes(data[: len(data) // 2])
    load_iemocap(root, split_file=split_file)  # FFmpeg sizes a WAV by the file: the header check passes
    with pytest.raises(MediaProblemsError) as caught:
        load_iemocap(root, split_file=split_file, decode=True)
    (problem,) = caught.value.problems
    assert problem.status == TRUNCATED and problem.path == str(wav)
    assert "the WAV data chunk declares 6400 bytes" in str(caught.value)
