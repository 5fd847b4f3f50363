"""The README's commands and code stay true: every `magtkd-hf` command line parses with the real CLI, the main job
(`magtkd-hf demo`), `predict` and `check-data` are run as written, and every Python block runs (the Hub push is
exercised offline in tests/test_hub.py instead)."""

import csv
import json
import os
import re
import shlex
from pathlib import Path

import pytest

from magtkd_hf.apps.cli import build_parser
from magtkd_hf.apps.cli import main as cli
from magtkd_hf.apps.demo import print_demo_report, run_demo
from magtkd_hf.datasets_scripts.sample import sample_meld_rows

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
    # the clips, the cuts of one video (--json), the test split to a file, the episode's subtitles to files, the
    # stream, the online evaluation, the sample's data check
    assert len(predicted) == 7
    streamed = [json.loads(line) for line in predicted[4].splitlines()]
    assert len(streamed) == 7 and all(row["context"] == "prefix" for row in streamed)
    assert "weighted F1" in predicted[5] or "weighted_f1" in predicted[5]
    episode = list(csv.DictReader(open(tmp_path / "episode.csv", encoding="utf-8")))
    truth = [row["Emotion"] for split in ("test", "validation") for row in sample_meld_rows()[split]
             if row["Dialogue_ID"] == "0"]
    assert [int(row["cue"]) for row in episode] == [*range(1, 8), *range(9, 16)]
    assert sum(row["label"] == emotion for row, emotion in zip(episode, truth)) >= 10
    assert (tmp_path / "episode.emotions.srt").read_text().count("[") == 15  # 14 predictions + [door slams]
    assert all((tmp_path / name).stat().st_size > 1000 for name in ("timeline.png", "report.html"))
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
    assert (tmp_path / "my-fusion.pt2").exists()  # the exported fusion


def test_import_registers_every_auto_class_and_the_task_without_import_hooks():
    """`import magtkd_hf` registers eagerly, as transformers' own models are: no `sys.meta_path` finder, no side effect
    left to a constructor (benchmarks/startup.py measures what the import costs)."""
    import sys

    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_MAPPING
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING
    from transformers.pipelines import PIPELINE_REGISTRY

    import magtkd_hf

    assert not [finder for finder in sys.meta_path if type(finder).__module__.startswith("magtkd_hf")]
    for config_class, model_class in magtkd_hf.MODEL_CLASSES.items():
        assert CONFIG_MAPPING[config_class.model_type] is config_class and MODEL_MAPPING[config_class] is model_class
    assert PROCESSOR_MAPPING[magtkd_hf.MagtkdConfig] is magtkd_hf.MagtkdProcessor
    assert magtkd_hf.PIPELINE_TASK in PIPELINE_REGISTRY.get_supported_tasks()
