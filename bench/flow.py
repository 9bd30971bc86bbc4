"""What flow control costs end to end: no-op jobs through the service and 32 in-process workers, in rounds.

    .venv/bin/python bench/flow.py                                       # memory and SQLite, 5 rounds
    .venv/bin/python bench/flow.py --baseline-tree ../jobq-before        # and a checkout from before, in turn
    .venv/bin/python bench/flow.py --stores postgresql,redis --jobs 20000   # their dedicated databases, emptied

Each round runs, for each store, ``bench/inprocess.py e2e`` in a fresh process for:
``baseline`` (the other checkout, no limits; with ``--baseline-tree``), ``none`` (this checkout, no
limits), and ``keyed`` (this checkout, the jobs spread over ``--keys`` concurrency keys and the
queue limited to ``--key-limit`` running jobs per key), in an order that turns from round to round.
The goals: ``none`` within 5% of ``baseline`` (limits cost nothing unused), and ``keyed`` within 30% of
``none``. The table gives the median rate over the rounds and the median CPU per job; CPU per job
moves least when other processes share the machine.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import run as bench

CASES = ("baseline", "none", "keyed")


def command(args: argparse.Namespace) -> Callable[[str, str], list[str]]:
    """The e2e measurement of a case on a store."""

    def build(store: str, case: str) -> list[str]:
        words = ["e2e", "--store", store, "--jobs", str(args.jobs), "--workers", "32"]
        if case == "baseline":
            words += ["--tree", str(args.baseline_tree)]
        if case == "keyed":
            words += ["--keys", str(args.keys), "--key-limit", str(args.key_limit)]
        return words

    return build


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", default="memory://,sqlite", help="comma-separated: memory://, sqlite, a URL")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--key-limit", type=int, default=2)
    parser.add_argument("--baseline-tree", type=Path, help="a checkout from before flow control, measured without")
    parser.add_argument("--json", type=Path, help="write every run's result here")
    args = parser.parse_args(argv)
    cases = [case for case in CASES if case != "baseline" or args.baseline_tree is not None]
    bench.inprocess_rounds(args.stores.split(","), cases, command(args), args.rounds, "none", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
