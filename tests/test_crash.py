"""Crashes and restarts, end to end: ``main.py`` on a SQLite file, killed with SIGKILL or drained with SIGTERM.

The ``record`` handler (tests/fixture_handlers.py) appends a job's id to the
runs file each time the job starts, so the test can see which jobs ran and how
often, across processes.
"""

from __future__ import annotations

import re
import signal
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import StartServer
from tests.procs import ServerProcess, wait_until

CRASH_WORKERS = 16
CRASH_JOBS = 2000
BATCH = 1000


def started(runs_file: Path) -> list[str]:
    """Ids of the jobs that started, one line per run."""
    return runs_file.read_text().split() if runs_file.exists() else []


def stats(server: ServerProcess) -> dict[str, Any]:
    status, body = server.request("GET", "/stats")
    assert status == 200, body
    return dict(body)


def enqueue_batch(server: ServerProcess, count: int, seconds: float) -> list[str]:
    """Enqueue ``count`` record jobs in batches; returns the ids of the accepted ones."""
    ids: list[str] = []
    for offset in range(0, count, BATCH):
        jobs = [{"type": "record", "payload": {"seconds": seconds}} for _ in range(min(BATCH, count - offset))]
        status, body = server.request("POST", "/enqueue/batch", {"jobs": jobs})
        assert status == 200, body
        ids += [result["id"] for result in body["results"] if result["code"] == 202]
    return ids


def job_ids(server: ServerProcess, status: str) -> set[str]:
    """Ids of every job in ``status``, read page by page from ``GET /jobs``."""
    ids: set[str] = set()
    cursor = ""
    while True:
        code, body = server.request("GET", f"/jobs?status={status}&limit=500{cursor}")
        assert code == 200, body
        ids |= {job["id"] for job in body["jobs"]}
        if body["next_cursor"] is None:
            return ids
        cursor = f"&cursor={body['next_cursor']}"


def count_on_disk(db: Path, status: str) -> int:
    """Jobs in ``status`` in the file itself (read-only: recovery is left to jobq)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM jobs WHERE status = ?", (status,)).fetchone()[0])
    finally:
        conn.close()


def stop_cleanly(server: ServerProcess) -> None:
    server.send(signal.SIGTERM)
    assert server.wait(timeout=30) == 0, server.log()


@pytest.fixture
def start_server(start_server: StartServer, tmp_path: Path) -> StartServer:
    """The shared fixture's servers, on ``<tmp>/jobq.db`` (the same file each time, as across restarts)."""

    def start(*args: str, workers: int) -> ServerProcess:
        return start_server("--store", f"sqlite:///{tmp_path / 'jobq.db'}", "--workers", str(workers), *args)

    return start


def test_sigkill_mid_run_loses_no_accepted_job(start_server: StartServer, runs_file: Path, tmp_path: Path) -> None:
    first = start_server(workers=CRASH_WORKERS)
    accepted = enqueue_batch(first, CRASH_JOBS, seconds=0.01)
    assert len(accepted) == CRASH_JOBS
    wait_until(lambda: len(started(runs_file)) >= 200, "jobs to be running")
    first.kill()
    ran_before_crash = len(started(runs_file))
    assert ran_before_crash < CRASH_JOBS, "every job ran before the kill: nothing was tested"
    left_processing = count_on_disk(tmp_path / "jobq.db", "processing")
    assert left_processing > 0, "no job was running at the kill"

    second = start_server(workers=CRASH_WORKERS)
    wait_until(lambda: stats(second)["jobs"]["completed"] == CRASH_JOBS, f"{CRASH_JOBS} completed jobs", 60.0)
    assert set(accepted) == job_ids(second, "completed")
    assert f"recovered {left_processing} jobs" in second.log()
    stop_cleanly(second)

    runs = Counter(started(runs_file))
    assert set(runs) == set(accepted)
    duplicates = sum(runs.values()) - len(runs)
    # Only jobs this process held (running, or prefetched for a free worker) can run twice.
    assert duplicates <= 2 * CRASH_WORKERS, f"{duplicates} duplicate runs"
    assert max(runs.values()) <= 2


def jobs_left(log: str) -> int:
    """How many jobs a drained process says it left: stopped by the drain timeout plus never started."""
    stopped = re.search(r"(\d+) jobs did not finish", log)
    waiting = re.search(r"(\d+) jobs are still waiting", log)
    assert stopped or waiting, log
    return sum(int(match.group(1)) for match in (stopped, waiting) if match)


def test_sigterm_drain_leaves_unfinished_jobs_pending_for_the_next_start(
    start_server: StartServer, runs_file: Path
) -> None:
    first = start_server("--drain-timeout", "0.5", workers=4)
    accepted = enqueue_batch(first, 8, seconds=2.0)
    wait_until(lambda: len(started(runs_file)) == 4, "four jobs to be running")
    interrupted = set(started(runs_file))
    stop_cleanly(first)
    assert jobs_left(first.log()) == len(accepted)

    idle = start_server(workers=0)
    assert job_ids(idle, "pending") == set(accepted)
    for job_id in accepted:
        code, job = idle.request("GET", f"/status/{job_id}")
        assert code == 200, job
        outcomes = [attempt["outcome"] for attempt in job["history"]]
        assert outcomes == (["released"] if job_id in interrupted else []), job
    stop_cleanly(idle)

    last = start_server(workers=8)
    wait_until(lambda: stats(last)["jobs"]["completed"] == len(accepted), "every job to complete")
    stop_cleanly(last)
    runs = Counter(started(runs_file))
    assert {job_id for job_id, count in runs.items() if count == 2} == interrupted
    assert set(runs) == set(accepted) and max(runs.values()) == 2


def test_sigkill_mid_workflow_on_sqlite_loses_nothing_and_the_callback_runs_once(
    start_server: StartServer, runs_file: Path, tmp_path: Path
) -> None:
    first = start_server(workers=4)
    members = [{"id": f"m{n}", "type": "record", "payload": {"seconds": 0.2, "slow_runs": 1}} for n in range(24)]
    parents = [member["id"] for member in members]
    callback = {"id": "callback", "type": "record", "depends_on": parents, "on_parent_failure": "run"}
    status, body = first.request("POST", "/workflows", {"jobs": [*members, callback]})
    assert status == 202, body
    wait_until(lambda: len(started(runs_file)) >= 8, "members to be running")
    first.kill()
    assert "callback" not in started(runs_file)
    assert count_on_disk(tmp_path / "jobq.db", "waiting") == 1  # the callback, still waiting on disk

    second = start_server(workers=4)
    wait_until(lambda: stats(second)["jobs"]["completed"] == 25, "the workflow to finish")
    stop_cleanly(second)
    runs = Counter(started(runs_file))
    assert runs["callback"] == 1, runs
    assert set(runs) == {"callback", *(m["id"] for m in members)}
    assert started(runs_file)[-1] == "callback", "the callback ran after every member"
