"""
The sample data shipped with magtkd-hf, so that the demo runs anywhere: a few short conversations in the official MELD
layout (`sample_meld/`), with original transcripts (not MELD's). Each clip is 1 s of 64 x 64 video at 8 fps with an
AAC sound track; its coloured square and its tone depend on the utterance's emotion, so the media carry a learnable
signal. Every emotion occurs in every split. The shipped CSVs are the source: `write_sample_meld(root)` writes the
whole tree from them, deterministically.
"""

from __future__ import annotations

import json
from itertools import groupby
from operator import itemgetter
from pathlib import Path

import pysubs2

from .meld import MELD_SPLIT_FILES, meld_clip_path, read_meld_csv
from .synthetic import write_meld_tree, write_mp4, write_scenes_mp4

SAMPLE_MELD_ROOT = Path(__file__).resolve().parent / "sample_meld"
# The real MELD label files (transcripts, speakers, emotions; no clips; GPL-3.0 like this package): a release folder
# for the text stages.
MELD_TRANSCRIPTS_ROOT = Path(__file__).resolve().parent / "meld_transcripts"
CUT_VIDEO_NAME = "test_conversation.mp4"
# The README's "Your own video": the first test and dev conversations in one video with its subtitles.
EPISODE_VIDEO_NAME, EPISODE_SUBTITLES_NAME = "episode.mp4", "episode.srt"
PAUSE_SCENES = 2  # 6 s of silence between the two conversations: more than the default --max-gap

# emotion -> (RGB colour of the clip's square, tone of its sound track in Hz)
EMOTION_MEDIA = {
    "anger": ((200, 30, 30), 330.0),
    "disgust": ((90, 140, 40), 370.0),
    "fear": ((90, 40, 150), 415.0),
    "joy": ((240, 200, 40), 466.0),
    "neutral": ((128, 128, 128), 523.0),
    "sadness": ((40, 70, 180), 587.0),
    "surprise": ((240, 120, 200), 659.0),
}


def sample_meld_rows() -> dict[str, list[dict[str, str]]]:
    """The sample conversations as MELD CSV rows, per split: the shipped CSVs, the source of the sample tree."""
    return {split: read_meld_csv(SAMPLE_MELD_ROOT / csv_name) for split, (csv_name, _) in MELD_SPLIT_FILES.items()}


# split -> conversations -> (speaker, text, emotion)
SAMPLE_CONVERSATIONS = {
    split: [[(row["Speaker"], row["Utterance"], row["Emotion"]) for row in dialogue]
            for _, dialogue in groupby(rows, itemgetter("Dialogue_ID"))]
    for split, rows in sample_meld_rows().items()
}


def write_sample_meld(root: str | Path) -> Path:
    """Writes the sample data (CSVs and clips) in the official MELD layout under `root`."""
    rows = sample_meld_rows()
    root = write_meld_tree(root, rows)
    for split, (_, clip_folder) in MELD_SPLIT_FILES.items():
        for row in rows[split]:
            colour, tone = EMOTION_MEDIA[row["Emotion"]]
            clip = meld_clip_path(root / clip_folder, int(row["Dialogue_ID"]), int(row["Utterance_ID"]))
            write_mp4(clip, duration=1.0, size=64, fps=8, colour=colour, tone_hz=tone, audio_pts=True)
    write_conversation_files(root / "conversations", rows["test"])
    write_episode(root / "conversations", [rows["test"], rows["validation"]])
    return root


def write_conversation_files(folder: Path, test_rows: list[dict[str, str]]) -> None:
    """
    The conversation files of `magtkd-hf predict` and `stream` (README): the first test conversation as its clips,
    one utterance per line, and as `start`/`end` cuts of one video (`write_scenes_mp4`): utterance k speaks from
    3k + 1 to 3k + 2 s, and its picture fills the second before and after as well, the video context the processor
    reads around a cut (`time_window_padding`, 1 s).
    """
    rows = [row for row in test_rows if row["Dialogue_ID"] == "0"]
    clip_folder = MELD_SPLIT_FILES["test"][1]
    clips = [{"speaker": row["Speaker"], "text": row["Utterance"],
              "video": f"../{clip_folder}/dia0_utt{row['Utterance_ID']}.mp4"} for row in rows]
    cuts = [{"speaker": row["Speaker"], "text": row["Utterance"], "video": CUT_VIDEO_NAME,
             "start": 3.0 * index + 1.0, "end": 3.0 * index + 2.0} for index, row in enumerate(rows)]
    folder.mkdir(parents=True, exist_ok=True)
    write_scenes_mp4(folder / CUT_VIDEO_NAME, [EMOTION_MEDIA[row["Emotion"]] for row in rows])
    for name, utterances in (("test_conversation.json", clips), ("test_conversation_cuts.json", cuts)):
        (folder / name).write_text(json.dumps({"utterances": utterances}, indent=1) + "\n", encoding="utf-8")
    # The same clips, one utterance per line, for `magtkd-hf stream` (paths relative to this folder: --base-dir).
    lines = "".join(json.dumps(utterance) + "\n" for utterance in clips)
    (folder / "test_conversation.jsonl").write_text(lines, encoding="utf-8")


def write_episode(folder: Path, splits_rows: list[list[dict[str, str]]]) -> None:
    """
    `episode.mp4` and `episode.srt`: the first conversation of each of `splits_rows`, one after the other in one video
    (`write_scenes_mp4`: utterance k speaks from 3k + 1 to 3k + 2 s), a silent pause of `PAUSE_SCENES` scenes between
    them, and subtitles as films have them: `Name:` prefixes, a line break, italics, and a sound description alone
    in the pause (a cue `predict --subtitles` skips).
    """
    conversations = [[row for row in rows if row["Dialogue_ID"] == "0"] for rows in splits_rows]
    pause = [((0, 0, 0), None)] * PAUSE_SCENES
    scenes = [*[EMOTION_MEDIA[row["Emotion"]] for row in conversations[0]], *pause,
              *[EMOTION_MEDIA[row["Emotion"]] for conversation in conversations[1:] for row in conversation]]
    write_scenes_mp4(folder / EPISODE_VIDEO_NAME, scenes)
    lines = [f"{row['Speaker']}: {row['Utterance']}" for row in conversations[0]]
    lines += ["[door slams]"] + [""] * (PAUSE_SCENES - 1)
    lines += [f"{row['Speaker']}: {row['Utterance']}" for conversation in conversations[1:] for row in conversation]
    lines[1] = lines[1].replace("? ", "?\\N", 1)  # a cue on two lines
    lines[2] = f"{{\\i1}}{lines[2]}{{\\i0}}"  # in italics
    subtitles = pysubs2.SSAFile()
    subtitles.events = [pysubs2.SSAEvent(start=3000 * index + 1000, end=3000 * index + 2000, text=text)
                        for index, text in enumerate(lines) if text]
    (folder / EPISODE_SUBTITLES_NAME).write_text(subtitles.to_string("srt"), encoding="utf-8")
