"""Random workflows (hypothesis) on every store: a job runs only after all its parents, at most once, and
exactly when the rules (jobq.workflow) say it should."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobq.job import JobStatus
from jobq.store import Added, Store, StoreOptions, open_store
from tests.conftest import BACKENDS, make_job, store_url

EXAMPLES = {"memory": 150, "sqlite": 60, "postgresql": 25, "redis": 25}


@dataclass(frozen=True)
class Dag:
    """A random workflow: each job's parents (all earlier jobs), which jobs fail when run, and who runs anyway."""

    parents: list[list[int]]
    fails: frozenset[int]
    runs_anyway: frozenset[int]
    seed: int


@st.composite
def dags(draw: st.DrawFn) -> Dag:
    size = draw(st.integers(min_value=1, max_value=24))
    parents = [sorted(draw(st.sets(st.integers(0, n - 1), max_size=min(n, 4)))) if n else [] for n in range(size)]
    fails = draw(st.frozensets(st.integers(0, size - 1), max_size=size // 3))
    runs_anyway = draw(st.frozensets(st.integers(0, size - 1)))
    return Dag(parents, fails, runs_anyway, draw(st.integers(0, 2**32)))


def expected_runs(dag: Dag) -> set[int]:
    """The jobs the rules run: those whose every parent completed, or, under "run", ended at all."""
    ran: set[int] = set()
    for n, parents in enumerate(dag.parents):  # parents come before their children
        if all((p in ran and p not in dag.fails) or n in dag.runs_anyway for p in parents):
            ran.add(n)
    return ran


async def run_dag(store: Store, dag: Dag) -> None:
    tag = uuid.uuid4().hex[:10]
    queue = f"q-{tag}"
    names = [f"{tag}-{n}" for n in range(len(dag.parents))]
    jobs = [
        make_job(
            names[n],
            queue=queue,
            depends_on=tuple(names[p] for p in parents),
            on_parent_failure="run" if n in dag.runs_anyway else "cancel",
            workflow=tag,
        )
        for n, parents in enumerate(dag.parents)
    ]
    shuffled = random.Random(dag.seed)
    outcomes = await store.add(shuffled.sample(jobs, len(jobs)), together=True)  # parents may come after children
    assert all(isinstance(outcome, Added) and outcome.created for outcome in outcomes), outcomes
    finished: set[str] = set()  # jobs whose run has ended
    ran: list[str] = []
    while True:
        leased = await store.lease(shuffled.randint(1, 4), 60, queues=[queue])
        if not leased:
            break
        for job in leased:
            assert job.id not in ran, f"{job.id} ran twice"
            parents = await store.get_many(job.depends_on)
            assert all(parent.finished for parent in parents), f"{job.id} ran before its parents ended"
            assert {parent.id for parent in parents if parent.attempts} <= finished, f"{job.id} ran beside a parent"
            ran.append(job.id)
        for job in shuffled.sample(leased, len(leased)):
            if int(job.id.rsplit("-", 1)[1]) in dag.fails:
                await store.fail(job.id, job.lease_id or "", "planned")
            else:
                await store.complete(job.id, job.lease_id or "", None)
            finished.add(job.id)
    assert {int(job_id.rsplit("-", 1)[1]) for job_id in ran} == expected_runs(dag)
    final = await store.get_many(names)
    assert not [job.id for job in final if not job.finished], "a job was left waiting"
    for job in final:
        if job.id not in ran:
            assert job.status is JobStatus.CANCELLED and job.attempts == 0 and (job.error or "").startswith("parent")


@pytest.fixture(params=BACKENDS)
def loop_and_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[asyncio.AbstractEventLoop, Store]]:
    """A store of each backend on an event loop of its own: hypothesis calls the test synchronously."""
    loop = asyncio.new_event_loop()
    store = open_store(store_url(request.param, tmp_path), StoreOptions())
    loop.run_until_complete(store.open())
    try:
        yield loop, store
    finally:
        loop.run_until_complete(store.close())
        loop.close()


def test_random_workflows_run_each_job_after_its_parents_and_at_most_once(
    loop_and_store: tuple[asyncio.AbstractEventLoop, Store], request: pytest.FixtureRequest
) -> None:
    loop, store = loop_and_store
    backend = request.node.callspec.params["loop_and_store"]

    @settings(
        max_examples=EXAMPLES[backend], deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(dag=dags())
    def check(dag: Dag) -> None:
        loop.run_until_complete(run_dag(store, dag))

    check()
