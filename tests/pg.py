"""PostgreSQL for the tests: the server ``JOBQ_TEST_PG`` names, or a throwaway cluster started here.

Every test that needs a store gets a schema of its own (``fresh_schema_url``); the
schemas are dropped when the test session ends (and a throwaway cluster with them).
Tests that restart the database start their own cluster (``PgCluster``) and stop it.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path

from tests.procs import free_port

_server: PgCluster | str | None = None
_schemas: dict[str, str] = {}  # a test's directory -> its schema
_starting = threading.Lock()  # documentation tests start servers from several threads


def pg_bin(tool: str) -> str:
    """The path of a PostgreSQL server tool (``initdb``, ``pg_ctl``): on PATH, or Debian's versioned directory."""
    found = shutil.which(tool) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"), reverse=True)), None)
    if found is None:
        raise RuntimeError(f"{tool} not found: install PostgreSQL's server package, or set JOBQ_TEST_PG")
    return found


def as_server_user(command: list[str]) -> list[str]:
    """``command`` as run by an unprivileged user: PostgreSQL refuses to run as root (then: as ``postgres``)."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class PgCluster:
    """A PostgreSQL cluster in a temporary directory, on a free port, for one test session or test."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="jobq-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self.data = self.directory / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        initdb = [pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync"]
        subprocess.run(as_server_user([*initdb, "-E", "UTF8"]), check=True, capture_output=True)
        self.start()

    def _ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        command = [pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.directory / "log"), "-o", options, "-w"]
        subprocess.run(as_server_user([*command, *args]), check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        self._ctl("start")

    def halt(self) -> None:
        """``pg_ctl stop -m fast``: the server is gone (its files stay) until ``start``."""
        self._ctl("stop", "-m", "fast")

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every connection is cut, and the server is back when this returns."""
        self._ctl("restart", "-m", "fast")

    def stop(self) -> None:
        """Stop the server (immediately) and delete its files."""
        if self.data.exists():
            subprocess.run(
                as_server_user([pg_bin("pg_ctl"), "-D", str(self.data), "stop", "-m", "immediate", "-w"]),
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(self.directory, ignore_errors=True)


def server_url() -> str:
    """The URL of the PostgreSQL the tests use: ``JOBQ_TEST_PG``, or a cluster started on first use."""
    global _server
    with _starting:
        if _server is None:
            configured = os.environ.get("JOBQ_TEST_PG")
            if configured:
                _server = configured
            else:
                _server = PgCluster()
                atexit.register(_server.stop)
    return _server if isinstance(_server, str) else _server.url


def schema_url(test_directory: Path) -> str:
    """A store URL on the test server with the schema of one test (its ``tmp_path``), dropped when the session ends.

    Asked again for the same test, it names the same schema: a second store opens the same data.
    """
    schema = _schemas.setdefault(str(test_directory), f"test_{uuid.uuid4().hex[:16]}")
    return f"{server_url()}?schema={schema}"


def drop_schemas() -> None:
    """Drop every schema the tests made (a throwaway cluster is deleted whole instead)."""
    if not _schemas or not isinstance(_server, str):
        return
    import asyncio

    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(_server)
        try:
            for schema in _schemas.values():
                await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()

    asyncio.run(drop())
    _schemas.clear()
