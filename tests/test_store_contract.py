"""The store contract: one suite, run against every backend.

A backend joins by adding its name to ``BACKENDS`` and a URL to ``store_url``;
every test here then runs against it unchanged.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from jobq.errors import InvalidTransition, JobNotFound, QueueFull, StaleLease
from jobq.job import Job, JobStatus
from jobq.retry import RetryPolicy
from jobq.store import Added, Retention, Store, memory, open_store
from jobq.store.base import Settlement, StoredSchedule
from tests.conftest import BACKENDS, FakeClock, MakeStore, make_job, store_url

IN_MEMORY = ["memory", "sqlite"]  # the backends that index every job in this process's memory


@pytest.fixture
async def store(make_store: MakeStore) -> Store:
    return await make_store()


async def add(store: Store, *jobs: Job) -> list[Job]:
    """Add jobs that must all be created; returns the stored jobs."""
    outcomes = await store.add(jobs)
    assert all(isinstance(o, Added) and o.created for o in outcomes), outcomes
    return [o.job for o in outcomes if isinstance(o, Added)]


async def lease_one(store: Store, lease_seconds: float = 30.0, **kwargs: Any) -> Job:
    [job] = await store.lease(1, lease_seconds, **kwargs)
    return job


# -- producers -------------------------------------------------------------
async def test_add_then_get_returns_the_job(store: Store) -> None:
    job = make_job("a", payload={"to": "x"}, queue="mail", priority=3, max_attempts=2, timeout=5.0)
    [outcome] = await store.add([job])
    assert isinstance(outcome, Added) and outcome.created
    got = await store.get("a")
    assert got is not None
    assert (got.type, got.payload, got.queue, got.priority) == ("t", {"to": "x"}, "mail", 3)
    assert (got.max_attempts, got.timeout, got.status) == (2, 5.0, JobStatus.PENDING)
    assert await store.get("missing") is None


async def test_same_id_is_not_stored_twice(store: Store) -> None:
    await add(store, make_job("a", payload={"v": 1}))
    [again] = await store.add([make_job("a", payload={"v": 2})])
    assert isinstance(again, Added) and not again.created
    assert again.job.payload == {"v": 1}
    both = await store.add([make_job("b"), make_job("b")])
    assert [o.created for o in both if isinstance(o, Added)] == [True, False]
    assert (await store.stats()).by_status == {"pending": 2}


async def test_queue_full_refuses_past_max_waiting(make_store: MakeStore) -> None:
    store = await make_store(max_waiting=2)
    outcomes = await store.add([make_job("a"), make_job("b"), make_job("c")])
    assert isinstance(outcomes[2], QueueFull)
    assert await store.get("c") is None
    await lease_one(store)  # a leased job no longer waits
    [outcome] = await store.add([make_job("c")])
    assert isinstance(outcome, Added) and outcome.created


# -- leasing ---------------------------------------------------------------
async def test_lease_marks_the_job_processing(store: Store) -> None:
    await add(store, make_job("a"))
    before = time.time()
    job = await lease_one(store, 30.0, worker="w1")
    assert (job.id, job.status, job.attempts) == ("a", JobStatus.PROCESSING, 1)
    assert job.lease_id
    assert job.lease_expires_at is not None and before + 30.0 <= job.lease_expires_at <= time.time() + 30.0
    assert [(a.number, a.worker, a.outcome) for a in job.history] == [(1, "w1", None)]
    assert await store.lease(1, 30.0) == []


async def test_lease_takes_higher_priority_first_then_fifo(store: Store) -> None:
    await add(store, make_job("low1"), make_job("high1", priority=5), make_job("low2"), make_job("high2", priority=5))
    leased = [job.id for job in await store.lease(4, 30.0)]
    assert leased == ["high1", "high2", "low1", "low2"]


async def test_lease_round_robins_queues_and_filters(store: Store) -> None:
    await add(
        store, *(make_job(f"a{i}", queue="qa") for i in range(3)), *(make_job(f"b{i}", queue="qb") for i in range(2))
    )
    assert [job.id for job in await store.lease(2, 30.0, queues=["qb"])] == ["b0", "b1"]
    await add(store, make_job("b2", queue="qb"), make_job("c0", queue="qc"))
    leased = [job.id for job in await store.lease(4, 30.0)]
    assert sorted(leased[:3]) == ["a0", "b2", "c0"]  # one from each queue before a second from any
    assert leased[3] == "a1"


async def test_paused_queue_is_not_leased_until_resumed(store: Store) -> None:
    await add(store, make_job("a", queue="q"))
    await store.set_paused("q", True)
    assert (await store.stats()).paused == ["q"]
    assert await store.lease(1, 30.0) == []
    await store.set_paused("q", False)
    assert (await store.stats()).paused == []
    assert (await lease_one(store)).id == "a"


async def test_scheduled_job_is_leased_only_once_due(store: Store) -> None:
    run_at = time.time() + 0.3
    await add(store, make_job("later", status=JobStatus.SCHEDULED, run_at=run_at))
    assert await store.lease(1, 30.0) == []
    job = await lease_one(store, wait=5.0)
    assert job.id == "later"
    assert job.started_at is not None and job.started_at >= run_at


async def test_long_poll_returns_when_a_job_arrives(store: Store) -> None:
    started = time.monotonic()
    waiting = asyncio.create_task(store.lease(1, 30.0, wait=10.0))
    await asyncio.sleep(0)  # let the lease start waiting
    assert not waiting.done()
    await add(store, make_job("a"))
    [job] = await asyncio.wait_for(waiting, 5.0)
    assert job.id == "a"
    assert time.monotonic() - started < 5.0


async def test_empty_long_poll_gives_up_after_wait(store: Store) -> None:
    started = time.monotonic()
    assert await store.lease(1, 30.0, wait=0.1) == []
    assert time.monotonic() - started >= 0.09


# -- settling --------------------------------------------------------------
async def test_heartbeat_extends_the_lease(store: Store) -> None:
    await add(store, make_job("a"))
    job = await lease_one(store, 1.0)
    first = job.lease_expires_at
    extended = await store.heartbeat("a", job.lease_id or "", 60.0)
    assert extended.lease_expires_at is not None and first is not None
    assert extended.lease_expires_at > first + 50


async def test_complete_records_the_result(store: Store) -> None:
    await add(store, make_job("a"))
    job = await lease_one(store)
    done = await store.complete("a", job.lease_id or "", {"answer": 42})
    assert (done.status, done.result, done.lease_expires_at) == (JobStatus.COMPLETED, {"answer": 42}, None)
    assert done.finished_at is not None
    assert [a.outcome for a in done.history] == ["completed"]


async def test_a_completion_answers_the_job_as_stored(store: Store) -> None:
    await add(store, make_job("a", max_attempts=2), make_job("b"))
    first = await lease_one(store, worker="w1")
    await store.release("a", first.lease_id or "")  # a history entry before the run completed
    [a, b] = await store.lease(2, 30.0, worker="w2")
    answers = await store.settle_many(
        [Settlement("a", a.lease_id or "", {"n": 1.5}), Settlement("b", b.lease_id or "")]
    )
    for answer in answers:
        assert isinstance(answer, Job)
        stored = await store.get(answer.id)
        assert stored is not None and stored.to_dict() == answer.to_dict()
        assert (stored.lease_id, stored.worker) == (answer.lease_id, None)


async def test_complete_is_idempotent_for_the_same_lease_only(store: Store) -> None:
    await add(store, make_job("a"))
    job = await lease_one(store)
    lease_id = job.lease_id or ""
    first = await store.complete("a", lease_id, "first")
    again = await store.complete("a", lease_id, "second")  # a repeat after a lost answer
    assert (again.status, again.result, again.finished_at) == (JobStatus.COMPLETED, "first", first.finished_at)
    assert [a.outcome for a in again.history] == ["completed"]
    for other in ("not-a-lease", ""):
        with pytest.raises(StaleLease):
            await store.complete("a", other, "third")
    for verb in (store.fail("a", lease_id, "late"), store.release("a", lease_id), store.heartbeat("a", lease_id, 1)):
        with pytest.raises(StaleLease):  # only a repeated complete is answered; nothing else may touch it
            await verb


@pytest.mark.parametrize("verb", ["heartbeat", "complete", "fail", "release", "progress"])
async def test_a_stale_lease_changes_nothing(store: Store, verb: str) -> None:
    await add(store, make_job("a", max_attempts=3))
    first = await lease_one(store)
    old_lease = first.lease_id or ""
    await store.release("a", old_lease)
    current = await lease_one(store)
    snapshot = current.to_dict()
    calls = {
        "heartbeat": lambda lease: store.heartbeat("a", lease, 60.0),
        "complete": lambda lease: store.complete("a", lease, "late"),
        "fail": lambda lease: store.fail("a", lease, "late"),
        "release": lambda lease: store.release("a", lease),
        "progress": lambda lease: store.set_progress("a", lease, 0.5, None),
    }
    for lease in (old_lease, "not-a-lease"):
        with pytest.raises(StaleLease):
            await calls[verb](lease)
    after = await store.get("a")
    assert after is not None and after.to_dict() == snapshot
    assert after.lease_id == current.lease_id != old_lease


async def test_release_returns_the_job_to_pending_in_its_place(store: Store) -> None:
    await add(store, make_job("first"), make_job("second"))
    job = await lease_one(store)
    released = await store.release("first", job.lease_id or "")
    assert (released.status, released.attempts, released.lease_id) == (JobStatus.PENDING, 0, None)  # no attempt used
    assert released.history[-1].outcome == "released"
    assert (await lease_one(store)).id == "first"


async def test_fail_retries_with_backoff_then_ends_dead(make_store: MakeStore) -> None:
    policy = RetryPolicy(base=0.05, cap=0.05)
    store = await make_store(retry=policy)
    await add(store, make_job("a", max_attempts=3))
    for attempt in (1, 2):
        job = await lease_one(store, wait=5.0)
        assert job.attempts == attempt
        before = time.time()
        failed = await store.fail("a", job.lease_id or "", f"boom {attempt}")
        assert (failed.status, failed.error) == (JobStatus.RETRYING, f"boom {attempt}")
        assert failed.run_at is not None and before <= failed.run_at <= time.time() + policy.ceiling(attempt)
    job = await lease_one(store, wait=5.0)
    dead = await store.fail("a", job.lease_id or "", "boom 3")
    assert (dead.status, dead.attempts, dead.error) == (JobStatus.DEAD, 3, "boom 3")
    assert dead.finished_at is not None
    assert [a.outcome for a in dead.history] == ["failed", "failed", "failed"]
    assert await store.lease(1, 30.0, wait=0.1) == []


async def test_the_backoff_schedule_is_the_policy_s_jittered_exponential_draws(make_store: MakeStore) -> None:
    seed, policy = 1234, RetryPolicy(base=0.004, cap=0.016)
    store = await make_store(retry=replace(policy, rng=random.Random(seed)))
    await add(store, make_job("a", max_attempts=5))
    delays = []
    for attempt in range(1, 5):
        job = await lease_one(store, wait=5.0)
        assert job.attempts == attempt
        failed = await store.fail("a", job.lease_id or "", f"boom {attempt}")
        assert failed.status is JobStatus.RETRYING and failed.run_at is not None
        delays.append(failed.run_at - (failed.history[-1].finished_at or 0.0))
    expected_rng = random.Random(seed)
    ceilings = [policy.ceiling(n) for n in range(1, 5)]
    assert ceilings == [0.004, 0.008, 0.016, 0.016]  # doubling, then capped
    assert delays == pytest.approx([expected_rng.uniform(0.0, c) for c in ceilings], abs=1e-6)
    assert len(set(delays)) == 4  # jittered: no two the same


async def test_retry_waits_within_the_jittered_ceiling(make_store: MakeStore) -> None:
    store = await make_store(retry=RetryPolicy(base=20.0, cap=20.0))
    await add(store, make_job("a", max_attempts=2))
    job = await lease_one(store)
    before = time.time()
    failed = await store.fail("a", job.lease_id or "", "boom")
    assert failed.status is JobStatus.RETRYING
    assert failed.run_at is not None and before <= failed.run_at <= time.time() + 20.0
    if failed.run_at > time.time():  # (a draw of ~0s would make it due at once)
        assert await store.lease(1, 30.0) == []


async def test_fail_with_retry_in_overrides_the_policy(make_store: MakeStore) -> None:
    store = await make_store(retry=RetryPolicy(base=300.0, cap=300.0))
    await add(store, make_job("a", max_attempts=2))
    job = await lease_one(store)
    await store.fail("a", job.lease_id or "", "later", retry_in=0.0, outcome="retry")
    again = await lease_one(store, wait=5.0)
    assert (again.id, again.attempts, again.history[0].outcome) == ("a", 2, "retry")


async def test_fail_with_a_single_attempt_is_failed(store: Store) -> None:
    await add(store, make_job("a"))
    job = await lease_one(store)
    failed = await store.fail("a", job.lease_id or "", "boom")
    assert (failed.status, failed.error, failed.run_at) == (JobStatus.FAILED, "boom", None)


# -- operators -------------------------------------------------------------
async def test_cancel_waiting_jobs(store: Store) -> None:
    await add(store, make_job("now"), make_job("later", status=JobStatus.SCHEDULED, run_at=time.time() + 0.1))
    for job_id in ("now", "later"):
        cancelled = await store.cancel(job_id)
        assert cancelled.status is JobStatus.CANCELLED and cancelled.finished_at is not None
    assert await store.lease(2, 30.0, wait=0.3) == []
    assert (await store.stats()).by_status == {"cancelled": 2}


async def test_cancel_a_running_job_voids_its_lease(store: Store) -> None:
    await add(store, make_job("a"))
    lease_id = (await lease_one(store)).lease_id or ""  # as the worker holds it (the job object changes)
    cancelled = await store.cancel("a")
    assert cancelled.status is JobStatus.CANCELLED
    assert cancelled.history[-1].outcome == "cancelled"
    for verb in (store.complete("a", lease_id, None), store.fail("a", lease_id, "late"), store.release("a", lease_id)):
        with pytest.raises(StaleLease):
            await verb
    assert (await store.get("a")).status is JobStatus.CANCELLED  # type: ignore[union-attr]


async def test_cancel_a_finished_job_is_refused(store: Store) -> None:
    await add(store, make_job("a"))
    job = await lease_one(store)
    await store.complete("a", job.lease_id or "", None)
    with pytest.raises(InvalidTransition):
        await store.cancel("a")
    with pytest.raises(JobNotFound):
        await store.cancel("missing")
    assert (await store.get("a")).status is JobStatus.COMPLETED  # type: ignore[union-attr]


async def test_requeue_a_dead_job(store: Store) -> None:
    await add(store, make_job("a", max_attempts=2))
    for _ in range(2):
        job = await lease_one(store, wait=5.0)
        await store.fail("a", job.lease_id or "", "boom", retry_in=0.0)
    assert (await store.get("a")).status is JobStatus.DEAD  # type: ignore[union-attr]
    requeued = await store.requeue("a")
    assert (requeued.status, requeued.attempts, requeued.error, len(requeued.history)) == (
        JobStatus.PENDING,
        0,
        None,
        2,
    )
    assert (await lease_one(store)).attempts == 1
    with pytest.raises(InvalidTransition):
        await store.requeue("a")


async def test_run_a_scheduled_job_now(store: Store) -> None:
    later = time.time() + 3600
    await add(store, make_job("later", status=JobStatus.SCHEDULED, run_at=later), make_job("waiting"))
    ran = await store.run_now("later")
    assert (ran.status, ran.run_at, ran.next_run_at) == (JobStatus.PENDING, None, None)
    assert {job.id for job in await store.lease(2, 30.0, wait=1.0)} == {"later", "waiting"}
    for job_id in ("later", "missing"):  # running now, and unknown
        with pytest.raises(InvalidTransition if job_id == "later" else JobNotFound):
            await store.run_now(job_id)
    assert await store.promote_due() == 0  # its timer entry is gone, or stands for nothing


async def test_give_up_a_retrying_job(make_store: MakeStore) -> None:
    clock = FakeClock()
    store = await make_store(clock=clock)
    await add(store, make_job("a", max_attempts=3), make_job("b"))
    job = await lease_one(store)
    retrying = await store.fail(job.id, job.lease_id or "", "boom", retry_in=60.0)
    assert retrying.status is JobStatus.RETRYING
    dead = await store.give_up(job.id, "killed by hand")
    assert (dead.status, dead.error, dead.finished_at, dead.run_at) == (JobStatus.DEAD, "killed by hand", clock(), None)
    assert (await store.get(job.id)) == dead
    clock.advance(120.0)
    assert await store.promote_due() == 0  # it never runs again
    other = "b" if job.id == "a" else "a"
    with pytest.raises(InvalidTransition):  # pending: not given up by hand
        await store.give_up(other, "no")
    running = await lease_one(store)
    with pytest.raises(InvalidTransition):  # running: nor that
        await store.give_up(running.id, "no")
    assert (await store.get(running.id)).status is JobStatus.PROCESSING  # type: ignore[union-attr]
    assert (await store.requeue(job.id)).status is JobStatus.PENDING  # a dead job can be re-run


# -- nodes ---------------------------------------------------------------
async def test_a_nodes_card_is_kept_until_it_lapses_or_is_withdrawn(make_store: MakeStore) -> None:
    clock = FakeClock()
    store = await make_store(clock=clock)
    assert await store.nodes() == []
    await store.announce({"id": store.node, "workers": {"busy": 1}}, 15.0)
    assert await store.nodes() == [{"id": store.node, "workers": {"busy": 1}, "seen_at": clock.now}]
    clock.advance(10.0)
    await store.announce({"id": store.node, "workers": {"busy": 2}}, 15.0)  # replaces the card, and its lapse
    clock.advance(10.0)
    [card] = await store.nodes()
    assert card["workers"] == {"busy": 2} and card["seen_at"] == clock.now - 10.0
    clock.advance(5.0)  # 15 s after it was written: lapsed
    assert await store.nodes() == []
    await store.announce({"id": store.node}, 15.0)
    await store.withdraw()
    assert await store.nodes() == []


# -- unique keys -----------------------------------------------------------
def unique_job(job_id: str, key: str, scope: str = "active", until: float | None = None) -> Job:
    return make_job(job_id, unique_key=key, unique_scope=scope, unique_until=until)


async def test_a_unique_key_is_held_while_its_job_is_in_scope(store: Store) -> None:
    [first] = await store.add([unique_job("a", "k")])
    assert (first.created, first.duplicate) == (True, False)
    [again] = await store.add([unique_job("b", "k")])
    assert (again.job.id, again.created, again.duplicate) == ("a", False, True)
    assert await store.get("b") is None
    leased = await lease_one(store)
    [running] = await store.add([unique_job("c", "k")])  # active: held while it runs too
    assert running.duplicate and running.job.id == "a"
    await store.complete("a", leased.lease_id or "", None)
    [after] = await store.add([unique_job("d", "k", scope="waiting")])  # finished: the key is free
    assert after.created
    await lease_one(store)  # d starts: with scope "waiting", it no longer holds the key
    [next_one] = await store.add([unique_job("e", "k")])
    assert next_one.created
    [replay] = await store.add([unique_job("e", "k")])  # its own id again: a replay, not a duplicate
    assert (replay.created, replay.duplicate) == (False, False)


async def test_a_unique_key_held_for_a_window_in_any_state(make_store: MakeStore) -> None:
    clock = FakeClock()
    store = await make_store(clock=clock)
    await add(store, unique_job("w1", "nightly", scope="any", until=clock.now + 10))
    leased = await lease_one(store)
    await store.complete("w1", leased.lease_id or "", None)
    [finished] = await store.add([unique_job("w2", "nightly")])
    assert finished.duplicate and finished.job.id == "w1"  # finished, but its window is not over
    clock.advance(10)
    [later] = await store.add([unique_job("w3", "nightly")])
    assert later.created


async def test_an_older_job_re_run_by_hand_holds_its_key_again(store: Store) -> None:
    await add(store, unique_job("c", "nightly"))
    leased = await lease_one(store)
    await store.fail("c", leased.lease_id or "", "boom")  # failed: the key is free
    await add(store, unique_job("d", "nightly"))
    done = await lease_one(store)
    await store.complete("d", done.lease_id or "", None)
    await store.requeue("c")  # re-run by hand: pending again, so it holds the key again
    [duplicate] = await store.add([unique_job("e", "nightly")])
    assert (duplicate.duplicate, duplicate.job.id) == (True, "c")


async def test_duplicates_within_one_call_and_a_deleted_holder(store: Store) -> None:
    outcomes = await store.add([unique_job("x1", "same"), unique_job("x2", "same"), make_job("plain")])
    assert [(o.job.id, o.created, o.duplicate) for o in outcomes if isinstance(o, Added)] == [
        ("x1", True, False),
        ("x1", False, True),
        ("plain", True, False),
    ]
    await store.delete("x1")
    [freed] = await store.add([unique_job("x3", "same")])
    assert freed.created


# -- schedules -------------------------------------------------------------
async def test_a_schedule_keeps_its_fired_tick_across_redefinitions_and_only_moves_it_forward(store: Store) -> None:
    assert await store.schedules() == []
    await store.put_schedule("nightly", {"cron": "0 3 * * *", "job": {"type": "report"}})
    assert await store.put_schedule("often", {"every": 5}, new=True) is True
    assert await store.put_schedule("often", {"every": 9}, new=True) is False  # taken: nothing changes
    assert await store.schedules() == [
        StoredSchedule("nightly", {"cron": "0 3 * * *", "job": {"type": "report"}}, None),
        StoredSchedule("often", {"every": 5}, None),
    ]
    await store.fired("nightly", 1_790_000_000.25)
    await store.fired("nightly", 1_789_999_000.0)  # an older tick, noted late by another node: ignored
    await store.fired("nobody", 1.0)  # no such schedule: nothing
    await store.put_schedule("nightly", {"cron": "0 4 * * *", "job": {"type": "report"}})
    nightly, _ = await store.schedules()
    assert nightly == StoredSchedule("nightly", {"cron": "0 4 * * *", "job": {"type": "report"}}, 1_790_000_000.25)
    assert await store.delete_schedule("nightly") is True
    assert await store.delete_schedule("nightly") is False
    assert [schedule.name for schedule in await store.schedules()] == ["often"]
    await store.put_schedule("nightly", {"cron": "0 3 * * *"})  # a new schedule of the old name starts afresh
    assert (await store.schedules())[0].fired is None


# -- housekeeping ----------------------------------------------------------
async def test_a_lapsed_lease_re_delivers_the_job_without_using_an_attempt(make_store: MakeStore) -> None:
    clock = FakeClock()
    store = await make_store(clock=clock)
    await add(store, make_job("once"), make_job("alive"))
    lapsing = await lease_one(store, 10.0)
    await lease_one(store, 60.0)
    clock.advance(10.0)
    [expired] = await store.expire_leases()
    assert (expired.id, expired.status, expired.attempts, expired.lease_id) == ("once", JobStatus.PENDING, 0, None)
    assert [(a.outcome, a.finished_at) for a in expired.history] == [("lease-expired", clock.now)]
    assert (await store.get("alive")).status is JobStatus.PROCESSING  # type: ignore[union-attr]
    assert await store.expire_leases() == []
    again = await lease_one(store, 10.0)  # the idle worker gets it, as a fresh attempt
    assert (again.id, again.attempts, len(again.history)) == ("once", 1, 2)
    assert again.lease_id != lapsing.lease_id
    with pytest.raises(StaleLease):  # the lost worker's late answer changes nothing
        await store.complete("once", lapsing.lease_id or "", "late")
    done = await store.complete("once", again.lease_id or "", "ok")
    assert (done.status, done.result, done.attempts) == (JobStatus.COMPLETED, "ok", 1)


async def test_a_job_lost_max_lost_runs_times_in_a_row_is_dead(make_store: MakeStore) -> None:
    clock = FakeClock()
    store = await make_store(clock=clock, max_lost_runs=3)
    await add(store, make_job("poison", max_attempts=5))
    for expected in (JobStatus.PENDING, JobStatus.PENDING, JobStatus.DEAD):
        await lease_one(store, 5.0)
        clock.advance(5.0)
        [job] = await store.expire_leases()
        assert job.status is expected
    assert job.attempts == 0  # lost runs used none of its five attempts
    assert [a.outcome for a in job.history] == ["lease-expired"] * 3
    assert job.error is not None and "lost 3 runs in a row" in job.error
    assert job.finished_at == clock.now


async def test_a_failed_run_breaks_a_row_of_lost_runs(make_store: MakeStore) -> None:
    clock = FakeClock()
    store = await make_store(clock=clock, max_lost_runs=2)
    await add(store, make_job("flaky", max_attempts=3))
    await lease_one(store, 5.0)
    clock.advance(5.0)
    await store.expire_leases()
    job = await lease_one(store, 5.0)
    await store.fail("flaky", job.lease_id or "", "boom", retry_in=0.0)  # a real failure: not lost
    clock.advance(1.0)
    await lease_one(store, 5.0)
    clock.advance(5.0)
    [job] = await store.expire_leases()
    assert job.status is JobStatus.PENDING  # one lost run in a row, not two
    assert [a.outcome for a in job.history] == ["lease-expired", "failed", "lease-expired"]


async def test_an_undelivered_lease_goes_back_at_once_and_counts_as_lost(make_store: MakeStore) -> None:
    store = await make_store(max_lost_runs=2)
    await add(store, make_job("a"))
    job = await lease_one(store)
    back = await store.release("a", job.lease_id or "", "undelivered")
    assert (back.status, back.attempts, back.history[-1].outcome) == (JobStatus.PENDING, 0, "undelivered")
    job = await lease_one(store)
    dead = await store.release("a", job.lease_id or "", "undelivered")
    assert dead.status is JobStatus.DEAD


async def finish(store: Store, *job_ids: str) -> None:
    for job_id in job_ids:
        job = await lease_one(store)
        assert job.id == job_id
        await store.complete(job_id, job.lease_id or "", None)


async def test_purge_keeps_the_newest_max_count(make_store: MakeStore) -> None:
    store = await make_store(retention=Retention(max_count=2))
    await add(store, *(make_job(f"j{i}") for i in range(5)))
    await finish(store, "j0", "j1", "j2", "j3")
    assert await store.purge() == 2
    assert [await store.get(f"j{i}") is not None for i in range(5)] == [False, False, True, True, True]
    assert await store.purge() == 0


async def test_purge_drops_jobs_older_than_max_age(make_store: MakeStore) -> None:
    store = await make_store(retention=Retention(max_age=0.3))
    await add(store, make_job("old"), make_job("waiting"))
    await finish(store, "old")
    assert await store.purge() == 0  # not old enough yet
    deadline = time.monotonic() + 5.0
    while (purged := await store.purge()) == 0:
        assert time.monotonic() < deadline, "the finished job was never purged"
        await asyncio.sleep(0.05)
    assert purged == 1
    assert await store.get("old") is None
    assert await store.get("waiting") is not None


async def test_purge_counts_a_rerun_job_by_its_last_finish(make_store: MakeStore) -> None:
    store = await make_store(retention=Retention(max_count=1))
    await add(store, make_job("rerun"), make_job("other"))
    job = await lease_one(store)
    await store.fail("rerun", job.lease_id or "", "boom")
    await finish(store, "other")
    await store.requeue("rerun")
    await finish(store, "rerun")  # now the newest finished job
    assert await store.purge() == 1
    assert await store.get("other") is None
    assert (await store.get("rerun")).status is JobStatus.COMPLETED  # type: ignore[union-attr]


async def test_list_jobs_newest_first_with_stable_cursor(store: Store) -> None:
    await add(store, *(make_job(f"j{i}") for i in range(7)))
    first, cursor = await store.list_jobs(limit=3)
    assert [j.id for j in first] == ["j6", "j5", "j4"] and cursor
    await add(store, make_job("newer"))  # arrives between pages: does not shift them
    second, cursor = await store.list_jobs(limit=3, cursor=cursor)
    assert [j.id for j in second] == ["j3", "j2", "j1"] and cursor
    third, cursor = await store.list_jobs(limit=3, cursor=cursor)
    assert [j.id for j in third] == ["j0"] and cursor is None


async def test_list_jobs_filters(store: Store) -> None:
    await add(store, make_job("a", queue="q1"), make_job("b", queue="q2", type="other"), make_job("c", queue="q1"))
    await finish(store, "a")
    assert [j.id for j in (await store.list_jobs(queue="q1"))[0]] == ["c", "a"]
    assert [j.id for j in (await store.list_jobs(job_type="other"))[0]] == ["b"]
    assert [j.id for j in (await store.list_jobs(status=JobStatus.COMPLETED))[0]] == ["a"]
    assert (await store.list_jobs(queue="q1", status=JobStatus.FAILED))[0] == []


async def test_list_jobs_of_one_owner_fills_its_pages(store: Store) -> None:
    jobs = [make_job(f"j{i}") for i in range(9)]
    for index, job in enumerate(jobs):
        job.owner = "alice" if index % 3 == 0 else "bob"  # alice's are sparse: j0, j3, j6
    await add(store, *jobs)
    page, cursor = await store.list_jobs(owner="alice", limit=2)
    assert [j.id for j in page] == ["j6", "j3"] and cursor
    page, cursor = await store.list_jobs(owner="alice", limit=2, cursor=cursor)
    assert [j.id for j in page] == ["j0"] and cursor is None


async def test_a_selective_listing_reads_a_bounded_stretch_per_page(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory, "MAX_SCANNED", 4)
    jobs = [make_job(f"j{i}") for i in range(10)]
    jobs[1].owner = jobs[8].owner = "alice"
    await add(store, *jobs)
    seen, cursor, pages = [], None, 0
    while True:
        page, cursor = await store.list_jobs(owner="alice", limit=5, cursor=cursor)
        seen += [job.id for job in page]
        pages += 1
        if cursor is None:
            break
    assert seen == ["j8", "j1"]  # every match, newest first, over pages that may hold fewer than limit
    assert pages == 3  # 10 jobs, at most 4 read per page


async def test_clear_deletes_only_waiting_jobs(store: Store) -> None:
    soon = time.time() + 0.2
    await add(store, make_job("done", queue="q"), make_job("running", queue="q"))
    await finish(store, "done")
    await lease_one(store)
    await add(store, make_job("p", queue="q"), make_job("s", queue="q", status=JobStatus.SCHEDULED, run_at=soon))
    await add(store, make_job("other", queue="keep"))
    assert await store.clear("q") == 2
    assert await store.get("p") is None and await store.get("s") is None
    assert (await store.get("running")) is not None and (await store.get("done")) is not None
    assert [job.id for job in await store.lease(5, 30.0)] == ["other"]
    assert await store.lease(5, 30.0, wait=0.5) == []  # past the cleared job's run_at: it must not come back
    assert time.time() > soon
    stats = await store.stats()
    assert stats.by_queue["q"] == {"completed": 1, "processing": 1}
    await add(store, make_job("p", queue="q"))  # a cleared id can be used again


async def test_logs_and_progress(store: Store) -> None:
    await add(store, make_job("a"))
    await store.append_log("a", "one")
    await store.append_log("a", "two")
    assert [line["message"] for line in await store.logs("a")] == ["one", "two"]
    with pytest.raises(JobNotFound):
        await store.append_log("missing", "x")
    with pytest.raises(JobNotFound):
        await store.logs("missing")
    job = await lease_one(store)
    await store.set_progress("a", job.lease_id, 0.25, "a quarter")
    await store.set_progress("a", job.lease_id, 0.5, "half")
    got = await store.get("a")
    assert got is not None and (got.progress, got.progress_note) == (0.5, "half")
    await store.set_progress("a", job.lease_id, 7.0, None)
    assert (await store.get("a")).progress == 1.0  # type: ignore[union-attr]


async def test_stats_counts_by_status_and_queue(store: Store) -> None:
    await add(store, make_job("a"), make_job("b"), make_job("c", queue="q"))
    await add(store, make_job("d", status=JobStatus.SCHEDULED, run_at=time.time() + 60))
    await finish(store, "a")
    await lease_one(store)
    stats = await store.stats()
    assert stats.by_status == {"completed": 1, "processing": 1, "pending": 1, "scheduled": 1}
    assert stats.by_queue == {"default": {"completed": 1, "processing": 1, "scheduled": 1}, "q": {"pending": 1}}
    assert stats.waiting == 2


async def test_a_log_line_with_a_lease_needs_the_current_one(store: Store) -> None:
    await add(store, make_job("a"))
    job = await lease_one(store)
    await store.append_log("a", "mine", job.lease_id)
    with pytest.raises(StaleLease):
        await store.append_log("a", "not mine", "someone-else")
    assert [line["message"] for line in await store.logs("a")] == ["mine"]


# -- the seam's promises -----------------------------------------------------
async def test_every_job_a_store_returns_is_a_snapshot(store: Store) -> None:
    [added] = await add(store, make_job("a", payload={"n": 1}))
    added.priority = 99  # the answer is a copy
    got = await store.get("a")
    assert got is not None and (got.status, got.priority) == (JobStatus.PENDING, 0)
    got.queue = "elsewhere"
    [leased] = await store.lease(1, 30.0)
    leased.status = JobStatus.COMPLETED
    leased.history.clear()
    leased.attempts = 7
    again = await store.get("a")
    assert again is not None
    assert (again.queue, again.status, again.attempts, len(again.history)) == ("default", JobStatus.PROCESSING, 1, 1)
    [listed], _ = await store.list_jobs()
    listed.lease_id = "forged"
    with pytest.raises(StaleLease):
        await store.complete("a", "forged", None)
    done = await store.complete("a", leased.lease_id or "", "ok")
    done.result = "changed"
    assert (await store.get("a")).result == "ok"  # type: ignore[union-attr]


async def test_subscribers_get_each_status_change_in_order_once_durable(store: Store) -> None:
    events: list[tuple[str, str, str]] = []
    unsubscribe = store.subscribe(lambda e: events.append((e.job.id, e.before.value, e.job.status.value)))
    await add(store, make_job("a"), make_job("b", max_attempts=2))
    [a, b] = await store.lease(2, 30.0)
    await store.complete("a", a.lease_id or "", 1)
    await store.fail("b", b.lease_id or "", "boom", retry_in=60.0)
    await store.cancel("b")
    assert events == [
        ("a", "pending", "processing"),
        ("b", "pending", "processing"),
        ("a", "processing", "completed"),
        ("b", "processing", "retrying"),
        ("b", "retrying", "cancelled"),
    ]
    unsubscribe()
    await add(store, make_job("c"))
    await store.cancel("c")
    assert len(events) == 5


async def test_an_event_carries_the_job_as_it_was_when_it_changed(store: Store) -> None:
    seen: list[Job] = []
    store.subscribe(lambda e: seen.append(e.job))
    await add(store, make_job("a"))
    job = await lease_one(store)
    await store.complete("a", job.lease_id or "", {"v": 1})
    processing, completed = seen
    assert (processing.status, processing.result) == (JobStatus.PROCESSING, None)
    assert (completed.status, completed.result) == (JobStatus.COMPLETED, {"v": 1})


async def test_settle_many_answers_each_settlement_in_one_call(make_store: MakeStore) -> None:
    store = await make_store(retry=RetryPolicy(base=10.0, cap=10.0))
    await add(store, make_job("ok"), make_job("bad", max_attempts=2), make_job("late"), make_job("again"))
    leased = {job.id: job.lease_id or "" for job in await store.lease(4, 30.0)}
    await store.complete("again", leased["again"], "first")
    answers = await store.settle_many(
        [
            Settlement("ok", leased["ok"], {"done": True}),
            Settlement("bad", leased["bad"], error="boom", traceback="Traceback ...\nValueError: boom"),
            Settlement("late", "not-its-lease", "x"),
            Settlement("again", leased["again"], "second"),  # a repeated complete: the first result stands
            Settlement("missing", "x", None),
        ]
    )
    ok, bad, late, again, missing = answers
    assert isinstance(ok, Job) and (ok.status, ok.result) == (JobStatus.COMPLETED, {"done": True})
    assert isinstance(bad, Job) and bad.status is JobStatus.RETRYING
    assert bad.history[-1].traceback == "Traceback ...\nValueError: boom"
    assert isinstance(late, StaleLease)
    assert isinstance(again, Job) and again.result == "first"
    assert isinstance(missing, JobNotFound)
    assert (await store.get("late")).status is JobStatus.PROCESSING  # type: ignore[union-attr]


async def test_heartbeat_many_extends_the_current_leases_only(make_store: MakeStore) -> None:
    clock = FakeClock()
    store = await make_store(clock=clock)
    await add(store, make_job("a"), make_job("b"))
    leased = {job.id: job.lease_id or "" for job in await store.lease(2, 10.0)}
    clock.advance(5.0)
    a, stale = await store.heartbeat_many([("a", leased["a"]), ("b", "stale")], 10.0)
    assert isinstance(a, Job) and a.lease_expires_at == clock.now + 10.0
    assert isinstance(stale, StaleLease)
    clock.advance(6.0)
    assert [job.id for job in await store.expire_leases()] == ["b"]


async def test_housekeeping_promotes_due_jobs_with_nobody_leasing(make_store: MakeStore) -> None:
    clock = FakeClock()
    store = await make_store(clock=clock)
    await add(store, make_job("later", status=JobStatus.SCHEDULED, run_at=clock.now + 30.0))
    assert (await store.housekeep()).promoted == 0
    clock.advance(30.0)
    done = await store.housekeep()
    assert (done.promoted, done.expired, done.purged) == (1, [], 0)
    later = await store.get("later")
    assert later is not None and later.status is JobStatus.PENDING
    assert (await store.stats()).next_ready_since == {"default": clock.now}


async def test_housekeeping_purges_by_age_on_the_store_clock(make_store: MakeStore) -> None:
    clock = FakeClock()
    store = await make_store(clock=clock, retention=Retention(max_age=60.0))
    await add(store, make_job("old"))
    await finish(store, "old")
    clock.advance(59.0)
    assert (await store.housekeep()).purged == 0
    clock.advance(2.0)
    assert (await store.housekeep()).purged == 1
    assert await store.get("old") is None


async def test_lease_takes_only_the_wanted_job_types_in_order(store: Store) -> None:
    await add(store, make_job("t1", type="resize"), make_job("m1", type="mail"), make_job("t2", type="resize"))
    await add(store, make_job("m2", type="mail", priority=5))
    taken = await store.lease(10, 30.0, types=["mail"])
    assert [job.id for job in taken] == ["m2", "m1"]  # priority, then FIFO, within the wanted types
    assert await store.lease(10, 30.0, types=["video"]) == []
    assert [job.id for job in await store.lease(10, 30.0)] == ["t1", "t2"]


async def test_lease_ids_are_unguessable(store: Store) -> None:
    await add(store, *(make_job(f"j{i}") for i in range(20)))
    ids = [job.lease_id or "" for job in await store.lease(20, 30.0)]
    assert len(set(ids)) == 20
    assert all(len(lease_id) >= 24 for lease_id in ids)  # 96 random bits or more
    assert len({lease_id[:8] for lease_id in ids}) == 20  # no shared prefix and counter


@pytest.mark.parametrize("make_store", IN_MEMORY, indirect=True)
async def test_cancelled_and_cleared_scheduled_jobs_leave_nothing_behind(make_store: MakeStore) -> None:
    store = await make_store()
    later = time.time() + 3600
    jobs = [make_job(f"s{i}", queue=f"q{i % 3}", status=JobStatus.SCHEDULED, run_at=later) for i in range(3000)]
    await store.add(jobs)
    for job in jobs[:1000]:
        await store.cancel(job.id)
    assert await store.clear("q1") == len([j for j in jobs[1000:] if j.queue == "q1"])
    assert isinstance(store, memory.MemoryStore)  # check what the in-memory index holds
    live = {job.id for _, _, job in store._deferred}
    assert len(store._deferred) == len(live)  # rebuilt once mostly stale: no cancelled payload kept
    assert all(job.queue != "q1" and job.status is JobStatus.SCHEDULED for _, _, job in store._deferred)


DURABLE = [backend for backend in BACKENDS if backend != "memory"]  # backends a second store instance can open


@pytest.mark.parametrize("backend", DURABLE)
async def test_a_second_store_on_the_same_data_sees_every_answered_change(backend: str, tmp_path: Path) -> None:
    url = store_url(backend, tmp_path)
    first = open_store(url)
    await first.open()
    await add(first, make_job("done"), make_job("failed"), make_job("running"), make_job("waiting"))
    leased = {job.id: job.lease_id or "" for job in await first.lease(3, 60.0)}
    await first.complete("done", leased["done"], {"ok": True})
    await first.fail("failed", leased["failed"], "boom", traceback="Traceback\nValueError: boom")
    await first.put_schedule("hourly", {"cron": "0 * * * *"})
    await add(first, unique_job("held", "report-2026-12", scope="any"))
    await first.fired("hourly", 1_790_000_000.5)
    await first.close()  # as if this process had stopped: what it answered must be in the store
    second = open_store(url)
    await second.open()
    try:
        done, failed, running, waiting = [
            await second.get(job_id) for job_id in ("done", "failed", "running", "waiting")
        ]
        assert done is not None and (done.status, done.result) == (JobStatus.COMPLETED, {"ok": True})
        assert failed is not None and failed.status is JobStatus.FAILED
        assert failed.history[-1].traceback == "Traceback\nValueError: boom"
        assert running is not None and running.status is JobStatus.PENDING  # its run was lost with the process
        assert [a.outcome for a in running.history] == ["recovered"] and running.attempts == 0
        assert waiting is not None and waiting.status is JobStatus.PENDING and waiting.history == []
        assert await second.schedules() == [StoredSchedule("hourly", {"cron": "0 * * * *"}, 1_790_000_000.5)]
        [duplicate] = await second.add([unique_job("again", "report-2026-12")])  # the key is still held
        assert duplicate.duplicate and duplicate.job.id == "held" and duplicate.job.unique_scope == "any"
    finally:
        await second.close()


async def test_a_job_given_up_for_lost_runs_and_re_run_by_hand_starts_a_new_row(make_store: MakeStore) -> None:
    clock = FakeClock()
    store = await make_store(clock=clock, max_lost_runs=2)
    await add(store, make_job("a"))
    for _ in range(2):
        await lease_one(store, 5.0)
        clock.advance(5.0)
        [job] = await store.expire_leases()
    assert job.status is JobStatus.DEAD
    await store.requeue("a")
    await lease_one(store, 5.0)
    clock.advance(5.0)
    [job] = await store.expire_leases()
    assert job.status is JobStatus.PENDING  # one lost run since the re-run, not three


async def test_delete_removes_a_job_that_is_not_running(store: Store) -> None:
    await add(
        store,
        make_job("waiting"),
        make_job("running"),
        make_job("later", status=JobStatus.SCHEDULED, run_at=time.time() + 60),
    )
    await store.append_log("waiting", "a line")
    [running] = await store.lease(1, 30.0, queues=["default"])
    assert running.id == "waiting"  # the oldest pending job
    with pytest.raises(InvalidTransition):
        await store.delete("waiting")  # running now: cancel it first
    deleted = await store.delete("running")
    assert deleted.status is JobStatus.PENDING and await store.get("running") is None
    await store.delete("later")
    assert (await store.stats()).by_status == {"processing": 1}
    assert await store.lease(5, 30.0) == []  # nothing deleted is ever leased
    with pytest.raises(JobNotFound):
        await store.delete("running")
    await store.cancel("waiting")
    await store.delete("waiting")
    with pytest.raises(JobNotFound):
        await store.logs("waiting")


async def test_peek_shows_the_next_job_without_leasing_it(store: Store) -> None:
    assert await store.peek("default") is None
    await add(store, make_job("low"), make_job("high", priority=5), make_job("other", queue="q"))
    peeked = await store.peek("default")
    assert peeked is not None and (peeked.id, peeked.status) == ("high", JobStatus.PENDING)
    [leased] = await store.lease(1, 30.0, queues=["default"])
    assert leased.id == "high"
    await store.set_paused("default", True)
    assert (await store.peek("default")).id == "low"  # type: ignore[union-attr]


async def test_cancel_waiting_cancels_a_waiting_job_and_never_a_running_one(store: Store) -> None:
    await add(store, make_job("waits"), make_job("runs", priority=5))
    running = await lease_one(store)
    assert running.id == "runs"
    with pytest.raises(InvalidTransition):
        await store.cancel_waiting("runs")
    assert (await store.cancel_waiting("waits")).status is JobStatus.CANCELLED
    stored = await store.get("runs")
    assert stored is not None and stored.status is JobStatus.PROCESSING
    with pytest.raises(JobNotFound):
        await store.cancel_waiting("nobody")
