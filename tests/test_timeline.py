import base64
import random
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from magtkd_hf.dataset_table import MELD_LABELS
from magtkd_hf.timeline import (MAX_SPEAKERS, MAX_WIDTH_INCHES, MIN_BAR_PIXELS, MIN_OPACITY, emotion_colours,
                                html_report, timeline_figure, timeline_png)

SPEAKERS = ("Chandler", "Monica", "Ross", "Rachel", "Phoebe", "Joey")


def generated_rows(cues: int, speakers: int, seed: int = 0) -> list[dict]:
    """Predicted rows as `magtkd-hf predict --json` gives them for a subtitled video: one per cue, in time order."""
    rng, time, rows = random.Random(seed), 0.0, []
    for cue in range(1, cues + 1):
        time += rng.uniform(0.2, 2.5)
        duration = rng.uniform(0.8, 4.0)
        weights = [rng.random() ** 3 for _ in MELD_LABELS]
        probabilities = {label: weight / sum(weights) for label, weight in zip(MELD_LABELS, weights)}
        label = max(probabilities, key=probabilities.get)
        rows.append({"cue": cue, "start": time, "end": time + duration, "speaker": SPEAKERS[(cue - 1) % speakers],
                     "text": f"line {cue}", "label": label, "score": probabilities[label],
                     "probabilities": probabilities, "modalities": ["text", "audio", "vision"]})
        time += duration
    return rows


@pytest.mark.parametrize("cues, speakers", [(10, 3), (500, 6)])
def test_png_is_sized_by_the_span_and_has_one_lane_per_speaker(tmp_path, cues, speakers):
    rows = generated_rows(cues, speakers)
    path = timeline_png(rows, tmp_path / "timeline.png", title="sample")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = Image.open(path).size
    assert (width == 800) if cues == 10 else (width == MAX_WIDTH_INCHES * 100)
    assert 100 + 50 * speakers <= height <= 200 + 50 * speakers
    axes = timeline_figure(rows).axes[0]
    assert [label.get_text() for label in axes.get_yticklabels()] == list(SPEAKERS[:speakers])
    assert len(axes.patches) == cues
    # Names inside bars only when few cues: a crowded timeline reads by colour.
    assert (len(axes.texts) > 0) == (cues == 10)


def test_bar_colour_is_the_emotion_and_opacity_its_probability():
    rows = generated_rows(40, 2, seed=3)
    colours = emotion_colours(MELD_LABELS)
    for row, bar in zip(rows, timeline_figure(rows).axes[0].patches):
        *rgb, alpha = bar.get_facecolor()
        assert "#{:02X}{:02X}{:02X}".format(*(round(channel * 255) for channel in rgb)) == colours[row["label"]]
        assert alpha == pytest.approx(MIN_OPACITY + (1 - MIN_OPACITY) * row["probabilities"][row["label"]])
        assert (bar.get_x(), bar.get_width()) == pytest.approx((row["start"], row["end"] - row["start"]))


def test_a_short_cue_in_a_long_video_stays_visible():
    rows = generated_rows(3, 2)
    rows[0]["end"] = rows[0]["start"] + 0.2
    rows[-1] = {**rows[-1], "start": 3 * 3600.0, "end": 3 * 3600.0 + 5}
    figure = timeline_figure(rows)
    (left, _), (right, _) = figure.axes[0].transData.transform([(rows[0]["start"], 0), (rows[0]["end"], 0)])
    assert right - left < 1
    bar = figure.axes[0].patches[0].get_window_extent()
    assert bar.width >= MIN_BAR_PIXELS - 0.01


def test_palette_gives_every_label_its_own_colour():
    assert len(set(emotion_colours(MELD_LABELS).values())) == 7
    iemocap = ("happy", "sad", "neutral", "angry", "excited", "frustrated")
    assert len(set(emotion_colours(iemocap).values())) == 6
    assert len(set(emotion_colours(["calm", "bored", "joy"]).values())) == 3
    with pytest.raises(ValueError, match="distinct colours for 9 emotions; the model has 10"):
        emotion_colours([f"emotion{index}" for index in range(10)])


@pytest.mark.parametrize("change, message", [
    ({"start": float("nan")}, r"cue 2: start nan and end .* must be finite seconds with 0 <= start < end"),
    ({"end": 0.1}, r"cue 2: start .* and end 0.1 must be finite seconds"),
    ({"label": "boredom"}, r"cue 2: the label 'boredom' is not among its emotions \['anger', 'disgust'"),
    ({"cue": "2"}, r"cue 2: the cue number must be an integer, got '2'"),
    ({"probabilities": {"calm": 0.4, "anger": 0.6}}, r"cue 2: its emotions \['calm', 'anger'\] differ from the first"),
])
def test_bad_rows_are_refused_naming_the_cue(tmp_path, change, message):
    rows = generated_rows(3, 2)
    rows[1] = {**rows[1], **change}
    with pytest.raises(ValueError, match=message) as error:
        timeline_png(rows, tmp_path / "timeline.png")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "timeline.png").exists()


def test_rows_without_timing_or_any_row_or_with_too_many_speakers_are_refused(tmp_path):
    rows = generated_rows(2, 1)
    del rows[0]["start"], rows[1]["cue"]
    with pytest.raises(ValueError, match="cue 1: the row has no start; the timeline needs predicted rows with cue"):
        html_report(rows, tmp_path / "report.html", {}, {})
    with pytest.raises(ValueError, match="row 1: the row has no cue"):
        html_report([generated_rows(1, 1)[0], rows[1]], tmp_path / "report.html", {}, {})
    rows = [{**row, "speaker": f"speaker {row['cue']}"} for row in generated_rows(MAX_SPEAKERS + 1, 1)]
    with pytest.raises(ValueError, match=f"at most {MAX_SPEAKERS} speaker lanes; the rows have {MAX_SPEAKERS + 1}"):
        timeline_png(rows, tmp_path / "timeline.png")
    with pytest.raises(ValueError, match="at least one predicted row; got none"):
        timeline_png([], tmp_path / "timeline.png")


def test_html_report_is_self_contained_escaped_and_lists_every_row(tmp_path):
    rows = generated_rows(25, 4)
    rows[3]["text"] = "I said <script>alert('hi')</script> & left"
    rows[5]["speaker"] = "<b>Gunther</b>"
    path = html_report(rows, tmp_path / "report.html", {"model": "my-model <v2>", "revision": "abc"},
                       {"max_gap": 5.0, "speaker": "UNKNOWN"})
    page = path.read_text(encoding="utf-8")
    assert not re.search(r"https?:", page) and "<link" not in page and "<script" not in page
    assert "I said &lt;script&gt;alert(&#x27;hi&#x27;)&lt;/script&gt; &amp; left" in page
    assert "&lt;b&gt;Gunther&lt;/b&gt;" in page and "my-model &lt;v2&gt;" in page and "max_gap" in page
    picture = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert base64.b64decode(picture.group(1))[:8] == b"\x89PNG\r\n\x1a\n"
    table_rows = re.findall(r'<tr><td class="number">(\d+)</td><td class="number">([\d.]+)</td>'
                            r'<td class="number">([\d.]+)</td><td>.*?</td><td>.*?</td>'
                            r'<td>.*?</span>(\w+)</td>'
                            r'<td class="number">([\d.]+)</td></tr>', page)
    assert [(int(cue), emotion) for cue, _, _, emotion, _ in table_rows] == [(row["cue"], row["label"]) for row in rows]
    assert [float(probability) for *_, probability in table_rows] == pytest.approx(
        [row["probabilities"][row["label"]] for row in rows], abs=5e-4)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's `chromium` (installed by .ci/run)")
def test_html_report_renders_in_a_headless_browser_without_network(tmp_path):
    rows = generated_rows(10, 3)
    rows[0]["text"] = "<script>document.title='ran'</script><img src='https://example.invalid/x.png'>"
    path = html_report(rows, tmp_path / "report.html", {"model": "tiny"}, {"max_gap": 5.0})
    browser = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1000,800",
               f"--user-data-dir={tmp_path / 'profile'}", "--proxy-server=127.0.0.1:9", path.as_uri()]
    dom = subprocess.run([*browser[:-1], "--dump-dom", browser[-1]], capture_output=True, text=True, timeout=120).stdout
    assert "<title>Emotion timeline</title>" in dom and dom.count("<tr>") == 1 + len(rows) + 1 + 1
    assert "&lt;script&gt;document.title" in dom and "<script" not in dom
    subprocess.run([*browser[:-1], f"--screenshot={tmp_path / 'shot.png'}", browser[-1]], capture_output=True,
                   timeout=120, check=True)
    pixels = np.asarray(Image.open(tmp_path / "shot.png").convert("RGB"), dtype=np.int16)
    # The coloured bars of the inline timeline (the swatches of 10 table rows are about 1,000 pixels).
    assert ((pixels.max(axis=-1) - pixels.min(axis=-1)) > 60).sum() > 5000
