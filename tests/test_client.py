"""The Python SDK against a real server: typed jobs, errors as exceptions, remote workers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from jobq.errors import (
    IdReused,
    JobNotFound,
    JobqError,
    QueueFull,
    StaleLease,
    UnknownJobType,
    Unreachable,
    ValidationFailed,
    WorkflowNotFound,
)
from jobq.handlers import JobContext, Registry
from jobq.job import JobStatus
from jobq.sdk.client import BatchedSource, JobqClient, SyncJobqClient
from jobq.sdk.remote_worker import PatientSource
from jobq.sdk.workflow import Step, Workflow
from jobq.workers import WorkerPool
from tests.conftest import MakeClient, wait_for_status
from tests.procs import ServerProcess, free_port


def sdk_for(client: TestClient) -> JobqClient:
    return JobqClient(str(client.make_url("")))


@pytest.fixture
async def sdk(client: TestClient) -> AsyncIterator[JobqClient]:
    async with sdk_for(client) as jobq:
        yield jobq


async def test_enqueue_get_list_and_cancel(make_client: MakeClient) -> None:
    async with sdk_for(await make_client(workers=0)) as jobq:
        job = await jobq.enqueue("echo", {"n": 1}, id="sdk-1", priority=3, queue="mail")
        assert (job.id, job.status, job.priority, job.queue) == ("sdk-1", JobStatus.PENDING, 3, "mail")
        assert (await jobq.get("sdk-1")).payload == {"n": 1}
        page = await jobq.list(queue="mail")
        assert [j.id for j in page.jobs] == ["sdk-1"]
        assert page.next_cursor is None
        assert (await jobq.cancel("sdk-1")).status is JobStatus.CANCELLED
        stats = await jobq.stats()
        assert stats["jobs"]["cancelled"] == 1


async def test_enqueue_returns_the_whole_record_of_the_job_it_made(make_client: MakeClient) -> None:
    """From what was sent and the 202's receipt; a replay and a wait from the server's record."""
    async with sdk_for(await make_client(workers=0)) as jobq:
        payload = {"to": ["ada", "bob"]}
        scheduled = await jobq.enqueue("echo", payload, queue="mail", priority=-2, delay=30, max_attempts=3, timeout=5)
        payload["to"].append("eve")  # the caller's object is not the job's
        stored = await jobq.get(scheduled.id)
        assert scheduled.to_dict() == stored.to_dict()
        assert (scheduled.status, scheduled.payload, scheduled.timeout) == (
            JobStatus.SCHEDULED,
            {"to": ["ada", "bob"]},
            5.0,
        )
        plain = await jobq.enqueue("echo", id="plain")
        assert plain.to_dict() == (await jobq.get("plain")).to_dict()
        assert (plain.queue, plain.priority, plain.max_attempts, plain.payload) == ("default", 0, 1, {})
        await jobq.cancel("plain")
        replayed = await jobq.enqueue("echo", id="plain")  # sent before, and changed since
        assert replayed.to_dict() == (await jobq.get("plain")).to_dict()
        assert replayed.status is JobStatus.CANCELLED and replayed.finished_at is not None
        unique = await jobq.enqueue("echo", unique_key="digest:ada", unique_scope="any", unique_for=3600)
        assert unique.to_dict() == (await jobq.get(unique.id)).to_dict()  # its terms, as the server keeps them
        duplicate = await jobq.enqueue("echo", {"other": 1}, unique_key="digest:ada")
        assert duplicate.id == unique.id and duplicate.payload == {}  # the job that holds the key
        keyed = await jobq.enqueue("echo", queue="mail", concurrency_key="acme", concurrency_limit=2)
        debounced = await jobq.enqueue("echo", unique_key="reindex", debounce=30)
        latest = await jobq.enqueue("echo", {"v": 2}, unique_key="reindex", debounce=30)
        assert latest.id != debounced.id and (await jobq.get(debounced.id)).status is JobStatus.CANCELLED
        assert keyed.to_dict() == (await jobq.get(keyed.id)).to_dict()


async def test_a_queues_limits_are_set_read_and_removed(make_client: MakeClient) -> None:
    async with sdk_for(await make_client(workers=0)) as jobq:
        assert await jobq.flow("mail") is None
        flow = await jobq.set_flow("mail", concurrency=10, key_concurrency=2, key_rate=(5, 60))
        assert (flow["concurrency"], flow["key_concurrency"], flow["rate"]) == (10, 2, None)
        assert flow["key_rate"] == {"limit": 5, "period": 60.0}
        assert await jobq.flow("mail") == flow
        await jobq.remove_flow("mail")
        assert await jobq.flow("mail") is None


async def test_enqueue_with_wait_returns_the_finished_record(sdk: JobqClient) -> None:
    done = await sdk.enqueue("echo", {"n": 1}, wait=5)
    assert (done.status, done.result, len(done.history)) == (JobStatus.COMPLETED, {"n": 1}, 1)


async def test_server_errors_arrive_as_the_same_exception_classes(make_client: MakeClient) -> None:
    async with sdk_for(await make_client(workers=1, queue_size=1)) as jobq:
        with pytest.raises(JobNotFound):
            await jobq.get("missing")
        with pytest.raises(UnknownJobType) as unknown:
            await jobq.enqueue("no_such_type")
        assert unknown.value.status == 422
        with pytest.raises(ValidationFailed) as invalid:
            await jobq.enqueue("noop", priority=10**6)
        assert invalid.value.errors and invalid.value.errors[0]["field"] == "priority"
        await jobq.enqueue("noop", id="same", delay=60)
        with pytest.raises(IdReused):
            await jobq.enqueue("echo", id="same")
        with pytest.raises(QueueFull):
            await jobq.enqueue("noop", delay=60)


async def test_unreachable_server_is_a_clear_error() -> None:
    async with JobqClient(f"http://127.0.0.1:{free_port()}") as jobq:
        with pytest.raises(Unreachable, match="failed"):
            await jobq.get("x")


async def test_wait_returns_the_finished_job(sdk: JobqClient) -> None:
    job = await sdk.enqueue("echo", {"hello": "world"})
    done = await sdk.wait(job.id, timeout=10)
    assert done.status is JobStatus.COMPLETED
    assert done.result == {"hello": "world"}


async def test_remote_worker_pool_runs_jobs_over_http(registry: Registry, make_client: MakeClient) -> None:
    """The same WorkerPool, fed by the SDK instead of a store: what ``jobq worker`` runs."""
    seen: list[str] = []

    async def shout(ctx: JobContext) -> str:
        await ctx.log("shouting")
        await ctx.progress(1.0, "done")
        seen.append(ctx.job.id)
        return str(ctx.payload["word"]).upper()

    registry.register("shout")(shout)
    client = await make_client(workers=0)
    async with sdk_for(client) as jobq:
        pool = WorkerPool(BatchedSource(jobq), registry, concurrency=4, lease_seconds=10, idle_wait=0.5)
        pool.start()
        ids = [(await jobq.enqueue("shout", {"word": w})).id for w in ("a", "b", "c")]
        for job_id, word in zip(ids, ("A", "B", "C"), strict=True):
            job = await wait_for_status(client, job_id, "completed")
            assert job["result"] == word
            assert job["progress_note"] == "done"
        assert [line["message"] for line in await jobq.logs(ids[0])] == ["shouting"]
        report = await pool.drain(5, run_waiting=False)
        assert report.unfinished == []
        assert sorted(seen) == sorted(ids)


async def test_a_batched_source_settles_many_jobs_per_request(registry: Registry, make_client: MakeClient) -> None:
    client = await make_client(workers=0)
    settle_requests: list[int] = []

    async def flaky(ctx: JobContext) -> str:
        if ctx.payload["n"] % 5 == 0:
            raise ValueError(f"no {ctx.payload['n']}")
        return f"ok {ctx.payload['n']}"

    registry.register("flaky")(flaky)
    async with sdk_for(client) as jobq:
        send = jobq.settle

        async def counted(settlements: Any) -> Any:
            settle_requests.append(len(settlements))
            return await send(settlements)

        jobq.settle = counted  # type: ignore[method-assign]
        ids = [(await jobq.enqueue("flaky", {"n": n})).id for n in range(40)]
        pool = WorkerPool(BatchedSource(jobq), registry, concurrency=20, lease_seconds=10, idle_wait=0.5)
        pool.start()
        for n, job_id in enumerate(ids):
            job = await wait_for_status(client, job_id, "completed", "failed")
            assert (job["result"], job["error"]) == ((None, f"ValueError: no {n}") if n % 5 == 0 else (f"ok {n}", None))
        await pool.drain(5, run_waiting=False)
    assert sum(settle_requests) == 40
    assert len(settle_requests) < 40, settle_requests  # several jobs per request


async def test_a_batched_source_raises_stale_lease_for_its_own_item_only(make_client: MakeClient) -> None:
    client = await make_client(workers=0)
    async with sdk_for(client) as jobq:
        for n in range(2):
            await jobq.enqueue("echo", {"n": n})
        source = BatchedSource(jobq)
        first, second = await jobq.lease(2, 10)
        outcomes = await asyncio.gather(
            source.complete(first.id, first.lease_id or "", "done"),
            source.complete(second.id, "not-its-lease", "done"),
            return_exceptions=True,
        )
        assert outcomes[0] is None
        assert isinstance(outcomes[1], StaleLease)
        assert (await jobq.get(first.id)).status is JobStatus.COMPLETED
        assert (await jobq.get(second.id)).status is JobStatus.PROCESSING


async def complete_all_at_once(jobq: JobqClient, source: BatchedSource, count: int, result: object) -> None:
    """Lease ``count`` new jobs and complete them all in one loop pass through ``source``; all must land."""
    for n in range(count):
        await jobq.enqueue("echo", {"n": n})
    leased = await jobq.lease(count, 30)
    outcomes = await asyncio.gather(*(source.complete(job.id, job.lease_id or "", result) for job in leased))
    assert outcomes == [None] * count
    assert {(await jobq.get(job.id)).status for job in leased} == {JobStatus.COMPLETED}


async def test_a_batched_source_halves_batches_over_the_servers_limit(make_client: MakeClient) -> None:
    async with sdk_for(await make_client(workers=0, batch_limit=3)) as jobq:
        source = BatchedSource(jobq)
        await complete_all_at_once(jobq, source, 10, {"small": True})
        assert source.max_batch <= 3  # it learned the limit
        await source.close()


async def test_a_batched_source_keeps_requests_under_the_servers_body_limit(make_client: MakeClient) -> None:
    async with sdk_for(await make_client(workers=0, body_limit=200_000)) as jobq:
        # 30 results of 40 kB are 1.2 MB: several requests, each under the limit
        await complete_all_at_once(jobq, BatchedSource(jobq, max_bytes=150_000), 30, "x" * 40_000)


async def test_a_batched_source_never_leaves_a_settlement_waiting(aiohttp_server: Any) -> None:
    async def broken(request: web.Request) -> web.Response:
        return web.json_response({"results": []})  # an answer that does not match the request

    app = web.Application()
    app.router.add_post("/workers/settle", broken)
    server = await aiohttp_server(app)
    async with JobqClient(str(server.make_url(""))) as jobq:
        source = BatchedSource(jobq)
        outcomes = await asyncio.wait_for(
            asyncio.gather(source.complete("a", "l1", 1), source.fail("b", "l2", "boom"), return_exceptions=True), 5
        )
        assert all(isinstance(outcome, JobqError) for outcome in outcomes), outcomes


def test_sync_client_against_a_server_process(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server.log", "--store", "memory://", "--workers", "2")
    try:
        server.wait_ready()
        with SyncJobqClient(server.url) as jobq:
            job = jobq.enqueue("echo", {"sync": True})
            assert jobq.wait(job.id, timeout=10).result == {"sync": True}
            with pytest.raises(JobNotFound):
                jobq.get("nope")
            workflow = jobq.workflow()
            last = workflow.chain(("echo", {"step": 1}), ("echo", {"step": 2}))[-1]
            assert jobq.create_workflow(workflow)["created"] == 2
            assert jobq.wait(last, timeout=10).result == {"step": 2}
            assert jobq.get_workflow(workflow.id)["done"] == 2
            with pytest.raises(RuntimeError, match="create_workflow"):
                asyncio.run(workflow.submit())  # the blocking client's workflows are sent with create_workflow
    finally:
        server.stop()


async def test_many_concurrent_waiters_all_get_answers(sdk: JobqClient) -> None:
    jobs = [await sdk.enqueue("echo", {"i": i}) for i in range(200)]
    finished = await asyncio.gather(*(sdk.wait(job.id, timeout=20) for job in jobs))
    assert [job.result for job in finished] == [{"i": i} for i in range(200)]


# -- workflows -------------------------------------------------------------------
async def test_a_group_built_with_the_builder_runs_its_callback_once_with_every_outcome(
    make_client: MakeClient, registry: Registry
) -> None:
    calls: list[list[dict[str, Any]]] = []

    @registry.register("part")
    async def part(ctx: JobContext) -> int:
        if ctx.payload["n"] == 2:
            raise ValueError("two is out")
        return int(ctx.payload["n"]) * 10

    @registry.register("merge")
    async def merge(ctx: JobContext) -> dict[str, Any]:
        parents = await ctx.parents()
        calls.append(parents)
        return {
            "sum": sum(p["result"] for p in parents if p["status"] == "completed"),
            "failed": [p["error"] for p in parents if p["status"] != "completed"],
        }

    async with sdk_for(await make_client(workers=4)) as jobq:
        workflow = jobq.workflow()
        group = workflow.group(*(Step("part", {"n": n}) for n in range(5)), callback=("merge", {"label": "x"}))
        created = await workflow.submit()
        assert created["id"] == workflow.id and created["created"] == 6
        assert [job["id"] for job in created["jobs"]] == [*group.members, group.callback]
        assert created["jobs"][-1]["status"] == "waiting"
        done = await jobq.wait(group.callback, timeout=10)
        assert done.result == {"sum": 80, "failed": ["ValueError: two is out"]}
        assert done.payload == {"label": "x"}
        assert (done.depends_on, done.on_parent_failure, done.workflow) == (tuple(group.members), "run", workflow.id)
        assert len(calls) == 1 and [p["id"] for p in calls[0]] == group.members
        view = await jobq.get_workflow(workflow.id)
        assert (view["done"], view["failed"], view["total"], view["finished"]) == (5, 1, 6, True)
        assert view["counts"] == {"completed": 5, "failed": 1}
        assert view["jobs"][-1]["depends_on"] == group.members
        again = await workflow.submit()  # a lost answer, sent again: the same jobs
        assert again["created"] == 0 and [j["id"] for j in again["jobs"]] == [j["id"] for j in created["jobs"]]
        listed = await jobq.list(workflow=workflow.id)
        assert [job.id for job in listed.jobs] == [group.callback, *group.members[::-1]]  # newest first
        assert [job.id for job in (await jobq.list(parent=group.members[0])).jobs] == [group.callback]


async def test_a_chain_built_with_the_builder_passes_each_result_on_and_shows_its_progress(
    make_client: MakeClient, registry: Registry
) -> None:
    release = asyncio.Event()

    @registry.register("add_one")
    async def add_one(ctx: JobContext) -> int:
        if ctx.payload.get("hold"):
            await release.wait()
        parents = await ctx.parents()
        return (parents[0]["result"] if parents else 0) + 1

    client = await make_client(workers=2)
    async with sdk_for(client) as jobq:
        workflow = jobq.workflow("chain-1")
        steps = workflow.chain(Step("add_one", {"hold": True}, id="c0"), *["add_one"] * 4)
        await workflow.submit()
        await wait_for_status(client, "c0", "processing")
        view = await jobq.get_workflow("chain-1")
        assert (view["done"], view["total"], view["finished"]) == (0, 5, False)
        assert view["counts"] == {"processing": 1, "waiting": 4}
        assert [job["depends_on"] for job in view["jobs"]] == [[], *([step] for step in steps[:-1])]
        release.set()
        assert (await jobq.wait(steps[-1], timeout=10)).result == 5
        view = await jobq.get_workflow("chain-1")
        assert (view["done"], view["failed"], view["finished"]) == (5, 0, True)
        after = await jobq.enqueue("add_one", depends_on=steps[-1], on_parent_failure="run")  # one id: a str is fine
        assert (after.depends_on, after.on_parent_failure, after.workflow) == ((steps[-1],), "run", None)
        assert (await jobq.wait(after.id, timeout=10)).result == 6
        with pytest.raises(WorkflowNotFound):
            await jobq.get_workflow("no-such-workflow")


async def test_enqueue_with_depends_on_waits_and_a_failed_parent_cancels_it(make_client: MakeClient) -> None:
    async with sdk_for(await make_client(workers=0)) as jobq:
        parent = await jobq.enqueue("echo", id="parent-1")
        child = await jobq.enqueue("echo", id="child-1", depends_on=[parent.id])
        assert (child.status, child.parents_left, child.on_parent_failure) == (JobStatus.WAITING, 1, "cancel")
        assert child.to_dict() == (await jobq.get("child-1")).to_dict()
        await jobq.cancel(parent.id)
        cancelled = await jobq.get("child-1")
        assert (cancelled.status, cancelled.error) == (JobStatus.CANCELLED, "parent parent-1 cancelled")
        with pytest.raises(ValidationFailed, match="ghost"):
            await jobq.enqueue("echo", depends_on=["ghost"])
        bad = jobq.workflow()
        first = bad.add("echo", id="loop-a", depends_on=["loop-b"])
        bad.add("echo", id="loop-b", depends_on=[first])
        with pytest.raises(ValidationFailed, match="cycle"):
            await bad.submit()


def test_the_builder_chooses_ids_and_refuses_one_twice() -> None:
    workflow = Workflow(id="built")
    first = workflow.add("a", {"n": 1}, queue="q", priority=5)
    (second,) = workflow.chain("b", after=first)  # one id, not its letters
    group = workflow.group(("c", 1), Step("d", id="mine"), callback="e", after=[second])
    assert group.members[1] == "mine" and len({first, second, *group.members, group.callback}) == 5
    assert workflow.body() == {
        "id": "built",
        "jobs": [
            {"id": first, "type": "a", "payload": {"n": 1}, "queue": "q", "priority": 5},
            {"id": second, "type": "b", "payload": {}, "depends_on": [first]},
            {"id": group.members[0], "type": "c", "payload": 1, "depends_on": [second]},
            {"id": "mine", "type": "d", "payload": {}, "depends_on": [second]},
            {"id": group.callback, "type": "e", "payload": {}, "depends_on": group.members, "on_parent_failure": "run"},
        ],
    }
    with pytest.raises(ValueError, match="mine"):
        workflow.add("f", id="mine")
    with pytest.raises(ValueError, match="at least one member"):
        workflow.group(callback="lonely")
    assert len(workflow) == 5  # the refused ones placed nothing
    assert Workflow().id != Workflow().id


async def test_a_remote_worker_runs_a_chain_each_step_reading_the_one_before(
    registry: Registry, make_client: MakeClient
) -> None:
    """The sources ``jobq worker`` runs on (PatientSource over BatchedSource): ctx.parents() goes over HTTP."""

    @registry.register("append")
    async def append(ctx: JobContext) -> list[str]:
        parents = await ctx.parents()
        return [*(parents[0]["result"] if parents else []), ctx.payload["letter"]]

    client = await make_client(workers=0)  # only the worker over HTTP runs jobs
    async with sdk_for(client) as jobq:
        batched = BatchedSource(jobq)
        source = PatientSource(batched, jobq.url, give_up_after=0, on_give_up=lambda: None)
        pool = WorkerPool(source, registry, concurrency=2, lease_seconds=10, idle_wait=0.5)  # type: ignore[arg-type]
        pool.start()
        try:
            workflow = jobq.workflow()
            steps = workflow.chain(*(("append", {"letter": letter}) for letter in "abcd"))
            await workflow.submit()
            assert (await jobq.wait(steps[-1], timeout=10)).result == ["a", "b", "c", "d"]
        finally:
            await pool.drain(5, run_waiting=False)
            await batched.close()
