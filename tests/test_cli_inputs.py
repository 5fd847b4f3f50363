"""Every input the CLI reads is checked before work, and a bad one is one line naming it (no traceback): FIFOs and
devices, invalid Unicode, JSON nested too deep, mixed speaker kinds, a folder without a processor, a device torch
cannot use."""

import json
import os
import signal

import pytest
import torch
from tiny_magtkd import save_tiny_end_to_end, tiny_fusion_config

from magtkd_hf import MagtkdFusionModel
from magtkd_hf.apps.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_end_to_end(tmp_path_factory.mktemp("inputs") / "model")


@pytest.fixture
def within_ten_seconds():
    """A check that blocks (reading a FIFO) fails the test instead of hanging it."""
    def timed_out(*_):
        raise TimeoutError("blocked for 10 s")

    previous = signal.signal(signal.SIGALRM, timed_out)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def error_of(capsys, arguments) -> str:
    assert main(arguments) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.splitlines()[0]


@pytest.mark.parametrize("kind", ["fifo", "device"])
@pytest.mark.parametrize("output", [False, True])
def test_a_fifo_or_device_is_refused_at_once_naming_what_it_is(model_dir, tmp_path, capsys, within_ten_seconds, kind,
                                                                output):
    if kind == "fifo":
        source = tmp_path / "conversation.json"
        os.mkfifo(source)
    else:
        source = "/dev/zero"
    arguments = ["predict", str(model_dir), str(source)] + (["--output", str(tmp_path / "out.jsonl")] if output else [])
    what = "FIFO (named pipe)" if kind == "fifo" else "character device"
    assert error_of(capsys, arguments) == f"magtkd-hf predict: error: {source} is a {what}, not a regular file."


def test_a_fifo_given_for_any_file_option_is_refused(tmp_path, capsys, within_ten_seconds):
    fifo = tmp_path / "train.pkl"
    os.mkfifo(fifo)
    assert f"{fifo} is a FIFO" in error_of(capsys, ["import-released-features", f"train={fifo}", "--output", "x"])


def conversation_file(tmp_path, utterances, name="conversation.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"utterances": utterances}))
    return path


@pytest.mark.parametrize("field", ["text", "speaker"])
def test_a_lone_surrogate_is_refused_naming_file_utterance_and_field(model_dir, tmp_path, capsys, field):
    utterances = [{"speaker": "A", "text": "hi"}, {"speaker": "B", "text": "fine"}]
    utterances[1][field] = "bad \ud800 half"  # json.dumps writes the legal escape \\ud800
    source = conversation_file(tmp_path, utterances)
    assert error_of(capsys, ["predict", str(model_dir), str(source)]) == (
        f"magtkd-hf predict: error: {source}: utterance 1: '{field}' is not valid Unicode: a lone surrogate "
        "'\\ud800' at character 4."
    )


@pytest.mark.parametrize("name", ["deep.json", "deep.jsonl"])
def test_json_nested_too_deep_is_refused_naming_the_file(model_dir, tmp_path, capsys, name):
    source = tmp_path / name
    source.write_text("[" * 200_000 + "]" * 200_000 + "\n")
    output = ["--output", str(tmp_path / "out.jsonl")] if source.suffix == ".jsonl" else []
    where = f"{source}, line 1" if output else str(source)
    assert error_of(capsys, ["predict", str(model_dir), str(source), *output]).startswith(
        f"magtkd-hf predict: error: {where}: JSON nested too deeply")


def test_speakers_one_and_string_one_are_refused_not_merged(model_dir, tmp_path, capsys):
    source = conversation_file(tmp_path, [{"speaker": 1, "text": "hi"}, {"speaker": "1", "text": "hello"}])
    assert error_of(capsys, ["predict", str(model_dir), str(source)]) == (
        f"magtkd-hf predict: error: {source}: utterance 1: speaker '1' is a name but utterance 0's (1) is an integer "
        "id; use one kind in a conversation."
    )


def test_a_fusion_only_folder_says_it_has_no_processor_and_what_to_give(tmp_path, capsys):
    MagtkdFusionModel(tiny_fusion_config()).save_pretrained(tmp_path / "fusion")
    capsys.readouterr()  # the saving bar
    source = conversation_file(tmp_path, [{"speaker": "A", "text": "hi"}])
    error = error_of(capsys, ["predict", str(tmp_path / "fusion"), str(source)])
    assert "no processor (processor_config.json)" in error and "magtkd-hf evaluate FOLDER --features" in error


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without a usable GPU")
def test_a_cuda_device_without_cuda_is_one_line(model_dir, tmp_path, capsys):
    source = conversation_file(tmp_path, [{"speaker": "A", "text": "hi"}])
    for command in (["predict", str(model_dir), str(source)], ["stream", str(model_dir)]):
        error = error_of(capsys, [*command, "--device", "cuda"])
        assert error.startswith(f"magtkd-hf {command[0]}: error: --device cuda: this torch") and "--device cpu" in error
    assert "not a torch device" in error_of(capsys, ["predict", str(model_dir), str(source), "--device", "gpu"])


def test_debug_shows_the_traceback(model_dir, tmp_path):
    source = conversation_file(tmp_path, [{"speaker": 1, "text": "hi"}, {"speaker": "1", "text": "hello"}])
    with pytest.raises(ValueError, match="use one kind"):
        main(["predict", str(model_dir), str(source), "--debug"])
