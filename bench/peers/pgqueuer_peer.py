"""PgQueuer on PostgreSQL: one ``pgq run`` process with its defaults (batches of 10, no concurrency limit).

Run by bench/peers/run.py with the Python of ``.venvs/pgqueuer``; the worker is
``pgq run pgqueuer_peer:create_pgqueuer``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version

import asyncpg
import common
from pgqueuer import Job, PgQueuer, Queries
from pgqueuer.db import AsyncpgDriver

POSTGRES_URL = os.environ.get(common.POSTGRES_URL_VARIABLE) or common.DEFAULT_POSTGRES_URL
ENTRYPOINT = "noop"


@asynccontextmanager
async def create_pgqueuer() -> AsyncIterator[PgQueuer]:
    """What ``pgq run`` runs: one asyncpg connection and the no-op entrypoint."""
    connection = await asyncpg.connect(POSTGRES_URL)
    pgq = PgQueuer.from_asyncpg_connection(connection)

    @pgq.entrypoint(ENTRYPOINT)
    async def noop(job: Job) -> None:
        """Do nothing: measures the queue's own overhead."""

    try:
        yield pgq
    finally:
        await connection.close()


class PgqueuerPeer:
    """Waiting and running jobs are rows of ``pgqueuer``; a finished job moves to ``pgqueuer_log``."""

    name = "pgqueuer"
    store = "PostgreSQL"
    settings = "1 process (`pgq run`), default batch size (10), no concurrency limit"

    def __init__(self) -> None:
        self.database = common.postgres_database(POSTGRES_URL)
        self._connection: asyncpg.Connection | None = None

    async def connection(self) -> asyncpg.Connection:
        """A connection to the dedicated database, opened on first use."""
        if self._connection is None:
            self._connection = await asyncpg.connect(POSTGRES_URL)
        return self._connection

    def version(self) -> str:
        return version("pgqueuer")

    def worker_command(self, bin_dir: str) -> list[str]:
        return [f"{bin_dir}/pgq", "run", "pgqueuer_peer:create_pgqueuer"]

    async def service(self) -> str:
        admin = await asyncpg.connect(common.postgres_admin_url(POSTGRES_URL))
        try:
            server = await admin.fetchval("SHOW server_version")
            fsync = await admin.fetchval("SHOW fsync")
            commit = await admin.fetchval("SHOW synchronous_commit")
        finally:
            await admin.close()
        return f"PostgreSQL {server}, fsync {fsync}, synchronous_commit {commit}"

    async def reset(self) -> None:
        await self.close()
        admin = await asyncpg.connect(common.postgres_admin_url(POSTGRES_URL))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await admin.close()
        await Queries(AsyncpgDriver(await self.connection())).install()

    async def enqueue(self, jobs: int) -> None:
        queries = Queries(AsyncpgDriver(await self.connection()))
        await queries.enqueue([ENTRYPOINT] * jobs, [None] * jobs, [0] * jobs)  # one INSERT for all

    async def remaining(self) -> int:
        return int(await (await self.connection()).fetchval("SELECT count(*) FROM pgqueuer"))

    async def outcome(self, jobs: int) -> dict[str, int]:
        rows = await (await self.connection()).fetch(
            "SELECT status::text, count(*) FROM pgqueuer_log WHERE status NOT IN ('queued', 'picked') GROUP BY status"
        )
        return {row[0]: int(row[1]) for row in rows}

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None


PEER = PgqueuerPeer
