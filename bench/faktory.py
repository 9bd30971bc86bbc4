"""Faktory protocol throughput: jobs pushed and processed through jobq's FWP listener by the Node
``faktory-worker`` client, against jobq's HTTP API and its own remote worker in the same run.

    .venv/bin/python bench/faktory.py                # 3 interleaved rounds x 20,000 jobs, about 2.5 minutes
    .venv/bin/python bench/faktory.py --quick        # 2,000 jobs, 1 round: a smoke run, about 15 s
    .venv/bin/python bench/faktory.py --setups fwp-64,remote-64 --rounds 5 --json out.json
    .venv/bin/python bench/faktory.py --rounds 1 --setups fwp-64 --profile prof/   # py-spy the server

Needs Node 20+ and ``npm ci`` in ``bench/faktory_node`` (faktory-worker 4.7.1, pinned there).

Every measurement runs on a fresh ``main.py --workers 0 --faktory-port P`` server with a new
SQLite file (the HTTP-only rows too, so every server is the same), and every setup runs once
per round (round 1 runs them all, then round 2, ...). The setups:

* push rows: ``bench/faktory_node/drive.js`` connects, says "ready", and on "go" pushes N
  no-op jobs, timing from "go" to the last answer (the rate is N over that time):
  ``pushb`` (``client.pushBulk``, 1,000 a PUSHB, one in flight), ``push`` (single PUSH, 16
  connections in flight), and their baselines from the same Node process with its ``http``
  module on keep-alive connections: ``http-batch`` (``POST /enqueue/batch`` of 1,000, one in
  flight) and ``http-single`` (``POST /enqueue``, 16 in flight);
* process rows: N no-op jobs are enqueued with ``POST /enqueue/batch`` into the paused queue
  ``default`` (not timed), the worker starts and is running, the queue is resumed, and
  ``GET /stats`` is polled every 20 ms; the rate is the jobs finished between the first poll
  at or below 90 % of N and the first at or below 10 % (bench/peers/common.py). ``fwp-64``:
  one faktory-worker ``Worker`` at concurrency 64, as the client is meant to be used; a
  ``Worker`` has one FETCH in flight whatever its concurrency, and FWP hands out one job per
  FETCH, so ``fwp-4x16`` (four ``Worker`` objects at 16) and ``fwp-64x1`` (64 at 1), each in
  one Node process, keep 4 and 64 FETCHes in flight; ``remote`` and ``remote-64``:
  ``python -m jobq.sdk.remote_worker`` at its defaults and at ``--concurrency 64``, over HTTP.

CPU per job is read from /proc for the server and the client process over the same window
(push rows: "go" to the last answer; process rows: the 90 % to 10 % polls), and includes
what the 20 ms ``GET /stats`` polls cost the server, the same for every process row. The
ratios (FWP over HTTP) are taken within each round, then their median is shown.

With ``--profile DIR``, py-spy samples the server during the first round's FWP process rows
(DIR/server-<setup>.txt, raw format, for bench/flame_top.py); those rows run slower for it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH / "peers"))

import common  # noqa: E402 - bench/peers/common.py: the 90 % -> 10 % drain measure
import remote_worker  # noqa: E402 - bench/remote_worker.py: HTTP calls, enqueue, remote worker processes
import run as bench  # noqa: E402 - bench/run.py: servers, ports, the machine
from loadgen import process_cpu  # noqa: E402 - bench/loadgen.py

NODE_DIR = BENCH / "faktory_node"
DRIVER = NODE_DIR / "drive.js"
QUICK_JOBS = 2_000
CONNECTIONS = 16  # in flight for the single-job push rows
FINISHED = ("completed", "failed", "dead", "cancelled")
FAKTORY_METRIC = re.compile(r'^jobq_faktory_commands_total\{command="(\w+)",result="(\w+)"\} (\S+)$')
COMMIT_METRIC = re.compile(r"^jobq_store_commit_seconds_(count|sum) (\S+)$")


@dataclass(frozen=True)
class Setup:
    key: str
    label: str
    kind: str  # "push" or "process"
    versus: tuple[str, ...] = ()  # the rows this one's ratios are taken against (same round)
    mode: str = ""  # drive.js mode (Node rows)
    env: tuple[tuple[str, str], ...] = ()  # drive.js settings
    remote_flags: tuple[str, ...] | None = None  # python -m jobq.sdk.remote_worker flags (remote rows)


SETUPS = (
    Setup("pushb", "FWP `PUSHB` (`client.pushBulk`), 1,000 a batch, 1 in flight", "push", ("http-batch",), "pushb"),
    Setup(
        "http-batch", "HTTP `POST /enqueue/batch` (Node `http`), 1,000 a batch, 1 in flight", "push", mode="http-batch"
    ),
    Setup("push", f"FWP `PUSH` (`job.push()`), {CONNECTIONS} connections", "push", ("http-single",), "push"),
    Setup("http-single", f"HTTP `POST /enqueue` (Node `http`), {CONNECTIONS} in flight", "push", (), "http-single"),
    Setup(
        "fwp-64",
        "FWP: faktory-worker `Worker`, concurrency 64",
        "process",
        ("remote-64", "remote"),
        "work",
        (("WORKERS", "1"), ("CONCURRENCY", "64")),
    ),
    Setup(
        "fwp-4x16",
        "FWP: 4 faktory-worker `Worker`s x concurrency 16, one process",
        "process",
        ("remote-64", "remote"),
        "work",
        (("WORKERS", "4"), ("CONCURRENCY", "16")),
    ),
    Setup(
        "fwp-64x1",
        "FWP: 64 faktory-worker `Worker`s x concurrency 1, one process",
        "process",
        ("remote-64", "remote"),
        "work",
        (("WORKERS", "64"), ("CONCURRENCY", "1")),
    ),
    Setup("remote", "HTTP: `jobq.sdk.remote_worker`, defaults", "process", (), remote_flags=()),
    Setup(
        "remote-64", "HTTP: `jobq.sdk.remote_worker --concurrency 64`", "process", remote_flags=("--concurrency", "64")
    ),
)
BY_KEY = {setup.key: setup for setup in SETUPS}


@dataclass
class Measurement:
    """One setup in one round."""

    setup: str
    round: int
    rate: float | None = None  # jobs/s
    server_us_per_job: float | None = None  # server CPU, µs per job (= ms per 1,000 jobs)
    client_us_per_job: float | None = None  # the pushing or working process's CPU, µs per job
    load_average: float = 0.0  # 1 minute, at the start
    seconds: float = 0.0  # the whole measurement, start-up included
    detail: dict[str, Any] = field(default_factory=dict)  # drain, outcome, commands, errors
    error: str | None = None


# -- processes ----------------------------------------------------------------------


def node() -> str:
    found = shutil.which("node")
    if found is None:
        raise SystemExit("node (20 or later) is not on PATH")
    if not (NODE_DIR / "node_modules" / "faktory-worker").is_dir():
        raise SystemExit(f"faktory-worker is not installed: cd {NODE_DIR} && npm ci")
    return found


def two_ports() -> tuple[int, int]:
    first = bench.free_port()
    while (second := bench.free_port()) == first:
        pass
    return first, second


def wait_port(port: int, server: bench.Server, timeout: float = 30.0) -> None:
    """Wait until the FWP listener accepts (it starts after HTTP answers /health)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}: {server.log.read_text()[-2000:]}")
        with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"no Faktory listener on port {port} after {timeout:.0f}s")


@contextmanager
def jobq_server(workdir: Path, name: str) -> Iterator[tuple[bench.Server, int]]:
    """A fresh server on a new SQLite file with the FWP listener on; the server and the FWP port."""
    store = remote_worker.fresh_store("sqlite", workdir)
    port, faktory_port = two_ports()
    command = [*bench.jobq_command(store, 0), "--port", str(port), "--faktory-port", str(faktory_port)]
    server = bench.Server(command, port, workdir / f"{name}-server.log")
    try:
        server.wait_ready()
        wait_port(faktory_port, server)
        yield server, faktory_port
    finally:
        server.stop()


class Driver:
    """``node drive.js MODE``: lines in on stdin, lines out on stdout, stderr to a log."""

    def __init__(self, mode: str, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._log_file = log.open("wb")
        self.process = subprocess.Popen(
            [node(), str(DRIVER), mode],
            cwd=NODE_DIR,
            env={**bench.clean_env(), **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
        )

    def read(self, timeout: float) -> str:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline().decode().strip() if ready else ""
        if not line:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"drive.js said nothing in {timeout:.0f}s (exit {self.process.poll()}): {tail}")
        return line

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                with suppress(OSError):
                    pipe.close()
        self._log_file.close()


@contextmanager
def driver(mode: str, env: dict[str, str], log: Path) -> Iterator[Driver]:
    child = Driver(mode, env, log)
    try:
        if child.read(60) != "ready":
            raise RuntimeError(f"drive.js {mode}: no 'ready': {log.read_text(errors='replace')[-2000:]}")
        yield child
    finally:
        child.stop()


def cpu(pid: int) -> float:
    seconds = process_cpu(pid)
    if seconds is None:
        raise RuntimeError(f"process {pid} is gone")
    return seconds


# -- what the server counted ------------------------------------------------------------


def job_counts(server: bench.Server) -> dict[str, int]:
    counts = remote_worker.call(server, "GET", "/stats")["jobs"]
    return {status: n for status, n in counts.items() if n}


def server_metrics(server: bench.Server) -> dict[str, float]:
    """From /metrics: ``jobq_faktory_commands_total`` ("FETCH ok" -> count) and the SQLite store's
    group commits ("commits" and "commit seconds")."""
    found: dict[str, float] = {}
    for line in remote_worker.call(server, "GET", "/metrics").splitlines():
        if match := FAKTORY_METRIC.match(line):
            found[f"{match[1]} {match[2]}"] = int(float(match[3]))
        elif match := COMMIT_METRIC.match(line):
            found["commits" if match[1] == "count" else "commit seconds"] = float(match[2])
    return found


def protocol_counts(server: bench.Server) -> dict[str, float]:
    """FWP commands, store commits, and the HTTP requests of the workers and pushes (not the benchmark's polls)."""
    counts = server_metrics(server)
    for key, n in remote_worker.requests_by_route(server).items():
        if "/workers/" in key or "/enqueue" in key:
            counts[key] = n
    return counts


# -- measurements --------------------------------------------------------------------------


def measure_push(setup: Setup, jobs: int, workdir: Path, name: str) -> Measurement:
    with jobq_server(workdir, name) as (server, faktory_port):
        env = {
            "FAKTORY_URL": f"tcp://127.0.0.1:{faktory_port}",
            "JOBQ_URL": server.url,
            "JOBS": str(jobs),
            "CONNECTIONS": str(CONNECTIONS),
            **dict(setup.env),
        }
        with driver(setup.mode, env, workdir / f"{name}-node.log") as child:
            pids = server.process.pid, child.process.pid
            before = [cpu(pid) for pid in pids]
            child.send("go")
            answer = json.loads(child.read(600))
            after = [cpu(pid) for pid in pids]
        counts = job_counts(server)
        commands = protocol_counts(server)
    measurement = Measurement(setup.key, 0, detail={"answer": answer, "outcome": counts, "commands": commands})
    if answer["rejected"] or counts.get("pending", 0) != jobs:
        measurement.error = f"{answer['rejected']} rejected; the server holds {counts}"
        return measurement
    measurement.rate = round(jobs / answer["seconds"], 1)
    measurement.server_us_per_job = round((after[0] - before[0]) / jobs * 1e6, 1)
    measurement.client_us_per_job = round((after[1] - before[1]) / jobs * 1e6, 1)
    return measurement


def measure_process(
    setup: Setup, jobs: int, workdir: Path, name: str, timeout: float, profile: Path | None
) -> Measurement:
    with jobq_server(workdir, name) as (server, faktory_port):
        remote_worker.call(server, "POST", "/queues/default/pause")
        remote_worker.enqueue(server, jobs)  # {"type": "noop"}, 1,000 a request
        if setup.remote_flags is None:
            env = {"FAKTORY_URL": f"tcp://127.0.0.1:{faktory_port}", **dict(setup.env)}
            with driver("work", env, workdir / f"{name}-node.log") as child:
                child.send("go")
                measurement = drain(server, child.process.pid, jobs, timeout, setup, profile)
                child.send("stop")
                measurement.detail["worker"] = json.loads(child.read(60))
        else:
            flags = remote_worker.Setup(1, setup.remote_flags)
            with remote_worker.workers(server.url, flags, workdir, name) as started:
                measurement = drain(server, started[0].process.pid, jobs, timeout, setup, None)
        measurement.detail["outcome"] = job_counts(server)
        measurement.detail["commands"] = protocol_counts(server)
    if measurement.detail["outcome"].get("completed") != jobs and measurement.error is None:
        measurement.error = f"not every job completed: {measurement.detail['outcome']}"
    return measurement


def drain(
    server: bench.Server, client: int, jobs: int, timeout: float, setup: Setup, profile: Path | None
) -> Measurement:
    """Resume the queue and poll until every job finished; the 90 % -> 10 % rate and CPU per job."""
    polls: list[tuple[int, float, float]] = []  # remaining, server CPU, client CPU at each poll

    def remaining() -> int:
        counts = remote_worker.call(server, "GET", "/stats")["jobs"]
        left = jobs - sum(counts[status] for status in FINISHED)
        polls.append((left, cpu(server.process.pid), cpu(client)))
        return left

    def resume() -> None:
        remote_worker.call(server, "POST", "/queues/default/resume")

    with remote_worker.profiling({f"server-{setup.key}": server.process.pid}, profile):
        result = common.drain(remaining, jobs, timeout, resume)
    measurement = Measurement(setup.key, 0, result.rate, detail={"drain": asdict(result)}, error=result.error)
    high = next((i for i, poll in enumerate(polls) if poll[0] <= jobs * common.HIGH_MARK), None)
    low = next((i for i, poll in enumerate(polls) if poll[0] <= jobs * common.LOW_MARK), None)
    if result.rate is not None and high is not None and low is not None:
        done = polls[high][0] - polls[low][0]
        measurement.server_us_per_job = round((polls[low][1] - polls[high][1]) / done * 1e6, 1)
        measurement.client_us_per_job = round((polls[low][2] - polls[high][2]) / done * 1e6, 1)
    return measurement


def measure(setup: Setup, jobs: int, round_: int, workdir: Path, timeout: float, profile: Path | None) -> Measurement:
    load = os.getloadavg()[0]
    started = time.perf_counter()
    name = f"{setup.key}-{round_}"
    try:
        if setup.kind == "push":
            measurement = measure_push(setup, jobs, workdir, name)
        else:
            measurement = measure_process(setup, jobs, workdir, name, timeout, profile)
    except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as exc:
        measurement = Measurement(setup.key, round_, error=str(exc)[-500:])
    measurement.round = round_
    measurement.load_average = load
    measurement.seconds = round(time.perf_counter() - started, 1)
    return measurement


def run_rounds(
    setups: Sequence[Setup], jobs: int, rounds: int, workdir: Path, timeout: float, profile: Path | None
) -> list[Measurement]:
    measurements = []
    for round_ in range(1, rounds + 1):
        for setup in setups:
            spied = profile if round_ == 1 and setup.mode == "work" else None
            m = measure(setup, jobs, round_, workdir, timeout, spied)
            measurements.append(m)
            rate = f"{m.rate:,.0f} jobs/s" if m.rate is not None else "no rate"
            cpu_text = f"server {m.server_us_per_job} µs/job, client {m.client_us_per_job} µs/job"
            error = f"; ERROR {m.error}" if m.error else ""
            print(
                f"round {round_}: {setup.key}: {rate}; {cpu_text}; {m.seconds:.0f}s in all; "
                f"load average {m.load_average:.2f}{error}",
                file=sys.stderr,
            )
    return measurements


# -- reporting ----------------------------------------------------------------------------


def rate_of(measurements: Sequence[Measurement], key: str, round_: int) -> float | None:
    return next((m.rate for m in measurements if m.setup == key and m.round == round_), None)


def median_of(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def fmt(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def ratio_cell(measurements: Sequence[Measurement], key: str, reference: str, rounds: int) -> str:
    """The median of the per-round ratios, then each round's: ``0.52x (0.50 / 0.52 / 0.55)``."""
    ratios: list[float | None] = []
    for round_ in range(1, rounds + 1):
        mine, theirs = rate_of(measurements, key, round_), rate_of(measurements, reference, round_)
        ratios.append(mine / theirs if mine is not None and theirs else None)
    median = median_of(ratios)
    if median is None:
        return "—"
    each = " / ".join("—" if r is None else f"{r:.2f}" for r in ratios)
    return f"{median:.2f}x ({each})" if rounds > 1 else f"{median:.2f}x"


def table(setups: Sequence[Setup], measurements: Sequence[Measurement], rounds: int, kind: str) -> str:
    mine = [s for s in setups if s.kind == kind]
    references = list(dict.fromkeys(ref for s in mine for ref in s.versus if ref in {x.key for x in mine}))
    client = "client" if kind == "push" else "worker"
    header = [
        "setup",
        "row",
        "jobs/s (median)",
        "jobs/s per round",
        "server CPU ms / 1,000 jobs",
        f"{client} CPU ms / 1,000 jobs",
        *(f"vs {ref}" for ref in references),
    ]
    lines = ["| " + " | ".join(header) + " |", "|---|---|---:|---|---:|---:|" + "---:|" * len(references)]
    for setup in mine:
        rows = [m for m in measurements if m.setup == setup.key]
        rates = [rate_of(measurements, setup.key, r) for r in range(1, rounds + 1)]
        cells = [
            setup.label,
            f"`{setup.key}`",
            fmt(median_of(rates)),
            " / ".join("failed" if r is None else f"{r:,.0f}" for r in rates),
            fmt(median_of([m.server_us_per_job for m in rows])),
            fmt(median_of([m.client_us_per_job for m in rows])),
            *(ratio_cell(measurements, setup.key, ref, rounds) if ref in setup.versus else "" for ref in references),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def commands_per_job(measurements: Sequence[Measurement], jobs: int) -> list[str]:
    """What each process row's worker sent, and the store committed, per job (first round); worker errors."""
    notes = []
    for m in measurements:
        if m.round != 1 or "drain" not in m.detail:
            continue
        counts = dict(m.detail.get("commands", {}))
        commits, seconds = counts.pop("commits", 0), counts.pop("commit seconds", 0.0)
        sent = sorted((key, n) for key, n in counts.items() if "enqueue" not in key and n >= jobs / 100)
        shown = [f"{key}: {n / jobs:.2f}" for key, n in sent]
        if commits:
            shown.append(f"store commits: {commits / jobs:.2f} ({seconds / commits * 1e3:.2f} ms each)")
        notes.append(f"`{m.setup}`, round 1, per job (whole measurement, enqueue included): {', '.join(shown)}")
        worker = m.detail.get("worker", {})
        if worker.get("error_count"):
            notes.append(f"`{m.setup}`: {worker['error_count']} worker errors, e.g. {worker['errors'][:2]}")
    return notes


def versions() -> dict[str, str]:
    package = json.loads((NODE_DIR / "node_modules" / "faktory-worker" / "package.json").read_text())
    done = subprocess.run([node(), "--version"], capture_output=True, text=True, check=True)
    git = ["git", "-C", str(bench.ROOT), "rev-parse", "--short", "HEAD"]
    head = subprocess.run(git, capture_output=True, text=True)
    return {"faktory-worker": package["version"], "node": done.stdout.strip(), "jobq": head.stdout.strip()}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--jobs", type=int, default=20_000, help="no-op jobs per measurement (default 20,000)")
    parser.add_argument("--quick", action="store_true", help=f"a smoke run: {QUICK_JOBS:,} jobs, 1 round")
    parser.add_argument(
        "--setups", default=",".join(BY_KEY), help=f"comma-separated, run in this order: {', '.join(BY_KEY)}"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one backlog may take to drain")
    parser.add_argument("--json", type=Path, help="also write the machine and every measurement to this file")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="py-spy (raw format) the server during round 1's FWP process rows into DIR/server-<setup>.txt",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.rounds = QUICK_JOBS, 1
    unknown = [key for key in args.setups.split(",") if key and key not in BY_KEY]
    if unknown:
        raise SystemExit(f"unknown setups: {', '.join(unknown)} (known: {', '.join(BY_KEY)})")
    args.setups = [BY_KEY[key] for key in args.setups.split(",") if key]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    machine = {**bench.machine(), **versions()}
    print(f"machine: {machine}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="jobq-bench-faktory-") as tmp:
        measurements = run_rounds(args.setups, args.jobs, args.rounds, Path(tmp), args.timeout, args.profile)
    machine["load_average_at_end"] = os.getloadavg()
    for kind in ("push", "process"):
        if any(s.kind == kind for s in args.setups):
            print(table(args.setups, measurements, args.rounds, kind))
            print()
    loads = [m.load_average for m in measurements]
    print(
        f"{args.jobs:,} no-op jobs per measurement, fresh SQLite file and server each; {args.rounds} interleaved "
        "round(s); push: N over the time from 'go' to the last answer; process: the rate between the polls at "
        "90 % and 10 % of the backlog; ratios: median of per-round ratios (each round's in brackets)."
    )
    print(
        f"Machine: {machine['cores']} x {machine['cpu']}; Python {machine['python']}, aiohttp {machine['aiohttp']}, "
        f"Node {machine['node']}, faktory-worker {machine['faktory-worker']}, jobq {machine['jobq']}; "
        f"1-minute load average {min(loads, default=0):.2f} to {max(loads, default=0):.2f} at the starts."
    )
    for note in commands_per_job(measurements, args.jobs):
        print(f"- {note}")
    for m in measurements:
        if m.error:
            print(f"- `{m.setup}`, round {m.round}: {m.error}")
    if args.json:
        document = {"machine": machine, "jobs": args.jobs, "rounds": args.rounds}
        document["measurements"] = [asdict(m) for m in measurements]
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
