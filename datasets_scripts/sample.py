"""
The sample data shipped with magtkd-hf: a few short conversations in the official MELD layout (CSVs and
`dia{d}_utt{u}.mp4` clips with a sound track), written for this project so that the demo runs anywhere.

The transcripts are original (not MELD's). Each clip is 1 s of 64 x 64 video at 8 fps with an AAC sound track; its
coloured square and its tone depend on the utterance's emotion, so the media carry a learnable signal. Every emotion
occurs in every split. `write_sample_meld(root)` writes the tree deterministically; the package ships its output in
`sample_meld/` (see `SAMPLE_MELD_ROOT`).
"""

from __future__ import annotations

from pathlib import Path

from .meld import MELD_SPLIT_FILES, meld_clip_path
from .synthetic import write_meld_tree, write_scenes_mp4, write_tiny_mp4

SAMPLE_MELD_ROOT = Path(__file__).resolve().parent / "sample_meld"
# The real MELD label files (transcripts, speakers, emotions; no clips; GPL-3.0 like this package): a release folder
# for the text stages.
MELD_TRANSCRIPTS_ROOT = Path(__file__).resolve().parent / "meld_transcripts"
# Conversation files for `magtkd-hf predict` (README): the test conversation as its clips, and as cuts of one video.
SAMPLE_CONVERSATIONS_DIR = SAMPLE_MELD_ROOT / "conversations"
CLIP_CONVERSATION_FILE = SAMPLE_CONVERSATIONS_DIR / "test_conversation.json"
CUT_CONVERSATION_FILE = SAMPLE_CONVERSATIONS_DIR / "test_conversation_cuts.json"
CUT_VIDEO_FILE = SAMPLE_CONVERSATIONS_DIR / "test_conversation.mp4"
STREAM_CONVERSATION_FILE = SAMPLE_CONVERSATIONS_DIR / "test_conversation.jsonl"

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
SENTIMENT = {"anger": "negative", "disgust": "negative", "fear": "negative", "sadness": "negative",
             "joy": "positive", "surprise": "positive", "neutral": "neutral"}

# split -> conversations -> (speaker, text, emotion)
SAMPLE_CONVERSATIONS = {
    "train": [
        [("Maya", "Did you see the letter on the kitchen table?", "neutral"),
         ("Theo", "The one from the landlord? I opened it this morning.", "neutral"),
         ("Maya", "They are raising the rent again, by a third!", "anger"),
         ("Theo", "A third? That cannot be legal.", "surprise"),
         ("Maya", "I am so tired of this place.", "sadness")],
        [("Lena", "Guess who got the scholarship!", "joy"),
         ("Omar", "No way, you did? That is amazing!", "surprise"),
         ("Lena", "I start in September, in Lisbon.", "joy"),
         ("Omar", "I will miss you, you know.", "sadness")],
        [("Ravi", "Something smells awful in the fridge.", "disgust"),
         ("June", "Oh, that is the fish from last week.", "neutral"),
         ("Ravi", "Last week? It is growing fur.", "disgust"),
         ("June", "Fine, I will throw it out, relax.", "anger")],
        [("Theo", "Did you hear that noise downstairs?", "fear"),
         ("Maya", "It is probably just the cat.", "neutral"),
         ("Theo", "We do not have a cat.", "fear"),
         ("Maya", "Okay, now I am scared too.", "fear"),
         ("Theo", "It was the heater. Only the heater.", "joy")],
        [("Omar", "Your presentation went really well today.", "joy"),
         ("Lena", "Really? I thought I rushed the ending.", "surprise"),
         ("Omar", "Nobody noticed, trust me.", "neutral"),
         ("Lena", "That is such a relief.", "joy")],
        [("June", "They cancelled the concert.", "sadness"),
         ("Ravi", "After we waited three months for it?", "anger"),
         ("June", "The singer is sick, apparently.", "neutral"),
         ("Ravi", "That is a shame, I hope she is all right.", "sadness")],
        [("Maya", "Who left muddy boots on my bed?", "anger"),
         ("Lena", "Not me, I have been out all day.", "neutral"),
         ("Maya", "Then there is a stranger in here.", "fear"),
         ("Lena", "Ew, and the mud is still wet.", "disgust"),
         ("Maya", "Wait, these are my brother's boots!", "surprise")],
    ],
    "validation": [
        [("Theo", "I burned the pasta again.", "sadness"),
         ("June", "How do you even burn pasta?", "surprise"),
         ("Theo", "Do not ask. The pot is ruined and it stinks.", "disgust"),
         ("June", "Let us just order pizza.", "joy"),
         ("Theo", "Stop laughing at me!", "anger"),
         ("June", "The shop closes at ten, we have time.", "neutral"),
         ("Theo", "Is that a spider on the counter?", "fear")],
    ],
    "test": [
        [("Omar", "Is this your handwriting on the wall?", "anger"),
         ("Ravi", "What? I have never seen that before.", "surprise"),
         ("Omar", "It says we have seven days.", "fear"),
         ("Ravi", "Probably a prank by the neighbours.", "neutral"),
         ("Omar", "Someone also left rotten eggs by the door.", "disgust"),
         ("Ravi", "I miss the quiet old building.", "sadness"),
         ("Omar", "At least the new one has a garden.", "joy")],
    ],
}


def sample_meld_rows() -> dict[str, list[dict[str, str]]]:
    """The sample conversations as MELD CSV rows, per split."""
    rows, serial = {}, 1
    for split, conversations in SAMPLE_CONVERSATIONS.items():
        rows[split] = []
        for dialogue, conversation in enumerate(conversations):
            for utterance, (speaker, text, emotion) in enumerate(conversation):
                start = 2.0 * utterance
                rows[split].append({
                    "Sr No.": str(serial), "Utterance": text, "Speaker": speaker, "Emotion": emotion,
                    "Sentiment": SENTIMENT[emotion], "Dialogue_ID": str(dialogue), "Utterance_ID": str(utterance),
                    "Season": "1", "Episode": "1",
                    "StartTime": _timestamp(start), "EndTime": _timestamp(start + 1.0),
                })
                serial += 1
    return rows


def _timestamp(seconds: float) -> str:
    minutes, seconds = divmod(seconds, 60)
    return f"00:{int(minutes):02d}:{int(seconds):02d},{int(round(seconds % 1 * 1000)):03d}"


def write_sample_meld(root: str | Path) -> Path:
    """Writes the sample data (CSVs and clips) in the official MELD layout under `root`."""
    rows = sample_meld_rows()
    root = write_meld_tree(root, rows)
    for split, (_, clip_folder) in MELD_SPLIT_FILES.items():
        for row in rows[split]:
            colour, tone = EMOTION_MEDIA[row["Emotion"]]
            clip = meld_clip_path(root / clip_folder, int(row["Dialogue_ID"]), int(row["Utterance_ID"]))
            write_tiny_mp4(clip, duration=1.0, size=64, fps=8, colour=colour, tone_hz=tone, audio_pts=True)
    write_conversation_files(root / SAMPLE_CONVERSATIONS_DIR.name, rows["test"])
    return root


def write_conversation_files(folder: Path, test_rows: list[dict[str, str]]) -> None:
    """The first test conversation as a `predict` file of per-utterance clips, and as `start`/`end` cuts of one video
    (`write_scenes_mp4`): utterance k speaks from 3k + 1 to 3k + 2 s, and its picture fills the second before and after
    as well, the video context the processor reads around a cut (`time_window_padding`, 1 s)."""
    import json

    rows = [row for row in test_rows if row["Dialogue_ID"] == "0"]
    clip_folder = MELD_SPLIT_FILES["test"][1]
    clips = [{"speaker": row["Speaker"], "text": row["Utterance"],
              "video": f"../{clip_folder}/dia0_utt{row['Utterance_ID']}.mp4"} for row in rows]
    cuts = [{"speaker": row["Speaker"], "text": row["Utterance"], "video": CUT_VIDEO_FILE.name,
             "start": 3.0 * index + 1.0, "end": 3.0 * index + 2.0} for index, row in enumerate(rows)]
    folder.mkdir(parents=True, exist_ok=True)
    write_scenes_mp4(folder / CUT_VIDEO_FILE.name, [EMOTION_MEDIA[row["Emotion"]] for row in rows])
    for name, utterances in ((CLIP_CONVERSATION_FILE.name, clips), (CUT_CONVERSATION_FILE.name, cuts)):
        (folder / name).write_text(json.dumps({"utterances": utterances}, indent=1) + "\n", encoding="utf-8")
    # The same clips, one utterance per line, for `magtkd-hf stream` (paths relative to this folder: --base-dir).
    lines = "".join(json.dumps(utterance) + "\n" for utterance in clips)
    (folder / STREAM_CONVERSATION_FILE.name).write_text(lines, encoding="utf-8")
