"""`magtkd-hf predict --output`: a resume that notices a changed input, every output check before any work, and one
run per output at a time."""

import json
import os
import re
import signal
import subprocess
import sys

import pytest
from tiny_magtkd import save_tiny_end_to_end

from magtkd_hf.apps.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_end_to_end(tmp_path_factory.mktemp("outputs") / "model")


def write_conversations(path, texts):
    """Text-only conversations, one per line, two utterances each."""
    path.write_text("".join(json.dumps([{"speaker": "A", "text": text}, {"speaker": "B", "text": text + " too"}]) + "\n"
                            for text in texts))
    return path


def predict(model_dir, source, output, *extra):
    return main(["predict", str(model_dir), str(source), "--output", str(output), "--max-utterances", "2",
                 "--dtype", "float32", *extra])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return next(line for line in err.splitlines() if line.startswith("magtkd-hf predict: error: "))


def test_a_changed_input_is_refused_naming_it_and_overwrite_starts_afresh(model_dir, tmp_path, monkeypatch, capsys):
    from magtkd_hf import predict_dataset as module

    source, output = write_conversations(tmp_path / "convs.jsonl", ["old one", "old two", "old three"]), tmp_path / "out.jsonl"
    calls, predict_batch = [], module.predict_batch

    def killed_at_the_second_batch(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return predict_batch(*args)

    monkeypatch.setattr(module, "predict_batch", killed_at_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        predict(model_dir, source, output)
    monkeypatch.setattr(module, "predict_batch", predict_batch)
    write_conversations(source, ["new one", "new two", "new three", "new four"])  # same path, other content
    assert predict(model_dir, source, output) == 1
    error = one_error_line(capsys)
    assert "another prediction run" in error and "input_sha256" in error and "input_conversations: 3 there, 4 now" in error
    assert not output.exists()
    assert predict(model_dir, source, output, "--overwrite") == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 8 and all(row["text"].startswith("new") for row in rows)  # never a merge of two inputs


def test_an_unchanged_input_resumes(model_dir, tmp_path, monkeypatch, capsys):
    from magtkd_hf import predict_dataset as module

    source, output = write_conversations(tmp_path / "convs.jsonl", ["one", "two", "three"]), tmp_path / "out.jsonl"
    original = module.predict_batch
    monkeypatch.setattr(module, "predict_batch", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        predict(model_dir, source, output)
    monkeypatch.setattr(module, "predict_batch", original)
    assert predict(model_dir, source, output) == 0 and len(output.read_text().splitlines()) == 6


@pytest.mark.parametrize("case", ["folder", "exists", "no parent", "read-only"])
def test_the_output_is_checked_before_any_work(model_dir, tmp_path, monkeypatch, capsys, case):
    import magtkd_hf.apps.cli as cli

    source = write_conversations(tmp_path / "convs.jsonl", ["hello"])
    output = {"folder": tmp_path / "out.jsonl", "exists": tmp_path / "out.jsonl",
              "no parent": tmp_path / "gone" / "out.jsonl", "read-only": tmp_path / "out.jsonl"}[case]
    if case == "folder":
        output.mkdir()
    elif case == "exists":
        output.write_text("")
    elif case == "read-only":  # tests run as root here, for whom chmod does not remove the right
        monkeypatch.setattr("magtkd_hf.prediction_files.os.access", lambda *args: False)
    monkeypatch.setattr(cli, "read_prediction_input", lambda *args: pytest.fail("read the input before the checks"))
    assert predict(model_dir, source, output, *(["--overwrite"] if case == "folder" else [])) == 1
    expected = {"folder": "out.jsonl is a folder", "exists": "out.jsonl exists: pass --overwrite",
                "no parent": "the folder .*gone does not exist", "read-only": "is not writable"}[case]
    assert re.search(expected, one_error_line(capsys))
    assert [path.name for path in tmp_path.rglob("*") if path.suffix in (".tmp", ".partial", ".lock")] == []


def test_a_second_run_is_refused_naming_the_first_and_a_dead_ones_lock_is_taken_over(model_dir, tmp_path, capsys):
    source, output = write_conversations(tmp_path / "convs.jsonl", ["hello"]), tmp_path / "out.jsonl"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from magtkd_hf.prediction_files import "
         "output_lock\nwith output_lock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(600)",
         str(output)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert predict(model_dir, source, output) == 1
        assert f"being written by another run (process {holder.pid}" in one_error_line(capsys)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert (tmp_path / "out.jsonl.lock").exists()  # left behind by the killed run: stale
    assert predict(model_dir, source, output) == 0
    assert len(output.read_text().splitlines()) == 2 and not (tmp_path / "out.jsonl.lock").exists()
