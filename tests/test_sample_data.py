"""The sample data shipped for the demo: the MELD layout, every emotion in every split, real clips with sound."""

import csv

import av

from magtkd_hf import MELD_LABELS, load_meld
from magtkd_hf.datasets_scripts.meld import MELD_SPLIT_FILES
from magtkd_hf.datasets_scripts.sample import EMOTION_MEDIA, SAMPLE_MELD_ROOT, sample_meld_rows


def test_shipped_csvs_are_what_the_generator_writes():
    rows = sample_meld_rows()
    for split, (csv_name, _) in MELD_SPLIT_FILES.items():
        with open(SAMPLE_MELD_ROOT / csv_name, newline="", encoding="utf-8") as handle:
            assert list(csv.DictReader(handle)) == rows[split]


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


def test_shipped_conversation_files_are_what_the_generator_writes(tmp_path):
    """The README's `predict` files: the test conversation as clips and as cuts of one video, regenerated identically."""
    import json

    from magtkd_hf.datasets_scripts.sample import SAMPLE_CONVERSATIONS_DIR, write_conversation_files

    write_conversation_files(tmp_path, sample_meld_rows()["test"])
    for shipped in SAMPLE_CONVERSATIONS_DIR.iterdir():
        assert (tmp_path / shipped.name).read_bytes() == shipped.read_bytes(), shipped.name
    cuts = json.loads((SAMPLE_CONVERSATIONS_DIR / "test_conversation_cuts.json").read_text())["utterances"]
    with av.open(str(SAMPLE_CONVERSATIONS_DIR / "test_conversation.mp4")) as container:
        assert float(container.duration / 1e6) >= cuts[-1]["end"] + 1.0
