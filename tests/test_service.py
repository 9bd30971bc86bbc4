"""JobService.submit_one: jobs submitted while the store is busy go to it together, each answered on its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from jobq.app import store_from_config
from jobq.errors import IdReused, JobqError, QueueFull, StoreUnavailable
from jobq.handlers import Registry
from jobq.job import Job
from jobq.models import EnqueueRequest
from jobq.service import JobService
from jobq.store.base import Added, Store
from tests.conftest import TEST_CONFIG, store_url


class Counted:
    """Wraps a store's ``add``: counts the calls and their sizes, and can hold them or refuse adds of many jobs."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.add = store.add
        self.sizes: list[int] = []
        self.gate: asyncio.Event | None = None
        self.refuse_groups: Exception | None = None
        store.add = self._add  # type: ignore[method-assign]

    async def _add(self, jobs: Sequence[Job]) -> list[Added | Exception]:
        self.sizes.append(len(jobs))
        if self.gate is not None:
            await self.gate.wait()
        if self.refuse_groups is not None and len(jobs) > 1:
            raise self.refuse_groups
        return await self.add(jobs)


async def parked(service: JobService, counted: Counted, waiting: int, timeout: float = 5.0) -> None:
    """Wait, under a deadline, until one add is held in the store and ``waiting`` jobs wait for it to answer."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while counted.sizes != [1] or len(service._gathered or ()) != waiting:
        assert loop.time() < deadline, f"adds {counted.sizes}, {len(service._gathered or ())} of {waiting} waiting"
        await asyncio.sleep(0)


@pytest.fixture
async def service(backend: str, tmp_path: Path, registry: Registry) -> AsyncIterator[JobService]:
    config = replace(TEST_CONFIG, store=store_url(backend, tmp_path), workers=0, queue_size=30)
    service = JobService(config, store_from_config(config), registry)
    await service.start()
    yield service
    await service.drain()
    await service.close()


def job(n: int, **fields: object) -> EnqueueRequest:
    return EnqueueRequest.model_validate({"type": "echo", "id": f"job-{n}", "payload": {"n": n}, **fields})


async def test_jobs_submitted_while_an_add_is_in_flight_are_added_together(service: JobService) -> None:
    counted = Counted(service.store)
    counted.gate = asyncio.Event()
    first = asyncio.create_task(service.submit_one(job(0)))
    await parked(service, counted, 0)
    rest = [asyncio.create_task(service.submit_one(job(n))) for n in range(1, 21)]
    await parked(service, counted, 20)
    assert counted.sizes == [1], "the first goes at once; the others wait for it"
    counted.gate.set()
    answers = await asyncio.gather(first, *rest)
    assert counted.sizes == [1, 20], "one add for every job submitted meanwhile"
    assert [answer.job.id for answer in answers] == [f"job-{n}" for n in range(21)], "each its own job"
    assert all(answer.created for answer in answers)
    stored = [await service.store.get(f"job-{n}") for n in range(21)]
    assert [j.seq for j in stored if j is not None] == sorted(j.seq for j in stored if j is not None), "in order"
    assert (await service.submit_one(job(21))).created and counted.sizes == [1, 20, 1], "none in flight: at once"


async def test_each_job_of_a_group_gets_its_own_outcome(service: JobService) -> None:
    await service.submit_one(job(0))
    counted = Counted(service.store)
    counted.gate = asyncio.Event()
    blocker = asyncio.create_task(service.submit_one(job(1)))
    await parked(service, counted, 0)
    replay = asyncio.create_task(service.submit_one(job(0)))
    reused = asyncio.create_task(service.submit_one(job(0, payload={"other": True})))
    fresh = [asyncio.create_task(service.submit_one(job(n))) for n in range(2, 40)]  # the queue holds 30
    await parked(service, counted, 40)
    counted.gate.set()
    await blocker
    assert not (await replay).created
    with pytest.raises(IdReused):
        await reused
    outcomes = await asyncio.gather(*fresh, return_exceptions=True)
    assert sum(not isinstance(o, JobqError) for o in outcomes) == 28
    assert all(isinstance(o, QueueFull) for o in outcomes[28:])
    assert counted.sizes == [1, 40]


async def test_a_group_the_store_refuses_fails_each_of_its_callers_and_the_next_add_goes_on(
    service: JobService,
) -> None:
    counted = Counted(service.store)
    counted.gate = asyncio.Event()
    first = asyncio.create_task(service.submit_one(job(0)))
    await parked(service, counted, 0)
    group = [asyncio.create_task(service.submit_one(job(n))) for n in range(1, 4)]
    await parked(service, counted, 3)
    counted.refuse_groups = StoreUnavailable("the disk went away")
    counted.gate.set()
    assert (await first).created
    outcomes = await asyncio.gather(*group, return_exceptions=True)
    assert all(isinstance(o, StoreUnavailable) for o in outcomes), outcomes
    assert [await service.store.get(f"job-{n}") for n in range(1, 4)] == [None] * 3
    assert (await service.submit_one(job(9))).created, "nothing is left in flight"
    assert counted.sizes == [1, 3, 1]
