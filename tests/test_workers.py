"""The worker pool: real concurrency, failure isolation, timeouts, cancellation, retries."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time

import pytest
from aiohttp.test_utils import TestClient

from jobq import workers
from jobq.api import SERVICE
from jobq.errors import StoreUnavailable
from jobq.handlers import JobContext, Registry, ThreadJobContext
from jobq.job import Job
from jobq.retry import Retry
from jobq.values import MAX_LOG_CHARS
from tests.conftest import TEST_CONFIG, FakeClock, MakeClient, wait_for_status


class Gate:
    """Handlers that block until released, counting how many are inside at once."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.inside = 0
        self.peak = 0
        self.all_inside = asyncio.Event()
        self.release = asyncio.Event()

    async def handler(self, ctx: JobContext) -> int:
        self.inside += 1
        self.peak = max(self.peak, self.inside)
        if self.inside >= self.expected:
            self.all_inside.set()
        try:
            await self.release.wait()
        finally:
            self.inside -= 1
        return self.peak


async def enqueue(client: TestClient, job_type: str, **fields: object) -> str:
    response = await client.post("/enqueue", json={"type": job_type, **fields})
    assert response.status == 202, await response.text()
    return (await response.json())["id"]


async def test_n_workers_run_n_jobs_at_once(registry: Registry, make_client: MakeClient) -> None:
    gate = Gate(expected=4)
    registry.register("gate")(gate.handler)
    client = await make_client(workers=4)
    ids = [await enqueue(client, "gate") for _ in range(6)]
    await asyncio.wait_for(gate.all_inside.wait(), timeout=5)
    stats = await (await client.get("/stats")).json()
    assert stats["workers"]["busy"] == 4
    assert stats["jobs"]["processing"] + stats["jobs"]["pending"] == 6
    gate.release.set()
    for job_id in ids:
        await wait_for_status(client, job_id, "completed")
    assert gate.peak == 4  # never more than the pool size


async def test_a_blocked_job_does_not_stop_the_others(registry: Registry, make_client: MakeClient) -> None:
    gate = Gate(expected=1)
    registry.register("gate")(gate.handler)
    client = await make_client(workers=2)
    blocked = await enqueue(client, "gate")
    await asyncio.wait_for(gate.all_inside.wait(), timeout=5)
    others = [await enqueue(client, t) for t in ("fail", "noop", "echo", "fail", "noop")]
    finals = [(await wait_for_status(client, job_id, "completed", "failed"))["status"] for job_id in others]
    assert finals == ["failed", "completed", "completed", "failed", "completed"]
    assert (await (await client.get(f"/status/{blocked}")).json())["status"] == "processing"
    gate.release.set()
    await wait_for_status(client, blocked, "completed")


async def test_timed_out_handler_fails_and_frees_its_worker(registry: Registry, make_client: MakeClient) -> None:
    never = asyncio.Event()

    async def hang(ctx: JobContext) -> None:
        await never.wait()

    registry.register("hang")(hang)
    client = await make_client(workers=1)
    hung = await enqueue(client, "hang", timeout=0.05)
    after = await enqueue(client, "echo", payload={"next": True})
    job = await wait_for_status(client, hung, "failed")
    assert job["error"] == "timed out after 0.05s"
    assert job["history"][0]["outcome"] == "timeout"
    assert (await wait_for_status(client, after, "completed"))["result"] == {"next": True}


@pytest.mark.parametrize("timeout", [None, 30.0], ids=["no-timeout", "with-timeout"])
async def test_cancel_running_job_cancels_its_handler(
    registry: Registry, make_client: MakeClient, timeout: float | None
) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def long_task(ctx: JobContext) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    registry.register("long")(long_task)
    client = await make_client(workers=1)
    job_id = await enqueue(client, "long", timeout=timeout)
    await asyncio.wait_for(started.wait(), timeout=5)
    response = await client.post(f"/jobs/{job_id}/cancel")
    assert (await response.json())["status"] == "cancelled"
    await asyncio.wait_for(cancelled.wait(), timeout=5)
    job = await wait_for_status(client, job_id, "cancelled")
    assert job["history"][0]["outcome"] == "cancelled"
    next_id = await enqueue(client, "noop")  # the worker is free again
    await wait_for_status(client, next_id, "completed")


async def test_retry_request_and_failures_end_dead_after_max_attempts(
    registry: Registry, make_client: MakeClient
) -> None:
    calls: list[int] = []

    async def flaky(ctx: JobContext) -> str:
        calls.append(ctx.job.attempts)
        if ctx.job.attempts < 3:
            raise Retry(defer=0.0)
        return "third time lucky"

    registry.register("flaky")(flaky)
    client = await make_client(workers=2, retry_base=0.01, retry_cap=0.02)
    lucky = await enqueue(client, "flaky", max_attempts=5)
    assert (await wait_for_status(client, lucky, "completed"))["result"] == "third time lucky"
    assert calls == [1, 2, 3]

    doomed = await enqueue(client, "fail", max_attempts=3)
    job = await wait_for_status(client, doomed, "dead")
    assert job["attempts"] == 3
    assert [a["outcome"] for a in job["history"]] == ["failed", "failed", "failed"]


async def test_job_context_logs_and_progress(registry: Registry, make_client: MakeClient) -> None:
    async def chatty(ctx: JobContext) -> None:
        await ctx.log("step one")
        await ctx.progress(0.5, "halfway")

    registry.register("chatty")(chatty)
    client = await make_client()
    job_id = await enqueue(client, "chatty")
    job = await wait_for_status(client, job_id, "completed")
    assert job["progress"] == 0.5
    assert job["progress_note"] == "halfway"


async def raise_system_exit(ctx: JobContext) -> None:
    raise SystemExit(3)


async def raise_cancelled(ctx: JobContext) -> None:
    raise asyncio.CancelledError


async def raise_timeout(ctx: JobContext) -> None:
    raise TimeoutError("the mail server did not answer")


async def swallow_timeout(ctx: JobContext) -> str:
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()
    return "pretended to finish"


@pytest.mark.parametrize(
    ("handler", "timeout", "outcome", "error"),
    [
        (raise_system_exit, None, "failed", "SystemExit: 3"),
        (raise_cancelled, None, "failed", "CancelledError: the handler was cancelled from within"),
        (raise_timeout, None, "failed", "TimeoutError: the mail server did not answer"),
        (raise_timeout, 30.0, "failed", "TimeoutError: the mail server did not answer"),
        (swallow_timeout, 0.05, "timeout", "timed out after 0.05s"),
    ],
    ids=["system-exit", "own-cancel", "own-timeout", "own-timeout-under-a-timeout", "swallowed-timeout"],
)
async def test_a_misbehaving_handler_fails_its_job_and_its_worker_lives_on(
    registry: Registry, make_client: MakeClient, handler: object, timeout: float | None, outcome: str, error: str
) -> None:
    registry.register("bad")(handler)  # type: ignore[arg-type]
    client = await make_client(workers=1)
    job_id = await enqueue(client, "bad", timeout=timeout)
    job = await wait_for_status(client, job_id, "failed")
    assert (job["history"][0]["outcome"], job["error"]) == (outcome, error)
    after = await enqueue(client, "echo", payload={"next": True})  # the one worker is still there
    assert (await wait_for_status(client, after, "completed"))["result"] == {"next": True}


@pytest.mark.parametrize("result", [object(), float("nan"), {"x": [float("inf")]}], ids=["object", "nan", "inf"])
async def test_a_result_json_cannot_carry_fails_the_job(
    registry: Registry, make_client: MakeClient, result: object
) -> None:
    async def returns(ctx: JobContext) -> object:
        return result

    registry.register("odd")(returns)
    client = await make_client(workers=1)
    job_id = await enqueue(client, "odd")
    job = await wait_for_status(client, job_id, "failed")
    assert job["error"].startswith("the handler's result cannot be stored: not plain JSON"), job["error"]
    assert job["result"] is None


async def test_a_result_nested_too_deep_to_read_back_fails_the_job(registry: Registry, make_client: MakeClient) -> None:
    deep: list[object] = []
    inner = deep
    for _ in range(250):
        inner.append([])
        inner = inner[0]  # type: ignore[assignment]

    async def returns(ctx: JobContext) -> object:
        return deep

    registry.register("deep")(returns)
    client = await make_client(workers=1)
    job = await wait_for_status(client, await enqueue(client, "deep"), "failed")
    assert "nesting" in job["error"]
    assert (await client.get("/jobs")).status == 200  # every job still reads back


async def test_a_stale_run_of_a_job_leased_again_in_the_same_pool_cannot_settle_it(
    registry: Registry, make_client: MakeClient
) -> None:
    attempts: list[int] = []
    release = {1: asyncio.Event(), 2: asyncio.Event()}
    inside = {1: asyncio.Event(), 2: asyncio.Event()}

    async def held(ctx: JobContext) -> str:
        attempt = len(ctx.job.history)  # the run's number (a lost run uses no attempt)
        attempts.append(attempt)
        inside[attempt].set()
        await release[attempt].wait()
        return f"attempt {attempt}"

    registry.register("held")(held)
    clock = FakeClock()
    client = await make_client(workers=2, clock=clock)
    store = client.app[SERVICE].store
    job_id = await enqueue(client, "held")
    await asyncio.wait_for(inside[1].wait(), 5)
    clock.advance(TEST_CONFIG.lease_seconds)  # as if the worker had hung past its lease
    assert [j.id for j in await store.expire_leases()] == [job_id]
    await asyncio.wait_for(inside[2].wait(), 5)  # the same pool leased it again, to its other worker
    pool = client.app[SERVICE].pool
    assert pool.busy == 2
    release[1].set()  # the stale first run finishes: its lease is gone, so it must change nothing
    deadline = time.monotonic() + 5
    while pool.busy != 1:  # its worker has tried to settle and moved on
        assert time.monotonic() < deadline, "the stale run never finished"
        await asyncio.sleep(0.005)
    assert (await wait_for_status(client, job_id, "processing"))["result"] is None
    release[2].set()
    done = await wait_for_status(client, job_id, "completed")
    assert done["result"] == "attempt 2"
    assert [a["outcome"] for a in done["history"]] == ["lease-expired", "completed"]
    assert attempts == [1, 2]


async def test_a_stale_run_that_hangs_is_stopped_once_its_lease_is_gone(
    registry: Registry, make_client: MakeClient
) -> None:
    stopped = asyncio.Event()

    async def hangs_first(ctx: JobContext) -> str:
        if len(ctx.job.history) == 1:
            try:
                await asyncio.Event().wait()  # hung: why its lease lapsed
            except asyncio.CancelledError:
                stopped.set()
                raise
        return "second"

    registry.register("hangs")(hangs_first)
    clock = FakeClock()
    client = await make_client(workers=2, lease_seconds=0.3, clock=clock)
    service = client.app[SERVICE]
    job_id = await enqueue(client, "hangs")
    await wait_for_status(client, job_id, "processing")
    clock.advance(0.3)
    await service.store.expire_leases()
    done = await wait_for_status(client, job_id, "completed")  # the pool's other worker ran attempt 2
    assert done["result"] == "second"
    await asyncio.wait_for(stopped.wait(), 5)  # the keeper found attempt 1's lease gone and stopped it
    deadline = time.monotonic() + 5
    while service.pool.busy:
        assert time.monotonic() < deadline, "a worker is still held by the stale run"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("prefetch", [0, 2])
async def test_prefetch_leases_that_many_jobs_ahead_of_the_running_ones(
    registry: Registry, make_client: MakeClient, prefetch: int
) -> None:
    gate = Gate(expected=1)
    registry.register("gate")(gate.handler)
    client = await make_client(workers=1, prefetch=prefetch)
    ids = [await enqueue(client, "gate") for _ in range(5)]
    await asyncio.wait_for(gate.all_inside.wait(), 5)
    store = client.app[SERVICE].store
    deadline = time.monotonic() + 5
    while (await store.stats()).by_status.get("processing", 0) < 1 + prefetch:
        assert time.monotonic() < deadline, "the pool did not lease ahead"
        await asyncio.sleep(0.005)
    counts = (await store.stats()).by_status  # the feeder leases its room in one call: no more follow
    assert (counts.get("processing", 0), counts.get("pending", 0)) == (1 + prefetch, 4 - prefetch)
    gate.release.set()
    for job_id in ids:
        await wait_for_status(client, job_id, "completed")


async def test_a_plain_def_handler_runs_in_a_thread(registry: Registry, make_client: MakeClient) -> None:
    threads: list[str] = []

    def blocking(ctx: ThreadJobContext) -> dict[str, int]:
        threads.append(threading.current_thread().name)
        ctx.log("from a thread")
        ctx.progress(0.5, "half")
        return {"sum": sum(ctx.payload["numbers"])}

    registry.register("blocking")(blocking)
    client = await make_client()
    job_id = await enqueue(client, "blocking", payload={"numbers": [1, 2, 3]})
    done = await wait_for_status(client, job_id, "completed")
    assert done["result"] == {"sum": 6} and done["progress_note"] == "half"
    assert threads and threads[0].startswith("jobq-handler")
    logs = await (await client.get(f"/jobs/{job_id}/logs")).json()
    assert [line["message"] for line in logs["logs"]] == ["from a thread"]


async def test_a_failed_attempt_keeps_its_traceback(
    registry: Registry, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(ctx: JobContext) -> None:
        {}["missing"]

    registry.register("broken")(broken)
    client = await make_client()
    job_id = await enqueue(client, "broken")
    failed = await wait_for_status(client, job_id, "failed")
    [attempt] = failed["history"]
    assert attempt["error"] == "KeyError: 'missing'"
    assert attempt["traceback"].startswith("Traceback") and 'in broken\n    {}["missing"]' in attempt["traceback"]
    assert "KeyError: 'missing'" in caplog.text and "Traceback" in caplog.text  # logged too


async def test_what_a_handler_reports_is_made_storable(registry: Registry, make_client: MakeClient) -> None:
    async def chatty(ctx: JobContext) -> None:
        ctx.payload.pop("card")  # the handler's own copy: the stored payload keeps it
        await ctx.progress(0.5, {"step": 1})
        name = os.fsdecode(b"caf\xe9.txt")  # a file name that is not UTF-8, as os.listdir() gives it
        await ctx.log(f"processing {name}")
        await ctx.log("x" * 100_000)

    registry.register("chatty")(chatty)
    client = await make_client()
    job_id = await enqueue(client, "chatty", payload={"card": "4242"})
    others = [await enqueue(client, "echo") for _ in range(10)]
    done = await wait_for_status(client, job_id, "completed")
    assert done["payload"] == {"card": "4242"} and done["progress_note"] == '{"step":1}'
    lines = [line["message"] for line in (await (await client.get(f"/jobs/{job_id}/logs")).json())["logs"]]
    assert lines[0] == "processing caf\\udce9.txt" and len(lines[1]) == MAX_LOG_CHARS
    replay = await client.post("/enqueue", json={"type": "chatty", "id": job_id, "payload": {"card": "4242"}})
    assert replay.status == 200  # the same request again is a replay, not a conflict
    for other in others:
        await wait_for_status(client, other, "completed")


async def test_the_feeder_restarts_after_an_unexpected_error(
    registry: Registry, make_client: MakeClient, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers, "RESTART_SECONDS", (0.01, 0.05))
    client = await make_client()
    store = client.app[SERVICE].store
    real_lease = store.lease
    failures = iter([RuntimeError("a bug in leasing")])

    async def flaky_lease(*args: object, **kwargs: object) -> list[Job]:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return await real_lease(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "lease", flaky_lease)
    job_id = await enqueue(client, "echo")
    await wait_for_status(client, job_id, "completed")
    assert "the feeder failed; restarting it" in caplog.text and "a bug in leasing" in caplog.text


async def test_the_lease_keeper_says_once_that_it_cannot_extend_leases_and_once_that_it_can(
    registry: Registry, make_client: MakeClient, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, "jobq.workers")
    gate = Gate(expected=1)
    registry.register("gate")(gate.handler)
    client = await make_client(workers=1, lease_seconds=0.3)  # the keeper runs every 0.1 s
    store = client.app[SERVICE].store
    real = store.heartbeat_many
    failures = 5

    async def out_of_reach(*args: object, **kwargs: object) -> object:
        nonlocal failures
        if failures:
            failures -= 1
            raise StoreUnavailable("the store is out of reach")
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "heartbeat_many", out_of_reach)
    job_id = await enqueue(client, "gate")
    await asyncio.wait_for(gate.all_inside.wait(), 5)
    deadline = time.monotonic() + 10
    while "extending leases works again" not in caplog.text:
        assert time.monotonic() < deadline, "the keeper never recovered"
        await asyncio.sleep(0.02)
    assert caplog.text.count("extending 1 leases failed") == 1
    gate.release.set()
    await wait_for_status(client, job_id, "completed")
