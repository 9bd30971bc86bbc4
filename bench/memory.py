"""The resident memory of a jobq process holding 1,000,000 queued jobs in the memory store.

    python bench/memory.py                                  # this checkout, 3 rounds
    python bench/memory.py --baseline-tree /tmp/jobq-base   # and another checkout, in turn

Each round starts a fresh process per checkout that imports jobq, starts a ``JobService``
on ``memory://`` with no workers and submits ``--jobs`` ``{"type": "noop"}`` requests in
batches of 1,000 (as ``POST /enqueue/batch`` would), then reports its whole VmRSS after
``gc.collect()``: the figure an operator sees, imports included. The RSS after a restart on
SQLite comes from ``bench/restart.py`` (``rss_at_stats``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from run import PYTHON, checkouts, clean_env  # noqa: E402 - bench/run.py

CHILD = """
import asyncio, gc, json, sys
from pathlib import Path
from jobq.app import store_from_config
from jobq.builtin_handlers import register_builtins
from jobq.config import Config
from jobq.handlers import Registry
from jobq.models import EnqueueRequest
from jobq.service import JobService

def rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

async def main(jobs):
    config = Config(store="memory://", workers=0, queue_size=10_000_000, log_level="warning")
    registry = Registry()
    register_builtins(registry)
    service = JobService(config, store_from_config(config), registry)
    await service.start()
    gc.collect()
    before = rss()
    for start in range(0, jobs, 1000):
        await service.submit([EnqueueRequest(type="noop") for _ in range(min(1000, jobs - start))])
    gc.collect()
    after = rss()
    queued = (await service.store.stats()).by_status.get("pending", 0)
    await service.close()
    print(json.dumps({"jobs": queued, "rss_mib": after / 2**20, "delta_mib": (after - before) / 2**20}))

asyncio.run(main(int(sys.argv[1])))
"""


def measure(root: Path, jobs: int) -> dict[str, float]:
    done = subprocess.run(
        [PYTHON, "-c", CHILD, str(jobs)], cwd=root, env=clean_env(root), capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-tree", type=Path, help="another checkout, measured in turn with this one")
    args = parser.parse_args(argv)
    trees = checkouts(args.baseline_tree)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for round_number in range(args.rounds):
        for name, root in trees.items():
            result = measure(root, args.jobs)
            runs[name].append(result)
            print(f"round {round_number + 1} {name}: {json.dumps(result)}", file=sys.stderr)
    print(f"{args.jobs:,} queued jobs, memory store")
    print()
    print("| tree | RSS best | RSS median | growth median | bytes/job |")
    print("|---|---|---|---|---|")
    for name, results in runs.items():
        rss = [r["rss_mib"] for r in results]
        delta = statistics.median(r["delta_mib"] for r in results)
        per_job = delta * 2**20 / args.jobs
        print(f"| {name} | {min(rss):.0f} MiB | {statistics.median(rss):.0f} MiB | {delta:.0f} MiB | {per_job:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
