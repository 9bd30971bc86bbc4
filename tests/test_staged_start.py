"""The SQLite store serves while it reads its jobs back: every answer meanwhile is the answer a fully
read store gives (a real file; the chunks are held back and let through by the test)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobq.errors import StoreCorrupt, StoreUnavailable
from jobq.job import Job, JobStatus
from jobq.store import Added
from jobq.store import sqlite as sqlite_store
from jobq.store.sqlite import JournalWriter, SQLiteStore
from tests.conftest import OpenStore


class Chunks:
    """Lets the loader read its chunks only as the test says (the on-demand reads go through)."""

    def __init__(self) -> None:
        self._turns: asyncio.Semaphore | None = None
        self._open = False
        self.read = 0

    def _semaphore(self) -> asyncio.Semaphore:
        if self._turns is None:
            self._turns = asyncio.Semaphore(0)
        return self._turns

    async def turn(self) -> None:
        if not self._open:
            await self._semaphore().acquire()
        self.read += 1

    def allow(self, chunks: int) -> None:
        for _ in range(chunks):
            self._semaphore().release()

    def hold(self) -> None:
        """From now on, each chunk waits for ``allow`` again."""
        self._open = False

    def allow_all(self) -> None:
        self._open = True
        self.allow(1_000)


@pytest.fixture
def chunks(monkeypatch: pytest.MonkeyPatch) -> Chunks:
    """Chunks of 10 jobs, each read only when the test allows it."""
    gate = Chunks()
    real_call = JournalWriter.call

    async def call(self: JournalWriter, fn: Callable[[Any], Any]) -> Any:
        if getattr(fn, "func", None) is sqlite_store.read_chunk:
            await gate.turn()
        return await real_call(self, fn)

    monkeypatch.setattr(sqlite_store, "CHUNK", 10)
    monkeypatch.setattr(JournalWriter, "call", call)
    return gate


def job(job_id: str, **fields: Any) -> Job:
    return Job(id=job_id, type="t", payload={"id": job_id}, **fields)


async def fill(open_sqlite: OpenStore, *jobs: Job) -> SQLiteStore:
    """A file holding these jobs (in this order); the store that wrote it, open (close it to restart)."""
    store = await open_sqlite()
    outcomes = await store.add(jobs)
    assert all(isinstance(o, Added) and o.created for o in outcomes), outcomes
    return store


def numbered(count: int, **fields: Any) -> list[Job]:
    return [job(f"j{n}", **fields) for n in range(count)]


async def test_a_job_not_read_back_yet_is_answered_by_id(open_sqlite: OpenStore, chunks: Chunks) -> None:
    first = await fill(open_sqlite, *numbered(50))
    await first.append_log("j45", "written before the stop")
    await first.close()
    store = await open_sqlite()
    assert store.loading and chunks.read == 0
    found = await store.get("j49")
    assert found is not None and found.status is JobStatus.PENDING and found.payload == {"id": "j49"}
    assert (await store.cancel("j40")).status is JobStatus.CANCELLED
    assert [line["message"] for line in await store.logs("j45")] == ["written before the stop"]
    assert (await store.delete("j30")).id == "j30"
    assert await store.get("nope") is None
    assert store.loading and chunks.read == 0  # all of it answered before a single chunk was read
    chunks.allow_all()
    await store.loaded()
    assert await store.get("j30") is None  # its chunk, read after the delete, did not bring it back
    assert (await store.get("j40")).status is JobStatus.CANCELLED  # type: ignore[union-attr]
    assert [line["message"] for line in await store.logs("j45")] == ["written before the stop"]  # not twice
    stats = await store.stats()
    assert stats.by_status == {"pending": 48, "cancelled": 1}


async def test_a_client_chosen_id_on_file_is_never_added_twice(open_sqlite: OpenStore, chunks: Chunks) -> None:
    await (await fill(open_sqlite, *numbered(50))).close()
    store = await open_sqlite()
    [again, new] = await store.add([job("j49"), job("new")])
    assert isinstance(again, Added) and not again.created and again.job.seq == 50
    assert isinstance(new, Added) and new.created and new.job.seq == 51
    chunks.allow_all()
    page, _ = await store.list_jobs(limit=100)
    assert len(page) == 51 and len({j.id for j in page}) == 51
    assert [j.seq for j in page] == list(range(51, 0, -1))  # the listing is in seq order, newest first


async def test_leases_keep_priority_then_fifo_while_loading(open_sqlite: OpenStore, chunks: Chunks) -> None:
    first = await fill(
        open_sqlite,
        *numbered(30),
        *[job(f"hi{n}", priority=5) for n in range(5)],  # read back last: they must still go first
        *[job(f"o{n}", queue="other") for n in range(3)],
    )
    await first.close()
    store = await open_sqlite()
    await store.add([job("late")])  # added while loading: after every older job of its priority
    leasing = asyncio.create_task(store.lease(3, 60.0, queues=["default"]))
    await asyncio.sleep(0)
    chunks.allow(2)  # the lease waits for the chunks that hold the priority-5 jobs
    chunks.allow_all()
    assert [j.id for j in await leasing] == ["hi0", "hi1", "hi2"]
    leased = [j.id for j in await store.lease(100, 60.0)]
    assert leased == ["hi3", "o0", "hi4", "o1", "j0", "o2", *[f"j{n}" for n in range(1, 30)], "late"]
    assert await store.lease(10, 60.0) == []


async def test_a_lease_while_loading_never_hands_out_a_job_twice(open_sqlite: OpenStore, tmp_path: Path) -> None:
    first = await fill(open_sqlite, *numbered(20_000))  # chunks of 4,096, read while the leases go on
    await first.close()
    store = await open_sqlite()
    assert store.loading
    leased: list[str] = []

    async def worker() -> None:
        while batch := await store.lease(7, 60.0):
            leased.extend(j.id for j in batch)
            for leased_job in batch:
                await store.complete(leased_job.id, leased_job.lease_id or "", None)

    adds = store.add([job(f"j{n}") for n in range(19_990, 20_010)])  # 10 on file, 10 new
    outcomes, *_ = await asyncio.gather(adds, *(worker() for _ in range(4)))
    assert [o.created for o in outcomes if isinstance(o, Added)] == [False] * 10 + [True] * 10
    assert len(leased) == len(set(leased)) == 20_010
    assert leased == [f"j{n}" for n in range(20_010)]  # in seq order: the new ones after every job on file
    stats = await store.stats()
    assert stats.by_status == {"completed": 20_010}


async def test_a_run_cut_short_is_recovered_once_however_the_start_is_staged(
    open_sqlite: OpenStore, chunks: Chunks
) -> None:
    first = await fill(open_sqlite, *numbered(50, max_attempts=3))
    chunks.allow_all()
    for running in await first.lease(50, 60.0):
        if running.id not in {"j45", "j49"}:
            await first.complete(running.id, running.lease_id or "", None)
    await first.close()  # j45 and j49 were running: the stop cut them short
    chunks.hold()
    interrupted = await open_sqlite()
    assert interrupted.loading
    await interrupted.close()  # stopped again before their chunk was read: nothing was recovered yet
    store = await open_sqlite()
    recovered = await store.get("j49")  # read on demand: recovered as it is read
    assert recovered is not None and recovered.status is JobStatus.PENDING
    chunks.allow_all()
    await store.loaded()
    for job_id in ("j45", "j49"):
        again = await store.get(job_id)
        assert again is not None and [a.outcome for a in again.history] == ["recovered"]
    await store.close()
    restarted = await open_sqlite()
    await restarted.loaded()
    again = await restarted.get("j45")
    assert again is not None and [a.outcome for a in again.history] == ["recovered"]  # written once, counted once
    assert [j.id for j in await restarted.lease(10, 60.0)] == ["j45", "j49"]


async def test_a_run_cut_short_counts_toward_the_lost_run_limit(open_sqlite: OpenStore, chunks: Chunks) -> None:
    chunks.allow_all()
    first = await fill(open_sqlite, *numbered(30))
    await first.lease(30, 60.0)
    await first.close()
    store = await open_sqlite(max_lost_runs=1)
    dead = await store.get("j29")
    assert dead is not None and dead.status is JobStatus.DEAD
    await store.loaded()
    assert (await store.stats()).by_status == {"dead": 30}


async def test_a_row_that_cannot_be_read_stops_the_store_from_serving(open_sqlite: OpenStore, chunks: Chunks) -> None:
    first = await fill(open_sqlite, *numbered(30))
    await first.with_connection(lambda conn: conn.execute("UPDATE jobs SET payload = '{bad' WHERE id = 'j25'"))
    await first.close()
    store = await open_sqlite()  # only the counts are read before it serves
    with pytest.raises(StoreCorrupt, match="cannot read"):
        await store.get("j25")
    chunks.allow_all()
    with pytest.raises(StoreUnavailable, match="cannot read"):
        await store.loaded()
    assert store.unavailable is not None and "reading its jobs back failed" in store.unavailable
    with pytest.raises(StoreUnavailable):
        await store.stats()


async def test_rows_that_share_a_seq_are_all_read_back(open_sqlite: OpenStore, chunks: Chunks) -> None:
    chunks.allow_all()
    first = await fill(open_sqlite, *numbered(25))
    for leased in await first.lease(25, 60.0):
        await first.complete(leased.id, leased.lease_id or "", None)
    await first.with_connection(lambda conn: conn.execute("UPDATE jobs SET seq = 10 WHERE id IN ('j10', 'j11')"))
    await first.close()  # j9, j10 and j11 now share seq 10, across the first chunk's end (jobq never does this)
    store = await open_sqlite()
    await store.loaded()
    page, _ = await store.list_jobs(limit=100)
    assert sorted(j.id for j in page) == sorted(f"j{n}" for n in range(25))
