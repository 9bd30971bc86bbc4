"""Workflows over HTTP, with in-process workers: graphs, groups with a callback, chains, and their errors."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from jobq.handlers import JobContext, Registry
from tests.conftest import MakeClient, wait_for_status
from tests.test_api import assert_problem


async def create(client: TestClient, jobs: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    response = await client.post("/workflows", json={"jobs": jobs, **fields})
    assert response.status == 202, await response.text()
    return await response.json()


def job(job_id: str, job_type: str = "step", *parents: str, **fields: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"id": job_id, "type": job_type, "payload": {"name": job_id}, **fields}
    if parents:
        spec["depends_on"] = list(parents)
    return spec


async def test_a_diamond_runs_its_last_job_once_after_both_middle_ones_and_reads_their_results(
    make_client: MakeClient, registry: Registry
) -> None:
    runs: list[str] = []
    read: dict[str, Any] = {}

    @registry.register("step")
    async def step(ctx: JobContext) -> str:
        runs.append(ctx.job.id)
        read[ctx.job.id] = [(p["id"], p["status"], p["result"]) for p in await ctx.parents()]
        return f"{ctx.job.id}-done"

    client = await make_client(workers=4)
    answer = await create(client, [job("a"), job("b", "step", "a"), job("c", "step", "a"), job("d", "step", "b", "c")])
    assert [j["status"] for j in answer["jobs"]] == ["pending", "waiting", "waiting", "waiting"]
    assert answer["created"] == 4
    done = await wait_for_status(client, "d", "completed")
    assert runs[0] == "a" and runs[-1] == "d" and sorted(runs[1:3]) == ["b", "c"] and len(runs) == 4
    assert read["d"] == [("b", "completed", "b-done"), ("c", "completed", "c-done")]
    assert read["a"] == []
    assert done["workflow"] == {
        "id": answer["id"],
        "depends_on": ["b", "c"],
        "on_parent_failure": "cancel",
        "parents_left": 0,
    }
    a = await (await client.get("/status/a")).json()
    assert a["children"] == ["b", "c"]
    view = await (await client.get(f"/workflows/{answer['id']}")).json()
    assert (view["total"], view["done"], view["failed"], view["finished"]) == (4, 4, 0, True)
    assert [(j["id"], j["depends_on"]) for j in view["jobs"]] == [
        ("a", []),
        ("b", ["a"]),
        ("c", ["a"]),
        ("d", ["b", "c"]),
    ]
    parents = await (await client.get("/jobs/d/parents")).json()
    assert [p["result"] for p in parents["parents"]] == ["b-done", "c-done"]
    children = await (await client.get("/jobs?parent=a")).json()
    assert [j["id"] for j in children["jobs"]] == ["c", "b"]


async def test_a_chord_callback_runs_once_with_every_outcome_even_a_failure(
    make_client: MakeClient, registry: Registry
) -> None:
    outcomes: list[list[str]] = []

    @registry.register("member")
    async def member(ctx: JobContext) -> int:
        if ctx.payload["n"] == 3:
            raise RuntimeError("three fails")
        return int(ctx.payload["n"]) * 10

    @registry.register("callback")
    async def callback(ctx: JobContext) -> None:
        outcomes.append(sorted(p["status"] for p in await ctx.parents()))

    client = await make_client(workers=4)
    members = [{"id": f"m{n}", "type": "member", "payload": {"n": n}} for n in range(6)]
    chord = job("cb", "callback", *(m["id"] for m in members), on_parent_failure="run")
    answer = await create(client, [*members, chord], id="chord-1")
    assert answer["id"] == "chord-1"
    await wait_for_status(client, "cb", "completed")
    assert outcomes == [["completed"] * 5 + ["failed"]]
    view = await (await client.get("/workflows/chord-1")).json()
    assert (view["done"], view["failed"], view["total"], view["counts"]) == (
        6,
        1,
        7,
        {"completed": 6, "failed": 1},
    )


async def test_a_chain_passes_each_result_on(make_client: MakeClient, registry: Registry) -> None:
    @registry.register("add_one")
    async def add_one(ctx: JobContext) -> int:
        parents = await ctx.parents()
        return (parents[0]["result"] if parents else 0) + 1

    client = await make_client(workers=4)
    chain = [job("s0", "add_one")] + [job(f"s{n}", "add_one", f"s{n - 1}") for n in range(1, 8)]
    await create(client, chain)
    last = await wait_for_status(client, "s7", "completed")
    assert last["result"] == 8


async def test_a_failed_parent_cancels_its_dependants_down_the_graph(
    make_client: MakeClient, registry: Registry
) -> None:
    @registry.register("boom")
    async def boom(ctx: JobContext) -> None:
        raise RuntimeError("no")

    @registry.register("step")
    async def step(ctx: JobContext) -> None:
        return None

    client = await make_client(workers=2)
    await create(
        client,
        [
            job("root", "boom"),
            job("mid", "step", "root"),
            job("leaf", "step", "mid"),
            job("anyway", "step", "mid", on_parent_failure="run"),
        ],
    )
    leaf = await wait_for_status(client, "leaf", "cancelled")
    assert leaf["error"] == "parent mid cancelled" and leaf["attempts"] == 0
    await wait_for_status(client, "anyway", "completed")


async def test_a_single_enqueue_may_depend_on_a_stored_job(make_client: MakeClient, registry: Registry) -> None:
    release = asyncio.Event()

    @registry.register("slow")
    async def slow(ctx: JobContext) -> str:
        await release.wait()
        return "slow-done"

    @registry.register("step")
    async def step(ctx: JobContext) -> Any:
        return (await ctx.parents())[0]["result"]

    client = await make_client(workers=2)
    first = await (await client.post("/enqueue", json={"type": "slow", "id": "first"})).json()
    response = await client.post("/enqueue", json={"type": "step", "id": "then", "depends_on": [first["id"]]})
    assert response.status == 202, await response.text()
    assert (await response.json())["status"] == "waiting"
    release.set()
    then = await wait_for_status(client, "then", "completed")
    assert then["result"] == "slow-done"


async def test_bad_workflows_are_refused_naming_what_is_wrong_and_store_nothing(client: TestClient) -> None:
    cycle = await client.post(
        "/workflows", json={"jobs": [job("x", "echo", "z"), job("y", "echo", "x"), job("z", "echo", "y")]}
    )
    body = await assert_problem(cycle, 422, "cycle")
    assert all(name in body["detail"] for name in ("x", "y", "z"))
    unknown = await client.post("/workflows", json={"jobs": [job("p", "echo", "ghost-1", "ghost-2")]})
    body = await assert_problem(unknown, 422, "ghost-1")
    assert "ghost-2" in body["detail"]
    assert {error["field"] for error in body["errors"]} == {"depends_on"}
    single = await client.post("/enqueue", json={"type": "echo", "depends_on": ["ghost-3"]})
    await assert_problem(single, 422, "ghost-3")
    twice = await client.post("/workflows", json={"jobs": [job("p", "echo"), job("p", "echo")]})
    await assert_problem(twice, 422, "more than once")
    invalid = await client.post("/workflows", json={"jobs": [job("ok", "echo"), {"type": 5}]})
    body = await assert_problem(invalid, 422, "jobs.1.type")
    assert "jobs.1.type" in {error["field"] for error in body["errors"]}
    scheduled = await client.post("/enqueue", json={"type": "echo", "delay": 5, "depends_on": ["ok"]})
    await assert_problem(scheduled, 422, "depends_on")
    policy = await client.post("/enqueue", json={"type": "echo", "on_parent_failure": "run"})
    await assert_problem(policy, 422, "on_parent_failure goes with depends_on")
    for job_id in ("x", "y", "z", "p", "ok"):
        await assert_problem(await client.get(f"/status/{job_id}"), 404, job_id)
    await assert_problem(await client.get("/workflows/nothing-here"), 404, "nothing-here")


async def test_sending_a_workflow_again_is_idempotent(client: TestClient) -> None:
    jobs = [job("w1", "echo"), job("w2", "echo", "w1")]
    first = await create(client, jobs, id="again")
    response = await client.post("/workflows", json={"id": "again", "jobs": jobs})
    assert response.status == 200
    second = await response.json()
    assert second["created"] == 0 and [j["id"] for j in second["jobs"]] == [j["id"] for j in first["jobs"]]
    changed = await client.post("/workflows", json={"id": "again", "jobs": [job("w1", "echo"), job("w2", "echo")]})
    await assert_problem(changed, 409, "w2")
    policy = [job("w1", "echo"), job("w2", "echo", "w1", on_parent_failure="run")]
    await assert_problem(await client.post("/workflows", json={"id": "again", "jobs": policy}), 409, "w2")
    elsewhere = await client.post("/workflows", json={"id": "other", "jobs": jobs})  # the same jobs, another workflow
    await assert_problem(elsewhere, 409, "w1")
    partly = [job("new-1", "echo"), job("w2", "echo"), job("new-2", "echo", "new-1")]  # w2 is taken: none is stored
    await assert_problem(await client.post("/workflows", json={"id": "again", "jobs": partly}), 409, "w2")
    for job_id in ("new-1", "new-2"):
        await assert_problem(await client.get(f"/status/{job_id}"), 404, job_id)


async def test_a_workflow_that_does_not_fit_stores_nothing(make_client: MakeClient) -> None:
    client = await make_client(queue_size=5)
    jobs = [job("f0", "echo")] + [job(f"f{n}", "echo", f"f{n - 1}") for n in range(1, 8)]
    response = await client.post("/workflows", json={"jobs": jobs})
    await assert_problem(response, 503, "limit")
    stats = await (await client.get("/stats")).json()
    assert stats["queue_depth"] == 0


async def test_a_workflow_of_ten_thousand_jobs_and_a_callback_with_ten_thousand_parents(
    make_client: MakeClient, registry: Registry
) -> None:
    seen: list[int] = []

    @registry.register("tally")
    async def tally(ctx: JobContext) -> int:
        parents = await ctx.parents()
        seen.append(len(parents))
        return sum(parent["result"] for parent in parents)

    client = await make_client(workers=32, body_limit=4 * 1024 * 1024)
    members = [{"id": f"j{n}", "type": "echo", "payload": 1} for n in range(10_000)]
    callback = job("sum", "tally", *(m["id"] for m in members), on_parent_failure="run")
    answer = await create(client, [*members, callback])
    assert answer["created"] == 10_001
    done = await wait_for_status(client, "sum", "completed", timeout=120)
    assert done["result"] == 10_000 and seen == [10_000]
    view = await (await client.get(f"/workflows/{answer['id']}")).json()
    assert (view["total"], view["done"], view["finished"]) == (10_001, 10_001, True)
