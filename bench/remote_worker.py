"""Remote-worker throughput: no-op jobs leased and completed over HTTP by ``python -m jobq.sdk.remote_worker``.

    .venv/bin/python bench/remote_worker.py              # about three minutes on 2 cores
    .venv/bin/python bench/remote_worker.py --quick      # a smoke run with small numbers
    .venv/bin/python bench/remote_worker.py --json       # the table, then every row as JSON
    .venv/bin/python bench/remote_worker.py --stores memory --jobs 40000 --json out.json
    .venv/bin/python bench/remote_worker.py --profile prof/   # py-spy the server and worker of one row

Each measurement runs in fresh processes:

1. ``main.py --store S --workers W`` starts (``W`` is 0 for the remote rows; each
   SQLite measurement gets a new file) and queue ``default`` is paused;
2. N ``noop`` jobs are enqueued with ``POST /enqueue/batch``, 1,000 per request;
3. for the remote rows, k ``python -m jobq.sdk.remote_worker`` processes start (at their
   defaults, or with the ``--concurrency`` and ``--prefetch`` a row names),
   and the script waits until each has logged that it is running;
4. the queue is resumed and the clock starts; it stops when ``GET /stats`` (polled
   every 20 ms, under a deadline) counts every job finished.

Starting the workers against a paused queue keeps their start-up (imports, first
connection) out of the time, and lets several worker processes start level.

The ceiling, measured in the same run on the same store: the same server with the
same N jobs run by ``--workers 32`` in-process workers (no HTTP per job at all).

Per row it reports jobs/s, the share of the ceiling, the CPU per job of the server
and of the worker processes (from /proc, over the timed window), and, from the
server's ``/metrics``, how many ``/workers/lease`` and ``/workers/settle``
requests the run took: the remote worker leases in batches (as many jobs as it has
idle slots) and settles the jobs that finish together in one ``settle`` request.

With ``--profile DIR``, py-spy samples the server and the worker of the first
remote row of the first store (into DIR/server.txt and DIR/worker-0.txt, for
bench/flame_top.py); py-spy pauses a process for each sample, so that row comes
out slower.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import run as bench  # noqa: E402 - bench/run.py, found through the path set just above
from loadgen import process_cpu  # noqa: E402 - bench/loadgen.py

TREE = bench.ROOT  # the checkout whose jobq runs the servers and workers (--tree)
PYTHON = bench.PYTHON
BATCH = 1000
POLL_SECONDS = 0.02
IN_PROCESS_WORKERS = 32
REMOTE = "1,1x128,2x32"  # the rows of every store, as --setups takes them (1: the defaults, 64 at once)
METRIC_LINE = re.compile(r"^jobq_http_requests_total\{(?P<labels>.*)\} (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Scale:
    memory_jobs: int = 100_000
    sqlite_jobs: int = 30_000
    timeout: float = 180.0  # seconds one measurement may take from resume to the last job


QUICK = Scale(memory_jobs=2_000, sqlite_jobs=1_000, timeout=60.0)


@dataclass(frozen=True)
class Setup:
    """How a row runs its jobs: ``processes`` remote workers with ``flags`` (0: in-process workers)."""

    processes: int
    flags: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return f"{self.processes} x {' '.join(self.flags) or 'defaults'}"


IN_PROCESS = Setup(0)


@dataclass
class Result:
    """One measurement."""

    store: str
    setup: str  # "in-process 32 workers" or "2 x 32"
    processes: int  # remote worker processes (0: in-process)
    jobs: int
    seconds: float
    jobs_per_second: float
    statuses: dict[str, int]
    server_cpu_us_per_job: float
    workers_cpu_us_per_job: float | None
    requests: dict[str, int] = field(default_factory=dict)  # "POST /workers/settle 200" -> count
    share_of_ceiling: float | None = None

    def count(self, route: str, code: str = "200") -> int:
        return sum(n for key, n in self.requests.items() if key.split()[1] == route and key.split()[2] == code)


# -- processes -------------------------------------------------------------------


def server_command(store: str, workers: int, port: int) -> list[str]:
    return [*bench.jobq_command(store, workers, root=TREE), "--port", str(port)]


@contextmanager
def serving(store: str, workers: int, port: int, log: Path) -> Iterator[bench.Server]:
    server = bench.Server(server_command(store, workers, port), port, log, root=TREE)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


class Worker:
    """One ``python -m jobq.sdk.remote_worker`` process; its log goes to a file."""

    def __init__(self, url: str, flags: Sequence[str], log: Path) -> None:
        self.log = log
        self._log_file = log.open("wb")
        command = [PYTHON, "-m", "jobq.sdk.remote_worker", "--url", url, *flags]
        self.process = subprocess.Popen(
            command, cwd=TREE, env=bench.clean_env(TREE), stdout=self._log_file, stderr=subprocess.STDOUT
        )

    def running(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"worker exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
        return " running " in self.log.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM (it drains: nothing is held by now), then SIGKILL after 15 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log_file.close()


@contextmanager
def workers(url: str, setup: Setup, workdir: Path, name: str) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    try:
        for i in range(setup.processes):
            started.append(Worker(url, setup.flags, workdir / f"{name}-worker-{i}.log"))
        deadline = time.monotonic() + 30
        while not all(w.running() for w in started):
            if time.monotonic() > deadline:
                logs = "\n".join(w.log.read_text(errors="replace")[-1000:] for w in started)
                raise RuntimeError(f"worker processes not running after 30 s:\n{logs}")
            time.sleep(0.05)
        yield started
    finally:
        for worker in started:
            worker.stop()


@contextmanager
def profiling(pids: dict[str, int], out: Path | None) -> Iterator[None]:
    """py-spy each process (name -> pid) into ``out/<name>.txt`` while the block runs (nothing without ``out``)."""
    if out is None:
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    py_spy = Path(PYTHON).parent / "py-spy"
    spies = [
        subprocess.Popen(
            [str(py_spy), "record", "-p", str(pid), "-r", "200", "-f", "raw", "-o", str(out / f"{name}.txt")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    ]
    try:
        time.sleep(1.0)  # let them attach before the measured part starts
        yield
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for spy in spies:
            try:
                spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait(timeout=10)


# -- HTTP --------------------------------------------------------------------------


def call(server: bench.Server, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.url + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read()
        return json.loads(raw) if raw and response.headers.get_content_subtype() != "plain" else raw.decode()


def enqueue(server: bench.Server, jobs: int) -> None:
    for offset in range(0, jobs, BATCH):
        body = {"jobs": [{"type": "noop"}] * min(BATCH, jobs - offset)}
        answer = call(server, "POST", "/enqueue/batch", body)
        if answer["rejected"]:
            raise RuntimeError(f"the server refused jobs: {answer['results'][:3]}")


def requests_by_route(server: bench.Server) -> dict[str, int]:
    """``jobq_http_requests_total`` from /metrics, keyed "METHOD route code"."""
    text = call(server, "GET", "/metrics")
    counts: dict[str, int] = {}
    for line in text.splitlines():
        match = METRIC_LINE.match(line)
        if match:
            labels = dict(LABEL.findall(match["labels"]))
            counts[f"{labels['method']} {labels['route']} {labels['code']}"] = int(float(match["value"]))
    return counts


def wait_finished(server: bench.Server, jobs: int, timeout: float) -> dict[str, int]:
    """Poll /stats until ``jobs`` jobs are finished; their counts by status."""
    deadline = time.perf_counter() + timeout
    while True:
        counts = call(server, "GET", "/stats")["jobs"]
        finished = sum(counts[s] for s in ("completed", "failed", "dead", "cancelled"))
        if finished >= jobs:
            return {s: n for s, n in counts.items() if n}
        if time.perf_counter() > deadline:
            raise RuntimeError(f"only {finished} of {jobs} jobs finished after {timeout:.0f}s: {counts}")
        time.sleep(POLL_SECONDS)


# -- the measurement ----------------------------------------------------------------------


def measure(
    label: str,
    store_url: str,
    jobs: int,
    setup: Setup,
    scale: Scale,
    workdir: Path,
    port: int,
    profile: Path | None = None,
) -> Result:
    """One row: N jobs pre-enqueued on a paused queue, then run by remote workers (or in-process ones)."""
    in_process = setup.processes == 0
    name = f"{label}-{len(os.listdir(workdir))}"
    store = fresh_store(store_url, workdir)
    with serving(store, IN_PROCESS_WORKERS if in_process else 0, port, workdir / f"{name}.log") as server:
        call(server, "POST", "/queues/default/pause")
        enqueue(server, jobs)
        with workers(server.url, setup, workdir, name) as remote:
            pids = [w.process.pid for w in remote]
            spied = {"server": server.process.pid, **{f"worker-{i}": pid for i, pid in enumerate(pids)}}
            with profiling(spied, profile):
                before = requests_by_route(server)
                cpu_before = cpu(server.process.pid), [cpu(pid) for pid in pids]
                started = time.perf_counter()
                call(server, "POST", "/queues/default/resume")
                statuses = wait_finished(server, jobs, scale.timeout)
                seconds = time.perf_counter() - started
                cpu_after = cpu(server.process.pid), [cpu(pid) for pid in pids]
            after = requests_by_route(server)
    server_cpu = cpu_after[0] - cpu_before[0]
    workers_cpu = sum(cpu_after[1]) - sum(cpu_before[1]) if pids else None
    return Result(
        store=label,
        setup=f"in-process, {IN_PROCESS_WORKERS} workers" if in_process else setup.text,
        processes=setup.processes,
        jobs=jobs,
        seconds=round(seconds, 3),
        jobs_per_second=round(jobs / seconds, 1),
        statuses=statuses,
        server_cpu_us_per_job=round(server_cpu / jobs * 1e6, 1),
        workers_cpu_us_per_job=None if workers_cpu is None else round(workers_cpu / jobs * 1e6, 1),
        requests={k: n - before.get(k, 0) for k, n in after.items() if n - before.get(k, 0) and "/metrics" not in k},
    )


def cpu(pid: int) -> float:
    seconds = process_cpu(pid)
    if seconds is None:
        raise RuntimeError(f"process {pid} is gone")
    return seconds


def fresh_store(store_url: str, workdir: Path) -> str:
    if store_url != "sqlite":
        return store_url
    handle, path = tempfile.mkstemp(suffix=".db", dir=workdir)
    os.close(handle)
    os.unlink(path)
    return f"sqlite:///{path}"


def run_all(
    stores: Sequence[str],
    scale: Scale,
    workdir: Path,
    port: int,
    profile: Path | None,
    setups: Sequence[Setup] | None = None,
) -> list[Result]:
    results: list[Result] = []
    for label in stores:
        jobs = scale.memory_jobs if label == "memory" else scale.sqlite_jobs
        store_url = "memory://" if label == "memory" else "sqlite"
        started = time.perf_counter()
        ceiling = measure(label, store_url, jobs, IN_PROCESS, scale, workdir, port)
        ceiling.share_of_ceiling = 1.0
        rows = [ceiling]
        for i, setup in enumerate(setups or parse_setups(REMOTE)):
            spy = profile if (not results and i == 0) else None
            row = measure(label, store_url, jobs, setup, scale, workdir, port, spy)
            row.share_of_ceiling = round(row.jobs_per_second / ceiling.jobs_per_second, 3)
            rows.append(row)
        print(f"{label}: done in {time.perf_counter() - started:.0f}s", file=sys.stderr)
        results += rows
    return results


# -- reporting -------------------------------------------------------------------------


def notes(row: Result) -> str:
    unfinished = {s: n for s, n in row.statuses.items() if s != "completed"}
    parts = [f"{row.jobs:,} jobs in {row.seconds:.2f} s"]
    if row.processes:
        leases = row.count("/workers/lease")
        settles = row.count("/workers/settle")
        other = {k: n for k, n in row.requests.items() if not k.endswith((" 200", " 204"))}
        parts.append(f"{leases:,} leases ({row.jobs / max(leases, 1):.1f} jobs each)")
        parts.append(f"{settles:,} settles ({row.jobs / max(settles, 1):.1f} jobs each)")
        if other:  # e.g. heartbeats of jobs settled meanwhile (409, harmless)
            parts.append(f"other answers: {other}")
    if unfinished:
        parts.append(f"**not completed: {unfinished}**")
    return "; ".join(parts)


def table(results: Sequence[Result]) -> str:
    header = [
        "store",
        "workers",
        "jobs/s",
        "of ceiling",
        "server CPU µs/job",
        "worker CPU µs/job",
        "notes",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in results:
        worker_cpu = "" if row.workers_cpu_us_per_job is None else f"{row.workers_cpu_us_per_job:,.0f}"
        setup = f"**{row.setup}** (ceiling)" if row.processes == 0 else f"remote, {row.setup}"
        cells = [
            row.store,
            setup,
            f"{row.jobs_per_second:,.0f}",
            f"{row.share_of_ceiling:.0%}" if row.share_of_ceiling is not None else "",
            f"{row.server_cpu_us_per_job:,.0f}",
            worker_cpu,
            notes(row),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_setups(text: str) -> list[Setup]:
    """Remote rows, comma-separated: ``P`` (P worker processes at their defaults), ``PxC`` (at
    ``--concurrency C``), either followed by ``+N`` (``--prefetch N``): ``1,1x128,2x32+32``."""
    setups = []
    for part in text.split(","):
        part, _, prefetch = part.strip().partition("+")
        processes, _, concurrency = part.partition("x")
        flags = ("--concurrency", concurrency) if concurrency else ()
        flags += ("--prefetch", prefetch) if prefetch else ()
        setups.append(Setup(int(processes), flags))
    return setups


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small numbers: checks that everything runs")
    parser.add_argument("--stores", default="memory,sqlite", help="comma-separated: memory, sqlite")
    parser.add_argument("--jobs", type=int, help="jobs per measurement (every store)")
    parser.add_argument(
        "--setups",
        type=parse_setups,
        help="remote rows, comma-separated: P (P workers at their defaults) or PxC (--concurrency C), "
        f"either with +N for --prefetch N: 1,1x128,2x32+32 (default: {REMOTE})",
    )
    parser.add_argument(
        "--tree", type=Path, help="measure the jobq of this checkout (its main.py and SDK); default: this one"
    )
    parser.add_argument("--port", type=int, default=0, help="port for the servers (default: a free one)")
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        help="also print the machine and every row as JSON (after the table), or write them to this file",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="py-spy (raw format) the server and the worker of the first store's first remote row into "
        "DIR/server.txt and DIR/worker-0.txt (summarise them with bench/flame_top.py); that row runs slower for it",
    )
    args = parser.parse_args(argv)
    if args.tree is not None:
        global TREE
        TREE = args.tree.resolve()
    scale = QUICK if args.quick else Scale()
    if args.jobs:
        scale = Scale(memory_jobs=args.jobs, sqlite_jobs=args.jobs, timeout=scale.timeout)
    stores = [s for s in args.stores.split(",") if s]
    for store in stores:
        if store not in ("memory", "sqlite"):
            raise SystemExit(f"unknown store {store!r}: memory or sqlite")
    info = bench.machine()
    print(f"machine: {info}", file=sys.stderr)
    port = args.port or bench.free_port()
    with tempfile.TemporaryDirectory(prefix="jobq-bench-remote-") as tmp:
        results = run_all(stores, scale, Path(tmp), port, args.profile, args.setups)
    print(table(results))
    if args.json:
        document = json.dumps({"machine": info, "rows": [asdict(r) for r in results]}, indent=2)
        if args.json == "-":
            print(document)
        else:
            Path(args.json).write_text(document + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
