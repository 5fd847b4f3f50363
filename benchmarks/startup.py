"""Start-up time of `import magtkd_hf` (which registers every class and the pipeline task eagerly), `magtkd-hf --help`
and `--version` against `import torch, transformers`, side by side.

Each command runs in a fresh interpreter, the four interleaved, `--repeats` times; the medians and their ratio to the
baseline are printed (a report, no goal).

    python benchmarks/startup.py --repeats 7
"""

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "import torch, transformers": [sys.executable, "-c", "import torch, transformers"],
    "import magtkd_hf": [sys.executable, "-c", "import magtkd_hf"],
    "magtkd-hf --help": [sys.executable, "-m", "magtkd_hf", "--help"],
    "magtkd-hf --version": [sys.executable, "-m", "magtkd_hf", "--version"],
}


def wall_seconds(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    for command in COMMANDS.values():  # warm the file cache
        wall_seconds(command)
    times = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, command in COMMANDS.items():
            times[name].append(wall_seconds(command))
    baseline = statistics.median(times["import torch, transformers"])
    print(f"{'command':<28} {'median s':>9} {'min s':>7} {'x baseline':>11}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<28} {median:>9.2f} {min(values):>7.2f} {median / baseline:>11.2f}")


if __name__ == "__main__":
    main()
