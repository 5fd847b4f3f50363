"""The one table of dataset facts MAGTKD's configs, presets, converters and builders read (MELD, IEMOCAP). Travels
with `configuration_magtkd.py` as remote code."""

MELD_LABELS = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")
IEMOCAP_LABELS = ("ang", "exc", "fru", "hap", "neu", "sad")
MODALITIES = ("text", "audio", "video")
# The stage-3 feature columns: the stage-1 models' features and the distilled students' (`_kd`).
FEATURE_SOURCES = ("text", "audio", "video", "audio_kd", "video_kd")

# What the released recipe does differently per dataset: labels (in the released order), the fusion loss weights of
# the audio and video anchors, whether the anchors also distil features, which stage-3 features the fusion reads,
# the released speaker table (MELD: one row per named speaker of the corpus; IEMOCAP: the two actors) and how the
# released processor numbers speakers.
DATASETS = {
    "meld": {
        "labels": MELD_LABELS,
        "audio_anchor_loss_weight": 0.01,
        "video_anchor_loss_weight": 0.08,
        "anchor_feature_loss": False,
        "audio_feature_source": "audio_kd",
        "video_feature_source": "video_kd",
        "released_num_speakers": 304,
        "released_speaker_mode": "global_map",
    },
    "iemocap": {
        "labels": IEMOCAP_LABELS,
        "audio_anchor_loss_weight": 0.7,
        "video_anchor_loss_weight": 0.8,
        "anchor_feature_loss": True,
        "audio_feature_source": "audio_kd",
        "video_feature_source": "video",
        "released_num_speakers": 2,
        "released_speaker_mode": "released_iemocap",
    },
}
# The released fusion model pads past a conversation's end with speaker index 2 (a real speaker's row as well).
RELEASED_SPEAKER_PADDING_INDEX = 2
FUSION_PRESET_KEYS = (
    "audio_anchor_loss_weight", "video_anchor_loss_weight", "anchor_feature_loss", "audio_feature_source",
    "video_feature_source",
)


def dataset_facts(name: str) -> dict:
    """The row of `DATASETS` for `name` (case-insensitive)."""
    key = str(name).lower()
    if key not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; known datasets: {sorted(DATASETS)}.")
    return DATASETS[key]
