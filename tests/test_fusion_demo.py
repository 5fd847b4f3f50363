from magtkd_hf.apps.cli import main as cli
from magtkd_hf.apps.fusion_demo import run_fusion_demo, synthetic_feature_splits


def test_synthetic_splits_follow_the_features_schema():
    splits = synthetic_feature_splits(hidden_size=16)
    row = splits["train"].with_format("numpy")[0]
    assert row["text"].shape == (len(row["labels"]), 16) and len(row["speaker_ids"]) == len(row["labels"])


def test_fusion_demo_learns_well_above_chance_and_reloads(tmp_path):
    result = run_fusion_demo(tmp_path / "model", steps=150, eval_every=75)
    first, best = result["history"][0]["weighted_f1"], result["best_dev_weighted_f1"]
    assert best > 25.0 and best > first + 10.0  # 7 classes: chance is about 14
    assert result["reload_matches"]


def test_fusion_demo_command(tmp_path, capsys):
    assert cli(["fusion-demo", "--output-dir", str(tmp_path / "demo"), "--steps", "20", "--eval-every", "10"]) == 0
    printed = capsys.readouterr().out
    assert "best dev weighted F1" in printed and "reloaded with AutoModel: same dev F1" in printed
