"""Peak memory and time of one very long transcript line (a script, not a test).

Each case runs in a child process (its own peak RSS, `ru_maxrss`): a conversation of two utterances whose second
transcript is one line of `--megabytes` MB of words, through

* processor: `MagtkdProcessor(...)(conversation, modalities=("text",))` (the tiny RoBERTa tokenizer of the demo);
* stream: `MagtkdStream(model, processor).add(...)` for each utterance, on a tiny random end-to-end model;
* cli-stream: `python -m magtkd_hf stream FOLDER < conversation.jsonl`, that model saved with its processor and the
  conversation as JSON lines (short, long, short): the whole command's peak RSS; the outcome is its rows.

Printed per case: the child's peak RSS and wall time seen by the parent (`child_*`: also for a child that crashed),
its peak RSS, the RSS after the imports and the processor (`rss_setup_mb`), the RSS before the
call (the line and, for the stream, the model: `rss_before_mb`), the seconds of the call and its
outcome (the prompt length, or the error). `--code-root FOLDER` runs the children on another checkout of the
package (e.g. a `git worktree` of an older tag, with `magtkd_hf/processors` linked to its `processors/`); each child
prints where `magtkd_hf.processors` came from. `--memory-limit-gb` caps each child's address space.

Usage: python benchmarks/bounded_text.py [--megabytes 50] [--code-root FOLDER] [--memory-limit-gb 12]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

WORDS = "the weather is nice and the sun is out, "
CASES = ("processor", "stream", "cli-stream")


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def long_line(megabytes: float) -> str:
    return (WORDS * int(megabytes * 1e6 / len(WORDS) + 1))[: int(megabytes * 1e6)]


def tiny_model(tokenizer_size: int):
    from magtkd_hf import MagtkdConfig, MagtkdForEmotionRecognition, MagtkdFusionConfig, MagtkdTextConfig
    from magtkd_hf.apps.tiny import TINY_HEADS, TINY_HIDDEN, tiny_audio_config, tiny_text_config, tiny_video_config

    config = MagtkdConfig(
        text_config=MagtkdTextConfig(encoder_config=tiny_text_config(tokenizer_size), feature_size=TINY_HIDDEN),
        audio_config=tiny_audio_config(), video_config=tiny_video_config(),
        fusion_model_config=MagtkdFusionConfig(hidden_size=TINY_HIDDEN, num_attention_heads=TINY_HEADS,
                                               intermediate_size=TINY_HIDDEN),
    )
    return MagtkdForEmotionRecognition(config).eval()


def prepare_cli_stream(megabytes: float) -> dict:
    """Saves the tiny model and its processor and writes the conversation as JSON lines (short, long, short)."""
    from magtkd_hf.apps.tiny import SMALL_TALK, tiny_processor, train_tiny_roberta_tokenizer

    processor = tiny_processor(train_tiny_roberta_tokenizer(SMALL_TALK))
    folder = tempfile.mkdtemp(prefix="bounded-text-")
    tiny_model(len(processor.tokenizer)).save_pretrained(folder)
    processor.save_pretrained(folder)
    short = json.dumps({"speaker": "A", "text": "how are you doing today"}) + "\n"
    with open(os.path.join(folder, "conversation.jsonl"), "w", encoding="utf-8") as file:
        file.writelines([short, json.dumps({"speaker": "B", "text": long_line(megabytes)}) + "\n", short])
    return {"folder": folder}


def child(case: str, megabytes: float) -> dict:
    import magtkd_hf.processors
    from magtkd_hf.apps.tiny import SMALL_TALK, tiny_processor, train_tiny_roberta_tokenizer

    processor = tiny_processor(train_tiny_roberta_tokenizer(SMALL_TALK))
    setup = rss_mb()
    conversation = [{"speaker": "A", "text": "how are you doing today"}, {"speaker": "B", "text": long_line(megabytes)}]
    if case == "stream":
        import warnings

        from magtkd_hf.streaming import MagtkdStream

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stream = MagtkdStream(tiny_model(len(processor.tokenizer)), processor)
        call = lambda: [stream.add(utterance) for utterance in conversation][-1]["label"]  # noqa: E731
    else:
        call = lambda: tuple(processor(conversation, modalities=("text",))["input_ids"].shape)  # noqa: E731
    before, start = rss_mb(), time.perf_counter()
    try:
        outcome = f"ok: {call()}"
    except Exception as error:  # noqa: BLE001 (the outcome is reported, whatever it is)
        outcome = f"{type(error).__name__}: {str(error)[:300]}"
    return {"case": case, "megabytes": megabytes, "seconds": round(time.perf_counter() - start, 2),
            "rss_setup_mb": round(setup), "rss_before_mb": round(before), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "outcome": outcome, "processors_from": os.path.dirname(magtkd_hf.processors.__file__)}


def run_child(case: str, args) -> dict:
    """The child's report, with its peak RSS and wall time as the parent sees them (also when it crashed)."""
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    if args.code_root:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.code_root, env.get("PYTHONPATH")]))
    limit = int(args.memory_limit_gb * 2**30)
    command, stdin = [sys.executable, __file__, "--child", case, "--megabytes", str(args.megabytes)], None
    if case == "cli-stream":
        prepared = json.loads(subprocess.run([*command[:3], "cli-prepare", *command[4:]], env=env, check=True,
                                             capture_output=True, text=True).stdout.splitlines()[-1])
        command = [sys.executable, "-m", "magtkd_hf", "stream", prepared["folder"]]
        stdin = open(os.path.join(prepared["folder"], "conversation.jsonl"), "rb")  # noqa: SIM115 (closed below)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        child_process = subprocess.Popen(command, env=env, stdin=stdin, stdout=out, stderr=err, text=True,
                                         preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
        _, status, usage = os.wait4(child_process.pid, 0)
        measured = {"child_peak_rss_mb": round(usage.ru_maxrss / 1024), "child_seconds": round(time.perf_counter() - start)}
        out.seek(0), err.seek(0)
        lines = [line for line in out.read().splitlines() if line.startswith("{")]
        if case == "cli-stream":
            stdin.close()
            shutil.rmtree(prepared["folder"])
            rows = [json.loads(line) for line in lines]
            outcome = [row.get("label") or row.get("error", "")[:90] for row in rows]
            return {"case": case, **measured, "exit": os.waitstatus_to_exitcode(status), "outcome": outcome}
        if os.waitstatus_to_exitcode(status) or not lines:
            error = " ".join(err.read().split())
            return {"case": case, **measured, "outcome": f"child exited {os.waitstatus_to_exitcode(status)}: "
                                                         f"{error[:200]} ... {error[-200:]}"}
    return {**json.loads(lines[-1]), **measured}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=50.0)
    parser.add_argument("--code-root", help="a checkout whose magtkd_hf is imported instead (PYTHONPATH)")
    parser.add_argument("--memory-limit-gb", type=float, default=12.0)
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--child", choices=(*CASES, "cli-prepare"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "cli-prepare":
        print(json.dumps(prepare_cli_stream(args.megabytes)))
        return
    if args.child:
        print(json.dumps(child(args.child, args.megabytes)))
        return
    for case in args.cases:
        print(json.dumps(run_child(case, args)))


if __name__ == "__main__":
    main()
