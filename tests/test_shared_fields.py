"""What stored jobs share to save memory (names, an empty payload or history) is never changed through one of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobq.job import Job, JobStatus
from jobq.store import Added, open_store
from jobq.store.memory import EMPTY_PAYLOAD, NO_HISTORY, MemoryStore


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'jobq.db'}"


async def test_an_attempt_of_one_job_never_shows_in_another(url: str) -> None:
    store = open_store(url)
    await store.open()
    try:
        outcomes = await store.add([Job(id=f"j{n}", type="noop", payload={}) for n in range(3)])
        assert all(isinstance(o, Added) and o.created for o in outcomes)
        [leased] = await store.lease(1, 60.0)
        assert leased.id == "j0" and [a.number for a in leased.history] == [1]
        await store.complete(leased.id, leased.lease_id or "", {"ok": True})
        for job_id in ("j1", "j2"):
            waiting = await store.get(job_id)
            assert waiting is not None and waiting.history == [] and waiting.payload == {}
            assert type(waiting.history) is list  # a snapshot's own list, whatever the store shares
            waiting.history.append(leased.history[0])  # changing a snapshot changes nothing stored
        assert (await store.get("j1")).history == []  # type: ignore[union-attr]
        done = await store.get("j0")
        assert done is not None and done.status is JobStatus.COMPLETED and len(done.history) == 1
    finally:
        await store.close()
    assert NO_HISTORY == () and EMPTY_PAYLOAD == {}


async def test_stored_jobs_share_their_names_and_empty_values() -> None:
    store = MemoryStore()
    await store.open()
    jobs = [Job(id=f"j{n}", type="".join(["no", "op"]), payload={}, queue="".join(["q", "1"])) for n in range(2)]
    await store.add(jobs)
    first, second = (store._jobs[f"j{n}"] for n in range(2))
    assert first.type is second.type and first.queue is second.queue
    assert first.payload is second.payload is EMPTY_PAYLOAD and first.history is second.history is NO_HISTORY
    await store.close()
