"""The durable store: the memory index plus a SQLite journal, group-committed on one thread.

Every job lives in the :class:`MemoryStore` index, so leasing never searches
the disk. Each change is also handed to a :class:`JournalWriter`: one thread that
owns the only SQLite connection, takes everything queued since its last commit,
writes it in one transaction and commits (one fsync for the whole group), then
resolves the futures of every write in that group. Writes are applied in the
order they were queued, and each writes only what changed: a lease, heartbeat or
progress report touches a few columns, and a payload is written once, on add.

A group that fails is retried write by write, so one bad write never fails
another client's: a write that still cannot be stored is set aside (an ERROR
names its jobs), and writes that failed for want of room or I/O are written
again every second until they land. If the writer thread itself dies, every
write fails at once with StoreUnavailable and ``unavailable`` says why.

On open, the file is locked (one jobq process per file), migrated, and read
back into the index; a run a crashed process left ``processing`` is lost, and
the lifecycle rules re-run the job (or give it up after too many lost runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import gc
import itertools
import json
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from queue import Empty, SimpleQueue
from typing import Any, TypeVar

from jobq.errors import JobqError, StoreCorrupt, StoreFull, StoreUnavailable, UnstorableValue
from jobq.flow import QueueFlow
from jobq.job import COMPLETED, TERMINAL, WAITING, Job, JobStatus
from jobq.store.base import StoredSchedule, StoreOptions
from jobq.store.loading import Loading
from jobq.store.memory import ADD, COMPLETE, HEARTBEAT, LEASE, PROGRESS, SETTLE, STATE, MemoryStore
from jobq.store.rows import COLUMNS, COMPLETE_COLUMNS, STATE_COLUMNS, STATUSES, job_from_row, job_values

log = logging.getLogger("jobq.store")

T = TypeVar("T")

SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL"}  # durability -> PRAGMA synchronous
PAGE_SIZE = 16384  # of new files: a job's whole row (a 2 kB payload included) fits a page with others
BUSY_TIMEOUT_MS = 5000  # another SQLite client (a backup, the sqlite3 shell) may hold the file briefly

INSERT_JOB = "INSERT OR REPLACE INTO jobs ({}) VALUES ({})".format(", ".join(COLUMNS), ", ".join("?" * len(COLUMNS)))
# Chunks go by (seq, rowid), so no row is skipped even if two share a seq (jobq gives each its own).
SELECT_CHUNK = "SELECT rowid, {} FROM jobs WHERE (seq, rowid) > (?, ?) ORDER BY seq, rowid LIMIT ?".format(
    ", ".join(COLUMNS)
)
SELECT_CHUNK_LOGS = (
    "SELECT job_id, at, message FROM job_logs WHERE job_id IN "
    "(SELECT id FROM jobs WHERE (seq, rowid) > (?, ?) AND (seq, rowid) <= (?, ?)) ORDER BY at, rowid"
)
IDS_PER_READ = 500  # ids per query when jobs are read by id
# Each migration is a list of statements; migration n (1-based) brings the schema to version n.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            seq INTEGER NOT NULL,
            type TEXT NOT NULL,
            queue TEXT NOT NULL,
            priority INTEGER NOT NULL,
            status TEXT NOT NULL,
            payload TEXT NOT NULL,
            result TEXT,
            error TEXT,
            attempts INTEGER NOT NULL,
            max_attempts INTEGER NOT NULL,
            timeout REAL,
            created_at REAL NOT NULL,
            run_at REAL,
            started_at REAL,
            finished_at REAL,
            lease_id TEXT,
            lease_expires_at REAL,
            progress REAL,
            progress_note TEXT,
            history TEXT NOT NULL
        )""",
        "CREATE TABLE job_logs (job_id TEXT NOT NULL, at REAL NOT NULL, message TEXT NOT NULL)",
        "CREATE INDEX job_logs_by_job ON job_logs (job_id)",
        "CREATE TABLE paused_queues (queue TEXT PRIMARY KEY)",
    ),
    ("ALTER TABLE jobs ADD COLUMN owner TEXT",),  # who enqueued each job; NULL for jobs from before tokens
    ("ALTER TABLE jobs ADD COLUMN worker TEXT",),  # who runs the current attempt (its history entry is written
    # when the attempt ends, so a lease writes a few columns)
    ("CREATE INDEX jobs_by_seq ON jobs (seq)",),  # jobs are read back in chunks by seq while jobq serves
    ("CREATE TABLE schedules (name TEXT PRIMARY KEY, definition TEXT NOT NULL, fired REAL)",),
    (  # the unique key a job holds while in its scope and before unique_until (jobq.job.Job.holds_unique_key)
        "ALTER TABLE jobs ADD COLUMN unique_key TEXT",
        "ALTER TABLE jobs ADD COLUMN unique_scope TEXT",
        "ALTER TABLE jobs ADD COLUMN unique_until REAL",
    ),
    (  # flow control (jobq.flow): a job's key and own limit, and each queue's limits as JSON
        "ALTER TABLE jobs ADD COLUMN concurrency_key TEXT",
        "ALTER TABLE jobs ADD COLUMN concurrency_limit INTEGER",
        "CREATE TABLE queue_flows (queue TEXT PRIMARY KEY, flow TEXT NOT NULL)",
    ),
    (  # workflows (jobq.workflow): a job's parents (JSON) and its policy for their failure, and its workflow;
        # parents_left is as at the add: a read back counts the parents again
        "ALTER TABLE jobs ADD COLUMN depends_on TEXT",
        "ALTER TABLE jobs ADD COLUMN on_parent_failure TEXT",
        "ALTER TABLE jobs ADD COLUMN parents_left INTEGER",
        "ALTER TABLE jobs ADD COLUMN workflow TEXT",
    ),
)


# -- rows ------------------------------------------------------------------
KIND_COLUMNS = {  # what each kind of write sets; an add sets every column
    ADD: COLUMNS,
    STATE: STATE_COLUMNS,
    COMPLETE: COMPLETE_COLUMNS,
    LEASE: STATE_COLUMNS[:9],
    HEARTBEAT: ("lease_expires_at",),
    PROGRESS: ("progress", "progress_note"),
}
UPDATES = {  # one statement per kind of change
    kind: "UPDATE jobs SET {} WHERE id = ?".format(", ".join(f"{name} = ?" for name in names))
    for kind, names in KIND_COLUMNS.items()
    if kind != ADD
}


def _null(value: None) -> None:
    """None binds as NULL (the sqlite3 module's adapter for None, registered below).

    Without one, sqlite3 binds each None only after searching for an adapter: a registry
    lookup and two failed attribute lookups, one raising and clearing an AttributeError,
    about 0.2 µs. A lease or a completion binds three Nones and an add about fifteen.
    """
    return None


sqlite3.register_adapter(type(None), _null)  # process-wide, and the same NULL for every sqlite3 user

RUNNABLE = ("pending", "processing")  # what a lease may hand out once read back (a stopped run re-runs)
CHUNK = 4096  # jobs read back per chunk while serving: a few milliseconds of the loop each


@dataclass(frozen=True, slots=True)
class Head:
    """What a store needs before it serves: counts, the newest seq, paused queues (the jobs come later)."""

    counts: list[tuple[str, str, int, int]]  # (queue, status, priority, jobs)
    last_seq: int
    paused: list[str]
    schedules: list[StoredSchedule]
    flows: dict[str, QueueFlow]

    @property
    def jobs(self) -> int:
        return sum(count for _, _, _, count in self.counts)


@dataclass(frozen=True, slots=True)
class Chunk:
    """Jobs read back (in seq order when read in chunks), with their log lines."""

    jobs: list[Job]
    logs: list[tuple[str, float, str]]


def read_head(conn: sqlite3.Connection, path: str) -> Head:
    """Count the jobs by queue, status and priority; StoreCorrupt if a status is not one jobq writes."""
    counts = conn.execute("SELECT queue, status, priority, count(*) FROM jobs GROUP BY queue, status, priority")
    head = Head(
        counts.fetchall(),
        conn.execute("SELECT max(seq) FROM jobs").fetchone()[0] or 0,
        [name for (name,) in conn.execute("SELECT queue FROM paused_queues")],
        [
            StoredSchedule(name, json.loads(definition), fired)
            for name, definition, fired in conn.execute("SELECT name, definition, fired FROM schedules ORDER BY name")
        ],
        {queue: QueueFlow.from_dict(json.loads(flow)) for queue, flow in conn.execute("SELECT * FROM queue_flows")},
    )
    for queue, status, priority, _ in head.counts:
        if status not in STATUSES or not isinstance(queue, str) or not isinstance(priority, int):
            raise StoreCorrupt(f"{path} holds a job jobq cannot read (status {status!r}, queue {queue!r})")
    return head


def read_chunk(conn: sqlite3.Connection, path: str, after: tuple[int, int]) -> tuple[Chunk, tuple[int, int]]:
    """The next CHUNK jobs after the (seq, rowid) ``after``, in that order, with their log lines; and where they end."""
    rows = conn.execute(SELECT_CHUNK, (*after, CHUNK)).fetchall()
    if not rows:
        return Chunk([], []), after
    last = (rows[-1][2], rows[-1][0])
    logs = conn.execute(SELECT_CHUNK_LOGS, (*after, *last)).fetchall()
    return Chunk(decode((row[1:] for row in rows), path), logs), last


def read_jobs(conn: sqlite3.Connection, path: str, job_ids: Sequence[str]) -> Chunk:
    """The jobs with these ids that the file holds, and their log lines."""
    rows: list[Any] = []
    logs: list[tuple[str, float, str]] = []
    for start in range(0, len(job_ids), IDS_PER_READ):
        ids = job_ids[start : start + IDS_PER_READ]
        marks = ", ".join("?" * len(ids))
        found = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM jobs WHERE id IN ({marks})", ids).fetchall()
        if found:
            rows += found
            marks = ", ".join("?" * len(found))
            query = f"SELECT job_id, at, message FROM job_logs WHERE job_id IN ({marks}) ORDER BY at, rowid"
            logs += conn.execute(query, [row[0] for row in found]).fetchall()
    return Chunk(decode(rows, path), logs)


def decode(rows: Iterable[Sequence[Any]], path: str) -> list[Job]:
    try:
        return [job_from_row(row) for row in rows]
    except (ValueError, TypeError, KeyError) as exc:
        raise StoreCorrupt(f"{path} holds a job jobq cannot read ({type(exc).__name__}: {exc})") from None


# -- schema ----------------------------------------------------------------
def stored_version(conn: sqlite3.Connection, path: str) -> int:
    """The file's schema version (0 for a new, empty file), read without writing anything.

    Refuses a SQLite file jobq did not make, and one made by a newer jobq.
    """
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "schema_version" not in tables:
        if tables:
            raise StoreCorrupt(f"{path} is a SQLite database but not a jobq store (it has tables {sorted(tables)})")
        return 0
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    if row is None or not isinstance(row[0], int):
        raise StoreCorrupt(f"{path} has no readable schema version")
    if row[0] > len(MIGRATIONS):
        raise StoreCorrupt(f"{path} has schema version {row[0]}; this jobq reads up to {len(MIGRATIONS)}")
    return int(row[0])


def migrate(conn: sqlite3.Connection, path: str, version: int) -> None:
    """Apply the migrations after ``version``, in order, in one transaction."""
    if version == len(MIGRATIONS):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        if version == 0:
            conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            conn.execute("INSERT INTO schema_version VALUES (0)")
        for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in statements:
                conn.execute(statement)
            conn.execute("UPDATE schema_version SET version = ?", (number,))
            log.info("migrating %s to schema version %d", path, number)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def storage_error(exc: BaseException, path: str) -> JobqError:
    """The jobq error for a failed SQLite call: full, corrupt, a value it cannot bind, or otherwise unavailable."""
    if isinstance(exc, JobqError):
        return exc
    if isinstance(exc, (*UNBINDABLE, sqlite3.ProgrammingError, sqlite3.InterfaceError)):
        return UnstorableValue(f"{path}: a value cannot be stored ({type(exc).__name__}: {exc})")
    code = getattr(exc, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL:
        return StoreFull(f"{path}: the disk (or the database size limit) is full")
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return StoreCorrupt(f"{path} is not a readable jobq store ({exc}); jobq will not start over it")
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        return StoreCorrupt(f"{path} is not a readable jobq store ({exc}); jobq will not start over it")
    return StoreUnavailable(f"{path}: {exc}")


UNBINDABLE = (UnicodeError, OverflowError, ValueError, TypeError)  # what binding a bad value raises


def transient(error: JobqError) -> bool:
    """Whether a failed write may land if written again later (room freed, I/O back), unlike a bad value."""
    return isinstance(error, StoreFull | StoreUnavailable)


# -- the writer thread -----------------------------------------------------
WRITE, DELETE, LOG, PAUSE, SCHEDULE, FLOW, CALL, STOP = range(8)

Op = tuple[int, Any, asyncio.Future[Any]]  # (kind, data, the future its caller may await)


def _settle(futures: list[asyncio.Future[Any]], error: JobqError | None, value: Any = None) -> None:
    """Resolve futures on the loop thread, each failed one with its own copy of ``error``.

    A failure is marked retrieved: the writer logged it once, and writes nobody
    awaits (lease records, heartbeats) must not warn about it again.
    """
    for future in futures:
        if future.done():
            continue  # its awaiting task was cancelled
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error if len(futures) == 1 else type(error)(error.detail))
            future.exception()


class Commit(asyncio.Future[Any]):
    """A write's future. It refuses cancellation: whoever awaits it and is cancelled gets the
    CancelledError once the write has landed, and the write itself is never called off."""

    def cancel(self, msg: Any = None) -> bool:
        return False


class JournalWriter:
    """One thread that owns the SQLite connection and commits queued writes in groups."""

    def __init__(
        self,
        path: str,
        synchronous: str,
        loop: asyncio.AbstractEventLoop,
        on_commit: Callable[[float], None] | None = None,
        on_failure: Callable[[list[tuple[int, Any]]], None] | None = None,
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self.on_commit = on_commit  # called on this thread with each commit's seconds
        self.on_failure = on_failure  # called on this thread with the (kind, data) of writes to write again later
        self.commits = 0  # transactions committed: far fewer than writes under load
        self.thread_id: int | None = None
        self.died: str | None = None  # why the thread ended unasked, if it did
        self._loop = loop
        self._queue: SimpleQueue[Op] = SimpleQueue()
        self._current: list[Op] = []  # the writes being applied now
        self._accepting = False
        self._thread: threading.Thread | None = None
        self._done: asyncio.Future[None] = loop.create_future()

    # -- loop side -----------------------------------------------------------
    async def start(self) -> None:
        """Start the thread; returns once the file is open and migrated (or raises why it is not)."""
        ready: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(target=self._main, args=(ready,), name="jobq-sqlite-writer", daemon=True)
        self._thread.start()
        await ready
        self._accepting = True

    def submit(self, kind: int, data: Any) -> asyncio.Future[Any]:
        """Queue a write; the future resolves when it is committed (or fails with a storage error)."""
        future: asyncio.Future[Any] = Commit(loop=self._loop)
        if self._accepting:
            self._queue.put((kind, data, future))
        else:
            reason = self.died or "it is closed"
            _settle([future], StoreUnavailable(f"the store {self.path} cannot write: {reason}"))
        return future

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the writer thread, after every write queued before it."""
        return await self.submit(CALL, fn)

    async def stop(self) -> None:
        """Commit everything queued, close the connection and end the thread."""
        if self._thread is None:
            return
        self._accepting = False
        self._queue.put((STOP, None, self._done))  # harmless if the thread already ended
        await asyncio.shield(self._done)
        self._thread.join()  # already finished: it resolved _done last

    # -- thread side ---------------------------------------------------------
    def _main(self, ready: asyncio.Future[None]) -> None:
        self.thread_id = threading.get_ident()
        try:
            try:
                conn = self._connect()
            except BaseException as exc:
                self._reply([ready], storage_error(exc, self.path))
                return
            self._reply([ready], None)
            try:
                self._serve(conn)
            except BaseException as exc:  # a bug: no write may wait forever for a thread that is gone
                self._die(exc)
            finally:
                conn.close()
        finally:
            self._reply([self._done], None)

    def _die(self, exc: BaseException) -> None:
        """The thread is ending on an unexpected error: refuse new writes and fail every queued one."""
        self._accepting = False
        self.died = f"its writer thread failed ({type(exc).__name__}: {exc})"
        log.critical("the SQLite writer of %s failed; no more writes will be stored", self.path, exc_info=exc)
        error = StoreUnavailable(f"the store {self.path} cannot write: {self.died}")
        futures = [future for _, _, future in self._current]  # answered already or not: _settle skips the done
        with contextlib.suppress(Empty):
            while True:
                futures.append(self._queue.get_nowait()[2])
        self._reply([f for f in futures if f is not self._done], error)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            version = stored_version(conn, self.path)  # before any write: a foreign file stays untouched
            if version == 0:  # a new file: large pages, so a job's row (payload included) shares its page
                conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode != "wal":
                raise StoreUnavailable(f"{self.path}: SQLite refused WAL mode (it is in {mode} mode)")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            migrate(conn, self.path, version)
        except BaseException:
            conn.close()
            raise
        return conn

    def _serve(self, conn: sqlite3.Connection) -> None:
        """Commit whatever is queued, group after group, until a STOP."""
        while True:
            self._current = self._take()
            if not self._apply(conn, self._current):
                return
            self._current = []  # nothing keeps a group's futures alive while idle

    def _take(self) -> list[Op]:
        """Block for the first queued write, then take everything queued behind it."""
        ops = [self._queue.get()]
        with contextlib.suppress(Empty):
            while True:
                ops.append(self._queue.get_nowait())
        return ops

    def _apply(self, conn: sqlite3.Connection, ops: list[Op]) -> bool:
        """Commit ``ops`` in order; calls and the STOP split them into groups. False after a STOP."""
        group: list[Op] = []
        for op in ops:
            kind, data, future = op
            if kind in (CALL, STOP):
                self._commit(conn, group)
                group = []
                if kind == STOP:
                    return False
                self._call(conn, data, future)
            else:
                group.append(op)
        self._commit(conn, group)
        return True

    def _call(
        self, conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], Any], future: asyncio.Future[Any]
    ) -> None:
        try:
            value = fn(conn)
        except BaseException as exc:
            self._rollback(conn)
            self._reply([future], storage_error(exc, self.path))
        else:
            self._reply([future], None, value)

    def _commit(self, conn: sqlite3.Connection, group: list[Op]) -> None:
        """Commit a group in one transaction; if that fails, each write alone, so only bad writes fail."""
        if not group:
            return
        started = time.perf_counter()
        error = self._transaction(conn, group)
        if error is None:
            self.commits += 1
            if self.on_commit is not None:
                self.on_commit(time.perf_counter() - started)
            self._reply([future for _, _, future in group], None)
            return
        if len(group) == 1:
            self._failed(group[0], error)
            return
        log.warning("committing %d writes together failed (%s); writing them one by one", len(group), error.detail)
        for op in group:
            alone = self._transaction(conn, [op])
            if alone is None:
                self.commits += 1
                self._reply([op[2]], None)
            else:
                self._failed(op, alone)

    def _transaction(self, conn: sqlite3.Connection, group: list[Op]) -> JobqError | None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            _write(conn, group)
            conn.execute("COMMIT")
        except Exception as exc:
            self._rollback(conn)
            return storage_error(exc, self.path)
        return None

    def _failed(self, op: Op, error: JobqError) -> None:
        """One write could not be stored: write it again later if that may help, else set it aside."""
        kind, data, future = op
        if transient(error):
            log.error("a write to %s failed: %s; it is written again until it lands", self.path, error.detail)
            if self.on_failure is not None:  # before the reply: the store learns of it first
                try:
                    self.on_failure([(kind, data)])
                except Exception:  # a broken hook must never stop the writer from answering
                    log.exception("the on_failure hook failed")
        else:
            log.error("a write to %s was set aside, not stored: %s (jobs: %s)", self.path, error.detail, _job_ids(op))
        self._reply([future], error)

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:  # SQLite may have rolled back already (it does on SQLITE_FULL)
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    def _reply(self, futures: list[asyncio.Future[Any]], error: JobqError | None, value: Any = None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            self._loop.call_soon_threadsafe(_settle, futures, error, value)


def _job_ids(op: Op) -> str:
    kind, data, _ = op
    if kind == WRITE:
        ids = [job_id for job_id, _, _ in data]
    elif kind == DELETE:
        ids = list(data)
    elif kind == LOG:
        ids = [data[0]]
    else:
        return "none"
    return ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")


Change = tuple[str, str, tuple[Any, ...]]
"""One job's write: its id, the kind of change (add, state, lease, ...), and the values of KIND_COLUMNS[kind]."""

Pending = list[Any]
"""A job's writes within a group: [added in the group, kind, values] while it changed once; after a second
change, [added, None, {column: value}] with the changes merged in order."""


def _write(conn: sqlite3.Connection, group: Iterable[Op]) -> None:
    """Apply a group of writes in queue order; each job's changes are merged and written once."""
    jobs: dict[str, Pending] = {}
    lines: list[tuple[str, float, str]] = []
    paused: dict[str, bool] = {}
    schedules: dict[str, tuple[str, str | None, float | None]] = {}
    flows: dict[str, str | None] = {}  # queue -> its flow as JSON (None: removed), as it last was in the group
    for kind, data, _ in group:
        if kind == WRITE:
            for job_id, change, values in data:
                pending = jobs.get(job_id)
                if pending is None or change == ADD:
                    jobs[job_id] = [change == ADD, change, values]
                    continue
                if pending[1] is not None:  # a second change of the job in this group: merge by column
                    pending[2] = dict(zip(KIND_COLUMNS[pending[1]], pending[2], strict=True))
                    pending[1] = None
                pending[2].update(zip(KIND_COLUMNS[change], values, strict=True))
        elif kind == LOG:
            lines.append(data)
        elif kind == PAUSE:
            paused[data[0]] = data[1]
        elif kind == SCHEDULE:
            schedules[data[0]] = data
        elif kind == FLOW:
            flows[data[0]] = data[1]
        elif kind == DELETE:  # a deleted id may be added again later in the group: keep the order
            _flush(conn, jobs, lines, paused)
            ids = [(job_id,) for job_id in data]
            conn.executemany("DELETE FROM jobs WHERE id = ?", ids)
            conn.executemany("DELETE FROM job_logs WHERE job_id = ?", ids)
    _flush(conn, jobs, lines, paused)
    if schedules:  # each as it last was in the group
        kept = [row for row in schedules.values() if row[1] is not None]
        conn.executemany("INSERT OR REPLACE INTO schedules (name, definition, fired) VALUES (?, ?, ?)", kept)
        gone = [(name,) for name, definition, _ in schedules.values() if definition is None]
        conn.executemany("DELETE FROM schedules WHERE name = ?", gone)
    if flows:
        kept_flows = [(queue, flow) for queue, flow in flows.items() if flow is not None]
        conn.executemany("INSERT OR REPLACE INTO queue_flows (queue, flow) VALUES (?, ?)", kept_flows)
        conn.executemany("DELETE FROM queue_flows WHERE queue = ?", [(q,) for q, f in flows.items() if f is None])


def _flush(
    conn: sqlite3.Connection,
    jobs: dict[str, Pending],
    lines: list[tuple[str, float, str]],
    paused: dict[str, bool],
) -> None:
    if jobs:
        inserts = []
        updates: dict[str | tuple[str, ...], list[tuple[Any, ...]]] = {}  # a kind, or the columns merged -> rows
        for job_id, (added, kind, values) in jobs.items():
            if added:
                inserts.append(values if kind is not None else tuple(values[c] for c in COLUMNS))
            elif kind is not None:
                updates.setdefault(kind, []).append((*values, job_id))
            else:
                updates.setdefault(tuple(values), []).append((*values.values(), job_id))
        if inserts:
            conn.executemany(INSERT_JOB, inserts)
        for key, rows in updates.items():
            if isinstance(key, str):
                statement = UPDATES[key]
            else:  # column names only, never data
                statement = "UPDATE jobs SET {} WHERE id = ?".format(", ".join(f"{name} = ?" for name in key))
            conn.executemany(statement, rows)
        jobs.clear()
    if lines:
        conn.executemany("INSERT INTO job_logs (job_id, at, message) VALUES (?, ?, ?)", lines)
        lines.clear()
    if paused:
        conn.executemany("INSERT OR IGNORE INTO paused_queues VALUES (?)", [(q,) for q, p in paused.items() if p])
        conn.executemany("DELETE FROM paused_queues WHERE queue = ?", [(q,) for q, p in paused.items() if not p])
        paused.clear()


# -- the lock --------------------------------------------------------------
class FileLock:
    """An exclusive ``flock`` on ``<path>.lock``: one jobq process per store file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock_path = path + ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise StoreUnavailable naming the file (and the holder's pid)."""
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            directory = os.path.dirname(os.path.abspath(self.path))
            raise StoreUnavailable(f"cannot open the store {self.path}: directory {directory} does not exist") from None
        except OSError as exc:
            raise StoreUnavailable(f"cannot open the store {self.path}: {exc.strerror} ({self.lock_path})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreUnavailable(
                f"the store {self.path} is in use by another jobq process (pid {holder}, holding {self.lock_path})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


# -- the store -------------------------------------------------------------
RESAVE_SECONDS = 1.0  # how often changes that failed to commit are written again
GC_QUIET_FROM = 50_000  # jobs on file from which reading them back pauses the garbage collector (see _load)


class SQLiteStore(MemoryStore):
    """Jobs in memory for speed, journaled to a SQLite file for durability."""

    def __init__(self, path: str, options: StoreOptions | None = None, durability: str = "full") -> None:
        if durability not in SYNCHRONOUS:
            raise ValueError(f"durability must be one of {sorted(SYNCHRONOUS)}, not {durability!r}")
        if not path:
            raise ValueError("the SQLite store needs a file path, e.g. sqlite:///jobq.db")
        super().__init__(options)
        self.path = path
        self.durability = durability
        self._lock = FileLock(path)
        self._writer: JournalWriter | None = None
        self.on_commit: Callable[[float], None] | None = None
        """Called with the seconds each group commit took (write + COMMIT), on the writer thread."""
        # What failed to commit (disk full, I/O error), written again every RESAVE_SECONDS until it lands:
        self._unsaved_jobs: set[str] = set()  # ids whose current state is to be written
        self._unsaved_ops: list[tuple[int, Any]] = []  # deletes and log lines
        self._unsaved_paused: set[str] = set()  # queues whose paused state is to be written
        self._unsaved_schedules: set[str] = set()  # schedules to be written as they now are
        self._unsaved_flows: set[str] = set()  # queues whose flow is to be written as it now is
        self._resave: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loader: asyncio.Task[None] | None = None

    @property
    def commits(self) -> int:
        """Transactions committed since open (each one fsync under durability "full")."""
        return self._writer.commits if self._writer is not None else 0

    @property
    def writer_thread_id(self) -> int | None:
        """The ident of the thread that runs every SQLite call."""
        return self._writer.thread_id if self._writer is not None else None

    @property
    def unavailable(self) -> str | None:
        writer = self._writer
        if writer is not None and writer.died is not None:
            return f"the store {self.path} cannot write: {writer.died}"
        if self._loading is not None and self._loading.failed is not None:
            return f"the store {self.path} cannot serve: reading its jobs back failed ({self._loading.failed})"
        return None

    # -- lifecycle -----------------------------------------------------------
    async def open(self) -> None:
        """Lock the file, migrate it and count its jobs; the jobs are then read back while the store serves.

        Until the last one is in, :class:`~jobq.store.loading.Loading` keeps every answer right
        (a job not read yet is read on demand), and a run a stop cut short is re-queued as a
        lost run when its job is read back.
        """
        if self._writer is not None:
            raise RuntimeError(f"the store {self.path} was opened before: a SQLiteStore opens once")
        started = time.monotonic()
        self._lock.acquire()
        self._loop = asyncio.get_running_loop()
        self._writer = JournalWriter(
            self.path, SYNCHRONOUS[self.durability], self._loop, self._committed, self._commit_failed
        )
        try:
            await self._writer.start()
            head = await self._writer.call(functools.partial(read_head, path=self.path))
        except BaseException:
            await self._shutdown()
            raise
        self._begin_loading(head)
        if head.jobs:  # a new or empty file has nothing to read back
            self._loader = asyncio.create_task(self._load(head, started), name="jobq-store-loader")
        else:
            self._loaded_all()
        waiting = sum(count for _, status, _, count in head.counts if STATUSES[status] in WAITING)
        log.info(
            "opened %s in %.2fs: %d jobs (%d waiting), %d paused queues, durability %s; reading the jobs back",
            self.path,
            time.monotonic() - started,
            head.jobs,
            waiting,
            len(head.paused),
            self.durability,
        )

    async def close(self) -> None:
        """Commit every queued write, stop the writer thread, close the file and release the lock."""
        if self._loader is not None:
            self._loader.cancel()
            await asyncio.gather(self._loader, return_exceptions=True)
        await self._shutdown()

    async def _shutdown(self) -> None:
        if self._resave is not None:  # one last try for changes that failed to commit
            self._resave.cancel()
            self._write_unsaved()
        writer, self._writer = self._writer, None  # no more retries once closing
        if writer is not None:
            await writer.stop()  # the writer's failure reports arrive before it answers the stop
        unsaved = (
            self._unsaved_jobs,
            self._unsaved_ops,
            self._unsaved_paused,
            self._unsaved_schedules,
            self._unsaved_flows,
        )
        lost = sum(len(changes) for changes in unsaved)
        if lost:
            log.error(
                "%d changes could not be written to %s before it closed; on the next start the file has "
                "the jobs as it last had them (a finished job may run again)",
                lost,
                self.path,
            )
        self._lock.release()

    # -- reading the jobs back -------------------------------------------------
    def _begin_loading(self, head: Head) -> None:
        """Take the counts as the file has them, and start loading: nothing is indexed yet."""
        unread: dict[str, dict[int, int]] = {}
        for queue, status, priority, count in head.counts:
            before = STATUSES[status]
            counts = self._counts.get(queue) or self._counts.setdefault(queue, dict.fromkeys(JobStatus, 0))
            counts[before] += count
            self._waiting += count if before in WAITING else 0
            self._terminal += count if before in TERMINAL else 0
            if status in RUNNABLE:
                by_priority = unread.setdefault(sys.intern(queue), {})
                by_priority[priority] = by_priority.get(priority, 0) + count
        self._seq = itertools.count(head.last_seq + 1)
        self._paused.update(head.paused)
        self._schedules.update((schedule.name, schedule) for schedule in head.schedules)
        self._flows.update(head.flows)
        self._loading = Loading(unread, head.last_seq)

    async def _load(self, head: Head, started: float) -> None:
        """Read every job back in chunks by seq, between requests (the loader task)."""
        loading, writer = self._loading, self._writer
        assert loading is not None and writer is not None
        # A big load builds objects that live as long as the process: no collection scans them
        # while they come in, and then they are frozen, as jobq freezes what its start built.
        quiet = head.jobs >= GC_QUIET_FROM and gc.isenabled()
        if quiet:
            gc.disable()
        try:
            after = (0, 0)  # (seq, rowid) of the last row read
            while True:
                chunk, after = await writer.call(functools.partial(read_chunk, path=self.path, after=after))
                if not chunk.jobs:
                    break
                self._read_back(chunk.jobs, chunk.logs, after[0])
                loading.advanced()
                await asyncio.sleep(0)  # requests between chunks
            self._loaded_all()
        except asyncio.CancelledError:
            loading.fail(f"the store {self.path} closed while reading its jobs back")
            raise
        except Exception as exc:
            error = storage_error(exc, self.path)
            log.critical("reading the jobs of %s back failed: %s; jobq cannot serve from it", self.path, error)
            loading.fail(error.detail)
            return
        finally:
            if quiet:
                gc.enable()
                gc.freeze()
        self._log_loaded(loading, time.monotonic() - started)

    def _log_loaded(self, loading: Loading, seconds: float) -> None:
        log.info("read %d jobs back from %s in %.2fs since open", loading.read, self.path, seconds)
        again, self._requeued = self._requeued, 0
        if again:
            log.warning(
                "recovered %d jobs left processing by a stopped jobq; they are pending again and will re-run", again
            )

    async def _fetch(self, job_ids: Sequence[str]) -> None:
        """Read these jobs back now (by id), ahead of their chunk."""
        writer = self._writer
        if writer is None or self._loading is None:
            return
        self._loading.check()
        chunk = await writer.call(functools.partial(read_jobs, path=self.path, job_ids=list(job_ids)))
        self._read_back(chunk.jobs, chunk.logs, None)

    def _committed(self, seconds: float) -> None:
        hook = self.on_commit  # read each time: it may be set after open
        if hook is not None:
            try:
                hook(seconds)
            except Exception:  # a broken observer must never stop the writer from answering
                log.exception("the on_commit hook failed")

    # -- operator and test hooks --------------------------------------------
    async def with_connection(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the writer thread once every earlier write is committed."""
        if self._writer is None:
            raise StoreUnavailable(f"the store {self.path} is not open")
        return await self._writer.call(fn)

    async def set_max_pages(self, pages: int) -> int:
        """Cap the file at ``pages`` pages (writes past it fail with StoreFull); returns the cap in force.

        SQLite never sets the cap below the file's current size. The cap lasts until close.
        """
        return await self.with_connection(
            lambda conn: conn.execute(f"PRAGMA max_page_count = {int(pages)}").fetchone()[0]
        )

    # -- journal hooks (loop thread: build rows, queue them, return at once) -
    def _submit(self, kind: int, data: Any) -> asyncio.Future[None]:
        if self._writer is None:
            future: asyncio.Future[None] = Commit()
            _settle([future], StoreUnavailable(f"the store {self.path} is not open"))
            return future
        return self._writer.submit(kind, data)

    def _persist(self, kind: str, jobs: Sequence[Job]) -> asyncio.Future[None]:
        if kind != SETTLE:
            return self._submit(WRITE, [(job.id, kind, job_values(job, kind)) for job in jobs])
        changes: list[Change] = []
        for job in jobs:  # a completion writes what it changed; any other end (and a cascade), the whole state
            written = COMPLETE if job.status is COMPLETED else STATE
            changes.append((job.id, written, job_values(job, written)))
        return self._submit(WRITE, changes)

    def _commit_failed(self, ops: list[tuple[int, Any]]) -> None:
        """Writer thread: a group failed to commit; have the loop write it again later."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing more can be done
                self._loop.call_soon_threadsafe(self._remember_unsaved, ops)

    def _remember_unsaved(self, ops: list[tuple[int, Any]]) -> None:
        """Note what failed so the file catches up with memory: a job answered "completed" while the
        disk was full must not be running again after a restart."""
        for kind, data in ops:
            if kind == WRITE:
                self._unsaved_jobs.update(job_id for job_id, _, _ in data)
            elif kind == PAUSE:
                self._unsaved_paused.add(data[0])
            elif kind == SCHEDULE:
                self._unsaved_schedules.add(data[0])
            elif kind == FLOW:
                self._unsaved_flows.add(data[0])
            else:
                self._unsaved_ops.append((kind, data))
        if self._resave is None and self._writer is not None:
            self._resave = asyncio.get_running_loop().call_later(RESAVE_SECONDS, self._write_unsaved)

    def _write_unsaved(self) -> None:
        """Write again what failed: jobs as they are now, deletes and log lines, paused states as they are now."""
        self._resave = None
        jobs = [job for job_id in self._unsaved_jobs if (job := self._jobs.get(job_id)) is not None]
        ops, paused = self._unsaved_ops, self._unsaved_paused  # (a failed add was forgotten: not in _jobs)
        schedules, self._unsaved_schedules = self._unsaved_schedules, set()
        flows, self._unsaved_flows = self._unsaved_flows, set()
        self._unsaved_jobs, self._unsaved_ops, self._unsaved_paused = set(), [], set()
        if jobs:
            self._journal(jobs)  # the whole state: what failed may have been any kind of change
        for kind, data in ops:
            if kind == DELETE:
                data = [job_id for job_id in data if job_id not in self._jobs]  # not if added again since
            elif data[0] not in self._jobs:  # a log line of a job deleted since
                continue
            self._submit(kind, data)
        for queue in paused:
            self._submit(PAUSE, (queue, queue in self._paused))
        for name in schedules:
            self._persist_schedule(name)
        for queue in flows:
            self._persist_flow(queue)

    def _persist_delete(self, job_ids: Sequence[str]) -> asyncio.Future[None] | None:
        return self._submit(DELETE, list(job_ids)) if job_ids else None

    def _persist_log(self, job_id: str, at: float, message: str) -> asyncio.Future[None]:
        return self._submit(LOG, (job_id, at, message))

    def _persist_paused(self, queue: str, paused: bool) -> asyncio.Future[None]:
        return self._submit(PAUSE, (queue, paused))

    def _persist_flow(self, queue: str) -> asyncio.Future[None]:
        flow = self._flows.get(queue)
        return self._submit(FLOW, (queue, None if flow is None else json.dumps(flow.to_dict())))

    def _persist_schedule(self, name: str) -> asyncio.Future[None]:
        known = self._schedules.get(name)
        if known is None:
            return self._submit(SCHEDULE, (name, None, None))
        return self._submit(SCHEDULE, (name, json.dumps(known.definition), known.fired))
