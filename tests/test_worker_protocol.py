"""The HTTP worker protocol: lease, heartbeat, complete, fail, release — and stale leases."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from jobq import api
from jobq.api import SERVICE
from jobq.app import create_app
from jobq.handlers import Registry
from tests.conftest import TEST_CONFIG, MakeClient, store_url, wait_for_status
from tests.test_workers import enqueue


async def lease(client: TestClient, **body: object) -> list[dict]:
    response = await client.post("/workers/lease", json=body)
    if response.status == 204:
        return []
    assert response.status == 200, await response.text()
    return (await response.json())["jobs"]


async def test_empty_lease_is_204_and_long_poll_returns_when_work_arrives(make_client: MakeClient) -> None:
    client = await make_client(workers=0)
    assert await lease(client) == []
    waiting = asyncio.create_task(lease(client, wait=10, queues=["remote"]))
    await asyncio.sleep(0)  # let the long-poll reach the server before the job exists
    job_id = await enqueue(client, "anything", queue="remote")
    jobs = await asyncio.wait_for(waiting, timeout=5)
    assert [job["id"] for job in jobs] == [job_id]
    assert jobs[0]["attempts"] == 1 and len(jobs[0]["lease_id"]) == 24  # a lease, as its worker sees it
    assert jobs[0]["lease_id"]


async def test_complete_needs_the_current_lease(make_client: MakeClient) -> None:
    client = await make_client(workers=0)
    job_id = await enqueue(client, "resize", payload={"w": 10})
    [job] = await lease(client, max_jobs=5, lease=30)
    stale = await client.post(f"/jobs/{job_id}/complete", json={"lease_id": "not-it", "result": 1})
    assert stale.status == 409
    assert (await (await client.get(f"/status/{job_id}")).json())["status"] == "processing"
    done = await client.post(f"/jobs/{job_id}/complete", json={"lease_id": job["lease_id"], "result": {"ok": 1}})
    assert done.status == 200
    assert (await done.json())["result"] == {"ok": 1}
    again = await client.post(f"/jobs/{job_id}/complete", json={"lease_id": job["lease_id"], "result": 2})
    assert again.status == 200  # a repeat with the same lease (say, after a lost answer) gets the first answer
    assert (await again.json())["result"] == {"ok": 1}
    late = await client.post(f"/jobs/{job_id}/complete", json={"lease_id": "not-it", "result": 3})
    assert late.status == 409
    assert (await (await client.get(f"/status/{job_id}")).json())["result"] == {"ok": 1}


async def test_fail_retries_then_gives_up_and_release_requeues(make_client: MakeClient) -> None:
    client = await make_client(workers=0)
    job_id = await enqueue(client, "flaky", max_attempts=2)
    [first] = await lease(client)
    response = await client.post(
        f"/jobs/{job_id}/fail", json={"lease_id": first["lease_id"], "error": "nope", "retry_in": 0}
    )
    assert (await response.json())["status"] == "retrying"
    [second] = await lease(client, wait=5)
    assert second["attempts"] == 2
    released = await client.post(f"/jobs/{job_id}/release", json={"lease_id": second["lease_id"]})
    assert (await released.json())["status"] == "pending"
    [third] = await lease(client)
    final = await client.post(f"/jobs/{job_id}/fail", json={"lease_id": third["lease_id"], "error": "still no"})
    body = await final.json()
    assert body["status"] == "dead"
    assert [a["outcome"] for a in body["history"]] == ["failed", "released", "failed"]


async def test_heartbeat_extends_and_lapsed_lease_is_redelivered(make_client: MakeClient) -> None:
    client = await make_client(workers=0)
    job_id = await enqueue(client, "slow", max_attempts=3)
    [job] = await lease(client, lease=0.5)
    beat = await client.post(f"/jobs/{job_id}/heartbeat", json={"lease_id": job["lease_id"], "lease": 0.5})
    assert beat.status == 200
    assert (await beat.json())["lease_expires_at"] >= job["lease_expires_at"]
    # stop heartbeating: the housekeeper expires the lease and the job comes back
    again = await wait_for_status(client, job_id, "retrying", "pending", timeout=10)
    assert again["history"][0]["outcome"] == "lease-expired"
    [redelivered] = await lease(client, wait=10)
    assert redelivered["id"] == job_id
    assert redelivered["lease_id"] != job["lease_id"]
    late = await client.post(f"/jobs/{job_id}/complete", json={"lease_id": job["lease_id"], "result": None})
    assert late.status == 409


async def test_log_and_progress_from_a_remote_worker(make_client: MakeClient) -> None:
    client = await make_client(workers=0)
    job_id = await enqueue(client, "report")
    [job] = await lease(client)
    line = {"lease_id": job["lease_id"], "message": "step 1"}
    assert (await client.post(f"/jobs/{job_id}/log", json=line)).status == 204
    stale = await client.post(f"/jobs/{job_id}/log", json={"lease_id": "not-its-lease", "message": "forged"})
    assert stale.status == 409  # a worker token alone does not let anyone write into a job's log
    progress = {"lease_id": job["lease_id"], "fraction": 0.25, "note": "a quarter"}
    assert (await client.post(f"/jobs/{job_id}/progress", json=progress)).status == 204
    status = await (await client.get(f"/status/{job_id}")).json()
    assert (status["progress"], status["progress_note"]) == (0.25, "a quarter")
    logs = await (await client.get(f"/jobs/{job_id}/logs")).json()
    assert [line["message"] for line in logs["logs"]] == ["step 1"]
    bad = await client.post(f"/jobs/{job_id}/progress", json={**progress, "fraction": 2})
    assert bad.status == 422


async def test_drain_answers_pending_long_polls_at_once(make_client: MakeClient) -> None:
    client = await make_client(workers=0)
    waiting = asyncio.create_task(client.post("/workers/lease", json={"wait": 60}))
    await asyncio.sleep(0.05)  # the poll is parked on the server; the assertion below is the real check
    await client.app[SERVICE].drain()
    response = await asyncio.wait_for(waiting, timeout=5)
    assert response.status == 204
    refused = await client.post("/enqueue", json={"type": "noop"})
    assert refused.status == 503
    assert refused.headers["Retry-After"]


async def test_a_worker_hanging_up_mid_poll_is_never_leased_a_job(
    aiohttp_client: Any, registry: Registry, backend: str, tmp_path: Path
) -> None:
    config = replace(TEST_CONFIG, workers=0, store=store_url(backend, tmp_path))
    client = await aiohttp_client(create_app(config, handlers=registry), server_kwargs={"handler_cancellation": True})
    store = client.app[SERVICE].store
    polling = asyncio.create_task(client.post("/workers/lease", json={"wait": 30}))
    deadline = asyncio.get_running_loop().time() + 5
    while not store._waiters:  # the poll is parked in the store
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    polling.cancel()  # the worker hangs up
    while store._waiters:  # the server noticed and stopped waiting
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    job_id = await enqueue(client, "noop")
    assert [job["id"] for job in await lease(client)] == [job_id]


async def test_queues_not_served_here_take_any_type_for_remote_workers(make_client: MakeClient) -> None:
    client = await make_client(workers=2, queues=("default",))
    assert (await client.post("/enqueue", json={"type": "thumbnail"})).status == 422
    job_id = await enqueue(client, "thumbnail", queue="images")
    [job] = await lease(client, queues=["images"])
    assert (job["id"], job["type"]) == (job_id, "thumbnail")
    local = await enqueue(client, "echo", payload={"here": True})
    assert (await wait_for_status(client, local, "completed"))["result"] == {"here": True}


async def test_drain_waits_for_jobs_leased_to_remote_workers(make_client: MakeClient) -> None:
    client = await make_client(workers=0, drain_timeout=30.0)
    service = client.app[SERVICE]
    job_id = await enqueue(client, "resize")
    await enqueue(client, "resize")
    [job] = await lease(client, max_jobs=1)
    draining = asyncio.create_task(service.drain())
    await asyncio.sleep(0)  # the drain task starts: it marks the service draining before its first await
    assert service.draining
    refused = await client.post("/workers/lease", json={"max_jobs": 1})  # no new leases while draining
    assert refused.status == 503
    assert "Retry-After" in refused.headers
    assert not draining.done()  # still waiting for the remote worker's job
    heartbeat = await client.post(f"/jobs/{job_id}/heartbeat", json={"lease_id": job["lease_id"]})
    assert heartbeat.status == 200  # a draining server still serves the workers holding its jobs
    done = await client.post(f"/jobs/{job_id}/complete", json={"lease_id": job["lease_id"], "result": 1})
    assert done.status == 200
    report = await asyncio.wait_for(draining, timeout=5)
    assert (report.finished, report.unfinished) == (1, [])


async def test_drain_timeout_reports_jobs_still_leased_to_remote_workers(make_client: MakeClient) -> None:
    client = await make_client(workers=0, drain_timeout=0.2)
    job_id = await enqueue(client, "resize")
    await lease(client, max_jobs=1)
    report = await asyncio.wait_for(client.app[SERVICE].drain(), timeout=5)
    assert (report.finished, report.unfinished) == (0, [job_id])


async def test_settle_completes_and_fails_many_jobs_each_with_its_own_answer(make_client: MakeClient) -> None:
    client = await make_client(workers=0, batch_limit=3, retry_base=0.001, retry_cap=0.001)
    ids = [await enqueue(client, "resize", max_attempts=2) for _ in range(3)]
    jobs = {job["id"]: job for job in await lease(client, max_jobs=3)}
    settlements = [
        {"id": ids[0], "lease_id": jobs[ids[0]]["lease_id"], "result": {"w": 10}},
        {"id": ids[1], "lease_id": jobs[ids[1]]["lease_id"], "error": "no space", "retry_in": 60},
        {"id": ids[2], "lease_id": "not-it", "result": "late"},
    ]
    response = await client.post("/workers/settle", json={"jobs": settlements})
    assert response.status == 200
    results = (await response.json())["results"]
    assert [(r["id"], r["code"]) for r in results] == [(ids[0], 200), (ids[1], 200), (ids[2], 409)]
    assert [r.get("status") for r in results[:2]] == ["completed", "retrying"]
    assert results[2]["problem"]["status"] == 409
    states = [(await (await client.get(f"/status/{job_id}")).json()) for job_id in ids]
    assert [s["status"] for s in states] == ["completed", "retrying", "processing"]
    assert (states[0]["result"], states[1]["error"]) == ({"w": 10}, "no space")
    both = await client.post(
        "/workers/settle", json={"jobs": [{"id": ids[2], "lease_id": "x", "result": 1, "error": "and yet"}]}
    )
    assert both.status == 422
    assert [e["field"] for e in (await both.json())["errors"]] == ["jobs.0"]
    assert "not both" in (await both.json())["errors"][0]["message"]
    too_many = await client.post("/workers/settle", json={"jobs": settlements * 2})
    assert too_many.status == 422
    assert (await too_many.json())["errors"][0]["field"] == "jobs"


async def test_jobs_leased_for_a_worker_that_hung_up_go_back_at_once(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await make_client(workers=0)
    job_id = await enqueue(client, "report")
    gone = iter([True])  # the first answer finds its worker gone: the job was leased as it hung up
    monkeypatch.setattr(api, "hung_up", lambda request: next(gone, False))
    await client.post("/workers/lease", json={"worker": "gone"})
    [leased] = await lease(client)
    assert leased["id"] == job_id
    job = await (await client.get(f"/status/{job_id}")).json()
    assert [(a["worker"], a["outcome"]) for a in job["history"]] == [("gone", "undelivered"), (None, None)]
    assert leased["attempts"] == job["attempts"] == 1  # the undelivered run used no attempt
