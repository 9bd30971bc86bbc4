"""Flow control over HTTP: setting a queue's limits, in-process workers held to them, and seeing why a job waits."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from aiohttp.test_utils import TestClient

from jobq.handlers import JobContext, Registry
from tests.conftest import FakeClock, MakeClient, until, wait_for_status
from tests.test_api import assert_problem


async def put_flow(client: TestClient, queue: str, **limits: Any) -> dict[str, Any]:
    response = await client.put(f"/queues/{queue}/flow", json=limits)
    assert response.status == 200, await response.text()
    return await response.json()


async def enqueue_all(client: TestClient, jobs: list[dict[str, Any]]) -> list[str]:
    answer = await (await client.post("/enqueue/batch", json={"jobs": jobs})).json()
    assert answer["accepted"] == len(jobs), answer
    return [result["id"] for result in answer["results"]]


async def test_in_process_workers_never_run_more_of_a_key_than_its_limit(
    make_client: MakeClient, registry: Registry
) -> None:
    running: Counter[str] = Counter()
    most: Counter[str] = Counter()

    @registry.register("tenant_work")
    async def tenant_work(ctx: JobContext) -> None:
        key = ctx.payload["tenant"]
        running[key] += 1
        most[key] = max(most[key], running[key])
        await asyncio.sleep(0.01)
        running[key] -= 1

    client = await make_client(workers=8)
    await put_flow(client, "tenants", key_concurrency=2)
    jobs = [
        {"type": "tenant_work", "queue": "tenants", "concurrency_key": tenant, "payload": {"tenant": tenant}}
        for _ in range(10)
        for tenant in ("acme", "globex", "initech")
    ]
    ids = await enqueue_all(client, jobs)
    for job_id in ids:
        await wait_for_status(client, job_id, "completed")
    assert most == {"acme": 2, "globex": 2, "initech": 2}


async def test_a_small_tenant_finishes_long_before_a_big_one(make_client: MakeClient, registry: Registry) -> None:
    finished: list[str] = []

    @registry.register("tenant_step")
    async def tenant_step(ctx: JobContext) -> None:
        await asyncio.sleep(0.001)
        finished.append(ctx.payload["tenant"])

    client = await make_client(workers=4)

    def jobs(tenant: str, count: int) -> list[dict[str, Any]]:
        return [
            {"type": "tenant_step", "queue": "fair", "concurrency_key": tenant, "payload": {"tenant": tenant}}
        ] * count

    for _ in range(2):
        await enqueue_all(client, jobs("big", 1000))
    big_done_before = finished.count("big")
    await enqueue_all(client, jobs("small", 10))  # behind the big tenant's waiting jobs in arrival order

    async def small_done() -> bool:
        return finished.count("small") == 10

    await until(small_done, "the small tenant's 10 jobs", timeout=30.0)
    last_small = len(finished) - finished[::-1].index("small")
    big_meanwhile = finished[:last_small].count("big") - big_done_before
    print(f"while the small tenant's 10 jobs ran, {big_meanwhile} of the big tenant's ran (of 2,000)")
    assert big_meanwhile <= 10 + 4 * 4, big_meanwhile  # turns by key (give or take what 4 workers hold), not FIFO


async def test_a_held_job_says_which_limit_holds_it_and_when_it_may_start(
    make_client: MakeClient, registry: Registry
) -> None:
    clock = FakeClock()
    client = await make_client(workers=0, clock=clock)
    await put_flow(client, "mail", key_rate={"limit": 1, "period": 60.0})
    first, second = await enqueue_all(
        client, [{"type": "echo", "queue": "mail", "concurrency_key": "smtp.example.com"} for _ in range(2)]
    )
    leased = await (await client.post("/workers/lease", json={"queues": ["mail"], "max_jobs": 2})).json()
    assert [job["id"] for job in leased["jobs"]] == [first]
    record = await (await client.get(f"/status/{second}")).json()
    assert record["status"] == "pending" and record["held"]["limit"] == "key_rate", record
    assert record["held"]["key"] == "smtp.example.com" and record["held"]["next_start"] is not None
    view = await (await client.get("/queues/mail/flow")).json()
    assert view["flow"]["held_by"]["keys_rate_limited"] == 1
    metrics = await (await client.get("/metrics")).text()
    assert 'jobq_queue_held{limit="key_rate",queue="mail"} 1.0' in metrics
    clock.advance(60)
    assert "held" not in await (await client.get(f"/status/{second}")).json()


async def test_limits_are_checked_and_removing_them_frees_held_jobs(make_client: MakeClient) -> None:
    client = await make_client(workers=0)
    for limits, field in [
        ({"concurrency": 0}, "concurrency"),
        ({"rate": {"limit": 5}}, "rate.period"),
        ({"key_rate": {"limit": 1, "period": -1}}, "key_rate.period"),
        ({"burst": 3}, "burst"),
    ]:
        response = await client.put("/queues/q/flow", json=limits)
        await assert_problem(response, 422, field)
    refused = await client.post("/enqueue", json={"type": "echo", "concurrency_limit": 2})
    await assert_problem(refused, 422, "concurrency_limit goes with a concurrency_key")
    await assert_problem(await client.get("/queues/q/flow"), 404, "queue 'q' has no limits")

    set_answer = await put_flow(client, "q", concurrency=1)
    assert set_answer["flow"]["concurrency"] == 1 and set_answer["flow"]["running"] == 0
    await enqueue_all(client, [{"type": "echo", "queue": "q"}, {"type": "echo", "queue": "q"}])
    lease = {"queues": ["q"], "max_jobs": 5}
    assert len((await (await client.post("/workers/lease", json=lease)).json())["jobs"]) == 1
    assert (await client.post("/workers/lease", json=lease)).status == 204
    removed = await client.delete("/queues/q/flow")
    assert (await removed.json()) == {"queue": "q", "flow": None}
    assert len((await (await client.post("/workers/lease", json=lease)).json())["jobs"]) == 1
    stats = await (await client.get("/stats")).json()
    assert stats["flows"] == {}


async def test_flows_appear_in_queues_and_stats(make_client: MakeClient) -> None:
    client = await make_client(workers=0)
    await put_flow(client, "reports", concurrency=3, key_concurrency=1)
    queues = {queue["name"]: queue for queue in (await (await client.get("/queues")).json())["queues"]}
    assert queues["reports"]["flow"]["concurrency"] == 3  # a queue with limits is listed before it has jobs
    stats = await (await client.get("/stats")).json()
    assert stats["flows"]["reports"]["key_concurrency"] == 1
