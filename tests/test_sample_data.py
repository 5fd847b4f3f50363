"""The sample data shipped for the demo: the MELD layout, every emotion in every split, real clips with sound."""

import json

import av

from magtkd_hf import MELD_LABELS, load_meld
from magtkd_hf.datasets_scripts.sample import (EMOTION_MEDIA, EPISODE_SUBTITLES_NAME, EPISODE_VIDEO_NAME, SAMPLE_MELD_ROOT,
                                               sample_meld_rows, write_sample_meld)
from magtkd_hf.subtitles import read_subtitled_video


def test_the_shipped_tree_is_what_the_generator_writes(tmp_path):
    """CSVs, clips and the README's conversation files, regenerated from the shipped CSVs byte for byte."""
    write_sample_meld(tmp_path)
    shipped = sorted(path.relative_to(SAMPLE_MELD_ROOT) for path in SAMPLE_MELD_ROOT.rglob("*") if path.is_file())
    assert shipped == sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*") if path.is_file())
    for relative in shipped:
        assert (tmp_path / relative).read_bytes() == (SAMPLE_MELD_ROOT / relative).read_bytes(), relative


def test_sample_builds_with_media_checks_and_covers_every_emotion_in_every_split():
    splits = load_meld(SAMPLE_MELD_ROOT)  # media checks on: every clip exists and opens
    names = splits["train"].features["labels"].feature.names
    for split in ("train", "validation", "test"):
        seen = {names[label] for row in splits[split] for label in row["labels"]}
        assert seen == set(MELD_LABELS), split


def test_sample_clips_are_small_real_videos_with_a_sound_track():
    clips = sorted(clip for clip in SAMPLE_MELD_ROOT.glob("*/*.mp4") if clip.parent.name != "conversations")
    assert len(clips) == sum(len(rows) for rows in sample_meld_rows().values())
    assert sum(clip.stat().st_size for clip in clips) < 5 * 2**20
    with av.open(str(clips[0])) as container:
        assert container.streams.video and container.streams.audio
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == 8
    assert set(EMOTION_MEDIA) == set(MELD_LABELS)


def test_the_cut_video_covers_the_last_cut_and_its_context():
    cuts = json.loads((SAMPLE_MELD_ROOT / "conversations" / "test_conversation_cuts.json").read_text())["utterances"]
    with av.open(str(SAMPLE_MELD_ROOT / "conversations" / "test_conversation.mp4")) as container:
        assert float(container.duration / 1e6) >= cuts[-1]["end"] + 1.0


def test_the_episode_splits_at_its_pause_into_the_test_and_dev_conversations():
    """The README's "Your own video" sample: 15 cues, the sound description alone in the pause skipped, two
    conversations with the speakers and transcripts of the shipped CSVs."""
    folder = SAMPLE_MELD_ROOT / "conversations"
    conversations = read_subtitled_video(folder / EPISODE_VIDEO_NAME, folder / EPISODE_SUBTITLES_NAME)
    assert [numbers for numbers, _ in conversations] == [list(range(1, 8)), list(range(9, 16))]
    rows = sample_meld_rows()
    for (_, utterances), split in zip(conversations, ("test", "validation")):
        expected = [(row["Speaker"], row["Utterance"]) for row in rows[split] if row["Dialogue_ID"] == "0"]
        assert [(utterance["speaker"], utterance["text"]) for utterance in utterances] == expected
