"""The bulk dispatcher against real servers: an in-loop test server and a ``main.py`` subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from jobq.app import create_app
from jobq.auth import Principal, Role, TokenBook
from jobq.dispatcher import (
    LATENCY_SOURCE,
    DispatchConfig,
    Finished,
    chunk_sizes,
    dispatch,
    latency_percentiles,
    main,
    parse_config,
    percentile,
)
from jobq.handlers import Registry
from tests.conftest import TEST_CONFIG
from tests.procs import ROOT, ServerProcess, free_port, wait_until

CLIENT_TOKEN = "dispatch-client-token-0123456789"
WORKER_TOKEN = "dispatch-worker-token-0123456789"
WRONG_TOKEN = "dispatch-wrong-token-0123456789"


def token_book() -> TokenBook:
    return TokenBook([(CLIENT_TOKEN, Principal("loadgen", Role.CLIENT)), (WORKER_TOKEN, Principal("box", Role.WORKER))])


@pytest.fixture
async def make_server(aiohttp_server: Any, registry: Registry) -> Any:
    """Start a jobq app on a real port with config overrides (and optional tokens); returns its base URL."""

    async def build(tokens: TokenBook | None = None, **overrides: Any) -> str:
        app = create_app(replace(TEST_CONFIG, **overrides), handlers=registry, tokens=tokens)
        server: TestServer = await aiohttp_server(app)
        return str(server.make_url("")).rstrip("/")

    return build


def config(url: str, **overrides: Any) -> DispatchConfig:
    return replace(DispatchConfig(url=url, jobs=40, concurrency=8, timeout=10.0, progress=False), **overrides)


# -- against a live app -------------------------------------------------------


async def test_every_job_completes_and_the_counts_match(make_server: Any) -> None:
    url = await make_server(workers=4)
    summary = await dispatch(config(url, jobs=60))
    assert summary.submitted == 60
    assert summary.accepted == 60
    assert summary.failures == {}
    assert summary.statuses == {"completed": 60}
    assert summary.completed == 60
    assert summary.latency_seconds is not None
    latency = summary.latency_seconds
    assert 0 <= latency["p50"] <= latency["p95"] <= latency["p99"]
    assert summary.completed_per_second is not None and summary.completed_per_second > 0
    assert summary.ok


async def test_batches_are_split_and_every_job_is_counted(make_server: Any) -> None:
    url = await make_server(workers=4)
    summary = await dispatch(config(url, jobs=25, batch=10, payload={"n": 1}, job_type="echo"))
    assert (summary.accepted, summary.completed, summary.failures) == (25, 25, {})
    assert summary.ok


async def test_a_full_queue_shows_its_503s(make_server: Any) -> None:
    url = await make_server(workers=0, queue_size=5)  # no in-process workers: nothing drains
    summary = await dispatch(config(url, jobs=20, wait=False))
    assert summary.accepted == 5
    assert summary.failures == {"503": 15}
    assert not summary.ok
    assert "503: 15" in summary.render()


async def test_a_full_queue_rejects_batch_items_one_by_one(make_server: Any) -> None:
    url = await make_server(workers=0, queue_size=5)
    summary = await dispatch(config(url, jobs=12, batch=4, wait=False))
    assert summary.accepted == 5
    assert summary.failures == {"503": 7}


async def test_jobs_still_waiting_at_the_deadline_are_reported_unfinished(make_server: Any) -> None:
    url = await make_server(workers=0)
    summary = await dispatch(config(url, jobs=6, timeout=0.3))
    assert summary.accepted == 6
    assert summary.statuses == {"unfinished": 6}
    assert summary.completed == 0
    assert summary.latency_seconds is None
    assert not summary.ok


async def test_failed_jobs_are_counted_by_final_status(make_server: Any) -> None:
    url = await make_server(workers=2)
    summary = await dispatch(config(url, jobs=10, job_type="fail"))
    assert summary.accepted == 10
    assert summary.statuses == {"failed": 10}
    assert not summary.ok


async def test_an_unknown_job_type_is_counted_as_422(make_server: Any) -> None:
    url = await make_server(workers=2)
    summary = await dispatch(config(url, jobs=5, job_type="no-such-type"))
    assert summary.failures == {"422": 5}
    assert summary.accepted == 0


async def test_a_refused_connection_is_reported_not_raised() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    summary = await dispatch(config(url, jobs=30))
    assert summary.failures == {"connection refused": 30}
    assert summary.accepted == 0
    assert not summary.ok
    assert "connection refused: 30" in summary.render()


async def test_a_refused_connection_counts_every_job_of_a_batch() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    summary = await dispatch(config(url, jobs=30, batch=7))
    assert summary.failures == {"connection refused": 30}


async def test_answers_that_are_not_jobq_answers_are_counted_not_raised(aiohttp_server: Any) -> None:
    async def garbage(request: web.Request) -> web.Response:
        return web.Response(status=202, text="accepted, sort of")

    app = web.Application()
    app.router.add_post("/enqueue", garbage)
    server: TestServer = await aiohttp_server(app)
    summary = await dispatch(config(str(server.make_url("")).rstrip("/"), jobs=6))
    assert summary.failures == {"bad response": 6}
    assert summary.accepted == 0


# -- against a live app with tokens ---------------------------------------------


@pytest.mark.parametrize("batch", [1, 10], ids=["one-by-one", "batches"])
async def test_with_the_right_token_every_job_completes(make_server: Any, batch: int) -> None:
    url = await make_server(tokens=token_book(), workers=4)
    summary = await dispatch(config(url, jobs=30, batch=batch, token=CLIENT_TOKEN))
    assert (summary.accepted, summary.completed, summary.failures) == (30, 30, {})
    assert summary.statuses == {"completed": 30}
    assert summary.poll_errors == {}  # the status polls carried the token too
    assert summary.ok


@pytest.mark.parametrize("batch", [1, 4], ids=["one-by-one", "batches"])
@pytest.mark.parametrize(
    ("token", "code"),
    [(None, "401"), (WRONG_TOKEN, "401"), (WORKER_TOKEN, "403")],
    ids=["no-token", "unknown-token", "worker-role"],
)
async def test_a_refused_token_is_counted_by_status(make_server: Any, token: str | None, code: str, batch: int) -> None:
    url = await make_server(tokens=token_book(), workers=4)
    summary = await dispatch(config(url, jobs=10, batch=batch, token=token))
    assert summary.accepted == 0
    assert summary.failures == {code: 10}
    assert not summary.ok
    assert f"{code}: 10" in summary.render()
    assert "NOT OK" in summary.render()


async def test_a_token_is_harmless_against_a_server_without_tokens(make_server: Any) -> None:
    url = await make_server(workers=4)
    summary = await dispatch(config(url, jobs=10, token=CLIENT_TOKEN))
    assert summary.ok


def test_main_exits_1_and_prints_the_summary_when_the_server_is_down(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    code = main(["--url", f"http://127.0.0.1:{port}", "--jobs", "5", "--json"])
    assert code == 1
    out = json.loads(capsys.readouterr().out)
    assert out["failures"] == {"connection refused": 5}
    assert out["ok"] is False


def test_a_url_that_is_not_one_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--url", "notaurl", "--jobs", "5"])
    assert stopped.value.code == 2
    assert "--url: 'notaurl' is not an http:// or https:// URL" in capsys.readouterr().err


# -- a main.py subprocess -------------------------------------------------------
def test_ctrl_c_stops_a_dispatch_quietly(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server.log", "--store", "memory://", "--workers", "2", "--log-level", "warning")
    try:
        server.wait_ready()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "JOBQ_URL": server.url}
        command = [sys.executable, "-m", "jobq.dispatcher", "--jobs", "2", "--type", "sleep"]
        dispatch = subprocess.Popen(
            [*command, "--payload", '{"seconds": 30}', "--timeout", "60"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_until(lambda: server.request("GET", "/stats")[1]["jobs"]["processing"] == 2, "both jobs to run")
        dispatch.send_signal(signal.SIGINT)
        out, err = dispatch.communicate(timeout=15)
    finally:
        server.stop()
    assert dispatch.returncode == 130, out + err
    assert "interrupted" in err and "Traceback" not in err, err


def test_the_command_line_against_a_server_process(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server.log", "--store", "memory://", "--workers", "8", "--log-level", "warning")
    try:
        server.wait_ready()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "JOBQ_URL": server.url, "JOBQ_DISPATCH_JOBS": "150"}
        done = subprocess.run(
            [sys.executable, "-m", "jobq.dispatcher", "--concurrency", "16", "--timeout", "30", "--json"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout)
    assert summary["url"] == server.url
    assert (summary["submitted"], summary["accepted"], summary["completed"]) == (150, 150, 150)
    assert summary["statuses"] == {"completed": 150}
    assert summary["latency_source"] == LATENCY_SOURCE
    assert done.stderr == ""  # no progress bar when stderr is not a terminal


def test_the_command_line_against_a_server_with_tokens(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JOBQ_")}
    unset = {k: "" for k in os.environ if k.startswith("JOBQ_")}  # ServerProcess adds os.environ back
    server_env = {**unset, "JOBQ_GRPC_PORT": "0", "JOBQ_TOKEN": CLIENT_TOKEN}  # a client token: auth is on
    args = ("--store", "memory://", "--workers", "8", "--log-level", "warning")
    server = ServerProcess(tmp_path / "server.log", *args, env=server_env)

    def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "jobq.dispatcher", "--url", server.url, "--jobs", "60", "--timeout", "30", "--json"],
            cwd=ROOT,
            env={**clean, "PYTHONPATH": str(ROOT), **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    try:
        server.wait_ready()
        with_token = run({"JOBQ_TOKEN": CLIENT_TOKEN})
        without_token = run({})
    finally:
        server.stop()
    assert with_token.returncode == 0, with_token.stdout + with_token.stderr
    summary = json.loads(with_token.stdout)
    assert (summary["accepted"], summary["completed"], summary["failures"]) == (60, 60, {})
    assert summary["ok"] is True
    assert CLIENT_TOKEN not in with_token.stdout + with_token.stderr  # the summary never shows the token

    assert without_token.returncode == 1, without_token.stdout + without_token.stderr
    summary = json.loads(without_token.stdout)
    assert (summary["accepted"], summary["failures"], summary["ok"]) == (0, {"401": 60}, False)


# -- configuration and arithmetic ---------------------------------------------


def test_flags_fall_back_to_environment_variables() -> None:
    environ = {
        "JOBQ_URL": "http://shared:1",
        "JOBQ_DISPATCH_JOBS": "7",
        "JOBQ_DISPATCH_PAYLOAD": '{"a": [1]}',
        "JOBQ_DISPATCH_NO_WAIT": "yes",
    }
    parsed = parse_config(["--concurrency", "3"], environ)
    assert (parsed.url, parsed.jobs, parsed.concurrency, parsed.payload, parsed.wait) == (
        "http://shared:1",
        7,
        3,
        {"a": [1]},
        False,
    )
    assert parse_config([], {**environ, "JOBQ_DISPATCH_URL": "http://own:2"}).url == "http://own:2"
    assert parse_config(["--jobs", "9"], environ).jobs == 9


def test_the_token_comes_from_jobq_token_or_the_flag() -> None:
    assert parse_config([], {}).token is None
    assert parse_config([], {"JOBQ_TOKEN": f" {CLIENT_TOKEN}\n"}).token == CLIENT_TOKEN
    assert parse_config(["--token", WRONG_TOKEN], {"JOBQ_TOKEN": CLIENT_TOKEN}).token == WRONG_TOKEN
    assert parse_config([], {"JOBQ_TOKEN": "  "}).token is None
    assert CLIENT_TOKEN not in repr(parse_config([], {"JOBQ_TOKEN": CLIENT_TOKEN}))


def test_a_token_that_cannot_be_a_header_is_a_usage_error_that_hides_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_config([], {"JOBQ_TOKEN": "secret-part\nInjected: header"})
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "JOBQ_TOKEN" in err
    assert "secret-part" not in err


def test_a_bad_environment_value_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_config([], {"JOBQ_DISPATCH_JOBS": "many"})
    assert exit_info.value.code == 2
    assert "JOBQ_DISPATCH_JOBS" in capsys.readouterr().err


def test_help_names_every_environment_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_config(["--help"], {})
    text = " ".join(capsys.readouterr().out.split())
    for name in ("URL", "JOBS", "CONCURRENCY", "TYPE", "PAYLOAD", "BATCH", "TIMEOUT", "NO_WAIT", "JSON"):
        assert f"JOBQ_DISPATCH_{name}" in text
    assert "JOBQ_URL" in text
    assert "--token TOKEN" in text and "env JOBQ_TOKEN" in text and "ps" in text


def test_chunks_cover_every_job_once() -> None:
    assert list(chunk_sizes(10, 4)) == [4, 4, 2]
    assert list(chunk_sizes(3, 1)) == [1, 1, 1]
    assert list(chunk_sizes(0, 5)) == []


def test_percentiles_use_nearest_rank_over_completed_jobs() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert percentile([5.0], 0.99) == 5.0
    jobs = [Finished("completed", 0.0, float(n)) for n in range(1, 101)] + [Finished("failed", 0.0, 1000.0)]
    assert latency_percentiles(jobs) == {"p50": 50.0, "p95": 95.0, "p99": 99.0}
    assert latency_percentiles([Finished("unfinished")]) is None
