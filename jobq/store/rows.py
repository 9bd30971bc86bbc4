"""A job as a table row: the columns every SQL backend stores, and the codec both ways.

JSON values (payload, result, history) are stored as JSON text and times as Unix
seconds, so a row reads back into exactly the job that was written. The running
attempt of a processing job is not in its history column (that is written when
the attempt ends): its ``worker`` and ``started_at`` columns rebuild it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from pydantic_core import from_json, to_json

from jobq.job import PROCESSING, Attempt, Job, JobStatus
from jobq.store.memory import ADD, COMPLETE, EMPTY_PAYLOAD, HEARTBEAT, LEASE, NO_HISTORY, PROGRESS, compact

COLUMNS = (
    "id",
    "seq",
    "type",
    "queue",
    "priority",
    "status",
    "payload",
    "result",
    "error",
    "attempts",
    "max_attempts",
    "timeout",
    "created_at",
    "run_at",
    "started_at",
    "finished_at",
    "lease_id",
    "lease_expires_at",
    "progress",
    "progress_note",
    "history",
    "owner",
    "worker",
    "unique_key",
    "unique_scope",
    "unique_until",
    "concurrency_key",
    "concurrency_limit",
    "depends_on",
    "on_parent_failure",
    "parents_left",
    "workflow",
)


def dump(value: Any) -> str:
    """JSON text for a column (values reach the store as plain JSON: see jobq.values)."""
    return to_json(value).decode()


def history_text(job: Job) -> str:
    return "[]" if not job.history else dump(job.history)


ENDING_COLUMNS = ("result", "error", "finished_at", "history")  # what a run's end sets (ending_values)
STATE_COLUMNS = (
    "status",
    "attempts",
    "run_at",
    "started_at",
    "lease_id",
    "lease_expires_at",
    "progress",
    "progress_note",
    "worker",
    *ENDING_COLUMNS,
)
COMPLETE_COLUMNS = ("status", "lease_expires_at", "worker", *ENDING_COLUMNS)
"""What a completion changes in a leased job's row: attempts, started_at, lease_id (kept, for a repeated
complete) and the progress are as the lease and the reports since left them."""


def job_values(job: Job, kind: str) -> tuple[Any, ...]:
    """The values of the columns a ``kind`` of write sets: every column (COLUMNS) for an add, STATE_COLUMNS
    for a change of state, fewer for a lease, heartbeat or progress report."""
    if kind == HEARTBEAT:
        return (job.lease_expires_at,)
    if kind == COMPLETE:  # what Job.complete changed since the lease was written (COMPLETE_COLUMNS)
        return (job.status.value, job.lease_expires_at, job.worker, *ending_values(job))
    if kind == PROGRESS:
        return (job.progress, job.progress_note)
    if kind == ADD:  # the payload is written here, once: no later write of the job touches it
        return (
            job.id,
            job.seq,
            job.type,
            job.queue,
            job.priority,
            job.status.value,
            dump(job.payload),
            None if job.result is None else dump(job.result),
            job.error,
            job.attempts,
            job.max_attempts,
            job.timeout,
            job.created_at,
            job.run_at,
            job.started_at,
            job.finished_at,
            job.lease_id,
            job.lease_expires_at,
            job.progress,
            job.progress_note,
            history_text(job),
            job.owner,
            job.worker,
            job.unique_key,
            job.unique_scope,
            job.unique_until,
            job.concurrency_key,
            job.concurrency_limit,
            dump(job.depends_on) if job.depends_on else None,
            job.on_parent_failure,
            job.parents_left,
            job.workflow,
        )
    lease = (
        job.status.value,
        job.attempts,
        job.run_at,
        job.started_at,
        job.lease_id,
        job.lease_expires_at,
        job.progress,
        job.progress_note,
        job.worker,
    )
    if kind == LEASE:
        return lease
    return (*lease, *ending_values(job))


def ending_values(job: Job) -> tuple[Any, ...]:
    """The values of ENDING_COLUMNS."""
    return (None if job.result is None else dump(job.result), job.error, job.finished_at, history_text(job))


STATUSES = {status.value: status for status in JobStatus}


def job_from_row(row: Sequence[Any], _new: Callable[[type[Job]], Job] = object.__new__) -> Job:  # type: ignore[assignment]
    """Rebuild a job from its row; raises ValueError, TypeError or KeyError on data jobq did not write.

    What jobs have alike is shared (see :func:`~jobq.store.memory.compact`): names, the
    empty payload and history. A job left processing gets its running attempt back from the
    row (its history entry is written only when the attempt ends).
    """
    (job_id, seq, job_type, queue, priority, status, payload, result, error, attempts, max_attempts, timeout) = row[:12]
    (created_at, run_at, started_at, finished_at, lease_id, lease_expires_at, progress, note, history) = row[12:21]
    owner, worker, unique_key, unique_scope, unique_until, concurrency_key, concurrency_limit = row[21:28]
    depends_on, on_parent_failure, parents_left, workflow = row[28:32]
    job = _new(Job)
    job.id = job_id
    job.type = job_type
    job.payload = EMPTY_PAYLOAD if payload == "{}" else from_json(payload)
    job.queue = queue
    job.priority = priority
    job.max_attempts = max_attempts
    job.timeout = timeout
    job.status = STATUSES[status]
    job.result = None if result is None else from_json(result)
    job.error = error
    job.attempts = attempts
    job.created_at = created_at
    job.run_at = run_at
    job.started_at = started_at
    job.finished_at = finished_at
    job.lease_id = lease_id
    job.lease_expires_at = lease_expires_at
    job.progress = progress
    job.progress_note = note
    job.history = NO_HISTORY if history == "[]" else [attempt_from(attempt) for attempt in from_json(history)]
    job.seq = seq
    job.owner = owner
    job.unique_key = unique_key
    job.unique_scope = None if unique_scope is None else sys.intern(unique_scope)
    job.unique_until = unique_until
    job.concurrency_key = concurrency_key
    job.concurrency_limit = concurrency_limit
    job.depends_on = () if depends_on is None else tuple(from_json(depends_on))
    job.on_parent_failure = on_parent_failure or "cancel"
    job.parents_left = parents_left or 0
    job.workflow = workflow
    job.ready_at = run_at or created_at  # not stored: since its due time, or its creation
    if job.status is PROCESSING and (not job.history or job.history[-1].finished_at is not None):
        job.history = [*job.history, Attempt(len(job.history) + 1, started_at or created_at, worker)]
    return compact(job)


def attempt_from(data: dict[str, Any]) -> Attempt:
    """An attempt as stored in a job's history, its repeated words shared."""
    worker, outcome = data.get("worker"), data.get("outcome")
    return Attempt(
        number=data["number"],
        started_at=data["started_at"],
        worker=None if worker is None else sys.intern(worker),
        finished_at=data.get("finished_at"),
        outcome=None if outcome is None else sys.intern(outcome),
        error=data.get("error"),
        traceback=data.get("traceback"),
    )
