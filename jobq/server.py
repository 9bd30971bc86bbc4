"""The jobq server process: flags, signals, graceful drain. ``python main.py`` and ``jobq serve`` run it.

``jobq serve --help`` (or ``python main.py --help``) lists every flag and its JOBQ_* variable.

SIGINT/SIGTERM drain: new jobs are refused (503), accepted ones finish (up to
``--drain-timeout``), then the process exits 0 and logs how many it drained and
which jobs, if any, it left unfinished. A second signal stops it at once with
exit code 1, naming the jobs it abandoned.

Without tokens (JOBQ_TOKEN, JOBQ_WORKER_TOKEN, JOBQ_ADMIN_TOKEN, --tokens-file)
jobq serves on a loopback address only; a non-loopback --host needs tokens, or
--insecure to serve without them anyway.

Exit codes: 0 after a drain, 1 after a forced stop or a failed drain, 2 when
it cannot start (bad flag or variable, tokens, an exposed host without tokens,
handler module, store URL, busy port).
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from jobq import eventloop, logformat, logs, nodes
from jobq.api import METRICS, SERVICE
from jobq.app import Runner, create_app
from jobq.auth import TokenBook, TokenError
from jobq.config import Config
from jobq.errors import HandlersFailed, JobqError
from jobq.faktory.server import FaktoryServer
from jobq.handlers import load_handler_modules
from jobq.job import WAITING
from jobq.rpc.server import GrpcServer, start_grpc_server
from jobq.service import JobService
from jobq.stopping import StopSignals, exit_now, hand_to_loop, leave
from jobq.store import without_password

log = logging.getLogger("jobq")

EXIT_OK = 0
EXIT_FORCED = 1
EXIT_CANNOT_START = 2
HTTP_GRACE_SECONDS = 5.0  # after the drain, how long in-flight HTTP requests get to finish
GRPC_GRACE_SECONDS = 5.0  # after the drain, how long running gRPC calls get to finish
MAX_IDS_LOGGED = 50  # a shutdown log line names at most this many jobs, then counts the rest


def is_durable(config: Config) -> bool:
    """Whether jobs outlive the process (every store but ``memory://``)."""
    return not config.store.startswith("memory:")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``): reachable from this machine only."""
    bare = host.strip().strip("[]")
    if bare.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False  # a name that may resolve anywhere counts as exposed


def exposure_problem(config: Config, tokens: TokenBook) -> str | None:
    """Why jobq must not serve ``config.host`` as configured, or None when it may."""
    if tokens or config.insecure or is_loopback(config.host):
        return None
    return (
        f"--host {config.host} is not a loopback address and no tokens are configured, so anyone who can "
        "reach it could enqueue, read, cancel and delete jobs. Set JOBQ_TOKEN, JOBQ_WORKER_TOKEN and "
        "JOBQ_ADMIN_TOKEN (or --tokens-file), or pass --insecure to serve without tokens anyway"
    )


def load_tokens(config: Config) -> TokenBook | None:
    """The tokens from the environment and ``--tokens-file``; None (logged) when they cannot be used."""
    try:
        return TokenBook.load(os.environ, config.tokens_file)
    except TokenError as exc:
        log.error("jobq cannot start: %s", exc)
        return None


def log_security(config: Config, tokens: TokenBook) -> None:
    if tokens:
        log.info("bearer tokens required: %s", tokens.describe())
    elif is_loopback(config.host):
        log.info("no tokens configured: every route is open, on loopback %s only", config.host)
    else:
        log.warning("--insecure: serving %s without tokens; anyone who can connect may do anything", config.host)


def tune_gc() -> None:
    """Tune the garbage collector for a long-running server, once startup is done.

    What startup built lives as long as the process, so ``gc.freeze()`` takes it out
    of every later collection; and a young collection per 20,000 allocations instead
    of 700 (a request allocates about a hundred objects) stops the collector from
    scanning the queued jobs over and over. Measured in docs/benchmarks.md.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def name_jobs(ids: Sequence[str], total: int | None = None) -> str:
    """``a, b, c`` for a log line, cut short after ``MAX_IDS_LOGGED`` ids with a count of the rest."""
    total = len(ids) if total is None else total
    shown = ", ".join(ids[:MAX_IDS_LOGGED]) or "none"
    rest = total - min(len(ids), MAX_IDS_LOGGED)
    return f"{shown} and {rest} more" if rest > 0 else shown


class Shutdown:
    """Turns the first SIGINT/SIGTERM into a drain request and the second into an immediate exit.

    Both are handled as they arrive, even while a job blocks the event loop (jobq/stopping.py):
    the first is logged and sets ``requested`` on the loop; the second exits.
    """

    def __init__(self, service: JobService, config: Config) -> None:
        self.service = service
        self.config = config
        self.requested = asyncio.Event()
        self.signals = StopSignals(self._first, self._second)
        self._loop = asyncio.get_running_loop()

    def _first(self, signum: int) -> None:
        log.info(
            "%s received: refusing new jobs and finishing the accepted ones (waiting up to %gs); "
            "send it again to stop at once",
            signal.Signals(signum).name,
            self.config.drain_timeout,
        )
        hand_to_loop(self._loop, self.requested.set)

    def _second(self, signum: int) -> None:
        held = self.service.pool.held()
        if is_durable(self.config):
            fate = "the store keeps them and they run again from the start, as do the jobs still waiting"
        else:
            fate = "the memory store keeps nothing, so they are lost, as are the jobs still waiting"
        remote = self.service.held_remotely()
        log.warning(
            "second %s: stopping at once; %d jobs in progress here did not finish: %s; %s. "
            "%d jobs leased to remote workers run on; if they are not settled, they run again once "
            "their lease lapses: %s",
            signal.Signals(signum).name,
            len(held),
            name_jobs(held),
            fate,
            len(remote),
            name_jobs(remote),
        )
        exit_now(EXIT_FORCED)


async def serve(config: Config, tokens: TokenBook | None = None) -> int:
    """Serve until a signal, then drain and stop. Returns the exit code."""
    try:
        app = create_app(config, tokens=tokens or None)
    except ImportError as exc:
        log.error(
            "jobq cannot start: the backend for store %s is not available: %s", without_password(config.store), exc
        )
        return EXIT_CANNOT_START
    except (JobqError, ValueError) as exc:
        log.error("jobq cannot start: %s", exc)
        return EXIT_CANNOT_START
    service = app[SERVICE]
    shutdown = Shutdown(service, config)
    shutdown.signals.install()
    # handler_cancellation: a client that hangs up mid long-poll must not be leased jobs it will never see.
    runner = Runner(
        app,
        access_log=logging.getLogger(logs.ACCESS_LOGGER) if config.access_log else None,
        access_log_class=logs.AccessLogger,
        handle_signals=False,
        shutdown_timeout=HTTP_GRACE_SECONDS,
        handler_cancellation=True,
    )
    try:
        await runner.setup()
    except (JobqError, OSError) as exc:
        log.error("jobq cannot start: store %s cannot be opened: %s", without_password(config.store), exc)
        await runner.cleanup()
        return EXIT_CANNOT_START
    if config.schedules:
        try:
            defined = await service.schedules.load_file(Path(config.schedules))
        except JobqError as exc:
            log.error("jobq cannot start: %s", exc.detail)
            await runner.cleanup()
            return EXIT_CANNOT_START
        log.info("%d schedules defined from %s", defined, config.schedules)
    # HTTP starts listening last: once GET /health answers, gRPC and Faktory clients can connect too.
    grpc_server: GrpcServer | None = None
    faktory: FaktoryServer | None = None
    what, port = "gRPC", config.grpc_port  # what is being started, for the error
    try:
        if config.grpc_port:
            grpc_server = await start_grpc_server(
                service,
                config.host,
                config.grpc_port,
                tokens=tokens or None,
                metrics=app.get(METRICS),
                max_message_bytes=config.body_limit,
            )
            service.listening["grpc"] = f"{config.host}:{grpc_server.port}"
        what, port = "the Faktory protocol", config.faktory_port
        if config.faktory_port:
            faktory = start_faktory(app, tokens)
            await faktory.start(config.host, config.faktory_port)
            service.listening["faktory"] = f"{config.host}:{faktory.port}"
        what, port = "HTTP", config.port
        await web.TCPSite(runner, config.host, config.port).start()
    except OSError as exc:
        log.error("jobq cannot listen on %s port %d for %s: %s", config.host, port, what, exc.strerror or exc)
        if faktory is not None:
            await faktory.stop()
        if grpc_server is not None:
            await grpc_server.stop(0)
        await runner.cleanup()
        return EXIT_CANNOT_START
    http = ", ".join(f"http://{host}:{port}" for host, port, *_ in runner.addresses)
    service.listening = {"http": http, **service.listening}  # HTTP first on the node's card, as before
    log.info(
        "jobq serving on %s with %d workers, store %s",
        service.listening["http"],
        config.workers,
        without_password(config.store),
    )
    tune_gc()
    await nodes.announce(service)  # with the addresses it listens on

    await shutdown.requested.wait()
    if grpc_server is not None:
        await grpc_server.begin_shutdown()  # health checks answer NOT_SERVING while jobs drain
    code = await drain_and_report(service, config)  # Faktory workers are told "quiet" meanwhile
    if faktory is not None:
        await faktory.stop()
    if grpc_server is not None:
        await grpc_server.stop(GRPC_GRACE_SECONDS)
    await runner.cleanup()
    log.info("jobq stopped")
    return code


def start_faktory(app: web.Application, tokens: TokenBook | None) -> FaktoryServer:
    """The Faktory protocol listener for the app's service, counted in its metrics (not yet listening)."""
    metrics = app.get(METRICS)
    faktory = FaktoryServer(
        app[SERVICE],
        tokens=tokens,
        observe=metrics.faktory_observe if metrics is not None else None,
        max_line=app[SERVICE].config.body_limit,
    )
    if metrics is not None:
        metrics.state.faktory_connections = lambda: faktory.connections
    return faktory


async def drain_and_report(service: JobService, config: Config) -> int:
    """Finish accepted jobs (up to the drain timeout) and log what was and was not done."""
    started = time.monotonic()
    try:
        report = await service.drain()
    except Exception:
        log.exception("draining failed; stopping without finishing the accepted jobs")
        return EXIT_FORCED
    log.info("drained %d jobs in %.1fs", report.finished, time.monotonic() - started)
    if report.unfinished:
        if is_durable(config):
            fate = "they run again from the beginning when jobq next starts (or on another jobq sharing the store)"
        else:
            fate = "the memory store keeps nothing, so they are lost"
        log.warning(
            "%d jobs did not finish within the %gs drain timeout: %s; %s",
            len(report.unfinished),
            config.drain_timeout,
            name_jobs(report.unfinished),
            fate,
        )
    try:
        await log_waiting(service, config, set(report.unfinished))
    except Exception:
        log.exception("counting the jobs still waiting failed")
    return EXIT_OK


async def log_waiting(service: JobService, config: Config, stopped: set[str]) -> None:
    """Log the jobs that never started: scheduled, retrying, paused, or left over by a drain timeout."""
    stats = await service.store.stats()
    total = stats.waiting - len(stopped)
    if total <= 0:
        return
    if is_durable(config):
        log.info("%d jobs are still waiting in the store; they run when jobq next starts (or elsewhere)", total)
        return
    ids: list[str] = []
    for status in sorted(WAITING):
        jobs, _ = await service.store.list_jobs(status=status, limit=MAX_IDS_LOGGED + len(stopped))
        ids.extend(job.id for job in jobs if job.id not in stopped)
    log.warning(
        "%d jobs were still waiting and never started; the memory store keeps nothing, so they are lost: %s",
        total,
        name_jobs(ids, total),
    )


def load_handlers(modules: Sequence[str]) -> bool:
    """Import each ``--handlers`` module; on failure, log which one and why, and return False."""
    try:
        load_handler_modules(modules)
    except HandlersFailed as exc:
        cause = exc.__cause__
        log.error("jobq cannot start: %s", exc.detail, exc_info=None if isinstance(cause, ImportError) else cause)
        return False
    return True


def main(argv: Sequence[str] | None = None, prog: str = "python main.py") -> int:
    """Parse the configuration, load handler modules, and serve. Returns the exit code.

    ``prog`` is how the command is named in usage messages (``jobq serve`` from the CLI).
    """
    config = Config.from_args(argv, prog=prog)
    logformat.setup(config.log_level, config.log_format)
    tokens = load_tokens(config)
    if tokens is None:
        return EXIT_CANNOT_START
    problem = exposure_problem(config, tokens)
    if problem:
        log.error("jobq cannot start: %s", problem)
        return EXIT_CANNOT_START
    log_security(config, tokens)
    if not load_handlers(config.handlers):
        return EXIT_CANNOT_START
    try:
        return leave(eventloop.run(serve(config, tokens)))
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        log.warning("interrupted while starting")
        return 128 + signal.SIGINT
