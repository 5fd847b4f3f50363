"""`magtkd-hf check-data {meld,iemocap} ROOT` through `magtkd_hf.apps.cli.main`: exit status and printed report."""

import csv
import json
import shutil
from pathlib import Path

import av
import pytest
from media_fixtures import write_mp4

from magtkd_hf import load_iemocap, load_meld
from magtkd_hf.apps.cli import build_parser, main
from magtkd_hf.datasets_scripts import check_data, synthetic
from magtkd_hf.datasets_scripts.corpus import LabelFilesError
from magtkd_hf.datasets_scripts.media import TRUNCATED, UNREADABLE, MediaFile, decode_media, probe_media
from magtkd_hf.datasets_scripts.synthetic import write_meld_tree
from iemocap_fixtures import SyntheticIemocapUtterance as U, write_iemocap_dialogue, write_tiny_avi, write_tiny_wav

TEST_DATA = Path(__file__).resolve().parent / "data"  # the official MELD label CSVs (tests/data/meld/LICENSE.md)
MELD_CSVS = {"train": "train_sent_emo.csv", "validation": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}


def run_cli(capsys, *argv):
    code = main(["check-data", *map(str, argv)])
    return code, capsys.readouterr().out


def run_check_command(capsys, *argv, decode=False):
    """`check-data` as the CLI runs it, with or without `--decode`."""
    args = build_parser().parse_args(["check-data", *map(str, argv), *(["--decode"] if decode else [])])
    code = args.func(args)
    return code, capsys.readouterr().out


def write_csv(path, rows):
    fieldnames = list(rows[0]) if rows else ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID",
                                             "Utterance_ID", "Season", "Episode", "StartTime", "EndTime"]
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)


def header_first_mp4(folder: Path, seconds: float = 3.0, header_first: bool = True) -> Path:
    """A real MP4 (H.264 + AAC) with its header (moov) before the data, so that a cut file still opens (with
    `header_first=False`: the same clip in the muxer's default layout, the header at the end)."""
    name = "header_first.mp4" if header_first else "header_last.mp4"
    frames = int(seconds * 8)
    return write_mp4(folder / name, num_frames=frames, fps=8, audio_seconds=seconds, header_first=header_first)


def cut_in_half(source: Path, target: Path) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return {"short": synthetic.write_mp4(folder / "short.mp4", 0.3),
            "long": synthetic.write_mp4(folder / "long.mp4", 1.5)}


@pytest.fixture
def meld_tree(tmp_path, clips):
    rows = {}
    for split, name in MELD_CSVS.items():
        with open(TEST_DATA / "meld" / name, encoding="utf-8", newline="") as handle:
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
        shutil.copyfile(TEST_DATA / "meld" / name, tmp_path / name)
    code, out = run_cli(capsys, "meld", tmp_path, "--no-media")
    assert code == 0 and "Media not checked" in out
    cells = [line.split() for line in out.splitlines()]
    table = {row[0]: row[1:] for row in cells if row and row[0] in ("train", "validation", "test")}
    assert table["train"][:2] == ["1038", "9989"] and table["validation"][:2] == ["114", "1109"]
    assert table["test"][:2] == ["280", "2610"]
    # anger disgust fear joy neutral sadness surprise of the official training split
    assert table["train"][2:] == ["1109", "271", "268", "1743", "4710", "683", "1205"]


def test_meld_absent_label_files_exit_2(tmp_path, capsys):
    (tmp_path / "dev_sent_emo.csv").write_text("")
    code, out = run_cli(capsys, "meld", tmp_path, "--no-media")
    assert code == 2 and "train_sent_emo.csv not found" in out and "label files cannot be read" in out


@pytest.mark.parametrize(("dataset", "expected"), [("meld", "train_sent_emo.csv"), ("iemocap", "Session1 ... Session5")])
@pytest.mark.parametrize("state", ["does not exist", "is not a folder", "is not the release folder"])
def test_a_wrong_root_is_one_short_line_naming_it(tmp_path, capsys, dataset, expected, state):
    root = {"does not exist": tmp_path / "gone", "is not a folder": tmp_path / "file", "is not the release folder": tmp_path}[state]
    (tmp_path / "file").write_text("")
    code, out = run_cli(capsys, dataset, root, "--no-media")
    assert code == 2 and out.splitlines()[0].startswith(f"check-data: {dataset.upper()} root {root} {state}: expected")
    assert expected in out and len(out) < 300
    with pytest.raises(LabelFilesError, match=f"root {root} {state}"):
        (load_meld if dataset == "meld" else load_iemocap)(root, check_media=False)


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


def test_label_faults_and_media_faults_are_reported_in_one_run(meld_tree, capsys):
    root, rows = meld_tree
    train = [dict(row) for row in rows["train"]]
    train[0]["Emotion"] = "boredom"
    write_csv(root / "train_sent_emo.csv", train)
    (root / "test_sent_emo.csv").unlink()
    (root / "dev_splits_complete" / "dia1_utt7.mp4").unlink()
    (root / "train_splits" / "dia1_utt2.mp4").unlink()
    code, out = run_cli(capsys, "meld", root)
    assert code == 2
    assert "Label file faults: 2\n" in out and "line 2, dialogue '0', utterance '0': unknown emotion 'boredom'" in out
    assert "test: label file" in out and "test_sent_emo.csv not found" in out
    # the media of every readable row is still checked: the train row with the bad label is not, the others are
    assert f"Media files checked: {len(rows['train']) - 1 + len(rows['validation'])} (headers opened)" in out
    assert "Missing files: 2\n" in out and "validation / dialogue 1 / utterance 7:" in out
    assert "train / dialogue 1 / utterance 2:" in out
    assert ("Result: NOT usable: the label files cannot be read (2 fault(s)); 2 media file(s) missing or "
            "unreadable") in out


def test_end_before_start_repeated_rows_and_empty_split_are_faults(meld_tree, capsys):
    root, rows = meld_tree
    train = [dict(row) for row in rows["train"]]
    train[1]["StartTime"], train[1]["EndTime"] = "0:10:00,000", "0:09:59,000"
    test = [dict(row) for row in rows["test"]] + [dict(rows["test"][0])]
    write_csv(root / "train_sent_emo.csv", train)
    write_csv(root / "test_sent_emo.csv", test)
    write_csv(root / "dev_sent_emo.csv", [])
    code, out = run_cli(capsys, "meld", root)
    assert code == 2
    assert "Rows with EndTime < StartTime or repeated: 2\n" in out
    assert "train / dialogue 0: utterance 1: EndTime 0:09:59,000 is before StartTime 0:10:00,000" in out
    assert "train_sent_emo.csv, line 3)" in out
    assert "test / dialogue 0: utterance 0 is on 2 identical rows" in out and f"lines 2, {len(test) + 1})" in out
    assert "Empty splits: 1\n  validation: no utterance in this split" in out and "dev_sent_emo.csv" in out
    assert "Label file faults: 0" in out and "Missing files: 0" in out
    assert "2 label-file row problem(s)" in out and "no utterance left in split(s) validation" in out

    code, out = run_cli(capsys, "meld", root, "--on-missing", "drop")
    assert code == 1 and "after dropping those rows:" in out
    assert "Result: NOT usable: no utterance left in split(s) validation." in out

    write_csv(root / "dev_sent_emo.csv", rows["validation"])
    code, out = run_cli(capsys, "meld", root, "--on-missing", "drop")
    assert code == 0 and "Result: usable (1 utterance(s) left out)." in out  # the identical repeat costs nothing


def test_decode_finds_a_clip_cut_after_a_good_header(meld_tree, tmp_path, capsys):
    root, rows = meld_tree
    truncated = cut_in_half(header_first_mp4(tmp_path), tmp_path / "truncated.mp4")
    shutil.copyfile(truncated, root / "train_splits" / "dia0_utt1.mp4")
    code, out = run_check_command(capsys, "meld", root, decode=False)
    assert code == 0 and "(headers opened)" in out
    code, out = run_check_command(capsys, "meld", root, "--num-workers", "2", decode=True)
    assert code == 1
    assert f"Media files checked: {sum(len(r) for r in rows.values())} (fully decoded)" in out
    assert "Unreadable files: 1\n  train / dialogue 0 / utterance 1:" in out
    assert "dia0_utt1.mp4 (truncated: video decodes to" in out and "of the 3.00 s its header declares" in out


def test_decode_shows_a_progress_bar(meld_tree, capsys):
    root, rows = meld_tree
    report = check_data("meld", root, decode=True, num_workers=2, progress=True)
    assert report.is_usable and report.decode
    err = capsys.readouterr().err
    total = sum(len(r) for r in rows.values())
    assert "Decoding media" in err and f"{total}/{total}" in err


def test_decode_flag_of_the_cli(meld_tree, tmp_path, capsys):
    root, _ = meld_tree
    cut_in_half(header_first_mp4(tmp_path), root / "output_repeated_splits_test" / "dia1_utt0.mp4")
    assert run_cli(capsys, "meld", root)[0] == 0
    code, out = run_cli(capsys, "meld", root, "--decode")
    assert code == 1 and "dia1_utt0.mp4 (truncated" in out


def test_decode_media_on_good_and_cut_files(tmp_path):
    good = header_first_mp4(tmp_path)
    both = ("video", "audio")
    assert decode_media(MediaFile(str(good), both)).is_usable
    assert decode_media(MediaFile(str(write_mp4(tmp_path / "flat.mp4", audio_seconds=2.0)), both)).is_usable

    # cut in half: the last, partial packet fails to decode, after half the frames
    half = decode_media(MediaFile(str(cut_in_half(good, tmp_path / "half.mp4")), both))
    assert half.status == TRUNCATED and "then InvalidDataError" in half.reason
    assert half.duration == pytest.approx(3.0)  # what the header says

    # cut exactly between two packets: decoding ends early without any error
    with av.open(str(good)) as container:
        positions = sorted(packet.pos for packet in container.demux() if packet.pos is not None and packet.pos > 0)
    data = good.read_bytes()
    clean_cut = tmp_path / "clean_cut.mp4"
    clean_cut.write_bytes(data[: positions[len(positions) // 2]])
    assert probe_media(MediaFile(str(clean_cut), both)).is_usable
    silent = decode_media(MediaFile(str(clean_cut), both))
    assert silent.status == TRUNCATED and "its header declares" in silent.reason and "then" not in silent.reason

    # the header is at the end (the muxer's default): a cut file does not even open
    default_layout = cut_in_half(header_first_mp4(tmp_path, header_first=False), tmp_path / "default_cut.mp4")
    assert decode_media(MediaFile(str(default_layout), both)).status == UNREADABLE
    assert probe_media(MediaFile(str(default_layout), both)).status == UNREADABLE
