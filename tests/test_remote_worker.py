"""``python -m jobq.worker`` as real processes beside a real server: sharing, crashes, drains."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import ServerProcess, WorkerProcess

HANDLERS = ("--handlers", "tests.fixture_handlers")


@pytest.fixture
def runs_file(tmp_path: Path) -> Path:
    return tmp_path / "runs.txt"


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[ServerProcess | WorkerProcess]]:
    """Processes a test started; all stopped at teardown."""
    processes: list[ServerProcess | WorkerProcess] = []
    yield processes
    for process in processes:
        process.stop()


def runs(runs_file: Path) -> Counter[str]:
    return Counter(runs_file.read_text().split()) if runs_file.exists() else Counter()


def wait_until(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def start_server(tmp_path: Path, runs_file: Path, started: list, *args: str) -> ServerProcess:  # type: ignore[type-arg]
    env = {"JOBQ_TEST_RUNS_FILE": str(runs_file)}
    server = ServerProcess(tmp_path / "server.log", "--store", "memory://", *HANDLERS, *args, env=env)
    started.append(server)
    server.wait_ready()
    return server


def start_worker(tmp_path: Path, runs_file: Path, started: list, url: str, name: str, *args: str) -> WorkerProcess:  # type: ignore[type-arg]
    env = {"JOBQ_TEST_RUNS_FILE": str(runs_file)}
    worker = WorkerProcess(tmp_path / f"{name}.log", url, *HANDLERS, *args, env=env)
    started.append(worker)
    return worker


def job_status(server: ServerProcess, job_id: str) -> dict:  # type: ignore[type-arg]
    status, job = server.request("GET", f"/status/{job_id}")
    assert status == 200
    return job


def test_remote_and_in_process_workers_share_the_queue(tmp_path: Path, runs_file: Path, started: list) -> None:  # type: ignore[type-arg]
    server = start_server(tmp_path, runs_file, started, "--workers", "2")
    worker = start_worker(tmp_path, runs_file, started, server.url, "remote", "--concurrency", "4")
    status, body = server.request(
        "POST", "/enqueue/batch", {"jobs": [{"type": "record", "payload": {"seconds": 0.05}}] * 60}
    )
    assert status == 200 and body["accepted"] == 60
    ids = [r["id"] for r in body["results"]]
    wait_until(lambda: server.request("GET", "/stats")[1]["jobs"]["completed"] == 60, 30, "60 completed jobs")
    ran_by = Counter(job_status(server, job_id)["history"][0]["worker"] for job_id in ids)
    assert len(ran_by) == 2, f"expected the server and the remote worker to share the work: {ran_by}"
    assert sum(runs(runs_file).values()) == 60
    worker.send(signal.SIGTERM)
    assert worker.wait(10) == 0


def test_killed_remote_worker_lease_lapses_and_the_job_is_redelivered(
    tmp_path: Path,
    runs_file: Path,
    started: list,  # type: ignore[type-arg]
) -> None:
    server = start_server(tmp_path, runs_file, started, "--workers", "0")
    doomed = start_worker(tmp_path, runs_file, started, server.url, "doomed", "--lease", "1")
    job = {"type": "record", "payload": {"seconds": 60, "slow_attempts": 1}, "max_attempts": 3}
    status, body = server.request("POST", "/enqueue", job)
    assert status == 202
    job_id = body["id"]
    wait_until(lambda: runs(runs_file)[job_id] == 1, 20, "the first worker to start the job")
    doomed.kill()
    start_worker(tmp_path, runs_file, started, server.url, "rescuer", "--lease", "5")
    wait_until(lambda: job_status(server, job_id)["status"] == "completed", 30, "the job to complete elsewhere")
    final = job_status(server, job_id)
    assert runs(runs_file)[job_id] == 2
    assert [a["outcome"] for a in final["history"]] == ["lease-expired", "completed"]


def test_remote_worker_drains_its_jobs_on_sigterm(tmp_path: Path, runs_file: Path, started: list) -> None:  # type: ignore[type-arg]
    server = start_server(tmp_path, runs_file, started, "--workers", "0")
    worker = start_worker(tmp_path, runs_file, started, server.url, "draining", "--concurrency", "2")
    ids = [
        server.request("POST", "/enqueue", {"type": "record", "payload": {"seconds": 0.5}})[1]["id"] for _ in range(4)
    ]
    wait_until(lambda: len(runs(runs_file)) == 2, 20, "two jobs to start")
    worker.send(signal.SIGTERM)
    assert worker.wait(15) == 0
    statuses = Counter(job_status(server, job_id)["status"] for job_id in ids)
    assert statuses == {"completed": 2, "pending": 2}, statuses  # finished what it held, leased no more
    assert "worker stopped" in worker.log()
