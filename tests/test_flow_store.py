"""Flow control at the store seam (jobq.flow), on every backend: limits, rates and turns, on a fake clock."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from jobq.flow import QueueFlow, Rate
from jobq.job import Job, JobStatus
from jobq.store import Added, Store
from tests.conftest import FakeClock, MakeStore, OpenUrl, make_job, store_url


def keyed(key: str | None, count: int, queue: str = "q", **fields: object) -> list[Job]:
    return [make_job(f"{key or 'none'}-{n}", queue=queue, concurrency_key=key, **fields) for n in range(count)]


async def add_all(store: Store, jobs: list[Job]) -> None:
    outcomes = await store.add(jobs)
    assert all(isinstance(outcome, Added) and outcome.created for outcome in outcomes), outcomes


def by_key(jobs: list[Job]) -> Counter[str | None]:
    return Counter(job.concurrency_key for job in jobs)


async def test_a_per_key_limit_holds_and_a_finished_job_makes_room(make_store: MakeStore) -> None:
    store = await make_store()
    await store.set_flow("q", QueueFlow(key_concurrency=2))
    await add_all(store, keyed("a", 5) + keyed("b", 5))
    first = await store.lease(10, 30)
    assert by_key(first) == {"a": 2, "b": 2}
    assert await store.lease(10, 30) == []
    done = next(job for job in first if job.concurrency_key == "a")
    await store.complete(done.id, done.lease_id or "", None)
    again = await store.lease(10, 30)
    assert [job.concurrency_key for job in again] == ["a"]
    assert again[0].attempts == 1  # being held back used no attempt
    held = await store.get("a-4")
    assert held is not None and held.status is JobStatus.PENDING and held.attempts == 0


async def test_a_jobs_own_limit_narrows_the_queues_never_widens_it(make_store: MakeStore) -> None:
    store = await make_store()
    await store.set_flow("q", QueueFlow(key_concurrency=3))
    await add_all(
        store, keyed("solo", 4, concurrency_limit=1) + keyed("trio", 4) + keyed("greedy", 6, concurrency_limit=5)
    )
    assert by_key(await store.lease(20, 30)) == {"solo": 1, "trio": 3, "greedy": 3}  # own limits only narrow


async def test_keys_take_turns_so_a_small_key_is_not_starved(make_store: MakeStore) -> None:
    store = await make_store()
    await add_all(store, keyed("big", 20) + keyed("small", 3))  # no flow set: keyed jobs take turns anyway
    order = [job.concurrency_key for _ in range(6) for job in await store.lease(1, 30)]
    assert order.count("small") == 3, order
    assert order[:2] in (["big", "small"], ["small", "big"]), order


async def test_keys_go_by_priority_then_age_within_a_key(make_store: MakeStore) -> None:
    store = await make_store()
    await add_all(
        store,
        [make_job("low", queue="q", concurrency_key="k"), make_job("high", queue="q", concurrency_key="k", priority=5)],
    )
    assert [job.id for job in await store.lease(2, 30)] == ["high", "low"]


async def test_a_queue_limit_holds_across_keys_and_unkeyed_jobs(make_store: MakeStore) -> None:
    store = await make_store()
    await store.set_flow("q", QueueFlow(concurrency=3))
    await add_all(store, keyed("a", 3) + keyed(None, 3))
    first = await store.lease(10, 30)
    assert len(first) == 3
    assert await store.lease(10, 30) == []
    await store.fail(first[0].id, first[0].lease_id or "", "boom")
    assert len(await store.lease(10, 30)) == 1
    other = await store.lease(10, 30, queues=["elsewhere"])
    assert other == []


async def test_a_queue_rate_allows_a_burst_then_one_start_per_interval(make_store: MakeStore) -> None:
    clock = FakeClock()
    store = await make_store(clock=clock)
    await store.set_flow("q", QueueFlow(rate=Rate(5, 10.0)))
    await add_all(store, keyed(None, 20))
    assert len(await store.lease(20, 30)) == 5
    assert await store.lease(20, 30) == []
    state = (await store.flows())["q"]
    assert state.next_start == pytest.approx(clock.now + 2.0)
    clock.advance(2.0)
    assert len(await store.lease(20, 30)) == 1
    clock.advance(10.0)
    assert len(await store.lease(20, 30)) == 5


async def test_a_key_rate_holds_each_key_apart(make_store: MakeStore) -> None:
    clock = FakeClock()
    store = await make_store(clock=clock)
    await store.set_flow("q", QueueFlow(key_rate=Rate(1, 1.0)))
    await add_all(store, keyed("a", 3) + keyed("b", 3) + keyed(None, 2))
    assert by_key(await store.lease(10, 30)) == {"a": 1, "b": 1, None: 2}  # unkeyed jobs have no key rate
    state = (await store.flows())["q"]
    assert state.keys_next_start == {"a": pytest.approx(clock.now + 1.0), "b": pytest.approx(clock.now + 1.0)}
    assert await store.lease(10, 30) == []
    clock.advance(1.0)
    assert by_key(await store.lease(10, 30)) == {"a": 1, "b": 1}


async def test_flows_report_what_runs_and_a_removed_flow_holds_nothing(make_store: MakeStore) -> None:
    store = await make_store()
    await store.set_flow("q", QueueFlow(concurrency=10, key_concurrency=1))
    await add_all(store, keyed("a", 2) + keyed("b", 2))
    await store.lease(10, 30)
    state = (await store.flows())["q"]
    assert (state.flow, state.running, state.keys_running) == (
        QueueFlow(concurrency=10, key_concurrency=1),
        2,
        {"a": 1, "b": 1},
    )
    await store.set_flow("q", None)
    assert await store.flows() == {}
    assert by_key(await store.lease(10, 30)) == {"a": 1, "b": 1}


async def test_a_flow_queue_still_honours_pause_and_job_types(make_store: MakeStore) -> None:
    store = await make_store()
    await store.set_flow("q", QueueFlow(key_concurrency=5))
    await add_all(store, [*keyed("a", 2), make_job("other", queue="q", type="u", concurrency_key="a")])
    assert [job.id for job in await store.lease(10, 30, types=["u"])] == ["other"]
    await store.set_paused("q", True)
    assert await store.lease(10, 30) == []
    await store.set_paused("q", False)
    assert len(await store.lease(10, 30)) == 2


async def test_an_expired_or_released_run_frees_its_keys_slot(make_store: MakeStore) -> None:
    clock = FakeClock()
    store = await make_store(clock=clock)
    await store.set_flow("q", QueueFlow(key_concurrency=1))
    await add_all(store, keyed("a", 3))
    [first] = await store.lease(10, 5)
    await store.release(first.id, first.lease_id or "")
    assert len(await store.lease(10, 5)) == 1  # the released run's slot is free again
    clock.advance(6)
    [expired] = await store.expire_leases()
    assert expired.status is JobStatus.PENDING
    assert len(await store.lease(10, 5)) == 1  # and so is the lapsed one's
    assert (await store.flows())["q"].keys_running == {"a": 1}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "redis"])
async def test_a_flow_outlives_a_restart(backend: str, tmp_path: Path, open_url: OpenUrl) -> None:
    url = store_url(backend, tmp_path)
    store = await open_url(url)
    flow = QueueFlow(concurrency=4, key_concurrency=2, rate=Rate(10, 1.0), key_rate=Rate(3, 60.0))
    await store.set_flow("q", flow)
    await store.close()
    again = await open_url(url)
    assert (await again.flows())["q"].flow == flow


async def test_a_rate_holds_within_one_periods_tolerance_over_30_seconds(make_store: MakeStore) -> None:
    clock = FakeClock()
    store = await make_store(clock=clock)
    per_second = 20
    await store.set_flow("q", QueueFlow(rate=Rate(per_second, 1.0)))
    await add_all(store, keyed(None, 40 * per_second))
    began = clock.now
    starts: list[float] = []
    for _ in range(300):  # 30 s of the fake clock, looking every 0.1 s; leases outlast the test
        starts += [clock.now - began for _ in await store.lease(100, 3600)]
        clock.advance(0.1)
    assert 30 * per_second <= len(starts) <= 31 * per_second, len(starts)
    in_any_second = max(sum(1 for at in starts if second <= at < second + 1) for second in range(30))
    assert in_any_second <= 2 * per_second, in_any_second  # the first burst, and then the rate


async def test_a_small_key_gets_its_fair_share_beside_a_big_one(make_store: MakeStore) -> None:
    store = await make_store()
    await add_all(store, keyed("big", 10_000))
    await add_all(store, keyed("small", 10))  # enqueued after all of the big key's
    first = [job.concurrency_key for _ in range(20) for job in await store.lease(1, 60)]
    assert first.count("small") == 10, first


async def test_a_new_rate_starts_afresh(make_store: MakeStore) -> None:
    clock = FakeClock()
    store = await make_store(clock=clock)
    await store.set_flow("q", QueueFlow(rate=Rate(1, 3600.0), key_rate=Rate(1, 3600.0)))
    await add_all(store, keyed("a", 4) + keyed(None, 4))
    assert len(await store.lease(10, 60)) == 1
    await store.set_flow("q", QueueFlow(rate=Rate(100, 1.0), key_rate=Rate(100, 1.0)))
    assert len(await store.lease(10, 60)) == 7  # not held back by the tat the old rate left


async def test_keys_held_ahead_hold_back_no_key_behind_them(make_store: MakeStore) -> None:
    store = await make_store()
    await store.set_flow("q", QueueFlow(key_concurrency=1))
    await add_all(store, [job for key in ("k1", "k2", "k3", "k4", "k5", "k6", "k7") for job in keyed(key, 3)])
    first = [job for _ in range(7) for job in await store.lease(1, 60)]
    assert sorted(by_key(first)) == ["k1", "k2", "k3", "k4", "k5", "k6", "k7"]  # each key's one slot taken
    last = next(job for job in first if job.concurrency_key == "k7")
    await store.complete(last.id, last.lease_id or "", None)
    assert [job.concurrency_key for job in await store.lease(1, 60)] == ["k7"]  # k1..k6 stay held
    await add_all(store, keyed(None, 1))  # an unkeyed job behind many keyed ones still gets its turn
    assert [job.concurrency_key for job in await store.lease(1, 60)] == [None]


async def test_a_worker_of_one_type_is_not_held_back_by_keys_of_others(make_store: MakeStore) -> None:
    store = await make_store()
    await store.set_flow("q", QueueFlow(key_concurrency=1))
    await add_all(store, [job for key in ("a1", "a2", "a3", "a4", "a5", "a6") for job in keyed(key, 2, type="a")])
    await add_all(store, [make_job("b-job", queue="q", type="b", concurrency_key="zz")])
    assert [job.id for job in await store.lease(1, 60, types=["b"])] == ["b-job"]
