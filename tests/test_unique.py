"""Unique jobs over HTTP: a duplicate is answered with the job holding the key, and says so."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import FakeClock, MakeClient, wait_for_status
from tests.test_api import assert_problem


async def enqueue(client: TestClient, status: int, **job: Any) -> tuple[dict[str, Any], Any]:
    response = await client.post("/enqueue", json=job)
    assert response.status == status, await response.text()
    return await response.json(), response.headers


async def test_a_duplicate_is_answered_with_the_job_that_holds_the_key(make_client: MakeClient) -> None:
    client = await make_client(workers=0)
    first, headers = await enqueue(client, 202, type="echo", unique_key="report:2026-12")
    assert "Jobq-Duplicate-Of" not in headers
    again, headers = await enqueue(client, 200, type="echo", payload={"other": True}, unique_key="report:2026-12")
    assert again["id"] == first["id"] and headers["Jobq-Duplicate-Of"] == first["id"]
    record = await (await client.get(f"/jobs/{first['id']}")).json()
    assert record["unique"] == {"key": "report:2026-12", "scope": "active", "until": None}
    listed = await (await client.get("/jobs")).json()
    assert len(listed["jobs"]) == 1


async def test_the_key_is_free_once_its_job_finishes_or_its_window_ends(make_client: MakeClient) -> None:
    clock = FakeClock()
    client = await make_client(workers=1, clock=clock)
    first, _ = await enqueue(client, 202, type="echo", unique_key="k1")
    await wait_for_status(client, first["id"], "completed")
    await enqueue(client, 202, type="echo", unique_key="k1")  # active: finished, so free
    window, _ = await enqueue(client, 202, type="echo", unique_key="k2", unique_scope="any", unique_for=60)
    await wait_for_status(client, window["id"], "completed")
    record = await (await client.get(f"/jobs/{window['id']}")).json()
    assert record["unique"]["scope"] == "any" and record["unique"]["until"] is not None
    held, _ = await enqueue(client, 200, type="echo", unique_key="k2")
    assert held["id"] == window["id"]
    clock.advance(60)
    await enqueue(client, 202, type="echo", unique_key="k2")


async def test_a_batch_says_which_jobs_were_duplicates(make_client: MakeClient) -> None:
    client = await make_client(workers=0)
    jobs = [{"type": "echo", "unique_key": "same"}, {"type": "echo", "unique_key": "same"}, {"type": "echo"}]
    answer = await (await client.post("/enqueue/batch", json={"jobs": jobs})).json()
    first, second, third = answer["results"]
    assert (first["code"], second["code"], third["code"]) == (202, 200, 202)
    assert second["id"] == first["id"] and second["duplicate"] is True
    assert "duplicate" not in first and "duplicate" not in third


async def test_unique_terms_without_a_key_or_out_of_range_are_refused(client: TestClient) -> None:
    for job, field in [
        ({"type": "echo", "unique_for": 5}, "unique_scope and unique_for go with a unique_key"),
        ({"type": "echo", "unique_key": "k", "unique_scope": "forever"}, "unique_scope"),
        ({"type": "echo", "unique_key": "k", "unique_for": 0}, "unique_for"),
        ({"type": "echo", "unique_key": ""}, "unique_key"),
    ]:
        await assert_problem(await client.post("/enqueue", json=job), 422, field)


async def test_debounce_replaces_the_waiting_job_so_the_last_of_a_burst_runs(make_client: MakeClient) -> None:
    clock = FakeClock()
    client = await make_client(workers=0, clock=clock)
    ids = []
    for n in range(3):
        answer, headers = await enqueue(
            client, 202, type="echo", payload={"n": n}, unique_key="reindex:42", debounce=30
        )
        assert "Jobq-Duplicate-Of" not in headers
        ids.append(answer["id"])
        clock.advance(10)
    records = [await (await client.get(f"/status/{job_id}")).json() for job_id in ids]
    assert [record["status"] for record in records] == ["cancelled", "cancelled", "scheduled"]
    last = records[-1]
    assert last["payload"] == {"n": 2} and last["unique"]["scope"] == "waiting"
    assert last["next_run_at"] is not None and last["next_run_at"] > records[0]["created_at"]
    batch = [{"type": "echo", "payload": {"n": n}, "unique_key": "reindex:42", "debounce": 30} for n in (3, 4)]
    answer = await (await client.post("/enqueue/batch", json={"jobs": batch})).json()
    assert [result["code"] for result in answer["results"]] == [202, 202]
    statuses = [(await (await client.get(f"/status/{r['id']}")).json())["status"] for r in answer["results"]]
    assert statuses == ["cancelled", "scheduled"]  # within one batch too, the later one wins
    assert (await (await client.get(f"/status/{ids[-1]}")).json())["status"] == "cancelled"


async def test_debounce_needs_a_key_and_sets_its_own_delay(client: TestClient) -> None:
    for job, message in [
        ({"type": "echo", "debounce": 5}, "debounce goes with a unique_key"),
        ({"type": "echo", "unique_key": "k", "debounce": 5, "delay": 1}, "debounce sets the delay"),
        ({"type": "echo", "unique_key": "k", "debounce": 5, "unique_scope": "any"}, "debounce sets the delay"),
        ({"type": "echo", "unique_key": "k", "debounce": 0}, "debounce"),
    ]:
        response = await client.post("/enqueue", json=job)
        await assert_problem(response, 422, message)


async def test_debounce_never_cancels_a_running_job(make_client: MakeClient) -> None:
    client = await make_client(workers=0)
    running, _ = await enqueue(client, 202, type="echo", unique_key="sync")  # holds its key while active
    leased = await (await client.post("/workers/lease", json={"max_jobs": 1})).json()
    assert [job["id"] for job in leased["jobs"]] == [running["id"]]
    answer, headers = await enqueue(client, 200, type="echo", unique_key="sync", debounce=30)
    assert answer["id"] == running["id"] and headers["Jobq-Duplicate-Of"] == running["id"]
    assert (await (await client.get(f"/status/{running['id']}")).json())["status"] == "processing"
