"""The entry point: ``--help``, flags and ``JOBQ_*`` variables, and clear failures at startup.

Most tests run ``python main.py`` as a real subprocess and check its exit code
and what it prints; the precedence rules are also checked in process.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from jobq.config import Config, env_var, flag
from tests.conftest import StartServer
from tests.procs import ROOT, free_port

EXIT_CANNOT_START = 2


def clean_env(**variables: str) -> dict[str, str]:
    """This process's environment without any ``JOBQ_*`` variable, plus ``variables`` (gRPC off unless set)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQ_")}
    return {**env, "PYTHONPATH": str(ROOT), "JOBQ_GRPC_PORT": "0", **variables}


def run_main(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python main.py`` to completion (it is expected to exit by itself)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args],
        cwd=ROOT,
        env=clean_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=30,
    )


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port some other socket is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


# -- help and configuration ----------------------------------------------------
def test_help_documents_every_flag_with_its_variable_and_default() -> None:
    result = run_main("--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # argparse wraps lines to the terminal width
    for spec in fields(Config):
        default = ",".join(spec.default) if isinstance(spec.default, tuple) else spec.default
        documented = rf"\[env {env_var(spec.name)}; default {re.escape(str(default))}\]"
        pattern = rf"{re.escape(flag(spec.name))} \S+ [^\[]*{documented}"
        assert re.search(pattern, text), f"--help does not document {flag(spec.name)} with {env_var(spec.name)}"
    assert "SIGTERM" in text


def test_defaults_serve_on_localhost_8080() -> None:
    config = Config.from_args([], {})
    assert (config.host, config.port) == ("127.0.0.1", 8080)


def test_a_flag_wins_over_its_variable_and_a_variable_over_the_default() -> None:
    environ = {"JOBQ_WORKERS": "3", "JOBQ_PORT": "9001", "JOBQ_HANDLERS": "a.b, c", "JOBQ_LOG_LEVEL": "DEBUG"}
    config = Config.from_args(["--workers", "5"], environ)
    assert config.workers == 5
    assert config.port == 9001
    assert config.handlers == ("a.b", "c")
    assert config.log_level == "debug"
    assert Config.from_args([], {"JOBQ_PORT": ""}).port == 8080, "an empty variable counts as unset"


def test_variables_configure_the_running_server(tmp_path: Path) -> None:
    port, grpc_port = free_port(), free_port()
    env = {"JOBQ_PORT": str(port), "JOBQ_WORKERS": "3", "JOBQ_STORE": "memory://", "JOBQ_QUEUE_SIZE": "7"}
    env["JOBQ_GRPC_PORT"] = str(grpc_port)
    with (tmp_path / "server.log").open("w+") as log:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py")], cwd=ROOT, env=clean_env(**env), stdout=log, stderr=log
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                assert process.poll() is None, f"server exited with {process.returncode}"
                try:
                    stats = get_json(f"http://127.0.0.1:{port}/stats")
                    break
                except OSError:
                    assert time.monotonic() < deadline, "server did not answer on JOBQ_PORT"
                    time.sleep(0.05)
            assert stats["workers"]["total"] == 3
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        log.seek(0)
        output = log.read()
    assert f"serving on http://127.0.0.1:{port} with 3 workers, store memory://" in output
    assert f"gRPC serving on 127.0.0.1:{grpc_port}" in output
    assert "jobq stopped" in output


# -- clear failures ------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ((), {"JOBQ_PORT": "abc"}, "JOBQ_PORT='abc': expected a whole number, got 'abc'"),
        (("--workers", "many"), {}, "argument --workers: expected a whole number, got 'many'"),
        (("--no-such-flag",), {}, "unrecognized arguments: --no-such-flag"),
    ],
    ids=["env-port", "flag-workers", "unknown-flag"],
)
def test_bad_flags_and_variables_exit_2_with_a_usage_message(
    args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    result = run_main("--store", "memory://", *args, env=env)
    assert result.returncode == EXIT_CANNOT_START, result.stderr
    assert "usage: python main.py" in result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ((), {"JOBQ_DRAIN_TIMEOUT": "-1"}, "JOBQ_DRAIN_TIMEOUT='-1': must be at least 0"),
        ((), {"JOBQ_LEASE_SECONDS": "nan"}, "JOBQ_LEASE_SECONDS='nan': must be a finite number"),
        ((), {"JOBQ_LOG_LEVEL": "loud"}, "JOBQ_LOG_LEVEL='loud': must be one of debug, info, warning, error"),
        ((), {"JOBQ_DURABILITY": "x"}, "JOBQ_DURABILITY='x': must be one of full, normal"),
        (("--port", "70000"), {}, "argument --port: must be at most 65535"),
        (("--lease-seconds", "0"), {}, "argument --lease-seconds: must be above 0"),
        (("--queue-size", "0"), {}, "argument --queue-size: must be at least 1"),
        (("--host", " "), {}, "argument --host: must not be empty"),
        (("--durability", "sometimes"), {}, "argument --durability: must be one of full, normal"),
    ],
)
def test_out_of_range_values_are_usage_errors(
    args: tuple[str, ...], env: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        Config.from_args(list(args), env)
    assert exited.value.code == EXIT_CANNOT_START
    assert message in capsys.readouterr().err


def test_a_config_built_in_code_is_checked_too() -> None:
    with pytest.raises(ValueError, match="port must be at most 65535"):
        Config(port=65536)


def test_a_bad_variable_does_not_break_help() -> None:
    result = run_main("--help", env={"JOBQ_PORT": "abc"})
    assert result.returncode == 0, result.stderr


def test_busy_port_is_a_clear_error(busy_port: int) -> None:
    result = run_main("--store", "memory://", "--port", str(busy_port))
    assert result.returncode == EXIT_CANNOT_START, result.stderr
    assert f"cannot listen on 127.0.0.1 port {busy_port}" in result.stderr
    assert "address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_busy_faktory_port_is_a_clear_error(busy_port: int) -> None:
    result = run_main("--store", "memory://", "--port", "0", "--faktory-port", str(busy_port))
    assert result.returncode == EXIT_CANNOT_START, result.stderr
    assert f"cannot listen on 127.0.0.1 port {busy_port} for the Faktory protocol" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_busy_http_port_stops_the_listeners_started_before_it(busy_port: int) -> None:
    others = ("--grpc-port", str(free_port()), "--faktory-port", str(free_port()))
    result = run_main("--store", "memory://", "--port", str(busy_port), *others)
    assert result.returncode == EXIT_CANNOT_START, result.stderr
    assert f"cannot listen on 127.0.0.1 port {busy_port} for HTTP" in result.stderr
    assert "Faktory protocol listener on port" in result.stderr  # stopped
    assert "Traceback" not in result.stderr


def test_a_busy_grpc_port_is_a_clear_error(busy_port: int) -> None:
    faktory_port = free_port()
    result = run_main(
        "--store", "memory://", "--port", "0", "--grpc-port", str(busy_port), "--faktory-port", str(faktory_port)
    )
    assert result.returncode == EXIT_CANNOT_START, result.stderr
    assert f"cannot listen on 127.0.0.1 port {busy_port} for gRPC" in result.stderr
    assert "Traceback" not in result.stderr


def test_once_health_answers_every_listener_accepts(start_server: StartServer) -> None:
    grpc_port, faktory_port = free_port(), free_port()
    server = start_server("--store", "memory://", "--grpc-port", str(grpc_port), "--faktory-port", str(faktory_port))
    for port in (grpc_port, faktory_port):  # at once: HTTP is the last to listen
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    assert server.request("GET", "/health")[0] == 200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--handlers", "tests.fixture_handlers,tests.no_such_handlers"),
            "handler module 'tests.no_such_handlers' cannot be imported: No module named 'tests.no_such_handlers'",
        ),
        (("--store", "bogus://somewhere"), "unknown store URL 'bogus://somewhere'"),
    ],
    ids=["handler-module", "store-scheme"],
)
def test_startup_failures_name_the_culprit(args: tuple[str, ...], message: str) -> None:
    result = run_main("--store", "memory://", "--port", "0", *args)
    assert result.returncode == EXIT_CANNOT_START, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
