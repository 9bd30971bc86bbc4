"""Graceful shutdown, end to end: ``main.py`` in a subprocess, real signals, real HTTP.

Each test enqueues ``record`` jobs (tests/fixture_handlers.py) that log every
start to a runs file and then sleep, waits for a state it can see (jobs started
in the runs file, counts in ``GET /stats``), and only then sends a signal.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import StartServer
from tests.procs import ServerProcess, http, wait_until

WORKERS = 2


# -- helpers -------------------------------------------------------------------


def call(server: ServerProcess, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
    """One HTTP request; returns (status, headers, parsed JSON body or None)."""
    status, headers, raw = http(server.url + path, method, body)
    return status, headers, json.loads(raw) if raw else None


def enqueue(server: ServerProcess, seconds: float) -> str:
    """Enqueue one ``record`` job that runs for ``seconds``; returns its id."""
    return enqueue_typed(server, "record", seconds)


def enqueue_typed(server: ServerProcess, job_type: str, seconds: float) -> str:
    """Enqueue one job of ``job_type`` (tests/fixture_handlers.py) with ``{"seconds": seconds}``; returns its id."""
    status, body = server.request("POST", "/enqueue", {"type": job_type, "payload": {"seconds": seconds}})
    assert status == 202, body
    return str(body["id"])


def stats(server: ServerProcess) -> dict[str, Any]:
    status, body = server.request("GET", "/stats")
    assert status == 200, body
    return dict(body)


def started(runs_file: Path) -> list[str]:
    """Ids of the jobs that started, one per run, in order."""
    return runs_file.read_text().split() if runs_file.exists() else []


def exit_code(server: ServerProcess, within: float) -> int:
    """Wait for the process to exit; fail with its log if it takes longer than ``within`` seconds."""
    try:
        return server.wait(timeout=within)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"server still running {within}s later:\n{server.log()}") from None


def stop_with(server: ServerProcess, signum: signal.Signals, within: float) -> tuple[int, float]:
    """Send ``signum``, wait for the process to exit; its exit code and the seconds it took after the signal."""
    sent = time.monotonic()
    server.send(signum)
    return exit_code(server, within), time.monotonic() - sent


def read_log(server: ServerProcess) -> str:
    """The whole log of a process that has exited."""
    return server.log_path.read_text(errors="replace")


def log_line(log: str, pattern: str) -> str:
    """The one log line matching ``pattern``."""
    lines = [line for line in log.splitlines() if re.search(pattern, line)]
    assert len(lines) == 1, f"wanted one line matching {pattern!r}, got {lines}:\n{log}"
    return lines[0]


# -- fixtures ------------------------------------------------------------------
@pytest.fixture
def start_server(start_server: StartServer) -> StartServer:
    """The shared fixture's servers, on the memory store with ``WORKERS`` workers."""

    def start(*args: str) -> ServerProcess:
        return start_server("--store", "memory://", "--workers", str(WORKERS), *args)

    return start


# -- tests ---------------------------------------------------------------------
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_drains_every_accepted_job_then_exits_0(
    start_server: StartServer, runs_file: Path, signum: signal.Signals
) -> None:
    server = start_server("--drain-timeout", "30")
    ids = [enqueue(server, seconds=0.5) for _ in range(3 * WORKERS)]
    status, later = server.request("POST", "/enqueue", {"type": "record", "delay": 60})
    assert status == 202, later
    wait_until(lambda: len(started(runs_file)) >= WORKERS, "the first jobs to start")
    before = stats(server)
    # The first wave runs for 0.5s and has just started: nothing finished, most jobs still wait.
    assert before["jobs"]["completed"] == 0, before
    assert len(started(runs_file)) < len(ids)

    server.send(signum)
    wait_until(lambda: stats(server)["draining"], "the server to start draining")
    # Two more waves of 0.5s jobs remain, so the server is still draining while it answers these.
    status, headers, problem = call(server, "POST", "/enqueue", {"type": "record", "payload": {}})
    batch_status, batch_headers, _ = call(server, "POST", "/enqueue/batch", {"jobs": [{"type": "record"}]})
    health_status, _, health = call(server, "GET", "/health")

    assert exit_code(server, within=15) == 0
    assert status == 503
    assert headers["Content-Type"].startswith("application/problem+json")
    assert int(headers["Retry-After"]) > 0
    assert problem["status"] == 503
    assert "shutting down" in problem["detail"]
    assert batch_status == 503
    assert "Retry-After" in batch_headers
    assert (health_status, health["status"]) == (503, "draining")

    assert Counter(started(runs_file)) == Counter(ids), "every accepted job runs exactly once"
    log = read_log(server)
    assert f"{signum.name} received" in log
    drained = log_line(log, r"drained \d+ jobs")
    assert re.search(rf"drained {len(ids)} jobs\b", drained), drained
    assert "did not finish" not in log
    assert later["id"] in log_line(log, "still waiting and never started"), "a drain does not wait for scheduled jobs"
    assert "Traceback" not in log


def test_drain_timeout_stops_waiting_and_names_unfinished_jobs(start_server: StartServer, runs_file: Path) -> None:
    server = start_server("--drain-timeout", "0.5")
    ids = [enqueue(server, seconds=5) for _ in range(2 * WORKERS + 1)]
    wait_until(lambda: len(started(runs_file)) == WORKERS, "the first jobs to start")
    running = started(runs_file)

    code, elapsed = stop_with(server, signal.SIGTERM, within=10)

    assert code == 0
    assert elapsed < 3, f"took {elapsed:.1f}s to stop with a 0.5s drain timeout and 5s jobs"
    assert started(runs_file) == running, "no job starts once the drain has timed out"
    log = read_log(server)
    assert re.search(r"drained 0 jobs\b", log_line(log, r"drained \d+ jobs"))
    unfinished = log_line(log, "did not finish")
    for job_id in running:
        assert job_id in unfinished, f"running job {job_id} not named: {unfinished}"
    shutdown_part = log[log.index("SIGTERM received") :]
    for job_id in ids:
        assert job_id in shutdown_part, f"accepted job {job_id} not named after the signal:\n{log}"
    assert "Traceback" not in log


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_second_signal_stops_at_once_with_nonzero_exit(
    start_server: StartServer, runs_file: Path, signum: signal.Signals
) -> None:
    server = start_server("--drain-timeout", "30")
    ids = [enqueue(server, seconds=5) for _ in range(WORKERS + 1)]
    wait_until(lambda: len(started(runs_file)) == WORKERS, "the first jobs to start")
    running = started(runs_file)
    assert set(running) < set(ids), "one job still waits when the signals come"

    server.send(signum)
    wait_until(lambda: stats(server)["draining"], "the server to start draining")
    code, elapsed = stop_with(server, signum, within=5)

    assert code != 0
    assert elapsed < 2, f"took {elapsed:.1f}s to stop after the second signal"
    assert started(runs_file) == running
    log = read_log(server)
    forced = log_line(log, f"second {signum.name}")
    assert f"{WORKERS} jobs in progress here did not finish" in forced, forced
    for job_id in running:
        assert job_id in forced, f"unfinished job {job_id} not named: {forced}"
    assert "still waiting" in forced, "the log says what became of the job that never started"
    assert "drained" not in log, "a forced stop does not claim a drain"
    assert "Traceback" not in log


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_both_signals_are_heard_while_a_handler_blocks_the_event_loop(
    start_server: StartServer, runs_file: Path, signum: signal.Signals
) -> None:
    server = start_server("--drain-timeout", "30")
    job_id = enqueue_typed(server, "hog", seconds=60)
    wait_until(lambda: started(runs_file) == [job_id], "the hog to start (and block the loop)")

    server.send(signum)
    wait_until(lambda: f"{signum.name} received" in server.log(), "the first signal to be logged")
    code, elapsed = stop_with(server, signum, within=10)

    assert code == 1
    assert elapsed < 3, f"took {elapsed:.1f}s to stop after the second signal, the loop blocked"
    forced = log_line(read_log(server), f"second {signum.name}")
    assert f"1 jobs in progress here did not finish: {job_id}" in forced, forced


def test_a_thread_still_running_after_the_drain_does_not_keep_the_process_alive(
    start_server: StartServer, runs_file: Path
) -> None:
    server = start_server("--drain-timeout", "0.5")
    job_id = enqueue_typed(server, "stuck", seconds=120)
    wait_until(lambda: started(runs_file) == [job_id], "the stuck handler to start")

    code, elapsed = stop_with(server, signal.SIGTERM, within=15)

    assert code == 0
    assert elapsed < 8, f"took {elapsed:.1f}s to exit with a 0.5s drain timeout"
    log = read_log(server)
    assert job_id in log_line(log, "did not finish")
    assert "jobq stopped" in log
    assert "1 plain def handlers are still running in their threads" in log_line(log, "still running in their threads")
    assert "Traceback" not in log
