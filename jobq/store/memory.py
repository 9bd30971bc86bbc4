"""The in-process store: every job in dicts and heaps, the fastest backend.

It is also the index behind the SQLite store, which subclasses it and turns
the ``_journal*`` hooks into group-committed writes. Nothing here survives a
restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import math
import os
import time
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

from jobq.errors import InvalidTransition, JobNotFound, QueueFull, StaleLease, StoreUnavailable
from jobq.job import TERMINAL, WAITING, Job, JobStatus
from jobq.store.base import Added, Store, StoreOptions, StoreStats
from jobq.store.ready import ReadyQueue

MAX_LOG_LINES = 1000
MAX_SCANNED = 20_000  # jobs one listing page reads at most (a page of a selective filter may hold fewer)
RERUNNABLE = frozenset({JobStatus.FAILED, JobStatus.DEAD})  # what requeue accepts


class MemoryStore(Store):
    """Jobs in process memory: the fastest backend, for one process; nothing survives a restart."""

    def __init__(self, options: StoreOptions | None = None) -> None:
        self.options = options or StoreOptions()
        self.listeners = []
        self._jobs: dict[str, Job] = {}
        self._ready: dict[str, ReadyQueue] = {}  # queue -> its pending jobs (entries may be stale: see _ready_job)
        self._deferred: list[tuple[float, int, Job]] = []  # heap(run_at, seq, job)
        self._leased: dict[str, Job] = {}
        self._finished: deque[tuple[float, Job]] = deque()  # (finished_at, job) in finishing order, for retention
        self._counts: dict[str, dict[JobStatus, int]] = {}  # queue -> status -> jobs
        self._waiting = 0
        self._terminal = 0
        self._paused: set[str] = set()
        self._logs: dict[str, list[tuple[float, str]]] = {}
        self._seq = itertools.count(1)
        self._lease_ids = itertools.count(1)
        self._lease_prefix = os.urandom(6).hex()
        self._waiters: set[asyncio.Future[None]] = set()
        self._adding: dict[str, asyncio.Future[None]] = {}  # job id -> the commit that makes it durable

    # -- durability hooks (no-ops here; the SQLite store commits them) ---------
    def _journal(self, jobs: Sequence[Job]) -> asyncio.Future[None] | None:
        """Persist these jobs' current state; returns a future for the commit, if any."""
        return None

    def _journal_delete(self, job_ids: Sequence[str]) -> asyncio.Future[None] | None:
        return None

    def _journal_log(self, job_id: str, at: float, message: str) -> asyncio.Future[None] | None:
        return None

    def _journal_paused(self, queue: str, paused: bool) -> asyncio.Future[None] | None:
        return None

    async def _commit(self, jobs: Sequence[Job]) -> None:
        future = self._journal(jobs)
        if future is not None:
            await future

    # -- bookkeeping -------------------------------------------------------
    def _load(self, job: Job) -> None:
        """Index a job (new, or read back from disk) by its current status."""
        if not job.seq:
            job.seq = next(self._seq)
        self._jobs[job.id] = job
        self._counted(job, None)
        self._place(job)

    def _counted(self, job: Job, before: JobStatus | None) -> None:
        """Keep the per-status counters right after ``job`` moved from ``before``."""
        after = job.status
        if before is after:
            return
        counts = self._counts.get(job.queue) or self._counts.setdefault(job.queue, dict.fromkeys(JobStatus, 0))
        if before is not None:
            counts[before] -= 1
            self._waiting -= before in WAITING
            self._terminal -= before in TERMINAL
            if before is JobStatus.PROCESSING:
                self._leased.pop(job.id, None)
        counts[after] += 1
        self._waiting += after in WAITING
        self._terminal += after in TERMINAL
        if before is not None:
            for listener in self.listeners:
                listener(job, before)

    def _place(self, job: Job) -> None:
        """Put a job where its status says it belongs (ready heap, timer heap, leases, finished)."""
        status = job.status
        if status is JobStatus.PENDING:
            ready = self._ready.get(job.queue)
            if ready is None:
                ready = self._ready[job.queue] = ReadyQueue()
            ready.push(job)
            self._wake()
        elif status is JobStatus.PROCESSING:
            self._leased[job.id] = job
        elif status in TERMINAL:
            self._finished.append((job.finished_at or 0.0, job))
        else:  # scheduled or retrying
            heapq.heappush(self._deferred, (job.run_at or 0.0, job.seq, job))
            self._wake()  # a waiter may need to shorten its sleep to this run_at

    def _moved(self, job: Job, before: JobStatus) -> None:
        self._counted(job, before)
        self._place(job)

    def _forget(self, job: Job) -> None:
        del self._jobs[job.id]
        self._counts[job.queue][job.status] -= 1
        self._waiting -= job.status in WAITING
        self._terminal -= job.status in TERMINAL
        self._leased.pop(job.id, None)
        self._logs.pop(job.id, None)

    def _live(self, job: Job) -> bool:
        """Whether a heap entry's job is still stored (not cleared, purged or replaced by a re-added id)."""
        return self._jobs.get(job.id) is job

    def _ready_job(self, job: Job) -> bool:
        """Whether a ready-queue entry can run: still pending (not leased or cancelled) and still stored."""
        return job.status is JobStatus.PENDING and self._jobs.get(job.id) is job

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
        if job.status is not JobStatus.PROCESSING or job.lease_id != lease_id:
            raise StaleLease(f"lease {lease_id!r} does not hold job {job_id!r} (it is {job.status})")
        return job

    # -- producers ---------------------------------------------------------
    async def add(self, jobs: Sequence[Job]) -> list[Added | Exception]:
        outcomes: list[Added | Exception] = []
        fresh: list[Job] = []
        commits: dict[str, asyncio.Future[None]] = {}  # job id -> the commit its outcome waits for
        for job in jobs:
            existing = self._jobs.get(job.id)
            if existing is not None:
                outcomes.append(Added(existing, created=False))
                if (adding := self._adding.get(job.id)) is not None:
                    commits[job.id] = adding  # a replay is answered once the original is durable
            elif self._waiting >= self.options.max_waiting:
                outcomes.append(QueueFull(f"the queue holds {self._waiting} waiting jobs, its limit"))
            else:
                job.seq = next(self._seq)
                self._jobs[job.id] = job
                self._counted(job, None)
                fresh.append(job)
                outcomes.append(Added(job, created=True))
        future = self._journal(fresh) if fresh else None
        if future is not None:
            self._adding.update((job.id, future) for job in fresh)
            commits.update((job.id, future) for job in fresh)
        else:
            for job in fresh:
                self._place(job)
        if not commits:
            return outcomes
        try:
            for commit in set(commits.values()):  # shielded: a cancelled caller never cancels a commit
                with contextlib.suppress(Exception):  # read back per job below
                    await asyncio.shield(commit)
        except asyncio.CancelledError:
            if future is not None:  # finish the bookkeeping when the commit lands, caller or not
                future.add_done_callback(functools.partial(self._added, fresh))
            raise
        if future is not None:
            # Placed here, not in a done-callback, so the accepting request answers
            # before any worker can lease the job: its 202 shows it pending.
            self._added(fresh, future)
        return [self._commit_outcome(o, commits) for o in outcomes]

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
            elif job.status in WAITING:  # not cancelled meanwhile (a cancel placed it already)
                self._place(job)

    @staticmethod
    def _commit_outcome(outcome: Added | Exception, commits: dict[str, asyncio.Future[None]]) -> Added | Exception:
        if not isinstance(outcome, Added) or (future := commits.get(outcome.job.id)) is None:
            return outcome
        if future.cancelled():
            return StoreUnavailable(f"storing job {outcome.job.id!r} was interrupted")
        return future.exception() or outcome

    async def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    # -- consumers ---------------------------------------------------------
    async def lease(
        self,
        max_jobs: int,
        lease_seconds: float,
        *,
        queues: Sequence[str] | None = None,
        worker: str | None = None,
        wait: float = 0.0,
    ) -> list[Job]:
        jobs = self._take(max_jobs, lease_seconds, queues, worker)
        if jobs or wait <= 0:
            return jobs
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while not jobs:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            if self._deferred:  # wake up when the next scheduled job falls due
                remaining = min(remaining, max(self._deferred[0][0] - time.time(), 0.0) + 0.001)
            waiter = loop.create_future()
            self._waiters.add(waiter)
            try:
                async with asyncio.timeout(remaining):
                    await waiter
            except TimeoutError:
                pass
            finally:
                self._waiters.discard(waiter)
            jobs = self._take(max_jobs, lease_seconds, queues, worker)
        return jobs

    def _take(self, max_jobs: int, lease_seconds: float, queues: Sequence[str] | None, worker: str | None) -> list[Job]:
        now = time.time()
        if self._deferred and self._deferred[0][0] <= now:
            self._promote_due(now)
        names = self._ready if queues is None else queues
        readies = [r for name in names if name not in self._paused and (r := self._ready.get(name))]
        taken: list[Job] = []
        deadline = now + lease_seconds
        prefix = self._lease_prefix
        usable = self._ready_job
        while readies and len(taken) < max_jobs:
            for ready in readies:  # round-robin across queues, one job each turn
                job = ready.pop(usable)
                if job is not None:
                    job.begin_attempt(f"{prefix}-{next(self._lease_ids)}", deadline, worker, now)
                    self._counted(job, JobStatus.PENDING)
                    self._leased[job.id] = job
                    taken.append(job)
                    if len(taken) >= max_jobs:
                        break
            readies = [r for r in readies if r]
        if taken:
            self._journal(taken)  # not awaited: a lost lease record only means the job runs again
        return taken

    def _promote_due(self, now: float) -> None:
        deferred = self._deferred
        promoted = []
        while deferred and deferred[0][0] <= now:
            run_at, _, job = heapq.heappop(deferred)
            if job.status in (JobStatus.SCHEDULED, JobStatus.RETRYING) and job.run_at == run_at and self._live(job):
                before = job.status
                job.move_to(JobStatus.PENDING)
                self._moved(job, before)
                promoted.append(job)
        if promoted:
            self._journal(promoted)

    async def heartbeat(self, job_id: str, lease_id: str, lease_seconds: float) -> Job:
        job = self._leased_job(job_id, lease_id)
        job.lease_expires_at = time.time() + lease_seconds
        self._journal([job])
        return job

    async def complete(self, job_id: str, lease_id: str, result: Any) -> Job:
        done = self._jobs.get(job_id)
        if done is not None and done.completed_under(lease_id):
            await self._commit([done])  # a repeat (say, after a lost answer): the first result stands, once durable
            return done
        job = self._leased_job(job_id, lease_id)
        job.complete(result, time.time())
        self._moved(job, JobStatus.PROCESSING)
        await self._commit([job])
        return job

    async def fail(
        self, job_id: str, lease_id: str, error: str, *, retry_in: float | None = None, outcome: str = "failed"
    ) -> Job:
        job = self._leased_job(job_id, lease_id)
        self._fail(job, error, retry_in, outcome, time.time())
        await self._commit([job])
        return job

    def _fail(self, job: Job, error: str, retry_in: float | None, outcome: str, now: float) -> None:
        retry_at = None
        if job.attempts < job.max_attempts:
            delay = retry_in if retry_in is not None else self.options.retry.next_delay(job.attempts)
            retry_at = now + delay
        job.fail(error, now, retry_at, outcome)
        self._moved(job, JobStatus.PROCESSING)

    async def release(self, job_id: str, lease_id: str) -> Job:
        job = self._leased_job(job_id, lease_id)
        job.release("released", time.time())
        self._moved(job, JobStatus.PROCESSING)
        await self._commit([job])
        return job

    async def set_progress(self, job_id: str, lease_id: str | None, fraction: float, note: str | None) -> None:
        job = self._leased_job(job_id, lease_id)
        job.progress = min(max(float(fraction), 0.0), 1.0)
        job.progress_note = note
        self._journal([job])

    # -- operators ---------------------------------------------------------
    async def cancel(self, job_id: str) -> Job:
        job = self._job(job_id)
        before = job.status
        job.cancel(time.time())
        self._moved(job, before)
        await self._commit([job])
        return job

    async def requeue(self, job_id: str) -> Job:
        job = self._job(job_id)
        before = job.status
        if before not in RERUNNABLE:  # the lifecycle also lets a running job become pending (a release)
            raise InvalidTransition(job_id, before, JobStatus.PENDING)
        job.requeue(time.time())
        self._moved(job, before)
        await self._commit([job])
        return job

    async def append_log(self, job_id: str, message: str) -> None:
        self._job(job_id)
        lines = self._logs.setdefault(job_id, [])
        if len(lines) < MAX_LOG_LINES:
            at = time.time()
            lines.append((at, message))
            self._journal_log(job_id, at, message)

    async def logs(self, job_id: str) -> list[dict[str, Any]]:
        self._job(job_id)
        return [{"at": at, "message": message} for at, message in self._logs.get(job_id, [])]

    async def stats(self) -> StoreStats:
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
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Job], str | None]:
        below = int(cursor) if cursor else math.inf
        page: list[Job] = []
        scanned = 0
        for job in reversed(self._jobs.values()):
            if job.seq >= below:
                continue
            scanned += 1
            if scanned > MAX_SCANNED:  # a selective filter: end the page here, the cursor reads on
                return page, str(job.seq + 1)
            if (
                (status and job.status is not status)
                or (queue and job.queue != queue)
                or (job_type and job.type != job_type)
                or (owner is not None and job.owner != owner)
            ):
                continue
            if len(page) == limit:
                return page, str(page[-1].seq)
            page.append(job)
        return page, None

    async def set_paused(self, queue: str, paused: bool) -> None:
        if paused:
            self._paused.add(queue)
        else:
            self._paused.discard(queue)
            self._wake()
        future = self._journal_paused(queue, paused)
        if future is not None:
            await future

    async def clear(self, queue: str) -> int:
        doomed = [j for j in self._jobs.values() if j.queue == queue and j.status in WAITING]
        for job in doomed:
            self._forget(job)
        self._ready.pop(queue, None)
        future = self._journal_delete([job.id for job in doomed])
        if future is not None:
            await future
        return len(doomed)

    # -- housekeeping ------------------------------------------------------
    async def expire_leases(self) -> list[Job]:
        now = time.time()
        expired = [job for job in self._leased.values() if (job.lease_expires_at or 0.0) <= now]
        for job in expired:
            self._fail(job, "lease expired: the worker stopped responding", None, "lease-expired", now)
        if expired:
            await self._commit(expired)
        return expired

    async def purge(self) -> int:
        retention = self.options.retention
        oldest_kept = time.time() - retention.max_age
        finished = self._finished
        doomed: list[str] = []
        while finished and (self._terminal > retention.max_count or finished[0][0] < oldest_kept):
            finished_at, job = finished.popleft()
            # an entry is stale if the job was re-run (and may have finished again since)
            if job.status in TERMINAL and (job.finished_at or 0.0) == finished_at and self._live(job):
                self._forget(job)
                doomed.append(job.id)
        if doomed:
            future = self._journal_delete(doomed)
            if future is not None:
                await future
        return len(doomed)
