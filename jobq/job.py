"""The job record, its states and the transitions between them.

A job is plain data: a slotted dataclass that round-trips through JSON. Every
status change goes through :meth:`Job.move_to`, which refuses transitions the
lifecycle does not allow, so no code path can, say, complete a cancelled job.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

import uuid_utils

from jobq.errors import InvalidTransition


class JobStatus(StrEnum):
    """Where a job is in its life."""

    WAITING = "waiting"  # waits for its parents (depends_on) to finish
    PENDING = "pending"  # ready to run as soon as a worker is free
    SCHEDULED = "scheduled"  # waits for its run_at time
    PROCESSING = "processing"  # leased by a worker, running
    RETRYING = "retrying"  # an attempt failed; waits for next_run_at
    COMPLETED = "completed"
    FAILED = "failed"  # failed with no attempts configured to follow
    DEAD = "dead"  # every attempt failed: kept as a dead letter
    CANCELLED = "cancelled"


# The statuses by name (all but WAITING, which names the set below), as jobq's code reads them: on
# Python 3.11 reading a member off its class (``JobStatus.PENDING``) goes through EnumType's
# ``__getattr__`` hook, about 60 ns, and a job's life reads dozens (a tenth of its in-process CPU).
PENDING = JobStatus.PENDING
SCHEDULED = JobStatus.SCHEDULED
RETRYING = JobStatus.RETRYING
PROCESSING = JobStatus.PROCESSING
COMPLETED = JobStatus.COMPLETED
FAILED = JobStatus.FAILED
DEAD = JobStatus.DEAD
CANCELLED = JobStatus.CANCELLED

TERMINAL = frozenset({COMPLETED, FAILED, DEAD, CANCELLED})
WAITING = frozenset({JobStatus.WAITING, PENDING, SCHEDULED, RETRYING})
FAILING = frozenset({RETRYING, FAILED, DEAD})  # states entered with an error
RERUNNABLE = frozenset({FAILED, DEAD})  # what a re-run by hand (retry) accepts
DEFERRED = frozenset({SCHEDULED, RETRYING})  # waiting for run_at: next_run_at

UNIQUE_SCOPES: dict[str, frozenset[JobStatus]] = {  # the statuses in which a job holds its unique key
    "waiting": WAITING,
    "active": WAITING | {PROCESSING},
    "any": frozenset(JobStatus) - {CANCELLED},  # finished too, until its unique_until
}

PARENT_POLICIES = ("cancel", "run")  # what a child does when a parent fails, dies or is cancelled

_ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.WAITING: frozenset({PENDING, CANCELLED}),  # pending: its parents finished
    PENDING: frozenset({PROCESSING, CANCELLED}),
    SCHEDULED: frozenset({PENDING, CANCELLED, DEAD}),  # dead: given up by hand
    RETRYING: frozenset({PENDING, CANCELLED, DEAD}),
    PROCESSING: frozenset(
        {
            COMPLETED,
            FAILED,
            RETRYING,
            DEAD,
            CANCELLED,
            PENDING,  # released: shutdown, crash recovery, expired lease
        }
    ),
    COMPLETED: frozenset(),
    FAILED: frozenset({PENDING}),  # re-run by hand
    DEAD: frozenset({PENDING}),  # re-run by hand
    CANCELLED: frozenset(),
}


def can_move(source: JobStatus, target: JobStatus) -> bool:
    """Whether the lifecycle allows a job in ``source`` to move to ``target``."""
    return target in _ALLOWED[source]


def new_job_id() -> str:
    """A time-ordered id (UUIDv7), so listings by id sort by creation."""
    return str(uuid_utils.uuid7())


_last_second: tuple[int, str] = (-1, "")  # the second rendered last and its text, rebound whole (threads)


def rfc3339(timestamp: float | None) -> str | None:
    """Render a Unix timestamp as an RFC 3339 UTC string with milliseconds (or None).

    The same text as ``datetime.isoformat(timespec="milliseconds")``, without building
    a datetime: the date and time of day are formatted once per second.
    """
    if timestamp is None:
        return None
    second = math.floor(timestamp)
    micros = round((timestamp - second) * 1e6)  # datetime rounds to microseconds, then truncates
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    global _last_second
    cached, text = _last_second
    if second != cached:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _last_second = (second, text)
    return f"{text}.{micros // 1000:03d}Z"


def parse_rfc3339(text: str | None) -> float | None:
    """The Unix timestamp of an RFC 3339 string (or None)."""
    if text is None:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def same_json(a: Any, b: Any) -> bool:
    """Whether two JSON values are the same, types included: ``1``, ``1.0`` and ``true`` all differ."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_json(value, b[key]) for key, value in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


LOST_OUTCOMES = frozenset({"lease-expired", "recovered", "undelivered", "disconnected"})
"""How a run can end without its handler's word: lost, not failed (see jobq/lifecycle.py)."""


@dataclass(frozen=True, slots=True)  # frozen: a snapshot may share its attempts with the stored job
class Attempt:
    """One run of a job: when, where, and how it ended."""

    number: int
    started_at: float
    worker: str | None = None
    finished_at: float | None = None
    outcome: str | None = None  # completed, failed, timeout, retry, cancelled, released, or a lost run:
    # lease-expired, recovered (jobq stopped while it ran), undelivered (its lease answer never reached a worker),
    # disconnected (its worker's connection closed)
    error: str | None = None
    traceback: str | None = None  # a failed attempt's traceback, its last lines

    @property
    def lost(self) -> bool:
        return self.outcome in LOST_OUTCOMES

    def ended(self, finished_at: float, outcome: str, error: str | None, traceback: str | None) -> Attempt:
        """This attempt, ended so (a new one: attempts are frozen; ``dataclasses.replace`` costs twice as much)."""
        return Attempt(self.number, self.started_at, self.worker, finished_at, outcome, error, traceback)

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "worker": self.worker,
            "started_at": rfc3339(self.started_at),
            "finished_at": rfc3339(self.finished_at),
            "outcome": self.outcome,
            "error": self.error,
            "traceback": self.traceback,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Attempt:
        return cls(
            number=data["number"],
            started_at=parse_rfc3339(data["started_at"]) or 0.0,
            worker=data.get("worker"),
            finished_at=parse_rfc3339(data.get("finished_at")),
            outcome=data.get("outcome"),
            error=data.get("error"),
            traceback=data.get("traceback"),
        )


@dataclass(slots=True)
class Job:
    """A unit of work: what to run (type + payload), how, and what came of it."""

    id: str
    type: str
    payload: Any
    queue: str = "default"
    priority: int = 0
    max_attempts: int = 1
    timeout: float | None = None
    status: JobStatus = PENDING
    result: Any = None
    error: str | None = None
    attempts: int = 0
    created_at: float = field(default_factory=time.time)
    run_at: float | None = None  # when a scheduled or retrying job becomes due
    started_at: float | None = None
    finished_at: float | None = None
    lease_id: str | None = None
    lease_expires_at: float | None = None
    progress: float | None = None
    progress_note: str | None = None
    history: list[Attempt] = field(default_factory=list)
    seq: int = 0  # insertion order, assigned by the store: FIFO and listing order
    owner: str | None = None  # the name of the token that enqueued it (None when jobq runs without tokens)
    ready_at: float = (
        0.0  # when it could first run in its current wait (created or due, released, re-run); 0: created_at
    )
    # While in a status of its unique_scope and before unique_until (None: no end), the job holds its
    # unique_key: a job enqueued with the same key is not added, and is answered with this one.
    unique_key: str | None = None
    unique_scope: str | None = None  # a key of UNIQUE_SCOPES (set with unique_key)
    unique_until: float | None = None
    # Flow control (jobq/flow.py): the key it is counted, limited and takes turns under, and its own
    # limit of jobs of that key running at once (None: the queue's per-key limit).
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    # Workflows (jobq/workflow.py): the jobs it runs after (its parents), what it does when one of them
    # fails, dies or is cancelled (PARENT_POLICIES: "cancel", cascading down, or "run" anyway), how many
    # parents it still waits for (kept by the store), and the workflow it was created in.
    depends_on: tuple[str, ...] = ()
    on_parent_failure: str = "cancel"
    parents_left: int = 0
    workflow: str | None = None

    def holds_unique_key(self, now: float) -> bool:
        """Whether this job holds its unique key at ``now`` (see ``unique_key``)."""
        if self.unique_key is None or self.status not in UNIQUE_SCOPES[self.unique_scope or "active"]:
            return False
        return self.unique_until is None or now < self.unique_until

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    @property
    def worker(self) -> str | None:
        """The worker running the current attempt (None unless processing)."""
        if self.status is PROCESSING and self.history:
            return self.history[-1].worker
        return None

    @property
    def next_run_at(self) -> float | None:
        """When a scheduled or retrying job becomes due (None in any other state)."""
        return self.run_at if self.status in DEFERRED else None

    def snapshot(self) -> Job:
        """A copy a store hands out: changing it never changes the stored job.

        The record and its history list are copied; attempts are frozen, so they are
        shared. The payload and result are shared too (copying them per read would cost
        more than the rest of a job's life): jobq's own code never changes them, and a
        handler gets its own copy of the payload (see :class:`~jobq.handlers.JobContext`).
        """
        return _snapshot(self)

    def move_to(self, target: JobStatus) -> None:
        """Change status, refusing any transition the lifecycle does not allow."""
        if target not in _ALLOWED[self.status]:
            raise InvalidTransition(self.id, self.status, target)
        self.status = target

    def begin_attempt(self, lease_id: str, lease_expires_at: float, worker: str | None, now: float) -> None:
        """Lease the job to a worker: it is now processing its next attempt."""
        self.move_to(PROCESSING)
        self.attempts += 1
        self.lease_id = lease_id
        self.lease_expires_at = lease_expires_at
        self.started_at = now
        self.run_at = None
        self.progress = self.progress_note = None
        # a new list, not an append: a store may share one empty history among the jobs it holds
        self.history = [*self.history, Attempt(len(self.history) + 1, now, worker)]  # numbered across re-runs

    def complete(self, result: Any, now: float) -> None:
        """The handler returned: record its result."""
        self.move_to(COMPLETED)
        self.result = result
        self.error = None
        self.finished_at = now
        lease_id = self.lease_id
        self._end_attempt("completed", None, now)
        self.lease_id = lease_id  # kept, so a repeated complete with it gets this answer again

    def completed_under(self, lease_id: str | None) -> bool:
        """Whether this job was completed by the holder of ``lease_id`` (a repeated complete)."""
        return self.status is COMPLETED and lease_id is not None and self.lease_id == lease_id

    def fail(
        self,
        error: str,
        now: float,
        retry_at: float | None,
        outcome: str = "failed",
        *,
        traceback: str | None = None,
        give_up_as: JobStatus | None = None,
    ) -> None:
        """An attempt failed: retry at ``retry_at``, or give up (``give_up_as``, by default dead if
        retries were allowed, else failed)."""
        if retry_at is not None:
            self.move_to(RETRYING)
            self.run_at = self.ready_at = retry_at
        else:
            if give_up_as is None:
                give_up_as = DEAD if self.max_attempts > 1 else FAILED
            self.move_to(give_up_as)
            self.finished_at = now
        self.error = error
        self._end_attempt(outcome, error, now, traceback)

    def release(self, reason: str, now: float) -> None:
        """Hand a leased job back unfinished (shutdown, a lost run): it runs again."""
        self.move_to(PENDING)
        self.ready_at = now
        self._end_attempt(reason, None, now)

    def cancel(self, now: float) -> None:
        """Cancel a waiting or running job; it will not run (again)."""
        running = self.status is PROCESSING
        self.move_to(CANCELLED)
        self.finished_at = now
        self.run_at = None
        if running:
            self._end_attempt("cancelled", None, now)

    def parents_finished(self, now: float) -> None:
        """Every parent of a waiting job has finished (or failed, under the "run" policy): it is pending."""
        self.move_to(PENDING)
        self.parents_left = 0
        self.ready_at = now

    def parent_failed(self, parent_id: str, outcome: str, now: float) -> None:
        """A parent of a waiting job ended as ``outcome`` (failed, dead, cancelled, deleted) under the "cancel"
        policy: this job is cancelled too."""
        self.move_to(CANCELLED)
        self.finished_at = now
        self.error = f"parent {parent_id} {outcome}"

    def run_now(self, now: float) -> None:
        """Make a scheduled or retrying job due now instead of at its ``run_at``."""
        if self.status not in DEFERRED:  # the lifecycle also lets a finished job become pending (a re-run)
            raise InvalidTransition(self.id, self.status, PENDING)
        self.move_to(PENDING)
        self.run_at = None
        self.ready_at = now

    def give_up(self, reason: str, now: float) -> None:
        """Give a scheduled or retrying job up by hand: it is dead, with ``reason`` as its error, and never runs."""
        if self.status not in DEFERRED:  # the lifecycle also lets a running job die (lost runs)
            raise InvalidTransition(self.id, self.status, DEAD)
        self.move_to(DEAD)
        self.run_at = None
        self.finished_at = now
        self.error = reason

    def requeue(self, now: float) -> None:
        """Re-run a failed or dead job by hand, with a fresh set of attempts (history is kept)."""
        if self.status not in RERUNNABLE:  # the lifecycle also lets a running job become pending (a release)
            raise InvalidTransition(self.id, self.status, PENDING)
        self.move_to(PENDING)
        self.ready_at = now
        self.attempts = 0
        self.finished_at = None
        self.error = None

    def _end_attempt(self, outcome: str, error: str | None, now: float, traceback: str | None = None) -> None:
        self.lease_id = None
        self.lease_expires_at = None
        if self.history and self.history[-1].finished_at is None:  # replaced, not changed: snapshots share it
            self.history[-1] = self.history[-1].ended(now, outcome, error, traceback)

    def same_request(self, other: Job) -> bool:
        """Whether ``other`` asks for the same work (idempotent re-submission)."""
        return (
            self.type == other.type
            and same_json(self.payload, other.payload)
            and self.queue == other.queue
            and self.priority == other.priority
            and self.max_attempts == other.max_attempts
            and self.timeout == other.timeout
            and self.depends_on == other.depends_on
            and self.on_parent_failure == other.on_parent_failure
            and self.workflow == other.workflow
        )

    def log_fields(self, before: JobStatus | None = None) -> dict[str, Any]:
        """Structured fields for a log line about this job (JSON logs carry them as keys)."""
        fields: dict[str, Any] = {"job_id": self.id, "job_type": self.type, "queue": self.queue}
        fields["status"] = self.status.value
        if before is not None:
            fields["from_status"] = before.value
        if self.attempts:
            fields["attempt"] = self.attempts
        if self.status in FAILING and self.error is not None:
            fields["error"] = self.error
        return fields

    def to_dict(self) -> dict[str, Any]:
        """The public JSON view of the job (timestamps in RFC 3339 UTC)."""
        return {
            "id": self.id,
            "type": self.type,
            "queue": self.queue,
            "priority": self.priority,
            "status": self.status.value,
            "payload": self.payload,
            "result": self.result,
            "error": self.error,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "timeout": self.timeout,
            "progress": self.progress,
            "progress_note": self.progress_note,
            "created_at": rfc3339(self.created_at),
            "run_at": rfc3339(self.run_at),
            "next_run_at": rfc3339(self.next_run_at),
            "started_at": rfc3339(self.started_at),
            "finished_at": rfc3339(self.finished_at),
            "lease_expires_at": rfc3339(self.lease_expires_at),
            "history": [attempt.to_dict() for attempt in self.history],
            "owner": self.owner,
            "unique": self.unique_view(),
            "concurrency": self.concurrency_view(),
            "workflow": self.workflow_view(),
        }

    def unique_view(self) -> dict[str, Any] | None:
        if self.unique_key is None:
            return None
        return {"key": self.unique_key, "scope": self.unique_scope, "until": rfc3339(self.unique_until)}

    def concurrency_view(self) -> dict[str, Any] | None:
        if self.concurrency_key is None:
            return None
        return {"key": self.concurrency_key, "limit": self.concurrency_limit}

    def workflow_view(self) -> dict[str, Any] | None:
        if not self.depends_on and self.workflow is None:
            return None
        return {
            "id": self.workflow,
            "depends_on": list(self.depends_on),
            "on_parent_failure": self.on_parent_failure,
            "parents_left": self.parents_left,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        """Rebuild a job from its public JSON view (as a remote worker or client receives it)."""
        return cls(
            id=data["id"],
            type=data["type"],
            payload=data.get("payload"),
            queue=data.get("queue", "default"),
            priority=data.get("priority", 0),
            max_attempts=data.get("max_attempts", 1),
            timeout=data.get("timeout"),
            status=JobStatus(data["status"]),
            result=data.get("result"),
            error=data.get("error"),
            attempts=data.get("attempts", 0),
            created_at=parse_rfc3339(data.get("created_at")) or 0.0,
            run_at=parse_rfc3339(data.get("run_at")),
            started_at=parse_rfc3339(data.get("started_at")),
            finished_at=parse_rfc3339(data.get("finished_at")),
            lease_id=data.get("lease_id"),
            lease_expires_at=parse_rfc3339(data.get("lease_expires_at")),
            progress=data.get("progress"),
            progress_note=data.get("progress_note"),
            history=[Attempt.from_dict(a) for a in data.get("history", [])],
            owner=data.get("owner"),
            **_unique_fields(data.get("unique")),
            concurrency_key=(data.get("concurrency") or {}).get("key"),
            concurrency_limit=(data.get("concurrency") or {}).get("limit"),
            **_workflow_fields(data.get("workflow")),
        )


def _unique_fields(unique: dict[str, Any] | None) -> dict[str, Any]:
    if not unique:
        return {}
    until = parse_rfc3339(unique["until"])
    return {"unique_key": unique["key"], "unique_scope": unique["scope"], "unique_until": until}


def _workflow_fields(workflow: dict[str, Any] | None) -> dict[str, Any]:
    if not workflow:
        return {}
    return {
        "workflow": workflow["id"],
        "depends_on": tuple(workflow["depends_on"]),
        "on_parent_failure": workflow["on_parent_failure"],
        "parents_left": workflow["parents_left"],
    }


def _make_snapshot() -> Callable[[Job], Job]:
    """A copier generated from Job's field table: a plain attribute copy per field (about 0.2 µs a job)."""
    lines = ["def snapshot(job, _new=object.__new__, _cls=Job):", "    copy = _new(_cls)"]
    lines += [f"    copy.{f.name} = job.{f.name}" for f in fields(Job)]
    lines += ["    copy.history = list(job.history)", "    return copy"]
    namespace: dict[str, Any] = {"Job": Job}
    exec("\n".join(lines), namespace)  # source built above from the field names only
    return namespace["snapshot"]  # type: ignore[no-any-return]


_snapshot = _make_snapshot()
