"""One CLI convention: dashed option names (underscore spellings of `train`'s settings still parse, unlisted), every
option with its help, defaults written once, `--debug` documented; `predict --sample` for the shipped sample."""

import json
import re

import pytest
import torch
from tiny_magtkd import tiny_config, tiny_processor

from magtkd_hf import MagtkdForEmotionRecognition
from magtkd_hf.apps.cli import build_parser, main

COMMANDS = ["demo", "predict", "fusion-demo", "convert-released", "import-released-features", "check-data", "train",
            "cache-frames", "stream", "evaluate"]


def help_text(capsys, command) -> str:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    return capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_is_dashed_helped_and_defaults_are_said_once(monkeypatch, capsys, command):
    monkeypatch.setenv("COLUMNS", "200")
    text = help_text(capsys, command)
    lines = text.splitlines()
    options = [number for number, line in enumerate(lines) if re.match(r"^  -", line)]
    assert options, text
    for number in options:
        invocation = lines[number].strip().split("  ")[0]
        assert not re.search(r"--\w*_", invocation), lines[number]
        helped = len(lines[number].strip()) > len(invocation) or re.match(r"^ {20,}\S", lines[number + 1])
        assert helped, f"no help: {lines[number]}"
    for start, end in zip(options, [*options[1:], len(lines)]):
        assert " ".join(lines[start:end]).count("(default") <= 1, lines[start:end]  # not ours and the formatter's
    assert "--debug" in text and "MAGTKD_HF_DEBUG" in text


def test_underscore_spellings_of_train_settings_still_parse():
    parser = build_parser()
    assert parser.parse_args(["train", "all", "--output_dir", "a"]).output_dir == "a"
    assert parser.parse_args(["train", "all", "--output-dir", "a", "--no_fused_optimizer"]).fused_optimizer is False


def test_the_negative_flag_has_its_own_help(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    assert re.search(r"--no-fused-optimizer +turn --fused-optimizer off", help_text(capsys, "train"))


def test_debug_works_before_or_after_the_command():
    parser = build_parser()
    assert parser.parse_args(["--debug", "demo"]).debug and parser.parse_args(["demo", "--debug"]).debug
    assert not parser.parse_args(["demo"]).debug


def test_predict_takes_input_or_sample_not_both_nor_neither(tmp_path, capsys):
    for arguments in (["predict", "MODEL"], ["predict", "MODEL", "c.json", "--sample"]):
        assert main(arguments) == 1
        assert "give INPUT (a CONVERSATION.json or a dataset)" in capsys.readouterr().err


def test_predict_sample_predicts_the_shipped_conversation_from_any_folder(tmp_path, monkeypatch, capsys):
    from magtkd_hf.datasets_scripts.sample import SAMPLE_CONVERSATIONS

    processor = tiny_processor()
    torch.manual_seed(0)
    MagtkdForEmotionRecognition(tiny_config(processor)).save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["predict", "model", "--sample", "--json", "--dtype", "float32"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["text"] for row in rows] == [text for _, text, _ in SAMPLE_CONVERSATIONS["test"][0]]
    assert all(row["modalities"] == ["text", "audio", "video"] for row in rows)
