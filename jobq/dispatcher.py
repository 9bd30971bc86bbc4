"""The bulk dispatcher: submit many jobs over HTTP, wait for them to finish, and report.

    jobq dispatch --jobs 10000 --concurrency 64 --type noop

(``python -m jobq.dispatcher`` runs the same, with the same flags.)

``concurrency`` submitter tasks share one ``aiohttp.ClientSession`` whose
connector holds that many connections. Each job is sent once (no retries), so
every refusal is counted where it happened: by HTTP status code (``503``), or
by what went wrong on the wire (``connection refused``, ``timeout``, ...).

Waiting polls ``GET /status/{id}`` only for accepted jobs not yet seen
finished, ``concurrency`` requests at a time and in submission order; a window
of polls that finds nothing finished ends the round and the next one starts
after a backoff, so a backed-up queue is not flooded with status requests.

Latency is measured on the server's clock, from a job's ``created_at`` (when
the server accepted it) to its ``finished_at``; both are RFC 3339 with
millisecond resolution. The exit code is 0 only if every job was accepted and,
unless ``--no-wait``, every accepted job completed.

Against a server with tokens, every request (enqueue and status) carries
``Authorization: Bearer <token>``: a client (or admin) token from ``JOBQ_TOKEN``,
or ``--token``, which, like any flag, shows in ``ps``. Without one, or with a
token the server does not know, each job is counted as a ``401`` refusal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
from tqdm import tqdm

from jobq import eventloop
from jobq.auth import TOKEN_PATTERN
from jobq.config import http_url, parse_bool, positive
from jobq.job import parse_rfc3339

ENV_PREFIX = "JOBQ_DISPATCH_"
SHARED_URL_ENV = "JOBQ_URL"
TOKEN_ENV = "JOBQ_TOKEN"  # the client token, as the server and JobqClient name it
ACCEPTED_CODES = frozenset({200, 202})
TERMINAL_STATUSES = frozenset({"completed", "failed", "dead", "cancelled"})
MISSING = "missing"  # GET /status answered 404: the job was purged (retention) or never stored
UNFINISHED = "unfinished"  # last seen still waiting or running when the wait timed out
LATENCY_SOURCE = "server clock: job created_at -> finished_at (RFC 3339, ms resolution)"
POLL_BACKOFF_MIN = 0.02
POLL_BACKOFF_MAX = 0.5


@dataclass(frozen=True)
class DispatchConfig:
    """What to submit, where, and how hard."""

    url: str = "http://127.0.0.1:8080"
    jobs: int = 1000
    concurrency: int = 64
    job_type: str = "noop"
    payload: Any = field(default_factory=dict)
    batch: int = 1  # jobs per request; above 1, POST /enqueue/batch is used
    timeout: float = 60.0  # per HTTP request, and for the whole wait for completion
    wait: bool = True
    as_json: bool = False
    progress: bool | None = None  # None: shown when stderr is a terminal
    token: str | None = field(default=None, repr=False)  # bearer token (client or admin role); None: send none


def auth_headers(config: DispatchConfig) -> dict[str, str]:
    """The ``Authorization`` header every request carries when the config has a token (else none)."""
    return {"Authorization": f"Bearer {config.token}"} if config.token else {}


@dataclass(frozen=True, slots=True)
class Finished:
    """A job as last seen by the waiter."""

    status: str
    created_at: float | None = None
    finished_at: float | None = None


@dataclass
class Summary:
    """What a dispatch achieved; ``to_dict()`` is the ``--json`` output."""

    url: str
    submitted: int
    accepted: int
    submit_seconds: float
    failures: dict[str, int]
    waited: bool
    statuses: dict[str, int] = field(default_factory=dict)
    completed: int = 0
    completion_seconds: float | None = None
    latency_seconds: dict[str, float] | None = None
    latency_source: str = LATENCY_SOURCE
    poll_errors: dict[str, int] = field(default_factory=dict)

    @property
    def submitted_per_second(self) -> float:
        return self.submitted / self.submit_seconds if self.submit_seconds > 0 else 0.0

    @property
    def completed_per_second(self) -> float | None:
        """Completed jobs over the server-clock span from the first created_at to the last finished_at."""
        if not self.completion_seconds or not self.completed:
            return None
        return self.completed / self.completion_seconds

    @property
    def ok(self) -> bool:
        """True when nothing was refused and (if waited for) every accepted job completed."""
        if self.failures or self.accepted != self.submitted:
            return False
        return not self.waited or self.completed == self.accepted

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["submitted_per_second"] = _round(self.submitted_per_second)
        data["completed_per_second"] = _round(self.completed_per_second)
        data["ok"] = self.ok
        return data

    def render(self) -> str:
        """The human-readable summary."""
        lines = [
            f"target:        {self.url}",
            f"submitted:     {self.submitted} in {self.submit_seconds:.3f}s ({self.submitted_per_second:,.0f}/s)",
            f"accepted:      {self.accepted}",
            f"failures:      {_render_counts(self.failures) or 'none'}",
        ]
        if self.waited:
            rate = self.completed_per_second
            lines += [
                f"completed:     {self.completed}" + (f" ({rate:,.0f}/s, server clock)" if rate else ""),
                f"final status:  {_render_counts(self.statuses) or 'none'}",
                f"latency:       {_render_latency(self.latency_seconds)}",
                f"               ({self.latency_source})",
            ]
            if self.poll_errors:
                lines.append(f"poll errors:   {_render_counts(self.poll_errors)}")
        else:
            lines.append("completion:    not waited for (--no-wait)")
        lines.append("result:        " + ("ok" if self.ok else "NOT OK"))
        return "\n".join(lines)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _render_counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{key}: {count}" for key, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _render_latency(latency: Mapping[str, float] | None) -> str:
    if not latency:
        return "n/a (no job completed)"
    return "  ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in latency.items())


# -- submitting -------------------------------------------------------------


@dataclass
class Tally:
    """What the submitters saw: ids of accepted jobs, and refusals by cause."""

    accepted: list[str] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)


def describe_error(exc: BaseException) -> str:
    """A short, stable name for a transport failure (one category of the summary)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return "connection refused"
        return "connection error"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    if isinstance(exc, ValueError | LookupError | TypeError | aiohttp.ClientPayloadError):
        return "bad response"  # not JSON, or JSON without the fields a jobq answer has
    return f"client error ({type(exc).__name__})"


def chunk_sizes(jobs: int, batch: int) -> Iterator[int]:
    """Split ``jobs`` into requests of ``batch`` jobs (the last one may be smaller)."""
    size = max(batch, 1)
    for start in range(0, jobs, size):
        yield min(size, jobs - start)


class Submitter:
    """Sends jobs: one per ``POST /enqueue``, or ``batch`` per ``POST /enqueue/batch``."""

    def __init__(self, session: aiohttp.ClientSession, config: DispatchConfig, tally: Tally) -> None:
        self.session = session
        self.config = config
        self.tally = tally
        self.base = config.url.rstrip("/")
        self._one = json.dumps({"type": config.job_type, "payload": config.payload}).encode()
        self._headers = {"Content-Type": "application/json", **auth_headers(config)}
        self._bodies: dict[int, bytes] = {}

    def batch_body(self, size: int) -> bytes:
        """The ``/enqueue/batch`` body for ``size`` jobs (built once per size)."""
        body = self._bodies.get(size)
        if body is None:
            job = {"type": self.config.job_type, "payload": self.config.payload}
            body = self._bodies[size] = json.dumps({"jobs": [job] * size}).encode()
        return body

    async def send(self, size: int) -> None:
        """Submit ``size`` jobs in one request and record each one's outcome."""
        try:
            if self.config.batch > 1:
                await self._send_batch(size)
            else:
                await self._send_one()
        except (aiohttp.ClientError, TimeoutError, ValueError, LookupError, TypeError) as exc:
            self.tally.failures[describe_error(exc)] += size

    async def _send_one(self) -> None:
        status, body = await self._post("/enqueue", self._one)
        if status in ACCEPTED_CODES:
            self.tally.accepted.append(str(body["id"]))
        else:
            self.tally.failures[str(status)] += 1

    async def _send_batch(self, size: int) -> None:
        status, body = await self._post("/enqueue/batch", self.batch_body(size))
        if status != 200:
            self.tally.failures[str(status)] += size
            return
        answers = [(int(r["code"]), r.get("id")) for r in body["results"]]  # read it all before counting any
        for code, job_id in answers:
            if code in ACCEPTED_CODES:
                self.tally.accepted.append(str(job_id))
            else:
                self.tally.failures[str(code)] += 1

    async def _post(self, path: str, body: bytes) -> tuple[int, Any]:
        async with self.session.post(self.base + path, data=body, headers=self._headers) as response:
            raw = await response.read()
            return response.status, json.loads(raw) if response.status in ACCEPTED_CODES else None


async def submit_all(submitter: Submitter, progress: tqdm) -> float:
    """Send every job with ``concurrency`` tasks; returns the seconds it took."""
    sizes = chunk_sizes(submitter.config.jobs, submitter.config.batch)

    async def run() -> None:
        for size in sizes:  # one iterator shared by every task: each chunk is sent once
            await submitter.send(size)
            progress.update(size)

    started = time.perf_counter()
    await asyncio.gather(*(run() for _ in range(max(submitter.config.concurrency, 1))))
    return time.perf_counter() - started


# -- waiting ----------------------------------------------------------------


class Waiter:
    """Polls ``GET /status/{id}`` for jobs not yet seen finished, until all are or time runs out."""

    def __init__(self, session: aiohttp.ClientSession, config: DispatchConfig) -> None:
        self.session = session
        self.base = config.url.rstrip("/")
        self.window = max(config.concurrency, 1)
        self.timeout = config.timeout
        self.headers = auth_headers(config)
        self.errors: Counter[str] = Counter()

    async def wait(self, ids: Sequence[str], progress: tqdm) -> dict[str, Finished]:
        """Each job's final state; jobs still waiting or running at the deadline are ``unfinished``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        pending = list(ids)
        seen: dict[str, Finished] = {}
        backoff = POLL_BACKOFF_MIN
        while pending and loop.time() < deadline:
            pending, finished = await self._round(pending)
            seen.update(finished)
            progress.update(len(finished))
            if not finished:
                await asyncio.sleep(min(backoff, max(deadline - loop.time(), 0.0)))
                backoff = min(backoff * 2, POLL_BACKOFF_MAX)
            else:
                backoff = POLL_BACKOFF_MIN
        seen.update((job_id, Finished(UNFINISHED)) for job_id in pending)
        return seen

    async def _round(self, pending: list[str]) -> tuple[list[str], dict[str, Finished]]:
        """Poll in windows of ``concurrency``; stop at the first window in which nothing had finished."""
        finished: dict[str, Finished] = {}
        for start in range(0, len(pending), self.window):
            window = pending[start : start + self.window]
            states = await asyncio.gather(*(self._poll(job_id) for job_id in window))
            found = {job_id: state for job_id, state in zip(window, states, strict=True) if state is not None}
            finished.update(found)
            if not found:
                break
        return [job_id for job_id in pending if job_id not in finished], finished

    async def _poll(self, job_id: str) -> Finished | None:
        """The job's final state, or None while it is still waiting or running (or the poll failed)."""
        try:
            async with self.session.get(f"{self.base}/status/{job_id}", headers=self.headers) as response:
                raw = await response.read()
                if response.status == 404:
                    return Finished(MISSING)
                if response.status != 200:
                    self.errors[str(response.status)] += 1
                    return None
                job = json.loads(raw)
                if job["status"] not in TERMINAL_STATUSES:
                    return None
                return Finished(job["status"], parse_rfc3339(job["created_at"]), parse_rfc3339(job["finished_at"]))
        except (aiohttp.ClientError, TimeoutError, ValueError, LookupError, TypeError) as exc:
            self.errors[describe_error(exc)] += 1
            return None


# -- summarising ------------------------------------------------------------


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty sequence."""
    rank = max(math.ceil(fraction * len(ordered)), 1)
    return ordered[rank - 1]


def latency_percentiles(jobs: Sequence[Finished]) -> dict[str, float] | None:
    """p50/p95/p99 of created_at -> finished_at over completed jobs (None if there are none)."""
    spans = sorted(
        j.finished_at - j.created_at
        for j in jobs
        if j.status == "completed" and j.finished_at is not None and j.created_at is not None
    )
    if not spans:
        return None
    return {name: round(percentile(spans, q), 6) for name, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))}


def completion_span(jobs: Sequence[Finished]) -> float | None:
    """Seconds from the first job's created_at to the last completed job's finished_at (server clock)."""
    done = [j for j in jobs if j.status == "completed" and j.finished_at is not None and j.created_at is not None]
    if not done:
        return None
    first = min(j.created_at for j in done if j.created_at is not None)
    last = max(j.finished_at for j in done if j.finished_at is not None)
    return max(last - first, 0.001)  # ms timestamps: a tiny run could span "0"


def summarise(
    config: DispatchConfig, tally: Tally, submit_seconds: float, seen: Mapping[str, Finished] | None
) -> Summary:
    """Fold what the submitters and the waiter saw into a Summary."""
    summary = Summary(
        url=config.url,
        submitted=config.jobs,
        accepted=len(tally.accepted),
        submit_seconds=round(submit_seconds, 6),
        failures=dict(tally.failures),
        waited=seen is not None,
    )
    if seen is not None:
        jobs = list(seen.values())
        summary.statuses = dict(Counter(j.status for j in jobs))
        summary.completed = summary.statuses.get("completed", 0)
        span = completion_span(jobs)
        summary.completion_seconds = None if span is None else round(span, 6)
        summary.latency_seconds = latency_percentiles(jobs)
    return summary


# -- running ----------------------------------------------------------------


def progress_bar(config: DispatchConfig, total: int, what: str) -> tqdm:
    """A tqdm bar on stderr, shown only when stderr is a terminal (unless forced)."""
    show = sys.stderr.isatty() if config.progress is None else config.progress
    return tqdm(total=total, desc=what, unit="job", disable=not show, file=sys.stderr, leave=False)


def open_session(config: DispatchConfig) -> aiohttp.ClientSession:
    """One session; its connector holds ``concurrency`` connections to the server."""
    limit = max(config.concurrency, 1)
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit)
    timeout = aiohttp.ClientTimeout(total=config.timeout)
    return aiohttp.ClientSession(connector=connector, timeout=timeout)


async def dispatch(config: DispatchConfig) -> Summary:
    """Submit ``config.jobs`` jobs, wait for them unless told not to, and summarise."""
    tally = Tally()
    async with open_session(config) as session:
        with progress_bar(config, config.jobs, "submitting") as bar:
            submit_seconds = await submit_all(Submitter(session, config, tally), bar)
        seen = None
        poll_errors: Counter[str] = Counter()
        if config.wait and tally.accepted:
            waiter = Waiter(session, config)
            with progress_bar(config, len(tally.accepted), "completing") as bar:
                seen = await waiter.wait(tally.accepted, bar)
            poll_errors = waiter.errors
        elif config.wait:
            seen = {}
    summary = summarise(config, tally, submit_seconds, seen)
    summary.poll_errors = dict(poll_errors)
    return summary


# -- command line -----------------------------------------------------------


def switch_value(text: str) -> bool:
    """A switch's environment variable: yes/no words, or empty for no."""
    return bool(text.strip()) and parse_bool(text)


def json_value(text: str) -> Any:
    """A JSON document given on the command line."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None


# flag, config field, parse, help
_OPTIONS: tuple[tuple[str, str, Callable[[str], Any], str], ...] = (
    ("--jobs", "jobs", positive(int), "how many jobs to submit"),
    ("--concurrency", "concurrency", positive(int), "submitter tasks, connections and status polls at once"),
    ("--type", "job_type", str, "job type (a registered handler)"),
    ("--payload", "payload", json_value, "job payload as JSON"),
    ("--batch", "batch", positive(int), "jobs per request; above 1, POST /enqueue/batch is used"),
    ("--timeout", "timeout", positive(float), "seconds per HTTP request, and to wait for the jobs to finish"),
)


# flag, destination, help
_SWITCHES: tuple[tuple[str, str, str], ...] = (
    ("--no-wait", "no_wait", "only submit; do not wait for the jobs to finish"),
    ("--json", "as_json", "print the summary as JSON"),
)


def _env_default(
    parser: argparse.ArgumentParser, environ: Mapping[str, str], name: str, parse: Any, default: Any
) -> Any:
    """The value of environment variable ``name`` parsed, or ``default``; a bad value is a usage error."""
    raw = environ.get(name)
    if raw is None:
        return default
    try:
        return parse(raw)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        parser.error(f"{name}={raw!r}: {exc}")


def build_parser(environ: Mapping[str, str], prog: str = "python -m jobq.dispatcher") -> argparse.ArgumentParser:
    """The dispatcher's argument parser; each flag's default comes from its environment variable."""
    defaults = DispatchConfig()
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Submit many jobs to a jobq server over HTTP, wait for them to finish, and report "
        "throughput, failures by HTTP status and latency. Exits 1 if any job was refused or did not complete.",
    )
    url_env = ENV_PREFIX + "URL"
    url = _env_default(parser, environ, url_env, http_url, environ.get(SHARED_URL_ENV, defaults.url))
    parser.add_argument(
        "--url",
        type=http_url,
        default=url,
        help=f"jobq server base URL [env {url_env} or {SHARED_URL_ENV}; default {defaults.url}]",
    )
    for flag, name, parse, text in _OPTIONS:
        env = ENV_PREFIX + flag.removeprefix("--").upper().replace("-", "_")
        shown = json.dumps(getattr(defaults, name)) if name == "payload" else getattr(defaults, name)
        default = _env_default(parser, environ, env, parse, getattr(defaults, name))
        parser.add_argument(flag, dest=name, type=parse, default=default, help=f"{text} [env {env}; default {shown}]")
    for flag, name, text in _SWITCHES:
        env = ENV_PREFIX + flag.removeprefix("--").upper().replace("-", "_")
        default = _env_default(parser, environ, env, switch_value, False)
        parser.add_argument(flag, dest=name, action="store_true", default=default, help=f"{text} [env {env}=1]")
    parser.add_argument(
        "--token",
        default=environ.get(TOKEN_ENV),
        help="bearer token of the client (or admin) role, sent with every request; prefer the variable, "
        f"as flags show in ps [env {TOKEN_ENV}; default none]",
    )
    return parser


def clean_token(parser: argparse.ArgumentParser, token: str | None) -> str | None:
    """The token stripped (None when empty); one that cannot travel in a header is a usage error.

    The message never shows the token.
    """
    token = (token or "").strip()
    if not token:
        return None
    if not TOKEN_PATTERN.fullmatch(token):
        parser.error(
            f"the token (--token or {TOKEN_ENV}) may hold only letters, digits and - . _ ~ + / (then = padding)"
        )
    return token


def parse_config(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    prog: str = "python -m jobq.dispatcher",
) -> DispatchConfig:
    """Flags first, then ``JOBQ_DISPATCH_*`` (and ``JOBQ_URL``, ``JOBQ_TOKEN``), then the defaults."""
    parser = build_parser(os.environ if environ is None else environ, prog)
    args = parser.parse_args(argv)
    return DispatchConfig(
        url=args.url,
        jobs=args.jobs,
        concurrency=args.concurrency,
        job_type=args.job_type,
        payload=args.payload,
        batch=args.batch,
        timeout=args.timeout,
        wait=not args.no_wait,
        as_json=args.as_json,
        token=clean_token(parser, args.token),
    )


def main(argv: Sequence[str] | None = None, prog: str = "python -m jobq.dispatcher") -> int:
    """Run a dispatch and print its summary; 0 if everything was accepted and completed, else 1.

    ``prog`` is how the command is named in usage messages (``jobq dispatch`` from the CLI).
    """
    config = parse_config(argv, prog=prog)
    try:
        summary = eventloop.run(dispatch(config))
    except KeyboardInterrupt:  # Ctrl+C: the jobs sent stay accepted; there is no summary to print
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    print(json.dumps(summary.to_dict(), indent=2) if config.as_json else summary.render())
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
