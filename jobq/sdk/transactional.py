"""Transactional enqueue: add a job in the same PostgreSQL transaction as the application's own rows.

With jobq on PostgreSQL (``--store postgresql://...``), a job inserted through the
application's own connection exists exactly when that transaction commits: rolled
back, it never existed; committed, every jobq node sees it (and wakes for it)
at once. This calls the ``enqueue`` SQL function of jobq's schema, which any
language can call the same way::

    SELECT jobq.enqueue('send_email', '{"to": "a@example.com"}', queue => 'mail');

Only the driver's connection is used: nothing here talks to the jobq server.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic_core import to_json

SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")
ARGUMENTS = ("type", "payload", "queue", "priority", "max_attempts", "timeout", "run_at", "id")


async def enqueue_in_transaction(
    conn: Any,
    job_type: str,
    payload: Any = None,
    *,
    queue: str = "default",
    priority: int = 0,
    max_attempts: int = 1,
    timeout: float | None = None,
    run_at: datetime | None = None,
    job_id: str | None = None,
    schema: str = "jobq",
) -> str:
    """Enqueue a job through ``conn`` (an asyncpg connection, or a psycopg 3 ``AsyncConnection``); returns its id.

    Call it inside the application's transaction: the job commits or rolls back with it.
    ``run_at`` (timezone-aware) schedules the job; ``job_id`` makes the call idempotent (an
    id enqueued before is answered and not added again). ``schema`` is the jobq store's
    (``?schema=`` in its URL; ``jobq`` by default).
    """
    if not SCHEMA_NAME.match(schema):
        raise ValueError(f"schema name {schema!r} is not valid: lower-case letters, digits and _")
    if run_at is not None and run_at.tzinfo is None:
        raise ValueError("run_at must be timezone-aware (a naive time would be read in the database's zone)")
    values = (job_type, to_json({} if payload is None else payload).decode(), queue, priority, max_attempts)
    values += (timeout, run_at, job_id)
    if type(conn).__module__.startswith("psycopg"):
        marks = ", ".join(f"{name} => %s" for name in ARGUMENTS)
        cursor = await conn.execute(f"SELECT {schema}.enqueue({marks})", values)
        row = await cursor.fetchone()
        return str(row[0])
    marks = ", ".join(f"{name} => ${n}" for n, name in enumerate(ARGUMENTS, start=1))
    return str(await conn.fetchval(f"SELECT {schema}.enqueue({marks})", *values))
