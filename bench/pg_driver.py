"""asyncpg against psycopg 3 (async) on the statements jobq's PostgreSQL store would run: which driver to build on.

    .venv/bin/python bench/pg_driver.py                  # 3 rounds, about a minute and a half on 2 cores
    .venv/bin/python bench/pg_driver.py --quick          # a smoke run: one round, a tenth of the jobs
    .venv/bin/python bench/pg_driver.py --dsn postgresql://postgres@127.0.0.1:5432/jobq_driver_bench --keep

Five phases, run one after the other on a freshly made ``jobs`` table, by each driver in
turn (asyncpg, psycopg, asyncpg, psycopg, ...) for ``--rounds`` rounds:

1. **batch insert**: ``INSERT ... SELECT * FROM unnest($1::text[], ...) ON CONFLICT (id) DO
   NOTHING RETURNING id, seq`` with 64 jobs a statement, 20,000 jobs from 8 tasks;
2. **single insert**: the same statement with one job, 5,000 jobs from 16 tasks;
3. **claim**: ``WITH picked AS (SELECT ... FOR UPDATE SKIP LOCKED) UPDATE ... RETURNING j.*``,
   32 jobs a call, 4 tasks, until 20,000 pending jobs are claimed;
4. **settle**: ``UPDATE ... FROM unnest($1::text[], $2::json[]) ... RETURNING j.id``, 32 jobs a
   call, 4 tasks, the 20,000 claimed jobs;
5. **point read**: ``SELECT * FROM jobs WHERE id = $1``, 10,000 reads from 16 tasks.

Every statement runs on its own (autocommit: its own transaction) on a connection taken
from a pool of 8 per driver: asyncpg's own pool (with a no-op ``reset``, as psycopg_pool
does by default, unless ``--asyncpg-default-reset``), and for psycopg
``psycopg_pool.AsyncConnectionPool`` when it is installed, otherwise 8 plain
``psycopg.AsyncConnection`` handed out through an ``asyncio.Queue``. Both drivers use
prepared statements (asyncpg always does; psycopg is given ``prepare_threshold=0`` and
``prepare=True``) and the binary protocol (asyncpg always; psycopg ``%b`` and
``binary=True`` unless ``--psycopg-text``). JSON columns come back as str from both (jobq
decodes them itself), so neither pays for ``json.loads``. The table has autovacuum off and
is ANALYZEd between phases, outside the clock, so both drivers meet the same plans and no
vacuum lands in one driver's run only. The rows to write are built before the clock starts;
each phase is timed by wall clock and by this process's CPU (``time.process_time``), which
on 2 cores is what jobq would compete with PostgreSQL for. Table per round: statements/s,
jobs (rows)/s and client CPU seconds per 1,000 jobs, and asyncpg's figure over psycopg's
from the same round; then the medians. The final row counts by status must be the same
for every run (checked: the script fails otherwise).

The database (``jobq_driver_bench`` by default) is created through the ``postgres``
database when it is missing, its table is dropped and made again before every run, and
the database is dropped at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import platform
import re
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psycopg
from psycopg.types.string import TextBinaryLoader, TextLoader

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/jobq_driver_bench"
PROTECTED_DATABASES = {"postgres", "template0", "template1"}
POOL_SIZE = 8
QUEUE = "default"
RESULT = '{"ok":true}'

SCHEMA = [
    "DROP TABLE IF EXISTS jobs",
    """CREATE TABLE jobs (id text PRIMARY KEY, seq bigint GENERATED ALWAYS AS IDENTITY, type text NOT NULL,
    queue text NOT NULL, priority int NOT NULL, status text NOT NULL, payload json NOT NULL, result json,
    attempts int NOT NULL, max_attempts int NOT NULL, created_at float8 NOT NULL, finished_at float8,
    lease_id text, lease_expires_at float8)""",
    "CREATE INDEX ON jobs (queue, priority DESC, seq) WHERE status = 'pending'",
    # Autovacuum would wake up during one driver's run and not the other's; ANALYZE runs between phases instead.
    "ALTER TABLE jobs SET (autovacuum_enabled = off)",
]
INSERT = (
    "INSERT INTO jobs (id, type, queue, priority, status, payload, attempts, max_attempts, created_at) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::json[], $7::int[], "
    "$8::int[], $9::float8[]) ON CONFLICT (id) DO NOTHING RETURNING id, seq"
)
CLAIM = (
    "WITH picked AS (SELECT id FROM jobs WHERE status = 'pending' AND queue = $1 ORDER BY priority DESC, seq "
    "LIMIT $2 FOR UPDATE SKIP LOCKED) UPDATE jobs j SET status = 'processing', attempts = j.attempts + 1, "
    "lease_id = md5(random()::text), lease_expires_at = extract(epoch from clock_timestamp()) + 30 "
    "FROM picked WHERE j.id = picked.id RETURNING j.*"
)
SETTLE = (
    "UPDATE jobs j SET status = 'completed', result = u.result, finished_at = extract(epoch from clock_timestamp()) "
    "FROM unnest($1::text[], $2::json[]) AS u(id, result) WHERE j.id = u.id RETURNING j.id"
)
READ = "SELECT * FROM jobs WHERE id = $1"

Columns = tuple[list[str], list[str], list[str], list[int], list[str], list[str], list[int], list[int], list[float]]


@dataclass(frozen=True)
class Scale:
    """How many jobs each phase handles, and with how many concurrent tasks."""

    batch_jobs: int = 20_000
    batch_size: int = 64
    batch_tasks: int = 8
    single_jobs: int = 5_000
    single_tasks: int = 16
    claim_jobs: int = 20_000
    claim_size: int = 32
    claim_tasks: int = 4
    settle_jobs: int = 20_000
    settle_size: int = 32
    settle_tasks: int = 4
    reads: int = 10_000
    read_tasks: int = 16


QUICK = Scale(batch_jobs=2_000, single_jobs=500, claim_jobs=2_000, settle_jobs=2_000, reads=1_000)
PHASES = ["batch insert", "single insert", "claim", "settle", "point read"]


def phase_labels(scale: Scale) -> dict[str, str]:
    """Each phase's name as the tables show it: what one statement does and how many tasks run them."""
    return {
        "batch insert": f"batch insert x{scale.batch_size}, {scale.batch_tasks} tasks",
        "single insert": f"single insert, {scale.single_tasks} tasks",
        "claim": f"claim x{scale.claim_size}, {scale.claim_tasks} tasks",
        "settle": f"settle x{scale.settle_size}, {scale.settle_tasks} tasks",
        "point read": f"point read, {scale.read_tasks} tasks",
    }


# -- the drivers ----------------------------------------------------------------------------


class Driver:
    """One driver's pool and the four statements; subclasses fill in the driver calls."""

    name = ""

    async def open(self, dsn: str, size: int) -> None:
        """Open the pool with ``size`` connections, all connected before this returns."""
        raise NotImplementedError

    async def close(self) -> None:
        """Close the pool and every connection in it."""
        raise NotImplementedError

    async def insert(self, columns: Columns) -> int:
        """Insert the jobs in ``columns`` (one list per column); the number of rows the statement returned."""
        raise NotImplementedError

    async def claim(self, queue: str, limit: int) -> list[str]:
        """Claim up to ``limit`` pending jobs of ``queue``: their ids."""
        raise NotImplementedError

    async def settle(self, ids: list[str], results: list[str]) -> int:
        """Complete the jobs ``ids`` with the JSON ``results``: the number of rows updated."""
        raise NotImplementedError

    async def read(self, job_id: str) -> bool:
        """Read one job by id: whether it was there."""
        raise NotImplementedError


async def no_reset(connection: asyncpg.Connection) -> None:
    """asyncpg pool ``reset`` that sends nothing (asyncpg still rolls back a transaction left open)."""


class AsyncpgDriver(Driver):
    """asyncpg with its own pool; every statement is prepared and cached per connection by asyncpg itself."""

    name = "asyncpg"

    def __init__(self, default_reset: bool = False) -> None:
        self.default_reset = default_reset
        self.pool: asyncpg.Pool | None = None

    async def open(self, dsn: str, size: int) -> None:
        reset = None if self.default_reset else no_reset
        self.pool = await asyncpg.create_pool(dsn, min_size=size, max_size=size, reset=reset)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def insert(self, columns: Columns) -> int:
        assert self.pool is not None
        async with self.pool.acquire() as connection:
            return len(await connection.fetch(INSERT, *columns))

    async def claim(self, queue: str, limit: int) -> list[str]:
        assert self.pool is not None
        async with self.pool.acquire() as connection:
            return [row[0] for row in await connection.fetch(CLAIM, queue, limit)]

    async def settle(self, ids: list[str], results: list[str]) -> int:
        assert self.pool is not None
        async with self.pool.acquire() as connection:
            return len(await connection.fetch(SETTLE, ids, results))

    async def read(self, job_id: str) -> bool:
        assert self.pool is not None
        async with self.pool.acquire() as connection:
            return await connection.fetchrow(READ, job_id) is not None


class PlainPool:
    """Stands in for psycopg_pool when it is not installed: ``size`` open connections handed out in turn."""

    def __init__(self, connections: Sequence[psycopg.AsyncConnection[Any]]) -> None:
        self.connections = list(connections)
        self.idle: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()
        for connection in self.connections:
            self.idle.put_nowait(connection)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """One idle connection for the duration of the block."""
        connection = await self.idle.get()
        try:
            yield connection
        finally:
            self.idle.put_nowait(connection)

    async def close(self) -> None:
        """Close every connection."""
        for connection in self.connections:
            await connection.close()


def psycopg_sql(query: str, placeholder: str) -> str:
    """A ``$n`` statement in psycopg's placeholders (``%s``, or ``%b`` for binary parameters)."""
    return re.sub(r"\$\d+", placeholder, query)


def has_psycopg_pool() -> bool:
    """Whether psycopg_pool can be imported."""
    return importlib.util.find_spec("psycopg_pool") is not None


class PsycopgDriver(Driver):
    """psycopg 3 ``AsyncConnection``: autocommit, prepared on first use, binary unless told, JSON as str."""

    name = "psycopg"

    def __init__(self, binary: bool = True) -> None:
        self.binary = binary
        placeholder = "%b" if binary else "%s"
        self.insert_sql = psycopg_sql(INSERT, placeholder)
        self.claim_sql = psycopg_sql(CLAIM, placeholder)
        self.settle_sql = psycopg_sql(SETTLE, placeholder)
        self.read_sql = psycopg_sql(READ, placeholder)
        self.pool: Any = None  # psycopg_pool.AsyncConnectionPool or PlainPool

    @staticmethod
    async def configure(connection: psycopg.AsyncConnection[Any]) -> None:
        """Return json columns as str, as asyncpg does, instead of running json.loads on them."""
        connection.adapters.register_loader("json", TextLoader)
        connection.adapters.register_loader("json", TextBinaryLoader)

    async def open(self, dsn: str, size: int) -> None:
        options = {"autocommit": True, "prepare_threshold": 0}
        if has_psycopg_pool():
            from psycopg_pool import AsyncConnectionPool

            self.pool = AsyncConnectionPool(
                dsn, min_size=size, max_size=size, kwargs=options, configure=self.configure, open=False
            )
            await self.pool.open(wait=True)
            return
        connections = [await psycopg.AsyncConnection.connect(dsn, **options) for _ in range(size)]
        for connection in connections:
            await self.configure(connection)
        self.pool = PlainPool(connections)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def fetch(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run one prepared statement on a pooled connection: every row it returned."""
        async with self.pool.connection() as connection:
            cursor = await connection.execute(query, params, prepare=True, binary=self.binary)
            return await cursor.fetchall()

    async def insert(self, columns: Columns) -> int:
        return len(await self.fetch(self.insert_sql, columns))

    async def claim(self, queue: str, limit: int) -> list[str]:
        return [row[0] for row in await self.fetch(self.claim_sql, (queue, limit))]

    async def settle(self, ids: list[str], results: list[str]) -> int:
        return len(await self.fetch(self.settle_sql, (ids, results)))

    async def read(self, job_id: str) -> bool:
        return bool(await self.fetch(self.read_sql, (job_id,)))


# -- the data ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Work:
    """Everything the inserts write and the reads look up, built once before any clock starts."""

    batches: list[Columns]
    singles: list[Columns]
    read_ids: list[str]

    @property
    def total(self) -> int:
        """Jobs inserted in a run."""
        return sum(len(batch[0]) for batch in self.batches) + len(self.singles)


def columns(first: int, count: int) -> Columns:
    """``count`` new pending jobs numbered from ``first``, one list per inserted column."""
    numbers = range(first, first + count)
    now = time.time()
    return (
        [str(uuid.uuid4()) for _ in numbers],
        ["noop"] * count,
        [QUEUE] * count,
        [n % 3 for n in numbers],
        ["pending"] * count,
        [f'{{"n": {n}}}' for n in numbers],
        [0] * count,
        [3] * count,
        [now + n * 1e-6 for n in numbers],
    )


def make_work(scale: Scale) -> Work:
    """The batches, the single jobs and the ids to read (spread over every inserted job)."""
    size = scale.batch_size
    batches = [columns(start, min(size, scale.batch_jobs - start)) for start in range(0, scale.batch_jobs, size)]
    singles = [columns(scale.batch_jobs + n, 1) for n in range(scale.single_jobs)]
    ids = [job_id for batch in batches for job_id in batch[0]] + [single[0][0] for single in singles]
    read_ids = [ids[(n * 7919) % len(ids)] for n in range(scale.reads)]
    return Work(batches, singles, read_ids)


# -- measuring -------------------------------------------------------------------------------


@dataclass
class Phase:
    """One phase of one run: statements, jobs (rows), wall seconds and this process's CPU seconds."""

    ops: int
    jobs: int
    wall: float
    cpu: float

    @property
    def ops_rate(self) -> float:
        """Statements per second."""
        return self.ops / self.wall

    @property
    def jobs_rate(self) -> float:
        """Jobs (rows returned) per second."""
        return self.jobs / self.wall

    @property
    def cpu_per_1k(self) -> float:
        """Client CPU seconds per 1,000 jobs."""
        return self.cpu / self.jobs * 1000


@dataclass
class Run:
    """One driver's five phases in one round, and the table's row counts by status afterwards."""

    driver: str
    round: int
    phases: dict[str, Phase] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


async def in_tasks(tasks: int, worker: Callable[[], Awaitable[None]]) -> None:
    """Run ``tasks`` copies of ``worker`` concurrently until all of them return."""
    async with asyncio.TaskGroup() as group:
        for _ in range(tasks):
            group.create_task(worker())


async def timed(body: Callable[[], Awaitable[tuple[int, int]]]) -> Phase:
    """Run ``body`` (which returns statements and jobs) under the wall clock and the process CPU clock."""
    cpu, wall = time.process_time(), time.perf_counter()
    ops, jobs = await body()
    return Phase(ops, jobs, time.perf_counter() - wall, time.process_time() - cpu)


async def insert_phase(driver: Driver, batches: Sequence[Columns], tasks: int) -> Phase:
    """Insert every batch, ``tasks`` statements at a time."""
    pending = iter(batches)
    stored = 0

    async def worker() -> None:
        nonlocal stored
        for batch in pending:  # one iterator shared by every task: each batch goes to one of them
            count = await driver.insert(batch)
            stored += count

    async def body() -> tuple[int, int]:
        await in_tasks(tasks, worker)
        return len(batches), stored

    return await timed(body)


async def claim_phase(driver: Driver, target: int, size: int, tasks: int, claimed: list[str]) -> Phase:
    """Claim ``target`` jobs, up to ``size`` a statement, from ``tasks`` tasks; their ids go to ``claimed``."""
    left = target
    calls = 0

    async def worker() -> None:
        nonlocal left, calls
        while left > 0:
            want = min(size, left)
            left -= want
            got = await driver.claim(QUEUE, want)
            calls += 1
            claimed.extend(got)
            if len(got) < want:  # nothing left to claim: stop here and let the count check report it
                return

    async def body() -> tuple[int, int]:
        await in_tasks(tasks, worker)
        return calls, len(claimed)

    return await timed(body)


async def settle_phase(driver: Driver, ids: Sequence[str], size: int, tasks: int) -> Phase:
    """Complete the jobs ``ids``, ``size`` a statement, from ``tasks`` tasks."""
    chunks = [list(ids[start : start + size]) for start in range(0, len(ids), size)]
    chunks_with_results = [(chunk, [RESULT] * len(chunk)) for chunk in chunks]
    pending = iter(chunks_with_results)
    settled = 0

    async def worker() -> None:
        nonlocal settled
        for chunk, results in pending:
            count = await driver.settle(chunk, results)
            settled += count

    async def body() -> tuple[int, int]:
        await in_tasks(tasks, worker)
        return len(chunks), settled

    return await timed(body)


async def read_phase(driver: Driver, ids: Sequence[str], tasks: int) -> Phase:
    """Read every job in ``ids`` by primary key from ``tasks`` tasks; jobs are the reads that found a row."""
    pending = iter(ids)
    found = 0

    async def worker() -> None:
        nonlocal found
        for job_id in pending:
            hit = await driver.read(job_id)
            found += hit

    async def body() -> tuple[int, int]:
        await in_tasks(tasks, worker)
        return len(ids), found

    return await timed(body)


async def admin(dsn: str, *statements: str) -> list[asyncpg.Record]:
    """Run ``statements`` on a connection of their own (outside any measurement): the last one's rows."""
    connection = await asyncpg.connect(dsn)
    try:
        rows: list[asyncpg.Record] = []
        for statement in statements:
            rows = await connection.fetch(statement)
        return rows
    finally:
        await connection.close()


async def one_run(driver: Driver, dsn: str, scale: Scale, work: Work, number: int) -> Run:
    """A fresh table, then the five phases with ``driver``; ANALYZE between phases, untimed."""
    await admin(dsn, *SCHEMA, "CHECKPOINT")
    run = Run(driver.name, number)
    await driver.open(dsn, POOL_SIZE)
    try:
        run.phases["batch insert"] = await insert_phase(driver, work.batches, scale.batch_tasks)
        run.phases["single insert"] = await insert_phase(driver, work.singles, scale.single_tasks)
        await admin(dsn, "ANALYZE jobs")
        claimed: list[str] = []
        run.phases["claim"] = await claim_phase(driver, scale.claim_jobs, scale.claim_size, scale.claim_tasks, claimed)
        await admin(dsn, "ANALYZE jobs")
        settled = claimed[: scale.settle_jobs]
        run.phases["settle"] = await settle_phase(driver, settled, scale.settle_size, scale.settle_tasks)
        await admin(dsn, "ANALYZE jobs")
        run.phases["point read"] = await read_phase(driver, work.read_ids, scale.read_tasks)
    finally:
        await driver.close()
    rows = await admin(dsn, "SELECT status, count(*) AS n FROM jobs GROUP BY status ORDER BY status")
    run.counts = {row["status"]: row["n"] for row in rows}
    return run


def expected_jobs(scale: Scale) -> dict[str, int]:
    """What each phase must have returned, in jobs (rows)."""
    return {
        "batch insert": scale.batch_jobs,
        "single insert": scale.single_jobs,
        "claim": scale.claim_jobs,
        "settle": scale.settle_jobs,
        "point read": scale.reads,
    }


def expected_counts(scale: Scale, work: Work) -> dict[str, int]:
    """The table's rows by status after a run."""
    counts = {
        "completed": scale.settle_jobs,
        "pending": work.total - scale.claim_jobs,
        "processing": scale.claim_jobs - scale.settle_jobs,
    }
    return {status: n for status, n in counts.items() if n}


def check(runs: Sequence[Run], scale: Scale, work: Work) -> None:
    """Every run returned every row it should have, and left the same rows behind as every other run."""
    want_jobs, want_counts = expected_jobs(scale), expected_counts(scale, work)
    for run in runs:
        got = {name: phase.jobs for name, phase in run.phases.items()}
        if got != want_jobs:
            raise AssertionError(f"{run.driver} round {run.round}: rows returned {got}, expected {want_jobs}")
        if run.counts != runs[0].counts:
            raise AssertionError(f"{run.driver} round {run.round}: final rows {run.counts} != {runs[0].counts}")
    if runs[0].counts != want_counts:
        raise AssertionError(f"final rows {runs[0].counts}, expected {want_counts}")


# -- the database ----------------------------------------------------------------------------


def database_name(dsn: str) -> str:
    """The database ``dsn`` names; refuses the server's own ones (this script drops it)."""
    name = urlsplit(dsn).path.strip("/")
    if not name or name in PROTECTED_DATABASES:
        raise SystemExit(f"{dsn}: name a dedicated database (e.g. /jobq_driver_bench): it is dropped at the end")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise SystemExit(f"{dsn}: use a plain database name (letters, digits, underscores)")
    return name


def admin_dsn(dsn: str) -> str:
    """The same server and user, database ``postgres``: where the benchmark's database is created and dropped."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, parts.fragment))


async def create_database(dsn: str) -> None:
    """Create the benchmark's database unless it is there already."""
    name = database_name(dsn)
    found = await admin(admin_dsn(dsn), f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
    if not found:
        await admin(admin_dsn(dsn), f'CREATE DATABASE "{name}"')


async def drop_database(dsn: str) -> None:
    """Drop the benchmark's database."""
    await admin(admin_dsn(dsn), f'DROP DATABASE IF EXISTS "{database_name(dsn)}" WITH (FORCE)')


# -- reporting -------------------------------------------------------------------------------


def say(text: str, verbose: bool) -> None:
    """Progress on stderr, with ``--verbose`` only."""
    if verbose:
        print(text, file=sys.stderr, flush=True)


def ratio(ours: float, theirs: float) -> str:
    """``ours`` over ``theirs``, as the tables show it."""
    return f"{ours / theirs:.2f}x"


def rounds_table(runs: Sequence[Run], labels: dict[str, str]) -> str:
    """A line per phase and round: each driver's statements/s, jobs/s and CPU s/1k jobs, and asyncpg over psycopg."""
    lines = [
        "| phase | round | asyncpg ops/s | asyncpg jobs/s | psycopg ops/s | psycopg jobs/s | rate a/p "
        "| asyncpg CPU s/1k jobs | psycopg CPU s/1k jobs | CPU a/p |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rounds = sorted({run.round for run in runs})
    by = {(run.driver, run.round): run for run in runs}
    for name in PHASES:
        for number in rounds:
            a, p = by["asyncpg", number].phases[name], by["psycopg", number].phases[name]
            lines.append(
                f"| {labels[name]} | {number} | {a.ops_rate:,.0f} | {a.jobs_rate:,.0f} | {p.ops_rate:,.0f} "
                f"| {p.jobs_rate:,.0f} | {ratio(a.jobs_rate, p.jobs_rate)} | {a.cpu_per_1k:.4f} | {p.cpu_per_1k:.4f} "
                f"| {ratio(a.cpu_per_1k, p.cpu_per_1k)} |"
            )
    return "\n".join(lines)


def summary_table(runs: Sequence[Run], labels: dict[str, str]) -> str:
    """Medians over the rounds, the ratios being the median of each round's own ratio."""
    lines = [
        "| phase | asyncpg jobs/s | psycopg jobs/s | rate a/p | asyncpg CPU s/1k | psycopg CPU s/1k | CPU a/p |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    rounds = sorted({run.round for run in runs})
    by = {(run.driver, run.round): run for run in runs}
    for name in PHASES:
        a = [by["asyncpg", n].phases[name] for n in rounds]
        p = [by["psycopg", n].phases[name] for n in rounds]
        rate = statistics.median(x.jobs_rate / y.jobs_rate for x, y in zip(a, p, strict=True))
        cpu = statistics.median(x.cpu_per_1k / y.cpu_per_1k for x, y in zip(a, p, strict=True))
        lines.append(
            f"| {labels[name]} | {statistics.median(x.jobs_rate for x in a):,.0f} "
            f"| {statistics.median(y.jobs_rate for y in p):,.0f} | {rate:.2f}x "
            f"| {statistics.median(x.cpu_per_1k for x in a):.4f} | {statistics.median(y.cpu_per_1k for y in p):.4f} "
            f"| {cpu:.2f}x |"
        )
    return "\n".join(lines)


async def server_version(dsn: str) -> str:
    """PostgreSQL's version and its commit durability settings."""
    rows = await admin(
        dsn,
        "SELECT current_setting('server_version') AS v, current_setting('synchronous_commit') AS s, "
        "current_setting('fsync') AS f",
    )
    return f"PostgreSQL {rows[0]['v']} (fsync {rows[0]['f']}, synchronous_commit {rows[0]['s']})"


async def measure(args: argparse.Namespace, scale: Scale, rounds: int) -> int:
    """Create the database, run every round, check the rows, print the tables, and drop the database."""
    load_at_start = tuple(round(x, 2) for x in os.getloadavg())
    await create_database(args.dsn)
    try:
        version = await server_version(args.dsn)
        pool = "psycopg_pool.AsyncConnectionPool" if has_psycopg_pool() else "plain connections (no psycopg_pool)"
        reset = "default reset query" if args.asyncpg_default_reset else "no-op reset"
        print(
            f"{platform.python_version()} on {os.cpu_count()} cores, {version}; asyncpg {asyncpg.__version__} "
            f"(own pool, {reset}), psycopg {psycopg.__version__} (libpq wrapper: {psycopg.pq.__impl__}, {pool}, "
            f"{'text' if args.psycopg_text else 'binary'} params and results); pool of {POOL_SIZE}, autocommit",
            flush=True,
        )
        work = make_work(scale)
        drivers: list[Driver] = [AsyncpgDriver(args.asyncpg_default_reset), PsycopgDriver(binary=not args.psycopg_text)]
        runs: list[Run] = []
        for number in range(1, rounds + 1):
            for driver in drivers:
                run = await one_run(driver, args.dsn, scale, work, number)
                runs.append(run)
                for name, phase in run.phases.items():
                    say(
                        f"round {number} {driver.name} {name}: {phase.jobs_rate:,.0f} jobs/s, "
                        f"{phase.cpu_per_1k:.4f} CPU s/1k jobs",
                        args.verbose,
                    )
        check(runs, scale, work)
        labels = phase_labels(scale)
        plural = "s" if rounds > 1 else ""
        print(f"\nPer round (a/p: asyncpg's figure over psycopg's; CPU is this process's, {rounds} round{plural}):\n")
        print(rounds_table(runs, labels))
        print("\nMedians over the rounds (ratios: the median of each round's own ratio):\n")
        print(summary_table(runs, labels))
        print(f"\nFinal rows by status, identical for all {len(runs)} runs: {runs[0].counts}")
        print(f"Load average at the start {load_at_start}, at the end {tuple(round(x, 2) for x in os.getloadavg())}")
    finally:
        if not args.keep:
            await drop_database(args.dsn)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="a dedicated database: created if missing, then dropped")
    parser.add_argument("--rounds", type=int, default=3, help="times each driver runs the five phases, in turn")
    parser.add_argument("--quick", action="store_true", help="one round with a tenth of the jobs: a smoke run")
    parser.add_argument("--keep", action="store_true", help="leave the database (and the last run's rows) behind")
    parser.add_argument("--psycopg-text", action="store_true", help="psycopg sends and receives text, not binary")
    parser.add_argument(
        "--asyncpg-default-reset", action="store_true", help="asyncpg's pool sends its reset query on every release"
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="progress on stderr")
    args = parser.parse_args(argv)
    database_name(args.dsn)
    scale, rounds = (QUICK, 1) if args.quick else (Scale(), args.rounds)
    return asyncio.run(measure(args, scale, rounds))


if __name__ == "__main__":
    sys.exit(main())
