"""`benchmarks/gpu.py --tiny` runs on a CPU and reports positive throughput, step time and peak memory; `--estimate`
prints the table of estimated memory and time per stage from the meta device."""

import json
import os
import subprocess
import sys
from pathlib import Path

from magtkd_hf.training.settings import STAGES

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def run_script(tmp_path, *options):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *options], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)


def test_tiny_gpu_benchmark_runs_on_cpu(tmp_path):
    report = tmp_path / "gpu.json"
    result = run_script(tmp_path, "--tiny", "--device", "cpu", "--json", str(report))
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(report.read_text())
    assert figures["tiny"] and figures["device"] == "cpu"
    assert figures["inference"]["utterances"] > 0
    assert figures["inference"]["utterances_per_s"] > 0
    assert figures["ideal_utterances_per_s"] > 0 and figures["flop_per_utterance"] > 0
    assert figures["video_training"]["step_s"] > 0
    assert figures["peak_memory_gib"] > 0
    assert "utterances/s" in result.stdout and "ideal" in result.stdout


def test_estimate_prints_one_row_per_stage_from_counted_figures(tmp_path):
    report = tmp_path / "estimate.json"
    result = run_script(tmp_path, "--estimate", "--tiny", "--peak-tflops", "100", "--json", str(report))
    assert result.returncode == 0, result.stdout + result.stderr
    table = [line for line in result.stdout.splitlines() if line.startswith("|")]
    assert table[0].startswith("| stage | trained parameters | batch | weights + optimiser (GiB)")
    assert [row.split(" | ")[0].strip("| ") for row in table[2:]] == list(STAGES)
    assert {row.count("|") for row in table} == {10}
    assert "ESTIMATES, not measured (tiny encoders" in result.stdout and "assumed 100 TFLOP/s" in result.stdout
    stages = json.loads(report.read_text())["stages"]
    (text_short, text_long), (audio_short, audio_long) = stages["text"], stages["audio"]
    assert text_short["weights_optimiser_gib"] * 2**30 == 16 * text_short["trained_parameters"] > 0
    assert 0 < text_short["activations_gib"] < text_long["activations_gib"]  # 128 -> 511 prompt tokens
    assert 0 < audio_short["forward_flop_per_utterance"] < audio_long["forward_flop_per_utterance"]  # 3.2 -> 25 s
    teacher = stages["distill-audio"][0]
    assert teacher["forward_flop_per_utterance"] == audio_short["forward_flop_per_utterance"] + \
        text_short["forward_flop_per_utterance"]
    assert teacher["weights_optimiser_gib"] > audio_short["weights_optimiser_gib"]  # + the frozen text teacher
    extract = stages["extract-features"][0]
    assert extract["trained_parameters"] == 0 and extract["activations_gib"] == 0 and extract["epoch_s"] > 0
    flop = 3 * text_short["forward_flop_per_utterance"] * 9989 + text_short["forward_flop_per_utterance"] * 1109
    assert abs(text_short["epoch_s"] - flop / 100e12) < 1e-12
