"""Redis for the tests: ``redis-server`` processes started here on free ports (the machine's 6379 is never used).

``server_url()`` is one server for the whole session (every test gets a key prefix of its own:
``prefix_url``); ``RedisServer`` starts one for a test that restarts it or needs its own settings.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import redis

from tests.procs import free_port

_server: RedisServer | None = None
_prefixes: dict[str, str] = {}  # a test's directory -> its key prefix
_starting = threading.Lock()


class RedisServer:
    """A ``redis-server`` in a temporary directory, on a free port, stopped (and deleted) by ``stop``."""

    def __init__(self, *settings: str, port: int | None = None) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="jobq-redis-"))
        self.port = port or free_port()
        self.settings = settings
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """Start the server with its settings (defaults: no snapshots, no append-only file) and wait for it."""
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        command += ["--save", "", "--appendonly", "no", *self.settings]
        with (self.directory / "log").open("ab") as out:  # the server writes to its own copy of the descriptor
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.2).ping()
                return
            except redis.exceptions.ConnectionError:
                assert self.process.poll() is None, (self.directory / "log").read_text()
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.02)

    def halt(self) -> None:
        """Stop the server at once (SIGKILL: what it did not write to disk is gone); ``start`` brings it back."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.directory, ignore_errors=True)


def server_url() -> str:
    """The URL of the session's Redis, started on first use."""
    global _server
    with _starting:
        if _server is None:
            _server = RedisServer()
            atexit.register(_server.stop)
    return _server.url


def prefix_url(test_directory: Path) -> str:
    """A store URL on the session's Redis with the key prefix of one test (its ``tmp_path``; the same each time)."""
    prefix = _prefixes.setdefault(str(test_directory), f"test_{uuid.uuid4().hex[:16]}")
    return f"{server_url()}?prefix={prefix}"
