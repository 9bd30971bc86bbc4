"""The storage seam: the one interface workers, the API and every feature use.

Claiming work is an atomic *lease*: ``lease()`` moves ready jobs to
``processing`` under a fresh lease id with a deadline. Only the holder of the
current lease id may heartbeat, complete or fail the job; a stale id gets
:class:`~jobq.errors.StaleLease` and changes nothing. A lease that runs out puts
the job back under its retry policy (``expire_leases``). This is what lets
several processes share one store.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from jobq.job import Job, JobStatus
from jobq.retry import RetryPolicy


@dataclass(frozen=True, slots=True)
class Retention:
    """How long finished jobs stay readable: whichever bound is hit first."""

    max_age: float = 7 * 24 * 3600.0
    max_count: int = 100_000


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """Settings every backend honours."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    retention: Retention = field(default_factory=Retention)
    max_waiting: int = 1_000_000  # waiting (pending/scheduled/retrying) jobs before enqueue is refused


@dataclass(slots=True)  # not frozen: a frozen dataclass pays for every field set, per job
class Added:
    """The outcome of adding one job: the stored job, and whether it is new."""

    job: Job
    created: bool


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Counts for ``GET /stats``."""

    by_status: dict[str, int]
    by_queue: dict[str, dict[str, int]]
    paused: list[str]
    next_ready_since: dict[str, float] = field(default_factory=dict)  # queue -> when its next job could first run

    @property
    def waiting(self) -> int:
        return sum(self.by_status.get(s, 0) for s in ("pending", "scheduled", "retrying"))


ChangeListener = Callable[[Job, JobStatus], None]
"""Called as ``listener(job, before)`` after a stored job moves from status ``before``."""


class Store(ABC):
    """A job store. Every backend passes the same conformance suite (tests/test_store_contract.py)."""

    options: StoreOptions
    listeners: list[ChangeListener]

    def add_listener(self, listener: ChangeListener) -> None:
        """Call ``listener`` on the event loop after every status change of a stored job.

        It must be quick and must not raise: it runs inside store operations.
        Waiting for a job (``?wait=``), watch streams and metrics hang off this.
        """
        self.listeners.append(listener)

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect, create or migrate the schema, and recover after a crash."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Flush everything accepted and release resources."""

    # -- producers ---------------------------------------------------------
    @abstractmethod
    async def add(self, jobs: Sequence[Job]) -> list[Added | Exception]:
        """Store new jobs; returns one outcome per job, in order.

        A job whose id already exists is not stored again: its outcome is the
        existing job with ``created=False``. When the store is full, the outcome
        is a :class:`~jobq.errors.QueueFull` (or a storage error). A job is
        durable when this returns, on a durable backend.
        """

    @abstractmethod
    async def get(self, job_id: str) -> Job | None:
        """The job with this id, or None."""

    # -- consumers ---------------------------------------------------------
    @abstractmethod
    async def lease(
        self,
        max_jobs: int,
        lease_seconds: float,
        *,
        queues: Sequence[str] | None = None,
        worker: str | None = None,
        wait: float = 0.0,
    ) -> list[Job]:
        """Atomically claim up to ``max_jobs`` ready jobs (priority, then FIFO).

        ``queues=None`` means every queue. Paused queues are skipped. With
        ``wait > 0``, waits up to that long for work to appear.
        """

    @abstractmethod
    async def heartbeat(self, job_id: str, lease_id: str, lease_seconds: float) -> Job:
        """Extend a lease; raises StaleLease if ``lease_id`` is not the current one."""

    @abstractmethod
    async def complete(self, job_id: str, lease_id: str, result: Any) -> Job:
        """Finish a leased job with its result.

        Idempotent for the same lease: completing again with the lease that completed
        the job answers the completed job (with the first result) instead of StaleLease.
        """

    @abstractmethod
    async def fail(
        self, job_id: str, lease_id: str, error: str, *, retry_in: float | None = None, outcome: str = "failed"
    ) -> Job:
        """Record a failed attempt: retried under the retry policy (or after ``retry_in``), or given up."""

    @abstractmethod
    async def release(self, job_id: str, lease_id: str) -> Job:
        """Hand a leased job back unfinished; it becomes pending again at its place."""

    @abstractmethod
    async def set_progress(self, job_id: str, lease_id: str | None, fraction: float, note: str | None) -> None:
        """Record how far a running job is."""

    # -- operators ---------------------------------------------------------
    @abstractmethod
    async def cancel(self, job_id: str) -> Job:
        """Cancel a waiting or running job; InvalidTransition if it already finished."""

    @abstractmethod
    async def requeue(self, job_id: str) -> Job:
        """Run a failed or dead job again."""

    @abstractmethod
    async def append_log(self, job_id: str, message: str) -> None:
        """Add a line to a job's log."""

    @abstractmethod
    async def logs(self, job_id: str) -> list[dict[str, Any]]:
        """A job's log lines, oldest first."""

    @abstractmethod
    async def stats(self) -> StoreStats:
        """Counts by status and by queue."""

    @abstractmethod
    async def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        queue: str | None = None,
        job_type: str | None = None,
        owner: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """Jobs newest first (only ``owner``'s, when given), and the cursor of the next page (None on the last)."""

    @abstractmethod
    async def set_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume a queue (a paused queue accepts jobs but runs none)."""

    @abstractmethod
    async def clear(self, queue: str) -> int:
        """Delete a queue's waiting jobs; returns how many."""

    # -- housekeeping ------------------------------------------------------
    @abstractmethod
    async def expire_leases(self) -> list[Job]:
        """Fail every job whose lease ran out (worker crashed or hung); returns them."""

    @abstractmethod
    async def purge(self) -> int:
        """Delete finished jobs past the retention bounds; returns how many."""
