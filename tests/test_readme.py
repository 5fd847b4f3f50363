"""The README's commands and code stay true: every `magtkd-hf` command line parses with the real CLI, the main job
(`magtkd-hf demo`), `predict` and `check-data` are run as written, and every Python block runs (the Hub push is
exercised offline in tests/test_hub.py instead)."""

import json
import os
import re
import shlex
from pathlib import Path

import pytest

from magtkd_hf.apps.cli import build_parser
from magtkd_hf.apps.cli import main as cli
from magtkd_hf.apps.demo import print_demo_report, run_demo

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def code_blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def command_lines(with_input=False):
    """The `magtkd-hf` command lines of the README's bash blocks (argv after the program); with `with_input`, pairs
    (argv, the file given as standard input with `<`, or None)."""
    for block in code_blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            for part in line.split("&&"):
                command, _, stdin = part.partition("<")
                words = shlex.split(command)
                if words[:1] == ["magtkd-hf"]:
                    words = words[1:]
                elif "-m" in words and words[words.index("-m") + 1] == "magtkd_hf":
                    words = words[words.index("-m") + 2 :]
                else:
                    continue
                yield (words, stdin.strip() or None) if with_input else words


def test_readme_starts_with_the_two_set_up_commands():
    first_two = code_blocks("bash")[:2]
    assert first_two[0].strip() == 'pip install "torch==2.13.0" -e . && magtkd-hf demo'
    assert first_two[1].strip() == 'pip install "torch==2.13.0" -e ".[test]" && python -m pytest -q'


@pytest.mark.parametrize("arguments", list(command_lines()), ids=lambda words: " ".join(words[:2]))
def test_every_readme_command_parses(arguments):
    build_parser().parse_args(arguments)


def test_readme_demo_predict_and_python_blocks_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    os.symlink(REPO / "datasets_scripts", tmp_path / "datasets_scripts")
    result = run_demo(tmp_path / "magtkd-demo")
    assert Path(result["model_dir"]) == tmp_path / "magtkd-demo" / "run" / "model"
    metrics = result["stage_metrics"]
    chance = 100 / 7
    for split in ("validation", "test"):
        best_unimodal = max(metrics[stage][split]["weighted_f1"] for stage in metrics if stage != "fusion")
        assert metrics["fusion"][split]["weighted_f1"] >= best_unimodal
        assert metrics["fusion"][split]["weighted_f1"] >= 4 * chance
    print_demo_report(result)
    report = capsys.readouterr()
    assert "fused (MAGTKD)" in report.out and "is at least as good as the best single head" in report.out
    table = report.out.split("true       emotion")[1]
    assert "Someone also left rotten eggs by the door." in table and len(result["predictions"]) == 7
    assert "Loading weights" not in report.err
    assert "magtkd-hf sample conversations" in (Path(result["model_dir"]) / "README.md").read_text()

    predicted = []
    for arguments, stdin in command_lines(with_input=True):
        if arguments[0] in ("predict", "check-data", "stream", "evaluate"):
            if stdin:
                monkeypatch.setattr("sys.stdin", open(stdin, encoding="utf-8"))
            assert cli(arguments) == 0, arguments
            predicted.append(capsys.readouterr().out)
    # the clips, the cuts of one video (--json), the test split to a file, the stream, the online evaluation, the
    # sample's data check
    assert len(predicted) == 6
    streamed = [json.loads(line) for line in predicted[3].splitlines()]
    assert len(streamed) == 7 and all(row["context"] == "prefix" for row in streamed)
    assert "weighted F1" in predicted[4] or "weighted_f1" in predicted[4]
    table = predicted[0]
    cuts = json.loads(predicted[1])
    from_clips = [line.split()[-2] for line in table.splitlines()[1:]]
    assert [row["label"] for row in cuts] == from_clips  # the same conversation, cut out of one video
    assert sum(a == b for a, b in zip(from_clips, result["true_emotions"])) >= 5
    split_rows = [json.loads(line) for line in open(tmp_path / "predictions.jsonl", encoding="utf-8")]
    assert len(split_rows) == 7 and [row["true_label"] for row in split_rows] == list(result["true_emotions"])
    assert [row["label"] for row in split_rows] == from_clips  # the same conversation, read from the release folder

    for block in code_blocks("python"):
        if "push_to_hub(" in block:
            continue
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    assert (tmp_path / "my-fusion" / "model.safetensors").exists()
    assert (tmp_path / "finetuned" / "model.safetensors").exists()


def test_import_and_help_leave_the_heavy_modules_unimported():
    """`import magtkd_hf` and building the CLI's parser (`magtkd-hf --help`) do not import the modeling, processing,
    pipeline, dataset or training libraries (benchmarks/startup.py measures the time); using a model class does."""
    import subprocess
    import sys

    heavy = ["transformers.modeling_utils", "transformers.processing_utils", "transformers.pipelines", "datasets",
             "accelerate", "sklearn", "av", "decord", "matplotlib", "magtkd_hf.training.loop"]
    code = (
        "import sys, magtkd_hf\nfrom magtkd_hf.apps.cli import build_parser\nbuild_parser()\n"
        f"print([m for m in {heavy!r} if m in sys.modules])\n"
        "magtkd_hf.MagtkdForEmotionRecognition\nprint('transformers.modeling_utils' in sys.modules)\n"
    )
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert printed[:2] == ["[]", "True"]
