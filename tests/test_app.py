"""The web demo end to end in a real browser: `magtkd-hf app MODEL` started on localhost, driven by headless Chromium
(Playwright with Debian's `chromium`, which .ci/run installs). The sample's table equals `magtkd-hf predict` on the
same video and subtitles, the timeline image is shown, the annotated subtitles download equals the command's, and
bad or missing input shows its one-line message on the page."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from tiny_magtkd import save_tiny_end_to_end

from magtkd_hf.apps.cli import main
from magtkd_hf.apps.web import SAMPLE_SUBTITLES, SAMPLE_VIDEO, EmotionApp
from magtkd_hf.datasets_scripts.sample import SAMPLE_MELD_ROOT

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's `chromium` (installed by .ci/run)")
STARTUP_SECONDS = 240  # importing Gradio takes 20-40 s on 2 busy cores
WAIT_MS = 120_000
OVERLAPPING = "1\n00:00:01,000 --> 00:00:02,000\nAnn: hello\n\n2\n00:00:01,500 --> 00:00:03,000\nBob: hi\n"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_end_to_end(tmp_path_factory.mktemp("app") / "model")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_serving(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"`magtkd-hf app` exited with {server.returncode}: {server.stdout.read()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(1)
    pytest.fail(f"`magtkd-hf app` did not serve {url} within {STARTUP_SECONDS} s")


@pytest.fixture(scope="module")
def app_url(model_dir, tmp_path_factory):
    port = free_port()
    environment = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
                   "GRADIO_TEMP_DIR": str(tmp_path_factory.mktemp("gradio"))}
    server = subprocess.Popen([sys.executable, "-m", "magtkd_hf", "app", str(model_dir), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(url, server)
        yield url
    finally:
        server.terminate()
        server.wait(30)


@pytest.fixture()
def page(app_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1280, "height": 1600})
        page.goto(app_url)
        yield page
        browser.close()


def shown_rows(page) -> list[list[str]]:
    table = page.locator("#table")
    count = table.locator('[role="gridcell"][data-col="0"]').count()
    return [[table.locator(f'[data-testid="cell-{row}-{column}"]').inner_text() for column in range(7)]
            for row in range(count)]


def expected_rows(rows: list[dict]) -> list[list[str]]:
    """The command's rows as the page shows them: cue, start, end, speaker, text, emotion, probability (3 places)."""
    return [[str(row["cue"]), f"{row['start']:g}", f"{row['end']:g}", row["speaker"], row["text"], row["label"],
             f"{round(row['score'], 3):g}"] for row in rows]


def wait_for_message(page, text: str) -> str:
    from playwright.sync_api import expect

    expect(page.locator("#message")).to_contain_text(text, timeout=WAIT_MS)
    return page.locator("#message").inner_text()


def upload(page, element_id: str, files) -> None:
    page.locator(f"#{element_id} input[type=file]").set_input_files(files)
    from playwright.sync_api import expect

    for file in files if isinstance(files, list) else [files]:  # uploaded: the component lists it (name, extension)
        expect(page.locator(f"#{element_id}")).to_contain_text(Path(file).stem, timeout=WAIT_MS)


@needs_chromium
def test_the_sample_in_the_browser_shows_the_rows_of_predict_the_timeline_and_the_annotated_subtitles(
        page, model_dir, tmp_path):
    rows_file, srt_file = tmp_path / "rows.jsonl", tmp_path / "episode.srt"
    assert main(["predict", str(model_dir), str(SAMPLE_VIDEO), "--subtitles", str(SAMPLE_SUBTITLES),
                 "--output", str(rows_file), "--output", str(srt_file)]) == 0
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()]

    page.click("#sample")
    assert wait_for_message(page, "cues in") == "14 spoken cues in 2 conversations."
    assert shown_rows(page) == expected_rows(rows)
    timeline_size = page.eval_on_selector("#timeline img", "image => [image.naturalWidth, image.naturalHeight]")
    assert timeline_size[0] >= 800 and timeline_size[1] > 100
    download = page.locator("#annotated a").first.get_attribute("href")
    assert page.request.get(download).body() == srt_file.read_bytes()
    assert "Traceback" not in page.content()


@needs_chromium
def test_a_bad_upload_shows_its_message_on_the_page(page, tmp_path):
    bad = tmp_path / "bad.srt"
    bad.write_text(OVERLAPPING, encoding="utf-8")
    page.click("#predict-video")
    assert wait_for_message(page, "Error") == "Error: Upload a video and its subtitles (.srt or .vtt), or run the sample."
    upload(page, "video", str(SAMPLE_VIDEO))
    upload(page, "subtitles", str(bad))
    page.click("#predict-video")
    message = wait_for_message(page, "overlap")
    assert message.startswith("Error: ") and "bad.srt: cue 2 starts at 1.500 s, before cue 1 ends" in message
    assert shown_rows(page) == [] and "Traceback" not in page.content()


@needs_chromium
def test_a_conversation_json_uploaded_with_its_video(page, model_dir, capsys):
    folder = SAMPLE_MELD_ROOT / "conversations"
    assert main(["predict", str(model_dir), str(folder / "test_conversation_cuts.json"), "--json"]) == 0
    rows = [{"cue": number, "start": utterance["start"], "end": utterance["end"], **row} for number, (utterance, row)
            in enumerate(zip(json.loads((folder / "test_conversation_cuts.json").read_text())["utterances"],
                             json.loads(capsys.readouterr().out)), start=1)]
    page.get_by_role("tab", name="Conversation JSON").click()
    upload(page, "conversation", [str(folder / "test_conversation_cuts.json"), str(folder / "test_conversation.mp4")])
    page.click("#predict-conversation")
    assert wait_for_message(page, "utterances") == "7 utterances."
    assert shown_rows(page) == expected_rows(rows)


def test_a_conversation_naming_a_file_not_uploaded_is_refused(model_dir, tmp_path):
    """The page reads only what was uploaded: a media path elsewhere on the server is refused, never read."""
    app = EmotionApp(str(model_dir))
    conversation = tmp_path / "talk.json"
    conversation.write_text(json.dumps([{"speaker": "Ann", "text": "hi", "video": str(SAMPLE_VIDEO)}]))
    message, table, *files = app.predict_conversation([str(conversation)])
    assert message == (f"**Error:** talk.json: utterance 1: video {str(SAMPLE_VIDEO)!r} is not among the uploaded "
                       "files: name each file by its file name alone and upload it with the JSON.")
    assert table == [] and files == [None, None, None]
    message, *_ = app.predict_conversation([str(SAMPLE_VIDEO)])
    assert message.startswith("**Error:** Upload one conversation .json file")


def test_app_py_builds_the_page_from_the_environment_as_a_space_does(model_dir, monkeypatch):
    """The Spaces entry point: `demo` at module level, its model named by MAGTKD_MODEL; unset, one line says so."""
    import runpy

    import gradio

    app_py = str(Path(__file__).resolve().parents[1] / "app.py")
    monkeypatch.delenv("MAGTKD_MODEL", raising=False)
    with pytest.raises(SystemExit, match="^Set MAGTKD_MODEL to a folder saved by magtkd-hf"):
        runpy.run_path(app_py)
    monkeypatch.setenv("MAGTKD_MODEL", str(model_dir))
    demo = runpy.run_path(app_py)["demo"]  # not __main__: built, not launched
    assert isinstance(demo, gradio.Blocks) and demo.title == "magtkd-hf: emotions in a conversation"
