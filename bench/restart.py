"""Restart on a big SQLite store: how soon a jobq process serves, and how much memory it holds.

    python bench/restart.py                                  # 1,000,000 queued jobs, 3 rounds
    python bench/restart.py --jobs 200000 --rounds 1         # a quick check
    python bench/restart.py --baseline-tree /tmp/jobq-base   # the same against another checkout, in turn
    python bench/restart.py --finished-share 0.5             # half of the jobs completed, half queued

Each checkout builds its own store file once (its own schema, then rows inserted
with SQL in one transaction: a few seconds, not an enqueue per job): ``--jobs``
jobs, the share ``--finished-share`` of them completed with a result and one
attempt, ``--processing`` of them left processing (a crash's leftovers, recovered
at start), the rest pending, every payload ``{}``. Each round then copies the
file, starts ``main.py`` over the copy (``--workers 0`` unless ``--workers``, so
the jobs stay queued) and measures, from the moment the process is started:

- **health**: the first ``GET /health`` answered 200;
- **status**: then ``GET /status/{id}`` of the newest job answered 200 (the job read last, in seq order);
- **stats**: then ``GET /stats`` answered, counting every job (a store that loads in stages
  answers it once every job is indexed);
- the server's CPU seconds and RSS (VmRSS) at ``status`` and at ``stats``.

Checkouts run alternately within each round; the table gives the best and the median.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from run import PYTHON, checkouts, clean_env, free_port, jobq_command  # noqa: E402 - bench/run.py

COLUMNS = (
    "id, seq, type, queue, priority, status, payload, result, error, attempts, max_attempts, timeout, created_at, "
    "run_at, started_at, finished_at, lease_id, lease_expires_at, progress, progress_note, history, owner, worker"
)


# -- building a store file (run in a child importing the measured checkout) ------------
BUILD = """
import asyncio, sys
from jobq.store.sqlite import SQLiteStore

async def main(path):
    store = SQLiteStore(path)
    await store.open()
    await store.close()

asyncio.run(main(sys.argv[1]))
"""


def build(root: Path, path: Path, jobs: int, finished_share: float, processing: int) -> str:
    """A store file of ``root``'s schema holding ``jobs`` jobs; returns the newest job's id."""
    subprocess.run([PYTHON, "-c", BUILD, str(path)], env=clean_env(root), check=True, cwd=root)
    finished = int(jobs * finished_share)
    now = time.time() - jobs * 1e-5
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    insert = f"INSERT INTO jobs ({COLUMNS}) VALUES ({', '.join('?' * 23)})"
    conn.executemany(insert, (row(seq, finished, processing, now) for seq in range(1, jobs + 1)))
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return job_id(jobs)


def job_id(seq: int) -> str:
    """A time-ordered id of the shape jobq makes (a UUIDv7's layout), fixed per seq."""
    text = f"{seq:032x}"
    return f"0192{text[4:8]}-{text[8:12]}-7{text[13:16]}-8{text[17:20]}-{text[20:]}"


def row(seq: int, finished: int, processing: int, now: float) -> tuple[Any, ...]:
    """The row of job ``seq``: completed, left processing or pending, by where it falls."""
    created = now + seq * 1e-5
    if seq <= finished:  # completed: a result and one attempt
        attempt = {"number": 1, "started_at": created + 0.001, "worker": "bench:1", "finished_at": created + 0.002}
        history = json.dumps([{**attempt, "outcome": "completed", "error": None, "traceback": None}])
        state = ("completed", "{}", "null", None, 1, 1, None, created, None, created + 0.001, created + 0.002)
        return (job_id(seq), seq, "noop", "default", 0, *state, "lease", None, None, None, history, None, None)
    if seq <= finished + processing:  # left processing by a crash
        state = ("processing", "{}", None, None, 1, 1, None, created, None, created + 0.001, None)
        return (job_id(seq), seq, "noop", "default", 0, *state, "lease", created + 60, None, None, "[]", None, "b:1")
    state = ("pending", "{}", None, None, 0, 1, None, created, None, None, None)
    return (job_id(seq), seq, "noop", "default", 0, *state, None, None, None, None, "[]", None, None)


# -- one restart --------------------------------------------------------------------------
def proc_stat(pid: int) -> tuple[float, int]:
    """CPU seconds (user + system) and VmRSS bytes of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return cpu, int(line.split()[1]) * 1024
    return cpu, 0


def wait_for(url: str, process: subprocess.Popen[bytes], timeout: float) -> tuple[float, bytes]:
    """Poll ``url`` until it answers 200; returns when (perf_counter) and the body."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as answer:
                return time.perf_counter(), answer.read()
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.01)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def restart(root: Path, master: Path, newest: str, workers: int, workdir: Path) -> dict[str, float]:
    copy = workdir / "restart.db"
    for leftover in (copy, Path(f"{copy}-wal"), Path(f"{copy}-shm")):
        leftover.unlink(missing_ok=True)
    shutil.copyfile(master, copy)
    port = free_port()
    command = [*jobq_command(f"sqlite:///{copy}", workers, root), "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with (workdir / "server.log").open("wb") as log:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=root, env=clean_env(root), stdout=log, stderr=subprocess.STDOUT)
        try:
            health, _ = wait_for(url + "/health", process, 120)
            status, _ = wait_for(f"{url}/status/{newest}", process, 120)
            cpu_status, rss_status = proc_stat(process.pid)
            stats, body = wait_for(url + "/stats", process, 120)
            cpu_stats, rss_stats = proc_stat(process.pid)
            counted = sum(json.loads(body)["jobs"].values())
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return {
        "health_s": health - started,
        "status_s": status - started,
        "stats_s": stats - started,
        "cpu_at_status_s": cpu_status,
        "cpu_at_stats_s": cpu_stats,
        "rss_at_status_mib": rss_status / 2**20,
        "rss_at_stats_mib": rss_stats / 2**20,
        "jobs_counted": counted,
    }


def summary(name: str, runs: list[dict[str, float]]) -> list[str]:
    lines = []
    for key in ("health_s", "status_s", "stats_s", "cpu_at_status_s", "cpu_at_stats_s"):
        values = [run[key] for run in runs]
        lines.append(f"| {name} | {key} | {min(values):.2f} | {statistics.median(values):.2f} |")
    for key in ("rss_at_status_mib", "rss_at_stats_mib"):
        values = [run[key] for run in runs]
        lines.append(f"| {name} | {key} | {min(values):.0f} | {statistics.median(values):.0f} |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--finished-share", type=float, default=0.0, help="share of the jobs completed")
    parser.add_argument("--processing", type=int, default=100, help="jobs left processing (recovered at start)")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-tree", type=Path, help="another checkout, measured in turn with this one")
    parser.add_argument("--json", type=Path, help="write every run here")
    args = parser.parse_args(argv)
    trees = checkouts(args.baseline_tree)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory(prefix="jobq-restart-") as tmp:
        workdir = Path(tmp)
        masters = {}
        for name, root in trees.items():
            master = workdir / f"{name}.db"
            began = time.perf_counter()
            newest = build(root, master, args.jobs, args.finished_share, args.processing)
            print(f"built {name}: {args.jobs} jobs in {time.perf_counter() - began:.1f}s", file=sys.stderr)
            masters[name] = master
        for round_number in range(args.rounds):
            for name, root in trees.items():
                result = restart(root, masters[name], newest, args.workers, workdir)
                runs[name].append(result)
                print(f"round {round_number + 1} {name}: {json.dumps(result)}", file=sys.stderr)
    print(
        f"{args.jobs:,} jobs ({args.finished_share:.0%} completed, {args.processing} recovered), workers {args.workers}"
    )
    print()
    print("| tree | measure | best | median |")
    print("|---|---|---|---|")
    for name, results in runs.items():
        print("\n".join(summary(name, results)))
    if args.json is not None:
        args.json.write_text(json.dumps(runs, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
