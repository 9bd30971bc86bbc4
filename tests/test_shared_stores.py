"""What every store shared by several jobq processes does (PostgreSQL, Redis): nodes on one store, each a store
object here. One job is never leased twice, idle leases wake for another node's jobs, followers and the node
holding a job hear other nodes' changes, a stopping node hands back only its own runs, and one node at a time
reports the totals. Each backend's own behaviour is in tests/test_postgres.py and tests/test_redis.py; real
processes in tests/test_cluster.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from jobq.job import JobStatus
from jobq.store import Added, without_password
from jobq.store.base import JobEvent, StoreEvent
from jobq.store.shared import POLL_SECONDS, SharedStore
from tests.conftest import FakeClock, OpenUrl, make_job, store_url

OpenNode = Callable[..., Awaitable[SharedStore]]


@pytest.fixture(params=["postgresql", "redis"])
def open_node(request: pytest.FixtureRequest, tmp_path: Path, open_url: OpenUrl) -> OpenNode:
    """Open a store of the parametrized shared backend on the test's data: each one is a jobq node."""

    async def build(**options: Any) -> SharedStore:
        store = await open_url(store_url(request.param, tmp_path), **options)
        assert isinstance(store, SharedStore)
        return store

    return build


async def settled(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` until it holds (fails after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.01)


async def test_concurrent_leases_on_several_nodes_never_hand_out_one_job_twice(open_node: OpenNode) -> None:
    nodes = [await open_node() for _ in range(3)]
    await nodes[0].add([make_job(f"j{i}") for i in range(600)])

    async def drain(node: SharedStore) -> list[str]:
        taken: list[str] = []
        while batch := await node.lease(7, 30.0):
            taken += [leased.id for leased in batch]
        return taken

    per_task = await asyncio.gather(*(drain(node) for node in nodes for _ in range(3)))
    everything = [job_id for taken in per_task for job_id in taken]
    assert len(everything) == 600 and len(set(everything)) == 600
    assert (await nodes[1].stats()).by_status == {"processing": 600}


async def test_an_idle_lease_wakes_when_another_node_adds_a_job(open_node: OpenNode) -> None:
    producer, consumer = await open_node(), await open_node()
    waiting = asyncio.create_task(consumer.lease(1, 30.0, wait=30.0))
    await settled(lambda: bool(consumer._waiters))  # the lease has looked, found nothing, and sleeps
    assert not waiting.done()
    started = time.monotonic()
    await producer.add([make_job("a")])
    [leased] = await asyncio.wait_for(waiting, 10.0)
    assert leased.id == "a"
    assert time.monotonic() - started < POLL_SECONDS  # woken by the notification, not the fallback poll


async def test_a_follower_hears_of_changes_made_on_another_node(open_node: OpenNode) -> None:
    here, there = await open_node(), await open_node()
    await here.add([make_job("a")])
    heard: list[tuple[str, str]] = []
    arrived = asyncio.Event()

    def hear(event: StoreEvent) -> None:
        if isinstance(event, JobEvent):
            heard.append((event.before.value, event.job.status.value))
            arrived.set()

    here.subscribe(hear)
    unfollow = here.follow("a")
    [leased] = await there.lease(1, 30.0)
    await asyncio.wait_for(arrived.wait(), 5.0)
    arrived.clear()
    await there.complete("a", leased.lease_id or "", {"ok": True})
    await asyncio.wait_for(arrived.wait(), 5.0)
    assert heard == [("pending", "processing"), ("processing", "completed")]
    unfollow()
    await there.add([make_job("b")])
    await there.cancel("b")  # nobody follows b here: nothing is fetched or heard
    here.follow("d")
    await there.add([make_job("d")])
    arrived.clear()
    await there.cancel("d")  # heard after b's cancel, whose fetch (if any) began first
    await asyncio.wait_for(arrived.wait(), 5.0)
    await settled(lambda: not here._background)  # every fetch of others' changes has published
    assert heard[2:] == [("pending", "cancelled")]


async def test_a_job_leased_through_a_node_hears_its_cancel_from_another(open_node: OpenNode) -> None:
    runner, operator = await open_node(), await open_node()
    cancelled = asyncio.Event()
    runner.subscribe(
        lambda e: (
            cancelled.set()
            if isinstance(e, JobEvent) and e.job.status is JobStatus.CANCELLED and e.before is JobStatus.PROCESSING
            else None
        )
    )
    await operator.add([make_job("a")])
    await runner.lease(1, 30.0)  # followed by the node that holds it, with nobody asking
    await operator.cancel("a")
    await asyncio.wait_for(cancelled.wait(), 5.0)


async def test_a_closing_node_hands_back_the_runs_it_held(open_node: OpenNode) -> None:
    leaving, staying = await open_node(), await open_node()
    await staying.add([make_job("mine"), make_job("theirs")])
    [mine] = await leaving.lease(1, 30.0)
    [theirs] = await staying.lease(1, 30.0)
    await leaving.close()
    back = await staying.get(mine.id)
    assert back is not None and back.status is JobStatus.PENDING and back.history[-1].outcome == "recovered"
    still = await staying.get(theirs.id)
    assert still is not None and still.status is JobStatus.PROCESSING


async def test_one_node_at_a_time_reports_the_totals_and_another_takes_over(open_node: OpenNode) -> None:
    first, second = await open_node(), await open_node()
    assert [first.reports_totals, second.reports_totals] == [True, False]  # summing over nodes counts once
    await first.close()
    deadline = time.monotonic() + 10
    while not second.reports_totals:
        assert time.monotonic() < deadline, "nobody reports the totals after the reporting node left"
        await asyncio.sleep(0.05)


async def test_a_claim_whose_caller_left_is_handed_back(open_node: OpenNode) -> None:
    store = await open_node()
    await store.add([make_job("a")])
    leasing = asyncio.create_task(store.lease(1, 30.0))
    for _ in range(3):  # into the claim's statement, which is on its way to the database
        await asyncio.sleep(0)
    leasing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leasing
    deadline = time.monotonic() + 5
    while (back := await store.get("a")) is None or back.status is not JobStatus.PENDING or not back.history:
        assert time.monotonic() < deadline, f"not handed back: {back}"
        await asyncio.sleep(0.02)
    assert (back.attempts, [a.outcome for a in back.history]) == (0, ["released"])


async def test_a_closing_node_leaves_alone_a_run_that_lapsed_and_runs_elsewhere(open_node: OpenNode) -> None:
    clock = FakeClock()
    leaving, staying = await open_node(clock=clock), await open_node(clock=clock)
    await staying.add([make_job("a")])
    await leaving.lease(1, 5.0)
    clock.advance(6.0)
    [expired] = await staying.expire_leases()
    assert expired.status is JobStatus.PENDING
    [again] = await staying.lease(1, 30.0)
    await leaving.close()
    still = await staying.get("a")
    assert still is not None and (still.status, still.lease_id) == (JobStatus.PROCESSING, again.lease_id)


def test_a_store_url_is_logged_without_its_password() -> None:
    assert without_password("redis://app:s3cr3t@cache:6379/0?prefix=x") == "redis://app:***@cache:6379/0?prefix=x"
    assert without_password("postgresql://jobq:pw@db/jobs") == "postgresql://jobq:***@db/jobs"
    assert without_password("postgresql://jobq@db/jobs") == "postgresql://jobq@db/jobs"
    assert without_password("sqlite:///jobq.db") == "sqlite:///jobq.db"


async def test_a_run_leased_on_one_node_completes_through_another(open_node: OpenNode) -> None:
    leasing, settling = await open_node(), await open_node()
    await leasing.add([make_job("a")])
    [leased] = await leasing.lease(1, 30.0, worker="w1")
    done = await settling.complete("a", leased.lease_id or "", {"ok": True})  # a remote worker's other server
    stored = await leasing.get("a")
    assert stored is not None and done.to_dict() == stored.to_dict()
    assert (done.status, done.result, [a.worker for a in done.history]) == (JobStatus.COMPLETED, {"ok": True}, ["w1"])


async def test_every_node_sees_every_live_card_and_a_lapsed_one_goes(open_node: OpenNode) -> None:
    clock = FakeClock()
    first, second = await open_node(clock=clock), await open_node(clock=clock)
    await first.announce({"id": first.node, "host": "a"}, 15.0)
    await second.announce({"id": second.node, "host": "b"}, 30.0)
    for node in (first, second):
        assert {card["host"]: card["id"] for card in await node.nodes()} == {"a": first.node, "b": second.node}
    clock.advance(20.0)  # the first node's card lapsed; the second's has not
    assert [card["id"] for card in await first.nodes()] == [second.node]
    await second.withdraw()
    assert await first.nodes() == []


async def test_concurrent_duplicates_on_several_nodes_add_one_job(open_node: OpenNode) -> None:
    nodes = [await open_node() for _ in range(3)]
    jobs = [make_job(f"dup-{n}", unique_key="invoice-42", unique_scope="active") for n in range(30)]
    outcomes = await asyncio.gather(*(nodes[n % 3].add([job]) for n, job in enumerate(jobs)))
    created = [o.job.id for [o] in outcomes if isinstance(o, Added) and o.created]
    assert len(created) == 1
    assert all(isinstance(o, Added) and o.job.id == created[0] for [o] in outcomes)
