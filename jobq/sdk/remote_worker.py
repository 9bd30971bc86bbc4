"""A remote worker: ``jobq worker --url http://host:8080 --handlers my.module``.

``python -m jobq.sdk.remote_worker`` runs the same, with the same flags.

It runs the same handler registry and worker pool as the server, but leases
jobs over HTTP, heartbeats long jobs, and on SIGINT/SIGTERM stops leasing,
finishes its jobs (up to ``--drain-timeout``) and releases the rest. A second
signal exits at once; its leases then lapse and the server re-delivers them.

When the server cannot be reached it waits: leasing backs off (1 s doubling to
30 s, one log line per try), settling sends again for up to ``--lease`` seconds.
After ``--give-up-after`` seconds without reaching the server the worker exits
with code 3, so a supervisor can restart or alert.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence

from jobq import eventloop, logformat
from jobq.config import http_url, positive
from jobq.errors import Forbidden, HandlersFailed, JobqError, Unauthorized
from jobq.handlers import load_handler_modules, registry
from jobq.job import Job
from jobq.retry import RetryPolicy
from jobq.sdk.client import DEFAULT_URL, BatchedSource, JobqClient, is_transient
from jobq.stopping import StopSignals, exit_now, hand_to_loop, leave
from jobq.workers import JobSource, WorkerPool

log = logging.getLogger("jobq.sdk.remote_worker")

CANCEL_CHECK_SECONDS = 1.0  # how often held leases are extended: a job cancelled on the server stops here soon

EXIT_REFUSED = 2  # the server refused the worker's token
EXIT_GAVE_UP = 3  # the server was out of reach for --give-up-after seconds
RECONNECT_BACKOFF = RetryPolicy(base=1.0, cap=30.0)  # between lease tries while the server is out of reach
GAVE_UP_DRAIN_SECONDS = 1.0  # enough for idle workers to stop; held jobs' leases are long gone by then


def build_parser(prog: str = "python -m jobq.sdk.remote_worker") -> argparse.ArgumentParser:
    env = os.environ
    parser = argparse.ArgumentParser(prog=prog, description="Run jobq jobs in this process.")
    parser.add_argument(
        "--url",
        type=http_url,
        default=env.get("JOBQ_URL") or DEFAULT_URL,
        help="jobq server [env JOBQ_URL; default %(default)s]",
    )
    parser.add_argument(
        "--handlers",
        default=env.get("JOBQ_HANDLERS") or "",
        help="comma-separated modules whose @handler functions to run [env JOBQ_HANDLERS]",
    )
    parser.add_argument(
        "--queues",
        default=env.get("JOBQ_QUEUES") or "",
        help="comma-separated queues; all when empty [env JOBQ_QUEUES]",
    )
    parser.add_argument(
        "--concurrency",
        type=positive(int),
        default=env.get("JOBQ_CONCURRENCY") or "64",  # a string default goes through type= too: checked alike
        help="jobs at once, at least 1 [env JOBQ_CONCURRENCY; default %(default)s]",
    )
    parser.add_argument(
        "--prefetch",
        type=positive(int, zero_ok=True),
        default=env.get("JOBQ_PREFETCH") or None,
        help="jobs leased ahead of the ones running (default: as many as --concurrency), so a worker that "
        "finishes finds its next job here; a job leased ahead waits for this worker, even if another is idle or a "
        "higher-priority job arrives: use 0 for long jobs [env JOBQ_PREFETCH]",
    )
    parser.add_argument(
        "--lease",
        type=positive(float),
        default=env.get("JOBQ_LEASE") or "60",
        help="lease seconds, above 0; also how long a finished job's result is sent again while the server "
        "is out of reach [env JOBQ_LEASE; default %(default)s]",
    )
    parser.add_argument(
        "--drain-timeout",
        type=positive(float, zero_ok=True),
        default=env.get("JOBQ_DRAIN_TIMEOUT") or "30",
        help="seconds to finish held jobs on SIGINT/SIGTERM [env JOBQ_DRAIN_TIMEOUT; default %(default)s]",
    )
    parser.add_argument(
        "--give-up-after",
        type=positive(float, zero_ok=True),
        default=env.get("JOBQ_GIVE_UP_AFTER") or "300",
        help=f"exit with code {EXIT_GAVE_UP} after this many seconds without reaching the server; 0: never "
        "[env JOBQ_GIVE_UP_AFTER; default %(default)s]",
    )
    parser.add_argument(
        "--token",
        default=env.get("JOBQ_WORKER_TOKEN") or None,
        help="bearer token of the worker (or admin) role; prefer the variable, as flags show in ps "
        "[env JOBQ_WORKER_TOKEN]",
    )
    parser.add_argument(
        "--log-level",
        default=env.get("JOBQ_LOG_LEVEL") or "info",
        choices=logformat.LEVELS,
        help="[env JOBQ_LOG_LEVEL; default %(default)s]",
    )
    parser.add_argument(
        "--log-format",
        default=env.get("JOBQ_LOG_FORMAT") or "text",
        choices=logformat.FORMATS,
        help="text or json (one JSON object per line) [env JOBQ_LOG_FORMAT; default %(default)s]",
    )
    return parser


def prefetch_of(args: argparse.Namespace) -> int:
    """Jobs to lease ahead of the running ones: ``--prefetch``, or as many as ``--concurrency`` when not given."""
    return int(args.concurrency if args.prefetch is None else args.prefetch)


def split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


class PatientSource:
    """A job source whose ``lease`` waits out a server it cannot reach, instead of failing.

    When a lease fails for want of the server (``is_transient``: unreachable, or a
    502/503/504), ``lease`` logs one line naming the next wait, sleeps it (``backoff``:
    1 s doubling to 30 s, each wait drawn from the upper half of its step) and answers
    no jobs, so the pool's feeder asks again without logging an error of its own.
    The first lease that gets through logs that the server is back. Once the server
    has been out of reach for ``give_up_after`` seconds (0: never), it logs why, calls
    ``on_give_up`` once and sets ``gave_up``; so it does at once, setting ``refused``, when
    the server refuses the worker's token (401 or 403). Everything else goes to ``source`` as it is.
    """

    def __init__(
        self,
        source: JobSource,
        url: str,
        *,
        give_up_after: float,
        on_give_up: Callable[[], None],
        backoff: RetryPolicy = RECONNECT_BACKOFF,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.source = source
        self.url = url
        self.give_up_after = give_up_after
        self.on_give_up = on_give_up
        self.backoff = backoff
        self.gave_up = False
        self.refused = False  # it gave up because the server refused its token
        self._clock = clock
        self._sleep = sleep
        self._down_since: float | None = None  # the first failed try of this outage
        self._tries = 0  # failed tries in this outage
        self.heartbeat_many = source.heartbeat_many
        self.settle_many = source.settle_many
        self.release = source.release
        self.append_log = source.append_log
        self.set_progress = source.set_progress
        self.parents = source.parents  # a handler's ctx.parents(): GET /jobs/{id}/parents

    async def lease(
        self,
        max_jobs: int,
        lease_seconds: float,
        *,
        queues: Sequence[str] | None = None,
        worker: str | None = None,
        wait: float = 0.0,
        types: Sequence[str] | None = None,
    ) -> list[Job]:
        if self.gave_up:  # the worker is stopping: ask nothing more, and do not spin the pool's feeder
            await self._sleep(self.backoff.cap)
            return []
        try:
            jobs = await self.source.lease(
                max_jobs, lease_seconds, queues=queues, worker=worker, wait=wait, types=types
            )
        except (Unauthorized, Forbidden) as exc:  # asking again cannot help: stop, saying why
            log.error("the server at %s refuses this worker (%s): %s", self.url, exc.title, exc.detail)
            self.refused = True
            self.gave_up = True
            self.on_give_up()
            return []
        except JobqError as exc:
            if not is_transient(exc):
                raise
            await self._wait_out(exc)
            return []
        if self._down_since is not None:
            log.info("reached %s again after %.1fs without it", self.url, self._clock() - self._down_since)
            self._down_since, self._tries = None, 0
        return jobs

    async def _wait_out(self, error: JobqError) -> None:
        """One failed try: give up if it has been too long, else log the next wait and sleep it."""
        now = self._clock()
        if self._down_since is None:
            self._down_since = now
        down = now - self._down_since
        if self.give_up_after and down >= self.give_up_after:
            log.error(
                "giving up: cannot reach %s for %.0fs (--give-up-after %g): %s",
                self.url,
                down,
                self.give_up_after,
                error.detail,
            )
            self.gave_up = True
            self.on_give_up()
            return
        self._tries += 1
        # Jittered within the upper half of the step, so workers restarted together spread out but still back off.
        delay = (self.backoff.ceiling(self._tries) + self.backoff.next_delay(self._tries)) / 2
        if self.give_up_after:
            delay = min(delay, self.give_up_after - down)  # try once more right at the deadline
        log.warning("cannot reach %s: %s; retrying in %.1fs", self.url, error.detail, delay)
        await self._sleep(delay)


async def run(args: argparse.Namespace) -> int:
    """Lease and run jobs until a signal (exit code 0) or until the server is gone too long (``EXIT_GAVE_UP``)."""
    client = JobqClient(args.url, token=args.token)
    batched = BatchedSource(client, give_up_after=args.lease)  # finished jobs are settled many per request
    stop = asyncio.Event()
    source = PatientSource(batched, args.url, give_up_after=args.give_up_after, on_give_up=stop.set)
    pool = WorkerPool(
        source,
        registry,
        concurrency=args.concurrency,
        prefetch=prefetch_of(args),
        lease_seconds=args.lease,
        queues=split(args.queues) or None,
        idle_wait=min(30.0, args.lease / 2),
        types=list(registry),  # only the job types this worker has handlers for
        check_every=min(CANCEL_CHECK_SECONDS, args.lease / 3),  # a cancel on the server stops the handler soon
    )

    loop = asyncio.get_running_loop()

    def first_signal(signum: int) -> None:
        running = pool.running()
        log.info(
            "%s received: finishing the %d jobs running (%d more held here are settled or handed back)",
            signal.Signals(signum).name,
            running,
            len(pool.held()) - running,
        )
        hand_to_loop(loop, stop.set)

    def second_signal(signum: int) -> None:
        log.warning("second %s: exiting now; leases of %s will lapse", signal.Signals(signum).name, pool.held())
        exit_now(1)

    signals = StopSignals(first_signal, second_signal)
    signals.install()
    try:
        pool.start()
        log.info(
            "worker %s running %d at once (%d leased ahead) from %s (queues: %s)",
            pool.name,
            args.concurrency,
            pool.prefetch,
            args.url,
            args.queues or "all",
        )
        await stop.wait()
        # Given up, the held jobs' leases are gone: stop rather than finish work nobody will take.
        drain_timeout = min(args.drain_timeout, GAVE_UP_DRAIN_SECONDS) if source.gave_up else args.drain_timeout
        report = await pool.drain(drain_timeout, run_waiting=False)
        log.info(
            "worker stopped: %d jobs finished while draining, %d released", report.finished, len(report.unfinished)
        )
        await batched.close(timeout=0 if source.gave_up else None)
        await client.close()
    finally:
        signals.uninstall()
    if source.refused:
        log.error(
            "exiting with code %d: set a worker token (--token or JOBQ_WORKER_TOKEN) for %s", EXIT_REFUSED, args.url
        )
        return EXIT_REFUSED
    if source.gave_up:
        log.error("exiting with code %d: no jobq server at %s", EXIT_GAVE_UP, args.url)
        return EXIT_GAVE_UP
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "python -m jobq.sdk.remote_worker") -> int:
    """Parse the flags, import the handler modules and run until stopped. Returns the exit code.

    ``prog`` is how the command is named in usage messages (``jobq worker`` from the CLI).
    """
    args = build_parser(prog).parse_args(argv)
    logformat.setup(args.log_level, args.log_format)
    try:
        load_handler_modules(split(args.handlers))
    except HandlersFailed as exc:
        log.error("cannot load handlers: %s", exc.detail)
        return 2
    return leave(eventloop.run(run(args)))


if __name__ == "__main__":
    sys.exit(main())
