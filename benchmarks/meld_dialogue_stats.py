"""MELD's dialogue statistics behind `magtkd_hf.subtitles`' defaults: the silence between consecutive utterances of
one dialogue (seconds) and the utterances per dialogue.

    python benchmarks/meld_dialogue_stats.py MELD_FOLDER   # the folder of train/dev/test_sent_emo.csv
"""

import argparse
import csv
from pathlib import Path

import numpy as np


def seconds(timestamp: str) -> float:
    hours, minutes, rest = timestamp.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(rest.replace(",", "."))


def dialogues(folder: Path) -> list[list[tuple[float, float]]]:
    """Every dialogue's (start, end) per utterance, in utterance order, over the three splits."""
    found = []
    for table in sorted(folder.glob("*_sent_emo.csv")):
        by_dialogue: dict[str, list] = {}
        with open(table, encoding="utf-8", errors="replace", newline="") as handle:
            for row in csv.DictReader(handle):
                by_dialogue.setdefault(row["Dialogue_ID"], []).append(
                    (int(row["Utterance_ID"]), seconds(row["StartTime"]), seconds(row["EndTime"])))
        found += [[(start, end) for _, start, end in sorted(rows)] for rows in by_dialogue.values()]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    all_dialogues = dialogues(parser.parse_args().folder)
    lengths = np.array([len(dialogue) for dialogue in all_dialogues])
    gaps = np.array([later[0] - earlier[1] for dialogue in all_dialogues
                     for earlier, later in zip(dialogue, dialogue[1:])])
    print(f"{len(all_dialogues)} dialogues, {lengths.sum()} utterances")
    print("utterances per dialogue: mean {:.1f}, median {:.0f}, p90 {:.0f}, p95 {:.0f}, p99 {:.0f}, max {}".format(
        lengths.mean(), *np.percentile(lengths, [50, 90, 95, 99]), lengths.max()))
    print("gap between consecutive utterances (s): median {:.2f}, p90 {:.2f}, p95 {:.2f}, p99 {:.2f}; "
          "negative (overlapping timings) {:.1%}".format(*np.percentile(gaps, [50, 90, 95, 99]), (gaps < 0).mean()))


if __name__ == "__main__":
    main()
