"""Operator routes: delete a job, list queues and nodes, peek at the next job, retry or delete many jobs by filter."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

import jobq
from jobq import nodes
from jobq import service as service_module
from jobq.api import SERVICE
from tests.conftest import MakeClient, wait_for_status
from tests.test_api import assert_problem


async def enqueue(client: TestClient, **job: Any) -> dict[str, Any]:
    response = await client.post("/enqueue", json=job)
    assert response.status == 202, await response.text()
    return await response.json()


async def test_delete_a_job_answers_it_as_it_was_and_forgets_it(make_client: MakeClient) -> None:
    client = await make_client(workers=0)
    job = await enqueue(client, type="echo", id="gone")
    deleted = await client.delete("/jobs/gone")
    assert deleted.status == 200 and (await deleted.json())["status"] == "pending"
    await assert_problem(await client.get("/jobs/gone"), 404, "no job with id 'gone'")
    await assert_problem(await client.delete("/jobs/gone"), 404, "no job with id 'gone'")
    assert job["id"] == "gone"


async def test_a_running_job_is_not_deleted_until_cancelled(make_client: MakeClient) -> None:
    client = await make_client(workers=0)
    await enqueue(client, type="echo", id="busy")
    leased = await client.post("/workers/lease", json={})
    assert leased.status == 200
    await assert_problem(await client.delete("/jobs/busy"), 409, "cancel it first")
    assert (await client.post("/jobs/busy/cancel")).status == 200
    assert (await client.delete("/jobs/busy")).status == 200


async def test_queues_lists_counts_paused_and_the_wait_of_the_next_job(make_client: MakeClient) -> None:
    client = await make_client(workers=0)
    await enqueue(client, type="echo", queue="mail")
    await enqueue(client, type="echo", queue="mail", delay=60)
    assert (await client.post("/queues/idle/pause")).status == 200
    body = await (await client.get("/queues")).json()
    idle, mail = body["queues"]  # by name
    assert (mail["name"], mail["paused"], mail["jobs"]["pending"], mail["jobs"]["scheduled"]) == ("mail", False, 1, 1)
    assert mail["oldest_wait_seconds"] >= 0
    assert (idle["name"], idle["paused"], sum(idle["jobs"].values())) == ("idle", True, 0)


async def test_next_shows_the_job_a_worker_would_get_without_leasing_it(make_client: MakeClient) -> None:
    client = await make_client(workers=0)
    assert (await client.get("/queues/mail/next")).status == 204
    await enqueue(client, type="echo", queue="mail", id="low")
    await enqueue(client, type="echo", queue="mail", id="high", priority=9)
    peeked = await client.get("/queues/mail/next")
    assert peeked.status == 200 and (await peeked.json())["id"] == "high"
    assert (await (await client.get("/jobs/high")).json())["status"] == "pending"  # nothing was leased
    await assert_problem(await client.get("/queues/no%20such/next"), 422, "is not a queue name")


async def test_retry_many_re_runs_dead_jobs_by_filter_up_to_a_limit(make_client: MakeClient) -> None:
    client = await make_client(workers=2, retry_base=0.001, retry_cap=0.001)
    dead = [(await enqueue(client, type="fail", max_attempts=2, queue="mail"))["id"] for _ in range(5)]
    other = (await enqueue(client, type="fail", max_attempts=2, queue="other"))["id"]
    for job_id in [*dead, other]:
        await wait_for_status(client, job_id, "dead")
    assert (await client.post("/queues/mail/pause")).status == 200  # so the retried jobs wait, not die again
    first = await client.post("/jobs/retry", json={"status": "dead", "queue": "mail", "limit": 3})
    answer = await first.json()
    assert (answer["retried"], answer["skipped"], answer["more"]) == (3, 0, True) and answer["cursor"]
    rest = await client.post("/jobs/retry", json={"status": "dead", "queue": "mail", "cursor": answer["cursor"]})
    assert await rest.json() == {"retried": 2, "skipped": 0, "more": False, "cursor": None}
    assert (await client.post("/queues/mail/resume")).status == 200
    for job_id in dead:  # each ran again (and failed again: the handler always fails)
        job = await wait_for_status(client, job_id, "dead")
        assert len(job["history"]) == 4
    assert len((await (await client.get(f"/jobs/{other}")).json())["history"]) == 2  # another queue: untouched
    await assert_problem(await client.post("/jobs/retry", json={"status": "pending"}), 422, "only failed and dead")


async def test_delete_many_deletes_jobs_in_a_state(make_client: MakeClient) -> None:
    client = await make_client(workers=0)
    ids = [(await enqueue(client, type="echo"))["id"] for _ in range(4)]
    for job_id in ids[:2]:
        assert (await client.post(f"/jobs/{job_id}/cancel")).status == 200
    deleted = await client.post("/jobs/delete", json={"status": "cancelled"})
    assert await deleted.json() == {"deleted": 2, "skipped": 0, "more": False, "cursor": None}
    stats = await (await client.get("/stats")).json()
    assert (stats["jobs"]["cancelled"], stats["jobs"]["pending"]) == (0, 2)
    await assert_problem(await client.post("/jobs/delete", json={"status": "processing"}), 422, "cancel them first")
    await assert_problem(await client.post("/jobs/delete", json={"status": "nope"}), 422, "status")


async def test_delete_many_by_search_text_reads_a_bounded_number_per_call_and_goes_on_from_its_cursor(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "SEARCH_SCAN", 3)  # each call reads 3 jobs at most
    client = await make_client(workers=0)
    for n in range(8):
        await enqueue(client, type="echo", id=f"j{n}", payload={"customer": "acme" if n % 2 else "globex"})
    body: dict[str, Any] = {"status": "pending", "q": "ACME"}
    deleted, calls = 0, 0
    while True:
        answer = await (await client.post("/jobs/delete", json=body)).json()
        deleted, calls = deleted + answer["deleted"], calls + 1
        if not answer["more"]:
            break
        body["cursor"] = answer["cursor"]
    assert (deleted, calls) == (4, 3)  # 8 jobs read 3 at a time
    left = await (await client.get("/jobs?status=pending")).json()
    assert sorted(job["id"] for job in left["jobs"]) == ["j0", "j2", "j4", "j6"]


async def test_nodes_lists_this_node_its_workers_and_the_remote_workers_it_serves(make_client: MakeClient) -> None:
    client = await make_client(workers=2)
    service = client.app[SERVICE]

    async def cards() -> list[dict[str, Any]]:
        response = await client.get("/nodes")
        assert response.status == 200, await response.text()
        return list((await response.json())["nodes"])

    deadline = time.monotonic() + 5.0
    while not (found := await cards()):  # written as jobq starts
        assert time.monotonic() < deadline, "this node's card was not written at start"
        await asyncio.sleep(0.01)
    [card] = found
    assert (card["id"], card["pid"], card["version"]) == (service.store.node, os.getpid(), jobq.__version__)
    assert card["workers"] == {"total": 2, "busy": 0} and card["draining"] is False
    assert card["remote_workers"] == [] and card["started_at"] <= card["seen_at"]  # RFC 3339, UTC

    leased = await client.post("/workers/lease", json={"worker": "box-7", "wait": 0})
    assert leased.status == 204  # nothing to run: the worker was seen all the same
    await nodes.announce(service)  # the next beat, without waiting for it
    [card] = await cards()
    assert [worker["name"] for worker in card["remote_workers"]] == ["box-7"]
    assert 0 <= card["remote_workers"][0]["idle_seconds"] < 5
