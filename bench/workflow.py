"""What a workflow costs end to end: a chord (N jobs and a callback waiting for them all) against the same
N jobs enqueued on their own, through the service and 32 in-process workers, in rounds.

    .venv/bin/python bench/workflow.py                                  # memory and SQLite, 5 rounds
    .venv/bin/python bench/workflow.py --stores postgresql,redis        # their dedicated databases, emptied

Each round runs, for each store, ``bench/inprocess.py e2e`` in a fresh process for ``independent``
(10,000 no-op jobs in batches of 1,000, as ``POST /enqueue/batch`` would send them) and ``chord``
(the same jobs and one callback depending on every one of them, ``on_parent_failure: run``, sent as
one ``POST /workflows``; timed until the callback has run), in an order that turns from round to
round. The goal: ``chord`` at no less than 70% of ``independent``'s rate. The table gives the
median rate and CPU per job over the rounds.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import run as bench

CASES = ("independent", "chord")


def command(args: argparse.Namespace) -> Callable[[str, str], list[str]]:
    """The e2e measurement of a case on a store."""

    def build(store: str, case: str) -> list[str]:
        words = ["e2e", "--store", store, "--jobs", str(args.jobs), "--workers", "32"]
        return [*words, "--chord"] if case == "chord" else words

    return build


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", default="memory://,sqlite", help="comma-separated: memory://, sqlite, a URL")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--json", type=Path, help="write every run's result here")
    args = parser.parse_args(argv)
    bench.inprocess_rounds(args.stores.split(","), CASES, command(args), args.rounds, "independent", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
