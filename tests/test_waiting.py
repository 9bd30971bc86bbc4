"""Synchronous submit (``POST /enqueue?wait=``) and long-polled status (``GET /status/{id}?wait=``)."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient

from jobq.api import SERVICE
from jobq.handlers import Registry
from tests.conftest import MakeClient
from tests.test_workers import Gate, enqueue


async def test_enqueue_and_wait_answers_200_with_the_result(client: TestClient) -> None:
    response = await client.post("/enqueue", params={"wait": "5"}, json={"type": "echo", "payload": {"n": 7}})
    assert response.status == 200
    job = await response.json()
    assert (job["status"], job["result"]) == ("completed", {"n": 7})


async def test_enqueue_and_wait_answers_the_error_of_a_failed_job(client: TestClient) -> None:
    response = await client.post("/enqueue?wait=5", json={"type": "fail", "payload": {"message": "no"}})
    assert response.status == 200
    assert (await response.json())["error"] == "JobFailed: no"


async def test_wait_timeout_answers_202_and_the_job_goes_on(registry: Registry, make_client: MakeClient) -> None:
    gate = Gate(expected=1)
    registry.register("gate")(gate.handler)
    client = await make_client()
    response = await client.post("/enqueue?wait=0.2", json={"type": "gate"})
    assert response.status == 202
    job = await response.json()
    assert job["status"] in ("pending", "processing")
    gate.release.set()
    done = await client.get(f"/status/{job['id']}", params={"wait": "5"})
    body = await done.json()
    while body["status"] != "completed":  # each long-poll returns at the next change
        body = await (await client.get(f"/status/{job['id']}", params={"wait": "5"})).json()
    assert body["result"] == 1


async def test_status_wait_returns_at_the_next_change(registry: Registry, make_client: MakeClient) -> None:
    gate = Gate(expected=1)
    registry.register("gate")(gate.handler)
    client = await make_client()
    job_id = await enqueue(client, "gate")
    await asyncio.wait_for(gate.all_inside.wait(), timeout=5)
    polling = asyncio.create_task(client.get(f"/status/{job_id}", params={"wait": "30"}))
    await asyncio.sleep(0.05)  # let the poll park; if it has not, it still sees the change below
    gate.release.set()
    response = await asyncio.wait_for(polling, timeout=5)
    assert (await response.json())["status"] == "completed"


async def test_a_thousand_waiting_clients_all_get_their_answers(make_client: MakeClient) -> None:
    client = await make_client(workers=8)

    async def submit(i: int) -> dict:
        response = await client.post("/enqueue?wait=30", json={"type": "echo", "payload": {"i": i}})
        assert response.status == 200
        return await response.json()

    answers = await asyncio.gather(*(submit(i) for i in range(1000)))
    assert [a["result"] for a in answers] == [{"i": i} for i in range(1000)]
    assert not client.app[SERVICE]._change_waiters  # no waiter is left behind


async def test_bad_wait_is_422(client: TestClient) -> None:
    for bad in ("soon", "-1", "nan", "1e9"):
        response = await client.post(f"/enqueue?wait={bad}", json={"type": "noop"})
        assert response.status == 422, bad
    assert (await client.get("/status/x?wait=soon")).status == 422


async def test_drain_answers_status_long_polls_at_once(registry: Registry, make_client: MakeClient) -> None:
    gate = Gate(expected=1)
    registry.register("gate")(gate.handler)
    client = await make_client(drain_timeout=5.0)
    job_id = await enqueue(client, "gate")
    await asyncio.wait_for(gate.all_inside.wait(), timeout=5)
    polling = asyncio.create_task(client.get(f"/status/{job_id}", params={"wait": "60"}))
    await asyncio.sleep(0.05)
    draining = asyncio.create_task(client.app[SERVICE].drain())
    response = await asyncio.wait_for(polling, timeout=5)
    assert (await response.json())["status"] == "processing"
    gate.release.set()
    await draining
