"""Shared fixtures: an app on the memory store with a private handler registry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import uvloop
from aiohttp.test_utils import TestClient

from jobq.app import create_app, store_from_config
from jobq.builtin_handlers import register_builtins
from jobq.config import Config
from jobq.errors import StoreUnavailable
from jobq.handlers import Registry
from jobq.job import Job, new_job_id
from jobq.store import Store, StoreOptions, open_store
from jobq.store.sqlite import SQLiteStore
from tests.pg import drop_schemas, schema_url
from tests.procs import ServerProcess
from tests.redisserver import prefix_url

TEST_CONFIG = Config(store="memory://", workers=4, port=0, drain_timeout=1.0)

BACKENDS = ["memory", "sqlite", "postgresql", "redis"]
"""Every store backend; API and store tests run once per backend."""


def store_url(backend: str, tmp_path: Path) -> str:
    """Where each backend keeps its data for one test (a PostgreSQL schema, a Redis key prefix: of its own)."""
    if backend == "postgresql":
        return schema_url(tmp_path)
    if backend == "redis":
        return prefix_url(tmp_path)
    return {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path / 'jobq.db'}"}[backend]


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    """In-process tests run on the loop jobq runs on (jobq.eventloop)."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session", autouse=True)
def _drop_test_schemas() -> Iterator[None]:
    yield
    drop_schemas()


OpenUrl = Callable[..., Awaitable[Store]]


@pytest.fixture
async def open_url() -> AsyncIterator[OpenUrl]:
    """Open the store a URL names with StoreOptions overrides (``await open_url(url, clock=...)``); all closed
    at teardown. Two stores opened on one URL share its data: two nodes, on a shared store."""
    opened: list[Store] = []

    async def build(url: str, **options: Any) -> Store:
        store = open_store(url, StoreOptions(**options))
        await store.open()
        opened.append(store)
        return store

    yield build
    for store in opened:
        await store.close()


MakeStore = Callable[..., Awaitable[Store]]


@pytest.fixture(params=BACKENDS)
def make_store(request: pytest.FixtureRequest, tmp_path: Path, open_url: OpenUrl) -> MakeStore:
    """Open a store of the parametrized backend with option overrides; closed after the test."""

    async def build(**overrides: Any) -> Store:
        return await open_url(store_url(request.param, tmp_path), **overrides)

    return build


def make_job(job_id: str | None = None, **fields: Any) -> Job:
    """A job to add to a store directly (type ``t``, payload ``{"n": 1}`` unless given)."""
    fields.setdefault("type", "t")
    fields.setdefault("payload", {"n": 1})
    return Job(id=job_id or new_job_id(), **fields)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def registry() -> Registry:
    """A registry with the built-in handlers; tests add their own to it."""
    fresh = Registry()
    register_builtins(fresh)
    return fresh


MakeClient = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def make_client(aiohttp_client: Any, registry: Registry, backend: str, tmp_path: Path) -> MakeClient:
    """Build a test client for an app on each backend with config overrides, e.g. ``await make_client(workers=2)``.

    ``clock`` is the store's clock (a FakeClock moves time only when the test says).
    """

    async def build(clock: Callable[[], float] | None = None, **overrides: Any) -> TestClient:
        config = replace(TEST_CONFIG, store=store_url(backend, tmp_path), **overrides)
        return await aiohttp_client(create_app(config, store=store_from_config(config, clock), handlers=registry))

    return build


@pytest.fixture
async def client(make_client: MakeClient) -> TestClient:
    return await make_client()


async def wait_for_status(client: TestClient, job_id: str, *statuses: str, timeout: float = 5.0) -> dict[str, Any]:
    """Poll ``GET /status/{id}`` until the job reaches one of ``statuses`` (fails after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(f"/status/{job_id}")
        job = await response.json()
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"job {job_id} stuck in {job['status']}, wanted {statuses}"
        await asyncio.sleep(0.01)


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0, every: float = 0.05) -> None:
    """Poll ``check`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(every)


async def refused_while_away(store: Store, within: float) -> str:
    """With its backend gone, a shared store refuses every verb at once (within ``within`` seconds) and soon
    says why (``unavailable``, what /health reports); returns that reason."""
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await store.add([make_job("while-away")])
    with pytest.raises(StoreUnavailable):
        await store.lease(1, 30.0)
    assert time.monotonic() - started < within

    async def reported() -> bool:
        return store.unavailable is not None

    await until(reported, "the store to report itself unavailable", timeout=5.0)
    return store.unavailable or ""


async def add_when_back(store: Store, job_id: str) -> None:
    """Add a job once the store's backend is back (refused until then)."""

    async def added() -> bool:
        try:
            await store.add([make_job(job_id)])
        except StoreUnavailable:
            return False
        return True

    await until(added, f"{job_id} to be added once the store is back", every=0.1)


class FakeClock:
    """A store clock that moves only when a test says so."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


StartServer = Callable[..., ServerProcess]
"""``start(*flags)``: a ``main.py`` process with the test handlers, ready to serve."""


@pytest.fixture
def runs_file(tmp_path: Path) -> Path:
    """Where the test handlers (tests/fixture_handlers.py) record each run of a job."""
    return tmp_path / "runs.txt"


@pytest.fixture
def start_server(tmp_path: Path, runs_file: Path) -> Iterator[StartServer]:
    """Start ``main.py`` processes with the test handlers and the given flags; all stopped at teardown."""
    servers: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        server = ServerProcess(
            tmp_path / f"server-{len(servers)}.log",
            "--handlers",
            "tests.fixture_handlers",
            *args,
            env={"JOBQ_TEST_RUNS_FILE": str(runs_file)},
        )
        servers.append(server)
        server.wait_ready()
        return server

    yield start
    for server in servers:
        server.stop()
        server.wait(timeout=10)  # closes the log file even when the process exited on its own


OpenStore = Callable[..., Awaitable[SQLiteStore]]


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "jobq.db")


@pytest.fixture
def open_sqlite(db_path: str, open_url: OpenUrl) -> OpenStore:
    """Open a SQLiteStore on the test's file (again and again, to restart); all closed at teardown."""

    async def build(path: str = db_path, **options: Any) -> SQLiteStore:
        store = await open_url(f"sqlite:///{path}", **options)
        assert isinstance(store, SQLiteStore)
        return store

    return build
