"""procrastinate on PostgreSQL: one ``procrastinate worker`` process at its default concurrency (1).

Run by bench/peers/run.py with the Python of ``.venvs/procrastinate``; the worker is
``procrastinate --app procrastinate_peer.app worker``.
"""

from __future__ import annotations

import os
from importlib.metadata import version

import common
import psycopg
from procrastinate import App, PsycopgConnector

POSTGRES_URL = os.environ.get(common.POSTGRES_URL_VARIABLE) or common.DEFAULT_POSTGRES_URL

app = App(connector=PsycopgConnector(conninfo=POSTGRES_URL))


@app.task(name="noop")
async def noop() -> None:
    """Do nothing: measures the queue's own overhead."""


class ProcrastinatePeer:
    """Every job is a row of ``procrastinate_jobs``; it stays there, with status ``succeeded`` when done."""

    name = "procrastinate"
    store = "PostgreSQL"
    settings = "1 process (`procrastinate worker`), default concurrency (1): one job at a time"

    def __init__(self) -> None:
        self.database = common.postgres_database(POSTGRES_URL)
        self._connection: psycopg.AsyncConnection | None = None
        self._opened = False

    async def connection(self) -> psycopg.AsyncConnection:
        """A connection to the dedicated database for counting, opened on first use."""
        if self._connection is None:
            self._connection = await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True)
        return self._connection

    def version(self) -> str:
        return version("procrastinate")

    def worker_command(self, bin_dir: str) -> list[str]:
        return [f"{bin_dir}/procrastinate", "--app", "procrastinate_peer.app", "worker"]

    async def service(self) -> str:
        admin_url = common.postgres_admin_url(POSTGRES_URL)
        async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as admin:
            values = [await scalar(admin, f"SHOW {name}") for name in ("server_version", "fsync", "synchronous_commit")]
        return "PostgreSQL {}, fsync {}, synchronous_commit {}".format(*values)

    async def reset(self) -> None:
        await self.close()
        admin_url = common.postgres_admin_url(POSTGRES_URL)
        async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as admin:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{self.database}"')
        await self.open_app()
        await app.schema_manager.apply_schema_async()

    async def open_app(self) -> None:
        """Open the app's connection pool once."""
        if not self._opened:
            await app.open_async()
            self._opened = True

    async def enqueue(self, jobs: int) -> None:
        await self.open_app()
        await noop.batch_defer_async(*([{}] * jobs))  # one INSERT for all

    async def remaining(self) -> int:
        query = "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
        return await scalar(await self.connection(), query)

    async def outcome(self, jobs: int) -> dict[str, int]:
        cursor = await (await self.connection()).execute(
            "SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY status"
        )
        return {status: int(count) for status, count in await cursor.fetchall()}

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
        if self._opened:
            await app.close_async()
            self._opened = False


async def scalar(connection: psycopg.AsyncConnection, query: str) -> int | str:
    """The first column of the first row of ``query``."""
    cursor = await connection.execute(query)
    row = await cursor.fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


PEER = ProcrastinatePeer
