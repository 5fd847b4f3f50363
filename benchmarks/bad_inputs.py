"""What a user gets for every kind of bad input: nothing silent, nothing executed (a script, not a test).

Builds, in a temporary folder, a tiny random-weight model folder (`magtkd_hf.apps.tiny`), a short MP4 clip, and then
one bad input per case: conversation files, damaged model folders, hostile feature pickles, damaged MELD-layout
release folders, and bad subtitle files, settings and videos for `predict VIDEO --subtitles FILE`. Each case runs
`magtkd_hf.apps.cli.main(argv)` in-process with stdout and stderr captured and reports the exit status, whether the
refusal was clean (exit 1, or 2 for usage and label-file faults; no "Traceback"; the message names the file, and the
utterance, cue or tensor where relevant), the seconds to refuse and the message (the first line of stderr; for
`check-data`, which reports on stdout, the report line naming the fault).
The pickle bombs are refused 5 times each and the median is reported. Offline: HF_HUB_OFFLINE=1 and a temporary
HF_HOME, removed at the end.

Usage: python benchmarks/bad_inputs.py [--markdown FILE]
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import tempfile

WORK = tempfile.mkdtemp(prefix="magtkd-bad-inputs-")
atexit.register(shutil.rmtree, WORK, True)  # removed however the script ends (an import error included)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = os.path.join(WORK, "hf-home")  # before transformers is imported

import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import pickle  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pysubs2  # noqa: E402
import soundfile  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from magtkd_hf import MagtkdAudioConfig, MagtkdConfig, MagtkdForEmotionRecognition, MagtkdFusionConfig  # noqa: E402
from magtkd_hf import MagtkdFusionModel  # noqa: E402
from magtkd_hf import MagtkdTextConfig, MagtkdVideoConfig  # noqa: E402
from magtkd_hf.apps.cli import main  # noqa: E402
from magtkd_hf.apps.tiny import TINY_HEADS, TINY_HIDDEN, SMALL_TALK, tiny_audio_config, tiny_processor  # noqa: E402
from magtkd_hf.apps.tiny import tiny_text_config, tiny_video_config, train_tiny_roberta_tokenizer  # noqa: E402
from magtkd_hf.datasets_scripts.synthetic import MELD_CSV_COLUMNS, write_meld_tree, write_mp4  # noqa: E402

ROOT = Path(WORK)
BOMB_REPEATS = 5
UTTERANCE_1 = ("utterance 1", "utterance #1")  # the two ways messages number an utterance
GOOD = {"speaker": "Ann", "text": "how are you doing today", "video": "clip.mp4"}


# --- shared inputs ---------------------------------------------------------------------------------------------------


def build_model_folder(folder: Path) -> Path:
    """The tiny end-to-end model (MELD preset) and its processor, saved as `magtkd-hf train` saves them."""
    processor = tiny_processor(train_tiny_roberta_tokenizer(list(SMALL_TALK) * 4, 300))
    stages = {
        "text_config": MagtkdTextConfig.from_preset(
            "meld", encoder_config=tiny_text_config(len(processor.tokenizer)), feature_size=TINY_HIDDEN),
        "audio_config": MagtkdAudioConfig.from_preset("meld", encoder_config=tiny_audio_config()),
        "video_config": MagtkdVideoConfig.from_preset("meld", encoder_config=tiny_video_config()),
    }
    fusion = MagtkdFusionConfig.from_preset(
        "meld", hidden_size=TINY_HIDDEN, num_attention_heads=TINY_HEADS, intermediate_size=TINY_HIDDEN)
    torch.manual_seed(0)
    MagtkdForEmotionRecognition(MagtkdConfig(**stages, fusion_model_config=fusion)).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


MODEL = ROOT / "model"
CLIP = ROOT / "clip.mp4"  # 1 s, 8 x 32 x 32 frames, a sound track


def conversation(name: str, bad: dict | None = None, raw: bytes | None = None) -> Path:
    """A conversation file next to clip.mp4: a good utterance 0, then utterance 1 = GOOD updated with `bad`."""
    path = ROOT / name
    if raw is None:
        raw = json.dumps([GOOD, {**GOOD, "speaker": "Bob", **(bad or {})}]).encode()
    path.write_bytes(raw)
    return path


def predict(path: Path, model: Path = MODEL) -> list[str]:
    return ["predict", str(model), str(path)]


def damaged_model(name: str, damage) -> Path:
    folder = ROOT / name
    shutil.copytree(MODEL, folder)
    damage(folder)
    return folder


def edit_weights(folder: Path, edit) -> None:
    weights = load_file(folder / "model.safetensors")
    edit(weights)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


# --- the cases: name -> (argv, the strings the message must name; a tuple: any one of them) --------------------------


def case_media(kind: str):
    clip = ROOT / f"{kind}.mp4"
    if kind == "truncated-clip":
        clip.write_bytes(CLIP.read_bytes()[: CLIP.stat().st_size // 2])
    path = conversation(f"{kind}.json", {"video": clip.name})
    return predict(path), [clip.name]


def case_nan_wav():
    wave = np.sin(np.linspace(0, 200, 8000)).astype(np.float32)
    wave[100] = np.nan
    soundfile.write(ROOT / "nan.wav", wave, 16000, subtype="FLOAT")
    return predict(conversation("nan-wav.json", {"audio": "nan.wav"})), [UTTERANCE_1, "nan.wav"]


def utterance_case(name: str, bad: dict):
    """A conversation whose utterance 1 has `bad` fields: the message must name utterance 1."""
    return lambda: (predict(conversation(f"{name}.json", bad)), [UTTERANCE_1])


def file_case(name: str, raw: bytes | None):
    def build():
        path = ROOT / f"{name}.json"
        if raw is not None:
            path.write_bytes(raw)
        return predict(path), [path.name]
    return build


def model_case(name: str, damage, names):
    return lambda: (predict(conversation("good.json"), damaged_model(name, damage)), names)


def foreign_type(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "evil"}))


def truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def drop_fusion_weight(weights: dict) -> None:
    del weights[next(key for key in weights if key.startswith("fusion."))]


NAN_TENSOR = "fusion.text_head"


def nan_weight(weights: dict) -> None:
    weights[next(key for key in weights if key.startswith(NAN_TENSOR))].view(-1)[0] = float("nan")


class RunsCode:
    """Pickles as `os.system("touch <marker>")`: the marker must not appear."""

    def __reduce__(self):
        return os.system, (f"touch {ROOT / 'code-ran'}",)


def released_features() -> dict:
    rng = np.random.default_rng(0)
    data = {key: {} for key in ("text", "audio", "video", "audio_kd", "video_kd", "speakers", "labels", "dia2utt")}
    for key in ("text", "audio", "video", "audio_kd", "video_kd"):
        data[key][7] = [rng.standard_normal(16).astype(np.float32) for _ in range(2)]
    data["speakers"][7], data["labels"][7], data["dia2utt"][7], data["vids"] = [3, 17], [0, RunsCode()], [0, 1], [7]
    return data


def shared_nested_lists(levels: int = 60) -> list:
    value = []
    for _ in range(levels):
        value = [value, value]
    return value


def stack_global(module: str, name: str) -> bytes:
    return b"".join(b"\x8c" + bytes([len(s)]) + s.encode() for s in (module, name)) + b"\x93"


TERABYTE_ARRAY = (  # numpy._core.multiarray._reconstruct(ndarray, (2**40,), b"b"): 70 bytes asking for 1 TiB
    b"\x80\x04" + stack_global("numpy._core.multiarray", "_reconstruct") + stack_global("numpy", "ndarray")
    + b"\x8a\x06" + (2**40).to_bytes(6, "little") + b"\x85" + b"C\x01b" + b"\x87R."
)
BOMBS = {
    "pickle: shared nested lists (2**61 lists)": lambda: pickle.dumps(shared_nested_lists(), protocol=4),
    "pickle: BINBYTES8 claiming 16 GiB": lambda: b"\x80\x04\x8e" + struct.pack("<Q", 16 << 30) + b".",
    "pickle: 100k-deep nesting": lambda: b"\x80\x04" + b"]" * 100_000 + b"a" * 99_999 + b".",
    "pickle: 1 TiB _reconstruct array": lambda: TERABYTE_ARRAY,
}


def pickle_case(index: int, blob):
    def build():
        path = ROOT / f"train_{index}.pkl"
        path.write_bytes(blob())
        return ["import-released-features", str(path), "--output", str(ROOT / f"imported-{index}")], [path.name]
    return build


MELD_ROW = dict(zip(MELD_CSV_COLUMNS, ("1", "how are you", "Ann", "neutral", "neutral", "0", "0", "1", "1",
                                       "0:00:01,000", "0:00:02,000")))


def meld_case(fault: str):
    """A MELD-layout release folder, two rows per split, with dialogue 0 utterance 1 of train broken by `fault`."""
    def build():
        rows = {split: [dict(MELD_ROW), {**MELD_ROW, "Sr No.": "2", "Utterance_ID": "1"}]
                for split in ("train", "validation", "test")}
        if fault == "end-before-start":
            rows["train"][1].update(StartTime="0:00:05,000", EndTime="0:00:04,000")
        root = write_meld_tree(ROOT / f"meld-{fault}", rows, CLIP)
        if fault == "missing-clip":
            (root / "train_splits" / "dia0_utt1.mp4").unlink()
            return ["check-data", "meld", str(root)], ["dia0_utt1.mp4"]
        return ["check-data", "meld", str(root)], ["train_sent_emo.csv", UTTERANCE_1]
    return build


CASES = {
    "conversation: missing file": file_case("nowhere", None),
    "conversation: not JSON": file_case("not-json", b"[{'speaker': 'Ann'"),
    "conversation: not UTF-8": file_case("latin1", json.dumps([GOOD]).replace("Ann", "Ren\xe9").encode("latin-1")),
    "conversation: empty list": file_case("empty", b"[]"),
    "conversation: unknown key": utterance_case("unknown-key", {"emotion": "joy"}),
    "conversation: null speaker": utterance_case("null-speaker", {"speaker": None}),
    "conversation: integer text": utterance_case("integer-text", {"text": 42}),
    "conversation: video given as an int": utterance_case("video-int", {"video": 3}),
    "conversation: missing clip": lambda: case_media("missing-clip"),
    "conversation: truncated clip (MP4 cut in half)": lambda: case_media("truncated-clip"),
    "conversation: start 'abc'": utterance_case("start-abc", {"start": "abc", "end": 1.0}),
    "conversation: end < start": utterance_case("end-before-start", {"start": 0.8, "end": 0.2}),
    "conversation: start past the media's end": utterance_case("start-past-end", {"start": 5.0, "end": 6.0}),
    "conversation: end without start": utterance_case("end-only", {"end": 0.5}),
    "conversation: NaN sample in the WAV `audio`": case_nan_wav,
    "model: missing folder": lambda: (predict(conversation("good.json"), ROOT / "no-model"), ["no-model"]),
    "model: foreign model_type (remote code, not trusted)": model_case(
        "foreign", foreign_type, ["foreign/config.json"]),
    "model: tokenizer.json removed": model_case(
        "no-tokenizer", lambda folder: (folder / "tokenizer.json").unlink(), ["no-tokenizer"]),
    "model: model.safetensors truncated": model_case(
        "truncated-weights", lambda folder: truncate(folder / "model.safetensors"), ["model.safetensors"]),
    "model: a weight removed from model.safetensors": model_case(
        "missing-weight", lambda folder: edit_weights(folder, drop_fusion_weight), ["model.safetensors"]),
    "model: a NaN weight": model_case(
        "nan-weight", lambda folder: edit_weights(folder, nan_weight), ["model.safetensors", NAN_TENSOR]),
    "pickle: code-running global (os.system)": pickle_case(0, lambda: pickle.dumps(released_features(), protocol=4)),
    **{name: pickle_case(index, blob) for index, (name, blob) in enumerate(BOMBS.items(), start=1)},
    "check-data: MELD clip missing": meld_case("missing-clip"),
    "check-data: MELD EndTime < StartTime": meld_case("end-before-start"),
}


# --- the cases of issue 23: files that are not files, text that is not text, settings out of range, outputs -------


def raw_case(name: str, raw: bytes, names):
    """A conversation file holding exactly `raw` (JSON escapes such as a lone surrogate survive)."""
    def build():
        path = ROOT / f"{name}.json"
        path.write_bytes(raw)
        return predict(path), [path.name, *names]
    return build


def surrogate_json(field: str) -> bytes:
    text = json.dumps([GOOD, {**GOOD, "speaker": "Bob", field: "LONE"}])
    return text.replace("LONE", "\\ud800 oh").encode()


def fifo_case():
    path = ROOT / "fifo.json"
    os.mkfifo(path)
    return predict(path), [path.name]


def low_rate_wav_case():
    soundfile.write(ROOT / "one-hertz.wav", np.zeros(4, np.float32), 1, subtype="FLOAT")
    return predict(conversation("one-hertz.json", {"audio": "one-hertz.wav"})), ["one-hertz.wav"]


def config_list(folder: Path) -> None:
    (folder / "config.json").write_text("[1, 2, 3]")


def set_processor_setting(key: str, value):
    """Sets `key` wherever it occurs in the saved processor's JSON files (nested dicts included)."""
    def edit(node):
        if isinstance(node, dict):
            found = key in node
            if found:
                node[key] = value
            return any([found] + [edit(child) for child in node.values()])
        return False

    def damage(folder: Path) -> None:
        hits = 0
        for file in folder.glob("*.json"):
            if file.name in ("config.json", "tokenizer.json", "model.safetensors.index.json"):
                continue
            data = json.loads(file.read_text())
            if edit(data):
                file.write_text(json.dumps(data))
                hits += 1
        if not hits:
            raise SystemExit(f"no processor file of the model holds {key!r}")
    return damage


def processor_case(key: str, value):
    return model_case(f"processor-{key}-{value}", set_processor_setting(key, value), [key, str(value)])


def release_folder(name: str) -> Path:
    rows = {split: [dict(MELD_ROW), {**MELD_ROW, "Sr No.": "2", "Utterance_ID": "1"}]
            for split in ("train", "validation", "test")}
    return write_meld_tree(ROOT / name, rows, CLIP)


def output_directory_case():
    root, output = release_folder("meld-good"), ROOT / "output-dir.jsonl"
    output.mkdir()
    return ["predict", str(MODEL), str(root), "--dataset", "meld", "--output", str(output), "--overwrite"], \
        [output.name]


def stream_case(stdin: bytes):
    return lambda: (["stream", str(MODEL), "--base-dir", str(ROOT)], ["line 1"], stdin)


GOOD_LINE = json.dumps(GOOD).encode() + b"\n"
CASES_23 = {
    "conversation: a lone surrogate in a transcript": raw_case("surrogate-text", surrogate_json("text"),
                                                                [UTTERANCE_1]),
    "conversation: a lone surrogate in a speaker name": raw_case("surrogate-speaker", surrogate_json("speaker"),
                                                                  [UTTERANCE_1]),
    "conversation: JSON nested 200,000 levels": raw_case("deep", b"[" * 200_000 + b"]" * 200_000, []),
    "conversation: a FIFO": fifo_case,
    "conversation: /dev/zero": lambda: (predict(Path("/dev/zero")), ["/dev/zero"]),
    "conversation: a 4-sample WAV at 1 Hz": low_rate_wav_case,
    "model: config.json is a JSON list": model_case("config-list", config_list, ["config.json"]),
    **{f"model: processor {key} = {value}": processor_case(key, value) for key, value in (
        ("num_frames", 100_000), ("num_frames", 1), ("size", 20_000), ("sampling_rate", 0), ("sampling_rate", 8000),
        ("max_audio_samples", 0), ("max_text_tokens", 100_000))},
    "predict --output: an existing directory, --overwrite": output_directory_case,
    "predict --device cuda without CUDA": lambda: (predict(conversation("good.json")) + ["--device", "cuda"],
                                                   ["cuda"]),
    "check-data: a missing root": lambda: (["check-data", "meld", str(ROOT / "no-release")], ["no-release"]),
    "stream: a line that is not JSON, then a good line": stream_case(b"not json\n" + GOOD_LINE),
    "stream: invalid UTF-8 on stdin, then a good line": stream_case(b"\xff\xfe" + GOOD_LINE + GOOD_LINE),
    "stream: a 2 MB line, then a good line": stream_case(b'{"speaker": "A", "text": "' + b"ha " * 700_000 + b'"}\n'
                                                         + GOOD_LINE),
    "predict: a fusion-only folder": lambda: (predict(conversation("good.json"), fusion_folder()), ["fusion-only"]),
    "evaluate: an end-to-end folder where a fusion folder is expected": lambda: (
        ["evaluate", str(MODEL), "--features", str(ROOT / "features")], ["MagtkdForEmotionRecognition",
                                                                         "MagtkdFusionModel"]),
}


# --- the cases of issue 24: `predict MODEL VIDEO --subtitles FILE` with bad subtitles, settings or video ------------


def srt_cue(number: int, timing: str, text: str) -> str:
    return f"{number}\n{timing}\n{text}\n"


GOOD_CUES = [srt_cue(1, "00:00:00,100 --> 00:00:00,400", "ANN: how are you"),
             srt_cue(2, "00:00:00,500 --> 00:00:00,900", "BOB: fine thanks")]


def srt(*cues: str) -> bytes:
    return "\n".join(cues).encode()


def cue_2(timing: str = "00:00:00,500 --> 00:00:00,900", text: str = "BOB: fine thanks") -> bytes:
    """The good file with its cue 2 replaced."""
    return srt(GOOD_CUES[0], srt_cue(2, timing, text))


def subtitle_file(name: str, raw: bytes | None) -> Path:
    path = ROOT / name
    if raw is not None:
        path.write_bytes(raw)
    return path


def predict_subtitles(subtitles: Path, *options: str, video: Path = CLIP) -> list[str]:
    return ["predict", str(MODEL), str(video), "--subtitles", str(subtitles), *options]


def subtitle_case(name: str, raw: bytes, names=(), options=()):
    """`predict MODEL clip.mp4 --subtitles NAME` with NAME holding `raw`: the message names NAME and `names`."""
    def build():
        path = subtitle_file(name, raw)
        return predict_subtitles(path, *options), [path.name, *names]
    return build


def subtitle_fifo_case():
    path = ROOT / "fifo.srt"
    os.mkfifo(path)
    return predict_subtitles(path), [path.name]


def oversized_subtitles_case():
    path = subtitle_file("huge.srt", srt(*GOOD_CUES))
    with path.open("r+b") as file:
        file.truncate(17 << 20)  # sparse: 17 MiB by its size, nothing written
    return predict_subtitles(path), [path.name]


def output_case(name: str):
    """Good subtitles, one bad --output: the message names the output."""
    def build():
        output = ROOT / name
        return predict_subtitles(subtitle_file("good.srt", srt(*GOOD_CUES)), "--output", str(output)), [output.name]
    return build


def setting_case(option: str, value: str):
    return lambda: (predict_subtitles(subtitle_file("good.srt", srt(*GOOD_CUES)), option, value), [option, value])


def video_case(video_name: str, write, names):
    """Good subtitles with a VIDEO that is not one (`write(path)` makes it) or missing (`write` None): the message
    names the VIDEO and one of `names` (what is wrong with it)."""
    def build():
        subtitles = subtitle_file("good.srt", srt(*GOOD_CUES))
        video = ROOT / video_name
        if write is not None:
            write(video)
        return predict_subtitles(subtitles, video=video), [video.name, names]
    return build


def ass_case():
    """Advanced SubStation Alpha, written by pysubs2 (so pysubs2 reads it back)."""
    path, subtitles = ROOT / "other.ass", pysubs2.SSAFile()
    subtitles.events.append(pysubs2.SSAEvent(start=100, end=400, text="ANN: how are you"))
    path.write_text(subtitles.to_string("ass"), encoding="utf-8")
    return predict_subtitles(path), [path.name, "ass"]


def sound_only(path: Path) -> None:
    soundfile.write(path, np.zeros(16000, np.float32), 16000)


NO_VIDEO_STREAM = ("no video stream", "no video track")
CASES_24 = {
    "subtitles: an empty file": subtitle_case("empty.srt", b""),
    "subtitles: not UTF-8 (CP1252, an accented name)": subtitle_case(
        "cp1252.srt", srt(srt_cue(1, "00:00:00,100 --> 00:00:00,400", "REN\u00c9: bonjour")).decode().encode("cp1252")),
    "subtitles: binary garbage": subtitle_case("garbage.srt", bytes(range(256)) * 16),
    "subtitles: UTF-8 text that is not subtitles": subtitle_case("notes.srt", b"shopping list\nmilk\neggs\n"),
    "subtitles: an .ass file (another format pysubs2 reads)": ass_case,
    "subtitles: reversed cue (end before start)": subtitle_case(
        "reversed.srt", cue_2("00:00:00,900 --> 00:00:00,500"), ["cue 2"]),
    "subtitles: overlapping cues": subtitle_case("overlap.srt", cue_2("00:00:00,300 --> 00:00:00,900"), ["cue 2"]),
    "subtitles: a cue past the video's end": subtitle_case(
        "past-end.srt", cue_2("00:00:00,500 --> 00:00:05,000"), ["cue 2", CLIP.name]),
    "subtitles: malformed timing '00:00:01,000 -> 00:00:02'": subtitle_case(
        "bad-timing.srt", srt(*GOOD_CUES, srt_cue(3, "00:00:01,000 -> 00:00:02", "ANN: and you")),
        [("cue 2", "cue 3")]),
    "subtitles: a cue without a speaker, no --speaker": subtitle_case(
        "no-speaker.srt", cue_2(text="fine thanks"), ["cue 2"]),
    "subtitles: a FIFO": subtitle_fifo_case,
    "subtitles: a 17 MiB file": oversized_subtitles_case,
    "subtitles: --output .vtt for an .srt input": output_case("annotated.vtt"),
    "subtitles: --output .txt": output_case("rows.txt"),
    "subtitles: --max-gap 0": setting_case("--max-gap", "0"),
    "subtitles: --max-utterances 0": setting_case("--max-utterances", "0"),
    "subtitles: VIDEO is the SRT file itself": video_case("good.srt", None, NO_VIDEO_STREAM),
    "subtitles: VIDEO is a text file": video_case(
        "notes.txt", lambda path: path.write_text("not a video at all\n"), ("Invalid data", "not a video")),
    "subtitles: VIDEO is a WAV (sound only)": video_case("sound.wav", sound_only, NO_VIDEO_STREAM),
    "subtitles: VIDEO missing": video_case("no-video.mp4", None, ("No such file", "no such file")),
}


def fusion_folder() -> Path:
    folder = ROOT / "fusion-only"
    MagtkdFusionModel(MagtkdFusionConfig.from_preset(
        "meld", hidden_size=TINY_HIDDEN, num_attention_heads=TINY_HEADS, intermediate_size=TINY_HIDDEN)
    ).save_pretrained(folder)
    return folder


# --- running and reporting -------------------------------------------------------------------------------------------


def run_cli(argv: list[str], stdin: bytes = b"", limit: int = 60) -> tuple[int, str, str, float]:
    """(exit status, stdout, stderr, seconds) of `main(argv)` in-process, `stdin` on its standard input; an escaping
    exception is printed as Python would print it (a traceback on stderr, exit status 1), and a run still going after
    `limit` seconds (a FIFO read that blocks) is stopped and reported as a traceback."""
    out, err = io.StringIO(), io.StringIO()
    saved_stdin, sys.stdin = sys.stdin, io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    signal.signal(signal.SIGALRM, _took_too_long)
    signal.alarm(limit)
    start = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as stop:  # argparse usage errors (2) and SystemExit("message") (1)
            code = stop.code if isinstance(stop.code, int) else 1
            if isinstance(stop.code, str):
                print(stop.code, file=err)
        except BaseException:  # noqa: BLE001 - reported as "not clean", never hidden
            traceback.print_exc(file=err)
            code = 1
        finally:
            signal.alarm(0)
            sys.stdin = saved_stdin
    return code, out.getvalue(), err.getvalue(), time.perf_counter() - start


TIMED_OUT = "still running after the time limit"


def _took_too_long(signum, frame):
    raise TimeoutError(TIMED_OUT)


def message_of(argv: list[str], stdout: str, stderr: str, names) -> str:
    """The first line of stderr; for check-data (a report on stdout) the first report line naming the fault."""
    if argv[0] == "check-data" and not stderr.strip():
        first = names[0] if isinstance(names[0], str) else names[0][0]
        return next((line.strip() for line in stdout.splitlines() if first in line), stdout.strip()[:1] or "")
    if argv[0] == "stream":  # its first stderr line may be the notice about a non-causal fusion
        return next((line.strip() for line in (stderr + stdout).splitlines() if "line 1" in line), "(no line 1)")
    return stderr.strip().splitlines()[0] if stderr.strip() else "(nothing on stderr)"


def judge(argv, code: int, stdout: str, stderr: str, names) -> tuple[bool, str]:
    message = message_of(argv, stdout, stderr, names)
    report = stdout + stderr if argv[0] in ("check-data", "stream") else stderr
    named = all(any(n in report for n in ((item,) if isinstance(item, str) else item)) for item in names)
    clean = code in (1, 2) and "Traceback" not in stderr and named and not (ROOT / "code-ran").exists()
    clean = clean and TIMED_OUT not in stderr
    if argv[0] == "stream":  # it goes on after the bad line: the good line after it gets its emotion
        clean = clean and '"label"' in stdout
    return clean, message


def run_case(name: str, build) -> dict:
    argv, names, *stdin = build()
    repeats = BOMB_REPEATS if name in BOMBS else 1
    runs = [run_cli(argv, *stdin) for _ in range(repeats)]
    code, stdout, stderr, _ = runs[0]
    clean, message = judge(argv, code, stdout, stderr, names)
    clean = clean and all(run[:3] == runs[0][:3] for run in runs)
    return {"case": name, "exit": code, "clean": clean, "seconds": statistics.median(r[3] for r in runs),
            "message": message, "stderr": stderr, "stdout": stdout, "repeats": repeats}


def markdown_table(results: list[dict]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace(str(ROOT) + "/", "").replace(str(ROOT), "<tmp>")
    lines = ["| case | exit | clean | seconds | message (first 110 chars) |", "|---|---|---|---|---|"]
    for r in results:
        seconds = f"{r['seconds']:.3f}" + (f" (median of {r['repeats']})" if r["repeats"] > 1 else "")
        lines.append(f"| {r['case']} | {r['exit']} | {'yes' if r['clean'] else '**NO**'} | {seconds} | "
                     f"`{cell(r['message'])[:110]}` |")
    return "\n".join(lines)


def main_script(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--markdown", metavar="FILE", help="also write the table to FILE")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(errors="backslashreplace")  # a message may quote a lone surrogate from a bad input
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # no "Writing model shards" bar while building the inputs
    try:
        build_model_folder(MODEL)
        write_mp4(CLIP, 1.0, size=32, fps=8, audio_pts=True)
        warm = run_cli(["predict", str(MODEL), str(conversation("good.json"))])  # warm-up; must predict
        if warm[0] != 0:
            raise SystemExit(f"the good conversation does not predict (exit {warm[0]}):\n{warm[2]}")
        results = [run_case(name, build) for name, build in {**CASES, **CASES_23, **CASES_24}.items()]
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    table = markdown_table(results)
    clean = sum(r["clean"] for r in results)
    summary = f"{clean} of {len(results)} cases clean."
    print(table + "\n\n" + summary)
    for r in results:
        if not r["clean"]:
            print(f"\nNOT clean: {r['case']} (exit {r['exit']})\n--- stderr ---\n{r['stderr']}--- stdout ---\n"
                  f"{r['stdout'][:2000]}")
    if args.markdown:
        Path(args.markdown).write_text(table + "\n\n" + summary + "\n", encoding="utf-8")
    return 0 if clean == len(results) else 1


if __name__ == "__main__":
    raise SystemExit(main_script())
