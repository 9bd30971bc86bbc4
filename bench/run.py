"""Every jobq benchmark in one run, printed as a Markdown table.

    .venv/bin/python bench/run.py              # about four minutes on 2 cores
    .venv/bin/python bench/run.py --quick      # a smoke run with small numbers
    .venv/bin/python bench/run.py --json out.json --stores memory,sqlite
    .venv/bin/python bench/run.py --stores postgresql --only enqueue,batch   # jobq on PostgreSQL (--postgres-url)

What it measures (docs/benchmarks.md explains each row):

* the ceiling: a bare aiohttp POST handler (bench/ceiling_server.py) loaded by
  bench/loadgen.py in separate processes, with one and with two generators;
* jobq's ``POST /enqueue`` rate under the same load, per store, with no
  workers (enqueue only) and with 32 workers, as a share of the ceiling;
* batch enqueue: ``Store.add`` in-process, and ``POST /enqueue/batch`` of 100 and of 1,000 over HTTP;
* end-to-end no-op throughput: in-process (JobService + WorkerPool) and over
  HTTP (the bulk dispatcher, ``python -m jobq.dispatcher``);
* resident memory for 1M queued jobs in the memory store.

The SQLite rows appear when ``jobq.store.sqlite`` is importable; the PostgreSQL
ones (``--stores postgresql``) use the database of ``--postgres-url``, dropped and
created again before each measurement and dropped at the end. Every measurement
runs in fresh processes; each SQLite one gets a fresh file. ``--only`` picks groups
(the HTTP enqueue rows measure the ceiling first, whatever it says).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = sys.executable
ENQUEUE_BODY = '{"type": "noop"}'
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"  # a dedicated database: it is emptied
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/jobq_bench"  # a dedicated database: it is dropped
GROUPS = ("ceiling", "enqueue", "batch", "e2e", "memory")
T = TypeVar("T")


@dataclass(frozen=True)
class Scale:
    """How long and how big each measurement is."""

    duration: float = 5.0  # seconds of measured HTTP load
    warmup: float = 1.0
    connections: int = 64
    add_jobs: int = 100_000
    e2e_memory_jobs: int = 200_000
    e2e_sqlite_jobs: int = 50_000
    http_batch_jobs: int = 100_000
    http_single_jobs: int = 20_000
    memory_jobs: int = 1_000_000


QUICK = Scale(
    duration=1.0,
    warmup=0.3,
    add_jobs=5_000,
    e2e_memory_jobs=10_000,
    e2e_sqlite_jobs=2_000,
    http_batch_jobs=5_000,
    http_single_jobs=1_000,
    memory_jobs=50_000,
)


@dataclass
class Row:
    """One line of the results table."""

    section: str
    name: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None
    note: str = ""

    def cells(self) -> list[str]:
        shown = f"{self.value:,.0f} {self.unit}" if self.unit != "MiB" else f"{self.value:,.0f} MiB"
        verdict = "" if self.met is None else ("yes" if self.met else "**no**")
        return [self.section, self.name, shown, self.target, verdict, self.note]


# -- processes ------------------------------------------------------------------


def clean_env(root: Path = ROOT) -> dict[str, str]:
    """This environment without any JOBQ_* variable (a token or a store there would change what is measured).

    ``root`` is the checkout whose jobq the child imports: this one unless another is being measured.
    """
    env = {name: value for name, value in os.environ.items() if not name.startswith("JOBQ_")}
    return {**env, "PYTHONPATH": str(root)}


def checkouts(baseline: Path | None, head: Path = ROOT) -> dict[str, Path]:
    """The checkouts a benchmark measures in turn: ``head`` as "HEAD", and ``baseline`` as "baseline" when given."""
    found = {"HEAD": head.resolve()}
    if baseline is not None:
        found["baseline"] = baseline.resolve()
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A server subprocess (jobq's main.py or the ceiling) listening on a free port; its log goes to a file."""

    def __init__(self, command: list[str], port: int, log: Path, root: Path = ROOT) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self._log_file = log.open("wb")
        env = clean_env(root)
        self.process = subprocess.Popen(command, cwd=root, env=env, stdout=self._log_file, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server not ready after {timeout}s")

    def stop(self) -> None:
        """SIGTERM (jobq drains), then SIGKILL if it is still there after 20 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log_file.close()


@contextlib.contextmanager
def serving(command: Sequence[str], workdir: Path, name: str, root: Path = ROOT) -> Iterator[Server]:
    port = free_port()
    server = Server([*command, *_port_args(command, port)], port, workdir / f"{name}.log", root)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _port_args(command: Sequence[str], port: int) -> list[str]:
    return [str(port)] if any(part.endswith("ceiling_server.py") for part in command) else ["--port", str(port)]


def jobq_command(store: str, workers: int, root: Path = ROOT) -> list[str]:
    """``main.py`` of checkout ``root`` with the benchmark flags (docs/benchmarks.md, "Running them")."""
    return [
        PYTHON,
        str(root / "main.py"),
        "--store",
        store,
        "--workers",
        str(workers),
        "--queue-size",
        "10000000",
        "--retention-count",  # keep every finished job readable for the dispatcher's status polls
        "10000000",
        "--drain-timeout",
        "2",
        "--log-level",
        "warning",
        "--grpc-port",  # no gRPC listener: benchmark servers bind only their HTTP port
        "0",
    ]


def run_json(command: Sequence[str], timeout: float = 900.0) -> dict[str, Any]:
    """Run a command whose standard output is one JSON document; return it."""
    env = clean_env()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    try:
        return json.loads(done.stdout)  # type: ignore[no-any-return]
    except ValueError as exc:
        raise RuntimeError(f"{' '.join(command)} (exit {done.returncode}): {done.stderr[-2000:]}") from exc


# -- HTTP load --------------------------------------------------------------------


@dataclass
class Load:
    """What one load run achieved: total rate, status codes, and who used how much CPU."""

    rate: float
    codes: dict[str, int]
    errors: dict[str, int]
    server_cpu: float  # percent of one core
    generator_cpu: list[float]

    @property
    def server_us_per_request(self) -> float:
        """Server CPU time per request: unlike the rate, barely moved by other processes on the machine."""
        return self.server_cpu / 100 / self.rate * 1e6 if self.rate else float("inf")


def load(server: Server, scale: Scale, generators: int, path: str = "/enqueue", body: str = ENQUEUE_BODY) -> Load:
    """Run ``generators`` loadgen processes at once against ``server``; sum what they measured."""
    per_generator = max(scale.connections // generators, 1)
    command = [
        PYTHON,
        str(BENCH / "loadgen.py"),
        "--url",
        server.url + path,
        "--body",
        body,
        "--connections",
        str(per_generator),
        "--duration",
        str(scale.duration),
        "--warmup",
        str(scale.warmup),
    ]
    command += ["--server-pid", str(server.process.pid)]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(generators)]
    outputs = [json.loads(p.communicate(timeout=scale.duration + scale.warmup + 60)[0]) for p in procs]
    codes: dict[str, int] = {}
    errors: dict[str, int] = {}
    for out in outputs:
        for code, count in out["codes"].items():
            codes[code] = codes.get(code, 0) + count
        for error, count in out["errors"].items():
            errors[error] = errors.get(error, 0) + count
    rate = sum(out["requests_per_second"] for out in outputs)
    server_cpu = max(out["server_cpu_percent"] or 0.0 for out in outputs)
    return Load(rate, codes, errors, server_cpu, [out["cpu_percent"] for out in outputs])


def describe(result: Load) -> str:
    gens = "+".join(f"{c:.0f}%" for c in result.generator_cpu)
    note = f"server {result.server_us_per_request:.0f} µs CPU/req at {result.server_cpu:.0f}% CPU; generator CPU {gens}"
    bad = {k: v for k, v in result.codes.items() if k not in ("200", "202")}
    if bad or result.errors:
        note += f"; not accepted: {bad or ''} {result.errors or ''}".rstrip()
    return note


# -- the measurements ----------------------------------------------------------------


def measure_ceiling(scale: Scale, workdir: Path) -> tuple[Load, list[Row]]:
    """The bare handler with one and with two generators; the ceiling is the faster run."""
    runs: list[Load] = []
    rows = []
    with serving([PYTHON, str(BENCH / "ceiling_server.py")], workdir, "ceiling") as server:
        for generators in (1, 2):
            result = load(server, scale, generators)
            runs.append(result)
            name = f"bare aiohttp POST, {generators} generator{'s' if generators > 1 else ''}"
            rows.append(Row("ceiling", name, result.rate, "req/s", note=describe(result)))
    return max(runs, key=lambda r: r.rate), rows


def measure_http_enqueue(stores: dict[str, str], ceiling: Load, scale: Scale, workdir: Path) -> list[Row]:
    """``POST /enqueue`` per store, enqueue-only (0 workers) and with 32 workers running the jobs.

    The share of the ceiling is given twice: by rate, and by server CPU per
    request (ceiling's / jobq's), which holds when other processes compete for
    the cores. The target counts as met only if both reach 80%.
    """
    rows = []
    for label, make_url in stores.items():
        for workers in (0, 32):
            command = jobq_command(_fresh(make_url, workdir), workers)
            with serving(command, workdir, f"enqueue-{label}-{workers}") as server:
                result = load(server, scale, 1)
            by_rate = result.rate / ceiling.rate
            by_cpu = ceiling.server_us_per_request / result.server_us_per_request
            unit = f"jobs/s ({by_rate:.0%} of the ceiling's rate, {by_cpu:.0%} by CPU/req)"
            name = f"POST /enqueue, {label}, {workers} workers"
            met = min(by_rate, by_cpu) >= 0.8
            rows.append(Row("HTTP enqueue", name, result.rate, unit, "≥ 80% of ceiling", met, describe(result)))
    return rows


def measure_batch(stores: dict[str, str], scale: Scale, workdir: Path) -> list[Row]:
    """``Store.add`` in batches of 1000 in-process (SQLite), and ``POST /enqueue/batch`` over HTTP."""
    rows = []
    if "sqlite" in stores:
        for durability in ("full", "normal"):
            store = _fresh(stores["sqlite"], workdir)
            out = inprocess("add", "--store", store, "--durability", durability, "--jobs", str(scale.add_jobs))
            rate = out["jobs_per_second"]
            name = f"Store.add, batches of 1000, sqlite {durability}, in-process"
            note = f"{out['cpu_us_per_job']} µs CPU/job (all threads)"
            rows.append(Row("batch enqueue", name, rate, "jobs/s", "≥ 50,000 jobs/s", rate >= 50_000, note))
    for label, make_url in stores.items():
        for batch in (100, 1000):
            with serving(jobq_command(_fresh(make_url, workdir), 0), workdir, f"batch-{label}-{batch}") as server:
                out = dispatch(server, scale.http_batch_jobs, "--batch", str(batch), "--concurrency", "4", "--no-wait")
            name = f"POST /enqueue/batch, batches of {batch}, {label}, HTTP"
            rows.append(Row("batch enqueue", name, out["submitted_per_second"], "jobs/s", note=_accepted_note(out)))
    return rows


def measure_e2e(stores: dict[str, str], scale: Scale, workdir: Path) -> list[Row]:
    """No-op jobs from enqueue to completed: in-process, then over HTTP (single and batch requests)."""
    rows = []
    targets = {"memory": 100_000, "sqlite": 5_000}
    sizes = {"memory": scale.e2e_memory_jobs, "sqlite": scale.e2e_sqlite_jobs}
    floor = inprocess("floor", "--jobs", str(scale.e2e_memory_jobs), "--workers", "32")
    note = f"32 tasks draining an asyncio.Queue of no-op calls, nothing stored; {floor['cpu_us_per_job']} µs CPU/job"
    rows.append(
        Row("end to end", "ceiling: bare asyncio.Queue, 32 tasks", floor["jobs_per_second"], "jobs/s", note=note)
    )
    for label, make_url in stores.items():
        jobs = sizes.get(label, scale.e2e_sqlite_jobs)
        out = inprocess("e2e", "--store", _fresh(make_url, workdir), "--jobs", str(jobs), "--workers", "32")
        rate, target = out["jobs_per_second"], targets.get(label, 0)
        note = f"{out['jobs']:,} jobs; {out['cpu_us_per_job']} µs CPU/job"
        unfinished = {k: v for k, v in out["statuses"].items() if k != "completed"}
        if unfinished or out["settled"] != out["jobs"]:
            note += f"; settled {out['settled']:,}, not completed: {unfinished}"
        name = f"in-process, {label}, 32 workers"
        goal, met = (f"≥ {target:,} jobs/s", rate >= target) if target else ("", None)
        rows.append(Row("end to end", name, rate, "jobs/s", goal, met, note))
    jobs = str(scale.e2e_memory_jobs)
    out = inprocess("e2e", "--store", "memory://", "--jobs", jobs, "--workers", "32", "--prefetch", "64")
    note = f"{out['jobs']:,} jobs; {out['cpu_us_per_job']} µs CPU/job; jobs leased ahead of idle workers"
    rows.append(
        Row("end to end", "in-process, memory, 32 workers, --prefetch 64", out["jobs_per_second"], "jobs/s", note=note)
    )
    for label, make_url in stores.items():
        for batch in (1, 1000):
            jobs = scale.http_single_jobs if batch == 1 else scale.http_batch_jobs
            with serving(jobq_command(_fresh(make_url, workdir), 32), workdir, f"e2e-{label}-{batch}") as server:
                out = dispatch(server, jobs, "--batch", str(batch), "--concurrency", "64" if batch == 1 else "4")
            rate = out["completed_per_second"] or 0.0
            how = "POST /enqueue" if batch == 1 else "POST /enqueue/batch, batches of 1000"
            latency = out["latency_seconds"] or {}
            note = _accepted_note(out) + (f"; latency p50 {latency['p50'] * 1000:.0f} ms" if latency else "")
            rows.append(Row("end to end", f"HTTP {how}, {label}, 32 workers", rate, "jobs/s", note=note))
    return rows


def measure_memory(scale: Scale) -> list[Row]:
    """RSS growth for ``memory_jobs`` queued jobs in the memory store."""
    out = inprocess("memory", "--jobs", str(scale.memory_jobs))
    mib = out["rss_delta_bytes"] / 2**20
    per_million = mib * 1_000_000 / max(out["jobs"], 1)
    name = f"{out['jobs']:,} queued jobs, memory store"
    note = f"{out['bytes_per_job']} bytes/job (RSS delta)"
    return [Row("memory", name, mib, "MiB", "< 1 GiB per 1M jobs", per_million < 1024, note)]


def inprocess(*args: str) -> dict[str, Any]:
    """Run one bench/inprocess.py measurement in a fresh process; its JSON result."""
    return run_json([PYTHON, str(BENCH / "inprocess.py"), *args])


def inprocess_rounds(
    stores: Sequence[str],
    cases: Sequence[str],
    command: Callable[[str, str], list[str]],
    rounds: int,
    reference: str,
    json_path: Path | None = None,
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Run ``bench/inprocess.py command(store URL, case)`` for every store and case, ``rounds`` times, the
    cases' order turning from round to round; print each run, then a table of medians against ``reference``
    and the machine (every run's result goes to ``json_path`` too, when given).

    A store is ``memory://``, ``sqlite``, ``postgresql`` or ``redis`` (the benchmark databases) or a URL;
    ``sqlite`` and the PostgreSQL and Redis ones get a fresh store for every run (``_fresh``).
    """
    named = {"postgresql": DEFAULT_POSTGRES_URL, "redis": DEFAULT_REDIS_URL}
    stores = [named.get(store, store) for store in stores]
    workdir = Path(tempfile.mkdtemp(prefix="jobq-rounds-"))
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {(s, c): [] for s in stores for c in cases}
    for number in range(rounds):
        for store in stores:
            for case in [*cases[number % len(cases) :], *cases[: number % len(cases)]]:
                result = inprocess(*command(_fresh(store, workdir), case))
                runs[(store, case)].append(result)
                print(
                    f"round {number + 1} {store} {case}: {result['jobs_per_second']:,} jobs/s, "
                    f"{result['cpu_us_per_job']} µs CPU/job",
                    flush=True,
                )
    print()
    print(f"| store | case | jobs/s (median) | CPU µs/job (median) | rate vs {reference} | CPU vs {reference} |")
    print("|---|---|---|---|---|---|")
    for store in stores:
        rate0 = statistics.median(r["jobs_per_second"] for r in runs[(store, reference)])
        cpu0 = statistics.median(r["cpu_us_per_job"] for r in runs[(store, reference)])
        for case in cases:
            rate = statistics.median(r["jobs_per_second"] for r in runs[(store, case)])
            cpu = statistics.median(r["cpu_us_per_job"] for r in runs[(store, case)])
            print(f"| {store} | {case} | {rate:,.0f} | {cpu:.1f} | {rate / rate0:.0%} | {cpu / cpu0:.0%} |")
    if json_path is not None:
        json_path.write_text(json.dumps({f"{s} {c}": r for (s, c), r in runs.items()}, indent=2))
    print(json.dumps({"machine": machine()}))
    return runs


def dispatch(server: Server, jobs: int, *args: str) -> dict[str, Any]:
    """Run the bulk dispatcher against ``server``; its JSON summary."""
    command = [PYTHON, "-m", "jobq.dispatcher", "--url", server.url, "--jobs", str(jobs), "--timeout", "600"]
    return run_json([*command, *args, "--json"])


def _accepted_note(out: dict[str, Any]) -> str:
    note = f"{out['accepted']:,} of {out['submitted']:,} accepted"
    if out["failures"]:
        note += f", refused: {out['failures']}"
    if out.get("waited"):
        note += f", {out['completed']:,} completed"
    return note


def _fresh(make_url: str, workdir: Path) -> str:
    """The store URL for a new measurement: ``sqlite`` becomes a new file in ``workdir``; a PostgreSQL
    URL's database is dropped and created again."""
    if urlsplit(make_url).scheme in ("postgresql", "postgres"):
        return fresh_postgres(make_url)
    if urlsplit(make_url).scheme == "redis":
        return fresh_redis(make_url)
    if make_url != "sqlite":
        return make_url
    handle, path = tempfile.mkstemp(suffix=".db", dir=workdir)
    os.close(handle)
    os.unlink(path)
    return f"sqlite:///{path}"


def fresh_redis(url: str, prefix: str | None = None) -> str:
    """Empty the Redis database ``url`` names (never database 0); jobq's store URL on it with key prefix ``prefix``."""
    import redis  # jobq's Redis client: only needed, and imported, when a Redis store is measured

    parts = urlsplit(url)
    if not parts.path.strip("/") or int(parts.path.strip("/")) == 0:
        raise SystemExit(f"{url}: name a dedicated Redis database (e.g. /15): it is emptied before each run")
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
    query = parse_qsl(parts.query) + ([("prefix", prefix)] if prefix else [])
    return urlunsplit(parts._replace(query=urlencode(query)))


def fresh_postgres(url: str, create: bool = True) -> str:
    """Drop the database ``url`` names and, if ``create``, create it again (connected to ``postgres``); ``url``."""
    import asyncpg  # jobq's PostgreSQL driver: only needed, and imported, when a PostgreSQL store is measured

    parts = urlsplit(url)
    name = parts.path.strip("/")
    if not name or name in ("postgres", "template0", "template1"):
        raise SystemExit(f"{url}: name a dedicated database (e.g. /jobq_bench): it is dropped before each run")
    admin_url = urlunsplit(parts._replace(scheme="postgresql", path="/postgres", query=""))  # no ?schema=

    async def remake() -> None:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if create:
                await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()

    asyncio.run(remake())
    return url


# -- reporting -----------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What this ran on; the load average shows whether anything else was competing for the CPU."""
    names = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
    model = names[0].split(":", 1)[1].strip() if names else platform.processor()

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "load_average_at_start": os.getloadavg(),
    }


def table(rows: Sequence[Row]) -> str:
    header = ["section", "measurement", "result", "target", "met", "notes"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def available_stores(wanted: Sequence[str], postgres_url: str = DEFAULT_POSTGRES_URL) -> dict[str, str]:
    """Store labels to URLs; ``sqlite`` only when its module exists."""
    stores = {}
    for name in wanted:
        if name == "memory":
            stores["memory"] = "memory://"
        elif name == "sqlite":
            if importlib.util.find_spec("jobq.store.sqlite") is None:
                print("jobq.store.sqlite is not there: skipping the SQLite rows", file=sys.stderr)
            else:
                stores["sqlite"] = "sqlite"
        elif name == "postgresql":
            stores["postgresql"] = postgres_url
        else:
            raise SystemExit(f"unknown store {name!r}: memory, sqlite or postgresql")
    return stores


def timed(name: str, step: Callable[[], T]) -> T:
    """Run one group of measurements, saying on stderr how long it took."""
    started = time.perf_counter()
    result = step()
    print(f"{name}: done in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    return result


def run_all(scale: Scale, stores: dict[str, str], workdir: Path, groups: Sequence[str] = GROUPS) -> list[Row]:
    """Every measurement of ``groups``, in table order."""
    rows: list[Row] = []
    if "ceiling" in groups or "enqueue" in groups:
        ceiling, rows = timed("ceiling", lambda: measure_ceiling(scale, workdir))
    if "enqueue" in groups:
        rows += timed("HTTP enqueue", lambda: measure_http_enqueue(stores, ceiling, scale, workdir))
    if "batch" in groups:
        rows += timed("batch enqueue", lambda: measure_batch(stores, scale, workdir))
    if "e2e" in groups:
        rows += timed("end to end", lambda: measure_e2e(stores, scale, workdir))
    if "memory" in groups:
        rows += timed("memory", lambda: measure_memory(scale))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small numbers: checks that everything runs")
    parser.add_argument("--stores", default="memory,sqlite", help="comma-separated: memory, sqlite, postgresql")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL, help="a dedicated database, dropped")
    parser.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated groups: {', '.join(GROUPS)}")
    parser.add_argument("--duration", type=float, help="seconds of measured HTTP load per row")
    parser.add_argument("--json", type=Path, help="also write the machine and every row to this file")
    args = parser.parse_args(argv)
    scale = QUICK if args.quick else Scale()
    if args.duration:
        scale = replace(scale, duration=args.duration)
    sys.path.insert(0, str(ROOT))
    stores = available_stores(args.stores.split(","), args.postgres_url)
    groups = [group for group in args.only.split(",") if group]
    if set(groups) - set(GROUPS):
        parser.error(f"unknown group in --only {args.only!r}: {', '.join(GROUPS)}")
    info = machine()
    print(f"machine: {info}", file=sys.stderr)
    try:
        with tempfile.TemporaryDirectory(prefix="jobq-bench-") as tmp:
            rows = run_all(scale, stores, Path(tmp), groups)
    finally:
        if "postgresql" in stores:
            fresh_postgres(stores["postgresql"], create=False)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "rows": [asdict(r) for r in rows]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
