"""The in-process store: every job in dicts and heaps, the fastest backend.

It is also the index behind the SQLite store, which subclasses it and turns
the ``_persist*`` hooks into group-committed writes. Nothing here survives a
restart.

Jobs handed out are snapshots (``Job.snapshot``); the stored objects never
leave. Each change is persisted through ``_journal``, which also holds back
the change's events until its write is committed, and records the write as
in flight so that ``get`` waits for it: a reader never sees what is not durable.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import heapq
import itertools
import logging
import os
import sys
from collections import Counter, deque
from collections.abc import Callable, Collection, Sequence
from typing import Any

from jobq.errors import (
    InvalidTransition,
    JobNotFound,
    JobqError,
    QueueFull,
    StaleLease,
    StoreUnavailable,
    UnstorableValue,
)
from jobq.flow import NO_FLOW, UNKEYED, FlowState, QueueFlow
from jobq.job import (
    CANCELLED,
    COMPLETED,
    DEAD,
    DEFERRED,
    PENDING,
    PROCESSING,
    TERMINAL,
    WAITING,
    Attempt,
    Job,
    JobStatus,
)
from jobq.lifecycle import RELEASED, completed_again, end_run, lease_expired, lose_run, release_run, settle_run
from jobq.store.base import (
    Added,
    JobEvent,
    LogEvent,
    Settlement,
    Store,
    StoredSchedule,
    StoreEvent,
    StoreOptions,
    StoreStats,
)
from jobq.store.loading import Loading, wanted
from jobq.store.ready import FlowReady, QueueReady
from jobq.workflow import DELETED, count_off, parent_outcome

# A parent a waiting job names that is not in the file had ended and been counted off before the stop (and then
# been purged or deleted): a delete of an unfinished parent writes its children's cascade before the delete.
COUNTED_BEFORE = COMPLETED.value

log = logging.getLogger("jobq.store")

MAX_LOG_LINES = 1000
MAX_SCANNED = 20_000  # jobs one listing page reads at most (a page of a selective filter may hold fewer)
COMPACT_AFTER = 1024  # stale timer entries (cancelled or cleared jobs) tolerated before the heap is rebuilt

# What a write changes, so a durable backend writes only that (see SQLiteStore._persist). SETTLE is the end of
# leased runs: a completion changes a few columns (COMPLETE), any other end the whole state (STATE).
ADD, STATE, LEASE, HEARTBEAT, PROGRESS = "add", "state", "lease", "heartbeat", "progress"
SETTLE, COMPLETE = "settle", "complete"


def seq_of(job: Job) -> int:
    return job.seq


# A million queued jobs mostly differ only in id, seq and creation time: what they have alike
# is held once. Attempts replace the history list rather than append to it (Job.begin_attempt),
# and nothing in jobq changes a payload in place (see Job.snapshot), so these are never changed.
NO_HISTORY: list[Attempt] = ()  # type: ignore[assignment] # empty and immutable: an append would raise
EMPTY_PAYLOAD: dict[str, Any] = {}


def compact(job: Job) -> Job:
    """Share what a stored job has in common with others: its names, an empty payload or history."""
    intern = sys.intern
    job.type = intern(job.type)
    job.queue = intern(job.queue)
    if job.owner is not None:
        job.owner = intern(job.owner)
    if not job.history:
        job.history = NO_HISTORY
    payload = job.payload
    if not payload and type(payload) is dict:
        job.payload = EMPTY_PAYLOAD
    return job


async def _committed(commit: asyncio.Future[None] | None) -> None:
    """Wait for a write's commit, when the store has one (a durable store)."""
    if commit is not None:
        await commit


class LeaseIds:
    """Unguessable lease ids (96 bits from the OS's random source each): holding one is what lets a
    worker settle a job. The bytes are drawn a few thousand at a time, not one system call per lease."""

    ID_BYTES = 12
    BATCH = 1024  # ids per draw

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def next(self) -> str:
        at = self._at
        if at + self.ID_BYTES > len(self._pool):
            self._pool, at = os.urandom(self.ID_BYTES * self.BATCH), 0
        self._at = at + self.ID_BYTES
        return self._pool[at : at + self.ID_BYTES].hex()


class MemoryStore(Store):
    """Jobs in process memory: the fastest backend, for one process; nothing survives a restart."""

    def __init__(self, options: StoreOptions | None = None) -> None:
        super().__init__(options)
        self._jobs: dict[str, Job] = {}
        self._order: list[Job] = []  # every stored job by seq, oldest first (entries of deleted jobs go stale)
        self._order_stale = 0
        self._ready: dict[str, QueueReady | FlowReady] = {}  # queue -> its pending jobs (stale entries: _ready_job)
        self._deferred: list[tuple[float, int, Job]] = []  # heap(run_at, seq, job)
        self._deferred_stale = 0  # heap entries of jobs cancelled or cleared before they fell due
        self._leased: dict[str, Job] = {}
        self._finished: deque[tuple[float, Job]] = deque()  # (finished_at, job) in finishing order, for retention
        self._counts: dict[str, dict[JobStatus, int]] = {}  # queue -> status -> jobs
        self._waiting = 0
        self._terminal = 0
        self._paused: set[str] = set()
        self._logs: dict[str, list[tuple[float, str]]] = {}
        self._seq = itertools.count(1)
        self._lease_ids = LeaseIds()
        self._waiters: set[asyncio.Future[None]] = set()
        self._adding: dict[str, asyncio.Future[None]] = {}  # job id -> the commit that makes it durable
        self._inflight: dict[str, asyncio.Future[None]] = {}  # job id -> its latest write not yet committed
        self._log_inflight: dict[str, asyncio.Future[None]] = {}  # job id -> its latest log line not yet committed
        self._unpublished: list[StoreEvent] = []  # changes made since the last write was queued
        self._loading: Loading | None = None  # while a durable store is still reading its jobs back
        self._loaded: list[Job] = []  # the jobs read back in chunks, by seq, while loading
        self._requeued = 0  # jobs whose run a stop cut short, pending again as they were read back
        self._card: tuple[dict[str, Any], float] | None = None  # this node's card and when it lapses
        self._schedules: dict[str, StoredSchedule] = {}
        self._unique: dict[str, list[Job]] = {}  # unique key -> the jobs stored with it (one at most holds it)
        self._flows: dict[str, QueueFlow] = {}  # queue -> its limits (jobq.flow)
        self._running: dict[tuple[str, str], int] = {}  # (queue, concurrency_key) -> its jobs running
        self._queue_tats: dict[str, float] = {}  # queue -> its rate's tat
        self._key_tats: dict[tuple[str, str], float] = {}  # (queue, concurrency_key) -> its rate's tat
        self._next_turn: float | None = None  # the earliest a rate lets a held job start (seen by the last take)
        self._dependants: dict[str, list[Job]] = {}  # parent id -> the jobs waiting on it, not yet counted off
        self._children: dict[str, dict[str, Job]] = {}  # parent id -> every stored job that depends on it
        self._workflows: dict[str, dict[str, Job]] = {}  # workflow id -> its stored jobs
        self._cascaded: list[Job] = []  # jobs a parent's end moved, written with the next write (_journal)

    # -- durability hooks (no-ops here; the SQLite store commits them) ---------
    def _persist(self, kind: str, jobs: Sequence[Job]) -> asyncio.Future[None] | None:
        """Write what ``kind`` says changed in these jobs; returns a future for the commit, if any.

        A commit's future (this hook's and the others') refuses cancellation, so it is awaited
        as it is: a caller cancelled while it waits is cancelled once the commit has landed,
        and never cancels the write (cheaper than a shield, which costs a turn of the loop).
        """
        return None

    def _persist_delete(self, job_ids: Sequence[str]) -> asyncio.Future[None] | None:
        return None

    def _persist_log(self, job_id: str, at: float, message: str) -> asyncio.Future[None] | None:
        return None

    def _persist_paused(self, queue: str, paused: bool) -> asyncio.Future[None] | None:
        return None

    def _persist_flow(self, queue: str) -> asyncio.Future[None] | None:
        """Write ``queue``'s flow as it now is (gone, if removed)."""
        return None

    async def _fetch(self, job_ids: Sequence[str]) -> None:
        """Read these jobs back from disk now, if they are stored there (a durable store that is loading)."""

    async def _known(self, job_ids: Collection[str]) -> None:
        """While loading: bring these jobs into memory first, so no answer misses a job not read back yet."""
        if self._loading is not None:
            missing = [job_id for job_id in job_ids if job_id not in self._jobs]
            if missing:
                await self._fetch(missing)
            # a waiting job's count follows its parents: those not read back yet come first
            jobs = self._jobs
            parents = {
                parent_id
                for job_id in job_ids
                if (job := jobs.get(job_id)) is not None and job.status is JobStatus.WAITING
                for parent_id in job.depends_on
                if parent_id not in jobs
            }
            if parents and self._loading is not None:
                await self._fetch(list(parents))
                for parent_id in parents - jobs.keys():  # not in the file either
                    self._resolve(parent_id, COUNTED_BEFORE)
                if self._cascaded:
                    self._journal(())

    @property
    def loading(self) -> bool:
        """Whether jobs are still being read back (a durable store serves meanwhile)."""
        return self._loading is not None

    async def loaded(self) -> None:
        """Wait until every job is read back (raises StoreUnavailable if reading failed); at once when none is."""
        loading = self._loading
        if loading is not None:
            await loading.finished()

    def _journal(self, jobs: Sequence[Job], kind: str = STATE) -> asyncio.Future[None] | None:
        """Persist a change of ``jobs``; its events (and any made since the last write) follow its commit.

        The jobs a parent's end moved (``_cascaded``) go in the same write as that end: atomically.
        """
        if self._cascaded and kind in (STATE, SETTLE):
            jobs = [*jobs, *self._cascaded]
            self._cascaded = []
        future = self._persist(kind, jobs)
        events: Sequence[StoreEvent] = self._unpublished
        if events:
            self._unpublished = []
        else:
            events = ()  # not the live list: later changes belong to later writes
        if future is None:
            if events:
                self._publish(events)
            return None
        inflight = self._inflight
        for job in jobs:
            inflight[job.id] = future
        future.add_done_callback(functools.partial(self._landed, jobs, events))
        return future

    def _landed(self, jobs: Sequence[Job], events: Sequence[StoreEvent], future: asyncio.Future[None]) -> None:
        failed = future.cancelled() or future.exception() is not None
        if failed and not isinstance(future.exception(), UnstorableValue):
            # Not durable yet: readers keep waiting on it (and get its error) until the write that
            # catches up replaces it, and its events go out with that write.
            self._unpublished[:0] = events
            return
        # Committed, or set aside for good (a value the store cannot hold: no later write would land it).
        inflight = self._inflight
        for job in jobs:
            if inflight.get(job.id) is future:
                del inflight[job.id]
        if events:
            self._publish(events)

    async def _commit(self, jobs: Sequence[Job], kind: str = STATE) -> list[Job]:
        """Persist a change of ``jobs`` and answer them once durable, as snapshots."""
        future = self._journal(jobs, kind)
        if future is not None:
            await future  # a commit refuses cancellation: a cancelled caller never cancels it
        return [await self._current(job) for job in jobs]

    async def _durable(self, job_id: str) -> None:
        """Wait until every write of this job queued so far is committed (raises the storage error of one that failed).

        Another change may follow while one commits (a worker leases the job just re-run, say):
        a reader waits for that one too, so what it sees is never ahead of the disk.
        """
        while (future := self._inflight.get(job_id)) is not None:
            await future  # a landed write's _landed callback ran first and unlisted it
            if self._inflight.get(job_id) is future:
                return  # never, by the above; a guard against waiting on one write forever

    async def _current(self, job: Job) -> Job:
        """A snapshot of ``job`` once everything written about it is durable."""
        if job.id in self._inflight:
            await self._durable(job.id)
        return job.snapshot()

    # -- bookkeeping -------------------------------------------------------
    def _read_back(self, jobs: Sequence[Job], logs: Sequence[tuple[str, float, str]], cursor: int | None) -> None:
        """Index jobs read back from disk (a chunk, in seq order up to ``cursor``, or read on demand).

        They were counted at open, so only a run a stop cut short changes a count here: it
        is a lost run (jobq.lifecycle), written back at once. A job in memory already, or
        deleted since open, is skipped: memory is ahead of the disk read.
        """
        loading = self._loading
        if loading is None:
            return
        if cursor is not None:
            loading.cursor = cursor
        stored, gone = self._jobs, loading.gone
        now = self.clock()
        fresh: dict[str, Job] = {}
        recovered = []
        for job in jobs:
            if job.id in stored or job.id in gone:
                continue
            status = job.status
            if status is PENDING or status is PROCESSING:
                loading.read_one(job)
            stored[job.id] = job
            fresh[job.id] = job
            if job.unique_key is not None:
                self._unique.setdefault(job.unique_key, []).append(job)
            if job.depends_on or job.workflow is not None:
                self._index(job)
            if status is PROCESSING:
                lose_run(job, "recovered", now, self.rules)
                if job.status is DEAD:
                    log.error("job %s: %s", job.id, job.error, extra=job.log_fields())
                self._recount(job, PROCESSING)
                recovered.append(job)
            self._place(job)
            if status is JobStatus.WAITING:
                self._link_read_back(job, now)
            elif job.finished and job.id in self._dependants:  # children read back before it wait on it
                self._resolve(job.id, job.status.value)
        if cursor is None:
            self._order.extend(fresh.values())  # put in seq order once every job is in
        else:
            self._loaded.extend(fresh.values())
        for job_id, at, message in logs:
            if job_id in fresh:
                self._logs.setdefault(job_id, []).append((at, message))
        loading.read += len(fresh)
        for job in loading.releasable():
            self._place(job)
        if recovered or self._cascaded:
            self._requeued += sum(1 for job in recovered if job.status is PENDING)
            self._journal(recovered)

    def _loaded_all(self) -> None:
        """The last chunk is in: order what was read with what came meanwhile, and stop loading."""
        loading = self._loading
        if loading is None:
            return
        self._order = sorted([*self._loaded, *self._order], key=seq_of)  # two sorted runs: a merge
        self._loaded = []
        self._finished = deque(sorted(self._finished, key=lambda entry: entry[0]))
        self._loading = None
        for job in loading.release_all():
            self._place(job)
        for parent_id in [parent_id for parent_id in self._dependants if parent_id not in self._jobs]:
            self._resolve(parent_id, COUNTED_BEFORE)
        if self._cascaded:
            self._journal(())
        loading.finish()

    def _recount(self, job: Job, before: JobStatus) -> None:
        """Move a job's count from ``before`` to its status, telling no one (a change found, not made)."""
        counts = self._counts[job.queue]
        counts[before] -= 1
        counts[job.status] += 1
        self._waiting += (job.status in WAITING) - (before in WAITING)
        self._terminal += (job.status in TERMINAL) - (before in TERMINAL)

    def _counted(self, job: Job, before: JobStatus | None) -> None:
        """Keep the per-status counters right after ``job`` moved from ``before``; tell listeners."""
        after = job.status
        if before is after:
            return
        counts = self._counts.get(job.queue) or self._counts.setdefault(job.queue, dict.fromkeys(JobStatus, 0))
        if before is not None:
            counts[before] -= 1
            self._waiting -= before in WAITING
            self._terminal -= before in TERMINAL
            if before is PROCESSING:
                self._leased.pop(job.id, None)
        counts[after] += 1
        self._waiting += after in WAITING
        self._terminal += after in TERMINAL
        if (before is PROCESSING or after is PROCESSING) and (
            job.concurrency_key is not None or job.queue in self._flows
        ):
            self._flow_counted(job, after is PROCESSING)
        if before is not None:
            for listener in self.listeners:
                listener(job, before)
            if self.subscribers:
                self._unpublished.append(JobEvent(job.snapshot(), before))

    def _flow_counted(self, job: Job, started: bool) -> None:
        """A job of a flow-controlled queue started or stopped running: count it by key; a stop may let a
        held job start, so idle leases look again."""
        key = job.concurrency_key
        if key is not None:
            running = self._running
            slot = (job.queue, key)
            count = running.get(slot, 0) + (1 if started else -1)
            if count > 0:
                running[slot] = count
            else:
                running.pop(slot, None)
        if not started:
            self._wake()

    def _place(self, job: Job) -> None:
        """Put a job where its status says it belongs (ready queue, timer heap, leases, finished)."""
        status = job.status
        if status is PENDING:
            if self._loading is not None and self._loading.holds(job):
                return  # unread jobs of its queue may come first: it joins once they are in
            ready = self._ready.get(job.queue)
            if ready is None:
                keyed = job.concurrency_key is not None or job.queue in self._flows
                ready = self._ready[job.queue] = FlowReady() if keyed else QueueReady()
            elif job.concurrency_key is not None and type(ready) is QueueReady:
                ready = self._take_turns(job.queue)
            ready.push(job)
            self._wake()
        elif status is PROCESSING:
            self._leased[job.id] = job
        elif status in TERMINAL:
            self._finished.append((job.finished_at or 0.0, job))
        elif status is JobStatus.WAITING:
            return  # its parents' ends move it (_resolve)
        else:  # scheduled or retrying
            heapq.heappush(self._deferred, (job.run_at or 0.0, job.seq, job))
            self._wake()  # a waiter may need to shorten its sleep to this run_at

    def _moved(self, job: Job, before: JobStatus) -> None:
        self._counted(job, before)
        self._place(job)
        if before in DEFERRED and job.status not in WAITING:  # left the timer heap early (cancelled)
            self._deferred_stale += 1
            self._compact_deferred()
        if self._dependants and job.status in TERMINAL and job.id in self._dependants:
            self._resolve(job.id, job.status.value)

    def _forget(self, job: Job) -> None:
        del self._jobs[job.id]
        if job.depends_on or job.workflow is not None:
            self._unindex(job)
        if job.id in self._dependants:
            self._resolve(job.id, DELETED)
        if job.unique_key is not None and job.unique_key in self._unique:
            others = [same for same in self._unique[job.unique_key] if same is not job]
            if others:
                self._unique[job.unique_key] = others
            else:
                del self._unique[job.unique_key]
        if self._loading is not None:
            self._loading.gone.add(job.id)
        self._order_stale += 1
        if self._order_stale > COMPACT_AFTER and self._order_stale * 2 > len(self._order):
            self._order = [entry for entry in self._order if self._live(entry)]
            self._order_stale = 0
        counts = self._counts[job.queue]
        counts[job.status] -= 1
        if not any(counts.values()):  # a queue name nobody uses any more keeps nothing
            del self._counts[job.queue]
        self._waiting -= job.status in WAITING
        self._terminal -= job.status in TERMINAL
        if job.status in DEFERRED:
            self._deferred_stale += 1
        self._leased.pop(job.id, None)
        self._logs.pop(job.id, None)
        self._inflight.pop(job.id, None)
        self._log_inflight.pop(job.id, None)

    def _compact_deferred(self) -> None:
        """Rebuild the timer heap once most of it is stale, so cancelled jobs (and their payloads) go."""
        if self._deferred_stale < COMPACT_AFTER or self._deferred_stale * 2 < len(self._deferred):
            return
        self._deferred = [entry for entry in self._deferred if self._due_entry(entry)]
        heapq.heapify(self._deferred)
        self._deferred_stale = 0

    def _due_entry(self, entry: tuple[float, int, Job]) -> bool:
        """Whether a timer entry still stands for its job (not cancelled, cleared, or re-timed)."""
        run_at, _, job = entry
        return job.status in DEFERRED and job.run_at == run_at and self._live(job)

    def _live(self, job: Job) -> bool:
        """Whether an index entry's job is still stored (not cleared, purged or replaced by a re-added id)."""
        return self._jobs.get(job.id) is job

    def _ready_job(self, job: Job) -> bool:
        """Whether a ready-queue entry can run: still pending (not leased or cancelled) and still stored."""
        return job.status is PENDING and self._jobs.get(job.id) is job

    def _take_turns(self, queue: str) -> FlowReady:
        """From now on, serve ``queue``'s ready jobs by key, round-robin (it has a flow, or keyed jobs)."""
        ready = self._ready.get(queue)
        if isinstance(ready, FlowReady):
            return ready
        flowing = self._ready[queue] = FlowReady(() if ready is None else ready.jobs(self._ready_job))
        return flowing

    def _wake(self) -> None:
        if self._waiters:
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._waiters.clear()

    def _job(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def _leased_job(self, job_id: str, lease_id: str | None) -> Job:
        job = self._job(job_id)
        if job.status is not PROCESSING or job.lease_id != lease_id:
            raise StaleLease(f"lease {lease_id!r} does not hold job {job_id!r} (it is {job.status})")
        return job

    # -- producers ---------------------------------------------------------
    async def add(self, jobs: Sequence[Job], *, together: bool = False) -> list[Added | Exception]:
        if self._loading is not None:
            await self._known([job.id for job in jobs])  # a client-chosen id may name a job not read back yet
            if any(job.unique_key is not None for job in jobs):
                await self.loaded()  # the holder of a key may not be read back yet
            parents = {parent for job in jobs for parent in job.depends_on}
            if parents:
                await self._known(parents)
        if together and (refused := self._refuse_together(jobs)) is not None:
            return [refused] * len(jobs)
        outcomes: list[Added | Exception] = []
        fresh: list[Job] = []
        commits: dict[str, asyncio.Future[None]] = {}  # job id -> the commit its outcome waits for
        now = self.clock()
        linked: list[Job] = []
        for job in jobs:
            existing = self._jobs.get(job.id)
            if existing is None and job.unique_key is not None:
                existing = next(
                    (held for held in self._unique.get(job.unique_key, ()) if held.holds_unique_key(now)), None
                )
            if existing is not None:
                outcomes.append(Added(existing, created=False, duplicate=existing.id != job.id))
                if (adding := self._adding.get(existing.id)) is not None:
                    commits[existing.id] = adding  # a replay is answered once the original is durable
            elif self._waiting + len(linked) >= self.options.max_waiting:
                outcomes.append(QueueFull(f"the queue holds {self._waiting} waiting jobs, its limit"))
            else:  # the store takes the job it is given (see Store.add)
                compact(job)
                job.seq = next(self._seq)
                self._jobs[job.id] = job
                if job.unique_key is not None:
                    self._unique.setdefault(job.unique_key, []).append(job)
                self._order.append(job)
                if job.depends_on or job.workflow is not None:
                    self._index(job)
                if job.depends_on:
                    linked.append(job)  # counted once every job of the call is stored: a parent may come later
                else:
                    self._counted(job, None)
                fresh.append(job)
                outcomes.append(Added(job, created=True))
        if linked:
            self._link_added(linked, now)
        future = self._journal(fresh, ADD) if fresh else None
        if future is not None:
            self._adding.update((job.id, future) for job in fresh)
            commits.update((job.id, future) for job in fresh)
        else:
            for job in fresh:
                self._place(job)
        if commits:
            try:
                for commit in set(commits.values()):  # a commit refuses cancellation: the caller's never cancels it
                    with contextlib.suppress(Exception):  # read back per job below
                        await commit
            except asyncio.CancelledError:
                if future is not None:  # finish the bookkeeping when the commit lands, caller or not
                    future.add_done_callback(functools.partial(self._added, fresh))
                raise
            if future is not None:
                # Placed here, not in a done-callback, so the accepting request answers
                # before any worker can lease the job: its 202 shows it pending.
                self._added(fresh, future)
        return [self._outcome(o, commits) for o in outcomes]

    def _refuse_together(self, jobs: Sequence[Job]) -> QueueFull | None:
        """The refusal of a together add that would pass max_waiting (then none of its jobs is stored)."""
        new = sum(1 for job in {job.id: job for job in jobs}.values() if job.id not in self._jobs)
        if self._waiting + new > self.options.max_waiting:
            return QueueFull(f"the queue holds {self._waiting} waiting jobs: {new} more pass its limit")
        return None

    def _added(self, fresh: list[Job], future: asyncio.Future[None]) -> None:
        """Settle the jobs of a finished commit; runs once per job (a second call finds nothing to do)."""
        committed = not future.cancelled() and future.exception() is None
        for job in fresh:
            if self._adding.get(job.id) is not future:
                continue  # settled already, or its id was cleared and added again meanwhile
            del self._adding[job.id]
            if not self._live(job):
                continue  # cleared while its commit was in flight
            if not committed:
                self._forget(job)
            elif job.status in WAITING or job.finished:  # waiting, or born cancelled (a parent had failed)
                self._place(job)  # (a job cancelled meanwhile gets a second retention entry: a stale one)

    @staticmethod
    def _outcome(outcome: Added | Exception, commits: dict[str, asyncio.Future[None]]) -> Added | Exception:
        if not isinstance(outcome, Added):
            return outcome
        future = commits.get(outcome.job.id)
        if future is not None:
            if future.cancelled():
                return StoreUnavailable(f"storing job {outcome.job.id!r} was interrupted")
            if future.exception() is not None:
                return future.exception()  # type: ignore[return-value]
        outcome.job = outcome.job.snapshot()  # the answer is a copy, like every job a store hands out
        return outcome

    async def get(self, job_id: str) -> Job | None:
        if self._loading is not None:
            await self._known([job_id])
        if job_id in self._inflight:
            await self._durable(job_id)
        job = self._jobs.get(job_id)
        return None if job is None else job.snapshot()

    async def get_many(self, job_ids: Sequence[str]) -> list[Job]:
        if self._loading is not None:
            await self._known(job_ids)
        found = [job for job_id in job_ids if (job := self._jobs.get(job_id)) is not None]
        return [await self._current(job) for job in found]

    # -- workflows -----------------------------------------------------------
    def _index(self, job: Job) -> None:
        """List a job under its parents and its workflow (for list_jobs)."""
        for parent_id in job.depends_on:
            self._children.setdefault(parent_id, {})[job.id] = job
        if job.workflow is not None:
            self._workflows.setdefault(job.workflow, {})[job.id] = job

    def _unindex(self, job: Job) -> None:
        for parent_id in job.depends_on:
            children = self._children.get(parent_id)
            if children is not None and children.get(job.id) is job:
                del children[job.id]
                if not children:
                    del self._children[parent_id]
        members = None if job.workflow is None else self._workflows.get(job.workflow)
        if members is not None and members.get(job.id) is job:
            del members[job.id]
            if not members:
                del self._workflows[job.workflow]  # type: ignore[arg-type]

    def _wait_on(self, job: Job, may_come: Collection[str] | None) -> tuple[int, tuple[str, str] | None]:
        """Note the parents ``job`` waits for; returns how many, and the first that ended badly (id, outcome).

        A parent not stored counts as deleted, unless its id is in ``may_come`` (added in the same call;
        None: any, while jobs are still being read back).
        """
        left = 0
        failed: tuple[str, str] | None = None
        for parent_id in job.depends_on:
            parent = self._jobs.get(parent_id)
            coming = parent is None and (may_come is None or parent_id in may_come)
            outcome = None if coming else parent_outcome(parent)
            if outcome is None:
                self._dependants.setdefault(parent_id, []).append(job)
                left += 1
            elif outcome != COMPLETED.value and job.on_parent_failure != "run" and failed is None:
                failed = (parent_id, outcome)
        return left, failed

    def _link_added(self, jobs: list[Job], now: float) -> None:
        """Set the status of new jobs with parents (waiting, or at once pending or cancelled), and count them."""
        coming = {job.id for job in jobs}
        for job in jobs:
            left, failed = self._wait_on(job, coming)
            job.parents_left = left
            if failed is not None or left:
                job.status = JobStatus.WAITING
            if failed is not None:
                job.parent_failed(*failed, now)
            self._counted(job, None)
        for job in jobs:  # a parent of the call cancelled at birth: its children of the call follow
            if job.status is CANCELLED and job.id in self._dependants:
                self._resolve(job.id, CANCELLED.value)
        self._cascaded = [job for job in self._cascaded if job.id not in coming]  # written with the add

    def _link_read_back(self, job: Job, now: float) -> None:
        """Count the parents of a waiting job read back (counts are not stored: they follow the parents)."""
        left, failed = self._wait_on(job, None if self._loading is not None else ())
        job.parents_left = left
        if failed is not None:
            job.parent_failed(*failed, now)
        elif not left:
            job.parents_finished(now)
        else:
            return
        self._moved(job, JobStatus.WAITING)
        self._cascaded.append(job)

    def _resolve(self, parent_id: str, outcome: str) -> None:
        """A parent ended as ``outcome``: count it off each job waiting on it, cascading (iteratively) down."""
        now = self.clock()
        work = [(parent_id, outcome)]
        while work:
            parent_id, outcome = work.pop()
            for child in self._dependants.pop(parent_id, ()):
                if self._jobs.get(child.id) is not child or not count_off(child, parent_id, outcome, now):
                    continue
                self._counted(child, JobStatus.WAITING)
                self._place(child)
                self._cascaded.append(child)
                if child.status is CANCELLED and child.id in self._dependants:
                    work.append((child.id, CANCELLED.value))

    # -- consumers ---------------------------------------------------------
    async def lease(
        self,
        max_jobs: int,
        lease_seconds: float,
        *,
        queues: Sequence[str] | None = None,
        worker: str | None = None,
        wait: float = 0.0,
        types: Collection[str] | None = None,
    ) -> list[Job]:
        take = functools.partial(self._take, max_jobs, lease_seconds, queues, worker, types)
        jobs = take()
        if self._loading is not None and len(jobs) < max_jobs:
            jobs = await self._take_while_loading(jobs, max_jobs, lease_seconds, queues, worker, types)
        if not jobs and wait > 0:
            jobs = await self._wait_and_take(take, wait)
        if not jobs:
            return jobs
        future = self._journal(jobs, LEASE)
        if future is not None:
            try:  # durable before any worker runs it, so a crash shows (and counts) the run
                await future
            except asyncio.CancelledError:  # nobody will run these: hand them straight back
                self._hand_back(jobs)
                raise
        return [await self._current(job) for job in jobs]

    async def _take_while_loading(
        self,
        jobs: list[Job],
        max_jobs: int,
        lease_seconds: float,
        queues: Sequence[str] | None,
        worker: str | None,
        types: Collection[str] | None,
    ) -> list[Job]:
        """Take more as chunks come in while wanted queues still have unread jobs: "nothing ready"
        must not be the answer while ready jobs are still being read back."""
        try:
            while (loading := self._loading) is not None and len(jobs) < max_jobs:
                if not wanted(queues, loading, self._paused):
                    break
                await loading.next_chunk()
                jobs += self._take(max_jobs - len(jobs), lease_seconds, queues, worker, types)
        except BaseException:
            self._hand_back(jobs)  # nobody will run them
            raise
        return jobs

    async def _wait_and_take(self, take: Callable[[], list[Job]], wait: float) -> list[Job]:
        """Wait up to ``wait`` seconds for ``take()`` to find jobs (woken as jobs arrive or fall due)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        jobs: list[Job] = []
        while not jobs:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            if self._deferred:  # wake up when the next scheduled job falls due
                remaining = min(remaining, max(self._deferred[0][0] - self.clock(), 0.0) + 0.001)
            if self._next_turn is not None:  # or when a rate lets a held job start
                remaining = min(remaining, max(self._next_turn - self.clock(), 0.0) + 0.001)
            waiter = loop.create_future()
            self._waiters.add(waiter)
            try:
                async with asyncio.timeout(remaining):
                    await waiter
            except TimeoutError:
                pass
            finally:
                self._waiters.discard(waiter)
            jobs = take()
        return jobs

    def _hand_back(self, jobs: Sequence[Job]) -> None:
        """Release leased jobs nobody received (their lease call was cancelled): they run next, using no attempt."""
        now = self.clock()
        back = []
        for job in jobs:
            if job.status is PROCESSING and self._live(job):
                release_run(job, now)
                self._moved(job, PROCESSING)
                back.append(job)
        if back:
            self._journal(back)

    def _take(
        self,
        max_jobs: int,
        lease_seconds: float,
        queues: Sequence[str] | None,
        worker: str | None,
        types: Collection[str] | None,
    ) -> list[Job]:
        now = self.clock()
        if self._deferred and self._deferred[0][0] <= now:
            self._promote(now)
        ready = self._ready
        names = list(ready) if queues is None else queues
        readies = [(name, r) for name in names if name not in self._paused and (r := ready.get(name))]
        taken: list[Job] = []
        deadline = now + lease_seconds
        usable = self._ready_job
        loading = self._loading
        held: set[str] = set()  # flow-controlled queues whose every ready job is held back now
        self._next_turn = None
        while readies and len(taken) < max_jobs:
            for name, queue_ready in readies:  # round-robin across queues, one job each turn
                if loading is not None and not loading.may_take(name, queue_ready.peek(usable, types)):
                    continue  # a job not read back yet may come first: wait for it (see _take_while_loading)
                if type(queue_ready) is QueueReady:
                    job = queue_ready.pop(usable, types)
                else:
                    job = self._flow_pop(name, queue_ready, types, now)  # type: ignore[arg-type]
                    if job is None:
                        held.add(name)
                if job is None:
                    if not queue_ready:  # nothing left at all: a queue name nobody uses keeps nothing
                        ready.pop(name, None)
                    continue
                job.begin_attempt(self._lease_ids.next(), deadline, worker, now)
                self._counted(job, PENDING)
                self._leased[job.id] = job
                taken.append(job)
                if len(taken) >= max_jobs:
                    break
            readies = [
                (name, r) for name, r in readies if r and name not in held and (types is None or r.peek(usable, types))
            ]
            if loading is not None:
                readies = [(name, r) for name, r in readies if loading.may_take(name, r.peek(usable, types))]
        return taken

    def _flow_pop(self, queue: str, ready: FlowReady, types: Collection[str] | None, now: float) -> Job | None:
        """The next job of a flow-controlled queue its limits let start now, its start counted (None: none may)."""
        flow = self._flows.get(queue, NO_FLOW)
        if flow.concurrency is not None and self._counts[queue][PROCESSING] >= flow.concurrency:
            return None
        if flow.rate is not None:
            start_at = flow.rate.next_start(self._queue_tats.get(queue), now)
            if start_at > now:
                self._held_until(start_at)
                return None
        running, key_tats = self._running, self._key_tats

        def admit(key: str, job: Job) -> bool:
            limit = flow.key_limit(key, job.concurrency_limit)
            if limit is not None and running.get((queue, key), 0) >= limit:
                return False
            rate = flow.key_rate_of(key)
            if rate is not None:
                start_at = rate.next_start(key_tats.get((queue, key)), now)
                if start_at > now:
                    self._held_until(start_at)
                    return False
            return True

        job = ready.pop(self._ready_job, types, admit)
        if job is not None:
            if flow.rate is not None:
                self._queue_tats[queue] = flow.rate.start(self._queue_tats.get(queue), now)
            key = job.concurrency_key or UNKEYED
            rate = flow.key_rate_of(key)
            if rate is not None:
                key_tats[(queue, key)] = rate.start(key_tats.get((queue, key)), now)
        return job

    def _held_until(self, at: float) -> None:
        if self._next_turn is None or at < self._next_turn:
            self._next_turn = at

    def _promote(self, now: float) -> list[Job]:
        """Move due scheduled and retrying jobs to pending (queues their write, unawaited)."""
        deferred = self._deferred
        promoted = []
        while deferred and deferred[0][0] <= now:
            entry = heapq.heappop(deferred)
            if self._due_entry(entry):
                job = entry[2]
                before = job.status
                job.move_to(PENDING)
                job.ready_at = entry[0]  # it could run from its due time
                self._moved(job, before)
                promoted.append(job)
            else:
                self._deferred_stale = max(self._deferred_stale - 1, 0)
        if promoted:
            self._journal(promoted)
        return promoted

    async def heartbeat_many(self, leases: Sequence[tuple[str, str]], lease_seconds: float) -> list[Job | JobqError]:
        if self._loading is not None:
            await self._known([job_id for job_id, _ in leases])
        now = self.clock()
        answers: list[Job | JobqError] = []
        extended: list[Job] = []
        for job_id, lease_id in leases:
            try:
                job = self._leased_job(job_id, lease_id)
            except JobqError as exc:
                answers.append(exc)
                continue
            job.lease_expires_at = now + lease_seconds
            extended.append(job)
            answers.append(job)
        if extended:
            await self._commit(extended, HEARTBEAT)
        return [await self._current(answer) if isinstance(answer, Job) else answer for answer in answers]

    async def settle_many(self, settlements: Sequence[Settlement]) -> list[Job | JobqError]:
        if self._loading is not None:
            await self._known([item.id for item in settlements])
        now = self.clock()
        answers: list[Job | JobqError] = []
        settled: list[Job] = []
        for item in settlements:
            if item.error is None and completed_again(self._jobs.get(item.id), item.lease_id):
                answers.append(self._jobs[item.id])  # a repeat (say, after a lost answer): the first result stands
                continue
            try:
                job = self._leased_job(item.id, item.lease_id)
            except JobqError as exc:
                answers.append(exc)
                continue
            settle_run(job, item, now, self.rules)
            self._moved(job, PROCESSING)
            settled.append(job)
            answers.append(job)
        if settled:
            future = self._journal(settled, SETTLE)
            if future is not None:
                await future
        # every answer (a repeated complete's too) once what it shows is durable
        return [await self._current(answer) if isinstance(answer, Job) else answer for answer in answers]

    async def release(self, job_id: str, lease_id: str, reason: str = RELEASED) -> Job:
        if self._loading is not None:
            await self._known([job_id])
        job = self._leased_job(job_id, lease_id)
        end_run(job, reason, self.clock(), self.rules)
        self._moved(job, PROCESSING)
        [answer] = await self._commit([job])
        return answer

    async def set_progress(self, job_id: str, lease_id: str | None, fraction: float, note: str | None) -> None:
        if self._loading is not None:
            await self._known([job_id])
        job = self._leased_job(job_id, lease_id)
        job.progress = min(max(float(fraction), 0.0), 1.0)
        job.progress_note = note
        self._journal([job], PROGRESS)  # not awaited: a reader of the job waits for it (see get)

    # -- operators ---------------------------------------------------------
    async def _change(self, job_id: str, change: Callable[[Job, float], None]) -> Job:
        """Apply an operator's change to one job (it raises InvalidTransition for a change its status does not
        allow), and answer the job once the change is durable."""
        if self._loading is not None:
            await self._known([job_id])
        job = self._job(job_id)
        before = job.status
        change(job, self.clock())
        if before in DEFERRED and job.status is PENDING:  # run now: its timer entry stands for nothing
            self._deferred_stale += 1
        self._moved(job, before)
        [answer] = await self._commit([job])
        return answer

    async def delete(self, job_id: str) -> Job:
        if self._loading is not None:
            await self._known([job_id])
        job = self._job(job_id)
        if job.status is PROCESSING:
            raise InvalidTransition(job_id, job.status, "deleted (cancel it first)")
        if job_id in self._adding:  # its add is still committing: answer once it is durable, then delete
            with contextlib.suppress(Exception):
                await self._adding[job_id]
            return await self.delete(job_id)
        self._forget(job)
        self._compact_deferred()
        cascaded = self._journal(()) if self._cascaded else None  # first: see COUNTED_BEFORE
        future = self._persist_delete([job_id])
        for commit in (cascaded, future):
            if commit is not None:
                await commit
        return job.snapshot()

    async def peek(self, queue: str) -> Job | None:
        while (loading := self._loading) is not None:
            ready = self._ready.get(queue)
            if loading.may_take(queue, None if ready is None else ready.peek(self._ready_job)):
                break
            await loading.next_chunk()  # a job not read back yet may come first
        ready = self._ready.get(queue)
        job = None if ready is None else ready.peek(self._ready_job)
        return None if job is None else await self._current(job)

    async def append_log(self, job_id: str, message: str, lease_id: str | None = None) -> None:
        if self._loading is not None:
            await self._known([job_id])
        if lease_id is None:
            self._job(job_id)
        else:
            self._leased_job(job_id, lease_id)
        lines = self._logs.setdefault(job_id, [])
        if len(lines) < MAX_LOG_LINES:
            at = self.clock()
            lines.append((at, message))
            event = LogEvent(job_id, at, message)
            future = self._persist_log(job_id, at, message)
            if future is None:
                self._publish([event])
            else:  # not awaited: a reader of the logs waits for it
                self._log_inflight[job_id] = future
                future.add_done_callback(functools.partial(self._log_committed, event))

    def _log_committed(self, event: LogEvent, future: asyncio.Future[None]) -> None:
        if self._log_inflight.get(event.job_id) is future:
            del self._log_inflight[event.job_id]
        if not future.cancelled() and future.exception() is None:
            self._publish([event])

    async def logs(self, job_id: str) -> list[dict[str, Any]]:
        if self._loading is not None:
            await self._known([job_id])
        self._job(job_id)
        pending = self._log_inflight.get(job_id)
        if pending is not None:
            with contextlib.suppress(JobqError):  # a line that failed to commit is written again later
                await pending
        return [{"at": at, "message": message} for at, message in self._logs.get(job_id, [])]

    async def stats(self) -> StoreStats:
        await self.loaded()  # the oldest ready job of a queue may not be read back yet
        by_status: Counter[str] = Counter()
        by_queue: dict[str, dict[str, int]] = {}
        for queue, counts in self._counts.items():
            for status, count in counts.items():
                if count:
                    by_status[status.value] += count
                    by_queue.setdefault(queue, {})[status.value] = count
        return StoreStats(dict(by_status), by_queue, sorted(self._paused), self._next_ready_since())

    def _next_ready_since(self) -> dict[str, float]:
        """For each queue with a ready job: since when the job next in line could run."""
        since: dict[str, float] = {}
        for queue, ready in self._ready.items():
            job = ready.peek(self._ready_job)
            if job is not None:
                since[queue] = job.ready_at or job.created_at
        return since

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
        await self.loaded()
        # The running jobs are indexed by lease, a workflow's and a parent's by those: listing them walks the
        # index, not every job.
        if parent is not None:
            order = sorted(self._children.get(parent, {}).values(), key=seq_of)
        elif workflow is not None:
            order = sorted(self._workflows.get(workflow, {}).values(), key=seq_of)
        elif status is PROCESSING:
            order = sorted(self._leased.values(), key=seq_of)
        else:
            order = self._order
        start = bisect.bisect_left(order, int(cursor), key=seq_of) if cursor else len(order)  # jobs before the cursor
        page: list[Job] = []
        scanned = 0
        for index in range(start - 1, -1, -1):
            job = order[index]
            if not self._live(job):
                continue
            scanned += 1
            if scanned > MAX_SCANNED:  # a selective filter: end the page here, the cursor reads on
                return page, str(job.seq + 1)
            if (
                (status and job.status is not status)
                or (queue and job.queue != queue)
                or (job_type and job.type != job_type)
                or (owner is not None and job.owner != owner)
                or (workflow is not None and job.workflow != workflow)
            ):
                continue
            if len(page) == limit:
                return page, str(page[-1].seq)
            page.append(job.snapshot())
        return page, None

    async def set_paused(self, queue: str, paused: bool) -> None:
        if paused:
            self._paused.add(queue)
        else:
            self._paused.discard(queue)
            self._wake()
        await _committed(self._persist_paused(queue, paused))

    async def set_flow(self, queue: str, flow: QueueFlow | None) -> None:
        # the rates start afresh: a tat kept from another rate would be read with this one's period
        self._queue_tats.pop(queue, None)
        self._key_tats = {slot: tat for slot, tat in self._key_tats.items() if slot[0] != queue}
        if flow is None:
            self._flows.pop(queue, None)
        else:
            self._flows[queue] = flow
            self._take_turns(queue)
        self._wake()  # a limit raised or removed may let held jobs start
        await _committed(self._persist_flow(queue))

    async def flows(self) -> dict[str, FlowState]:
        now = self.clock()
        states = {}
        for queue, flow in sorted(self._flows.items()):
            counts = self._counts.get(queue)
            queue_tat = self._queue_tats.get(queue)
            states[queue] = FlowState(
                flow=flow,
                running=0 if counts is None else counts[PROCESSING],
                keys_running={key: n for (q, key), n in self._running.items() if q == queue},
                next_start=None if flow.rate is None or queue_tat is None else flow.rate.next_start(queue_tat, now),
                keys_next_start={
                    key: at
                    for (q, key), tat in self._key_tats.items()
                    if q == queue and flow.key_rate is not None and (at := flow.key_rate.next_start(tat, now)) > now
                },
            )
        return states

    async def clear(self, queue: str) -> int:
        await self.loaded()
        ready = self._ready.pop(queue, None)
        doomed = {job.id: job for job in ready.jobs(self._ready_job)} if ready is not None else {}
        doomed.update(
            (job.id, job) for entry in self._deferred if (job := entry[2]).queue == queue and self._due_entry(entry)
        )
        doomed.update(
            (job_id, job)
            for job_id in self._adding
            if (job := self._jobs[job_id]).queue == queue and job.status in WAITING
        )
        if self._counts.get(queue, {}).get(JobStatus.WAITING):  # jobs waiting on parents are in no index
            doomed.update(
                (job.id, job) for job in self._jobs.values() if job.queue == queue and job.status is JobStatus.WAITING
            )
        for job in doomed.values():
            if self._live(job):  # a cascade from one forgotten here may have cancelled another
                self._forget(job)
        self._compact_deferred()
        cascaded = self._journal(()) if self._cascaded else None  # first: see COUNTED_BEFORE
        future = self._persist_delete(list(doomed))
        for commit in (cascaded, future):
            if commit is not None:
                await commit
        return len(doomed)

    # -- housekeeping ------------------------------------------------------
    # -- nodes: one process uses this store, so the only card is its own ----------
    async def announce(self, card: dict[str, Any], ttl: float) -> None:
        now = self.clock()
        self._card = ({**card, "seen_at": now}, now + ttl)

    async def withdraw(self) -> None:
        self._card = None

    async def nodes(self) -> list[dict[str, Any]]:
        if self._card is None or self._card[1] <= self.clock():
            return []
        return [dict(self._card[0])]

    # -- schedules -------------------------------------------------------------
    def _persist_schedule(self, name: str) -> asyncio.Future[None] | None:
        """Write schedule ``name`` as it now is (gone, if deleted); a future for the commit, if any."""
        return None

    async def put_schedule(self, name: str, definition: dict[str, Any], *, new: bool = False) -> bool:
        known = self._schedules.get(name)
        if new and known is not None:
            return False
        self._schedules[name] = StoredSchedule(name, dict(definition), known.fired if known else None)
        await _committed(self._persist_schedule(name))
        return True

    async def delete_schedule(self, name: str) -> bool:
        if self._schedules.pop(name, None) is None:
            return False
        await _committed(self._persist_schedule(name))
        return True

    async def schedules(self) -> list[StoredSchedule]:
        return [self._schedules[name] for name in sorted(self._schedules)]

    async def fired(self, name: str, tick: float) -> None:
        known = self._schedules.get(name)
        if known is not None and (known.fired is None or tick > known.fired):
            self._schedules[name] = StoredSchedule(name, known.definition, tick)
            await _committed(self._persist_schedule(name))

    async def promote_due(self) -> int:
        promoted = self._promote(self.clock())
        if promoted:
            for job in promoted:
                await self._durable(job.id)
        return len(promoted)

    async def expire_leases(self) -> list[Job]:
        now = self.clock()
        expired = [job for job in self._leased.values() if lease_expired(job, now)]
        for job in expired:
            lose_run(job, "lease-expired", now, self.rules)
            self._moved(job, PROCESSING)
        return await self._commit(expired) if expired else []

    async def purge(self) -> int:
        now = self.clock()  # a rate's tat in the past holds nothing back: forget it
        self._key_tats = {slot: tat for slot, tat in self._key_tats.items() if tat > now}
        if self._loading is not None:
            return 0  # the oldest finished jobs may not be read back yet: the first round after the load purges
        retention = self.options.retention
        oldest_kept = self.clock() - retention.max_age
        finished = self._finished
        doomed: list[str] = []
        while finished and (self._terminal > retention.max_count or finished[0][0] < oldest_kept):
            finished_at, job = finished.popleft()
            # an entry is stale if the job was re-run (and may have finished again since)
            if job.status in TERMINAL and (job.finished_at or 0.0) == finished_at and self._live(job):
                self._forget(job)
                doomed.append(job.id)
        if doomed:
            future = self._persist_delete(doomed)
            if future is not None:
                await future
        return len(doomed)
