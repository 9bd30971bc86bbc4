"""jobq beside peer job queues (dramatiq, arq, SAQ, RQ, pgqueuer, procrastinate): no-op jobs, measured in the same run.

    .venv/bin/python bench/peers/run.py                       # 3 rounds of 20,000 jobs, every setup (about 20 minutes)
    .venv/bin/python bench/peers/run.py --quick               # a smoke run: 2,000 jobs, 1 round
    .venv/bin/python bench/peers/run.py --peers dramatiq,pgqueuer --jobq inprocess --rounds 5 --json out.json
    .venv/bin/python bench/peers/run.py --peers pgqueuer,procrastinate --jobq inprocess,pg1,pg2 \
        --versus pgqueuer,procrastinate,jobq-pg1         # jobq on PostgreSQL: one node, two nodes
    .venv/bin/python bench/peers/run.py --peers pgqueuer --jobq pg1,pg2 --jobq-args "--prefetch 32"
    .venv/bin/python bench/peers/run.py --peers dramatiq,arq,saq,rq --jobq inprocess,redis1,redis2 \
        --versus best-peer,jobq-redis1                   # jobq on Redis: one node, two nodes

Each peer runs in a virtual environment of its own, ``bench/peers/.venvs/<peer>`` (``--venvs``),
made with ``python3 -m venv`` and ``bench/peers/requirements-<peer>.txt`` (exact versions) the first
time, and again whenever that file changes; nothing is installed into jobq's ``.venv``. The Redis
peers (dramatiq, arq, SAQ, RQ) use the Redis database of ``--redis-url`` (emptied before each
measurement), the PostgreSQL ones (pgqueuer, procrastinate) the database of ``--postgres-url``
(dropped and created again before each measurement). jobq's rows run ``.venv/bin/jobq`` of
``--jobq-tree`` on a fresh SQLite file each, but ``pg1`` and ``pg2``: those run one and two
``jobq serve`` processes (in-process workers at their defaults) on the database of
``--postgres-url`` (schema ``jobq``), dropped and created again before each measurement as for the
peers; with two, the backlog is enqueued and the queue paused and resumed through the first, and
both lease from the shared database. ``--jobq-args`` adds flags to every ``jobq serve`` (such as
``--prefetch 32``); the settings column names them. ``redis1`` and ``redis2`` are the same on the
Redis database of ``--redis-url`` (the one the Redis peers use), emptied before each measurement,
each measurement with a key prefix of its own (``?prefix=jobq-peers-<row>-<round>``).

One measurement: N no-op jobs are enqueued first (each library's fastest way to enqueue many;
for jobq ``POST /enqueue/batch`` of 1,000 into a paused queue), then the worker starts (for
jobq: the queue is resumed), and the count of unfinished jobs is polled every 20 ms. The rate is
the jobs finished between the first poll at or below 90 % of N and the first at or below 10 %,
over the time between those polls: start-up and the backlog's tail are outside it. Rounds are
interleaved (round 1 runs every setup, then round 2, ...); the table gives each setup's median and
the median of its per-round ratios to dramatiq and to pgqueuer (``--versus``: any rows' keys, such
as ``procrastinate`` or ``jobq-pg1``, or ``best-peer``: the fastest peer of each round), taken within
the same round.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

PEERS = Path(__file__).resolve().parent
BENCH = PEERS.parent
sys.path.insert(0, str(BENCH))  # ahead of bench/peers: ``run`` below is bench/run.py, not this file

import common  # noqa: E402 - bench/peers/common.py
import remote_worker  # noqa: E402 - bench/remote_worker.py
import run as bench  # noqa: E402 - bench/run.py

PEER_NAMES = ("dramatiq", "arq", "saq", "rq", "pgqueuer", "procrastinate")
REDIS_PEERS = {"dramatiq", "arq", "saq", "rq"}
JOBQ_SETUPS = ("worker", "worker-128", "inprocess", "pg1", "pg2", "redis1", "redis2")
PG_NODES = {"pg1": 1, "pg2": 2}  # jobq rows on PostgreSQL: how many ``jobq serve`` share the database
REDIS_NODES = {"redis1": 1, "redis2": 2}  # jobq rows on Redis: how many ``jobq serve`` share the database
BEST_PEER = "best-peer"  # a --versus key: the fastest peer of each round
REFERENCES = ("dramatiq", "pgqueuer")  # the ratio columns, unless --versus names others
JOBQ_BATCH = 1000
QUICK_JOBS = 2000
RUNNING = re.compile(r" running (\d+) at once")  # what ``jobq worker`` logs once it leases


@dataclass
class Measurement:
    """One setup in one round."""

    setup: str
    round: int
    rate: float | None  # jobs/s between the 90 % and 10 % marks
    drain: dict[str, Any]  # common.Drain as a dict
    enqueue_seconds: float
    load_average: tuple[float, float, float]  # at the start of the measurement


@dataclass
class Row:
    """One line of the table: a setup and its measurements."""

    key: str
    label: str
    store: str
    settings: str
    measurements: list[Measurement] = field(default_factory=list)

    def rate(self, round_: int) -> float | None:
        """The jobs/s of one round (None if that round failed)."""
        return next((m.rate for m in self.measurements if m.round == round_), None)

    def median(self) -> float | None:
        """The median of the rounds that gave a rate."""
        rates = [m.rate for m in self.measurements if m.rate is not None]
        return statistics.median(rates) if rates else None


class Setup(Protocol):
    """Something measured in every round: a peer, or one way of running jobq."""

    row: Row

    def measure(self, jobs: int, round_: int, workdir: Path) -> Measurement:
        """Enqueue ``jobs`` no-op jobs, run them, and measure the drain."""
        ...


# -- processes --------------------------------------------------------------------------


class Spawned:
    """A child process in a process group of its own; ``stop`` ends the whole group (a worker's children too)."""

    def __init__(self, command: Sequence[str], env: dict[str, str], log: Path, capture: bool = False) -> None:
        self.log = log
        self._log_file = log.open("ab")
        self.process = subprocess.Popen(
            list(command),
            cwd=PEERS,
            env=env,
            stdout=subprocess.PIPE if capture else self._log_file,
            stderr=self._log_file,
            start_new_session=True,
        )

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM to the group, SIGKILL to whatever is left of it after ``grace`` seconds."""
        self._signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=grace)
        self._signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log_file.close()

    def _signal(self, number: signal.Signals) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, number)

    def tail(self) -> str:
        """The end of the log, for error messages."""
        return self.log.read_text(errors="replace")[-2000:]


@contextmanager
def spawned(command: Sequence[str], env: dict[str, str], log: Path, capture: bool = False) -> Iterator[Spawned]:
    """A :class:`Spawned` process, stopped when the block ends, whatever happens in it."""
    child = Spawned(command, env, log, capture)
    try:
        yield child
    finally:
        child.stop()


def read_line(child: Spawned, timeout: float) -> str:
    """The next line ``child`` prints on stdout (it must come within ``timeout`` seconds)."""
    assert child.process.stdout is not None
    ready, _, _ = select.select([child.process.stdout], [], [], timeout)
    line = child.process.stdout.readline().decode().strip() if ready else ""
    if not line:
        raise RuntimeError(f"{child.process.args[:3]} said nothing in {timeout:.0f}s: {child.tail()}")
    return line


def last_json(text: str) -> dict[str, Any]:
    """The JSON document on the last non-empty line of ``text`` (libraries may print before it)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise RuntimeError("no answer")
    return json.loads(lines[-1])  # type: ignore[no-any-return]


# -- the peers ---------------------------------------------------------------------------


def ensure_venv(name: str, venvs: Path, python: str) -> Path:
    """The Python of the peer's virtual environment, made (again) when its requirements file changed."""
    venv = venvs / name
    requirements = PEERS / f"requirements-{name}.txt"
    stamp = venv / "installed-requirements.txt"
    wanted = requirements.read_text()
    if stamp.exists() and stamp.read_text() == wanted:
        return venv / "bin" / "python"
    print(f"{name}: creating {venv} from {requirements.name}", file=sys.stderr)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(requirements)], check=True)
    stamp.write_text(wanted)
    return venv / "bin" / "python"


class PeerSetup:
    """A peer library, driven through ``peer.py`` with the peer's own Python."""

    def __init__(self, name: str, python: Path, env: dict[str, str], timeout: float) -> None:
        self.name = name
        self.python = python
        self.env = env
        self.timeout = timeout
        self.info = self.call("info")
        label = f"{self.info['name']} {self.info['version']}"
        self.row = Row(name, label, self.info["store"], self.info["settings"])

    def command(self, *args: str) -> list[str]:
        """``peer.py NAME ARGS...`` with the peer's Python."""
        return [str(self.python), str(PEERS / "peer.py"), self.name, *args]

    def call(self, *args: str) -> dict[str, Any]:
        """Run ``peer.py NAME ARGS...`` to the end; its JSON answer."""
        command = self.command(*args)
        done = subprocess.run(command, cwd=PEERS, env=self.env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} (exit {done.returncode}): {done.stderr[-2000:]}")
        return last_json(done.stdout)

    def measure(self, jobs: int, round_: int, workdir: Path) -> Measurement:
        load = os.getloadavg()
        prepared = self.call("prepare", str(jobs))
        watch = self.command("watch", str(jobs), "--timeout", str(self.timeout))
        name = f"{self.name}-{round_}"
        with spawned(watch, self.env, workdir / f"{name}-watch.log", capture=True) as watcher:
            if read_line(watcher, 60) != "ready":
                raise RuntimeError(f"{self.name}: the watcher did not start: {watcher.tail()}")
            with spawned(self.info["worker"], self.env, workdir / f"{name}-worker.log") as worker:
                out, _ = watcher.process.communicate(timeout=self.timeout + 120)
                if watcher.process.returncode != 0:
                    raise RuntimeError(f"{self.name}: the watcher failed: {watcher.tail()}\n{worker.tail()}")
        drain = last_json(out.decode())
        return Measurement(self.name, round_, drain["rate"], drain, prepared["enqueue_seconds"], load)


# -- jobq ---------------------------------------------------------------------------------


class JobqSetup:
    """jobq of ``tree`` on a fresh SQLite file, with ``jobq worker`` (default concurrency, or 64) or in-process;
    or (``pg1``, ``pg2``) one or two in-process ``jobq serve`` on a fresh PostgreSQL database;
    or (``redis1``, ``redis2``) the same on an emptied Redis database, with a fresh key prefix."""

    def __init__(
        self,
        key: str,
        tree: Path,
        timeout: float,
        postgres_url: str,
        extra: Sequence[str] = (),
        redis_url: str = common.DEFAULT_REDIS_URL,
    ) -> None:
        self.key = key
        self.jobq = str(tree / ".venv" / "bin" / "jobq")
        self.extra = list(extra)  # more ``jobq serve`` flags (--jobq-args)
        self.timeout = timeout
        self.postgres_url = postgres_url
        self.redis_url = redis_url
        self.nodes = PG_NODES.get(key) or REDIS_NODES.get(key, 0)  # 0: SQLite, one process
        self.remote = key.startswith("worker")
        self.concurrency = 128 if key == "worker-128" else None
        label = {
            "worker": "jobq, `jobq worker` at its default concurrency",
            "worker-128": "jobq, `jobq worker --concurrency 128`",
            "inprocess": "jobq in-process, SQLite defaults",
            "pg1": "jobq in-process, PostgreSQL, 1 node",
            "pg2": "jobq in-process, PostgreSQL, 2 nodes",
            "redis1": "jobq in-process, Redis, 1 node",
            "redis2": "jobq in-process, Redis, 2 nodes",
        }[key]
        store = "SQLite (`jobq serve --workers 0`)" if self.remote else "SQLite (`jobq serve`)"
        if self.nodes:
            kind = "Redis" if key in REDIS_NODES else "PostgreSQL"
            store = f"{kind} (`jobq serve`)" if self.nodes == 1 else f"{kind} ({self.nodes} x `jobq serve`)"
        self.row = Row(f"jobq-{key}", label, store, "")

    def server_command(self, store: str, port: int) -> list[str]:
        """``jobq serve`` with the benchmark flags of docs/benchmarks.md (generous limits, no gRPC)."""
        command = [self.jobq, "serve", "--store", store, "--port", str(port), "--grpc-port", "0"]
        command += ["--queue-size", "10000000", "--retention-count", "10000000", "--log-level", "warning"]
        command += ["--workers", "0"] if self.remote else ["--handlers", "jobq_noop"]
        return command + self.extra

    def worker_command(self, url: str) -> list[str]:
        """``jobq worker`` with the no-op handler module, at its default concurrency unless this row sets one."""
        command = [self.jobq, "worker", "--url", url, "--handlers", "jobq_noop"]
        return command + ([] if self.concurrency is None else ["--concurrency", str(self.concurrency)])

    def measure(self, jobs: int, round_: int, workdir: Path) -> Measurement:
        load = os.getloadavg()
        name = f"jobq-{self.key}-{round_}"
        if self.key in REDIS_NODES:
            store = fresh_redis(self.redis_url, f"jobq-peers-{self.key}-{round_}")
        elif self.nodes:
            store = bench.fresh_postgres(self.postgres_url)
        else:
            store = remote_worker.fresh_store("sqlite", workdir)
        servers: list[bench.Server] = []
        try:
            for node in range(1, max(self.nodes, 1) + 1):  # one after the other: the first makes the schema
                port = bench.free_port()
                log = workdir / (f"{name}-node{node}.log" if self.nodes else f"{name}.log")
                servers.append(bench.Server(self.server_command(store, port), port, log, root=PEERS))
                servers[-1].wait_ready()
            server = servers[0]  # enqueues, pauses, resumes and counts for all (the counts are the database's)
            remote_worker.call(server, "POST", "/queues/default/pause")
            enqueue_seconds = enqueue_jobq(server, jobs)
            if not self.remote:
                workers = [remote_worker.call(s, "GET", "/stats")["workers"]["total"] for s in servers]
                each = " each" if len(servers) > 1 else ""
                nodes = f"{len(servers)} process{'es' if len(servers) > 1 else ''}, " if self.nodes else ""
                self.describe(f"{nodes}{workers[0]} in-process workers{each}")
                return self.drain(server, jobs, round_, enqueue_seconds, load)
            with spawned(self.worker_command(server.url), bench.clean_env(PEERS), workdir / f"{name}-w.log") as worker:
                self.describe(f"1 process, {wait_running(worker)} at once")
                return self.drain(server, jobs, round_, enqueue_seconds, load)
        finally:
            for server in servers:
                server.stop()

    def describe(self, settings: str) -> None:
        """Fill the settings column from what the processes said (defaults can change between trees)."""
        self.row.settings = settings + (f", `{shlex.join(self.extra)}`" if self.extra else "")

    def drain(
        self, server: bench.Server, jobs: int, round_: int, enqueue_seconds: float, load: tuple[float, float, float]
    ) -> Measurement:
        """Resume the queue after the first poll and measure as for the peers."""

        def resume() -> None:
            remote_worker.call(server, "POST", "/queues/default/resume")

        result = common.drain(lambda: jobs - finished(server), jobs, self.timeout, resume)
        if result.error is None:
            counts = remote_worker.call(server, "GET", "/stats")["jobs"]
            result.outcome = {status: n for status, n in counts.items() if n}
        return Measurement(self.row.key, round_, result.rate, asdict(result), enqueue_seconds, load)


def fresh_redis(url: str, prefix: str) -> str:
    """Empty the Redis database of ``url`` (as before each Redis peer's measurement); jobq's store URL on it."""
    import redis  # jobq's Redis client: only needed, and imported, when jobq on Redis is measured

    common.redis_db(url)  # never database 0
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
    parts = urlsplit(url)
    query = urlencode([*parse_qsl(parts.query), ("prefix", prefix)])
    return urlunsplit(parts._replace(query=query))


def enqueue_jobq(server: bench.Server, jobs: int) -> float:
    """``POST /enqueue/batch`` of 1,000 no-op jobs until there are ``jobs``; the seconds it took."""
    started = time.perf_counter()
    for offset in range(0, jobs, JOBQ_BATCH):
        body = {"jobs": [{"type": "peers_noop"}] * min(JOBQ_BATCH, jobs - offset)}
        answer = remote_worker.call(server, "POST", "/enqueue/batch", body)
        if answer["rejected"]:
            raise RuntimeError(f"the server refused jobs: {answer['results'][:3]}")
    return round(time.perf_counter() - started, 3)


def finished(server: bench.Server) -> int:
    """Jobs the server counts as finished, whatever the outcome."""
    counts = remote_worker.call(server, "GET", "/stats")["jobs"]
    return sum(counts[s] for s in ("completed", "failed", "dead", "cancelled"))


def wait_running(worker: Spawned, timeout: float = 30.0) -> int:
    """Wait until ``jobq worker`` logs that it runs; the concurrency it names."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.process.poll() is not None:
            raise RuntimeError(f"jobq worker exited with {worker.process.returncode}: {worker.tail()}")
        match = RUNNING.search(worker.log.read_text(errors="replace"))
        if match:
            return int(match[1])
        time.sleep(0.05)
    raise RuntimeError(f"jobq worker not running after {timeout:.0f}s: {worker.tail()}")


# -- the run ----------------------------------------------------------------------------------


def run_rounds(setups: Sequence[Setup], jobs: int, rounds: int, workdir: Path) -> None:
    """Round 1 runs every setup, then round 2, ...; a failed measurement is recorded without a rate."""
    for round_ in range(1, rounds + 1):
        for setup in setups:
            started = time.perf_counter()
            try:
                measurement = setup.measure(jobs, round_, workdir)
            except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
                print(f"round {round_}: {setup.row.key} failed: {exc}", file=sys.stderr)
                error = {"error": str(exc)[-500:]}
                measurement = Measurement(setup.row.key, round_, None, error, 0.0, os.getloadavg())
            setup.row.measurements.append(measurement)
            progress(measurement, time.perf_counter() - started)


def progress(m: Measurement, seconds: float) -> None:
    """One line on stderr per measurement."""
    rate = f"{m.rate:,.0f} jobs/s" if m.rate is not None else f"no rate ({m.drain.get('error')})"
    startup = m.drain.get("startup_seconds")
    print(
        f"round {m.round}: {m.setup}: {rate}; enqueue {m.enqueue_seconds:.1f}s, first job after {startup}s, "
        f"{seconds:.0f}s in all; load average {m.load_average[0]:.2f}",
        file=sys.stderr,
    )


def ratio_cell(row: Row, reference: Row | None, rounds: int) -> str:
    """The median of this row's per-round ratios to ``reference`` (same round only)."""
    if reference is None:
        return "—"
    ratios = []
    for round_ in range(1, rounds + 1):
        mine, theirs = row.rate(round_), reference.rate(round_)
        if mine is not None and theirs:
            ratios.append(mine / theirs)
    return f"{statistics.median(ratios):.2f}x" if ratios else "—"


def best_peer(rows: Sequence[Row], rounds: int) -> Row | None:
    """A row whose rate in each round is the fastest peer's (jobq's rows left out); None without peers."""
    peers = [row for row in rows if not row.key.startswith("jobq-")]
    if not peers:
        return None
    best = Row(BEST_PEER, "the fastest peer of each round", "", "")
    for round_ in range(1, rounds + 1):
        rates = [rate for row in peers if (rate := row.rate(round_)) is not None]
        best.measurements.append(Measurement(BEST_PEER, round_, max(rates, default=None), {}, 0.0, (0.0, 0.0, 0.0)))
    return best


def table(rows: Sequence[Row], rounds: int, versus: Sequence[str] = REFERENCES) -> str:
    """The Markdown table: one line per setup, with a ratio column for each row key in ``versus``."""
    references = {key: next((r for r in rows if r.key == key), None) for key in versus}
    if BEST_PEER in references:
        references[BEST_PEER] = best_peer(rows, rounds)
    header = ["setup", "store / broker", "settings", "jobs/s (median)", "per round", *(f"vs {key}" for key in versus)]
    lines = ["| " + " | ".join(header) + " |", "|---|---|---|---:|---|" + "---:|" * len(versus)]
    for row in rows:
        median = row.median()
        per_round = " / ".join("failed" if (r := row.rate(i)) is None else f"{r:,.0f}" for i in range(1, rounds + 1))
        cells = [
            row.label,
            row.store,
            row.settings,
            "—" if median is None else f"{median:,.0f}",
            per_round,
            *(ratio_cell(row, reference, rounds) for reference in references.values()),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(rows: Sequence[Row]) -> list[str]:
    """What else a reader should know: failed rounds, and jobs that did not end as the library's success."""
    success = {"completed", "succeeded", "successful", "complete", "acknowledged"}
    found = []
    for row in rows:
        for m in row.measurements:
            if m.drain.get("error"):
                found.append(f"{row.label}, round {m.round}: {m.drain['error']}")
            other = {status: n for status, n in m.drain.get("outcome", {}).items() if status not in success and n}
            if other:
                found.append(f"{row.label}, round {m.round}: not all jobs succeeded: {other}")
    return found


def describe_run(jobs: int, rounds: int, rows: Sequence[Row], services: dict[str, str], machine: dict[str, Any]) -> str:
    """How the table was measured, printed under it."""
    loads = [m.load_average[0] for row in rows for m in row.measurements]
    lines = [
        f"{jobs:,} no-op jobs per measurement, enqueued before the worker starts (not timed); jobs/s is the "
        "rate between the first poll (every 20 ms) at or below 90 % of the backlog and the first at or below "
        f"10 %; median of {rounds} interleaved round(s); the ratios are medians of per-round ratios.",
        f"Machine: {machine['cores']} x {machine['cpu']}; load average {fmt_load(machine['load_average_at_start'])} "
        f"at the start, {fmt_load(machine['load_average_at_end'])} at the end; 1-minute load average "
        f"{min(loads, default=0):.2f} to {max(loads, default=0):.2f} at the starts of the measurements.",
    ]
    lines += [f"{store}: {description}" for store, description in services.items()]
    return "\n".join(lines)


def fmt_load(load: Sequence[float]) -> str:
    return " / ".join(f"{x:.2f}" for x in load)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--jobs", type=int, default=20_000, help="no-op jobs per measurement (default 20,000)")
    parser.add_argument("--quick", action="store_true", help=f"a smoke run: {QUICK_JOBS:,} jobs, 1 round")
    parser.add_argument("--peers", default=",".join(PEER_NAMES), help="comma-separated subset of the peers")
    parser.add_argument("--jobq", default=",".join(JOBQ_SETUPS), help=f"jobq rows: {', '.join(JOBQ_SETUPS)}")
    parser.add_argument(
        "--versus", default=",".join(REFERENCES), help=f"the ratio columns: rows' keys (jobq-pg1, ...) or {BEST_PEER}"
    )
    parser.add_argument("--jobq-args", default="", help="more flags for every `jobq serve`, e.g. '--prefetch 32'")
    parser.add_argument("--redis-url", default=common.DEFAULT_REDIS_URL, help="a dedicated database, emptied")
    parser.add_argument("--postgres-url", default=common.DEFAULT_POSTGRES_URL, help="a dedicated database, dropped")
    parser.add_argument("--jobq-tree", type=Path, default=BENCH.parent, help="the jobq checkout (its .venv is used)")
    parser.add_argument("--venvs", type=Path, default=PEERS / ".venvs", help="where the peers' environments live")
    parser.add_argument("--python", default="python3", help="the Python that makes the peers' environments")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one backlog may take to drain")
    parser.add_argument("--json", type=Path, help="also write the machine and every measurement to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.rounds = QUICK_JOBS, 1
    return args


def selected(value: str, known: Sequence[str], what: str) -> list[str]:
    """The comma-separated names of ``value``, in the order of ``known``; unknown ones are a usage error."""
    names = [n for n in value.split(",") if n]
    unknown = set(names) - set(known)
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(sorted(unknown))} (known: {', '.join(known)})")
    return [n for n in known if n in names]


def build_setups(args: argparse.Namespace) -> tuple[list[Setup], dict[str, str]]:
    """Every setup to measure, jobq's first, then the peers (making their environments); the services they use."""
    peers = selected(args.peers, PEER_NAMES, "peers")
    jobq = selected(args.jobq, JOBQ_SETUPS, "jobq rows")
    if any(p in REDIS_PEERS for p in peers) or any(key in REDIS_NODES for key in jobq):
        common.redis_db(args.redis_url)
    if any(p not in REDIS_PEERS for p in peers) or any(key in PG_NODES for key in jobq):
        common.postgres_database(args.postgres_url)
    tree = args.jobq_tree.resolve()
    if jobq and not (tree / ".venv" / "bin" / "jobq").exists():
        raise SystemExit(f"{tree}/.venv/bin/jobq is missing: run `make setup` in {tree}")
    env = {
        **bench.clean_env(PEERS),
        common.REDIS_URL_VARIABLE: args.redis_url,
        common.POSTGRES_URL_VARIABLE: args.postgres_url,
    }
    extra = shlex.split(args.jobq_args)
    setups: list[Setup] = [
        JobqSetup(key, tree, args.timeout, args.postgres_url, extra, redis_url=args.redis_url) for key in jobq
    ]
    services: dict[str, str] = {}
    if any(key not in PG_NODES and key not in REDIS_NODES for key in jobq):
        services["SQLite"] = (
            f"jobq of {tree} ({git_head(tree)}), defaults (durability full), files in {tempfile.gettempdir()}"
        )
    if any(key in PG_NODES for key in jobq):
        services["jobq on PostgreSQL"] = (
            f"jobq of {tree} ({git_head(tree)}), `--store {args.postgres_url}` (schema jobq), the database "
            "dropped and created again before each measurement; 2 nodes: the backlog enqueued through the first"
        )
    if any(key in REDIS_NODES for key in jobq):
        services["jobq on Redis"] = (
            f"jobq of {tree} ({git_head(tree)}), `--store {args.redis_url}?prefix=jobq-peers-<row>-<round>`, "
            "the database emptied before each measurement; 2 nodes: the backlog enqueued through the first"
        )
    for name in peers:
        peer = PeerSetup(name, ensure_venv(name, args.venvs, args.python), env, args.timeout)
        services[peer.info["store"]] = peer.info["service"]
        setups.append(peer)
    return setups, services


def git_head(tree: Path) -> str:
    """The commit of a checkout, for the record."""
    done = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or "not a git checkout"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setups, services = build_setups(args)
    machine = bench.machine()
    print(f"machine: {machine}", file=sys.stderr)
    for store, description in services.items():
        print(f"{store}: {description}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="jobq-bench-peers-") as tmp:
        run_rounds(setups, args.jobs, args.rounds, Path(tmp))
    machine["load_average_at_end"] = os.getloadavg()
    rows = [setup.row for setup in setups]
    print(table(rows, args.rounds, [key for key in args.versus.split(",") if key]))
    print()
    print(describe_run(args.jobs, args.rounds, rows, services, machine))
    for note in notes(rows):
        print(f"- {note}")
    if args.json:
        document = {"machine": machine, "services": services, "jobs": args.jobs, "rounds": args.rounds}
        document["rows"] = [asdict(row) for row in rows]
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
