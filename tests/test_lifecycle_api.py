"""Job options and lifecycle endpoints: priorities, delays, retry, logs, listing, queues."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from aiohttp.test_utils import TestClient

from jobq.handlers import JobContext, Registry
from tests.conftest import MakeClient, wait_for_status
from tests.test_workers import Gate, enqueue


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_higher_priority_runs_first_and_fifo_within_a_priority(
    registry: Registry, make_client: MakeClient
) -> None:
    gate = Gate(expected=1)
    order: list[str] = []

    async def record(ctx: JobContext) -> None:
        order.append(ctx.payload["name"])

    registry.register("gate")(gate.handler)
    registry.register("record")(record)
    client = await make_client(workers=1)
    blocker = await enqueue(client, "gate")
    await asyncio.wait_for(gate.all_inside.wait(), timeout=5)
    for name, priority in [("low", -5), ("a", 0), ("high", 10), ("b", 0), ("c", 0)]:
        await enqueue(client, "record", payload={"name": name}, priority=priority)
    gate.release.set()
    await wait_for_status(client, blocker, "completed")
    stats_deadline = asyncio.get_running_loop().time() + 5
    while len(order) < 5:
        assert asyncio.get_running_loop().time() < stats_deadline
        await asyncio.sleep(0.01)
    assert order == ["high", "a", "b", "c", "low"]


async def test_delayed_job_is_scheduled_and_not_started_early(client: TestClient) -> None:
    response = await client.post("/enqueue", json={"type": "noop", "delay": 0.3})
    job = await response.json()
    assert job["status"] == "scheduled"
    assert job["next_run_at"] is not None
    done = await wait_for_status(client, job["id"], "completed")
    assert parse_time(done["started_at"]) >= parse_time(job["next_run_at"])


async def test_run_at_in_the_past_runs_now_and_naive_times_are_refused(client: TestClient) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    job = await (await client.post("/enqueue", json={"type": "noop", "run_at": past})).json()
    assert job["status"] == "pending"
    refused = {
        "naive": {"run_at": "2030-01-01T00:00:00"},
        "both": {"delay": 1, "run_at": past},
        "too far": {"run_at": "9999-12-31T23:59:59-12:00"},
        "a number": {"run_at": 1_900_000_000},
    }
    for case, fields in refused.items():
        response = await client.post("/enqueue", json={"type": "noop", **fields})
        assert response.status == 422, case
        problem = await response.json()
        assert [error["field"] for error in problem["errors"]] == ["run_at"], (case, problem)
    batch = await client.post("/enqueue/batch", json={"jobs": [{"type": "noop", "run_at": 1_900_000_000}]})
    assert (await batch.json())["results"][0]["code"] == 422


async def test_dead_jobs_are_listed_and_can_be_retried(make_client: MakeClient) -> None:
    client = await make_client(retry_base=0.001, retry_cap=0.001)
    job_id = await enqueue(client, "fail", max_attempts=2)
    dead = await wait_for_status(client, job_id, "dead")
    assert len(dead["history"]) == 2
    listing = await (await client.get("/jobs", params={"status": "dead"})).json()
    assert [job["id"] for job in listing["jobs"]] == [job_id]
    response = await client.post(f"/jobs/{job_id}/retry")
    assert response.status == 200
    again = await wait_for_status(client, job_id, "dead")
    assert len(again["history"]) == 4  # every attempt is kept
    done = await enqueue(client, "noop")
    await wait_for_status(client, done, "completed")
    assert (await client.post(f"/jobs/{done}/retry")).status == 409


async def test_listing_is_newest_first_with_stable_cursor_pages(make_client: MakeClient) -> None:
    client = await make_client(workers=0)
    ids = [await enqueue(client, "noop", queue="mail" if i % 2 else "default") for i in range(7)]
    seen: list[str] = []
    url, params = "/jobs", {"limit": "3", "queue": "mail"}
    while True:
        response = await client.get(url, params=params)
        page = await response.json()
        seen += [job["id"] for job in page["jobs"]]
        if page["next_cursor"] is None:
            assert "Link" not in response.headers
            break
        assert 'rel="next"' in response.headers["Link"]
        params = {**params, "cursor": page["next_cursor"]}
    assert seen == [ids[i] for i in (5, 3, 1)]
    bad = await client.get("/jobs", params={"status": "sleeping"})
    assert bad.status == 422


async def test_job_logs_endpoint(registry: Registry, make_client: MakeClient) -> None:
    async def chatty(ctx: JobContext) -> None:
        for step in ("fetch", "parse", "store"):
            await ctx.log(step)

    registry.register("chatty")(chatty)
    client = await make_client()
    job_id = await enqueue(client, "chatty")
    await wait_for_status(client, job_id, "completed")
    body = await (await client.get(f"/jobs/{job_id}/logs")).json()
    assert [line["message"] for line in body["logs"]] == ["fetch", "parse", "store"]
    assert all(line["at"].endswith("Z") for line in body["logs"])
    assert (await client.get("/jobs/unknown/logs")).status == 404


async def test_paused_queue_accepts_but_runs_nothing_until_resumed(client: TestClient) -> None:
    assert (await (await client.post("/queues/mail/pause")).json()) == {"queue": "mail", "paused": True}
    held = await enqueue(client, "noop", queue="mail")
    free = await enqueue(client, "noop", queue="default")
    await wait_for_status(client, free, "completed")
    assert (await (await client.get(f"/status/{held}")).json())["status"] == "pending"
    stats = await (await client.get("/stats")).json()
    assert stats["paused_queues"] == ["mail"]
    await client.post("/queues/mail/resume")
    await wait_for_status(client, held, "completed")


async def test_clearing_a_queue_deletes_its_waiting_jobs(make_client: MakeClient) -> None:
    client = await make_client(workers=0)
    doomed = [await enqueue(client, "noop", queue="bulk") for _ in range(3)]
    kept = await enqueue(client, "noop", queue="default")
    body = await (await client.delete("/queues/bulk/jobs")).json()
    assert body == {"queue": "bulk", "cleared": 3}
    assert all([(await client.get(f"/status/{job_id}")).status == 404 for job_id in doomed])
    assert (await client.get(f"/status/{kept}")).status == 200
    assert (await client.post("/queues/bad name!/pause")).status == 422
