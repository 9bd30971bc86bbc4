"""The gRPC API, driven through a real grpc.aio channel to a server on the app's own store and loop."""

from __future__ import annotations

import asyncio
import errno
import json
import math
import re
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp.test_utils import TestClient
from google.protobuf import descriptor_pb2, json_format
from google.protobuf.struct_pb2 import Value
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from jobq.api import SERVICE
from jobq.auth import Principal, Role, TokenBook
from jobq.config import Config
from jobq.errors import (
    BadRequest,
    IdReused,
    InvalidTransition,
    JobNotFound,
    JobqError,
    QueueFull,
    ShuttingDown,
    StaleLease,
    StoreFull,
    StoreUnavailable,
    UnknownJobType,
    ValidationFailed,
)
from jobq.handlers import JobContext, Registry
from jobq.rpc import convert, generate
from jobq.rpc.gen import jobq_pb2 as pb
from jobq.rpc.gen import jobq_pb2_grpc as pb_grpc
from jobq.rpc.server import GrpcServer, start_grpc_server
from jobq.rpc.status import status_code
from jobq.service import JobService
from tests.conftest import MakeClient, wait_for_status
from tests.procs import ServerProcess, free_port

Code = grpc.StatusCode


@dataclass
class Rig:
    """An HTTP test client and a gRPC server over the same JobService, and a channel to the server."""

    client: TestClient
    service: JobService
    server: GrpcServer
    channel: grpc.aio.Channel
    jobs: pb_grpc.JobServiceStub
    workers: pb_grpc.WorkerServiceStub
    admin: pb_grpc.AdminServiceStub


MakeRig = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def make_rig(make_client: MakeClient) -> AsyncIterator[MakeRig]:
    """Build a rig with app config overrides, e.g. ``await make_rig(workers=0)``; ``tokens=`` requires auth."""
    opened: list[tuple[GrpcServer, grpc.aio.Channel]] = []

    async def build(tokens: TokenBook | None = None, **overrides: Any) -> Rig:
        client = await make_client(**overrides)
        service = client.app[SERVICE]
        server = await start_grpc_server(service, "127.0.0.1", 0, tokens=tokens)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        opened.append((server, channel))
        stubs = (pb_grpc.JobServiceStub(channel), pb_grpc.WorkerServiceStub(channel), pb_grpc.AdminServiceStub(channel))
        return Rig(client, service, server, channel, *stubs)

    yield build
    for server, channel in opened:
        await channel.close()
        await server.stop(0)


@pytest.fixture
async def rig(make_rig: MakeRig) -> Rig:
    """A rig whose app runs no workers: jobs stay where the test puts them."""
    return await make_rig(workers=0)


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    """The error a call ends with (fails the test if it succeeds)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def trailing(error: grpc.aio.AioRpcError) -> dict[str, str]:
    return {key: value for key, value in error.trailing_metadata() or ()}


def value(data: Any) -> Value:
    return json_format.ParseDict(data, Value())


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def as_record(job: pb.Job) -> dict[str, Any]:
    """A jobq.v1.Job in the shape of the HTTP job record, times as datetimes, for comparison."""
    data = json_format.MessageToDict(job, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    record = normalised({field.name: None for field in pb.Job.DESCRIPTOR.fields} | data)
    if record["held"] is None:  # the HTTP record has it only while a limit holds the job back
        del record["held"]
    if not record["children"]:  # and children only while jobs depend on it
        del record["children"]
    if record["workflow"] is not None:  # a job enqueued on its own with depends_on has no workflow id
        record["workflow"].setdefault("id", None)
    return record


def normalised(record: dict[str, Any]) -> dict[str, Any]:
    """Times as datetimes, the status in lower case, and every history entry likewise."""
    out = {key: moment(item) if key.endswith("_at") and item else item for key, item in record.items()}
    if isinstance(out.get("status"), str):
        out["status"] = out["status"].removeprefix("JOB_STATUS_").lower()
    if "history" in out:
        fields = [field.name for field in pb.Attempt.DESCRIPTOR.fields]
        out["history"] = [normalised({name: None for name in fields} | attempt) for attempt in out["history"]]
    return out


async def http_record(client: TestClient, job_id: str) -> dict[str, Any]:
    response = await client.get(f"/status/{job_id}")
    assert response.status == 200, await response.text()
    return await response.json()


async def http_enqueue(client: TestClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/enqueue", json=body)
    assert response.status == 202, await response.text()
    return await response.json()


# -- one store behind both APIs ----------------------------------------------
async def test_enqueue_over_grpc_is_the_same_job_over_http(rig: Rig) -> None:
    payload = {"w": 10, "tags": ["a", "b"], "nested": {"ratio": 1.5, "none": None, "ok": True}, "empty": {}}
    request = pb.EnqueueRequest(
        type="resize", payload=value(payload), id="img-1", queue="media", priority=5, max_attempts=3, timeout=2.5
    )
    answer = await rig.jobs.Enqueue(request)
    assert answer.created
    assert answer.job.status == pb.JOB_STATUS_PENDING

    record = await http_record(rig.client, "img-1")
    assert record["payload"] == payload
    raw = await (await rig.client.get("/status/img-1")).text()
    assert re.search(r'"w":10[,}]', raw)  # a whole number stays an integer, not 10.0
    assert (record["queue"], record["priority"], record["max_attempts"], record["timeout"]) == ("media", 5, 3, 2.5)
    assert normalised(record) == as_record(answer.job)

    replay = await rig.jobs.Enqueue(request)
    assert not replay.created
    assert replay.job.created_at == answer.job.created_at


async def test_a_unique_key_over_grpc_answers_a_duplicate_with_the_holder(rig: Rig) -> None:
    request = pb.EnqueueRequest(type="resize", unique_key="img:42", unique_scope="any", unique_for=60)
    first = await rig.jobs.Enqueue(request)
    assert (first.created, first.duplicate) == (True, False)
    assert (first.job.unique.key, first.job.unique.scope) == ("img:42", "any") and first.job.unique.HasField("until")
    again = await rig.jobs.Enqueue(pb.EnqueueRequest(type="resize", unique_key="img:42"))
    assert (again.created, again.duplicate, again.job.id) == (False, True, first.job.id)
    record = await http_record(rig.client, first.job.id)
    assert record["unique"]["key"] == "img:42"
    refused = await rpc_error(rig.jobs.Enqueue(pb.EnqueueRequest(type="resize", unique_for=5)))
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT and "go with a unique_key" in refused.details()


async def test_a_concurrency_key_over_grpc_is_on_the_record_as_over_http(rig: Rig) -> None:
    keyed = await rig.jobs.Enqueue(pb.EnqueueRequest(type="sync", concurrency_key="acme", concurrency_limit=2))
    assert (keyed.job.concurrency.key, keyed.job.concurrency.limit) == ("acme", 2)
    record = await http_record(rig.client, keyed.job.id)
    assert record["concurrency"] == {"key": "acme", "limit": 2}
    assert as_record(keyed.job) == normalised(record)
    queue_limit = (await rig.jobs.Enqueue(pb.EnqueueRequest(type="sync", concurrency_key="globex"))).job
    assert queue_limit.concurrency.key == "globex" and not queue_limit.concurrency.HasField("limit")
    assert (await http_record(rig.client, queue_limit.id))["concurrency"] == {"key": "globex", "limit": None}
    unkeyed = (await rig.jobs.Enqueue(pb.EnqueueRequest(type="sync"))).job
    assert not unkeyed.HasField("concurrency")
    assert (await http_record(rig.client, unkeyed.id))["concurrency"] is None
    refused = await rpc_error(rig.jobs.Enqueue(pb.EnqueueRequest(type="sync", concurrency_limit=2)))
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "concurrency_limit goes with a concurrency_key" in refused.details()


async def test_enqueue_over_http_reads_the_same_over_grpc(rig: Rig) -> None:
    job = await http_enqueue(rig.client, type="report", payload=[1, "two", {"three": 3.25}], delay=60, priority=-3)
    message = await rig.jobs.GetJob(pb.GetJobRequest(id=job["id"]))
    assert message.status == pb.JOB_STATUS_SCHEDULED
    assert message.HasField("next_run_at")
    assert convert.from_value(message.payload, "payload") == [1, "two", {"three": 3.25}]
    assert as_record(message) == normalised(await http_record(rig.client, job["id"]))


async def test_run_at_and_defaults_match_http(rig: Rig) -> None:
    request = pb.EnqueueRequest(type="later")
    later = datetime.fromtimestamp(int(time.time()) + 30 * 86400, UTC)  # within the 366 days run_at may be ahead
    request.run_at.FromJsonString(later.strftime("%Y-%m-%dT%H:%M:%SZ"))
    job = (await rig.jobs.Enqueue(request)).job
    record = await http_record(rig.client, job.id)
    assert (record["status"], record["run_at"]) == ("scheduled", later.strftime("%Y-%m-%dT%H:%M:%S.000Z"))
    assert (record["payload"], record["queue"], record["priority"], record["max_attempts"]) == ({}, "default", 0, 1)
    assert record["timeout"] is None


async def test_cancel_and_list_jobs(rig: Rig) -> None:
    ids = [(await http_enqueue(rig.client, type="page", queue="pages"))["id"] for _ in range(3)]
    await http_enqueue(rig.client, type="other", queue="elsewhere")
    first = await rig.jobs.ListJobs(pb.ListJobsRequest(queue="pages", limit=2))
    assert [job.id for job in first.jobs] == ids[:0:-1]  # newest first
    assert first.HasField("next_cursor")
    second = await rig.jobs.ListJobs(pb.ListJobsRequest(queue="pages", limit=2, cursor=first.next_cursor))
    assert [job.id for job in second.jobs] == [ids[0]]
    assert not second.HasField("next_cursor")

    cancelled = await rig.jobs.CancelJob(pb.CancelJobRequest(id=ids[1]))
    assert cancelled.status == pb.JOB_STATUS_CANCELLED
    assert (await http_record(rig.client, ids[1]))["status"] == "cancelled"
    only = await rig.jobs.ListJobs(pb.ListJobsRequest(status=pb.JOB_STATUS_CANCELLED))
    assert [job.id for job in only.jobs] == [ids[1]]
    everything = await rig.jobs.ListJobs(pb.ListJobsRequest())
    assert len(everything.jobs) == 4


# -- WatchJob --------------------------------------------------------------------
class Gate:
    """A handler that waits until released, and says when it has started."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def handler(self, ctx: JobContext) -> dict[str, Any]:
        self.started.set()
        await self.release.wait()
        return {"done": ctx.payload}


async def test_watch_job_streams_every_state_to_the_end(registry: Registry, make_rig: MakeRig) -> None:
    gate = Gate()
    registry.register("gated")(gate.handler)
    rig = await make_rig(workers=1)
    assert (await rig.client.post("/queues/held/pause")).status == 200
    job_id = (await rig.jobs.Enqueue(pb.EnqueueRequest(type="gated", queue="held", payload=value(7)))).job.id

    stream = rig.jobs.WatchJob(pb.WatchJobRequest(id=job_id), timeout=10)
    seen = [await stream.read()]
    assert seen[0].status == pb.JOB_STATUS_PENDING
    assert (await rig.client.post("/queues/held/resume")).status == 200
    seen.append(await stream.read())
    assert seen[1].status == pb.JOB_STATUS_PROCESSING
    await asyncio.wait_for(gate.started.wait(), 5)
    gate.release.set()
    seen.append(await stream.read())
    assert await stream.read() is grpc.aio.EOF
    assert await stream.code() == Code.OK

    assert [job.status for job in seen] == [pb.JOB_STATUS_PENDING, pb.JOB_STATUS_PROCESSING, pb.JOB_STATUS_COMPLETED]
    assert convert.from_value(seen[-1].result, "result") == {"done": 7}
    assert as_record(seen[-1]) == normalised(await http_record(rig.client, job_id))


async def test_watch_job_ends_on_cancel_and_knows_missing_jobs(rig: Rig) -> None:
    job_id = (await http_enqueue(rig.client, type="slow"))["id"]
    stream = rig.jobs.WatchJob(pb.WatchJobRequest(id=job_id), timeout=10)
    assert (await stream.read()).status == pb.JOB_STATUS_PENDING
    await rig.client.post(f"/jobs/{job_id}/cancel")
    assert (await stream.read()).status == pb.JOB_STATUS_CANCELLED
    assert await stream.read() is grpc.aio.EOF

    finished = [job async for job in rig.jobs.WatchJob(pb.WatchJobRequest(id=job_id), timeout=5)]
    assert [job.status for job in finished] == [pb.JOB_STATUS_CANCELLED]  # a finished job: one message

    missing = rig.jobs.WatchJob(pb.WatchJobRequest(id="nope"), timeout=5)
    error = await rpc_error(missing.read())
    assert error.code() == Code.NOT_FOUND
    assert "nope" in (error.details() or "")


async def test_watch_job_honours_the_deadline(rig: Rig) -> None:
    job_id = (await http_enqueue(rig.client, type="never"))["id"]
    started = time.monotonic()
    stream = rig.jobs.WatchJob(pb.WatchJobRequest(id=job_id), timeout=0.5)
    assert (await stream.read()).status == pb.JOB_STATUS_PENDING
    error = await rpc_error(stream.read())
    assert error.code() == Code.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 5


async def test_a_watch_follows_its_job_through_a_drain_to_the_end(registry: Registry, make_rig: MakeRig) -> None:
    gate = Gate()
    registry.register("gated")(gate.handler)
    rig = await make_rig(workers=1)
    job_id = (await rig.jobs.Enqueue(pb.EnqueueRequest(type="gated", payload=value("x")))).job.id
    await asyncio.wait_for(gate.started.wait(), 5)
    before = rig.jobs.WatchJob(pb.WatchJobRequest(id=job_id), timeout=10)
    assert (await before.read()).status == pb.JOB_STATUS_PROCESSING
    draining = asyncio.ensure_future(rig.service.drain())  # waits for the gated job
    await asyncio.sleep(0)
    assert rig.service.draining
    during = rig.jobs.WatchJob(pb.WatchJobRequest(id=job_id), timeout=10)  # a watch begun during the drain
    assert (await during.read()).status == pb.JOB_STATUS_PROCESSING
    reads = [asyncio.ensure_future(stream.read()) for stream in (before, during)]
    await asyncio.sleep(0.3)
    assert not any(read.done() for read in reads)  # the drain neither ends the watches nor sends anything
    gate.release.set()
    for read, stream in zip(reads, (before, during), strict=True):
        last = await asyncio.wait_for(read, 5)
        assert last.status == pb.JOB_STATUS_COMPLETED
        assert convert.from_value(last.result, "result") == {"done": "x"}
        assert await stream.read() is grpc.aio.EOF
        assert await stream.code() == Code.OK
    assert (await asyncio.wait_for(draining, 5)).finished == 1


async def test_after_a_drain_stop_cuts_a_watch_whose_job_never_finished(rig: Rig) -> None:
    job_id = (await http_enqueue(rig.client, type="never"))["id"]  # no workers: it stays pending
    stream = rig.jobs.WatchJob(pb.WatchJobRequest(id=job_id), timeout=10)
    assert (await stream.read()).status == pb.JOB_STATUS_PENDING
    await rig.service.drain()
    reading = asyncio.ensure_future(stream.read())
    await asyncio.sleep(0.2)
    assert not reading.done()  # still watching after the drain
    await asyncio.wait_for(rig.server.stop(grace=0.5), 5)
    error = await rpc_error(reading)
    assert error.code() in (Code.CANCELLED, Code.UNAVAILABLE)


# -- a remote worker over gRPC ----------------------------------------------------
async def test_settle_completes_and_fails_many_jobs_each_with_its_own_result(make_rig: MakeRig) -> None:
    rig = await make_rig(workers=0, batch_limit=3)
    ids = [(await http_enqueue(rig.client, type="resize", max_attempts=2))["id"] for _ in range(3)]
    leases = {job.job.id: job.lease_id for job in (await rig.workers.Lease(pb.LeaseRequest(max_jobs=3))).jobs}
    request = pb.SettleRequest(
        jobs=[
            pb.Settlement(complete=pb.CompleteRequest(id=ids[0], lease_id=leases[ids[0]], result=value({"w": 1}))),
            pb.Settlement(fail=pb.FailRequest(id=ids[1], lease_id=leases[ids[1]], error="corrupt", retry_in=60)),
            pb.Settlement(complete=pb.CompleteRequest(id=ids[2], lease_id="stale")),
        ]
    )
    results = (await rig.workers.Settle(request)).results
    assert [(r.id, r.code) for r in results] == [(ids[0], 0), (ids[1], 0), (ids[2], Code.FAILED_PRECONDITION.value[0])]
    assert [r.status for r in results[:2]] == [pb.JOB_STATUS_COMPLETED, pb.JOB_STATUS_RETRYING]
    assert "stale" in results[2].message
    done = await (await rig.client.get(f"/status/{ids[0]}")).json()
    assert done["result"] == {"w": 1}  # read back over HTTP
    too_many = await rpc_error(rig.workers.Settle(pb.SettleRequest(jobs=list(request.jobs) * 2)))
    assert too_many.code() is Code.INVALID_ARGUMENT
    empty = await rpc_error(rig.workers.Settle(pb.SettleRequest(jobs=[pb.Settlement()])))
    assert empty.code() is Code.INVALID_ARGUMENT and "complete or fail" in (empty.details() or "")


async def test_remote_worker_leases_heartbeats_and_completes(rig: Rig) -> None:
    polling = asyncio.ensure_future(
        rig.workers.Lease(pb.LeaseRequest(wait=10, max_jobs=5, queues=["remote"], worker="w-1"), timeout=15)
    )
    await asyncio.sleep(0)  # let the long-poll start before the job exists; the poll works either way
    job_id = (await http_enqueue(rig.client, type="resize", queue="remote", payload={"w": 3}))["id"]
    [leased] = (await asyncio.wait_for(polling, 10)).jobs
    assert leased.job.id == job_id
    assert leased.job.status == pb.JOB_STATUS_PROCESSING
    assert leased.lease_id
    assert convert.from_value(leased.job.payload, "payload") == {"w": 3}

    beat = await rig.workers.Heartbeat(pb.HeartbeatRequest(id=job_id, lease_id=leased.lease_id, lease=120))
    assert beat.lease_id == leased.lease_id
    assert beat.job.lease_expires_at.ToDatetime() > leased.job.lease_expires_at.ToDatetime()

    done = await rig.workers.Complete(pb.CompleteRequest(id=job_id, lease_id=leased.lease_id, result=value({"ok": 1})))
    assert done.status == pb.JOB_STATUS_COMPLETED
    record = await http_record(rig.client, job_id)
    assert (record["status"], record["result"]) == ("completed", {"ok": 1})
    assert [(a["worker"], a["outcome"]) for a in record["history"]] == [("w-1", "completed")]

    # the same Complete again (a lost answer, retried) is answered the same; the first result stays
    again = await rig.workers.Complete(pb.CompleteRequest(id=job_id, lease_id=leased.lease_id, result=value(2)))
    assert again.status == pb.JOB_STATUS_COMPLETED
    assert convert.from_value(again.result, "result") == {"ok": 1}
    assert (await http_record(rig.client, job_id))["result"] == {"ok": 1}


async def test_stale_lease_is_failed_precondition_and_changes_nothing(rig: Rig) -> None:
    job_id = (await http_enqueue(rig.client, type="resize"))["id"]
    [leased] = (await rig.workers.Lease(pb.LeaseRequest())).jobs
    calls = [
        rig.workers.Complete(pb.CompleteRequest(id=job_id, lease_id="not-it", result=value(1))),
        rig.workers.Heartbeat(pb.HeartbeatRequest(id=job_id, lease_id="not-it")),
        rig.workers.Fail(pb.FailRequest(id=job_id, lease_id="not-it", error="x")),
        rig.workers.Release(pb.ReleaseRequest(id=job_id, lease_id="not-it")),
    ]
    for call in calls:
        error = await rpc_error(call)
        assert error.code() == Code.FAILED_PRECONDITION
        assert "not-it" in (error.details() or "")
        assert trailing(error)["jobq-error"] == StaleLease.title
    record = await http_record(rig.client, job_id)
    assert (record["status"], record["result"], record["attempts"]) == ("processing", None, 1)
    finished = await rig.workers.Complete(pb.CompleteRequest(id=job_id, lease_id=leased.lease_id))
    assert finished.status == pb.JOB_STATUS_COMPLETED
    late = await rpc_error(rig.workers.Fail(pb.FailRequest(id=job_id, lease_id=leased.lease_id, error="late")))
    assert late.code() == Code.FAILED_PRECONDITION


async def test_fail_retries_then_gives_up_and_release_requeues(rig: Rig) -> None:
    job_id = (await http_enqueue(rig.client, type="flaky", max_attempts=2))["id"]
    [first] = (await rig.workers.Lease(pb.LeaseRequest())).jobs
    retrying = await rig.workers.Fail(pb.FailRequest(id=job_id, lease_id=first.lease_id, error="nope", retry_in=0))
    assert retrying.status == pb.JOB_STATUS_RETRYING
    [second] = (await rig.workers.Lease(pb.LeaseRequest(wait=5), timeout=10)).jobs
    assert second.job.attempts == 2
    released = await rig.workers.Release(pb.ReleaseRequest(id=job_id, lease_id=second.lease_id))
    assert released.status == pb.JOB_STATUS_PENDING
    [third] = (await rig.workers.Lease(pb.LeaseRequest())).jobs
    dead = await rig.workers.Fail(
        pb.FailRequest(id=job_id, lease_id=third.lease_id, error="timed out", outcome=pb.FAIL_OUTCOME_TIMEOUT)
    )
    assert dead.status == pb.JOB_STATUS_DEAD
    assert [attempt.outcome for attempt in dead.history] == ["failed", "released", "timeout"]
    assert (await http_record(rig.client, job_id))["error"] == "timed out"


async def test_lease_takes_only_the_asked_types_and_a_fail_keeps_its_traceback(rig: Rig) -> None:
    wanted = (await http_enqueue(rig.client, type="flaky"))["id"]
    await http_enqueue(rig.client, type="echo")
    [leased] = (await rig.workers.Lease(pb.LeaseRequest(max_jobs=5, types=["flaky"]))).jobs
    assert leased.job.id == wanted
    failed = await rig.workers.Fail(
        pb.FailRequest(id=wanted, lease_id=leased.lease_id, error="boom", traceback="Traceback\nValueError: boom")
    )
    assert failed.history[-1].traceback == "Traceback\nValueError: boom"


async def test_lease_caps_its_wait_by_the_deadline(rig: Rig) -> None:
    started = time.monotonic()
    answer = await rig.workers.Lease(pb.LeaseRequest(wait=30), timeout=1.0)  # answered, not DEADLINE_EXCEEDED
    assert list(answer.jobs) == []
    assert time.monotonic() - started < 1.0
    job_id = (await http_enqueue(rig.client, type="after"))["id"]
    assert (await http_record(rig.client, job_id))["status"] == "pending"  # no forgotten poll took it


class PollWatch:
    """Wraps ``Store.lease`` to tell when a long-poll starts and when it ends."""

    def __init__(self, lease: Callable[..., Awaitable[list[Any]]]) -> None:
        self._lease = lease
        self.started = asyncio.Event()
        self.ended = asyncio.Event()

    async def lease(self, *args: Any, **kwargs: Any) -> list[Any]:
        self.started.set()
        try:
            return await self._lease(*args, **kwargs)
        finally:
            self.ended.set()


async def test_a_cancelled_lease_stops_polling_and_takes_no_job(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    polls = PollWatch(rig.service.store.lease)
    monkeypatch.setattr(rig.service.store, "lease", polls.lease)
    call = rig.workers.Lease(pb.LeaseRequest(wait=30))
    await asyncio.wait_for(polls.started.wait(), 5)
    call.cancel()  # the worker goes away mid-poll
    await asyncio.wait_for(polls.ended.wait(), 5)  # the server stops polling for it
    job_id = (await http_enqueue(rig.client, type="after"))["id"]
    [leased] = (await rig.workers.Lease(pb.LeaseRequest())).jobs  # so the job is still there to lease
    assert leased.job.id == job_id


async def test_drain_answers_a_pending_lease_at_once_and_refuses_enqueue(rig: Rig) -> None:
    polling = asyncio.ensure_future(rig.workers.Lease(pb.LeaseRequest(wait=60), timeout=30))
    deadline = time.monotonic() + 5.0
    while (await rig.service.stats())["waiting_leases"] == 0:  # until the poll is parked on the server
        assert time.monotonic() < deadline, "the lease long-poll never parked"
        await asyncio.sleep(0.005)
    await rig.service.drain()
    assert list((await asyncio.wait_for(polling, 5)).jobs) == []
    error = await rpc_error(rig.jobs.Enqueue(pb.EnqueueRequest(type="late")))
    assert error.code() == Code.UNAVAILABLE
    assert trailing(error)["retry-after"] == ShuttingDown.headers["Retry-After"]


# -- error codes --------------------------------------------------------------
@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.EnqueueRequest(), "type"),
        (pb.EnqueueRequest(type="bad name!"), "type"),
        (pb.EnqueueRequest(type="ok", priority=5000), "priority"),
        (pb.EnqueueRequest(type="ok", max_attempts=0), "max_attempts"),
        (pb.EnqueueRequest(type="ok", delay=-1), "delay"),
        (pb.EnqueueRequest(type="ok", timeout=0), "timeout"),
        (pb.EnqueueRequest(type="ok", queue=""), "queue"),
        (pb.EnqueueRequest(type="ok", payload=Value(number_value=math.nan)), "payload"),
        (pb.EnqueueRequest(type="ok", payload=value({"deep": [1, {"x": math.inf}]})), "payload.deep.1.x"),
        (pb.EnqueueRequest(type="ok", concurrency_key=""), "concurrency_key"),
        (pb.EnqueueRequest(type="ok", concurrency_key="k", concurrency_limit=0), "concurrency_limit"),
        (pb.EnqueueRequest(type="ok", concurrency_limit=3), "concurrency_limit"),
    ],
)
async def test_invalid_enqueue_is_invalid_argument_naming_the_field(
    rig: Rig, request_: pb.EnqueueRequest, field: str
) -> None:
    error = await rpc_error(rig.jobs.Enqueue(request_))
    assert error.code() == Code.INVALID_ARGUMENT
    assert f"{field}:" in (error.details() or "")
    assert "Traceback" not in (error.details() or "")


def nested(depth: int, container: str = "object") -> Any:
    """A JSON value with ``depth`` objects (or arrays) inside each other around the number 1."""
    data: Any = 1
    for _ in range(depth):
        data = {"k": data} if container == "object" else [data]
    return data


def nest_in_place(value: Value, depth: int, container: str) -> None:
    """Fill ``value`` like ``nested`` does, without copying (protobuf copies only what it could decode)."""
    for _ in range(depth):
        value = value.struct_value.fields["k"] if container == "object" else value.list_value.values.add()
    value.number_value = 1


async def test_a_request_that_does_not_decode_is_invalid_argument(rig: Rig) -> None:
    raw = rig.channel.unary_unary("/jobq.v1.JobService/Enqueue")  # bytes in, bytes out
    garbage = await rpc_error(raw(b"\xff\xff\xff"))
    assert garbage.code() == Code.INVALID_ARGUMENT
    assert "not a valid jobq.v1.EnqueueRequest" in (garbage.details() or "")

    too_deep = pb.EnqueueRequest(type="deep")
    nest_in_place(too_deep.payload, 40, "object")
    error = await rpc_error(raw(too_deep.SerializeToString()))
    assert error.code() == Code.INVALID_ARGUMENT
    assert "nests too deeply" in (error.details() or "")


async def test_payloads_nest_at_most_32_levels(rig: Rig) -> None:
    deepest = nested(convert.MAX_NESTING)
    job = (await rig.jobs.Enqueue(pb.EnqueueRequest(type="deep", payload=convert.to_value(deepest)))).job
    assert (await http_record(rig.client, job.id))["payload"] == deepest
    arrays = pb.EnqueueRequest(type="deep")
    nest_in_place(arrays.payload, convert.MAX_NESTING + 1, "array")
    error = await rpc_error(rig.jobs.Enqueue(arrays))  # protobuf decodes arrays this deep: jobq refuses them
    assert error.code() == Code.INVALID_ARGUMENT
    assert "payload." in (error.details() or "")
    assert "nest at most 32 levels" in (error.details() or "")


async def test_a_deeper_payload_from_http_is_read_and_leased_as_json_text(rig: Rig) -> None:
    data = nested(40)
    job_id = (await http_enqueue(rig.client, type="deep", payload=data))["id"]
    job = await rig.jobs.GetJob(pb.GetJobRequest(id=job_id))
    assert json.loads(convert.from_value(job.payload, "payload")) == data
    [leased] = (await rig.workers.Lease(pb.LeaseRequest())).jobs
    assert json.loads(leased.job.payload.string_value) == data


async def test_delay_and_run_at_together_are_refused_as_over_http(rig: Rig) -> None:
    request = pb.EnqueueRequest(type="ok", delay=5)
    request.run_at.FromJsonString("2099-01-01T00:00:00Z")
    error = await rpc_error(rig.jobs.Enqueue(request))
    assert error.code() == Code.INVALID_ARGUMENT
    assert "delay or run_at" in (error.details() or "")


async def test_unknown_job_type_is_invalid_argument_when_workers_run_here(make_rig: MakeRig) -> None:
    rig = await make_rig(workers=1)
    error = await rpc_error(rig.jobs.Enqueue(pb.EnqueueRequest(type="no_such_type")))
    assert error.code() == Code.INVALID_ARGUMENT
    assert trailing(error)["jobq-error"] == UnknownJobType.title


async def test_not_found_already_exists_and_failed_precondition(rig: Rig) -> None:
    missing = await rpc_error(rig.jobs.GetJob(pb.GetJobRequest(id="ghost")))
    assert missing.code() == Code.NOT_FOUND
    assert missing.details() == "Job not found: no job with id 'ghost'"
    assert (await rpc_error(rig.jobs.CancelJob(pb.CancelJobRequest(id="ghost")))).code() == Code.NOT_FOUND
    assert (await rpc_error(rig.workers.Heartbeat(pb.HeartbeatRequest(id="ghost", lease_id="x")))).code() == (
        Code.NOT_FOUND
    )

    await rig.jobs.Enqueue(pb.EnqueueRequest(type="echo", id="order-42", payload=value({"n": 1})))
    reused = await rpc_error(rig.jobs.Enqueue(pb.EnqueueRequest(type="echo", id="order-42", payload=value({"n": 2}))))
    assert reused.code() == Code.ALREADY_EXISTS
    assert "order-42" in (reused.details() or "")

    await rig.jobs.CancelJob(pb.CancelJobRequest(id="order-42"))
    twice = await rpc_error(rig.jobs.CancelJob(pb.CancelJobRequest(id="order-42")))
    assert twice.code() == Code.FAILED_PRECONDITION
    assert "cancelled" in (twice.details() or "")


async def test_full_queue_is_resource_exhausted_with_retry_after(make_rig: MakeRig) -> None:
    rig = await make_rig(workers=0, queue_size=1)
    await rig.jobs.Enqueue(pb.EnqueueRequest(type="one"))
    error = await rpc_error(rig.jobs.Enqueue(pb.EnqueueRequest(type="two")))
    assert error.code() == Code.RESOURCE_EXHAUSTED
    assert trailing(error) == {"jobq-error": QueueFull.title, "retry-after": QueueFull.headers["Retry-After"]}


async def test_a_message_over_the_size_limit_is_resource_exhausted(rig: Rig) -> None:
    error = await rpc_error(rig.jobs.Enqueue(pb.EnqueueRequest(type="big", payload=value("x" * 2_000_000))))
    assert error.code() == Code.RESOURCE_EXHAUSTED


async def test_bad_list_and_lease_arguments_are_invalid_argument(rig: Rig) -> None:
    calls = [
        rig.jobs.ListJobs(pb.ListJobsRequest(limit=0)),
        rig.jobs.ListJobs(pb.ListJobsRequest(cursor="abc")),
        rig.jobs.ListJobs(pb.ListJobsRequest(status=99)),  # type: ignore[arg-type]
        rig.workers.Lease(pb.LeaseRequest(max_jobs=0)),
        rig.workers.Lease(pb.LeaseRequest(queues=["bad name!"])),
        rig.workers.Heartbeat(pb.HeartbeatRequest(id="x", lease_id="y", lease=0)),
        rig.workers.Fail(pb.FailRequest(id="x", lease_id="y", error="e" * 10_001)),
        rig.workers.Fail(pb.FailRequest(id="x", lease_id="y", outcome=42)),  # type: ignore[arg-type]
    ]
    for call in calls:
        assert (await rpc_error(call)).code() == Code.INVALID_ARGUMENT


async def test_an_unexpected_failure_is_internal_and_leaks_nothing(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(job_id: str, owner: str | None = None) -> None:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(rig.service, "get", broken)
    error = await rpc_error(rig.jobs.GetJob(pb.GetJobRequest(id="x")))
    assert error.code() == Code.INTERNAL
    assert "secret" not in (error.details() or "")
    assert "secret detail" in caplog.text  # it is in the server's log instead


async def test_token_is_required_when_set(make_rig: MakeRig) -> None:
    secret = "s3cret-s3cret-s3cret"
    rig = await make_rig(tokens=TokenBook([(secret, Principal("admin", Role.ADMIN))]), workers=0)
    for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", secret),)):
        refused = await rpc_error(rig.jobs.Enqueue(pb.EnqueueRequest(type="x"), metadata=metadata))
        assert refused.code() == Code.UNAUTHENTICATED
        assert "Bearer" in trailing(refused)["www-authenticate"]
    stream = rig.jobs.WatchJob(pb.WatchJobRequest(id="x"))
    assert (await rpc_error(stream.read())).code() == Code.UNAUTHENTICATED
    allowed = await rig.jobs.Enqueue(pb.EnqueueRequest(type="x"), metadata=(("authorization", f"Bearer {secret}"),))
    assert allowed.created
    health = health_pb2_grpc.HealthStub(rig.channel)  # probes need no token
    assert (await health.Check(health_pb2.HealthCheckRequest())).status == health_pb2.HealthCheckResponse.SERVING


async def test_owner_is_the_token_that_enqueued_the_job_as_over_http(make_rig: MakeRig) -> None:
    shop, ops = "shop-shop-shop-shop-shop", "ops-ops-ops-ops-ops-ops"
    tokens = TokenBook([(shop, Principal("shop", Role.CLIENT)), (ops, Principal("ops", Role.ADMIN))])
    rig = await make_rig(tokens=tokens, workers=0)  # the rig's HTTP side runs without tokens
    job = (await rig.jobs.Enqueue(pb.EnqueueRequest(type="x"), metadata=(("authorization", f"Bearer {shop}"),))).job
    assert job.owner == "shop"
    record = await http_record(rig.client, job.id)
    assert record["owner"] == "shop"
    assert as_record(job) == normalised(record)

    unowned = (await http_enqueue(rig.client, type="x"))["id"]  # enqueued without a token: no owner
    message = await rig.jobs.GetJob(pb.GetJobRequest(id=unowned), metadata=(("authorization", f"Bearer {ops}"),))
    assert not message.HasField("owner")
    assert as_record(message) == normalised(await http_record(rig.client, unowned))


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (BadRequest("x"), Code.INVALID_ARGUMENT),
        (ValidationFailed("x"), Code.INVALID_ARGUMENT),
        (UnknownJobType("x"), Code.INVALID_ARGUMENT),
        (JobNotFound("x"), Code.NOT_FOUND),
        (IdReused("x"), Code.ALREADY_EXISTS),
        (StaleLease("x"), Code.FAILED_PRECONDITION),
        (InvalidTransition("x", "completed", "cancelled"), Code.FAILED_PRECONDITION),
        (QueueFull("x"), Code.RESOURCE_EXHAUSTED),
        (StoreFull("x"), Code.RESOURCE_EXHAUSTED),
        (ShuttingDown("x"), Code.UNAVAILABLE),
        (StoreUnavailable("x"), Code.UNAVAILABLE),
        (JobqError("x"), Code.INTERNAL),
    ],
)
def test_every_jobq_error_has_its_status_code(error: JobqError, code: Code) -> None:
    assert status_code(error) == code


@pytest.mark.parametrize(
    ("http", "code"),
    [(401, Code.UNAUTHENTICATED), (403, Code.PERMISSION_DENIED), (429, Code.RESOURCE_EXHAUSTED)],
)
def test_errors_map_by_http_status(http: int, code: Code) -> None:
    error = JobqError("x")
    error.status = http
    assert status_code(error) == code


# -- health, reflection, lifecycle ---------------------------------------------
async def test_health_serves_until_shutdown_begins(rig: Rig) -> None:
    health = health_pb2_grpc.HealthStub(rig.channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    for name in ("", "jobq.v1.JobService", "jobq.v1.WorkerService"):
        assert (await health.Check(health_pb2.HealthCheckRequest(service=name))).status == serving
    unknown = await rpc_error(health.Check(health_pb2.HealthCheckRequest(service="nope")))
    assert unknown.code() == Code.NOT_FOUND
    watch = health.Watch(health_pb2.HealthCheckRequest())
    assert (await watch.read()).status == serving

    await rig.server.begin_shutdown()
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    assert (await watch.read()).status == not_serving
    for name in ("", "jobq.v1.JobService"):
        assert (await health.Check(health_pb2.HealthCheckRequest(service=name))).status == not_serving
    assert (await rig.jobs.Enqueue(pb.EnqueueRequest(type="still"))).created  # calls are still served
    watch.cancel()


async def test_stop_reports_not_serving_and_ends_open_streams_after_the_grace_period(rig: Rig) -> None:
    job_id = (await http_enqueue(rig.client, type="never"))["id"]
    stream = rig.jobs.WatchJob(pb.WatchJobRequest(id=job_id))
    assert (await stream.read()).status == pb.JOB_STATUS_PENDING
    health = health_pb2_grpc.HealthStub(rig.channel).Watch(health_pb2.HealthCheckRequest())
    assert (await health.read()).status == health_pb2.HealthCheckResponse.SERVING

    started = time.monotonic()
    stopping = asyncio.ensure_future(rig.server.stop(grace=1.0))
    assert (await health.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING  # first thing stop does
    error = await rpc_error(stream.read())  # the open stream is cut when the grace period ends
    assert error.code() in (Code.CANCELLED, Code.UNAVAILABLE)
    await asyncio.wait_for(stopping, 5)
    assert time.monotonic() - started < 5
    refused = await rpc_error(rig.jobs.GetJob(pb.GetJobRequest(id=job_id), timeout=2))
    assert refused.code() in (Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED)


async def test_reflection_lists_and_describes_the_services(rig: Rig) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(rig.channel)
    asks = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="jobq.v1.WorkerService"),
    ]
    listed, described = [answer async for answer in stub.ServerReflectionInfo(iter(asks))]
    names = {service.name for service in listed.list_services_response.service}
    assert {"jobq.v1.JobService", "jobq.v1.WorkerService", "jobq.v1.AdminService", "grpc.health.v1.Health"} <= names
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in described.file_descriptor_response.file_descriptor_proto
    ]
    [jobq_file] = [file for file in files if file.package == "jobq.v1"]
    assert jobq_file.name == "jobq/v1/jobq.proto"
    methods = {service.name: [method.name for method in service.method] for service in jobq_file.service}
    assert methods == {
        "JobService": [
            "Enqueue",
            "GetJob",
            "CancelJob",
            "ListJobs",
            "WatchJob",
            "GetJobLogs",
            "WatchJobLogs",
            "CreateWorkflow",
            "GetWorkflow",
            "GetParents",
        ],
        "WorkerService": ["Lease", "Heartbeat", "Complete", "Fail", "Settle", "Release", "Log", "Progress"],
        "AdminService": [
            "RetryJob",
            "DeleteJob",
            "RetryJobs",
            "DeleteJobs",
            "ListQueues",
            "PeekQueue",
            "PauseQueue",
            "ResumeQueue",
            "ClearQueue",
            "GetQueueFlow",
            "SetQueueFlow",
            "RemoveQueueFlow",
            "ListSchedules",
            "GetSchedule",
            "CreateSchedule",
            "PutSchedule",
            "PauseSchedule",
            "ResumeSchedule",
            "RunSchedule",
            "DeleteSchedule",
        ],
    }


async def test_a_busy_port_is_an_os_error_saying_so(rig: Rig) -> None:
    with pytest.raises(OSError) as caught:
        await start_grpc_server(rig.service, "127.0.0.1", rig.server.port)
    assert caught.value.errno == errno.EADDRINUSE


async def test_jobs_enqueued_over_grpc_run_on_the_in_process_workers(make_rig: MakeRig) -> None:
    rig = await make_rig(workers=2)
    answers = [await rig.jobs.Enqueue(pb.EnqueueRequest(type="echo", payload=value({"n": n}))) for n in range(5)]
    for n, answer in enumerate(answers):
        done = await wait_for_status(rig.client, answer.job.id, "completed")
        assert done["result"] == {"n": n}


def test_main_serves_grpc_beside_http_and_stops_it_on_sigterm(tmp_path: Path) -> None:
    if "grpc_port" not in {spec.name for spec in fields(Config)}:
        pytest.skip("this main.py has no --grpc-port yet")
    grpc_port = free_port()
    server = ServerProcess(
        tmp_path / "server.log", "--store", "memory://", "--workers", "0", "--grpc-port", str(grpc_port)
    )
    try:
        server.wait_ready()
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
            answer = pb_grpc.JobServiceStub(channel).Enqueue(pb.EnqueueRequest(type="x", id="from-grpc"), timeout=5)
            assert answer.created
            code, record = server.request("GET", "/status/from-grpc")
            assert (code, record["status"]) == (200, "pending")
            check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert check.status == health_pb2.HealthCheckResponse.SERVING
        server.send(signal.SIGTERM)
        assert server.wait(timeout=30) == 0, server.log()
    finally:
        server.stop()
    assert "Traceback" not in server.log()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", grpc_port))  # the gRPC port was released


# -- values and generated code ----------------------------------------------------
def test_json_values_round_trip() -> None:
    data = {"int": 3, "neg": -7, "float": 0.25, "big": 2**60, "s": "é", "t": True, "n": None, "l": [], "o": {}}
    back = convert.from_value(convert.to_value(data), "payload")
    assert back == data
    assert isinstance(back["int"], int)
    assert isinstance(back["float"], float)
    assert back["big"] == 2**60  # exact here: 2**60 is a power of two, so a double holds it
    assert convert.from_value(convert.to_value(2**53 + 1), "x") == 2**53  # past 2^53 a double rounds
    assert convert.from_value(convert.to_value(10**400), "x") == str(10**400)  # past a double's range: text
    assert convert.from_value(Value(number_value=1e300), "x") == 1e300  # a float beyond 2^53 stays a float


def test_generated_code_matches_the_proto(tmp_path: Path) -> None:
    fresh = generate.generate(tmp_path)
    assert fresh, "nothing was generated"
    for path in fresh:
        committed = generate.GEN_DIR / path.name
        assert committed.exists(), f"{committed} is missing: run python -m jobq.rpc.generate"
        assert path.read_bytes() == committed.read_bytes(), (
            f"{committed} is stale: run python -m jobq.rpc.generate "
            "(with the grpcio-tools version pinned in requirements.txt)"
        )


# -- logs, worker reports and the admin service ---------------------------------
async def test_a_worker_logs_and_reports_progress_and_a_client_reads_and_follows_the_log(rig: Rig) -> None:
    job_id = (await http_enqueue(rig.client, type="echo"))["id"]
    [leased] = (await rig.workers.Lease(pb.LeaseRequest())).jobs
    following = rig.jobs.WatchJobLogs(pb.WatchJobLogsRequest(id=job_id), timeout=10)
    await rig.workers.Log(pb.LogRequest(id=job_id, lease_id=leased.lease_id, message="step 1"))
    await rig.workers.Progress(pb.ProgressRequest(id=job_id, lease_id=leased.lease_id, fraction=0.5, note="half"))
    stale = await rpc_error(rig.workers.Log(pb.LogRequest(id=job_id, lease_id="not-its-lease", message="x")))
    assert stale.code() is grpc.StatusCode.FAILED_PRECONDITION
    first = await following.read()
    assert first.message == "step 1"
    await rig.workers.Log(pb.LogRequest(id=job_id, lease_id=leased.lease_id, message="step 2"))
    assert (await following.read()).message == "step 2"  # followed as it is written
    await rig.workers.Complete(pb.CompleteRequest(id=job_id, lease_id=leased.lease_id))
    assert await following.read() is grpc.aio.EOF  # the stream ends with the job
    logs = await rig.jobs.GetJobLogs(pb.GetJobLogsRequest(id=job_id))
    assert [line.message for line in logs.lines] == ["step 1", "step 2"]
    job = await rig.jobs.GetJob(pb.GetJobRequest(id=job_id))
    assert (job.progress, job.progress_note) == (0.5, "half")


async def test_the_admin_service_acts_on_jobs_and_queues(rig: Rig) -> None:
    kept = (await http_enqueue(rig.client, type="echo", queue="mail", priority=5))["id"]
    other = (await http_enqueue(rig.client, type="echo", queue="mail"))["id"]
    peeked = await rig.admin.PeekQueue(pb.QueueRequest(name="mail"))
    assert peeked.HasField("job") and peeked.job.id == kept
    assert not (await rig.admin.PeekQueue(pb.QueueRequest(name="empty"))).HasField("job")
    paused = await rig.admin.PauseQueue(pb.QueueRequest(name="mail"))
    assert (paused.name, paused.paused, dict(paused.jobs)) == ("mail", True, {"pending": 2})
    [queue] = (await rig.admin.ListQueues(pb.ListQueuesRequest())).queues
    assert queue.name == "mail" and queue.paused
    deleted = await rig.admin.DeleteJob(pb.DeleteJobRequest(id=other))
    assert deleted.id == other
    missing = await rpc_error(rig.admin.DeleteJob(pb.DeleteJobRequest(id=other)))
    assert missing.code() is grpc.StatusCode.NOT_FOUND
    assert (await rig.admin.ResumeQueue(pb.QueueRequest(name="mail"))).paused is False
    [leased] = (await rig.workers.Lease(pb.LeaseRequest())).jobs
    await rig.workers.Fail(pb.FailRequest(id=kept, lease_id=leased.lease_id, error="boom"))
    unmatched = await rig.admin.RetryJobs(pb.BulkRequest(status=pb.JOB_STATUS_FAILED, q="no such text"))
    assert (unmatched.done, unmatched.more, unmatched.HasField("cursor")) == (0, False, False)
    retried = await rig.admin.RetryJobs(pb.BulkRequest(status=pb.JOB_STATUS_FAILED, queue="mail", q="BOOM"))
    assert (retried.done, retried.skipped, retried.more) == (1, 0, False)
    refused = await rpc_error(rig.admin.RetryJobs(pb.BulkRequest(status=pb.JOB_STATUS_PENDING)))
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    cleared = await rig.admin.ClearQueue(pb.QueueRequest(name="mail"))
    assert (cleared.name, cleared.cleared) == ("mail", 1)
    gone = await rig.admin.DeleteJobs(pb.BulkRequest(status=pb.JOB_STATUS_PENDING))
    assert gone.done == 0
    bad = await rpc_error(rig.admin.PeekQueue(pb.QueueRequest(name="no such")))
    assert bad.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_the_admin_service_manages_schedules_as_the_http_routes_do(rig: Rig) -> None:
    template = pb.JobTemplate(type="echo", queue="cron", payload=convert.to_value({"n": 1}))
    nightly = pb.ScheduleDefinition(cron="0 3 * * *", timezone="Europe/Paris", job=template, missed="once")
    made = await rig.admin.CreateSchedule(pb.PutScheduleRequest(name="nightly", definition=nightly))
    assert (made.name, made.definition.cron, made.definition.timezone, made.definition.missed) == (
        "nightly",
        "0 3 * * *",
        "Europe/Paris",
        "once",
    )
    assert not made.HasField("last_run_at") and made.HasField("next_run_at")
    assert made.next_run_at.ToDatetime().hour in (1, 2)  # 03:00 in Paris is 01:00 or 02:00 UTC
    taken = await rpc_error(rig.admin.CreateSchedule(pb.PutScheduleRequest(name="nightly", definition=nightly)))
    assert taken.code() is grpc.StatusCode.ALREADY_EXISTS
    both = pb.ScheduleDefinition(cron="* * * * *", every=5, job=template)
    invalid = await rpc_error(rig.admin.PutSchedule(pb.PutScheduleRequest(name="x", definition=both)))
    assert invalid.code() is grpc.StatusCode.INVALID_ARGUMENT and "not both" in invalid.details()
    often = pb.ScheduleDefinition(every=30, job=pb.JobTemplate(type="echo"))
    assert (await rig.admin.PutSchedule(pb.PutScheduleRequest(name="often", definition=often))).definition.every == 30
    paused = await rig.admin.PauseSchedule(pb.ScheduleRequest(name="often"))
    assert paused.definition.paused and not paused.HasField("next_run_at")
    ran = await rig.admin.RunSchedule(pb.ScheduleRequest(name="nightly"))
    assert ran.created and ran.job.queue == "cron" and ran.job.id.startswith("nightly:now-")
    listed = await rig.admin.ListSchedules(pb.ListSchedulesRequest())
    assert [s.name for s in listed.schedules] == ["nightly", "often"]
    await rig.admin.DeleteSchedule(pb.ScheduleRequest(name="often"))
    gone = await rpc_error(rig.admin.GetSchedule(pb.ScheduleRequest(name="often")))
    assert gone.code() is grpc.StatusCode.NOT_FOUND


async def test_the_admin_service_needs_an_admin_token(make_rig: MakeRig) -> None:
    shop, ops = "shop-" + "s" * 20, "ops-" + "o" * 20
    tokens = TokenBook([(shop, Principal("shop", Role.CLIENT)), (ops, Principal("ops", Role.ADMIN))])
    rig = await make_rig(tokens=tokens, workers=0)
    refused = await rpc_error(
        rig.admin.ListQueues(pb.ListQueuesRequest(), metadata=(("authorization", f"Bearer {shop}"),))
    )
    assert refused.code() is grpc.StatusCode.PERMISSION_DENIED
    allowed = await rig.admin.ListQueues(pb.ListQueuesRequest(), metadata=(("authorization", f"Bearer {ops}"),))
    assert list(allowed.queues) == []


# -- flow control --------------------------------------------------------------
def as_flow_view(flow: pb.QueueFlow) -> dict[str, Any]:
    """A jobq.v1.QueueFlow in the shape of the HTTP flow view (``FlowView``), times as datetimes."""

    def rate(limit: pb.RateLimit) -> dict[str, Any]:
        return {"limit": limit.limit, "period": limit.period}

    held_by = flow.held_by
    return {
        "concurrency": flow.concurrency if flow.HasField("concurrency") else None,
        "key_concurrency": flow.key_concurrency if flow.HasField("key_concurrency") else None,
        "rate": rate(flow.rate) if flow.HasField("rate") else None,
        "key_rate": rate(flow.key_rate) if flow.HasField("key_rate") else None,
        "running": flow.running,
        "keys_running": dict(flow.keys_running),
        "held_by": {
            "concurrency": held_by.concurrency,
            "rate_until": convert.to_datetime(held_by.rate_until) if held_by.HasField("rate_until") else None,
            "keys_at_limit": held_by.keys_at_limit,
            "keys_rate_limited": held_by.keys_rate_limited,
        },
    }


async def http_flow(client: TestClient, queue: str) -> dict[str, Any]:
    """``GET /queues/{queue}/flow``'s flow, its rate_until as a datetime."""
    response = await client.get(f"/queues/{queue}/flow")
    assert response.status == 200, await response.text()
    answer = await response.json()
    assert answer["queue"] == queue
    view = answer["flow"]
    if view["held_by"]["rate_until"] is not None:
        view["held_by"]["rate_until"] = moment(view["held_by"]["rate_until"])
    return view


async def test_a_queues_flow_is_set_read_and_removed_over_grpc_as_over_http(rig: Rig) -> None:
    set_ = await rig.admin.SetQueueFlow(
        pb.SetQueueFlowRequest(name="tenants", key_concurrency=1, key_rate=pb.RateLimit(limit=10, period=60))
    )
    assert set_.queue == "tenants" and set_.key_concurrency == 1
    assert not set_.HasField("concurrency") and not set_.HasField("rate")
    assert (set_.key_rate.limit, set_.key_rate.period) == (10, 60.0)
    assert (set_.running, dict(set_.keys_running), set_.held_by.keys_at_limit) == (0, {}, 0)
    assert as_flow_view(set_) == await http_flow(rig.client, "tenants")

    for key in ("acme", "acme", "globex"):
        await rig.jobs.Enqueue(pb.EnqueueRequest(type="sync", queue="tenants", concurrency_key=key))
    leased = (await rig.workers.Lease(pb.LeaseRequest(queues=["tenants"], max_jobs=10))).jobs
    assert sorted(job.job.concurrency.key for job in leased) == ["acme", "globex"]  # one of each key at once
    read = await rig.admin.GetQueueFlow(pb.QueueRequest(name="tenants"))
    assert (read.queue, read.running, dict(read.keys_running)) == ("tenants", 2, {"acme": 1, "globex": 1})
    assert read.held_by.keys_at_limit == 2 and not read.held_by.concurrency
    assert as_flow_view(read) == await http_flow(rig.client, "tenants")

    replaced = await rig.admin.SetQueueFlow(
        pb.SetQueueFlowRequest(name="tenants", concurrency=5, rate=pb.RateLimit(limit=2, period=0.5))
    )
    assert (replaced.concurrency, replaced.rate.limit, replaced.rate.period) == (5, 2, 0.5)
    assert not replaced.HasField("key_concurrency") and not replaced.HasField("key_rate")  # the new replace the old
    assert (await http_flow(rig.client, "tenants"))["key_concurrency"] is None

    assert await rig.admin.RemoveQueueFlow(pb.QueueRequest(name="tenants")) == pb.Ack()
    gone = await rpc_error(rig.admin.GetQueueFlow(pb.QueueRequest(name="tenants")))
    assert gone.code() is grpc.StatusCode.NOT_FOUND and "has no limits" in gone.details()
    assert (await rig.client.get("/queues/tenants/flow")).status == 404
    never = await rpc_error(rig.admin.GetQueueFlow(pb.QueueRequest(name="untouched")))
    assert never.code() is grpc.StatusCode.NOT_FOUND


async def test_a_queue_rate_shows_when_it_allows_the_next_start(rig: Rig) -> None:
    await rig.admin.SetQueueFlow(pb.SetQueueFlowRequest(name="reports", rate=pb.RateLimit(limit=1, period=60)))
    enqueued = [(await rig.jobs.Enqueue(pb.EnqueueRequest(type="report", queue="reports"))).job for _ in range(2)]
    [leased] = (await rig.workers.Lease(pb.LeaseRequest(queues=["reports"], max_jobs=2))).jobs
    waiting = next(job for job in enqueued if job.id != leased.job.id)
    held = (await rig.jobs.GetJob(pb.GetJobRequest(id=waiting.id))).held
    assert held.limit == "rate" and held.HasField("next_start") and not held.HasField("key")
    http_held = (await (await rig.client.get(f"/status/{waiting.id}")).json())["held"]
    assert convert.to_datetime(held.next_start) == datetime.fromisoformat(http_held["next_start"])
    assert not (await rig.jobs.GetJob(pb.GetJobRequest(id=leased.job.id))).HasField("held")
    flow = await rig.admin.GetQueueFlow(pb.QueueRequest(name="reports"))
    assert flow.held_by.HasField("rate_until")
    assert 50 < convert.to_datetime(flow.held_by.rate_until).timestamp() - time.time() <= 60
    assert as_flow_view(flow) == await http_flow(rig.client, "reports")


async def test_list_queues_shows_each_queues_flow(rig: Rig) -> None:
    await http_enqueue(rig.client, type="echo", queue="plain")
    await rig.admin.SetQueueFlow(pb.SetQueueFlowRequest(name="limited", concurrency=3))
    queues = {queue.name: queue for queue in (await rig.admin.ListQueues(pb.ListQueuesRequest())).queues}
    assert set(queues) == {"plain", "limited"}  # a queue with limits is listed while it holds no job
    assert not queues["plain"].HasField("flow")
    limited = queues["limited"]
    assert limited.HasField("flow") and (limited.flow.queue, limited.flow.concurrency) == ("limited", 3)
    listed = {queue["name"]: queue for queue in (await (await rig.client.get("/queues")).json())["queues"]}
    assert as_flow_view(limited.flow) == listed["limited"]["flow"] and listed["plain"]["flow"] is None
    paused = await rig.admin.PauseQueue(pb.QueueRequest(name="limited"))
    assert paused.paused and paused.flow.concurrency == 3


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.SetQueueFlowRequest(name="q", concurrency=0), "concurrency"),
        (pb.SetQueueFlowRequest(name="q", key_concurrency=2_000_000), "key_concurrency"),
        (pb.SetQueueFlowRequest(name="q", rate=pb.RateLimit(limit=5)), "rate.period"),
        (pb.SetQueueFlowRequest(name="q", key_rate=pb.RateLimit(limit=0, period=1)), "key_rate.limit"),
        (pb.SetQueueFlowRequest(name="bad name!", concurrency=1), "name"),
    ],
)
async def test_a_bad_limit_is_invalid_argument_naming_the_field(
    rig: Rig, request_: pb.SetQueueFlowRequest, field: str
) -> None:
    error = await rpc_error(rig.admin.SetQueueFlow(request_))
    assert error.code() == Code.INVALID_ARGUMENT
    assert f"{field}:" in (error.details() or "")
    assert (await rig.client.get("/queues/q/flow")).status == 404  # nothing was set


async def test_any_token_reads_a_flow_and_only_an_admin_sets_or_removes_one(make_rig: MakeRig) -> None:
    shop, bob, worker, ops = ("shop-" + "s" * 20, "bob-" + "b" * 20, "work-" + "w" * 20, "ops-" + "o" * 20)
    tokens = TokenBook(
        [
            (shop, Principal("shop", Role.CLIENT)),
            (bob, Principal("bob", Role.CLIENT)),
            (worker, Principal("worker", Role.WORKER)),
            (ops, Principal("ops", Role.ADMIN)),
        ]
    )
    rig = await make_rig(tokens=tokens, workers=0)

    def as_(token: str) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {token}"),)

    flow = pb.SetQueueFlowRequest(name="tenants", key_concurrency=1)
    for token in (shop, worker):
        refused = await rpc_error(rig.admin.SetQueueFlow(flow, metadata=as_(token)))
        assert refused.code() is grpc.StatusCode.PERMISSION_DENIED and "admin" in refused.details()
        refused = await rpc_error(rig.admin.RemoveQueueFlow(pb.QueueRequest(name="tenants"), metadata=as_(token)))
        assert refused.code() is grpc.StatusCode.PERMISSION_DENIED
    assert (await rpc_error(rig.admin.GetQueueFlow(pb.QueueRequest(name="tenants")))).code() == Code.UNAUTHENTICATED
    await rig.admin.SetQueueFlow(flow, metadata=as_(ops))

    for token in (shop, bob):
        job = pb.EnqueueRequest(type="sync", queue="tenants", concurrency_key="acme")
        assert (await rig.jobs.Enqueue(job, metadata=as_(token))).job.concurrency.key.endswith("/acme")
    leased = (await rig.workers.Lease(pb.LeaseRequest(max_jobs=5), metadata=as_(worker))).jobs
    assert sorted(job.job.concurrency.key for job in leased) == ["bob/acme", "shop/acme"]  # each client's own key

    request = pb.QueueRequest(name="tenants")
    everyone = await rig.admin.GetQueueFlow(request, metadata=as_(ops))
    assert dict(everyone.keys_running) == {"bob/acme": 1, "shop/acme": 1}
    own = await rig.admin.GetQueueFlow(request, metadata=as_(shop))  # a client sees only its own keys named
    assert (own.running, dict(own.keys_running), own.key_concurrency) == (2, {"shop/acme": 1}, 1)
    assert (await rig.admin.GetQueueFlow(request, metadata=as_(worker))).running == 2
    await rig.admin.RemoveQueueFlow(request, metadata=as_(ops))
    gone = await rpc_error(rig.admin.GetQueueFlow(request, metadata=as_(shop)))
    assert gone.code() is grpc.StatusCode.NOT_FOUND


# -- workflows ------------------------------------------------------------------------
def step(job_id: str, job_type: str = "step", *parents: str, **fields: Any) -> pb.EnqueueRequest:
    """A job of a workflow: its id, type and parents (``depends_on``), its id in its payload."""
    return pb.EnqueueRequest(id=job_id, type=job_type, payload=value({"name": job_id}), depends_on=parents, **fields)


def step_body(request: pb.EnqueueRequest) -> dict[str, Any]:
    """The same job as ``POST /workflows`` takes it."""
    return json_format.MessageToDict(request, preserving_proto_field_name=True)


def status_name(status: int) -> str:
    return pb.JobStatus.Name(status).removeprefix("JOB_STATUS_").lower()


def as_workflow_view(view: pb.Workflow) -> dict[str, Any]:
    """A jobq.v1.Workflow in the shape of ``GET /workflows/{id}``'s answer."""
    jobs = [
        {
            "id": job.id,
            "type": job.type,
            "queue": job.queue,
            "status": status_name(job.status),
            "depends_on": list(job.depends_on),
            "error": job.error if job.HasField("error") else None,
        }
        for job in view.jobs
    ]
    return {
        "id": view.id,
        "total": view.total,
        "counts": dict(view.counts),
        "done": view.done,
        "failed": view.failed,
        "finished": view.finished,
        "jobs": jobs,
    }


def as_parents(answer: pb.JobParents) -> dict[str, Any]:
    """A jobq.v1.JobParents in the shape of ``GET /jobs/{id}/parents``'s answer."""
    parents = [
        {
            "id": parent.id,
            "type": parent.type,
            "status": status_name(parent.status),
            "result": convert.from_value(parent.result, "result"),
            "error": parent.error if parent.HasField("error") else None,
        }
        for parent in answer.parents
    ]
    return {"id": answer.id, "parents": parents}


async def http_json(client: TestClient, path: str) -> Any:
    response = await client.get(path)
    assert response.status == 200, await response.text()
    return await response.json()


async def test_a_diamond_created_over_grpc_runs_in_order_and_reads_as_over_http(
    registry: Registry, make_rig: MakeRig
) -> None:
    runs: list[str] = []

    @registry.register("step")
    async def run_step(ctx: JobContext) -> str:
        runs.append(ctx.job.id)
        return f"{ctx.job.id}-done"

    rig = await make_rig(workers=4)
    diamond = [step("a"), step("b", "step", "a"), step("c", "step", "a"), step("d", "step", "b", "c")]
    answer = await rig.jobs.CreateWorkflow(pb.CreateWorkflowRequest(id="diamond", jobs=diamond))
    assert (answer.id, answer.created) == ("diamond", 4)
    assert [job.status for job in answer.jobs] == [pb.JOB_STATUS_PENDING] + [pb.JOB_STATUS_WAITING] * 3
    assert [list(job.depends_on) for job in answer.jobs] == [[], ["a"], ["a"], ["b", "c"]]
    last = [job async for job in rig.jobs.WatchJob(pb.WatchJobRequest(id="d"), timeout=10)][-1]
    assert last.status == pb.JOB_STATUS_COMPLETED and convert.from_value(last.result, "result") == "d-done"
    assert runs[0] == "a" and runs[-1] == "d" and sorted(runs[1:3]) == ["b", "c"] and len(runs) == 4

    d = await rig.jobs.GetJob(pb.GetJobRequest(id="d"))
    assert d.workflow == pb.WorkflowTerms(id="diamond", depends_on=["b", "c"], on_parent_failure="cancel")
    assert as_record(d) == normalised(await http_record(rig.client, "d"))
    a = await rig.jobs.GetJob(pb.GetJobRequest(id="a"))
    assert list(a.children) == ["b", "c"] and list(a.workflow.depends_on) == []
    assert as_record(a) == normalised(await http_record(rig.client, "a"))  # children as GET /status has them
    listed = await rig.jobs.ListJobs(pb.ListJobsRequest(workflow="diamond"))
    assert [job.id for job in listed.jobs] == ["d", "c", "b", "a"] and not any(job.children for job in listed.jobs)
    assert [job.id for job in (await rig.jobs.ListJobs(pb.ListJobsRequest(parent="a"))).jobs] == ["c", "b"]

    parents = await rig.jobs.GetParents(pb.GetParentsRequest(id="d"))
    assert [(p.id, p.status, convert.from_value(p.result, "result")) for p in parents.parents] == [
        ("b", pb.JOB_STATUS_COMPLETED, "b-done"),
        ("c", pb.JOB_STATUS_COMPLETED, "c-done"),
    ]
    assert as_parents(parents) == await http_json(rig.client, "/jobs/d/parents")
    assert list((await rig.jobs.GetParents(pb.GetParentsRequest(id="a"))).parents) == []

    view = await rig.jobs.GetWorkflow(pb.GetWorkflowRequest(id="diamond"))
    assert (view.total, view.done, view.failed, view.finished) == (4, 4, 0, True)
    assert as_workflow_view(view) == await http_json(rig.client, "/workflows/diamond")


async def test_a_chords_progress_is_readable_as_its_members_end(rig: Rig) -> None:
    members = [step(f"m{n}", "member") for n in range(4)]
    chord = [
        *members,
        step("cb", "callback", *(member.id for member in members), on_parent_failure="run"),
        step("after-m3", "member", "m3"),  # cancelled when m3 fails
    ]
    await rig.jobs.CreateWorkflow(pb.CreateWorkflowRequest(id="chord-1", jobs=chord))
    view = await rig.jobs.GetWorkflow(pb.GetWorkflowRequest(id="chord-1"))
    assert (view.total, dict(view.counts), view.done, view.failed, view.finished) == (
        6,
        {"pending": 4, "waiting": 2},
        0,
        0,
        False,
    )

    leased = (await rig.workers.Lease(pb.LeaseRequest(max_jobs=10, types=["member"]))).jobs
    assert sorted(item.job.id for item in leased) == ["m0", "m1", "m2", "m3"]
    for item in leased:
        n = int(item.job.id[1:])
        if n == 3:
            await rig.workers.Fail(pb.FailRequest(id=item.job.id, lease_id=item.lease_id, error="three fails"))
        else:
            await rig.workers.Complete(pb.CompleteRequest(id=item.job.id, lease_id=item.lease_id, result=value(n * 10)))
    view = await rig.jobs.GetWorkflow(pb.GetWorkflowRequest(id="chord-1"))
    assert (dict(view.counts), view.done, view.failed, view.finished) == (
        {"completed": 3, "failed": 1, "cancelled": 1, "pending": 1},
        3,
        2,
        False,
    )
    assert as_workflow_view(view) == await http_json(rig.client, "/workflows/chord-1")

    [callback] = (await rig.workers.Lease(pb.LeaseRequest(types=["callback"]))).jobs
    parents = await rig.jobs.GetParents(pb.GetParentsRequest(id="cb"))
    outcomes = [(p.id, status_name(p.status), convert.from_value(p.result, "result")) for p in parents.parents]
    assert outcomes == [
        ("m0", "completed", 0),
        ("m1", "completed", 10),
        ("m2", "completed", 20),
        ("m3", "failed", None),
    ]
    assert parents.parents[3].error == "three fails" and not parents.parents[0].HasField("error")
    await rig.workers.Complete(pb.CompleteRequest(id="cb", lease_id=callback.lease_id))
    view = await rig.jobs.GetWorkflow(pb.GetWorkflowRequest(id="chord-1"))
    assert (view.done, view.failed, view.finished) == (4, 2, True)
    assert {job.id: job.error for job in view.jobs if job.HasField("error")} == {
        "m3": "three fails",
        "after-m3": "parent m3 failed",
    }
    assert as_workflow_view(view) == await http_json(rig.client, "/workflows/chord-1")


async def test_bad_workflows_are_invalid_argument_naming_what_is_wrong_and_store_nothing(rig: Rig) -> None:
    async def refused(*jobs: pb.EnqueueRequest, **fields: Any) -> str:
        error = await rpc_error(rig.jobs.CreateWorkflow(pb.CreateWorkflowRequest(jobs=jobs, **fields)))
        assert error.code() is Code.INVALID_ARGUMENT, error
        assert "Traceback" not in (error.details() or "")
        return error.details() or ""

    async def as_over_http(*jobs: pb.EnqueueRequest) -> str:
        response = await rig.client.post("/workflows", json={"jobs": [step_body(job) for job in jobs]})
        assert response.status == 422
        problem = await response.json()
        return f"{problem['title']}: {problem['detail']}"

    cycle = (step("x", "echo", "z"), step("y", "echo", "x"), step("z", "echo", "y"))
    details = await refused(*cycle)
    assert "cycle" in details and all(name in details for name in ("x", "y", "z"))
    assert details == await as_over_http(*cycle)
    unknown = (step("p", "echo", "ghost-1", "ghost-2"),)
    details = await refused(*unknown)
    assert "ghost-1" in details and "ghost-2" in details and details == await as_over_http(*unknown)
    assert "more than once" in await refused(step("p", "echo"), step("p", "echo"))
    assert "jobs.1.type:" in await refused(step("ok", "echo"), pb.EnqueueRequest(type="bad name!"))
    assert "jobs.1.payload:" in await refused(
        step("ok", "echo"), pb.EnqueueRequest(type="echo", payload=Value(number_value=math.nan))
    )
    assert "jobs.1.on_parent_failure:" in await refused(
        step("q", "echo"), step("r", "echo", "q", on_parent_failure="no")
    )
    assert "unique_key" in await refused(pb.EnqueueRequest(type="echo", unique_key="k"))
    assert "jobs:" in await refused()
    assert "id:" in await refused(step("s", "echo"), id="bad id!")

    for request, named in (
        (pb.EnqueueRequest(type="echo", depends_on=["ghost-3"]), "ghost-3"),
        (pb.EnqueueRequest(type="echo", on_parent_failure="run"), "on_parent_failure goes with depends_on"),
        (pb.EnqueueRequest(type="echo", delay=5, depends_on=["ghost-3"]), "depends_on"),
    ):
        error = await rpc_error(rig.jobs.Enqueue(request))
        assert error.code() is Code.INVALID_ARGUMENT and named in (error.details() or ""), error
    assert list((await rig.jobs.ListJobs(pb.ListJobsRequest())).jobs) == []  # nothing was stored
    missing = await rpc_error(rig.jobs.GetWorkflow(pb.GetWorkflowRequest(id="nothing-here")))
    assert missing.code() is Code.NOT_FOUND and "nothing-here" in (missing.details() or "")


async def test_a_workflow_sent_again_is_idempotent_and_one_job_may_wait_for_a_stored_one(rig: Rig) -> None:
    jobs = [step("w1", "echo"), step("w2", "echo", "w1")]
    first = await rig.jobs.CreateWorkflow(pb.CreateWorkflowRequest(id="again", jobs=jobs))
    again = await rig.jobs.CreateWorkflow(pb.CreateWorkflowRequest(id="again", jobs=jobs))
    assert (first.created, again.created) == (2, 0)
    assert [job.id for job in again.jobs] == [job.id for job in first.jobs] == ["w1", "w2"]
    changed = [step("w1", "echo"), step("w2", "echo")]
    error = await rpc_error(rig.jobs.CreateWorkflow(pb.CreateWorkflowRequest(id="again", jobs=changed)))
    assert error.code() is Code.ALREADY_EXISTS and "w2" in (error.details() or "")

    then = (await rig.jobs.Enqueue(pb.EnqueueRequest(type="echo", id="then", depends_on=["w2"]))).job
    assert then.status == pb.JOB_STATUS_WAITING
    assert then.workflow == pb.WorkflowTerms(depends_on=["w2"], on_parent_failure="cancel", parents_left=1)
    assert not then.workflow.HasField("id")  # enqueued on its own: in no workflow
    assert as_record(then) == normalised(await http_record(rig.client, "then"))
    assert list((await rig.jobs.GetJob(pb.GetJobRequest(id="w2"))).children) == ["then"]
    assert [job.id for job in (await rig.jobs.ListJobs(pb.ListJobsRequest(parent="w2"))).jobs] == ["then"]
    for job_id in ("w1", "w2"):
        [leased] = (await rig.workers.Lease(pb.LeaseRequest())).jobs
        assert leased.job.id == job_id
        await rig.workers.Complete(pb.CompleteRequest(id=job_id, lease_id=leased.lease_id, result=value(job_id)))
    ready = await rig.jobs.GetJob(pb.GetJobRequest(id="then"))
    assert (ready.status, ready.workflow.parents_left) == (pb.JOB_STATUS_PENDING, 0)


async def test_any_token_reads_a_jobs_parents_and_a_client_only_its_own(make_rig: MakeRig) -> None:
    shop, bob, ops = "shop-" + "s" * 20, "bob-" + "b" * 20, "ops-" + "o" * 20
    tokens = TokenBook(
        [
            (shop, Principal("shop", Role.CLIENT)),
            (bob, Principal("bob", Role.CLIENT)),
            (ops, Principal("ops", Role.ADMIN)),
        ]
    )
    rig = await make_rig(tokens=tokens, workers=0)

    def as_(token: str) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {token}"),)

    jobs = [step("first", "echo"), step("second", "echo", "first")]
    created = await rig.jobs.CreateWorkflow(pb.CreateWorkflowRequest(id="mine", jobs=jobs), metadata=as_(shop))
    assert created.created == 2
    request = pb.GetParentsRequest(id="second")
    own = await rig.jobs.GetParents(request, metadata=as_(shop))
    assert [(p.id, p.status) for p in own.parents] == [("first", pb.JOB_STATUS_PENDING)]
    assert (await rig.jobs.GetParents(request, metadata=as_(ops))).parents == own.parents
    for call in (
        rig.jobs.GetParents(request, metadata=as_(bob)),
        rig.jobs.GetWorkflow(pb.GetWorkflowRequest(id="mine"), metadata=as_(bob)),
    ):
        assert (await rpc_error(call)).code() is Code.NOT_FOUND  # another client's, as an unknown id
    theirs = await rpc_error(  # depending on another client's job: as if it did not exist
        rig.jobs.Enqueue(pb.EnqueueRequest(type="echo", depends_on=["first"]), metadata=as_(bob))
    )
    assert theirs.code() is Code.INVALID_ARGUMENT and "first" in (theirs.details() or "")
    assert (await rpc_error(rig.jobs.GetParents(request))).code() is Code.UNAUTHENTICATED
