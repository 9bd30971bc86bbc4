"""Paced load on SQLite: what a job costs the server when jobs come at a steady rate, not as fast as possible.

    python bench/paced.py                                   # 300 and 1,000 jobs/s, and saturation, 3 rounds
    python bench/paced.py --rates 300 --rounds 5 --baseline-tree /tmp/jobq-base
    python bench/paced.py --rates 300 --no-saturation --duration 20

Each measurement starts a fresh server (``main.py``, SQLite on a fresh file, 32 in-process
workers, durability full: the defaults) and sends ``POST /enqueue`` with ``{"type": "noop"}``
open-loop: request i leaves at ``start + i / rate`` whether or not earlier answers came
(over up to 64 keep-alive connections, a new one opened if all are busy). After
``--warmup`` seconds it measures ``--duration`` seconds:

- **cpu/job**: the server's CPU (user + system, every thread, from /proc) over the window,
  per job accepted in it; **cpu %**: the same in percent of one core;
- **commits/job**: group commits in the window (``jobq_store_commit_seconds_count`` from
  ``GET /metrics``) per job;
- **latency**: enqueue to completion, ``finished_at - created_at`` of the jobs created in
  the window (millisecond timestamps), p50 and p99; and the 202's round trip, p99.

Saturation is ``bench/loadgen.py`` (64 connections, closed loop) on a fresh server: its
server CPU per job is what the paced cost is compared with. Checkouts run alternately.

Each round also paces and saturates the bare aiohttp handler (``bench/ceiling_server.py``, on
the same loop as jobq; ``--no-ceiling`` leaves it out): what a request arriving alone costs any
aiohttp server on this machine, against what it costs under load. It has no jobs, so it has no
commits and no job latency, only CPU and the answer's round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from loadgen import process_cpu  # noqa: E402 - bench/loadgen.py
from run import PYTHON, Server, checkouts, free_port, jobq_command  # noqa: E402 - bench/run.py

BODY = b'{"type": "noop"}'
MAX_CONNECTIONS = 64
CEILING = "ceiling"  # the bare aiohttp handler's name in the tables


def commits(url: str) -> float:
    """Group commits so far, from the server's metrics."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith("jobq_store_commit_seconds_count"):
                return float(line.split()[-1])
    return 0.0


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return json.loads(answer.read())


class Client:
    """Keep-alive connections to the server; each request takes an idle one or opens another."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        head = f"POST /enqueue HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        self.request = (head + f"Content-Length: {len(BODY)}\r\n\r\n").encode() + BODY
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0

    async def post(self) -> tuple[int, float]:
        """One POST /enqueue: its status code and round trip in seconds."""
        if self.idle:
            reader, writer = self.idle.pop()
        else:
            self.opened += 1
            reader, writer = await asyncio.open_connection(self.host, self.port)
        sent = time.perf_counter()
        writer.write(self.request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        took = time.perf_counter() - sent
        self.idle.append((reader, writer))
        return int(head[9:12]), took

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


async def paced(url: str, pid: int, rate: float, warmup: float, duration: float, jobs: bool) -> dict[str, Any]:
    """Send at ``rate`` for ``warmup + duration`` seconds; measure the last ``duration``.

    ``jobs``: the server is jobq, so its commits and its jobs' latencies are read too.
    """
    port = int(url.rsplit(":", 1)[1])
    client = Client("127.0.0.1", port)
    loop = asyncio.get_running_loop()
    total = int(rate * (warmup + duration))
    start = loop.time() + 0.1
    window_start, window_end = start + warmup, start + warmup + duration
    marks: dict[str, tuple[float, float, float]] = {}  # name -> (wall time, server CPU, commits)
    answers: list[tuple[float, int, float]] = []  # (sent at, status, round trip)
    tasks = set()

    async def one(at: float) -> None:
        status, took = await client.post()
        answers.append((at, status, took))

    async def mark(name: str) -> None:
        cpu = process_cpu(pid) or 0.0
        marks[name] = (time.time(), cpu, await asyncio.to_thread(commits, url) if jobs else 0.0)

    for i in range(total):
        at = start + i / rate
        if "start" not in marks and at >= window_start:
            await mark("start")
        delay = at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(at))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.sleep(max(window_end - loop.time(), 0))
    await mark("end")
    await asyncio.gather(*tasks)
    client.close()
    (t0, cpu0, commits0), (t1, cpu1, commits1) = marks["start"], marks["end"]
    in_window = [a for a in answers if window_start <= a[0] < window_end]
    accepted = sum(1 for _, status, _ in in_window if status == 202)
    trips = sorted(took for _, _, took in in_window)
    result = {
        "rate": rate,
        "accepted": accepted,
        "not_accepted": len(in_window) - accepted,
        "connections": client.opened,
        "cpu_percent": 100 * (cpu1 - cpu0) / (t1 - t0),
        "cpu_ms_per_job": 1000 * (cpu1 - cpu0) / max(accepted, 1),
        "answer_p99_ms": percentile(trips, 99) * 1000,
    }
    if jobs:
        latencies = await asyncio.to_thread(job_latencies, url, t0, t1)
        result["commits_per_job"] = (commits1 - commits0) / max(accepted, 1)
        result["latency_p50_ms"] = percentile(latencies, 50) * 1000
        result["latency_p99_ms"] = percentile(latencies, 99) * 1000
        result["completed"] = len(latencies)
    return result


def job_latencies(url: str, since: float, until: float) -> list[float]:
    """``finished_at - created_at`` of the jobs created between the two times, once all have finished."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        stats = get_json(url + "/stats")["jobs"]
        if not (stats["pending"] or stats["processing"]):
            break
        time.sleep(0.2)
    latencies = []
    cursor = None
    while True:
        page = get_json(url + "/jobs?limit=500" + (f"&cursor={cursor}" if cursor else ""))
        for job in page["jobs"]:
            created = datetime.fromisoformat(job["created_at"].replace("Z", "+00:00")).timestamp()
            if since <= created < until and job["finished_at"]:
                finished = datetime.fromisoformat(job["finished_at"].replace("Z", "+00:00")).timestamp()
                latencies.append(finished - created)
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return sorted(latencies)


def percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * pct / 100))]


def saturation(server: Server, duration: float, warmup: float) -> dict[str, Any]:
    command = [PYTHON, str(BENCH / "loadgen.py"), "--url", server.url + "/enqueue", "--connections", "64"]
    command += ["--duration", str(duration), "--warmup", str(warmup), "--server-pid", str(server.process.pid)]
    out = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    rate = out["requests_per_second"]
    return {
        "rate": rate,
        "cpu_percent": out["server_cpu_percent"],
        "cpu_ms_per_job": out["server_cpu_percent"] / 100 / rate * 1000 if rate else float("nan"),
    }


def serve(root: Path | None, workdir: Path, name: str) -> Server:
    """A fresh jobq server from checkout ``root`` on a new SQLite file, or (``root`` None) the bare handler."""
    port = free_port()
    if root is None:
        command, root = [PYTHON, str(BENCH / "ceiling_server.py"), str(port)], BENCH.parent
    else:
        db = workdir / f"{name}.db"
        for leftover in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            leftover.unlink(missing_ok=True)
        command = [*jobq_command(f"sqlite:///{db}", 32, root), "--port", str(port)]
    server = Server(command, port, workdir / f"{name}.log", root)
    server.wait_ready()
    return server


def print_ratios(runs: dict[tuple[str, str], list[dict[str, Any]]]) -> None:
    """Each paced load's CPU a job against the same server's under saturation (medians, and round by round)."""
    print("\n| tree | load | cpu ms/job (median) | x its saturation (median) | by round |")
    print("|---|---|---|---|---|")
    for (name, load), results in runs.items():
        if load == "saturation":
            continue
        saturated = [r["cpu_ms_per_job"] for r in runs[(name, "saturation")]]
        paced_cost = [r["cpu_ms_per_job"] for r in results]
        by_round = " / ".join(f"{p / s:.1f}x" for p, s in zip(paced_cost, saturated, strict=True))
        median = statistics.median(paced_cost)
        print(f"| {name} | {load} | {median:.3f} | {median / statistics.median(saturated):.1f}x | {by_round} |")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[300.0, 1000.0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-saturation", action="store_true")
    parser.add_argument("--no-ceiling", action="store_true", help="leave the bare aiohttp handler out")
    parser.add_argument("--baseline-tree", type=Path, help="another checkout, measured in turn with this one")
    parser.add_argument("--json", type=Path, help="write every run here")
    args = parser.parse_args(argv)
    trees: dict[str, Path | None] = dict(checkouts(args.baseline_tree))
    if not args.no_ceiling:
        trees[CEILING] = None
    loads = [str(rate) for rate in args.rates] + ([] if args.no_saturation else ["saturation"])
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {(t, load): [] for t in trees for load in loads}
    with tempfile.TemporaryDirectory(prefix="jobq-paced-") as tmp:
        for round_number in range(args.rounds):
            for load in loads:
                for name, root in trees.items():
                    server = serve(root, Path(tmp), name)
                    try:
                        if load == "saturation":
                            result = saturation(server, args.duration, args.warmup)
                        else:
                            is_jobq = root is not None
                            pid = server.process.pid
                            pace = paced(server.url, pid, float(load), args.warmup, args.duration, is_jobq)
                            result = asyncio.run(pace)
                    finally:
                        server.stop()
                    runs[(name, load)].append(result)
                    print(f"round {round_number + 1} {name} {load}: {json.dumps(result)}", file=sys.stderr)
    keys = ("cpu_ms_per_job", "cpu_percent", "commits_per_job", "latency_p50_ms", "latency_p99_ms", "answer_p99_ms")
    print("| tree | load | " + " | ".join(f"{k} best / median" for k in keys) + " |")
    print("|---|---|" + "---|" * len(keys))
    for (name, load), results in runs.items():
        cells = []
        for key in keys:
            values = [r[key] for r in results if key in r]
            if not values:
                cells.append("")
                continue
            best = max(values) if key == "rate" else min(values)
            digits = 3 if key == "cpu_ms_per_job" else 2
            cells.append(f"{best:.{digits}f} / {statistics.median(values):.{digits}f}")
        print(f"| {name} | {load} | " + " | ".join(cells) + " |")
    if not args.no_saturation:
        print_ratios(runs)
    if args.json is not None:
        args.json.write_text(json.dumps({f"{n} {load}": r for (n, load), r in runs.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
