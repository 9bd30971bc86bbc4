"""The command line of one peer, run by bench/peers/run.py with that peer's Python (``.venvs/<name>/bin/python``).

    python peer.py dramatiq info        # JSON: version, store, settings, service, worker command line
    python peer.py dramatiq prepare N   # empty the peer's database, then enqueue N no-op jobs
    python peer.py dramatiq watch N     # poll the unfinished jobs; "ready" after the first poll, then a JSON Drain

``prepare`` uses the library's fastest way to enqueue many jobs; it is not part of the measure.
``watch`` prints ``ready`` once it has counted the backlog (the runner starts the worker then) and,
when no job is left, the :class:`common.Drain` with the jobs' outcome as the library records it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import common


def main(argv: list[str] | None = None) -> int:
    """Run one sub-command for one peer; its answer is the last line on stdout, as JSON."""
    args = parser().parse_args(argv)
    peer: common.Peer = importlib.import_module(f"{args.peer}_peer").PEER()
    with asyncio.Runner() as runner:
        try:
            document = run(peer, runner, args)
        finally:
            runner.run(peer.close())
    print(json.dumps(document), flush=True)
    return 0


def parser() -> argparse.ArgumentParser:
    """The sub-commands."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("peer", help="dramatiq, arq, saq, rq, pgqueuer or procrastinate")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="print the version, settings and worker command as JSON")
    prepare = commands.add_parser("prepare", help="empty the store, then enqueue N no-op jobs")
    prepare.add_argument("jobs", type=int)
    watch = commands.add_parser("watch", help="poll the unfinished jobs until none is left; print the drain")
    watch.add_argument("jobs", type=int)
    watch.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the backlog to drain")
    return parser


def run(peer: common.Peer, runner: asyncio.Runner, args: argparse.Namespace) -> dict[str, Any]:
    """The answer of one sub-command."""
    if args.command == "info":
        return info(peer, runner)
    if args.command == "prepare":
        return prepare(peer, runner, args.jobs)
    result = common.drain(lambda: runner.run(peer.remaining()), args.jobs, args.timeout, say_ready)
    if result.error is None:
        result.outcome = runner.run(peer.outcome(args.jobs))
    return asdict(result)


def info(peer: common.Peer, runner: asyncio.Runner) -> dict[str, Any]:
    """What the runner prints about the peer, and how it starts the peer's worker."""
    return {
        "name": peer.name,
        "version": peer.version(),
        "store": peer.store,
        "settings": peer.settings,
        "service": runner.run(peer.service()),
        "worker": peer.worker_command(str(Path(sys.executable).parent)),
    }


def prepare(peer: common.Peer, runner: asyncio.Runner, jobs: int) -> dict[str, Any]:
    """Empty the peer's database and enqueue ``jobs`` no-op jobs; how long the enqueueing took."""
    runner.run(peer.reset())
    started = time.perf_counter()
    runner.run(peer.enqueue(jobs))
    enqueue_seconds = time.perf_counter() - started
    waiting = runner.run(peer.remaining())
    if waiting != jobs:
        raise SystemExit(f"{peer.name}: {waiting} jobs waiting after enqueueing {jobs}")
    return {"enqueue_seconds": round(enqueue_seconds, 3)}


def say_ready() -> None:
    """Tell the runner the backlog is counted: it starts the worker now."""
    print("ready", flush=True)


if __name__ == "__main__":
    sys.exit(main())
