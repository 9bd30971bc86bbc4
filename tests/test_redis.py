"""What only the Redis store does: its URL, durability (the warning, AOF across a crash, WAIT for replicas), a
server that goes away (and forgets its scripts), and a three-master Redis Cluster. What every shared store does
is in tests/test_shared_stores.py; several jobq processes on one Redis in tests/test_cluster.py."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
import redis

from jobq.app import create_app
from jobq.errors import StoreUnavailable
from jobq.job import JobStatus
from jobq.store.redis import RedisStore, durability_warning, split_url
from tests.conftest import TEST_CONFIG, OpenUrl, add_when_back, make_job, refused_while_away, until
from tests.procs import free_port
from tests.redisserver import RedisServer

OpenNode = Callable[..., Awaitable[RedisStore]]


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A redis-server of this test's own (it may stop and start it)."""
    started = RedisServer()
    yield started
    started.stop()


@pytest.fixture
def open_node(open_url: OpenUrl) -> OpenNode:
    """Open a RedisStore on a URL: each one is a jobq node; all closed at teardown."""

    async def build(url: str, **options: Any) -> RedisStore:
        store = await open_url(url, **options)
        assert isinstance(store, RedisStore)
        return store

    return build


def test_the_url_names_the_prefix_and_replicas_and_refuses_bad_ones() -> None:
    settings = split_url("rediss://user:secret@h:6380/2?prefix=shop&replicas=1&replica_timeout=0.5&ssl_cert_reqs=none")
    assert (settings.url, settings.prefix, settings.replicas, settings.replica_timeout) == (
        "rediss://user:secret@h:6380/2?ssl_cert_reqs=none",
        "shop",
        1,
        0.5,
    )
    assert split_url("redis://h").prefix == "jobq"
    for bad in ("prefix=a{b}", "prefix=a:b", "replicas=-1", "replicas=x", "replica_timeout=0"):
        with pytest.raises(ValueError):
            split_url(f"redis://h/0?{bad}")


def test_the_durability_warning_says_what_an_accepted_job_may_lose() -> None:
    assert "no append-only file" in (durability_warning({"aof_enabled": 0}, "always") or "")
    assert "every second" in (durability_warning({"aof_enabled": 1}, "everysec") or "")
    assert durability_warning({"aof_enabled": 1}, "always") is None


async def test_a_node_warns_at_start_when_redis_keeps_nothing(
    server: RedisServer, open_node: OpenNode, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "jobq.store"):
        await open_node(f"{server.url}?prefix=a")
    assert any("no append-only file" in record.message for record in caplog.records)


async def test_with_aof_always_an_accepted_job_survives_a_redis_crash(open_node: OpenNode) -> None:
    durable = RedisServer("--appendonly", "yes", "--appendfsync", "always")
    try:
        store = await open_node(f"{durable.url}?prefix=a")
        [added] = await store.add([make_job("kept")])
        assert added.created  # type: ignore[union-attr]
        durable.halt()  # SIGKILL: whatever was not written to its file is gone
        durable.start()
        for _ in range(100):
            try:
                kept = await store.get("kept")
                break
            except StoreUnavailable:
                await asyncio.sleep(0.05)
        assert kept is not None and kept.status is JobStatus.PENDING
        [leased] = await store.lease(1, 30.0)  # its scripts were forgotten with the restart: loaded again
        assert leased.id == "kept"
    finally:
        durable.stop()


async def test_redis_going_away_is_unavailable_then_everything_resumes(
    server: RedisServer, open_node: OpenNode
) -> None:
    store = await open_node(f"{server.url}?prefix=a")
    await store.add([make_job("before")])
    server.halt()
    assert "unreachable" in await refused_while_away(store, within=10.0)
    server.start()
    await add_when_back(store, "back")
    assert await store.get("back") is not None and await store.get("before") is None  # it kept nothing

    async def healthy() -> bool:
        return store.unavailable is None

    await until(healthy, "the store to report itself available again")


async def test_with_replicas_each_write_waits_for_them_or_is_refused(server: RedisServer, open_node: OpenNode) -> None:
    primary = redis.Redis(port=server.port)
    primary.config_set("repl-diskless-sync-delay", 0)  # a new replica is sent the data at once, not after 5 s
    replica = RedisServer("--replicaof", "127.0.0.1", str(server.port))
    try:
        deadline = time.monotonic() + 10
        replicating = redis.Redis(port=replica.port)
        while primary.info("replication").get("slave0", {}).get("state") != "online" or (
            replicating.info("replication").get("master_link_status") != "up"
        ):
            assert time.monotonic() < deadline, "the replica did not catch up"
            await asyncio.sleep(0.05)
        store = await open_node(f"{server.url}?prefix=a&replicas=1&replica_timeout=2")
        [added] = await store.add([make_job("on-two")])
        assert added.created  # type: ignore[union-attr]
        assert redis.Redis(port=replica.port).exists("{a}:job:on-two")  # on the replica when answered
        replica.halt()
        with pytest.raises(StoreUnavailable, match="only 0 of 1 replicas"):
            await store.add([make_job("on-one")])
    finally:
        replica.stop()


def cluster_port() -> int:
    """A free port a cluster node can use: its bus listens 10,000 above it, so at most 55,535."""
    while (port := free_port()) > 55_535:
        pass
    return port


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[str]:
    """A Redis Cluster of three masters (no replicas) on free ports; the URL of one of them."""
    servers = []
    try:
        for _ in range(3):
            port = cluster_port()
            servers.append(
                RedisServer("--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf", port=port)
            )
        addresses = [f"127.0.0.1:{s.port}" for s in servers]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-yes"], check=True, capture_output=True
        )
        deadline = time.monotonic() + 20
        while redis.Redis(port=servers[0].port).cluster("info")["cluster_state"] != "ok":
            assert time.monotonic() < deadline, "the cluster did not come up"
            time.sleep(0.1)
        yield servers[0].url
    finally:
        for started in servers:
            started.stop()


async def test_the_core_verbs_work_on_a_three_master_cluster(redis_cluster: str, open_node: OpenNode) -> None:
    store = await open_node(f"{redis_cluster}?prefix=shop")
    other = await open_node(f"{redis_cluster}?prefix=mail")  # another deployment: most likely on another master
    await store.add(
        [
            make_job("a", priority=1),
            make_job("b"),
            make_job("later", status=JobStatus.SCHEDULED, run_at=time.time() + 60),
        ]
    )
    await other.add([make_job("m")])
    [first, second] = await store.lease(2, 30.0)
    assert (first.id, second.id) == ("a", "b")
    done = await store.complete("a", first.lease_id or "", {"ok": 1})
    assert (done.status, done.result) == (JobStatus.COMPLETED, {"ok": 1})
    failed = await store.fail("b", second.lease_id or "", "boom")
    assert failed.status is JobStatus.FAILED
    assert (await store.cancel("later")).status is JobStatus.CANCELLED
    page, _ = await store.list_jobs()
    assert [j.id for j in page] == ["later", "b", "a"]
    assert (await store.stats()).by_status == {"completed": 1, "failed": 1, "cancelled": 1}
    assert [j.id for j in await other.lease(5, 30.0)] == ["m"]


async def test_metrics_answer_while_redis_is_away_and_say_the_store_is_down(
    server: RedisServer, aiohttp_client: Any
) -> None:
    config = replace(TEST_CONFIG, store=f"{server.url}?prefix=m", workers=0)
    client = await aiohttp_client(create_app(config))

    async def store_up() -> str:
        response = await client.get("/metrics")
        assert response.status == 200
        text = await response.text()
        return next(line for line in text.splitlines() if line.startswith("jobq_store_up "))

    assert await store_up() == "jobq_store_up 1.0"
    server.halt()

    async def down() -> bool:
        return await store_up() == "jobq_store_up 0.0"

    await until(down, "the scrape to say the store is down", timeout=20.0)
    server.start()

    async def up() -> bool:
        return await store_up() == "jobq_store_up 1.0"

    await until(up, "the scrape to say the store is back", timeout=20.0)
