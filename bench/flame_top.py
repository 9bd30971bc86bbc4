"""Summarise a py-spy ``--format raw`` profile: the functions with the most samples.

    py-spy record -p PID -d 5 -f raw -o prof.txt
    python bench/flame_top.py prof.txt [--top 25]
    python bench/flame_top.py prof.txt --within "main (inprocess.py" --within "JournalWriter._main (" \
        --without "requests (inprocess.py" --without "EpollSelector.select"

Prints self samples (where the time is spent) and inclusive samples (time
under a function, callees included), each as a share of all samples.
``--within TEXT`` keeps only the stacks with a frame containing one of the
texts given (e.g. the benchmark's main function, whose loop runs every task,
and the SQLite writer thread's), ``--without TEXT`` drops those with a frame
containing any: to leave out a benchmark's setup, the interpreter's start and
idle waits.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path


def load(path: Path, within: Sequence[str] = (), without: Sequence[str] = ()) -> tuple[Counter[str], Counter[str], int]:
    """Self and inclusive sample counts per frame, and the total number of samples, of the stacks kept."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        if within and not any(text in frame for frame in frames for text in within):
            continue
        if any(text in frame for frame in frames for text in without):
            continue
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
    parser.add_argument("--within", action="append", default=[], help="keep stacks with a frame containing this")
    parser.add_argument("--without", action="append", default=[], help="drop stacks with a frame containing this")
    args = parser.parse_args()
    own, inclusive, total = load(args.profile, args.within, args.without)
    show("self", own, total, args.top)
    show("inclusive", inclusive, total, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
