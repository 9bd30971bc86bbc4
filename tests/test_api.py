"""The HTTP API: every endpoint, and every way a request can be wrong."""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from jobq import auth
from jobq.app import create_app
from jobq.auth import Principal, Role, TokenBook, TokenError
from jobq.models import NAME_PATTERN
from tests.conftest import TEST_CONFIG, MakeClient, wait_for_status

PROBLEM = "application/problem+json"


async def assert_problem(response, status: int, detail_part: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status == status
    assert response.content_type == PROBLEM
    body = await response.json()
    assert body["status"] == status
    assert {"type", "title", "detail"} <= body.keys()
    assert detail_part in body["detail"]
    assert "Traceback" not in json.dumps(body)
    return body


async def assert_still_serving(client: TestClient) -> None:
    response = await client.post("/enqueue", json={"type": "echo", "payload": {"ok": 1}})
    assert response.status == 202


async def test_enqueue_answers_202_with_location_and_runs_the_job(client: TestClient) -> None:
    response = await client.post("/enqueue", json={"type": "echo", "payload": {"x": [1, 2]}})
    assert response.status == 202
    job = await response.json()
    assert job["status"] == "pending"
    assert response.headers["Location"] == f"/status/{job['id']}"
    done = await wait_for_status(client, job["id"], "completed")
    assert done["result"] == {"x": [1, 2]}
    assert done["attempts"] == 1
    for stamp in ("created_at", "started_at", "finished_at"):
        assert done[stamp].endswith("Z")
    assert done["created_at"] <= done["started_at"] <= done["finished_at"]


RECEIPT_KEYS = ["id", "status", "queue", "created_at", "next_run_at", "owner"]


async def test_the_202_is_a_receipt_and_get_status_has_the_whole_record(make_client: MakeClient) -> None:
    client = await make_client(workers=0)
    sent = {"type": "echo", "payload": {"to": "ada"}, "queue": "mail", "priority": 3, "delay": 30, "timeout": 5}
    response = await client.post("/enqueue", json=sent)
    assert response.status == 202
    receipt = await response.json()
    assert list(receipt) == RECEIPT_KEYS, "what jobq decided; not the fields the client sent"
    assert response.headers["Location"] == f"/status/{receipt['id']}"
    job = await (await client.get(response.headers["Location"])).json()
    assert receipt == {key: job[key] for key in RECEIPT_KEYS}
    assert (receipt["status"], receipt["queue"], receipt["owner"]) == ("scheduled", "mail", None)
    assert receipt["next_run_at"] == job["run_at"] > receipt["created_at"]
    assert (job["payload"], job["priority"], job["timeout"], job["history"]) == ({"to": "ada"}, 3, 5.0, [])
    now = await (await client.post("/enqueue", json={"type": "echo", "id": "now"})).json()
    assert (now["status"], now["queue"], now["next_run_at"]) == ("pending", "default", None)


async def test_the_receipt_is_json_for_every_character_an_id_a_queue_or_an_owner_may_hold(aiohttp_client: Any) -> None:
    """The receipt is formatted, not serialised: what the name patterns allow must need no escaping."""
    allowed = "".join(c for c in map(chr, range(0x10000)) if re.fullmatch(NAME_PATTERN, "a" + c))
    owners = "".join(c for c in map(chr, range(0x10000)) if auth.NAME_PATTERN.fullmatch("a" + c))
    assert set(allowed) <= set(owners) and not set(owners) & set('"\\'), "a pattern grew: check receipt_response"
    token = "t" * 32
    app = create_app(replace(TEST_CONFIG, workers=0), tokens=TokenBook([(token, Principal("a" + owners, Role.CLIENT))]))
    client = await aiohttp_client(app)
    sent = {"type": "echo", "id": "a" + allowed, "queue": "q" + allowed, "delay": 5}
    response = await client.post("/enqueue", json=sent, headers={"Authorization": f"Bearer {token}"})
    assert response.status == 202
    receipt = json.loads(await response.read())
    job = await (await client.get(response.headers["Location"], headers={"Authorization": f"Bearer {token}"})).json()
    assert receipt == {key: job[key] for key in RECEIPT_KEYS}
    assert (receipt["id"], receipt["queue"], receipt["owner"]) == (sent["id"], sent["queue"], "a" + owners)


def test_a_token_book_refuses_a_name_a_receipt_could_not_carry() -> None:
    with pytest.raises(TokenError, match="not a token name"):
        TokenBook([("t" * 32, Principal('ev"il', Role.CLIENT))])


async def test_a_replay_answers_the_stored_jobs_receipt_and_wait_answers_the_whole_record(client: TestClient) -> None:
    first = await client.post("/enqueue?wait=5", json={"type": "echo", "id": "twice", "payload": {"n": 1}})
    assert first.status == 200
    done = await first.json()
    assert (done["status"], done["result"]) == ("completed", {"n": 1}), "?wait= answers the whole record"
    again = await client.post("/enqueue", json={"type": "echo", "id": "twice", "payload": {"n": 1}})
    assert again.status == 200
    assert await again.json() == {key: done[key] for key in RECEIPT_KEYS}, "the job as it is now"
    assert again.headers["Location"] == "/status/twice"
    waited = await client.post("/enqueue?wait=5", json={"type": "echo", "id": "twice", "payload": {"n": 1}})
    assert (waited.status, await waited.json()) == (200, done)


async def test_failing_handler_marks_job_failed_with_its_error(client: TestClient) -> None:
    response = await client.post("/enqueue", json={"type": "fail", "payload": {"message": "disk on fire"}})
    job = await wait_for_status(client, (await response.json())["id"], "failed")
    assert job["error"] == "JobFailed: disk on fire"
    assert job["finished_at"] is not None


async def test_same_id_same_body_is_idempotent_and_other_body_conflicts(make_client: MakeClient) -> None:
    client = await make_client(workers=0)
    first = await client.post("/enqueue", json={"id": "order-42", "type": "echo", "payload": {"n": 1}})
    assert first.status == 202
    again = await client.post("/enqueue", json={"id": "order-42", "type": "echo", "payload": {"n": 1}})
    assert again.status == 200
    assert (await again.json())["created_at"] == (await first.json())["created_at"]
    other = await client.post("/enqueue", json={"id": "order-42", "type": "echo", "payload": {"n": 2}})
    await assert_problem(other, 409, "order-42")
    float_one = await client.post("/enqueue", json={"id": "order-42", "type": "echo", "payload": {"n": 1.0}})
    await assert_problem(float_one, 409, "order-42")  # 1.0 is not the 1 that was sent


async def test_status_of_unknown_id_is_404(client: TestClient) -> None:
    await assert_problem(await client.get("/status/nope"), 404, "nope")


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[" * 5000 + b"]" * 5000, "recursion limit"),
        (b'{"type": "echo", "payload": ' + b"9" * 5000 + b"}", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b'{"type": "echo", "payload": {"x": NaN}}', "not valid JSON"),
        (b'{"type": "echo", "payload": [-Infinity]}', "not valid JSON"),
        (b'{"type": "echo", "payload": {"x": [1e999]}}', "too large"),
        (b'{"type": "echo", "payload": {"x": ' + b"1" * 400 + b".5}}", "too large"),
    ],
    ids=[
        "truncated",
        "empty",
        "deeply-nested",
        "huge-integer",
        "not-utf8",
        "nan",
        "infinity",
        "overflow",
        "long-float",
    ],
)
async def test_malformed_bodies_are_400(client: TestClient, body: bytes, detail: str) -> None:
    await assert_problem(await client.post("/enqueue", data=body), 400, detail)
    if body:  # the same inside a batch ([] alone is a valid, if empty, list)
        batch = b'{"jobs": [' + body + b"]}"
        await assert_problem(await client.post("/enqueue/batch", data=batch), 400, detail)
    await assert_still_serving(client)


async def test_large_but_finite_numbers_are_accepted(client: TestClient) -> None:
    response = await client.post("/enqueue", json={"type": "echo", "payload": {"x": 1e300, "y": -2.5e-300}})
    assert response.status == 202
    job = await (await client.get(response.headers["Location"])).json()
    assert job["payload"] == {"x": 1e300, "y": -2.5e-300}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"payload": {}}, "type"),
        ({"type": 7}, "type"),
        ({"type": "echo", "priority": "high"}, "priority"),
        ({"type": "echo", "delay": -1}, "delay"),
        ({"type": "echo", "queue": "bad queue!"}, "queue"),
        ({"type": "echo", "timeout": 10**9}, "timeout"),
        ({"type": "echo", "surprise": True}, "surprise"),
        ([1, 2, 3], "(body)"),
    ],
)
async def test_invalid_fields_are_422_naming_the_field(client: TestClient, body: object, field: str) -> None:
    problem = await assert_problem(await client.post("/enqueue", json=body), 422, field)
    assert field in [error["field"] for error in problem["errors"]]
    await assert_still_serving(client)


async def test_a_job_is_an_invalid_job_and_anything_else_an_invalid_request(client: TestClient) -> None:
    job = await assert_problem(
        await client.post("/enqueue", json={"type": "echo", "priority": "high"}), 422, "priority"
    )
    assert (job["title"], job["type"]) == ("Invalid job", "https://jobq.dev/problems/invalid-job")
    assert job["detail"].startswith("the job is invalid: ")
    refusals = [
        await client.get("/jobs?limit=100000"),
        await client.get("/jobs?status=bogus"),
        await client.post("/workers/lease", json={"max_jobs": "many"}),
        await client.post("/queues/bad%20name!/pause"),
        await client.post("/schedules", json={"name": "s", "every": 60, "timezone": "Mars/Olympus", "job": {}}),
    ]
    for response in refusals:
        problem = await assert_problem(response, 422, "")
        assert (problem["title"], problem["type"]) == ("Invalid request", "https://jobq.dev/problems/invalid-request")
        assert "Value error" not in problem["detail"], problem  # pydantic's prefix is not shown
        assert "job" not in problem["detail"].split(":")[0], problem


async def test_unknown_job_type_is_422(client: TestClient) -> None:
    problem = await assert_problem(
        await client.post("/enqueue", json={"type": "launch_rockets"}), 422, "launch_rockets"
    )
    assert problem["errors"][0]["field"] == "type"


async def test_oversized_body_is_413(make_client: MakeClient) -> None:
    client = await make_client(body_limit=1024)
    big = {"type": "echo", "payload": {"blob": "x" * 4096}}
    await assert_problem(await client.post("/enqueue", json=big), 413, "1024")
    await assert_still_serving(client)


async def test_wrong_method_is_405_with_allow(client: TestClient) -> None:
    response = await client.get("/enqueue")
    await assert_problem(response, 405, "GET")
    assert response.headers["Allow"] == "POST"


async def test_full_queue_is_503_with_retry_after_and_loses_nothing(make_client: MakeClient) -> None:
    client = await make_client(workers=0, queue_size=2)
    accepted = [await (await client.post("/enqueue", json={"type": "noop"})).json() for _ in range(2)]
    response = await client.post("/enqueue", json={"type": "noop"})
    await assert_problem(response, 503, "limit")
    assert response.headers["Retry-After"]
    for job in accepted:
        assert (await (await client.get(f"/status/{job['id']}")).json())["status"] == "pending"


async def test_unknown_route_is_404_problem(client: TestClient) -> None:
    await assert_problem(await client.get("/no/such/route"), 404, "/no/such/route")


async def test_health_is_cheap_and_ok(client: TestClient) -> None:
    response = await client.get("/health")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_stats_counts_jobs_per_status(client: TestClient) -> None:
    ids = [(await (await client.post("/enqueue", json={"type": t})).json())["id"] for t in ("noop", "noop", "fail")]
    for job_id in ids:
        await wait_for_status(client, job_id, "completed", "failed")
    deadline = time.monotonic() + 5
    while (stats := await (await client.get("/stats")).json())["workers"]["busy"]:
        assert time.monotonic() < deadline, "workers still busy"  # settling: the final write commits
        await asyncio.sleep(0.01)
    assert stats["jobs"]["completed"] == 2
    assert stats["jobs"]["failed"] == 1
    assert stats["queue_depth"] == 0
    assert stats["workers"] == {"total": 4, "busy": 0}
    assert stats["jobs_per_second"] > 0
    assert stats["uptime_seconds"] >= 0
    assert stats["waiting_requests"] == 0
    assert stats["queues"]["default"]["completed"] == 2


async def test_batch_answers_each_job(client: TestClient) -> None:
    response = await client.post(
        "/enqueue/batch",
        json={"jobs": [{"type": "noop"}, {"type": "nope"}, {"type": "echo", "priority": "x"}, "x", {"type": "echo"}]},
    )
    assert response.status == 200
    body = await response.json()
    assert (body["accepted"], body["rejected"]) == (2, 3)
    assert [r["code"] for r in body["results"]] == [202, 422, 422, 422, 202]  # a non-object item is its own 422
    assert body["results"][2]["problem"]["errors"][0]["field"] == "priority"
    assert (await client.get(f"/status/{body['results'][4]['id']}")).status == 200


async def test_batch_over_the_limit_is_422(make_client: MakeClient) -> None:
    client = await make_client(batch_limit=2)
    response = await client.post("/enqueue/batch", json={"jobs": [{"type": "noop"}] * 3})
    body = await assert_problem(response, 422, "at most 2")
    assert body["errors"][0]["field"] == "jobs"


async def test_cancel_pending_job_and_refuse_cancel_of_finished(make_client: MakeClient) -> None:
    client = await make_client(workers=0)
    job = await (await client.post("/enqueue", json={"type": "noop"})).json()
    response = await client.post(f"/jobs/{job['id']}/cancel")
    assert response.status == 200
    assert (await response.json())["status"] == "cancelled"
    await assert_problem(await client.post(f"/jobs/{job['id']}/cancel"), 409, "cancelled")
    await assert_problem(await client.post("/jobs/missing/cancel"), 404, "missing")
