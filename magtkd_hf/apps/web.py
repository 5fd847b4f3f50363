"""
The web demo (Gradio, `pip install -e ".[app]"`): a video with its subtitles, or a conversation JSON with its media,
in; the table of emotions, the emotion timeline, the annotated subtitles and the HTML report out. `magtkd-hf app
MODEL_DIR` serves it on this machine; `app.py` at the repository root is the same demo as a Hugging Face Space runs
it, the model named by the `MAGTKD_MODEL` environment variable.

Predictions go through the same functions as `magtkd-hf predict` (`subtitles.read_subtitled_video`/`predict_cues`,
`inference.read_conversation_file`/`predict_emotions`), so the page shows the command's rows. Bad input (a missing
file, bad subtitles, a conversation naming a file that was not uploaded) gets its one-line message on the page.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from .. import inference, subtitles, timeline
from ..datasets_scripts.sample import EPISODE_SUBTITLES_NAME, EPISODE_VIDEO_NAME, SAMPLE_MELD_ROOT

MODEL_ENV = "MAGTKD_MODEL"
SAMPLE_VIDEO = SAMPLE_MELD_ROOT / "conversations" / EPISODE_VIDEO_NAME
SAMPLE_SUBTITLES = SAMPLE_MELD_ROOT / "conversations" / EPISODE_SUBTITLES_NAME
MAX_UPLOAD = "2gb"  # an hour of 720p video
KEEP_RESULTS_SECONDS = 3600  # each request's files (timeline, subtitles, report) are deleted an hour later
MEDIA_KEYS = ("video", "audio")
# What a user's input or machine can cause; the page shows the message (anything else: Gradio's generic error).
USER_ERRORS = (ValueError, OSError, RuntimeError, MemoryError)
INSTALL_HINT = 'the web demo needs Gradio: pip install "torch==2.13.0" -e ".[app]"'


def model_from_environment() -> str:
    """The model folder (or Hub model id) named by `MAGTKD_MODEL`, as a Space sets it."""
    name = os.environ.get(MODEL_ENV, "").strip()
    if not name:
        raise SystemExit(f"Set {MODEL_ENV} to a folder saved by magtkd-hf (e.g. magtkd-demo/run/model, which "
                         "`magtkd-hf demo` leaves) or a Hub model id.")
    return name


def local_model_folder(name: str) -> str:
    """`name` if it is a path here, else the Hub model `name` downloaded (a Space names its model so)."""
    if Path(name).exists() or name.count("/") != 1 or name.startswith((".", "/")):
        return name
    from huggingface_hub import snapshot_download

    return snapshot_download(name)


class EmotionApp:
    """The model, loaded once, and the page's two actions; each returns (message, table, timeline PNG, annotated
    subtitles, HTML report), the files in a folder of their own (kept `KEEP_RESULTS_SECONDS`)."""

    def __init__(self, model_dir: str, device: str = "cpu", dtype: str = "native", trust_remote_code: bool = False):
        self.model_dir = local_model_folder(model_dir)
        self.model, self.processor = inference.load_emotion_model(self.model_dir, device, trust_remote_code, dtype)
        self.results = Path(tempfile.mkdtemp(prefix="magtkd-app-"))
        self.dtype = str(self.model.dtype).removeprefix("torch.")

    def predict_video(self, video: str | None, subtitle_file: str | None, speaker: str | None = None,
                      max_gap: float | None = None, max_utterances: float | None = None):
        """A video and its SRT/WebVTT subtitles, as `magtkd-hf predict VIDEO --subtitles FILE`."""
        if not video or not subtitle_file:
            return _failure("Upload a video and its subtitles (.srt or .vtt), or run the sample.")
        settings = {"subtitles": Path(subtitle_file).name, "speaker": (speaker or "").strip() or None,
                    "max_gap": subtitles.DEFAULT_MAX_GAP if max_gap is None else float(max_gap),
                    "max_utterances": subtitles.DEFAULT_MAX_UTTERANCES if max_utterances is None else int(max_utterances)}
        try:
            conversations = subtitles.read_subtitled_video(video, subtitle_file, settings["speaker"],
                                                           settings["max_gap"], settings["max_utterances"])
            rows = subtitles.predict_cues(self.model, self.processor, conversations)
            folder = self._result_folder()
            annotated = folder / f"{Path(subtitle_file).stem}.emotions{Path(subtitle_file).suffix}"
            subtitles.annotate_subtitles(subtitle_file, rows, annotated)
            return self._success(rows, folder, Path(video).name, settings, annotated,
                                 f"{len(rows)} spoken cues in {len(conversations)} conversations.")
        except USER_ERRORS as error:
            return _failure(str(error))

    def predict_sample(self):
        return self.predict_video(str(SAMPLE_VIDEO), str(SAMPLE_SUBTITLES))

    def predict_conversation(self, files: list[str] | None):
        """A conversation JSON uploaded with the media files it names (by file name), as `magtkd-hf predict
        CONVERSATION.json`. Its utterances become the table's rows, numbered from 1; the timeline needs every
        utterance's `start` and `end`."""
        json_files = [file for file in files or [] if Path(file).suffix == ".json"]
        if len(json_files) != 1:
            return _failure("Upload one conversation .json file together with the video and audio files it names.")
        try:
            folder = self._result_folder()
            for file in files:
                shutil.copyfile(file, folder / Path(file).name)
            conversation = inference.read_conversation_file(folder / Path(json_files[0]).name)
            _check_media_uploaded(conversation, folder, Path(json_files[0]).name)
            rows = inference.predict_emotions(self.model, self.processor, conversation)
            rows = [{"cue": number, "start": utterance.get("start"), "end": utterance.get("end"), **row}
                    for number, (utterance, row) in enumerate(zip(conversation, rows), start=1)]
            if any(row["start"] is None or row["end"] is None for row in rows):
                return (f"{len(rows)} utterances. No timeline: it needs every utterance's start and end (seconds).",
                        _table(rows), None, None, None)
            return self._success(rows, folder, Path(json_files[0]).name, {}, None, f"{len(rows)} utterances.")
        except USER_ERRORS as error:
            return _failure(str(error))

    def _success(self, rows, folder: Path, title: str, settings: dict, annotated: Path | None, message: str):
        picture = timeline.timeline_png(rows, folder / "timeline.png", title=title)
        report = timeline.html_report(rows, folder / "report.html", {"model": self.model_dir, "input": title},
                                      {**settings, "dtype": self.dtype})
        return message, _table(rows), str(picture), None if annotated is None else str(annotated), str(report)

    def _result_folder(self) -> Path:
        """A new folder for one request's files; the folders of requests older than `KEEP_RESULTS_SECONDS` removed."""
        for old in self.results.iterdir():
            if time.time() - old.stat().st_mtime > KEEP_RESULTS_SECONDS:
                shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(dir=self.results))


def _check_media_uploaded(conversation: list[dict], folder: Path, name: str) -> None:
    """The page reads only the uploaded files: a media path elsewhere (absolute, or in a sub-folder) is refused."""
    for number, utterance in enumerate(conversation, start=1):
        for key in MEDIA_KEYS:
            if key in utterance and Path(utterance[key]).parent != folder:
                raise ValueError(f"{name}: utterance {number}: {key} {utterance[key]!r} is not among the uploaded "
                                 "files: name each file by its file name alone and upload it with the JSON.")


def _table(rows: list[dict]) -> list[list]:
    return [[row["cue"], row["start"], row["end"], row["speaker"], row["text"], row["label"], round(row["score"], 3)]
            for row in rows]


def _failure(message: str):
    return f"**Error:** {message}", [], None, None, None


def build_demo(app: EmotionApp):
    """The page: a sample button, a video + subtitles tab, a conversation JSON tab; the outputs below them."""
    try:
        import gradio as gr
    except ImportError:
        raise SystemExit(INSTALL_HINT) from None
    with gr.Blocks(title="magtkd-hf: emotions in a conversation", analytics_enabled=False,
                   delete_cache=(KEEP_RESULTS_SECONDS, KEEP_RESULTS_SECONDS)) as demo:
        gr.Markdown(f"# Emotions in a conversation\nMAGTKD ({app.model_dir}): the emotion of every utterance from "
                    "its words, voice and face. Run the sample, or upload a video with its subtitles.")
        sample = gr.Button("Run the sample (48 s, 15 cues)", variant="primary", elem_id="sample")
        with gr.Tab("Video and subtitles"):
            video = gr.File(label="video", file_types=["video"], elem_id="video")
            subtitle_file = gr.File(label="subtitles (.srt or .vtt)", file_types=[".srt", ".vtt"], elem_id="subtitles")
            with gr.Row():
                speaker = gr.Textbox(label="speaker of cues without 'NAME:' or <v NAME>", elem_id="speaker")
                max_gap = gr.Number(subtitles.DEFAULT_MAX_GAP, label="new conversation after a gap of (s)")
                max_utterances = gr.Number(subtitles.DEFAULT_MAX_UTTERANCES, precision=0,
                                           label="at most cues per conversation")
            predict_video = gr.Button("Predict", elem_id="predict-video")
        with gr.Tab("Conversation JSON"):
            files = gr.File(label="conversation .json and the media it names", file_count="multiple",
                            elem_id="conversation")
            predict_conversation = gr.Button("Predict", elem_id="predict-conversation")
        message = gr.Markdown(elem_id="message")
        table = gr.Dataframe(headers=list(timeline.TABLE_COLUMNS), label="emotions", interactive=False,
                             elem_id="table")
        picture = gr.Image(label="timeline", type="filepath", interactive=False, elem_id="timeline")
        with gr.Row():
            annotated = gr.File(label="annotated subtitles", interactive=False, elem_id="annotated")
            report = gr.File(label="report (HTML)", interactive=False, elem_id="report")
        outputs = [message, table, picture, annotated, report]
        sample.click(app.predict_sample, outputs=outputs)
        predict_video.click(app.predict_video, [video, subtitle_file, speaker, max_gap, max_utterances], outputs)
        predict_conversation.click(app.predict_conversation, files, outputs)
    return demo


def serve(demo, host: str | None = None, port: int | None = None, block: bool = True) -> None:
    """Gradio's server; host None: Gradio's choice (127.0.0.1, or $GRADIO_SERVER_NAME, which a Space sets)."""
    demo.launch(server_name=host, server_port=port, max_file_size=MAX_UPLOAD, ssr_mode=False, quiet=not block,
                prevent_thread_lock=not block)


__all__ = ["EmotionApp", "MODEL_ENV", "build_demo", "model_from_environment", "serve"]
