"""Structured logs: text or JSON lines, a line per job state change, errors with the job id, the access log."""

from __future__ import annotations

import io
import json
import logging
import signal
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobq.api import SERVICE
from jobq.logformat import JsonFormatter, TextFormatter, formatter, setup
from tests.conftest import MakeClient, wait_for_status
from tests.procs import ServerProcess


def record(message: str, *args: Any, level: int = logging.WARNING, **extra: Any) -> logging.LogRecord:
    made = logging.LogRecord("jobq.test", level, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


def test_a_json_line_carries_time_level_logger_message_and_extra_fields() -> None:
    line = JsonFormatter().format(record("job %s failed:\n%s", "j-1", "two\nlines", job_id="j-1", attempt=2))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "jobq.test"
    assert entry["message"] == "job j-1 failed:\ntwo\nlines"
    assert (entry["job_id"], entry["attempt"]) == ("j-1", 2)
    assert entry["time"].endswith("Z") and "T" in entry["time"]


def test_a_json_line_holds_the_traceback_and_odd_values() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        made = record("it broke", level=logging.ERROR, path=Path("/x"), job_id="j-2")
        made.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(made))
    assert "ValueError: bad" in entry["exception"]
    assert (entry["path"], entry["job_id"]) == ("/x", "j-2")


def test_a_text_line_appends_extra_fields() -> None:
    line = TextFormatter().format(record("job %s failed", "j-1", job_id="j-1", error="JobFailed: no disk"))
    assert line.split(" ", 1)[1] == 'WARNING jobq.test: job j-1 failed job_id=j-1 error="JobFailed: no disk"'


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="text, json"):
        formatter("xml")


def test_debug_level_is_for_jobq_and_libraries_stay_at_info() -> None:
    root, jobq_logger = logging.getLogger(), logging.getLogger("jobq")
    saved = (list(root.handlers), root.level, jobq_logger.level)
    stream = io.StringIO()
    try:
        setup("debug", "json", stream)
        logging.getLogger("jobq.workers").debug("a jobq detail")
        logging.getLogger("grpc._cython.cygrpc").debug("a library detail")
        logging.getLogger("grpc._cython.cygrpc").info("a library event")
        with pytest.raises(ValueError, match="log level"):
            setup("chatty")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        jobq_logger.setLevel(saved[2])
    assert [entry["message"] for entry in entries(stream)] == ["a jobq detail", "a library event"]


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Everything the ``jobq`` loggers write at debug and above, as JSON lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("jobq")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(level)


def entries(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_each_state_change_is_a_debug_line_and_each_failure_names_its_job(
    make_client: MakeClient, json_log: io.StringIO
) -> None:
    client = await make_client(workers=1, retry_base=0.01, retry_cap=0.01)
    ok = await (await client.post("/enqueue", json={"type": "echo", "id": "fine"})).json()
    bad = await (await client.post("/enqueue", json={"type": "fail", "id": "doomed", "max_attempts": 2})).json()
    await wait_for_status(client, ok["id"], "completed")
    await wait_for_status(client, bad["id"], "dead")
    lines = entries(json_log)
    changes = [(e["job_id"], e.get("from_status"), e["status"]) for e in lines if e["logger"] == "jobq.service"]
    assert [c for c in changes if c[0] == "fine"] == [
        ("fine", "pending", "processing"),
        ("fine", "processing", "completed"),
    ]
    assert [c for c in changes if c[0] == "doomed"] == [
        ("doomed", "pending", "processing"),
        ("doomed", "processing", "retrying"),
        ("doomed", "retrying", "pending"),
        ("doomed", "pending", "processing"),
        ("doomed", "processing", "dead"),
    ]
    debug = {e["level"] for e in lines if e["logger"] == "jobq.service" and e["job_id"] == "fine"}
    assert debug == {"DEBUG"}
    failures = [e for e in lines if e["logger"] == "jobq.service" and e["level"] == "WARNING"]
    assert [(e["job_id"], e["status"], e["attempt"]) for e in failures] == [
        ("doomed", "retrying", 1),
        ("doomed", "dead", 2),
    ]
    assert all(e["error"] == "JobFailed: failed on purpose" and e["job_type"] == "fail" for e in failures)


async def test_state_changes_cost_no_log_line_above_debug(make_client: MakeClient, json_log: io.StringIO) -> None:
    logging.getLogger("jobq").setLevel(logging.INFO)
    client = await make_client(workers=1)
    await client.post("/enqueue?wait=10", json={"type": "echo", "id": "quiet"})
    assert [e for e in entries(json_log) if e.get("job_id") == "quiet"] == []


async def test_an_unhandled_error_is_logged_with_its_job_id(
    make_client: MakeClient, json_log: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await make_client(workers=0)

    async def broken(job_id: str, owner: str | None = None) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(client.app[SERVICE], "get", broken)
    response = await client.get("/status/j-9")
    assert response.status == 500
    [entry] = [e for e in entries(json_log) if e["level"] == "ERROR"]
    assert entry["job_id"] == "j-9"
    assert "RuntimeError: disk on fire" in entry["exception"]


def test_the_server_logs_json_lines_with_an_access_log(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path / "server.log",
        "--store",
        "memory://",
        "--workers",
        "1",
        "--log-format",
        "json",
        "--log-level",
        "debug",
        "--access-log",
    )
    try:
        server.wait_ready()
        status, job = server.request("POST", "/enqueue?wait=10", {"type": "fail", "id": "j-1"})
        assert (status, job["status"]) == (200, "failed")
        server.send(signal.SIGTERM)
        assert server.wait(timeout=15) == 0
    finally:
        server.stop()
    lines = [json.loads(line) for line in server.log().splitlines()]  # every line parses
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    changes = [e for e in lines if e["logger"] == "jobq.service"]
    failure = [e for e in changes if e.get("job_id") == "j-1" and e["level"] == "WARNING"]
    assert failure and failure[0]["error"] == "JobFailed: failed on purpose"
    [access] = [e for e in lines if e["logger"] == "jobq.access" and e["route"] == "/enqueue"]
    assert (access["method"], access["status"], access["path"]) == ("POST", 200, "/enqueue")
    assert access["duration_seconds"] >= 0
    assert any(e["message"] == "jobq stopped" for e in lines)


def test_the_access_log_is_off_by_default_and_text_by_default(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server.log", "--store", "memory://", "--workers", "0")
    try:
        server.wait_ready()  # "jobq serving on" is logged before the first request is served
        with urllib.request.urlopen(server.url + "/stats", timeout=5) as response:
            assert response.status == 200
        server.send(signal.SIGTERM)
        assert server.wait(timeout=15) == 0
    finally:
        server.stop()
    text = server.log()
    assert "jobq.access" not in text
    assert " INFO jobq: jobq serving on http://127.0.0.1:" in text
