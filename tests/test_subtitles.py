"""Subtitles in, an emotion per cue out: SRT and WebVTT cues read with speakers, markup and sound descriptions handled;
every bad subtitle file refused in one line naming the file and cue; cues grouped into conversations; the CLI end to
end on a generated clip, its rows equal to predicting the equivalent conversation JSON."""

import csv
import json

import pyarrow.parquet as pq
import pysubs2
import pytest
from media_fixtures import write_mp4
from tiny_magtkd import save_tiny_end_to_end

from magtkd_hf.apps.cli import main
from magtkd_hf.subtitles import Cue, annotate_subtitles, read_cues, subtitle_conversations, video_duration

SRT = """1
00:00:00,200 --> 00:00:01,100
JOEY: <i>Hi</i> there

2
00:00:01,300 --> 00:00:02,400
[laughs]
Rachel Green: How are
you?

3
00:00:02,500 --> 00:00:02,550
(door slams)

4
00:00:02,600 --> 00:00:03,900
Fine (sighs) thanks

5
00:00:03,910 --> 00:00:03,950
JOEY: [gasps]
"""

VTT = """WEBVTT

00:00:00.500 --> 00:00:01.500
<v Roger Bingham>We are in <b>New York</b> City

00:00:02.000 --> 00:00:03.000
<v.loud Neil>Hello &amp;
there</v>
"""


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def test_srt_speakers_markup_line_breaks_and_sound_descriptions(tmp_path):
    cues = read_cues(write(tmp_path / "s.srt", SRT), default_speaker="Ross")
    assert cues == [Cue(1, 0.2, 1.1, "JOEY", "Hi there"), Cue(2, 1.3, 2.4, "Rachel Green", "How are you?"),
                    Cue(4, 2.6, 3.9, "Ross", "Fine thanks")]  # cues 3 and 5, a sound description alone, are skipped


def test_webvtt_voice_tags_and_a_byte_order_mark(tmp_path):
    cues = read_cues(write(tmp_path / "s.vtt", "\ufeff" + VTT))
    assert cues == [Cue(1, 0.5, 1.5, "Roger Bingham", "We are in New York City"), Cue(2, 2.0, 3.0, "Neil", "Hello & there")]


BAD_SUBTITLES = {
    "empty": ("", "an empty file: no subtitle cues."),
    "no cues": ("WEBVTT\n\n", "no subtitle cues."),
    "reversed": ("1\n00:00:01,000 --> 00:00:02,000\nA: hi\n\n2\n00:00:03,000 --> 00:00:02,500\nB: yo\n",
                 "cue 2 ends at 2.500 s, not after its start (3.000 s)."),
    "overlapping": ("1\n00:00:01,000 --> 00:00:02,000\nA: hi\n\n2\n00:00:01,500 --> 00:00:02,500\nB: yo\n",
                    "cue 2 starts at 1.500 s, before cue 1 ends (2.000 s): cues must not overlap."),
    "malformed timing": ("1\n00:00:01,000 --> 00:00:02,000\nA: hi\n\n2\n00:00:03,000 --> 0:0:4\nB: yo\n",
                         "cue 1 is followed by a line that is not a valid timing ('00:00:03,000 --> 0:0:4'; expected "
                         "HH:MM:SS,mmm --> HH:MM:SS,mmm): fix it."),
    "one-dash timing": ("1\n00:00:01,000 --> 00:00:02,000\nA: hi\n\n2\n00:00:03,000 -> 00:00:04\nB: yo\n",
                        "cue 1 is followed by a line that is not a valid timing ('00:00:03,000 -> 00:00:04'; expected "
                        "HH:MM:SS,mmm --> HH:MM:SS,mmm): fix it."),
    "no speaker": ("1\n00:00:01,000 --> 00:00:02,000\nA: hi\n\n2\n00:00:02,000 --> 00:00:02,500\nwho said this\n",
                   "cue 2 has no speaker (no 'NAME:' prefix or <v NAME> tag): give --speaker NAME."),
}


@pytest.mark.parametrize("case", BAD_SUBTITLES)
def test_bad_subtitles_are_one_line_naming_the_file_and_cue(tmp_path, case):
    text, message = BAD_SUBTITLES[case]
    path = write(tmp_path / "s.srt", text)
    with pytest.raises(ValueError) as error:
        read_cues(path)
    assert str(error.value) == f"{path}: {message}"


def test_other_encodings_are_refused_naming_the_file(tmp_path):
    path = write(tmp_path / "s.srt", "1\n00:00:01,000 --> 00:00:02,000\nJOSÉ: olé\n", encoding="latin-1")
    with pytest.raises(ValueError, match=f"^{path}: not UTF-8 text \\(byte 0xc9 at position 35\\); subtitles are read"):
        read_cues(path)


def test_a_cue_past_the_video_end_is_refused_naming_the_file_and_cue():
    cues = [Cue(1, 0.0, 1.0, "A", "hi"), Cue(2, 1.0, 4.5, "B", "yo")]
    with pytest.raises(ValueError) as error:
        subtitle_conversations(cues, "clip.mp4", 4.0, subtitles="s.srt")
    assert str(error.value) == "s.srt: cue 2 ends at 4.500 s, past the end of clip.mp4 (4.000 s)."


def test_conversations_split_at_long_gaps_and_at_most_max_utterances():
    starts = [0, 1, 2, 10, 11, 12, 13]
    cues = [Cue(number, start, start + 0.5, "A", f"cue {number}") for number, start in enumerate(starts, start=1)]
    conversations = subtitle_conversations(cues, "clip.mp4", 20.0, max_gap=2.0, max_utterances=3)
    assert [numbers for numbers, _ in conversations] == [[1, 2, 3], [4, 5, 6], [7]]
    assert conversations[0][1][1] == {"speaker": "A", "text": "cue 2", "video": "clip.mp4", "start": 1, "end": 1.5}
    with pytest.raises(ValueError, match="^--max-gap must be more than 0 seconds, got 0"):
        subtitle_conversations(cues, "clip.mp4", 20.0, max_gap=0)


@pytest.mark.parametrize(("name", "text"), [("s.srt", SRT), ("s.vtt", VTT)])
def test_annotated_subtitles_keep_format_timing_and_markup(tmp_path, name, text):
    source = write(tmp_path / name, text)
    output = tmp_path / f"annotated{source.suffix}"
    annotate_subtitles(source, [{"cue": 2, "label": "joy", "score": 0.834}], output)
    before, after = pysubs2.load(str(source), keep_html_tags=True), pysubs2.load(str(output), keep_html_tags=True)
    assert after.format == before.format
    assert [(event.start, event.end) for event in after] == [(event.start, event.end) for event in before]
    assert after[1].text == before[1].text + " [joy 0.83]"
    assert [event.text for event in after][::2] == [event.text for event in before][::2]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("subtitles")
    video = write_mp4(folder / "clip.mp4", num_frames=32, fps=8, audio_seconds=4.0)
    subtitles = write(folder / "clip.srt", SRT)
    return save_tiny_end_to_end(folder / "model"), video, subtitles


def predict(capsys, *arguments):
    assert main(["predict", *map(str, arguments), "--dtype", "float32"]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_the_cli_rows_equal_predicting_the_equivalent_conversation(clip, tmp_path, capsys):
    model, video, subtitles = clip
    rows_file, annotated = tmp_path / "rows.jsonl", tmp_path / "annotated.srt"
    predict(capsys, model, video, "--subtitles", subtitles, "--speaker", "Ross", "--output", rows_file,
            "--output", annotated, "--output", tmp_path / "rows.csv", "--output", tmp_path / "rows.parquet")
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()]
    assert pq.read_table(tmp_path / "rows.parquet").to_pylist() == rows
    with open(tmp_path / "rows.csv", newline="", encoding="utf-8") as handle:
        from_csv = list(csv.DictReader(handle))
    assert [json.loads(row["probabilities"]) for row in from_csv] == [row["probabilities"] for row in rows]
    assert [(int(row["cue"]), row["label"], float(row["score"])) for row in from_csv] == [
        (row["cue"], row["label"], row["score"]) for row in rows]
    conversation = [{"speaker": cue.speaker, "text": cue.text, "video": str(video), "start": cue.start, "end": cue.end}
                    for cue in read_cues(subtitles, "Ross")]
    conversation_file = tmp_path / "conversation.json"
    conversation_file.write_text(json.dumps(conversation))
    expected = json.loads(predict(capsys, model, conversation_file, "--json"))
    assert [row["cue"] for row in rows] == [1, 2, 4]
    assert [(row["start"], row["end"]) for row in rows] == [(0.2, 1.1), (1.3, 2.4), (2.6, 3.9)]
    assert [{key: row[key] for key in expected[0]} for row in rows] == expected
    timings = [(event.start, event.end) for event in pysubs2.load(str(annotated))]
    assert timings == [(event.start, event.end) for event in pysubs2.load(str(subtitles))]
    assert pysubs2.load(str(annotated))[0].text.endswith(f"[{rows[0]['label']} {rows[0]['score']:.2f}]")


def test_the_cli_draws_the_timeline_and_writes_the_report_of_the_same_rows(clip, tmp_path, capsys):
    model, video, subtitles = clip
    rows_file, picture, report = tmp_path / "rows.jsonl", tmp_path / "timeline.png", tmp_path / "report.html"
    predict(capsys, model, video, "--subtitles", subtitles, "--speaker", "Ross", "--output", rows_file,
            "--output", picture, "--output", report)
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()]
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = report.read_text(encoding="utf-8")
    assert "data:image/png;base64," in html and "http" not in html.replace(str(model), "")
    for row in rows:
        assert f"{row['probabilities'][row['label']]:.3f}" in html and f">{row['cue']}<" in html
    assert "max_gap" in html and str(model) in html


def error_line(capsys, arguments) -> str:
    assert main(["predict", *map(str, arguments)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.splitlines()[0].removeprefix("magtkd-hf predict: error: ")


def test_the_cli_checks_every_output_and_option_before_any_work(clip, tmp_path, capsys):
    model, video, subtitles = clip
    base = [model, video, "--subtitles", subtitles, "--speaker", "Ross"]
    assert error_line(capsys, [*base, "--output", tmp_path / "a.vtt"]) == (
        f"--output {tmp_path / 'a.vtt'}: the annotated subtitles keep the input's format (srt): name it a.srt.")
    assert error_line(capsys, [*base, "--output", tmp_path / "a.txt"]).endswith(
        "(rows, annotated subtitles, the timeline picture or an HTML report).")
    (tmp_path / "old.csv").write_text("x")
    assert error_line(capsys, [*base, "--output", tmp_path / "new.jsonl", "--output", tmp_path / "old.csv"]) == (
        f"{tmp_path / 'old.csv'} exists: pass --overwrite to replace it.")
    assert not (tmp_path / "new.jsonl").exists()
    assert error_line(capsys, [model, video, "--speaker", "Ross"]) == "--speaker and --max-gap go with --subtitles FILE."
    assert error_line(capsys, [*base, "--max-gap", "-1"]) == "--max-gap must be more than 0 seconds, got -1.0."
    short = write_mp4(tmp_path / "short.mp4", num_frames=16, fps=8)
    assert error_line(capsys, [model, short, "--subtitles", subtitles, "--speaker", "Ross"]) == (
        f"{subtitles}: cue 2 ends at 2.400 s, past the end of {short} (2.000 s).")


def test_a_file_larger_than_subtitles_take_is_not_read(tmp_path, monkeypatch):
    monkeypatch.setattr("magtkd_hf.subtitles.MAX_SUBTITLE_BYTES", 100)
    path = write(tmp_path / "s.srt", SRT)
    with pytest.raises(ValueError, match=f"^{path}: {len(SRT.encode()):,} bytes, more than subtitles take \\(at most 100\\)"):
        read_cues(path)


def test_a_file_without_a_video_stream_as_the_video_is_refused_before_the_model_loads(tmp_path):
    subtitles = write(tmp_path / "s.srt", SRT)
    with pytest.raises(ValueError) as error:
        video_duration(subtitles)
    assert str(error.value) == f"{subtitles}: no video stream: INPUT is the VIDEO (its subtitles go in --subtitles)."


def test_a_missing_video_is_refused_as_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"^{tmp_path / 'gone.mp4'}: no such file.$"):
        video_duration(tmp_path / "gone.mp4")
