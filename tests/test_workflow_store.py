"""Workflows at the store seam (jobq.workflow), on every backend: waiting, counting off, cascades, atomic adds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from jobq.errors import QueueFull
from jobq.job import Job, JobStatus
from jobq.lifecycle import Settlement
from jobq.store import Added, Store
from jobq.store.base import JobEvent, Retention, StoreEvent
from tests.conftest import FakeClock, MakeStore, OpenUrl, make_job, store_url, until

SHARED = ["postgresql", "redis"]


def child(job_id: str, *parents: str, **fields: object) -> Job:
    return make_job(job_id, depends_on=tuple(parents), **fields)


async def add_all(store: Store, jobs: list[Job], *, together: bool = False) -> list[Job]:
    outcomes = await store.add(jobs, together=together)
    assert all(isinstance(outcome, Added) and outcome.created for outcome in outcomes), outcomes
    return [outcome.job for outcome in outcomes if isinstance(outcome, Added)]


async def status_of(store: Store, *job_ids: str) -> list[str]:
    found = {job.id: job for job in await store.get_many(list(job_ids))}
    return [found[job_id].status.value if job_id in found else "gone" for job_id in job_ids]


async def run(store: Store, job_id: str, *, fail: bool = False, queue: str | None = None) -> Job:
    """Lease exactly ``job_id`` (nothing else may be ready in its queue) and complete or fail it."""
    [leased] = await store.lease(10, 30, queues=None if queue is None else [queue])
    assert leased.id == job_id
    if fail:
        return await store.fail(job_id, leased.lease_id or "", "boom")
    return await store.complete(job_id, leased.lease_id or "", {"from": job_id})


async def test_a_diamond_runs_its_last_job_after_both_middle_ones(make_store: MakeStore) -> None:
    store = await make_store()
    added = await add_all(store, [make_job("a"), child("b", "a"), child("c", "a"), child("d", "b", "c")], together=True)
    assert [(job.status.value, job.parents_left) for job in added] == [
        ("pending", 0),
        ("waiting", 1),
        ("waiting", 1),
        ("waiting", 2),
    ]
    await run(store, "a")
    assert await status_of(store, "b", "c", "d") == ["pending", "pending", "waiting"]
    middle = await store.lease(10, 30)
    assert sorted(job.id for job in middle) == ["b", "c"]
    await store.complete(middle[0].id, middle[0].lease_id or "", None)
    d = await store.get("d")
    assert d is not None and d.status is JobStatus.WAITING and d.parents_left == 1
    await store.complete(middle[1].id, middle[1].lease_id or "", None)
    d = await store.get("d")
    assert d is not None and d.status is JobStatus.PENDING and d.parents_left == 0
    assert d.depends_on == ("b", "c")
    await run(store, "d")
    assert await store.lease(10, 30) == []


async def test_a_waiting_job_is_never_leased_nor_peeked(make_store: MakeStore) -> None:
    store = await make_store()
    await add_all(store, [make_job("a", queue="q"), child("b", "a", queue="other")])
    assert await store.lease(10, 30, queues=["other"]) == []
    assert await store.peek("other") is None
    stats = await store.stats()
    assert stats.by_status.get("waiting") == 1
    assert stats.by_queue["other"] == {"waiting": 1}
    assert stats.waiting == 2


async def test_parents_finished_before_the_child_count_at_once(make_store: MakeStore) -> None:
    store = await make_store()
    await add_all(store, [make_job("done", queue="a"), make_job("broken", queue="b")])
    await run(store, "done", queue="a")
    await run(store, "broken", fail=True, queue="b")
    added = await add_all(
        store,
        [
            child("after-done", "done"),
            child("after-broken", "broken"),
            child("anyway", "done", "broken", on_parent_failure="run"),
            child("orphan", "never-stored"),
        ],
    )
    assert [job.status.value for job in added] == ["pending", "cancelled", "pending", "cancelled"]
    assert added[1].error == "parent broken failed"
    assert added[3].error == "parent never-stored deleted"


async def test_a_failed_parent_cancels_its_dependants_transitively(make_store: MakeStore) -> None:
    store = await make_store()
    await add_all(
        store,
        [
            make_job("a"),
            child("b", "a"),
            child("c", "b"),
            child("d", "c"),
            child("e", "b", on_parent_failure="run"),  # runs anyway: b's cancel counts it off
            child("f", "a", "e"),
        ],
        together=True,
    )
    await run(store, "a", fail=True)
    assert await status_of(store, "b", "c", "d", "e", "f") == [
        "cancelled",
        "cancelled",
        "cancelled",
        "pending",
        "cancelled",
    ]
    jobs = {job.id: job for job in await store.get_many(["b", "c", "f"])}
    assert jobs["b"].error == "parent a failed"
    assert jobs["c"].error == "parent b cancelled"
    assert jobs["f"].error == "parent a failed"
    assert jobs["c"].attempts == 0 and jobs["c"].finished_at is not None


async def test_a_long_chain_cascades_without_limit(make_store: MakeStore) -> None:
    store = await make_store()
    length = 1500
    chain = [make_job("n0")] + [child(f"n{i}", f"n{i - 1}") for i in range(1, length)]
    await add_all(store, chain, together=True)
    cancelled = await store.cancel("n0")
    assert cancelled.status is JobStatus.CANCELLED
    statuses = await status_of(store, *(f"n{i}" for i in range(length)))
    assert set(statuses) == {"cancelled"}


async def test_a_fan_in_waits_for_every_parent(make_store: MakeStore) -> None:
    store = await make_store()
    width = 1000
    members = [make_job(f"m{i}") for i in range(width)]
    callback = child("callback", *(job.id for job in members), on_parent_failure="run")
    await add_all(store, [*members, callback], together=True)
    leased = await store.lease(width, 30)
    assert len(leased) == width and "callback" not in {job.id for job in leased}
    settled = await store.settle_many([Settlement(job.id, job.lease_id or "", 1) for job in leased[:-1]])
    assert all(isinstance(job, Job) for job in settled)
    waiting = await store.get("callback")
    assert waiting is not None and waiting.status is JobStatus.WAITING and waiting.parents_left == 1
    await store.fail(leased[-1].id, leased[-1].lease_id or "", "the last one fails")
    ready = await store.get("callback")
    assert ready is not None and ready.status is JobStatus.PENDING and ready.parents_left == 0
    [again] = await store.lease(10, 30)
    assert again.id == "callback"


async def test_cancel_give_up_expiry_and_delete_end_a_parent_too(make_store: MakeStore) -> None:
    clock = FakeClock()
    store = await make_store(clock=clock, max_lost_runs=1)
    await add_all(
        store,
        [
            make_job("cancelled", queue="a"),
            make_job("given-up", queue="b", max_attempts=3),
            make_job("expired", queue="c"),
            make_job("deleted", queue="d"),
            *(child(f"after-{name}", name) for name in ("cancelled", "given-up", "expired", "deleted")),
        ],
    )
    await store.cancel("cancelled")
    [retried] = await store.lease(1, 30, queues=["b"])
    await store.fail(retried.id, retried.lease_id or "", "boom", retry_in=60)
    await store.give_up("given-up", "no more")
    await store.lease(1, 30, queues=["c"])
    clock.advance(31)
    assert [job.id for job in await store.expire_leases()] == ["expired"]
    await store.delete("deleted")
    afters = await store.get_many([f"after-{name}" for name in ("cancelled", "given-up", "expired", "deleted")])
    assert [(job.status.value, job.error) for job in afters] == [
        ("cancelled", "parent cancelled cancelled"),
        ("cancelled", "parent given-up dead"),
        ("cancelled", "parent expired dead"),
        ("cancelled", "parent deleted deleted"),
    ]


async def test_a_waiting_job_can_be_cancelled_and_its_children_follow(make_store: MakeStore) -> None:
    store = await make_store()
    await add_all(store, [make_job("a"), child("b", "a"), child("c", "b")])
    await store.cancel("b")
    assert await status_of(store, "a", "b", "c") == ["pending", "cancelled", "cancelled"]
    await run(store, "a")  # a finishing later changes nothing for its cancelled child
    assert await status_of(store, "b") == ["cancelled"]


async def test_a_together_add_stores_all_or_nothing(make_store: MakeStore) -> None:
    store = await make_store(max_waiting=3)
    jobs = [make_job("w1"), child("w2", "w1"), child("w3", "w2"), child("w4", "w3")]
    outcomes = await store.add(jobs, together=True)
    assert all(isinstance(outcome, QueueFull) for outcome in outcomes), outcomes
    assert await store.get_many(["w1", "w2", "w3", "w4"]) == []
    assert (await store.stats()).by_status == {}
    apart = await store.add([make_job("w1"), child("w2", "w1"), child("w3", "w2"), child("w4", "w3")])
    assert [isinstance(outcome, Added) for outcome in apart] == [True, True, True, False]


async def test_adding_a_workflow_again_changes_nothing(make_store: MakeStore) -> None:
    store = await make_store()
    first = [make_job("a", workflow="wf"), child("b", "a", workflow="wf")]
    await add_all(store, first, together=True)
    again = await store.add([make_job("a", workflow="wf"), child("b", "a", workflow="wf")], together=True)
    assert [isinstance(o, Added) and not o.created for o in again] == [True, True]
    await run(store, "a")
    b = await store.get("b")
    assert b is not None and b.status is JobStatus.PENDING


async def test_jobs_are_listed_by_workflow_and_by_parent(make_store: MakeStore) -> None:
    store = await make_store()
    await add_all(
        store,
        [
            make_job("a", workflow="wf"),
            child("b", "a", workflow="wf"),
            child("c", "a", workflow="wf"),
            make_job("outside"),
            child("late", "a"),
        ],
    )
    in_workflow, _ = await store.list_jobs(workflow="wf")
    assert [job.id for job in in_workflow] == ["c", "b", "a"]
    children, _ = await store.list_jobs(parent="a")
    assert [job.id for job in children] == ["late", "c", "b"]
    page, cursor = await store.list_jobs(parent="a", limit=2)
    rest, _ = await store.list_jobs(parent="a", limit=2, cursor=cursor)
    assert [job.id for job in page + rest] == ["late", "c", "b"]
    waiting, _ = await store.list_jobs(status=JobStatus.WAITING, workflow="wf")
    assert [job.id for job in waiting] == ["c", "b"]
    assert [job.id for job in await store.get_many(["c", "missing", "a"])] == ["c", "a"]


async def test_subscribers_hear_of_children_the_cascade_moved(make_store: MakeStore) -> None:
    store = await make_store()
    heard: list[tuple[str, str]] = []

    def note(event: StoreEvent) -> None:
        if isinstance(event, JobEvent):
            heard.append((event.job.id, event.job.status.value))

    store.subscribe(note)
    await add_all(store, [make_job("a", queue="a"), child("b", "a"), make_job("x", queue="x"), child("y", "x")])
    stops = [store.follow("b"), store.follow("y")]
    await run(store, "a", queue="a")
    [x] = await store.lease(10, 30, queues=["x"])
    await store.fail(x.id, x.lease_id or "", "boom")

    async def both() -> bool:
        return ("b", "pending") in heard and ("y", "cancelled") in heard

    await until(both, "the children's events")
    for stop in stops:
        stop()


async def test_a_child_that_stops_waiting_leaves_no_edge_behind(make_store: MakeStore) -> None:
    store = await make_store()
    await add_all(store, [make_job("p", queue="p"), make_job("q", queue="q"), child("c", "p", queue="c")])
    await store.delete("c")  # deleted while it waits on p: its id may be used again
    await add_all(store, [child("c", "q", queue="c")])  # for a job that waits on q only
    await add_all(store, [child("d", "p", queue="d")])
    await store.cancel("d")
    await run(store, "p", queue="p")  # p ends: nothing may count p off c or d
    c = await store.get("c")
    assert c is not None and c.status is JobStatus.WAITING and c.parents_left == 1
    await run(store, "q", queue="q")
    assert await status_of(store, "c", "d") == ["pending", "cancelled"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "redis"])
@pytest.mark.parametrize("remove", ["purge", "delete"])
async def test_a_parent_that_completed_and_is_gone_still_counts_after_a_restart(
    backend: str, remove: str, tmp_path: Path, open_url: OpenUrl
) -> None:
    clock = FakeClock()
    url = store_url(backend, tmp_path)
    store = await open_url(url, clock=clock, retention=Retention(max_age=60))
    await add_all(store, [make_job("p1", queue="a"), make_job("p2", queue="b"), child("c", "p1", "p2", queue="c")])
    await run(store, "p1", queue="a")
    if remove == "purge":
        clock.advance(3600)
        assert await store.purge() == 1  # p1, completed an hour ago, is past retention
    else:
        await store.delete("p1")
    await store.close()
    again = await open_url(url, clock=clock, retention=Retention(max_age=60))
    c = await again.get("c")
    assert c is not None and c.status is JobStatus.WAITING and c.parents_left == 1, c and c.error
    await run(again, "p2", queue="b")
    assert await status_of(again, "c") == ["pending"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "redis"])
async def test_a_workflow_outlives_a_restart(backend: str, tmp_path: Path, open_url: OpenUrl) -> None:
    url = store_url(backend, tmp_path)
    store = await open_url(url)
    await add_all(
        store,
        [make_job("a"), child("b", "a"), child("c", "a"), child("d", "b", "c"), child("e", "b")],
        together=True,
    )
    await run(store, "a")
    [b, c] = sorted(await store.lease(10, 30), key=lambda job: job.id)
    await store.complete(b.id, b.lease_id or "", None)
    await store.close()
    again = await open_url(url)
    d = await again.get("d")
    assert d is not None and d.status is JobStatus.WAITING and d.parents_left == 1
    assert await status_of(again, "e") == ["pending"]
    running = await again.get("c")
    assert running is not None
    if running.status is JobStatus.PROCESSING:  # a shared store leaves another node's run be
        await again.complete("c", c.lease_id or "", None)
    else:  # a store of one process hands its unfinished runs back on restart
        [e_or_c] = [job for job in await again.lease(10, 30) if job.id == "c"]
        await again.complete("c", e_or_c.lease_id or "", None)
    assert await status_of(again, "d") == ["pending"]


@pytest.mark.parametrize("backend", SHARED)
async def test_concurrent_parents_on_two_nodes_release_the_child_once(
    backend: str, tmp_path: Path, open_url: OpenUrl
) -> None:
    url = store_url(backend, tmp_path)
    one, two = await open_url(url), await open_url(url)
    rounds = 20
    for n in range(rounds):
        await add_all(one, [make_job(f"p{n}"), make_job(f"q{n}"), child(f"cb{n}", f"p{n}", f"q{n}")], together=True)
        [p] = await one.lease(1, 30)
        [q] = await two.lease(1, 30)
        assert {p.id, q.id} == {f"p{n}", f"q{n}"}
        await asyncio.gather(one.complete(p.id, p.lease_id or "", None), two.complete(q.id, q.lease_id or "", None))
        callback = await one.get(f"cb{n}")
        assert callback is not None and callback.status is JobStatus.PENDING and callback.parents_left == 0
        [leased] = await two.lease(10, 30)
        assert leased.id == f"cb{n}"
        assert await one.lease(10, 30) == [] and await two.lease(10, 30) == []
        await one.complete(leased.id, leased.lease_id or "", None)
