"""The SQLite store beyond the contract: restarts, crashes, bad files, the lock, group commit, full disks."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from jobq.app import create_app
from jobq.errors import StaleLease, StoreCorrupt, StoreFull, StoreUnavailable
from jobq.handlers import Registry
from jobq.job import Job, JobStatus
from jobq.retry import RetryPolicy
from jobq.store import Added, Retention, StoreOptions, open_store
from jobq.store.sqlite import SQLiteStore
from tests.conftest import TEST_CONFIG, OpenStore
from tests.procs import ROOT

BIG = "x" * 200_000  # a payload that needs many new pages


def make_job(job_id: str, **fields: Any) -> Job:
    fields.setdefault("type", "t")
    fields.setdefault("payload", {"id": job_id})
    return Job(id=job_id, **fields)


async def add(store: SQLiteStore, *jobs: Job) -> None:
    outcomes = await store.add(jobs)
    assert all(isinstance(o, Added) and o.created for o in outcomes), outcomes


async def lease_from(store: SQLiteStore, queue: str) -> Job:
    [job] = await store.lease(1, 60.0, queues=[queue])
    return job


async def scalar(store: SQLiteStore, sql: str) -> Any:
    return await store.with_connection(lambda conn: conn.execute(sql).fetchone()[0])


# -- restarts --------------------------------------------------------------
async def one_job_in_every_status(store: SQLiteStore) -> None:
    """Jobs ``pending``, ``scheduled``, ... ``cancelled``, ``running`` and ``waiting`` (on ``pending``), each alone
    in a queue of its name."""
    names = ["pending", "scheduled", "retrying", "completed", "failed", "dead", "cancelled", "running"]
    jobs = [make_job(name, queue=name, max_attempts=2 if name in ("retrying", "dead") else 1) for name in names]
    jobs[1].status, jobs[1].run_at = JobStatus.SCHEDULED, 4_000_000_000.0
    await add(store, *jobs)
    await add(store, make_job("waiting", queue="waiting", depends_on=("pending",)))
    job = await lease_from(store, "retrying")
    await store.fail("retrying", job.lease_id or "", "try again")
    job = await lease_from(store, "completed")
    await store.append_log("completed", "first line")
    await store.append_log("completed", "second line")
    await store.complete("completed", job.lease_id or "", {"rows": [1, 2], "ok": True})
    job = await lease_from(store, "failed")
    await store.fail("failed", job.lease_id or "", "boom")
    for _ in range(2):
        job = await lease_from(store, "dead")
        await store.fail("dead", job.lease_id or "", "boom", retry_in=0.0)
    await store.cancel("cancelled")
    job = await lease_from(store, "running")
    await store.set_progress("running", job.lease_id, 0.5, "halfway")


async def test_every_status_logs_and_paused_queues_survive_a_restart(open_sqlite: OpenStore) -> None:
    store = await open_sqlite(retry=RetryPolicy(base=3600.0, cap=3600.0))
    await one_job_in_every_status(store)
    await store.set_paused("pending", True)
    before = {job.id: job.to_dict() for job in (await store.list_jobs(limit=100))[0]}
    assert {view["status"] for view in before.values()} == {s.value for s in JobStatus}
    await store.close()

    again = await open_sqlite()
    after = {job.id: job.to_dict() for job in (await again.list_jobs(limit=100))[0]}
    assert list(after) == list(before)  # same jobs, same newest-first order
    running = after.pop("running")
    assert {k: v for k, v in after.items()} == {k: v for k, v in before.items() if k != "running"}
    assert (running["status"], running["attempts"], running["history"][-1]["outcome"]) == (
        "pending",
        0,
        "recovered",
    )  # a lost run uses no attempt
    assert [line["message"] for line in await again.logs("completed")] == ["first line", "second line"]
    assert (await again.stats()).paused == ["pending"]
    assert await again.lease(1, 60.0, queues=["pending"]) == []
    await add(again, make_job("newest"))
    assert (await again.list_jobs(limit=1))[0][0].id == "newest"  # seq continues past the stored ones


async def test_purge_and_clear_delete_rows(open_sqlite: OpenStore) -> None:
    store = await open_sqlite(retention=Retention(max_count=1))
    await add(
        store, make_job("old"), make_job("new"), make_job("soon", queue="q", status=JobStatus.SCHEDULED, run_at=1.0)
    )
    for job_id in ("old", "new"):
        job = await lease_from(store, "default")
        await store.append_log(job_id, "ran")
        await store.complete(job_id, job.lease_id or "", None)
    assert await store.purge() == 1
    assert await store.clear("q") == 1
    assert await scalar(store, "SELECT group_concat(id) FROM jobs") == "new"
    assert await scalar(store, "SELECT group_concat(job_id) FROM job_logs") == "new"
    await store.close()
    again = await open_sqlite()
    assert [job.id for job in (await again.list_jobs())[0]] == ["new"]


async def test_a_cleared_id_added_again_in_the_same_commit_is_kept(open_sqlite: OpenStore) -> None:
    store = await open_sqlite()
    await add(store, make_job("a", queue="q", payload="first"))
    cleared, [outcome] = await asyncio.gather(store.clear("q"), store.add([make_job("a", queue="q", payload="second")]))
    assert cleared == 1 and isinstance(outcome, Added) and outcome.created
    await store.close()
    again = await open_sqlite()
    job = await again.get("a")
    assert job is not None and job.payload == "second"


async def test_an_add_cancelled_while_committing_still_lands(open_sqlite: OpenStore) -> None:
    store = await open_sqlite()
    adding = asyncio.create_task(store.add([make_job("a")]))
    await asyncio.sleep(0)  # the write is queued; now the caller gives up
    adding.cancel()
    await asyncio.gather(adding, return_exceptions=True)
    await store.with_connection(lambda conn: None)  # the commit has happened
    [job] = await store.lease(1, 60.0)
    assert job.id == "a"
    assert (await store.stats()).by_status == {"processing": 1}


CRASH_SCRIPT = """
import asyncio, os, sys
from jobq.job import Job
from jobq.store.sqlite import SQLiteStore

async def main(path):
    store = SQLiteStore(path)
    await store.open()
    await store.add([Job(id=f"j{i}", type="t", payload={"i": i}) for i in range(5)])
    await store.lease(3, 60.0, worker="doomed")
    await store.append_log("j0", "started")
    await store.with_connection(lambda conn: None)  # everything above is committed
    os._exit(0)  # no close, no release: a crash

asyncio.run(main(sys.argv[1]))
"""


async def test_jobs_left_processing_by_a_crash_are_pending_again(
    open_sqlite: OpenStore, db_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    crashed = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASH_SCRIPT, db_path, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert await asyncio.wait_for(crashed.wait(), 30) == 0
    caplog.set_level(logging.INFO, logger="jobq.store")
    store = await open_sqlite()
    await store.loaded()  # the jobs are read back while the store serves; the count is logged at the end
    assert any("recovered 3 jobs" in r.getMessage() for r in caplog.records), caplog.text
    assert (await store.stats()).by_status == {"pending": 5}
    recovered = await store.get("j0")
    assert recovered is not None and recovered.attempts == 0  # a lost run uses no attempt
    assert [(a.worker, a.outcome) for a in recovered.history] == [("doomed", "recovered")]
    assert [line["message"] for line in await store.logs("j0")] == ["started"]
    assert [job.id for job in await store.lease(5, 60.0)] == ["j0", "j1", "j2", "j3", "j4"]  # in their places


# -- files jobq must not start over ----------------------------------------
def write_random_bytes(path: str) -> None:
    Path(path).write_bytes(os.urandom(64 * 1024))


def write_text(path: str) -> None:
    Path(path).write_text("job_id,status\n" * 1000)


def write_foreign_database(path: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
    conn.close()


def write_newer_schema(path: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (99)")
    conn.close()


async def write_bad_row(path: str) -> None:
    store = SQLiteStore(path)
    await store.open()
    await add(store, make_job("a"))
    await store.with_connection(lambda conn: conn.execute("UPDATE jobs SET status = 'lost'"))
    await store.close()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (write_random_bytes, "not a readable jobq store"),
        (write_text, "not a readable jobq store"),
        (write_foreign_database, "not a jobq store"),
        (write_newer_schema, "schema version 99"),
        (write_bad_row, "cannot read"),
    ],
)
async def test_an_unreadable_file_raises_store_corrupt(db_path: str, damage: Callable[[str], Any], reason: str) -> None:
    made = damage(db_path)
    if asyncio.iscoroutine(made):
        await made
    content = await asyncio.to_thread(Path(db_path).read_bytes)
    store = SQLiteStore(db_path)
    with pytest.raises(StoreCorrupt, match=reason) as raised:
        await store.open()
    assert db_path in str(raised.value)
    await asyncio.wait_for(store.close(), 5.0)  # after a failed open, close returns at once
    assert await asyncio.to_thread(Path(db_path).read_bytes) == content  # never written over
    with pytest.raises(StoreCorrupt):  # the failed open released the lock: the next one gets as far
        await SQLiteStore(db_path).open()


async def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    path = str(tmp_path / "nowhere" / "jobq.db")
    with pytest.raises(StoreUnavailable, match=r"directory .*nowhere does not exist"):
        await SQLiteStore(path).open()


async def test_a_second_opener_is_refused_until_the_first_closes(open_sqlite: OpenStore, db_path: str) -> None:
    first = await open_sqlite()
    second = SQLiteStore(db_path)
    with pytest.raises(StoreUnavailable, match=rf"in use by another jobq process \(pid {os.getpid()}"):
        await second.open()
    await second.close()
    await add(first, make_job("a"))  # the refused opener did not disturb the first
    await first.close()
    third = await open_sqlite()
    assert await third.get("a") is not None


async def test_a_cancelled_open_leaves_the_file_free(open_sqlite: OpenStore, db_path: str) -> None:
    for steps in range(4):  # cancel at each await of open() in turn
        store = SQLiteStore(db_path)
        opening = asyncio.create_task(store.open())
        for _ in range(steps):
            await asyncio.sleep(0)
        opening.cancel()
        await asyncio.gather(opening, return_exceptions=True)
        await asyncio.wait_for(store.close(), 5.0)
    assert (await open_sqlite()).commits == 0  # and the next opener gets the lock


def test_a_store_url_without_a_path_is_refused() -> None:
    with pytest.raises(ValueError, match="file path"):
        open_store("sqlite://")


# -- writing ---------------------------------------------------------------
async def test_concurrent_adds_share_commits(open_sqlite: OpenStore) -> None:
    store = await open_sqlite()
    before = store.commits
    outcomes = await asyncio.gather(*(store.add([make_job(f"j{i}")]) for i in range(500)))
    assert all(isinstance(o, Added) and o.created for [o] in outcomes)
    assert store.commits - before <= 50, f"{store.commits - before} commits for 500 adds"
    assert await scalar(store, "SELECT count(*) FROM jobs") == 500


async def test_a_full_disk_refuses_writes_with_store_full_until_space_returns(
    open_sqlite: OpenStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = await open_sqlite()
    await add(store, make_job("small"))
    pages = await scalar(store, "PRAGMA page_count")
    assert await store.set_max_pages(pages) == pages
    [outcome], [replay] = await asyncio.gather(*(store.add([make_job("big1", payload=BIG)]) for _ in range(2)))
    assert isinstance(outcome, StoreFull) and "full" in outcome.detail
    assert isinstance(replay, StoreFull)  # a replay is answered by the original's commit, not before it
    assert await store.get("big1") is None
    assert (await store.stats()).by_status == {"pending": 1}
    [job] = await store.lease(1, 60.0)
    await store.set_progress("small", job.lease_id, 0.1, BIG)
    await store.with_connection(lambda conn: None)
    gc.collect()
    assert "never retrieved" not in caplog.text
    assert "failed" in caplog.text and "full" in caplog.text  # the writer logged it once

    await store.set_max_pages(1_000_000)
    await add(store, make_job("big2", payload=BIG))
    await store.close()
    again = await open_sqlite()
    assert await again.get("big1") is None
    big2 = await again.get("big2")
    assert big2 is not None and big2.payload == BIG


async def test_a_job_running_at_every_stop_is_dead_after_the_third_lost_run(open_sqlite: OpenStore) -> None:
    store = await open_sqlite()
    await add(store, make_job("poison", max_attempts=10), make_job("fine"))
    for stop in (1, 2, 3):
        leased = {job.id for job in await store.lease(2, 60.0)}
        assert "poison" in leased, f"stop {stop}: the job was not re-run"
        done = await store.get("fine")
        if done is not None and done.status is JobStatus.PROCESSING:
            await store.complete("fine", done.lease_id or "", "ok")
        await store.close()  # the leases stay on disk, as after a crash
        store = await open_sqlite()
    poison = await store.get("poison")
    assert poison is not None
    assert poison.status is JobStatus.DEAD
    assert poison.error is not None and "lost 3 runs in a row" in poison.error
    assert [attempt.outcome for attempt in poison.history] == ["recovered", "recovered", "recovered"]
    assert await store.lease(1, 60.0, wait=0.05) == []  # nothing left to run
    assert (await store.get("fine")) is not None


async def test_a_repeated_complete_after_a_restart_gets_the_first_answer(open_sqlite: OpenStore) -> None:
    store = await open_sqlite()
    await add(store, make_job("a"))
    [job] = await store.lease(1, 60.0)
    lease_id = job.lease_id or ""
    await store.complete("a", lease_id, {"first": True})
    await store.close()
    again = await open_sqlite()
    repeated = await again.complete("a", lease_id, {"second": True})  # its answer was lost across the restart
    assert (repeated.status, repeated.result) == (JobStatus.COMPLETED, {"first": True})
    with pytest.raises(StaleLease):
        await again.complete("a", "another-lease", None)


async def test_a_change_that_failed_to_commit_is_written_once_space_returns(open_sqlite: OpenStore) -> None:
    store = await open_sqlite()
    await add(store, make_job("a"))
    [job] = await store.lease(1, 60.0)
    await store.with_connection(lambda conn: None)  # the lease is on disk
    await store.set_max_pages(await scalar(store, "PRAGMA page_count"))
    with pytest.raises(StoreFull):
        await store.complete("a", job.lease_id or "", {"blob": BIG})
    on_disk = "SELECT status FROM jobs WHERE id = 'a'"
    assert await scalar(store, on_disk) == "processing"  # memory says completed; the file could not follow
    await store.set_max_pages(1_000_000)
    deadline = time.monotonic() + 10
    while await scalar(store, on_disk) != "completed":
        assert time.monotonic() < deadline, "the failed change was never written again"
        await asyncio.sleep(0.05)
    await store.close()
    again = await open_sqlite()
    reread = await again.get("a")
    assert reread is not None and (reread.status, reread.result) == (JobStatus.COMPLETED, {"blob": BIG})


async def test_a_failed_change_whose_caller_gave_up_is_written_too(open_sqlite: OpenStore) -> None:
    store = await open_sqlite()
    await add(store, make_job("a"))
    [job] = await store.lease(1, 60.0)
    await store.with_connection(lambda conn: None)
    await store.set_max_pages(await scalar(store, "PRAGMA page_count"))
    completing = asyncio.create_task(store.complete("a", job.lease_id or "", {"blob": BIG}))
    await asyncio.sleep(0)  # the change is made and queued; the caller now waits for its commit
    completing.cancel()  # a client that hung up, a gRPC deadline
    with pytest.raises(asyncio.CancelledError):
        await completing
    on_disk = "SELECT status FROM jobs WHERE id = 'a'"
    assert await scalar(store, on_disk) == "processing"
    await store.set_max_pages(1_000_000)
    deadline = time.monotonic() + 10
    while await scalar(store, on_disk) != "completed":
        assert time.monotonic() < deadline, "the change of a cancelled caller was never written again"
        await asyncio.sleep(0.05)


async def test_enqueue_answers_507_while_the_disk_is_full(
    aiohttp_client: Any, registry: Registry, db_path: str
) -> None:
    store = SQLiteStore(db_path)
    client = await aiohttp_client(create_app(replace(TEST_CONFIG, workers=0), store=store, handlers=registry))
    await store.set_max_pages(await scalar(store, "PRAGMA page_count"))
    response = await client.post("/enqueue", json={"id": "big", "type": "noop", "payload": {"blob": BIG}})
    assert response.status == 507
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert response.headers["Retry-After"] == "30"
    problem = await response.json(content_type=None)
    assert (problem["status"], problem["title"]) == (507, "Storage full")
    assert (await client.get("/status/big")).status == 404

    await store.set_max_pages(1_000_000)
    response = await client.post("/enqueue", json={"id": "big", "type": "noop", "payload": {"blob": BIG}})
    assert response.status == 202
    assert (await client.get("/status/big")).status == 200


@pytest.mark.parametrize(("durability", "synchronous"), [("full", 2), ("normal", 1)])
async def test_durability_sets_the_sync_level(db_path: str, durability: str, synchronous: int) -> None:
    store = open_store(f"sqlite:///{db_path}", durability=durability)
    assert isinstance(store, SQLiteStore)
    await store.open()
    try:
        assert await scalar(store, "PRAGMA synchronous") == synchronous
        assert await scalar(store, "PRAGMA journal_mode") == "wal"
    finally:
        await store.close()


def test_an_unknown_durability_is_refused(db_path: str) -> None:
    with pytest.raises(ValueError, match="durability"):
        SQLiteStore(db_path, durability="sometimes")


async def test_writes_after_close_fail_cleanly(open_sqlite: OpenStore) -> None:
    store = await open_sqlite()
    await store.close()
    [outcome] = await store.add([make_job("late")])
    assert isinstance(outcome, StoreUnavailable)
    assert await store.get("late") is None


async def test_sqlite_runs_only_on_the_writer_thread(monkeypatch: pytest.MonkeyPatch, db_path: str) -> None:
    threads: set[int] = set()
    statements: list[str] = []
    real_connect = sqlite3.connect

    def traced_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        threads.add(threading.get_ident())
        conn = real_connect(*args, **kwargs)
        conn.set_trace_callback(lambda sql: (threads.add(threading.get_ident()), statements.append(sql)))
        return conn

    monkeypatch.setattr(sqlite3, "connect", traced_connect)
    store = SQLiteStore(db_path, StoreOptions(retention=Retention(max_count=0)))
    await store.open()
    await add(store, make_job("a"), make_job("b", queue="q"))
    [job] = await store.lease(1, 60.0)
    await store.heartbeat(job.id, job.lease_id or "", 60.0)
    await store.append_log(job.id, "hello")
    await store.complete(job.id, job.lease_id or "", None)
    await store.set_paused("q", True)
    await store.clear("q")
    await store.purge()
    writer = store.writer_thread_id
    await store.close()
    assert any("job_logs" in sql for sql in statements) and any("DELETE" in sql for sql in statements)
    assert threads == {writer}
    assert threading.get_ident() not in threads


# -- the write path -----------------------------------------------------------
def hold_writer(store: SQLiteStore) -> tuple[threading.Event, asyncio.Future[None]]:
    """Block the writer thread until the returned event is set (a slow disk, say)."""
    go = threading.Event()
    held = asyncio.ensure_future(store.with_connection(lambda conn: go.wait(10)))
    return go, held  # type: ignore[return-value]


async def test_nothing_is_seen_or_published_before_it_is_committed(open_sqlite: OpenStore) -> None:
    store = await open_sqlite()
    await add(store, make_job("a"))
    job = await store.lease(1, 60.0)
    events: list[str] = []
    store.subscribe(lambda e: events.append(e.job.status.value))
    go, held = hold_writer(store)
    completing = asyncio.ensure_future(store.complete("a", job[0].lease_id or "", "ok"))
    reading = asyncio.ensure_future(store.get("a"))
    for _ in range(20):  # give both every chance to finish early
        await asyncio.sleep(0)
    assert not completing.done() and not reading.done() and events == []  # in memory, not yet on disk
    go.set()
    await held
    assert (await completing).status is JobStatus.COMPLETED
    got = await reading
    assert got is not None and got.status is JobStatus.COMPLETED
    assert events == ["completed"]


async def test_one_unstorable_write_fails_alone_and_is_set_aside(
    open_sqlite: OpenStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = await open_sqlite()
    await add(store, make_job("bad"))
    [job] = await store.lease(1, 60.0)
    go, held = hold_writer(store)
    # Values no handler can pass any more (JobContext makes them storable), written straight to the store:
    await store.set_progress("bad", job.lease_id, 0.5, {"step": 1})  # type: ignore[arg-type]
    await store.append_log("bad", "processing caf\udce9.txt")
    others = [asyncio.ensure_future(store.add([make_job(f"ok-{i}")])) for i in range(20)]
    go.set()
    await held
    outcomes = [outcome for [outcome] in await asyncio.gather(*others)]
    assert all(isinstance(o, Added) for o in outcomes), outcomes  # every other client's write landed
    assert "set aside" in caplog.text and "bad" in caplog.text
    still = await store.get("bad")  # the job stays readable; only the bad write was dropped
    assert still is not None and still.status is JobStatus.PROCESSING
    commits = store.commits
    await add(store, make_job("after"))
    assert store.commits == commits + 1  # the bad writes are not sent again
    await store.close()
    again = await open_sqlite()
    assert {f"ok-{i}" for i in range(20)} <= {j.id for j in (await again.list_jobs(limit=100))[0]}


async def test_a_dead_writer_fails_every_write_at_once_and_health_says_so(
    open_sqlite: OpenStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = await open_sqlite()
    writer = store._writer
    assert writer is not None

    def broken(conn: sqlite3.Connection, group: list[Any]) -> None:
        raise RuntimeError("a bug in the writer")

    monkeypatch.setattr(writer, "_transaction", broken)
    [outcome] = await asyncio.wait_for(store.add([make_job("lost")]), 5)
    assert isinstance(outcome, StoreUnavailable)
    assert store.unavailable is not None and "writer thread failed" in store.unavailable
    [refused] = await asyncio.wait_for(store.add([make_job("later")]), 5)  # refused at once, never hangs
    assert isinstance(refused, StoreUnavailable)
    assert "CRITICAL" in caplog.text or "writer of" in caplog.text


async def test_a_lease_heartbeat_progress_and_completion_write_only_what_changed(open_sqlite: OpenStore) -> None:
    store = await open_sqlite()
    await add(store, make_job("a", payload={"big": "x" * 2000}))
    statements: list[str] = []
    await store.with_connection(lambda conn: conn.set_trace_callback(statements.append))
    [job] = await store.lease(1, 60.0)
    await store.heartbeat("a", job.lease_id or "", 60.0)
    await store.set_progress("a", job.lease_id, 0.5, "half")
    await store.with_connection(lambda conn: conn.set_trace_callback(None))
    writes = [s for s in statements if s.startswith("UPDATE")]
    assert len(writes) == 3, statements
    assert all("payload" not in s and "history" not in s and "result" not in s for s in writes), writes
    statements.clear()
    await store.with_connection(lambda conn: conn.set_trace_callback(statements.append))
    completed = await store.complete("a", job.lease_id or "", "ok")
    await store.with_connection(lambda conn: conn.set_trace_callback(None))
    [write] = [s for s in statements if s.startswith("UPDATE")]
    assert not any(f"{column} =" in write for column in ("attempts", "started_at", "progress")), write  # unchanged
    await store.close()
    again = await open_sqlite()
    done = await again.get("a")
    assert done is not None and (done.status, done.result, done.payload) == (
        JobStatus.COMPLETED,
        "ok",
        {"big": "x" * 2000},
    )
    assert [a.outcome for a in done.history] == ["completed"]
    assert done.to_dict() == completed.to_dict()  # what the completion left unwritten was on file already


async def test_health_turns_503_when_the_writer_is_gone(
    aiohttp_client: Any, registry: Registry, db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteStore(db_path)
    client = await aiohttp_client(create_app(replace(TEST_CONFIG, workers=0), store=store, handlers=registry))
    assert (await client.get("/health")).status == 200
    assert store._writer is not None
    monkeypatch.setattr(store._writer, "_transaction", lambda conn, group: 1 / 0)
    refused = await client.post("/enqueue", json={"type": "echo"})
    assert refused.status == 503 and refused.content_type == "application/problem+json"
    health = await client.get("/health")
    body = await health.json()
    assert health.status == 503 and body["status"] == "unavailable" and "writer thread failed" in body["detail"]


async def test_a_new_file_has_pages_a_job_with_a_large_payload_shares(open_sqlite: OpenStore) -> None:
    store = await open_sqlite()
    assert await store.with_connection(lambda conn: conn.execute("PRAGMA page_size").fetchone()[0]) == 16384
    await add(store, *(make_job(f"j{i}", payload={"blob": "x" * 2000}) for i in range(50)))
    pages = await store.with_connection(lambda conn: conn.execute("PRAGMA page_count").fetchone()[0])
    assert pages < 25  # about seven 2 kB jobs to a page, not one
