"""A remote worker: ``python -m jobq.worker --url http://host:8080 --handlers my.module``.

It runs the same handler registry and worker pool as the server, but leases
jobs over HTTP, heartbeats long jobs, and on SIGINT/SIGTERM stops leasing,
finishes its jobs (up to ``--drain-timeout``) and releases the rest. A second
signal exits at once; its leases then lapse and the server re-delivers them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from jobq import logs
from jobq.client import DEFAULT_URL, BatchedSource, JobqClient
from jobq.config import positive
from jobq.handlers import load_handler_modules, registry
from jobq.workers import WorkerPool

log = logging.getLogger("jobq.worker")


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    parser = argparse.ArgumentParser(prog="python -m jobq.worker", description="Run jobq jobs in this process.")
    parser.add_argument("--url", default=env.get("JOBQ_URL", DEFAULT_URL), help="jobq server [env JOBQ_URL]")
    parser.add_argument(
        "--handlers",
        default=env.get("JOBQ_HANDLERS", ""),
        help="comma-separated modules whose @handler functions to run [env JOBQ_HANDLERS]",
    )
    parser.add_argument(
        "--queues", default=env.get("JOBQ_QUEUES", ""), help="comma-separated queues; all when empty [env JOBQ_QUEUES]"
    )
    parser.add_argument(
        "--concurrency",
        type=positive(int),
        default=env.get("JOBQ_CONCURRENCY", "16"),  # a string default goes through type= too: checked alike
        help="jobs at once, at least 1 [env JOBQ_CONCURRENCY]",
    )
    parser.add_argument(
        "--lease",
        type=positive(float),
        default=env.get("JOBQ_LEASE", "60"),
        help="lease seconds, above 0 [env JOBQ_LEASE]",
    )
    parser.add_argument(
        "--drain-timeout",
        type=positive(float, zero_ok=True),
        default=env.get("JOBQ_DRAIN_TIMEOUT", "30"),
        help="seconds to finish held jobs on SIGINT/SIGTERM [env JOBQ_DRAIN_TIMEOUT]",
    )
    parser.add_argument(
        "--token",
        default=env.get("JOBQ_WORKER_TOKEN") or None,
        help="bearer token of the worker (or admin) role; prefer the variable, as flags show in ps "
        "[env JOBQ_WORKER_TOKEN]",
    )
    parser.add_argument("--log-level", default=env.get("JOBQ_LOG_LEVEL", "info"), help="[env JOBQ_LOG_LEVEL]")
    parser.add_argument(
        "--log-format",
        default=env.get("JOBQ_LOG_FORMAT", "text"),
        choices=logs.FORMATS,
        help="text or json (one JSON object per line) [env JOBQ_LOG_FORMAT]",
    )
    return parser


def split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


async def run(args: argparse.Namespace) -> int:
    """Lease and run jobs until a signal; returns the exit code."""
    client = JobqClient(args.url, token=args.token)
    source = BatchedSource(client)  # finished jobs are settled many per request
    pool = WorkerPool(
        source,
        registry,
        concurrency=args.concurrency,
        lease_seconds=args.lease,
        queues=split(args.queues) or None,
        idle_wait=min(30.0, args.lease / 2),
    )
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second %s: exiting now; leases of %s will lapse", signal.Signals(signum).name, pool.held())
            os._exit(1)
        log.info("%s received: finishing %d held jobs", signal.Signals(signum).name, len(pool.held()))
        stop.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    pool.start()
    log.info(
        "worker %s running %d at once from %s (queues: %s)", pool.name, args.concurrency, args.url, args.queues or "all"
    )
    await stop.wait()
    report = await pool.drain(args.drain_timeout, run_waiting=False)
    log.info("worker stopped: %d jobs finished while draining, %d released", report.finished, len(report.unfinished))
    await source.close()
    await client.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup(args.log_level, args.log_format)
    try:
        load_handler_modules(split(args.handlers))
    except ImportError as exc:
        log.error("cannot load handlers: %s", exc)
        return 2
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
