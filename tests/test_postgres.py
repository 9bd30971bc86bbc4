"""What only the PostgreSQL store does: its URL and schema, migrations, transactional enqueue (Python and SQL),
a database that goes away, and how a node knows its own notifications. What every shared store does is in
tests/test_shared_stores.py; the contract and API suites run on it too (tests/conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest

from jobq.errors import StoreUnavailable
from jobq.job import JobStatus
from jobq.sdk.transactional import enqueue_in_transaction
from jobq.store import open_store
from jobq.store.pgschema import MIGRATIONS
from jobq.store.postgres import PostgresStore, split_url
from tests.conftest import OpenUrl, add_when_back, make_job, refused_while_away
from tests.pg import PgCluster, schema_url

OpenNode = Callable[..., Awaitable[PostgresStore]]


@pytest.fixture
def url(tmp_path: Path) -> str:
    return schema_url(tmp_path)


@pytest.fixture
def open_node(url: str, open_url: OpenUrl) -> OpenNode:
    """Open a PostgresStore on the test's schema: each one is a jobq node; all closed at teardown."""

    async def build(store_url: str = url, **options: Any) -> PostgresStore:
        store = await open_url(store_url, **options)
        assert isinstance(store, PostgresStore)
        return store

    return build


def test_the_url_names_the_schema_and_refuses_a_bad_one() -> None:
    assert split_url("postgres://u@h:5/db?schema=mine&sslmode=disable") == (
        "postgresql://u@h:5/db?sslmode=disable",
        "mine",
    )
    assert split_url("postgresql://u@h/db")[1] == "jobq"
    with pytest.raises(ValueError, match="schema name"):
        split_url("postgresql://u@h/db?schema=x;drop")


async def test_nodes_starting_at_once_migrate_the_schema_once(open_node: OpenNode, url: str) -> None:
    nodes = await asyncio.gather(*(open_node() for _ in range(4)))
    dsn, schema = split_url(url)
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval(f"SELECT version FROM {schema}.schema_version") == len(MIGRATIONS)
        assert await conn.fetchval(f"SELECT count(*) FROM {schema}.schema_version") == 1
    finally:
        await conn.close()
    await nodes[0].add([make_job("a")])
    assert (await nodes[3].get("a")) is not None


async def test_a_schema_holding_other_tables_is_refused(url: str) -> None:
    dsn, schema = split_url(url)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}; CREATE TABLE {schema}.orders (id int)")
    finally:
        await conn.close()
    store = open_store(url)
    with pytest.raises(StoreUnavailable, match="tables jobq did not make"):
        await store.open()


async def test_transactional_enqueue_with_asyncpg_exists_exactly_when_committed(open_node: OpenNode, url: str) -> None:
    store = await open_node()
    dsn, schema = split_url(url)
    conn = await asyncpg.connect(dsn)
    try:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                rolled_back = await enqueue_in_transaction(conn, "t", {"n": 1}, schema=schema)
                raise RuntimeError("the application's transaction fails")
        async with conn.transaction():
            committed = await enqueue_in_transaction(conn, "t", {"n": 2}, queue="mail", priority=3, schema=schema)
            assert await store.get(committed) is None  # not before the commit
    finally:
        await conn.close()
    assert await store.get(rolled_back) is None
    [leased] = await store.lease(1, 30.0, wait=5.0)
    assert (leased.id, leased.payload, leased.queue, leased.priority) == (committed, {"n": 2}, "mail", 3)


async def test_transactional_enqueue_with_psycopg_schedules_and_is_idempotent(open_node: OpenNode, url: str) -> None:
    store = await open_node()
    dsn, schema = split_url(url)
    later = datetime.now(UTC) + timedelta(hours=1)
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        async with conn.transaction():
            first = await enqueue_in_transaction(conn, "t", [1, "x"], run_at=later, job_id="fixed", schema=schema)
        async with conn.transaction():
            again = await enqueue_in_transaction(conn, "t", [2], job_id="fixed", schema=schema)
    assert first == again == "fixed"
    stored = await store.get("fixed")
    assert stored is not None and stored.status is JobStatus.SCHEDULED and stored.payload == [1, "x"]
    assert stored.run_at == pytest.approx(later.timestamp(), abs=0.01)


async def test_plain_sql_enqueue_makes_a_time_ordered_id(open_node: OpenNode, url: str) -> None:
    store = await open_node()
    dsn, schema = split_url(url)
    conn = await asyncpg.connect(dsn)
    try:
        ids = [await conn.fetchval(f"SELECT {schema}.enqueue('t')") for _ in range(20)]
    finally:
        await conn.close()
    millis = [job_id[:13] for job_id in ids]  # a UUIDv7 starts with its millisecond
    assert millis == sorted(millis) and len(set(ids)) == 20
    leased = await store.lease(20, 30.0)  # in the order enqueued
    assert [job.id for job in leased] == ids and leased[0].payload == {}


async def test_the_database_going_away_is_unavailable_then_everything_resumes() -> None:
    cluster = PgCluster()
    store = open_store(f"{cluster.url}?schema=jobq")
    try:
        await store.open()
        await store.add([make_job("before")])
        cluster.restart()  # every connection is cut
        outcomes: list[Any] = []
        for attempt in range(50):  # the first calls on cut connections fail; the pool reconnects
            try:
                outcomes = await store.add([make_job(f"after{attempt}")])
                break
            except StoreUnavailable:
                await asyncio.sleep(0.1)
        assert outcomes and outcomes[0].created
        assert (await store.get("before")) is not None
        for _ in range(100):  # the listening connection is back, and /health says so
            if store.unavailable is None:
                break
            await asyncio.sleep(0.1)
        assert store.unavailable is None
        cluster.halt()  # gone for a while: every verb is refused at once, and /health says why
        assert store.place in await refused_while_away(store, within=5.0)
        cluster.start()
        await add_when_back(store, "back")
        assert (await store.get("back")) is not None and await store.get("while-away") is None
    finally:
        await store.close()
        cluster.stop()


async def test_a_node_knows_its_own_notifications_by_how_they_start(open_node: OpenNode, url: str) -> None:
    store = await open_node()
    dsn, schema = split_url(url)
    conn = await asyncpg.connect(dsn)
    heard: asyncio.Queue[str] = asyncio.Queue()
    try:
        await conn.add_listener(schema, lambda *args: heard.put_nowait(args[-1]))
        await store.add([make_job("a")])  # its ready notification is the node's own
        own = await asyncio.wait_for(heard.get(), 5.0)
        await conn.execute(f"SELECT {schema}.enqueue('t')")  # an application's, from no node
        other = await asyncio.wait_for(heard.get(), 5.0)
    finally:
        await conn.close()
    assert own.startswith(store._own) and '"ready"' in own
    assert not other.startswith(store._own)
