"""A video's emotion timeline from its predicted rows (`magtkd-hf predict --json` rows plus `cue`, `start`, `end` in
seconds): a PNG with one lane per speaker and one bar per cue (colour = emotion, opacity = its probability), and a
self-contained HTML report (that PNG inline, the rows as a table, the model and settings used; nothing to fetch)."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MultipleLocator

# Okabe & Ito's colour-blind-safe palette, keyed by MELD's and IEMOCAP's label names; a model's other labels take the
# unused colours in the model's label order.
EMOTION_COLOURS = {
    "neutral": "#999999", "anger": "#D55E00", "angry": "#D55E00", "frustrated": "#CC79A7", "disgust": "#009E73",
    "fear": "#CC79A7", "joy": "#E69F00", "happy": "#E69F00", "excited": "#56B4E9", "sadness": "#0072B2",
    "sad": "#0072B2", "surprise": "#F0E442",
}
SPARE_COLOURS = ("#F0E442", "#56B4E9", "#009E73", "#CC79A7", "#000000", "#0072B2", "#E69F00", "#D55E00", "#999999")
MAX_SPEAKERS = 60
MAX_LABELLED_CUES = 60  # beyond this many cues the bars carry no text (a crowded timeline reads by colour)
MIN_OPACITY = 0.3
MIN_BAR_PIXELS = 2
ROW_KEYS = ("cue", "start", "end", "speaker", "text", "label", "probabilities")
TABLE_COLUMNS = ("cue", "start (s)", "end (s)", "speaker", "text", "emotion", "probability")
DPI = 100
LANE_INCHES = 0.5
MIN_WIDTH_INCHES, MAX_WIDTH_INCHES, SECONDS_PER_INCH = 8.0, 40.0, 30.0
TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)


def _clock(seconds: float, _position=None) -> str:
    """Seconds as m:ss (h:mm:ss past an hour), the way a video player shows them."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _check_row(row: Mapping, name: str, label_names: list[str]):
    missing = [key for key in ROW_KEYS if key not in row]
    if missing:
        raise ValueError(f"{name}: the row has no {', '.join(missing)}; the timeline needs predicted rows with "
                         "cue, start and end (seconds).")
    start, end = row["start"], row["end"]
    if not (isinstance(start, (int, float)) and isinstance(end, (int, float)) and math.isfinite(start)
            and math.isfinite(end) and 0 <= start < end):
        raise ValueError(f"{name}: start {start!r} and end {end!r} must be finite seconds with 0 <= start < end.")
    if not isinstance(row["cue"], int):
        raise ValueError(f"{name}: the cue number must be an integer, got {row['cue']!r}.")
    if list(row["probabilities"]) != label_names:
        raise ValueError(f"{name}: its emotions {list(row['probabilities'])} differ from the first row's {label_names};"
                         " one timeline shows one model's predictions.")
    if row["label"] not in row["probabilities"]:
        raise ValueError(f"{name}: the label {row['label']!r} is not among its emotions {label_names}.")


def _checked_cues(rows: Sequence[Mapping]) -> list[Mapping]:
    """The rows, refused with one line naming the cue when a timeline cannot be drawn from them."""
    if not rows:
        raise ValueError("The timeline needs at least one predicted row; got none.")
    label_names = list(rows[0].get("probabilities", {}))
    for index, row in enumerate(rows):
        _check_row(row, f"cue {row['cue']}" if "cue" in row else f"row {index}", label_names)
    speakers = len({str(row["speaker"]) for row in rows})
    if speakers > MAX_SPEAKERS:
        raise ValueError(f"The timeline draws at most {MAX_SPEAKERS} speaker lanes; the rows have {speakers} speakers.")
    return list(rows)


def emotion_colours(label_names: Sequence[str]) -> dict[str, str]:
    """One colour per label: the fixed colour of a known emotion, else the next unused colour of the palette."""
    colours = {label: EMOTION_COLOURS[label.lower()] for label in label_names if label.lower() in EMOTION_COLOURS}
    spare = [colour for colour in SPARE_COLOURS if colour not in colours.values()]
    unknown = [label for label in label_names if label not in colours]
    if len(unknown) > len(spare):
        raise ValueError(f"The timeline has distinct colours for {len(colours) + len(spare)} emotions; the model has "
                         f"{len(label_names)}: {list(label_names)}.")
    return {**colours, **dict(zip(unknown, spare))}


def _probability(row: Mapping) -> float:
    return float(row["probabilities"][row["label"]])


def _tick_step(span: float, width_inches: float) -> int:
    """The smallest round step that puts at most about one tick per inch."""
    return next((step for step in TICK_STEPS if span / step <= width_inches), TICK_STEPS[-1])


def _draw_bars(axes, rows: Sequence[Mapping], lanes: dict[str, int], colours: Mapping[str, str], pixels_per_second):
    """
    One bar per cue, at least MIN_BAR_PIXELS wide so that a short cue in a long video still shows; with few cues, a
    bar wide enough for its emotion's name (about 6 pixels a letter) shows it.
    """
    starts = [float(row["start"]) for row in rows]
    widths = [max(float(row["end"]) - start, MIN_BAR_PIXELS / pixels_per_second) for row, start in zip(rows, starts)]
    faces = [to_rgba(colours[row["label"]], MIN_OPACITY + (1 - MIN_OPACITY) * _probability(row)) for row in rows]
    axes.barh([lanes[str(row["speaker"])] for row in rows], widths, left=starts, height=0.7, color=faces)
    if len(rows) > MAX_LABELLED_CUES:
        return
    for row, start, width in zip(rows, starts, widths):
        if width * pixels_per_second >= 6 * len(row["label"]) + 4:
            axes.text(start + width / 2, lanes[str(row["speaker"])], row["label"], ha="center", va="center", fontsize=7)


def timeline_figure(rows: Sequence[Mapping], title: str | None = None) -> Figure:
    """
    The timeline as a matplotlib `Figure` (no pyplot, no global state): time on the x axis, one lane per speaker (in
    order of first appearance, top down), one bar per cue from its start to its end, coloured by the predicted emotion
    with the emotion's probability as opacity. The width grows with the video's span (up to a cap); a bar carries its
    emotion's name only where it is wide enough to read.
    """
    rows = _checked_cues(rows)
    label_names = list(rows[0]["probabilities"])
    colours = emotion_colours(label_names)
    lanes = {speaker: lane for lane, speaker in enumerate(dict.fromkeys(str(row["speaker"]) for row in rows))}
    first, last = min(float(row["start"]) for row in rows), max(float(row["end"]) for row in rows)
    span = max(last - first, 1.0)
    width = min(MAX_WIDTH_INCHES, max(MIN_WIDTH_INCHES, 3.0 + span / SECONDS_PER_INCH))
    top = 0.6 if title else 0.35  # inches above the lanes: the legend, and the title above it
    height = 0.95 + top + LANE_INCHES * len(lanes)
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((1.6 / width, 0.65 / height, 1 - 1.9 / width, 1 - (0.65 + top) / height))
    _draw_bars(axes, rows, lanes, colours, pixels_per_second=axes.get_position().width * width * DPI / (span * 1.02))
    axes.set_yticks(list(lanes.values()), [name if len(name) <= 18 else name[:17] + "…" for name in lanes])
    axes.set_ylim(len(lanes) - 0.5, -0.5)
    axes.set_xlim(first - span * 0.01, last + span * 0.01)
    axes.xaxis.set_major_locator(MultipleLocator(_tick_step(span, width)))
    axes.xaxis.set_major_formatter(FuncFormatter(_clock))
    axes.set_xlabel("time in the video (m:ss); bar opacity = the emotion's probability")
    axes.grid(axis="x", color="#dddddd", linewidth=0.6)
    axes.set_axisbelow(True)
    axes.legend(handles=[Patch(color=colours[label], label=label) for label in label_names], loc="lower left",
                bbox_to_anchor=(0, 1.0), ncol=len(label_names), frameon=False, fontsize=8, handlelength=1.2)
    if title:
        figure.suptitle(title, x=0.01, y=1 - 0.08 / height, ha="left", va="top", fontsize=10)
    return figure


def timeline_png(rows: Sequence[Mapping], path, title: str | None = None) -> Path:
    """Draw `timeline_figure(rows, title)` into the PNG file `path` and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    timeline_figure(rows, title).savefig(path, format="png")
    return path


# The timeline keeps its pixel size (a long video's is wide) and scrolls sideways rather than shrinking to illegible.
STYLE = """body{font-family:sans-serif;margin:1.5em;color:#222}div.timeline{overflow-x:auto;border:1px solid #ddd}
table{border-collapse:collapse;font-size:14px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#f3f3f3}td.number{text-align:right;font-variant-numeric:tabular-nums}
span.swatch{display:inline-block;width:.8em;height:.8em;margin-right:.3em;border-radius:2px}"""


def _facts_table(facts: Mapping) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(str(value))}</td></tr>"
                    for key, value in facts.items())
    return f"<table>{cells}</table>"


def _rows_table(rows: Sequence[Mapping], colours: Mapping[str, str]) -> str:
    header = "".join(f"<th>{name}</th>" for name in TABLE_COLUMNS)
    body = []
    for row in rows:
        emotion = (f'<span class="swatch" style="background:{colours[row["label"]]}"></span>'
                   f'{html.escape(str(row["label"]))}')
        body.append(f'<tr><td class="number">{int(row["cue"])}</td><td class="number">{float(row["start"]):.2f}</td>'
                    f'<td class="number">{float(row["end"]):.2f}</td><td>{html.escape(str(row["speaker"]))}</td>'
                    f'<td>{html.escape(str(row["text"]))}</td><td>{emotion}</td>'
                    f'<td class="number">{_probability(row):.3f}</td></tr>')
    return f"<table><tr>{header}</tr>{''.join(body)}</table>"


def html_report(rows: Sequence[Mapping], path, model_info: Mapping, settings: Mapping) -> Path:
    """
    One self-contained HTML file at `path`: the timeline PNG inline (a base64 data URI), the rows as a table (cue,
    start and end in seconds, speaker, text, emotion, probability), the model and the settings used. No external
    CSS, scripts or fonts; every text is HTML-escaped. Returns the path.
    """
    rows = _checked_cues(rows)
    image = io.BytesIO()
    timeline_figure(rows).savefig(image, format="png")
    picture = base64.b64encode(image.getvalue()).decode("ascii")
    colours = emotion_colours(list(rows[0]["probabilities"]))
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Emotion timeline</title>'
            f"<style>{STYLE}</style></head><body>\n<h1>Emotion timeline</h1>\n"
            f'<div class="timeline"><img alt="emotion timeline: one lane per speaker, one bar per cue" '
            f'src="data:image/png;base64,{picture}"></div>\n'
            f"<h2>Cues ({len(rows)})</h2>\n{_rows_table(rows, colours)}\n<h2>Model</h2>\n{_facts_table(model_info)}\n"
            f"<h2>Settings</h2>\n{_facts_table(settings)}\n</body></html>\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
