"""The storage seam: the one interface workers, the API and every feature use.

Claiming work is an atomic *lease*: ``lease()`` moves ready jobs to
``processing`` under a fresh, unguessable lease id with a deadline. Only the
holder of the current lease id may heartbeat, complete, fail or release the job;
a stale id gets :class:`~jobq.errors.StaleLease` and changes nothing. This is
what lets several processes share one store.

What every backend promises (tests/test_store_contract.py checks each):

- **Snapshots.** Every job a store returns is a copy: changing it never changes
  the stored job (see :meth:`Job.snapshot`).
- **Durable answers.** A verb returns once its change is durable (on a durable
  backend), and a read never shows a change that is not durable yet.
- **Events after commit.** Subscribers (``subscribe``) get each status change of
  a job and each log line once it is durable, in the order they were made; they
  are the only thing ``?wait=``, watches, log streams and drain accounting listen to. Local listeners
  (``add_listener``) see each transition as it is made, exactly once, for metrics
  and logs.
- **One set of rules.** What a failed, lost or released run means is decided by
  :mod:`jobq.lifecycle`; backends only persist the outcome.
- **The store's clock.** Due times and lease deadlines are read from
  ``options.clock`` (injectable: tests drive a fake one). Left unset, a backend
  uses its own: this process's on an in-process store, the database's on a
  shared one, so nodes whose clocks differ still agree on what is due.
- **Nodes.** Each jobq process using the store is a node, named by ``node``; it
  keeps a card about itself in the store (``announce``), which lapses ``ttl``
  seconds after it was written by the store's clock, so ``nodes`` lists the
  processes heard from lately, wherever they run.
- **Schedules.** A schedule's definition and the latest tick it fired are kept
  apart: redefining a schedule keeps its ticks, and ``fired`` only ever moves a
  schedule's latest tick forward, so nodes noting the same tick agree.
- **Flow control** (:mod:`jobq.flow`). A queue's flow (``set_flow``) limits how many of
  its jobs, and of each ``concurrency_key``, run at once and how often they start; in a
  queue with a flow or keyed jobs, keys take turns round-robin. Only ``lease`` applies
  them, atomically with the claim, so they hold across every node and worker; a job held
  back stays pending (no attempt used) and holds back no other key.
- **Workflows** (:mod:`jobq.workflow`). A job added with ``depends_on`` is stored
  ``waiting``, with ``parents_left`` the parents that have not finished (a parent that has
  finished already is counted by the rules at once, so the job may be stored pending, or
  cancelled). When a job ends (settled, cancelled, expired, given up, or deleted unfinished),
  every child still waiting on it is resolved by :func:`jobq.workflow.count_off` *in the same
  atomic write*, cascading down, so no crash leaves a child waiting on a finished parent,
  and each parent counts off each child exactly once however many nodes finish parents at
  once. ``add(together=True)`` stores every new job of the call, or none.
- **Housekeeping** (``housekeep``) promotes due jobs, expires lapsed leases and
  purges by retention whether or not anyone leases, and is safe to run in
  several processes at once on a shared store.
"""

from __future__ import annotations

import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from jobq.errors import InvalidTransition, JobNotFound, JobqError
from jobq.flow import FlowState, QueueFlow
from jobq.job import CANCELLED, WAITING, Job, JobStatus
from jobq.lifecycle import RELEASED, Rules, Settlement
from jobq.retry import RetryPolicy
from jobq.workflow import outcome


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
    max_waiting: int = 1_000_000  # waiting (waiting/pending/scheduled/retrying) jobs before enqueue is refused
    max_lost_runs: int = 3  # lost runs in a row (lease expired, jobq stopped) after which a job is dead
    clock: Callable[[], float] | None = None  # the store's clock, in Unix seconds (None: the backend's own)

    @property
    def rules(self) -> Rules:
        return Rules(self.retry, self.max_lost_runs)


@dataclass(slots=True)  # not frozen: a frozen dataclass pays for every field set, per job
class Added:
    """The outcome of adding one job: the stored job, and whether it is new.

    Not created and ``duplicate``: the job holds the unique key the new one asked for (it is
    another job); not created otherwise: a job of the same id was added before.
    """

    job: Job
    created: bool
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class StoredSchedule:
    """A schedule as a store keeps it: its definition (JSON-able, jobq/schedules.py reads it) and
    the latest tick it fired (Unix time; None before the first)."""

    name: str
    definition: dict[str, Any]
    fired: float | None


@dataclass(frozen=True, slots=True)
class Housekeeping:
    """What one round of housekeeping did."""

    promoted: int  # scheduled or retrying jobs that fell due
    expired: list[Job]  # jobs whose lease ran out, as they are now
    purged: int  # finished jobs past retention, deleted


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Counts for ``GET /stats``."""

    by_status: dict[str, int]
    by_queue: dict[str, dict[str, int]]
    paused: list[str]
    next_ready_since: dict[str, float] = field(default_factory=dict)  # queue -> when its next job could first run

    @property
    def waiting(self) -> int:
        return sum(self.by_status.get(s, 0) for s in ("waiting", "pending", "scheduled", "retrying"))


@dataclass(slots=True)  # not frozen: made for each change, and frozen costs __init__ a call per field
class JobEvent:
    """A job's status changed, durably: the job as it now is (a snapshot), and its status before."""

    job: Job
    before: JobStatus


@dataclass(slots=True)  # not frozen, like JobEvent
class LogEvent:
    """A line was added to a job's log, durably."""

    job_id: str
    at: float
    message: str


StoreEvent = JobEvent | LogEvent

ChangeListener = Callable[[Job, JobStatus], None]
"""Called as ``listener(job, before)`` as a job moves from status ``before`` (local, before commit)."""

Subscriber = Callable[[StoreEvent], None]
"""Called with each durable change: a status change or a log line (after commit)."""


def _cancel_waiting(job: Job, now: float) -> None:
    if job.status not in WAITING:
        raise InvalidTransition(job.id, job.status, CANCELLED)
    job.cancel(now)


def _nothing() -> None:
    return None


class Store(ABC):
    """A job store. Every backend passes the same conformance suite (tests/test_store_contract.py)."""

    def __init__(self, options: StoreOptions | None = None) -> None:
        self.options = options or StoreOptions()
        self.rules = self.options.rules
        self.clock = self.options.clock or time.time  # what this process reads as now (see StoreOptions.clock)
        self.listeners: list[ChangeListener] = []
        self.subscribers: list[Subscriber] = []
        self.node = uuid.uuid4().hex[:12]  # this process, among the nodes that use the store

    def add_listener(self, listener: ChangeListener) -> None:
        """Call ``listener(job, before)`` on the event loop as each job changes status here.

        Local and immediate (before the change is durable), exactly once per
        transition made by this process: for metrics and logs. It must be quick
        and must not raise: it runs inside store operations.
        """
        self.listeners.append(listener)

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber(event)`` on the event loop for each durable change; returns an unsubscribe.

        A status change arrives as a JobEvent, a log line as a LogEvent, once committed and
        in the order they were made. ``?wait=``, watches, log streams and drain accounting
        listen here. It must be quick and must not raise.
        """
        self.subscribers.append(subscriber)
        return lambda: self.subscribers.remove(subscriber) if subscriber in self.subscribers else None

    def follow(self, job_id: str) -> Callable[[], None]:
        """Ask for the events of this job whatever node changes it; returns a call that stops asking.

        Subscribers always get the changes made through this store. A shared store also
        delivers other nodes' changes, for the jobs someone follows (a ``?wait=``, a
        watch, a log stream) and the jobs leased through it (so a cancel made on
        another node stops their handlers here): only those, since fetching every
        job every node changes would cost each node the whole cluster's load.
        """
        return _nothing

    def _publish(self, events: Sequence[StoreEvent]) -> None:
        for subscriber in list(self.subscribers):
            for event in events:
                subscriber(event)

    @property
    def reports_totals(self) -> bool:
        """Whether this process reports the store-wide gauges (queue depths, oldest job, ...).

        Always, on a store of one process. On a shared store, one node at a time does (the
        others report only their own figures), so summing a gauge over the nodes is right.
        """
        return True

    @property
    def loading(self) -> bool:
        """Whether a durable store that just opened is still reading its jobs back (it serves meanwhile)."""
        return False

    @property
    def unavailable(self) -> str | None:
        """Why the store cannot serve (a dead writer, say), or None while it can; ``/health`` reports it."""
        return None

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect, create or migrate the schema, and recover after a crash."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Flush everything accepted and release resources."""

    # -- producers ---------------------------------------------------------
    @abstractmethod
    async def add(self, jobs: Sequence[Job], *, together: bool = False) -> list[Added | Exception]:
        """Store new jobs; returns one outcome per job, in order.

        With ``together`` (a workflow), the new jobs are stored all in one atomic write or none
        are: then every new job's outcome is the error.

        The store takes the jobs it is given (a caller builds them for the call and does not
        change them after); the outcomes hold snapshots. A job whose unique key is held by
        another (``Job.holds_unique_key``, by the store's clock) is not added: its outcome is
        that job, as a duplicate. A job whose id already exists is
        not stored again: its outcome is the existing job with ``created=False``. When the
        store is full, the outcome is a :class:`~jobq.errors.QueueFull` (or a storage error).
        A job is durable when this returns, on a durable backend.
        """

    @abstractmethod
    async def get(self, job_id: str) -> Job | None:
        """The job with this id, or None."""

    @abstractmethod
    async def get_many(self, job_ids: Sequence[str]) -> list[Job]:
        """The jobs with these ids that exist, in the order asked."""

    async def parents(self, job_id: str) -> list[dict[str, Any]]:
        """How each parent of a job ended (:func:`jobq.workflow.outcome`), in its depends_on order (a parent
        deleted since is left out); what a running handler reads (``ctx.parents()``). JobNotFound if no job."""
        job = await self.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return [outcome(parent) for parent in await self.get_many(job.depends_on)] if job.depends_on else []

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
    async def heartbeat_many(self, leases: Sequence[tuple[str, str]], lease_seconds: float) -> list[Job | JobqError]:
        """Extend many leases (``(job_id, lease_id)`` pairs) in one write; one answer each, in order.

        An answer is the job, or StaleLease if that lease is not the job's current one.
        """

    async def heartbeat(self, job_id: str, lease_id: str, lease_seconds: float) -> Job:
        """Extend one lease; raises StaleLease if ``lease_id`` is not the current one."""
        [answer] = await self.heartbeat_many([(job_id, lease_id)], lease_seconds)
        if isinstance(answer, JobqError):
            raise answer
        return answer

    @abstractmethod
    async def settle_many(self, settlements: Sequence[Settlement]) -> list[Job | JobqError]:
        """Complete or fail many leased jobs in one write; one answer each, in order.

        A completion is idempotent for the same lease: completing again with the
        lease that completed the job answers the completed job (with the first
        result) instead of StaleLease. A failure follows :func:`jobq.lifecycle.fail_attempt`.
        """

    async def complete(self, job_id: str, lease_id: str, result: Any) -> Job:
        """Finish one leased job with its result (see ``settle_many``)."""
        return await self._settle_one(Settlement(job_id, lease_id, result))

    async def fail(
        self,
        job_id: str,
        lease_id: str,
        error: str,
        *,
        retry_in: float | None = None,
        outcome: str = "failed",
        traceback: str | None = None,
    ) -> Job:
        """Record one failed attempt: retried under the retry policy (or after ``retry_in``), or given up."""
        return await self._settle_one(Settlement(job_id, lease_id, None, error, retry_in, outcome, traceback))

    async def _settle_one(self, settlement: Settlement) -> Job:
        [answer] = await self.settle_many([settlement])
        if isinstance(answer, JobqError):
            raise answer
        return answer

    @abstractmethod
    async def release(self, job_id: str, lease_id: str, reason: str = RELEASED) -> Job:
        """End a leased run without a result: handed back by its worker (``released``), or lost
        (``undelivered``: the answer that leased it never reached a worker). See jobq.lifecycle."""

    @abstractmethod
    async def set_progress(self, job_id: str, lease_id: str | None, fraction: float, note: str | None) -> None:
        """Record how far a leased job is (StaleLease unless ``lease_id`` holds it); ``note`` is storable text."""

    # -- operators ---------------------------------------------------------
    async def cancel(self, job_id: str) -> Job:
        """Cancel a waiting or running job; InvalidTransition if it already finished."""
        return await self._change(job_id, lambda job, now: job.cancel(now))

    async def cancel_waiting(self, job_id: str) -> Job:
        """Cancel a job only while it waits (pending, scheduled or retrying); InvalidTransition once it runs."""
        return await self._change(job_id, _cancel_waiting)

    async def requeue(self, job_id: str) -> Job:
        """Run a failed or dead job again."""
        return await self._change(job_id, lambda job, now: job.requeue(now))

    async def run_now(self, job_id: str) -> Job:
        """Make a scheduled or retrying job due now; InvalidTransition in any other state."""
        return await self._change(job_id, lambda job, now: job.run_now(now))

    async def give_up(self, job_id: str, reason: str) -> Job:
        """Make a scheduled or retrying job dead with ``reason`` (storable text) as its error; it never runs.

        InvalidTransition in any other state.
        """
        return await self._change(job_id, lambda job, now: job.give_up(reason, now))

    @abstractmethod
    async def _change(self, job_id: str, change: Callable[[Job, float], None]) -> Job:
        """Apply an operator's ``change(job, now)`` to one stored job and answer it once that is durable.

        JobNotFound for an unknown id; the change raises InvalidTransition for a status it does not
        allow, and then nothing is written.
        """

    @abstractmethod
    async def delete(self, job_id: str) -> Job:
        """Delete a job that is not running, with its logs; returns it as it was.

        JobNotFound for an unknown id; InvalidTransition for a running job (cancel it first).
        """

    @abstractmethod
    async def peek(self, queue: str) -> Job | None:
        """The job a worker leasing from ``queue`` would get next (None if none is ready); nothing is leased."""

    @abstractmethod
    async def append_log(self, job_id: str, message: str, lease_id: str | None = None) -> None:
        """Add a line (storable text) to a job's log; with ``lease_id``, StaleLease unless that lease holds the job."""

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
        workflow: str | None = None,
        parent: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """Jobs newest first, and the cursor of the next page (None on the last).

        Only ``owner``'s, ``workflow``'s, or the children of ``parent`` (the jobs that list it in
        ``depends_on``), when given.
        """

    @abstractmethod
    async def set_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume a queue (a paused queue accepts jobs but runs none)."""

    @abstractmethod
    async def clear(self, queue: str) -> int:
        """Delete a queue's waiting jobs; returns how many."""

    # -- flow control --------------------------------------------------------
    @abstractmethod
    async def set_flow(self, queue: str, flow: QueueFlow | None) -> None:
        """Set (None: remove) ``queue``'s limits; the next lease applies them, on every node."""

    @abstractmethod
    async def flows(self) -> dict[str, FlowState]:
        """Every queue with a flow set, by name, with what runs and when each rate allows a start."""

    # -- nodes -------------------------------------------------------------
    @abstractmethod
    async def announce(self, card: dict[str, Any], ttl: float) -> None:
        """Keep this node's ``card`` (JSON-able) in the store until ``ttl`` seconds from now, replacing the last."""

    @abstractmethod
    async def withdraw(self) -> None:
        """Take this node's card away (it stops)."""

    @abstractmethod
    async def nodes(self) -> list[dict[str, Any]]:
        """The cards of the nodes whose card has not lapsed, each with ``seen_at``: when it was written."""

    # -- schedules ---------------------------------------------------------
    @abstractmethod
    async def put_schedule(self, name: str, definition: dict[str, Any], *, new: bool = False) -> bool:
        """Keep schedule ``name`` with this definition (JSON-able), replacing the last; its fired tick stays.

        With ``new``, only if there is no schedule of that name (atomically, across nodes). Whether it was kept.
        """

    @abstractmethod
    async def delete_schedule(self, name: str) -> bool:
        """Forget schedule ``name``; False if there was none."""

    @abstractmethod
    async def schedules(self) -> list[StoredSchedule]:
        """Every schedule, by name."""

    @abstractmethod
    async def fired(self, name: str, tick: float) -> None:
        """Note that schedule ``name`` fired its tick ``tick``: kept if later than the one noted (else nothing)."""

    # -- housekeeping ------------------------------------------------------
    async def housekeep(self) -> Housekeeping:
        """One round of every periodic duty: promote due jobs, expire lapsed leases, purge."""
        promoted = await self.promote_due()
        expired = await self.expire_leases()
        return Housekeeping(promoted, expired, await self.purge())

    @abstractmethod
    async def promote_due(self) -> int:
        """Make scheduled and retrying jobs whose time has come pending; returns how many."""

    @abstractmethod
    async def expire_leases(self) -> list[Job]:
        """End every run whose lease ran out as lost (see jobq.lifecycle); returns those jobs as they now are."""

    @abstractmethod
    async def purge(self) -> int:
        """Delete finished jobs past the retention bounds; returns how many."""
