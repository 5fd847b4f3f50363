"""`benchmarks/gpu.py --tiny` runs on a CPU and reports positive throughput, step time and peak memory."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def test_tiny_gpu_benchmark_runs_on_cpu(tmp_path):
    report = tmp_path / "gpu.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--json", str(report)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(report.read_text())
    assert figures["tiny"] and figures["device"] == "cpu"
    assert figures["inference"]["utterances"] > 0
    assert figures["inference"]["utterances_per_s"] > 0
    assert figures["ideal_utterances_per_s"] > 0 and figures["flop_per_utterance"] > 0
    assert figures["video_training"]["step_s"] > 0
    assert figures["peak_memory_gib"] > 0
    assert "utterances/s" in result.stdout and "ideal" in result.stdout
