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
import json
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import run as bench

CASES = ("independent", "chord")


def measure(store: str, case: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """One e2e run of ``case`` on a fresh ``store``."""
    command = ["e2e", "--store", bench._fresh(store, workdir), "--jobs", str(args.jobs), "--workers", "32"]
    return bench.inprocess(*command, *(["--chord"] if case == "chord" else []))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", default="memory://,sqlite", help="comma-separated: memory://, sqlite, a URL")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--json", type=Path, help="write every run's result here")
    args = parser.parse_args(argv)
    named = {"postgresql": bench.DEFAULT_POSTGRES_URL, "redis": bench.DEFAULT_REDIS_URL}
    stores = [named.get(store, store) for store in args.stores.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="jobq-workflow-"))
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {(s, c): [] for s in stores for c in CASES}
    for number in range(args.rounds):
        for store in stores:
            for case in CASES[number % 2 :] + CASES[: number % 2]:
                result = measure(store, case, args, workdir)
                runs[(store, case)].append(result)
                print(
                    f"round {number + 1} {store} {case}: {result['jobs_per_second']:,} jobs/s, "
                    f"{result['cpu_us_per_job']} µs CPU/job",
                    flush=True,
                )
    print()
    print("| store | case | jobs/s (median) | CPU µs/job (median) | rate vs independent | CPU vs independent |")
    print("|---|---|---|---|---|---|")
    for store in stores:
        rate0 = statistics.median(r["jobs_per_second"] for r in runs[(store, "independent")])
        cpu0 = statistics.median(r["cpu_us_per_job"] for r in runs[(store, "independent")])
        for case in CASES:
            rate = statistics.median(r["jobs_per_second"] for r in runs[(store, case)])
            cpu = statistics.median(r["cpu_us_per_job"] for r in runs[(store, case)])
            print(f"| {store} | {case} | {rate:,.0f} | {cpu:.1f} | {rate / rate0:.0%} | {cpu / cpu0:.0%} |")
    if args.json is not None:
        args.json.write_text(json.dumps({f"{s} {c}": r for (s, c), r in runs.items()}, indent=2))
    print(json.dumps({"machine": bench.machine()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
