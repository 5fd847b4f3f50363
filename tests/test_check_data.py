"""`magtkd-hf check-data {meld,iemocap} ROOT` through `magtkd_hf.cli.main`: exit status and printed report."""

import csv
import json
import shutil
from pathlib import Path

import pytest

from magtkd_hf.cli import main
from magtkd_hf.datasets_scripts.synthetic import (
    SyntheticIemocapUtterance as U,
    write_iemocap_dialogue,
    write_meld_tree,
    write_tiny_avi,
    write_tiny_mp4,
    write_tiny_wav,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MELD_CSVS = {"train": "train_sent_emo.csv", "validation": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}


def run_cli(capsys, *argv):
    code = main(["check-data", *map(str, argv)])
    return code, capsys.readouterr().out


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return {"short": write_tiny_mp4(folder / "short.mp4", 0.3), "long": write_tiny_mp4(folder / "long.mp4", 1.5)}


@pytest.fixture
def meld_tree(tmp_path, clips):
    rows = {}
    for split, name in MELD_CSVS.items():
        with open(SHARED / "meld" / name, encoding="utf-8", newline="") as handle:
            rows[split] = [row for row in csv.DictReader(handle) if row["Dialogue_ID"] in ("0", "1")]
    return write_meld_tree(tmp_path / "meld", rows, clips["short"]), rows


def test_meld_complete_tree_is_usable(meld_tree, capsys):
    root, rows = meld_tree
    code, out = run_cli(capsys, "meld", root)
    assert code == 0
    assert f"Media files checked: {sum(len(r) for r in rows.values())}" in out
    assert "Missing files: 0" in out and "Unreadable files: 0" in out and "Result: usable." in out
    train_line = next(line.split() for line in out.splitlines() if line.strip().startswith("train "))
    assert train_line[1:3] == ["2", str(len(rows["train"]))]


def test_meld_missing_and_corrupt_clips_fail_and_are_named(meld_tree, clips, capsys):
    root, _ = meld_tree
    (root / "dev_splits_complete" / "dia1_utt7.mp4").unlink()
    corrupt = root / "train_splits" / "dia0_utt3.mp4"
    corrupt.write_bytes(corrupt.read_bytes()[:300])
    shutil.copyfile(clips["long"], root / "output_repeated_splits_test" / "dia1_utt2.mp4")
    code, out = run_cli(capsys, "meld", root, "--max-duration", "1")
    assert code == 1
    assert "Missing files: 1\n  validation / dialogue 1 / utterance 7:" in out and "dia1_utt7.mp4 (missing" in out
    assert "Unreadable files: 1\n  train / dialogue 0 / utterance 3:" in out and "dia0_utt3.mp4 (unreadable" in out
    assert "Clips longer than the limit (1 s): 1\n  test / dialogue 1 / utterance 2:" in out
    assert "Result: NOT usable" in out

    code, out = run_cli(capsys, "meld", root, "--max-duration", "1", "--on-missing", "drop")
    assert code == 0 and "after dropping" in out and "Result: usable (2 utterance(s) left out)." in out


def test_meld_labels_only_on_the_real_csvs(tmp_path, capsys):
    for name in MELD_CSVS.values():
        shutil.copyfile(SHARED / "meld" / name, tmp_path / name)
    code, out = run_cli(capsys, "meld", tmp_path, "--no-media")
    assert code == 0 and "Media not checked" in out
    cells = [line.split() for line in out.splitlines()]
    table = {row[0]: row[1:] for row in cells if row and row[0] in ("train", "validation", "test")}
    assert table["train"][:2] == ["1038", "9989"] and table["validation"][:2] == ["114", "1109"]
    assert table["test"][:2] == ["280", "2610"]
    # anger disgust fear joy neutral sadness surprise of the official training split
    assert table["train"][2:] == ["1109", "271", "268", "1743", "4710", "683", "1205"]


def test_meld_absent_label_files_exit_2(tmp_path, capsys):
    code, out = run_cli(capsys, "meld", tmp_path, "--no-media")
    assert code == 2 and "train_sent_emo.csv not found" in out and "label files cannot be read" in out


def test_iemocap_report_and_exit_codes(tmp_path, capsys):
    root = tmp_path / "IEMOCAP_full_release"
    wav, avi = write_tiny_wav(tmp_path / "u.wav", 0.2), write_tiny_avi(tmp_path / "d.avi", 1.0)
    dialogues = {
        "train": ("Ses01F_impro01", [
            U("Ses01F_impro01_F000", "neu", 1.0, 2.0, "Hi."),
            U("Ses01F_impro01_M000", "xxx", 2.0, 3.0, "Uh."),
            U("Ses01F_impro01_M001", "ang", 3.0, 4.0, "No."),
        ]),
        "dev": ("Ses01M_impro01", [
            U("Ses01M_impro01_F000", "sad", 1.0, 2.0, "Oh."),
            U("Ses01M_impro01_M000", "oth", 2.0, 3.0, "Eh."),
        ]),
        "test": ("Ses05F_impro02", [U("Ses05F_impro02_M000", "exc", 1.0, 2.0, "Yes!")]),
    }
    for dialogue, utterances in dialogues.values():
        write_iemocap_dialogue(root, dialogue, utterances, wav=wav, video=avi)
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"splits": {key: [dialogue] for key, (dialogue, _) in dialogues.items()}}))

    code, out = run_cli(capsys, "iemocap", root, "--split-file", split_file)
    assert code == 0 and "Result: usable." in out
    assert "train: xxx 1" in out and "validation: oth 1" in out
    assert "Media files checked: 7" in out  # 4 kept utterance WAVs + 3 dialogue AVIs
    (root / "Session5/dialog/avi/DivX/Ses05F_impro02.avi").unlink()
    code, out = run_cli(capsys, "iemocap", root, "--split-file", split_file)
    assert code == 1 and "test / dialogue Ses05F_impro02 / utterance Ses05F_impro02_M000:" in out
    code, out = run_cli(capsys, "iemocap", root, "--split-file", split_file, "--on-missing", "drop")
    assert code == 1 and "no utterance left in split(s) test" in out
