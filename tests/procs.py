"""Run ``main.py`` as a real subprocess for acceptance tests (signals, crashes, restarts)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


T = TypeVar("T")


def wait_until(check: Callable[[], T], what: str, timeout: float = 30.0, every: float = 0.02) -> T:
    """Poll ``check`` every ``every`` seconds until it returns something truthy, and return that; fail naming
    ``what`` when ``timeout`` runs out."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(every)
    return value


def http(
    url: str, method: str = "GET", body: Any = None, token: str | None = None, timeout: float = 10.0
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP call with a JSON body (and a bearer ``token``): status, headers and raw body, error answers too."""
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(), method=method)
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


class ManagedProcess:
    """A child Python process whose output goes to ``log_path``."""

    def __init__(self, log_path: Path, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self._log_file = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, *argv],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "JOBQ_GRPC_PORT": "0", **(env or {})},
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def send(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the process to exit; returns its exit code."""
        code = self.process.wait(timeout=timeout)
        self._log_file.close()
        return code

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to clean up."""
        self.process.kill()
        self.process.wait(timeout=10)
        self._log_file.close()

    def log(self) -> str:
        if not self._log_file.closed:
            self._log_file.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Make sure the process is gone (test teardown)."""
        if self.process.poll() is None:
            self.kill()
        self._log_file.close()


class WorkerProcess(ManagedProcess):
    """One ``python -m jobq.sdk.remote_worker`` process leasing from ``url``."""

    def __init__(self, log_path: Path, url: str, *args: str, env: dict[str, str] | None = None) -> None:
        super().__init__(log_path, ["-m", "jobq.sdk.remote_worker", "--url", url, *args], env)


class ServerProcess(ManagedProcess):
    """One ``python main.py`` process on a free port."""

    def __init__(self, log_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(log_path, [str(ROOT / "main.py"), "--port", str(self.port), *args], env)

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Poll ``/health`` until it answers (fails if the process dies or time runs out)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"server not ready after {timeout}s:\n{self.log()}")

    def request(
        self, method: str, path: str, body: Any = None, timeout: float = 10.0, token: str | None = None
    ) -> tuple[int, Any]:
        """One HTTP call; returns (status, parsed JSON body or None)."""
        status, _, raw = http(self.url + path, method, body, token, timeout)
        return status, json.loads(raw) if raw else None
