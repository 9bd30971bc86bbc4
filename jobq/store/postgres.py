"""The shared store: every job in PostgreSQL, for any number of jobq processes on one database.

Nothing is kept only in one process's memory: every verb is a statement (or a
short transaction) on the database, and answers once it committed. What each
node keeps is a cache of nothing but who waits for what.

- **Claiming** is one statement: ``FOR UPDATE SKIP LOCKED`` picks ready jobs queue
  by queue (round-robin, then priority, then FIFO) and marks them processing with a
  fresh lease id, so no two nodes ever hold one job. Due scheduled and retrying jobs
  are made pending first (by whichever node gets to them: ``SKIP LOCKED`` again).
- **Settling** a completion is one statement; any other end of a run reads the
  jobs, applies :mod:`jobq.lifecycle` here, and writes the outcome. Either way the
  write is fenced by the lease id: a write whose lease moved on changes nothing.
- **Time** is the database's clock (``clock_timestamp()``), so nodes whose clocks
  differ agree on due times and lease deadlines; an injected clock (tests)
  replaces it.
- **Wake-ups and events** come by LISTEN/NOTIFY on the schema's channel (see
  :mod:`jobq.store.pgschema`): a node wakes its idle leases when another node adds
  ready jobs, and delivers other nodes' status changes of the jobs it follows
  (``follow``) and of the jobs leased through it. A lost notification only
  delays: idle leases poll every ``POLL_SECONDS`` anyway.
- **Workflows** resolve in the database: whatever statement ends a job (or deletes it
  unfinished), a trigger counts it off its waiting children in the same transaction,
  cascading (see :mod:`jobq.store.pgschema`). Adding jobs with parents locks the stored
  parents first, so a parent that ends meanwhile counts the new child off exactly once.
- **Once-only maintenance** (retention) runs on whichever node takes an advisory
  lock for the round; promotion and lease expiry are safe on every node at once.
- **The database going away** makes verbs raise StoreUnavailable (503 with
  Retry-After) until it is back; the pool reconnects by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Collection, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
from pydantic_core import from_json, to_json

from jobq.errors import (
    InvalidTransition,
    JobNotFound,
    JobqError,
    StoreFull,
    StoreUnavailable,
    UnstorableValue,
)
from jobq.flow import FlowState, QueueFlow
from jobq.job import PROCESSING, TERMINAL, UNIQUE_SCOPES, Job, JobStatus
from jobq.store import memory
from jobq.store.base import Settlement, StoredSchedule, StoreOptions, StoreStats
from jobq.store.memory import ADD, STATE
from jobq.store.pgschema import MIGRATIONS, TERMINAL_STATUSES, WAITING_STATUSES, check_schema_name, statements
from jobq.store.rows import COLUMNS, STATE_COLUMNS, STATUSES, dump, job_from_row, job_values
from jobq.store.shared import MAX_PER_ROUND, Fence, SharedStore, stale
from jobq.workflow import DELETED

log = logging.getLogger("jobq.store")

POOL_MIN, POOL_MAX = 1, 10  # connections per jobq process
CONNECT_SECONDS = 5.0  # a connection not made by then fails (503): the database is away
STATEMENT_SECONDS = 30.0  # a statement (or a wait for a pooled connection) not done by then fails (503)
RECONNECT_SECONDS = 1.0  # how soon the listening connection tries again once it is lost
LISTEN_TIMEOUT = 5.0  # how long open waits for the listening connection
MIGRATION_LOCK = 0x6A6F6271  # the advisory lock key migrations take ("jobq")
RETENTION_LOCK = MIGRATION_LOCK + 1  # the one taken by the node that purges in a round
REPORTING_LOCK = MIGRATION_LOCK + 2  # held (by its listening connection) by the node that reports the totals
FLOWING_SECONDS = 1.0  # how long a node goes by the list of flow-controlled queues it read last
MAX_KEYS_PER_CLAIM = 1000  # keys of a flow-controlled queue one claim looks at, at most

NOW = "coalesce($1::float8, extract(epoch FROM clock_timestamp()))"  # the database's clock, or an injected one
ROW = (*COLUMNS, "ready_at")  # a job's row as read: the shared columns, and since when it could run
SELECT_JOB = "SELECT {} FROM {{s}}.jobs".format(", ".join(ROW))
RETURNING = "RETURNING " + ", ".join(f"j.{column}" for column in ROW)
STATE_TYPES = (
    "text",
    "integer",
    "float8",
    "float8",
    "text",
    "float8",
    "float8",
    "text",
    "text",
    "json",
    "text",
    "float8",
    "json",
)
ADD_TYPES = ("text", "text", "text", "integer", "text", "json", "json", "text", "integer", "integer", "float8")
ADD_TYPES += ("float8", "float8", "float8", "float8", "text", "float8", "float8", "text", "json", "text", "text")
ADD_TYPES += ("text", "text", "float8", "text", "integer", "jsonb", "text", "integer", "text")
ADD_COLUMNS = tuple(column for column in COLUMNS if column != "seq")  # the database numbers the jobs
ADD_KINDS = dict(zip(ADD_COLUMNS, ADD_TYPES, strict=True))
# A job outside workflows leaves these to their defaults, so the hot add sends no array of them (the driver
# checks every element of an array it sends: four columns of defaults would cost a job about a microsecond).
WORKFLOW_COLUMNS = ("depends_on", "on_parent_failure", "parents_left", "workflow")
PLAIN_COLUMNS = tuple(column for column in ADD_COLUMNS if column not in WORKFLOW_COLUMNS)
# A workflow's add also says which of its jobs are parents of others of the call (has_children): set as
# they go in, rather than by updating each parent again once its children are added.
WORKFLOW_ADD_COLUMNS = (*ADD_COLUMNS, "has_children")
ADD_KINDS["has_children"] = "bool"
WRITTEN = (*STATE_COLUMNS, "ready_at")  # what a change of state writes
STATE_ARRAYS = ", ".join(f"${n}::{kind}[]" for n, kind in enumerate((*STATE_TYPES, "float8"), start=4))

UNIQUE_SCOPE_ARRAYS = {  # jobq.job.UNIQUE_SCOPES, as SQL arrays
    scope: "ARRAY[{}]::text[]".format(", ".join(f"'{status.value}'" for status in sorted(statuses)))
    for scope, statuses in UNIQUE_SCOPES.items()
}


def add_statement(columns: Sequence[str], room: str) -> str:
    """The statement that adds jobs (one array per column of ``columns``) while ``room`` (SQL) holds: the jobs
    that fit, or all; then max_waiting."""
    arrays = ", ".join(f"${n}::{ADD_KINDS[column]}[]" for n, column in enumerate(columns, start=1))
    return f"""
        WITH waiting AS (
            SELECT coalesce(sum(jobs), 0) AS jobs FROM {{s}}.counts WHERE status IN {WAITING_STATUSES}
        ), new AS (
            SELECT * FROM unnest({arrays}) WITH ORDINALITY AS new ({", ".join(columns)}, ord)
        ), fresh AS (  -- ids already stored take no room
            SELECT new.*, row_number() OVER (ORDER BY ord) AS place FROM new
            WHERE NOT EXISTS (SELECT 1 FROM {{s}}.jobs stored WHERE stored.id = new.id)
        )
        INSERT INTO {{s}}.jobs ({", ".join(columns)})
        SELECT {", ".join(columns)} FROM fresh, waiting WHERE {room} <= ${len(columns) + 1}
        ORDER BY fresh.place
        ON CONFLICT (id) DO NOTHING
        RETURNING id, seq
    """


FIT, ALL = "waiting.jobs + fresh.place", "waiting.jobs + (SELECT count(*) FROM fresh)"  # add_statement's rooms
LISTED = """ AND ($3::text IS NULL OR status = $3) AND ($4::text IS NULL OR queue = $4)
        AND ($5::text IS NULL OR type = $5) AND ($6::text IS NULL OR owner = $6)"""  # list_jobs' other filters

SQL = {
    # adding jobs: as many as fit, or (together) all or none; jobs outside workflows, or any
    "add": add_statement(PLAIN_COLUMNS, FIT),
    "add_together": add_statement(PLAIN_COLUMNS, ALL),
    "add_workflow": add_statement(WORKFLOW_ADD_COLUMNS, FIT),
    "add_workflow_together": add_statement(WORKFLOW_ADD_COLUMNS, ALL),
    # -- workflows (jobq.workflow; the rules are pgschema's count_off) --
    # the parents of jobs being added, locked against ending until the edges to them are in (see _insert);
    # for an update (has_children), not a share: two adds upgrading a share of one parent would deadlock
    "lock_parents": "SELECT id, status FROM {s}.jobs WHERE id = ANY($1::text[]) ORDER BY id FOR NO KEY UPDATE",
    "add_edges": """
        WITH edges AS (INSERT INTO {s}.job_edges (parent, child) SELECT * FROM unnest($1::text[], $2::text[]))
        UPDATE {s}.jobs SET has_children = true WHERE id = ANY($3::text[]) AND has_children IS NOT TRUE
    """,
    "count_off": f"""
        SELECT {{s}}.count_off($2::text[], $3::text[], array_fill({NOW}, ARRAY[cardinality($2::text[])]))
    """,
    "born": "SELECT id, status, parents_left, error, finished_at, ready_at FROM {s}.jobs WHERE id = ANY($1::text[])",
    "get": SELECT_JOB + " WHERE id = ANY($1::text[])",
    "lock_unique_key": "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
    "unique_holder": f"""
        SELECT id FROM {{s}}.jobs WHERE unique_key = $2 AND (unique_until IS NULL OR unique_until > {NOW})
            AND status = ANY(CASE unique_scope WHEN 'waiting' THEN {UNIQUE_SCOPE_ARRAYS["waiting"]}
                WHEN 'any' THEN {UNIQUE_SCOPE_ARRAYS["any"]} ELSE {UNIQUE_SCOPE_ARRAYS["active"]} END)
        LIMIT 1
    """,  # the job that holds the key (jobq.job.Job.holds_unique_key), if one does
    "get_at": SELECT_JOB.replace(" FROM", f", {NOW} FROM") + " WHERE id = ANY($2::text[])",  # and the time now
    "exists": "SELECT 1 FROM {s}.jobs WHERE id = $1",
    "claim": f"""
        WITH picked AS (
            SELECT id FROM (
                SELECT ready.id, ready.priority, ready.seq,
                    row_number() OVER (PARTITION BY q.name ORDER BY ready.priority DESC, ready.seq) AS turn,
                    array_position($4::text[], q.name) AS place
                FROM {{s}}.queues q CROSS JOIN LATERAL (
                    SELECT id, priority, seq FROM {{s}}.jobs
                    WHERE queue = q.name AND status = 'pending' AND ($5::text[] IS NULL OR type = ANY($5::text[]))
                    ORDER BY priority DESC, seq LIMIT $2 FOR UPDATE SKIP LOCKED
                ) ready
                WHERE NOT q.paused AND q.flow IS NULL AND NOT q.keyed  -- flow-controlled queues: claim_flow
                    AND ($4::text[] IS NULL OR q.name = ANY($4::text[]))
            ) turns
            ORDER BY turn, place, priority DESC, seq LIMIT $2
        ), now AS (SELECT {NOW} AS t),
        ordered AS (SELECT id, row_number() OVER () AS ord FROM picked)
        UPDATE {{s}}.jobs j SET status = 'processing', attempts = j.attempts + 1, run_at = NULL,
            started_at = now.t, lease_id = ($7::text[])[ordered.ord],
            lease_expires_at = now.t + $3, progress = NULL, progress_note = NULL, worker = $6
        FROM ordered, now WHERE j.id = ordered.id
        {RETURNING}, ordered.ord
    """,
    # -- flow-controlled queues (jobq.flow): claimed one queue at a time, under its advisory lock --
    "flowing": "SELECT name FROM {s}.queues WHERE (flow IS NOT NULL OR keyed) AND NOT paused ORDER BY name",
    # the claim from one flow-controlled queue: pgschema's claim_flow function, its rows as a job's
    "claim_flow": "SELECT {}, c.ord FROM {{s}}.claim_flow($2, $3, $4, $5, $6, $7, $1, $8) c".format(
        ", ".join(f"(c.job).{column}" for column in ROW)
    ),
    # the rates start afresh: a tat kept from another rate would be read with this one's period
    "set_flow": """
        WITH forgotten AS (DELETE FROM {s}.flow_keys WHERE queue = $1)
        INSERT INTO {s}.queues AS q (name, flow) VALUES ($1, $2::jsonb)
        ON CONFLICT (name) DO UPDATE SET flow = excluded.flow, tat = NULL
    """,
    "flows": f"""
        SELECT q.name, q.flow::text, q.tat, {NOW},
            (SELECT coalesce(sum(jobs), 0)::bigint FROM {{s}}.counts WHERE queue = q.name AND status = 'processing')
        FROM {{s}}.queues q WHERE q.flow IS NOT NULL ORDER BY q.name
    """,
    "flows_keys_running": """
        SELECT queue, concurrency_key, count(*) FROM {s}.jobs
        WHERE queue = ANY($1::text[]) AND status = 'processing' AND concurrency_key IS NOT NULL GROUP BY 1, 2
    """,
    "flows_key_tats": "SELECT queue, key, tat FROM {s}.flow_keys WHERE queue = ANY($1::text[])",
    "forget_key_tats": f"DELETE FROM {{s}}.flow_keys WHERE tat <= {NOW}",
    "promote": f"""
        UPDATE {{s}}.jobs j SET status = 'pending', ready_at = j.run_at
        FROM (
            SELECT id, status FROM {{s}}.jobs
            WHERE status IN ('scheduled', 'retrying') AND run_at <= {NOW}
            ORDER BY run_at LIMIT {MAX_PER_ROUND} FOR UPDATE SKIP LOCKED
        ) due WHERE j.id = due.id
        RETURNING due.status, {RETURNING.removeprefix("RETURNING ")}
    """,
    "next_due": "SELECT min(run_at) FROM {s}.jobs WHERE status IN ('scheduled', 'retrying')",
    "heartbeat": f"""
        UPDATE {{s}}.jobs j SET lease_expires_at = {NOW} + $2
        FROM unnest($3::text[], $4::text[]) AS held (id, lease_id)
        WHERE j.id = held.id AND j.lease_id = held.lease_id AND j.status = 'processing'
        {RETURNING}
    """,
    "write": f"""
        UPDATE {{s}}.jobs j SET {", ".join(f"{column} = new.{column}" for column in WRITTEN)}
        FROM unnest($1::text[], $2::text[], $3::text[], {STATE_ARRAYS})
            AS new (id, was, lease, {", ".join(WRITTEN)})
        WHERE j.id = new.id AND j.status = new.was AND j.lease_id IS NOT DISTINCT FROM new.lease
        RETURNING j.id
    """,
    # Completing is the one change made in SQL alone (the common case: one statement, no read first). It
    # does what Job.complete does, and appends the ended attempt to the history as json text (json, not
    # jsonb: float8 times keep every digit).
    "complete": f"""
        WITH now AS (SELECT {NOW} AS t)
        UPDATE {{s}}.jobs j SET status = 'completed', result = done.result, error = NULL, finished_at = now.t,
            lease_expires_at = NULL, worker = NULL,
            history = (
                left(j.history::text, -1) || CASE WHEN json_array_length(j.history) = 0 THEN '' ELSE ',' END
                || json_build_object(
                    'number', json_array_length(j.history) + 1, 'started_at', coalesce(j.started_at, j.created_at),
                    'worker', j.worker, 'finished_at', now.t, 'outcome', 'completed', 'error', NULL, 'traceback', NULL
                )::text || ']'
            )::json
        FROM unnest($2::text[], $3::text[], $4::json[]) AS done (id, lease_id, result), now
        WHERE j.id = done.id AND j.lease_id = done.lease_id AND j.status = 'processing'
        RETURNING j.id, j.finished_at
    """,
    "now": f"SELECT {NOW}",
    "progress": """
        UPDATE {s}.jobs SET progress = $3, progress_note = $4
        WHERE id = $1 AND lease_id = $2 AND status = 'processing' RETURNING id
    """,
    "delete": f"DELETE FROM {{s}}.jobs j WHERE id = $1 AND status <> 'processing' {RETURNING}",
    "peek": SELECT_JOB
    + """ WHERE queue = $1 AND status = 'pending'
        ORDER BY priority DESC, seq LIMIT 1""",
    "log": f"""
        WITH line AS (
            INSERT INTO {{s}}.job_logs (job_id, at, message)
            SELECT id, {NOW}, $3 FROM {{s}}.jobs
            WHERE id = $2 AND ($4::text IS NULL OR (lease_id = $4 AND status = 'processing'))
                AND (SELECT count(*) FROM {{s}}.job_logs WHERE job_id = $2) < {memory.MAX_LOG_LINES}
            RETURNING line, job_id, at
        )
        SELECT line, at, pg_notify('{{s}}', json_build_object('node', $5::text, 'log', job_id, 'line', line)::text)
        FROM line
    """,
    "logs": "SELECT at, message FROM {s}.job_logs WHERE job_id = $1 ORDER BY line",
    "log_lines": "SELECT job_id, at, message FROM {s}.job_logs WHERE line = ANY($1::bigint[]) ORDER BY line",
    "counts": "SELECT queue, status, sum(jobs)::bigint FROM {s}.counts GROUP BY queue, status HAVING sum(jobs) <> 0",
    "paused": "SELECT name FROM {s}.queues WHERE paused ORDER BY name",
    "heads": """
        SELECT q.name, coalesce(head.ready_at, head.run_at, head.created_at) FROM {s}.queues q CROSS JOIN LATERAL (
            SELECT ready_at, run_at, created_at FROM {s}.jobs WHERE queue = q.name AND status = 'pending'
            ORDER BY priority DESC, seq LIMIT 1
        ) head
    """,
    "list_bound": "SELECT seq FROM {s}.jobs WHERE seq < $1 ORDER BY seq DESC OFFSET $2 LIMIT 1",
    "list": SELECT_JOB + " WHERE seq < $1 AND seq > $2" + LISTED + " ORDER BY seq DESC LIMIT $7",
    # a workflow's jobs and a parent's children, by their indexes (every one, however many jobs are not)
    "list_workflow": SELECT_JOB
    + " WHERE workflow = $2 AND seq < $1"
    + LISTED
    + " AND ($7::jsonb IS NULL OR depends_on @> $7) ORDER BY seq DESC LIMIT $8",
    "list_children": SELECT_JOB
    + " WHERE depends_on @> $7::jsonb AND seq < $1"
    + LISTED
    + " AND ($2::text IS NULL OR workflow = $2) ORDER BY seq DESC LIMIT $8",
    "set_paused": """
        INSERT INTO {s}.queues AS q (name, paused) VALUES ($1, $2)
        ON CONFLICT (name) DO UPDATE SET paused = excluded.paused
    """,
    "resumed": "SELECT pg_notify('{s}', json_build_object('node', $2::text, 'ready', ARRAY[$1::text])::text)",
    "clear": f"DELETE FROM {{s}}.jobs WHERE queue = $1 AND status IN {WAITING_STATUSES}",
    "announce": f"""
        WITH lapsed AS (DELETE FROM {{s}}.nodes WHERE lapses_at <= {NOW} AND id <> $2)
        INSERT INTO {{s}}.nodes AS n (id, card, lapses_at)
        VALUES ($2, $3::jsonb || jsonb_build_object('seen_at', {NOW}), {NOW} + $4)
        ON CONFLICT (id) DO UPDATE SET card = excluded.card, lapses_at = excluded.lapses_at
    """,
    "withdraw": "DELETE FROM {s}.nodes WHERE id = $1",
    "put_schedule": """
        INSERT INTO {s}.schedules (name, definition) VALUES ($1, $2::jsonb)
        ON CONFLICT (name) DO UPDATE SET definition = excluded.definition
    """,
    "new_schedule": "INSERT INTO {s}.schedules (name, definition) VALUES ($1, $2::jsonb) ON CONFLICT (name) DO NOTHING",
    "delete_schedule": "DELETE FROM {s}.schedules WHERE name = $1",
    "schedules": "SELECT name, definition::text, fired FROM {s}.schedules ORDER BY name",
    "fired": "UPDATE {s}.schedules SET fired = $2 WHERE name = $1 AND (fired IS NULL OR fired < $2)",
    "nodes": f"SELECT card::text FROM {{s}}.nodes WHERE lapses_at > {NOW} ORDER BY id",
    "expiring": f"""
        {SELECT_JOB} WHERE status = 'processing' AND lease_expires_at <= $1::float8
        ORDER BY lease_expires_at LIMIT {MAX_PER_ROUND} FOR UPDATE SKIP LOCKED
    """,
    "purge_old": f"""
        DELETE FROM {{s}}.jobs WHERE id IN (
            SELECT id FROM {{s}}.jobs WHERE status IN {TERMINAL_STATUSES} AND finished_at < {NOW} - $2
            ORDER BY finished_at LIMIT {MAX_PER_ROUND * 10}
        )
    """,
    "purge_many": f"""
        DELETE FROM {{s}}.jobs WHERE id IN (
            SELECT id FROM {{s}}.jobs WHERE status IN {TERMINAL_STATUSES} ORDER BY finished_at LIMIT $1
        )
    """,
}


def is_postgres_url(url: str) -> bool:
    """Whether a store URL names PostgreSQL (``postgresql://`` or ``postgres://``)."""
    return urlsplit(url).scheme in ("postgresql", "postgres")


def split_url(url: str) -> tuple[str, str]:
    """The connection URL and the schema a ``postgresql://...[?schema=name]`` store URL names (``jobq`` by default).

    Every other query parameter is the driver's (``sslmode``, say). ValueError for a bad schema name.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((value for key, value in query if key == "schema"), "jobq")
    rest = urlencode([(key, value) for key, value in query if key != "schema"])
    return urlunsplit(parts._replace(scheme="postgresql", query=rest)), check_schema_name(schema)


def where(url: str) -> str:
    """A store URL without its password, to name in messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    return f"postgresql://{parts.username + '@' if parts.username else ''}{host}:{parts.port or 5432}{parts.path}"


# What a database call can raise: the server's errors, the driver's (a connection cut mid-call can leave
# one in a state it reports as InternalClientError), and the network's.
DATABASE_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)


def storage_error(exc: BaseException, place: str) -> JobqError:
    """The jobq error for a failed database call: unavailable, full, or a value it cannot store."""
    if isinstance(exc, JobqError):
        return exc
    state = getattr(exc, "sqlstate", None) or ""
    if state == "53100":
        return StoreFull(f"{place}: the database's disk is full")
    if isinstance(exc, asyncpg.DataError | UnicodeError) or state.startswith("22"):
        return UnstorableValue(f"{place}: a value cannot be stored ({type(exc).__name__}: {exc})")
    return StoreUnavailable(f"{place} is unavailable: {type(exc).__name__}: {exc}")


class PostgresStore(SharedStore):
    """Jobs in PostgreSQL, shared by every jobq process that opens the same database and schema."""

    def __init__(self, url: str, options: StoreOptions | None = None) -> None:
        super().__init__(options)
        self.dsn, self.schema = split_url(url)
        self.place = where(self.dsn) + f" (schema {self.schema})"
        self._own = f'{{"node" : "{self.node}"'  # how this node's notifications start (json_build_object's layout)
        self._sql = {name: statement.replace("{s}", self.schema) for name, statement in SQL.items()}
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncio.Task[None] | None = None
        self._heard_from = asyncio.Event()  # set once the listening connection is up (open waits for it)
        self._flowing_read: float | None = None  # when the flow-controlled queues were read (loop time)
        self._flow_first = False  # which kind of queue a claim serves first: flow-controlled or plain

    # -- lifecycle -----------------------------------------------------------
    async def open(self) -> None:
        """Connect, create or migrate the schema (once, whoever starts first), and start listening."""
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=POOL_MIN,
                max_size=POOL_MAX,
                server_settings={"jobq.node": self.node, "application_name": "jobq"},
                reset=keep_session,
                timeout=CONNECT_SECONDS,
                command_timeout=STATEMENT_SECONDS,
            )
            async with self._pool.acquire() as conn:
                await migrate(conn, self.schema)
        except BaseException as exc:
            await self.close()
            if isinstance(exc, DATABASE_ERRORS):
                raise storage_error(exc, self.place) from None
            raise
        self._listener = asyncio.create_task(self._listen(), name="jobq-store-listener")
        with contextlib.suppress(TimeoutError):  # the database answered just now: the listener follows at once
            async with asyncio.timeout(LISTEN_TIMEOUT):
                await self._heard_from.wait()
        log.info("opened %s%s", self.place, "" if self._down is None else f"; not listening yet: {self._down}")

    async def close(self) -> None:
        """Hand back the runs leased through this store that are still running (lost: jobq stopped), then disconnect."""
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None
        if self._pool is not None:
            await self._stop_background()
            await self._pool.close()
            self._pool = None

    # -- connections -----------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; every database error leaves as a jobq error (StoreUnavailable, mostly)."""
        if self._pool is None:
            raise StoreUnavailable(f"the store {self.place} is not open")
        try:
            async with self._pool.acquire(timeout=STATEMENT_SECONDS) as conn:
                yield conn
        except (*DATABASE_ERRORS, UnicodeError) as exc:
            raise storage_error(exc, self.place) from None

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._connection() as conn, conn.transaction():
            yield conn

    async def _now(self, conn: asyncpg.Connection) -> float:
        if self._fixed_clock is not None:
            return self._fixed_clock()
        return float(await conn.fetchval(self._sql["now"], None))

    # -- listening ---------------------------------------------------------------
    async def _listen(self) -> None:
        """Hold a connection that LISTENs on the schema's channel; reconnect whenever it is lost."""
        assert self._pool is not None
        while True:
            closed = asyncio.Event()
            try:
                conn = await asyncpg.connect(
                    self.dsn, server_settings={"application_name": "jobq-listener"}, timeout=CONNECT_SECONDS
                )
            except DATABASE_ERRORS as exc:
                if self._down is None:
                    log.error("%s: cannot listen for other nodes' changes: %s", self.place, exc)
                self._down = f"the database {self.place} is unreachable: {exc}"
                await asyncio.sleep(RECONNECT_SECONDS)
                continue
            try:
                conn.add_termination_listener(lambda _, lost=closed: lost.set())
                await conn.add_listener(self.schema, lambda *notified: self._heard(notified[-1]))
                if self._down is not None:
                    self._listening_again()
                first = True
                while not closed.is_set():  # one node at a time reports the totals: whoever holds the lock
                    if not self._reporting:
                        self._reporting = await conn.fetchval("SELECT pg_try_advisory_lock($1)", REPORTING_LOCK)
                    if first:
                        self._heard_from.set()
                        first = False
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(RECONNECT_SECONDS):
                            await closed.wait()
            except DATABASE_ERRORS as exc:
                self._down = f"the database {self.place} is unreachable: {exc}"
            except Exception as exc:  # never the end of listening: log it, and connect again
                log.exception("%s: listening failed", self.place)
                self._down = f"listening to {self.place} failed: {exc}"
            finally:
                self._reporting = False  # the lock went with the connection
                conn.terminate()  # closes at once, whatever state the connection was left in
            self._down = self._down or f"the connection to {self.place} was lost"
            log.error("%s: %s; reconnecting", self.place, self._down)
            await asyncio.sleep(RECONNECT_SECONDS)

    def _heard_log(self, message: dict[str, Any]) -> None:
        if message["log"] in self._followed:
            self._in_background(self._publish_lines([message["line"]]))

    async def _publish_lines(self, lines: list[int]) -> None:
        async with self._connection() as conn:
            logged = await conn.fetch(self._sql["log_lines"], lines)
        for job_id, at, message in logged:
            self._publish_log(job_id, at, message)

    # -- the primitives ------------------------------------------------------------
    async def _insert(self, jobs: Sequence[Job], *, together: bool = False) -> dict[str, int | str]:
        """Insert the jobs that fit under max_waiting (``together``: all, or none) and whose ids are new; returns
        their ids and seqs.

        With unique keys, in one transaction that first takes an advisory lock per key (in key
        order, so two calls never wait on each other): nodes adding the same key take turns, and
        the later sees the earlier's job. With parents (``depends_on``), in one transaction that
        locks the stored parents, adds the jobs and their edges, and counts off the parents that
        ended already (``_link``). Jobs without either cost nothing more: one statement, which
        leaves the workflow columns to their defaults unless a job of the call is in a workflow.
        """
        keys = sorted({job.unique_key for job in jobs if job.unique_key is not None})
        workflow = [  # the jobs whose workflow columns are not the defaults
            job for job in jobs if job.depends_on or job.workflow is not None or job.on_parent_failure != "cancel"
        ]
        linked = [job for job in workflow if job.depends_on]
        add = self._sql[("add_workflow" if workflow else "add") + ("_together" if together else "")]
        parents = sorted({parent for job in linked for parent in job.depends_on})

        def arrays(adding: Sequence[Job]) -> list[Sequence[Any]]:
            if not workflow:
                return add_columns(adding, PLAIN_COLUMNS)
            flagged = set(parents)
            return [*add_columns(adding, ADD_COLUMNS), [job.id in flagged or None for job in adding]]

        if not keys and not linked:
            async with self._connection() as conn:
                return dict(await conn.fetch(add, *arrays(jobs), self.options.max_waiting))
        inserted: dict[str, int | str] = {}
        taken: dict[str, str] = {}  # key -> the job of this call that takes it
        fresh: list[Job] = []
        async with self._transaction() as conn:
            for key in keys:
                await conn.execute(self._sql["lock_unique_key"], f"{self.schema}:{key}")
            # Parents are locked (in id order) before their children's edges go in, and a parent's end
            # (pgschema's jobs_moved) waits for that lock: so it either counts off the new edges, or had ended
            # already and is counted off here. Parents of the same call are not stored yet: they wait anyway.
            stored: dict[str, str] = dict(await conn.fetch(self._sql["lock_parents"], parents)) if parents else {}
            for job in linked:
                job.status = JobStatus.WAITING  # until _link counts off a parent that ended
                job.parents_left = len(set(job.depends_on))
            for job in jobs:
                key = job.unique_key
                if key is None or await conn.fetchval(self._sql["exists"], job.id):  # an id sent before: a replay
                    fresh.append(job)
                elif key in taken:
                    inserted[job.id] = taken[key]
                elif holder := await conn.fetchval(self._sql["unique_holder"], self._clock_arg(), key):
                    inserted[job.id] = holder
                else:
                    taken[key] = job.id
                    fresh.append(job)
            if fresh:
                inserted.update(await conn.fetch(add, *arrays(fresh), self.options.max_waiting))
            if linked:
                added = [job for job in linked if isinstance(inserted.get(job.id), int)]
                await self._link(conn, added, stored, inserted)
        return inserted

    async def _link(
        self, conn: asyncpg.Connection, children: list[Job], stored: dict[str, str], inserted: dict[str, int | str]
    ) -> None:
        """Store the edges of jobs just added with parents, and count off at once each parent that has ended
        (``stored``: the parents' statuses, as locked) or is not there (deleted, or never added), by pgschema's
        count_off. Each job is brought to the state it is stored in: it becomes its add's outcome."""
        if not children:
            return
        edges = [(parent, job.id) for job in children for parent in dict.fromkeys(job.depends_on)]
        ended: dict[str, str] = {}  # parent -> how it ended
        present: list[str] = []  # the parents there are, stored before or in this call
        for parent in dict.fromkeys(parent for parent, _ in edges):
            status = stored.get(parent)
            if status is None and not isinstance(inserted.get(parent), int):
                ended[parent] = DELETED
                continue
            present.append(parent)
            if status is not None and STATUSES[status] in TERMINAL:
                ended[parent] = status
        parents, kids = [parent for parent, _ in edges], [child for _, child in edges]
        before = [parent for parent in present if parent in stored]  # those added by this call are flagged already
        await conn.execute(self._sql["add_edges"], parents, kids, before)
        if not ended:
            return  # they all wait (the usual workflow: added together, before any of it runs)
        await conn.execute(self._sql["count_off"], self._clock_arg(), list(ended), list(ended.values()))
        born = {row[0]: row for row in await conn.fetch(self._sql["born"], [job.id for job in children])}
        for job in children:
            _, status, job.parents_left, job.error, job.finished_at, ready_at = born[job.id]
            job.status = STATUSES[status]
            if ready_at is not None:
                job.ready_at = ready_at

    async def _read(self, job_ids: Sequence[str]) -> list[Job]:
        async with self._connection() as conn:
            rows = await conn.fetch(self._sql["get"], list(job_ids))
        return [row_job(row) for row in rows]

    async def _read_at(self, job_ids: Sequence[str]) -> tuple[float, list[Job]]:
        async with self._connection() as conn:
            rows = await conn.fetch(self._sql["get_at"], self._clock_arg(), list(job_ids))
            now = rows[0][-1] if rows else await self._now(conn)
        return now, [row_job(row[:-1]) for row in rows]

    async def _write(self, changes: Sequence[tuple[Job, Fence]]) -> set[str]:
        columns: list[list[Any]] = [[] for _ in range(3 + len(WRITTEN))]
        for job, (was, lease) in changes:
            values = (job.id, was.value, lease, *job_values(job, STATE), job.ready_at or None)
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        async with self._connection() as conn:
            return {row[0] for row in await conn.fetch(self._sql["write"], *columns)}

    async def _claim_jobs(
        self,
        max_jobs: int,
        lease_seconds: float,
        queues: Sequence[str] | None,
        worker: str | None,
        types: Collection[str] | None,
        lease_ids: list[str],
    ) -> list[Job]:
        wanted = list(queues) if queues is not None else None
        kinds = list(types) if types is not None else None
        flowing = [queue for queue in await self._flowing_queues() if queues is None or queue in queues]
        jobs: list[Job] = []
        self._flow_first = flow_first = not self._flow_first  # neither kind of queue waits on the other
        if flowing and flow_first:
            jobs = await self._claim_flows(flowing, max_jobs, lease_seconds, worker, kinds, lease_ids)
        if len(jobs) < max_jobs:
            async with self._connection() as conn:
                rows = await conn.fetch(
                    self._sql["claim"],
                    self._clock_arg(),
                    max_jobs - len(jobs),
                    lease_seconds,
                    wanted,
                    kinds,
                    worker,
                    lease_ids[len(jobs) :],
                )
            jobs += [row_job(row[:-1]) for row in sorted(rows, key=lambda row: row[-1])]  # in the order picked
        if flowing and not flow_first and len(jobs) < max_jobs:
            jobs += await self._claim_flows(
                flowing, max_jobs - len(jobs), lease_seconds, worker, kinds, lease_ids[len(jobs) :]
            )
        return jobs

    async def _flowing_queues(self) -> Collection[str]:
        """The flow-controlled queues not paused (their jobs are claimed by ``_claim_flow``), as read at most
        FLOWING_SECONDS ago. The plain claim skips them by itself: a stale list only delays their jobs."""
        now = asyncio.get_running_loop().time()
        if self._flowing_read is None or now - self._flowing_read > FLOWING_SECONDS:
            async with self._connection() as conn:
                self._flowing = [name for (name,) in await conn.fetch(self._sql["flowing"])]
            self._flowing_read = now
        return self._flowing

    async def _claim_flows(
        self,
        queues: list[str],
        max_jobs: int,
        lease_seconds: float,
        worker: str | None,
        types: list[str] | None,
        lease_ids: list[str],
    ) -> list[Job]:
        """Claim from flow-controlled queues, one after another, up to ``max_jobs`` in all."""
        jobs: list[Job] = []
        for queue in queues:
            if len(jobs) >= max_jobs:
                break
            jobs += await self._claim_flow(
                queue, max_jobs - len(jobs), lease_seconds, worker, types, lease_ids[len(jobs) :]
            )
        return jobs

    async def _claim_flow(
        self,
        queue: str,
        max_jobs: int,
        lease_seconds: float,
        worker: str | None,
        types: list[str] | None,
        lease_ids: list[str],
    ) -> list[Job]:
        """Claim from one flow-controlled queue, in one call of the schema's ``claim_flow`` (see
        jobq.store.pgschema): under the queue's advisory lock, so its limits hold across nodes."""
        most = min(max_jobs + 4, MAX_KEYS_PER_CLAIM)  # keys looked at: a few more, for keys held back
        async with self._connection() as conn:
            rows = await conn.fetch(
                self._sql["claim_flow"],
                self._clock_arg(),
                queue,
                max_jobs,
                lease_seconds,
                worker,
                types,
                lease_ids,
                most,
            )
        return [row_job(row[:-1]) for row in sorted(rows, key=lambda row: row[-1])]

    async def _extend(self, leases: Sequence[tuple[str, str]], lease_seconds: float) -> dict[str, Job]:
        ids, held = [job_id for job_id, _ in leases], [lease for _, lease in leases]
        async with self._connection() as conn:
            rows = await conn.fetch(self._sql["heartbeat"], self._clock_arg(), lease_seconds, ids, held)
        return {row[0]: row_job(row) for row in rows}

    async def _complete(self, settlements: Sequence[Settlement]) -> list[Job]:
        ids = [item.id for item in settlements]
        leases = [item.lease_id for item in settlements]
        results = [None if item.result is None else dump(item.result) for item in settlements]
        async with self._connection() as conn:
            rows = await conn.fetch(self._sql["complete"], self._clock_arg(), ids, leases, results)
        by_id = {item.id: item for item in settlements}
        done: list[Job] = []
        others: list[str] = []  # leased through another node: read back
        for job_id, finished_at in rows:
            if self._holds(by_id[job_id]):
                done.append(self._held_answer(by_id[job_id], finished_at))
            else:
                others.append(job_id)
        return done + (await self._read(others) if others else [])

    async def _expiring(self) -> tuple[float, list[Job]]:
        async with self._connection() as conn:
            now = await self._now(conn)
            rows = await conn.fetch(self._sql["expiring"], now)
        return now, [row_job(row) for row in rows]

    async def set_progress(self, job_id: str, lease_id: str | None, fraction: float, note: str | None) -> None:
        progress = min(max(float(fraction), 0.0), 1.0)
        async with self._connection() as conn:
            done = await conn.fetchval(self._sql["progress"], job_id, lease_id, progress, note)
        if done is None:
            raise stale(job_id, lease_id, await self.get(job_id))

    # -- operators -----------------------------------------------------------------
    async def delete(self, job_id: str) -> Job:
        async with self._connection() as conn:
            row = await conn.fetchrow(self._sql["delete"], job_id)
        if row is not None:
            return row_job(row)
        job = await self.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        raise InvalidTransition(job_id, job.status, "deleted (cancel it first)")

    async def peek(self, queue: str) -> Job | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(self._sql["peek"], queue)
        return None if row is None else row_job(row)

    async def append_log(self, job_id: str, message: str, lease_id: str | None = None) -> None:
        async with self._connection() as conn:
            row = await conn.fetchrow(self._sql["log"], self._clock_arg(), job_id, message, lease_id, self.node)
        if row is not None:
            self._publish_log(job_id, row[1], message)
            return
        job = await self.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        if lease_id is not None and (job.status is not PROCESSING or job.lease_id != lease_id):
            raise stale(job_id, lease_id, job)
        # else: the job has MAX_LOG_LINES lines, and keeps the first ones

    async def logs(self, job_id: str) -> list[dict[str, Any]]:
        async with self._connection() as conn:
            rows = await conn.fetch(self._sql["logs"], job_id)
            if not rows and await conn.fetchval(self._sql["exists"], job_id) is None:
                raise JobNotFound(job_id)
        return [{"at": at, "message": message} for at, message in rows]

    async def stats(self) -> StoreStats:
        async with self._connection() as conn:
            counts = await conn.fetch(self._sql["counts"])
            paused = [name for (name,) in await conn.fetch(self._sql["paused"])]
            heads = await conn.fetch(self._sql["heads"])
        by_status: Counter[str] = Counter()
        by_queue: dict[str, dict[str, int]] = {}
        for queue, status, jobs in counts:
            by_status[status] += jobs
            by_queue.setdefault(queue, {})[status] = jobs
        return StoreStats(dict(by_status), by_queue, paused, dict(heads))

    async def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        queue: str | None = None,
        job_type: str | None = None,
        owner: str | None = None,
        workflow: str | None = None,
        parent: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Job], str | None]:
        before = int(cursor) if cursor else 2**63 - 1
        if workflow is not None or parent is not None:
            return await self._list_related(before, status, queue, job_type, owner, workflow, parent, limit)
        async with self._connection() as conn:
            # A selective filter reads at most MAX_SCANNED jobs per page, as on every store: the page
            # ends at that bound (holding fewer than ``limit``) and the cursor reads on from there.
            bound = await conn.fetchval(self._sql["list_bound"], before, memory.MAX_SCANNED)
            rows = await conn.fetch(
                self._sql["list"],
                before,
                bound or 0,
                None if status is None else status.value,
                queue,
                job_type,
                owner,
                limit + 1,
            )
        page = [row_job(row) for row in rows[:limit]]
        if len(rows) > limit:
            return page, str(page[-1].seq)
        return page, None if bound is None else str(bound + 1)

    async def _list_related(
        self,
        before: int,
        status: JobStatus | None,
        queue: str | None,
        job_type: str | None,
        owner: str | None,
        workflow: str | None,
        parent: str | None,
        limit: int,
    ) -> tuple[list[Job], str | None]:
        """A page of a workflow's jobs or a parent's children, newest first: read by their index, so a page
        is always full (no bound on the jobs read, as a filter of the whole table has)."""
        children = None if parent is None else dump([parent])  # the jobs whose depends_on holds it
        async with self._connection() as conn:
            rows = await conn.fetch(
                self._sql["list_workflow" if parent is None else "list_children"],
                before,
                workflow,
                None if status is None else status.value,
                queue,
                job_type,
                owner,
                children,
                limit + 1,
            )
        page = [row_job(row) for row in rows[:limit]]
        return page, str(page[-1].seq) if len(rows) > limit else None

    async def set_paused(self, queue: str, paused: bool) -> None:
        async with self._connection() as conn:
            await conn.execute(self._sql["set_paused"], queue, paused)
            if not paused:
                await conn.execute(self._sql["resumed"], queue, self.node)
        self._flowing_read = None  # a resumed flow-controlled queue is claimed again at once
        if not paused:
            self._wake()

    async def set_flow(self, queue: str, flow: QueueFlow | None) -> None:
        definition = None if flow is None else to_json(flow.to_dict()).decode()
        async with self._connection() as conn:
            await conn.execute(self._sql["set_flow"], queue, definition)
            await conn.execute(self._sql["resumed"], queue, self.node)  # held jobs may start now
        self._flowing_read = None
        self._wake()

    async def flows(self) -> dict[str, FlowState]:
        async with self._connection() as conn:
            queues = await conn.fetch(self._sql["flows"], self._clock_arg())
            names = [row[0] for row in queues]
            keys_running = await conn.fetch(self._sql["flows_keys_running"], names) if names else []
            key_tats = await conn.fetch(self._sql["flows_key_tats"], names) if names else []
        states: dict[str, FlowState] = {}
        for name, flow_text, queue_tat, now, running in queues:
            flow = QueueFlow.from_dict(from_json(flow_text))
            key_rate = flow.key_rate
            states[name] = FlowState(
                flow=flow,
                running=running,
                keys_running={key: count for queue, key, count in keys_running if queue == name},
                next_start=None if flow.rate is None or queue_tat is None else flow.rate.next_start(queue_tat, now),
                keys_next_start={
                    key: at
                    for queue, key, tat in key_tats
                    if queue == name and key_rate is not None and (at := key_rate.next_start(tat, now)) > now
                },
            )
        return states

    async def clear(self, queue: str) -> int:
        async with self._connection() as conn:
            done = await conn.execute(self._sql["clear"], queue)
        return int(done.split()[-1])

    # -- nodes -------------------------------------------------------------------
    async def announce(self, card: dict[str, Any], ttl: float) -> None:
        async with self._connection() as conn:
            await conn.execute(self._sql["announce"], self._clock_arg(), self.node, to_json(card).decode(), ttl)

    async def withdraw(self) -> None:
        async with self._connection() as conn:
            await conn.execute(self._sql["withdraw"], self.node)

    async def nodes(self) -> list[dict[str, Any]]:
        async with self._connection() as conn:
            return [from_json(card) for (card,) in await conn.fetch(self._sql["nodes"], self._clock_arg())]

    # -- schedules ---------------------------------------------------------------
    async def put_schedule(self, name: str, definition: dict[str, Any], *, new: bool = False) -> bool:
        async with self._connection() as conn:
            done = await conn.execute(
                self._sql["new_schedule" if new else "put_schedule"], name, to_json(definition).decode()
            )
        return done != "INSERT 0 0"

    async def delete_schedule(self, name: str) -> bool:
        async with self._connection() as conn:
            return await conn.execute(self._sql["delete_schedule"], name) != "DELETE 0"

    async def schedules(self) -> list[StoredSchedule]:
        async with self._connection() as conn:
            rows = await conn.fetch(self._sql["schedules"])
        return [StoredSchedule(name, from_json(definition), fired) for name, definition, fired in rows]

    async def fired(self, name: str, tick: float) -> None:
        async with self._connection() as conn:
            await conn.execute(self._sql["fired"], name, tick)

    # -- housekeeping ------------------------------------------------------------
    async def promote_due(self) -> int:
        async with self._connection() as conn:
            rows = await conn.fetch(self._sql["promote"], self._clock_arg())
            self._next_due = await conn.fetchval(self._sql["next_due"])
        changes = [(row_job(row[1:]), STATUSES[row[0]]) for row in rows]
        if changes:
            self._wake()
        self._changed(changes)
        return len(changes)

    async def purge(self) -> int:
        """Delete finished jobs past retention, on the one node that takes this round's lock."""
        retention = self.options.retention
        async with self._transaction() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", RETENTION_LOCK):
                return 0  # another node purges this round
            old = await conn.execute(self._sql["purge_old"], self._clock_arg(), retention.max_age)
            purged = int(old.split()[-1])
            await conn.execute(self._sql["forget_key_tats"], self._clock_arg())  # a past tat holds nothing back
            terminal = sum(
                jobs for _, status, jobs in await conn.fetch(self._sql["counts"]) if STATUSES[status] in TERMINAL
            )
            if terminal > retention.max_count:
                excess = min(terminal - retention.max_count, MAX_PER_ROUND * 10)  # the rest next round
                many = await conn.execute(self._sql["purge_many"], excess)
                purged += int(many.split()[-1])
        return purged


PLACES = {column: place for place, column in enumerate(COLUMNS)}  # where each column is in job_values' answer


def add_columns(jobs: Sequence[Job], columns: Sequence[str]) -> list[Sequence[Any]]:
    """An add statement's arrays: one per column of ``columns``, each with the jobs' values."""
    if not jobs:
        return [() for _ in columns]
    values = list(zip(*[job_values(job, ADD) for job in jobs], strict=True))  # one tuple per column, made in C
    return [values[PLACES[column]] for column in columns]


def row_job(row: Sequence[Any]) -> Job:
    """The job a row holds, as a job of its own (nothing shared with other jobs, unlike a memory index's)."""
    job = job_from_row(row[: len(COLUMNS)])
    job.history = list(job.history)
    if row[len(COLUMNS)] is not None:
        job.ready_at = row[len(COLUMNS)]
    return job


async def keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset when a connection comes back: nothing to undo, so no round trip.

    jobq's pooled connections never LISTEN or hold a session-level lock (the listening
    connection is apart from the pool), and asyncpg rolls back a transaction left open.
    """


async def migrate(conn: asyncpg.Connection, schema: str) -> None:
    """Create or migrate ``schema`` to this jobq's version; one process at a time (an advisory lock).

    Refuses a schema made by a newer jobq, and one holding tables jobq did not make.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        tables = {
            name
            for (name,) in await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
            )
        }
        if "schema_version" not in tables:
            if tables:
                raise StoreUnavailable(
                    f"schema {schema} holds tables jobq did not make ({', '.join(sorted(tables))}): choose another "
                    "with ?schema=name"
                )
            await conn.execute(f"CREATE TABLE {schema}.schema_version (version integer NOT NULL)")
            await conn.execute(f"INSERT INTO {schema}.schema_version VALUES (0)")
        version = await conn.fetchval(f"SELECT version FROM {schema}.schema_version")
        if version > len(MIGRATIONS):
            raise StoreUnavailable(f"schema {schema} has version {version}; this jobq reads up to {len(MIGRATIONS)}")
        for number in range(version + 1, len(MIGRATIONS) + 1):
            for statement in statements(schema, number):
                await conn.execute(statement)
            await conn.execute(f"UPDATE {schema}.schema_version SET version = $1", number)
            log.info("migrated schema %s to version %d", schema, number)
