"""Summarise a py-spy ``--format raw`` profile: the functions with the most samples.

    py-spy record -p PID -d 5 -f raw -o prof.txt
    python bench/flame_top.py prof.txt [--top 25]

Prints self samples (where the time is spent) and inclusive samples (time
under a function, callees included), each as a share of all samples.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path


def load(path: Path) -> tuple[Counter[str], Counter[str], int]:
    """Self and inclusive sample counts per frame, and the total number of samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return own, inclusive, total


def show(title: str, counts: Counter[str], total: int, top: int) -> None:
    print(f"\n{title} ({total} samples)")
    for frame, count in counts.most_common(top):
        print(f"{100 * count / total:6.1f}%  {frame}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    own, inclusive, total = load(args.profile)
    show("self", own, total, args.top)
    show("inclusive", inclusive, total, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
