"""The worker pool: real concurrency, failure isolation, timeouts, cancellation, retries."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient

from jobq.handlers import JobContext, Registry
from jobq.retry import Retry
from tests.conftest import MakeClient, wait_for_status


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
        assert ctx.job.progress == 0.5

    registry.register("chatty")(chatty)
    client = await make_client()
    job_id = await enqueue(client, "chatty")
    job = await wait_for_status(client, job_id, "completed")
    assert job["progress"] == 0.5
    assert job["progress_note"] == "halfway"
