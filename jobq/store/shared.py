"""What every store shared by several jobq processes does alike (PostgreSQL, Redis).

A shared store keeps nothing of the jobs in memory but a copy of each job leased through
it (to answer its completion without reading it back): each verb reads and writes the
database, and answers once the change is applied there. Every job it hands out was just
read (or is that copy, its run ended), so it is nobody else's and goes out as it is;
events get copies of their own. The backends supply a few
primitives (insert, read, a fenced write, claim, extend, the jobs whose lease ran
out, and a listener that hands each notification to ``_heard``); this class builds
the verbs on them, so the rules are the same whichever database holds the jobs:

- **Fenced writes.** A run ends by reading the job, applying :mod:`jobq.lifecycle`
  here, and writing the outcome only if the job is still in the status and under the
  lease it was read with (``Fence``). A write that lost a race changes nothing, and
  the job is read again and answered as it now is.
- **Events.** Changes made here are published once applied (``_changed``); other
  nodes' changes arrive as notifications (``_heard``), and are published only for the
  jobs someone here follows (``follow``) or that were leased through this node (so a
  cancel made elsewhere stops their handlers here).
- **Waking.** An idle lease sleeps until a notification says jobs are ready, a job
  falls due, or ``POLL_SECONDS`` pass: a lost notification only delays.
- **Stopping.** A node that closes hands back the runs its own leases still hold
  (lost runs, outcome ``recovered``); a node killed outright leaves them to lapse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import abstractmethod
from collections import Counter
from collections.abc import Callable, Collection, Coroutine, Sequence
from typing import Any

from pydantic_core import from_json

from jobq.errors import JobNotFound, JobqError, QueueFull, StaleLease, StoreUnavailable, UnstorableValue
from jobq.job import DEFERRED, PENDING, PROCESSING, Job, JobStatus
from jobq.lifecycle import RELEASED, completed_again, end_run, lease_expired, lose_run, settle_run
from jobq.store.base import Added, JobEvent, LogEvent, Settlement, Store, StoreEvent, StoreOptions
from jobq.store.memory import LeaseIds
from jobq.store.rows import STATUSES

log = logging.getLogger("jobq.store")

POLL_SECONDS = 2.0  # an idle lease looks again at least this often, notification or not
MAX_PER_ROUND = 1000  # jobs one housekeeping step promotes, expires or purges at most

Fence = tuple[JobStatus, str | None]
"""What a write of a job is fenced by: the status and the lease it was read with."""


def fence(job: Job) -> Fence:
    return job.status, job.lease_id


def stale(job_id: str, lease_id: str | None, job: Job | None) -> JobqError:
    """The error for a lease that does not hold its job: JobNotFound if the job is gone, else StaleLease."""
    if job is None:
        return JobNotFound(job_id)
    return StaleLease(f"lease {lease_id!r} does not hold job {job_id!r} (it is {job.status})")


class SharedStore(Store):
    """The verbs of a store that several jobq processes share, on a backend's primitives."""

    def __init__(self, options: StoreOptions | None = None) -> None:
        super().__init__(options)
        self.place = ""  # the database, as messages name it (set by the backend)
        self._own = ""  # how this node's notifications start (set by the backend, which formats them)
        self._fixed_clock = self.options.clock  # None: the database's clock
        self._down: str | None = None  # why the database cannot be heard from, while it cannot
        self._reporting = False  # whether this node reports the store-wide gauges
        self._waiters: set[asyncio.Future[None]] = set()  # idle leases, woken when jobs may have become ready
        self._flowing: Collection[
            str
        ] = ()  # flow-controlled queues (jobq.flow), as last read, where a backend keeps them
        self._lease_ids = LeaseIds()
        self._followed: Counter[str] = Counter()  # job id -> how many follow it (see follow)
        self._held: dict[
            str, Job
        ] = {}  # job id -> the job as leased through this node, while its run is not ended here
        self._next_due: float | None = 0.0  # when the earliest scheduled job falls due (0: look now)
        self._background: set[asyncio.Task[object]] = set()  # fetches of others' changes, hand-backs

    @property
    def unavailable(self) -> str | None:
        return self._down

    @property
    def reports_totals(self) -> bool:
        return self._reporting

    def _clock_arg(self) -> float | None:
        """The time to hand the database: None lets it read its own clock."""
        return None if self._fixed_clock is None else self._fixed_clock()

    # -- the backend's primitives ------------------------------------------------
    @abstractmethod
    async def _insert(self, jobs: Sequence[Job], *, together: bool = False) -> dict[str, int | str]:
        """Store the jobs whose ids are new, while the waiting jobs stay under max_waiting: id -> its seq.

        With ``together``, all of them or (if they do not all fit) none.

        A job whose unique key another job holds (``Job.holds_unique_key``, by the database's
        clock) is not stored: id -> the holder's id. Checking and taking a key is atomic across
        nodes. UnstorableValue if a value cannot be stored (then nothing of the call is).
        """

    @abstractmethod
    async def _read(self, job_ids: Sequence[str]) -> list[Job]:
        """The jobs with these ids that exist."""

    @abstractmethod
    async def _read_at(self, job_ids: Sequence[str]) -> tuple[float, list[Job]]:
        """The store's time now, and the jobs with these ids that exist."""

    @abstractmethod
    async def _write(self, changes: Sequence[tuple[Job, Fence]]) -> set[str]:
        """Write each job's new state if it is still as fenced; the ids written (other nodes hear of them)."""

    @abstractmethod
    async def _claim_jobs(
        self,
        max_jobs: int,
        lease_seconds: float,
        queues: Sequence[str] | None,
        worker: str | None,
        types: Collection[str] | None,
        lease_ids: list[str],
    ) -> list[Job]:
        """Lease up to ``max_jobs`` ready jobs (round-robin over queues, then priority, then FIFO), in that order."""

    @abstractmethod
    async def _extend(self, leases: Sequence[tuple[str, str]], lease_seconds: float) -> dict[str, Job]:
        """Extend the leases that still hold their jobs; those jobs, by id."""

    @abstractmethod
    async def _expiring(self) -> tuple[float, list[Job]]:
        """The store's time now, and (some of) the processing jobs whose lease ran out."""

    async def _complete(self, settlements: Sequence[Settlement]) -> list[Job]:
        """Complete leased jobs in one step where the backend can (the jobs completed); the rest take the rules.

        A job leased through this node may be answered as it was leased (``_held``), completed here as the
        backend completed it, rather than read back: its progress is then the one it had when leased.
        """
        return []

    def _holds(self, settlement: Settlement) -> bool:
        """Whether this settlement's run was leased through this node (so ``_held_answer`` can answer it)."""
        leased = self._held.get(settlement.id)
        return leased is not None and leased.lease_id == settlement.lease_id

    def _held_answer(self, settlement: Settlement, finished_at: float) -> Job:
        """A job leased through this node, completed as the backend completed it at ``finished_at`` (see _complete).

        Its run has ended here, so the copy kept since the lease is no longer held: it becomes the answer.
        """
        job = self._held.pop(settlement.id)
        job.complete(settlement.result, finished_at)
        return job

    def _heard_log(self, message: dict[str, Any]) -> None:
        """A notification of a log line another node added (published if someone here follows the job)."""

    # -- events -----------------------------------------------------------------------
    def follow(self, job_id: str) -> Callable[[], None]:
        self._followed[job_id] += 1

        def unfollow() -> None:
            self._followed[job_id] -= 1
            if self._followed[job_id] <= 0:
                del self._followed[job_id]

        return unfollow

    def _changed(self, changes: Sequence[tuple[Job, JobStatus]]) -> None:
        """Tell listeners and subscribers of applied changes made here, in order."""
        if not changes:
            return
        for job, before in changes:
            if job.status in DEFERRED:
                self._due_at(job.run_at)
            elif before is PROCESSING and (job.concurrency_key is not None or job.queue in self._flowing):
                self._wake()  # a run ended in a flow-controlled queue: a job held back may start now
            for listener in self.listeners:
                listener(job, before)
        if self.subscribers:
            self._publish([JobEvent(job.snapshot(), before) for job, before in changes])

    def _heard(self, payload: str) -> None:
        """A notification: ready queues (wake idle leases), job changes or a log line (publish what is followed).

        This node's own are skipped unread: their changes were published, and idle leases woken, here.
        """
        if payload.startswith(self._own):
            return
        try:
            message = from_json(payload)
        except ValueError:
            return
        if message.get("ready"):
            self._wake()
        wanted: list[tuple[str, JobStatus | None]] = []
        for job_id, before, after in message.get("jobs") or ():
            if after in ("scheduled", "retrying"):
                self._due_at(None)  # a job another node deferred may fall due before the one known
            if job_id in self._followed or job_id in self._held:
                wanted.append((job_id, STATUSES.get(before)))
        if wanted:
            self._in_background(self._publish_fetched(wanted))
        if message.get("log"):
            self._heard_log(message)

    def _listening_again(self) -> None:
        """After a gap in listening: notifications may be lost, so wake idle leases and re-read followed jobs."""
        if self._down is not None:
            log.info("%s: listening again", self.place)
            self._down = None
        self._wake()
        watched = list(dict.fromkeys([*self._followed, *self._held]))
        if watched:
            self._in_background(self._publish_fetched([(job_id, None) for job_id in watched]))

    async def _publish_fetched(self, wanted: list[tuple[str, JobStatus | None]]) -> None:
        """Read the jobs other nodes changed, and publish them as events."""
        try:
            found = {job.id: job for job in await self._read([job_id for job_id, _ in wanted])}
        except JobqError as exc:
            log.warning("%s: reading other nodes' changes failed: %s", self.place, exc)
            return
        events: list[StoreEvent] = []
        for job_id, before in wanted:
            job = found.get(job_id)
            if job is None:
                continue
            if job.status is not PROCESSING:
                self._held.pop(job_id, None)  # settled or cancelled elsewhere
            events.append(JobEvent(job, before or job.status))
        if events:
            self._publish(events)

    def _publish_log(self, job_id: str, at: float, message: str) -> None:
        self._publish([LogEvent(job_id, at, message)])

    def _in_background(self, work: Coroutine[Any, Any, object]) -> None:
        """Run ``work`` in a task nobody awaits (close cancels it); a failure is logged, and changes nothing."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[object]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("%s: %s", self.place, task.exception())

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    def _due_at(self, run_at: float | None) -> None:
        """A job falls due at ``run_at``: idle leases look again then (or at once, when it is not known)."""
        due = self._next_due
        self._next_due = 0.0 if run_at is None else run_at if due is None else min(due, run_at)
        self._wake()  # an idle lease may have to shorten its sleep

    # -- lifecycle ----------------------------------------------------------------------
    async def _stop_background(self) -> None:
        """Cancel the background work, and hand back the runs this node's leases still hold (it is stopping)."""
        for task in list(self._background):
            task.cancel()
        if self._held:
            with contextlib.suppress(JobqError):
                await self._recover({job_id: job.lease_id or "" for job_id, job in self._held.items()})

    async def _recover(self, held: dict[str, str]) -> None:
        """End the runs still leased through this node (job id -> lease id) as lost: this jobq is stopping.

        Fenced by the lease: a job whose lease lapsed and that runs elsewhere now is left alone.
        """
        now, jobs = await self._read_at(list(held))
        changes = []
        for job in jobs:
            if job.status is PROCESSING and job.lease_id == held[job.id]:
                before = fence(job)
                lose_run(job, "recovered", now, self.rules)
                changes.append((job, before))
        written = await self._write(changes) if changes else set()
        if written:
            log.warning("%d jobs leased through this jobq were still running: they run again", len(written))
        self._changed([(job, PROCESSING) for job, _ in changes if job.id in written])

    # -- producers -------------------------------------------------------------------
    async def add(self, jobs: Sequence[Job], *, together: bool = False) -> list[Added | Exception]:
        outcomes: list[Added | Exception | None] = [None] * len(jobs)
        first: dict[str, int] = {}  # id -> the index of its first job in this call
        fresh: list[Job] = []
        for index, job in enumerate(jobs):
            if job.id in first:
                continue  # a repeat within the call: answered with the first below
            first[job.id] = index
            fresh.append(job)
        try:
            inserted = await self._insert(fresh, together=together)
        except UnstorableValue as refused:
            if together:
                return [refused] * len(jobs)  # none of them is stored
            # one bad job: store the others, one by one, and refuse only it
            inserted = {}
            for job in fresh:
                try:
                    inserted |= await self._insert([job])
                except UnstorableValue as exc:
                    outcomes[first[job.id]] = exc
        created = {job_id: seq for job_id, seq in inserted.items() if isinstance(seq, int)}
        held = {job_id: holder for job_id, holder in inserted.items() if isinstance(holder, str)}
        for job in fresh:
            if job.id in created:
                job.seq = created[job.id]
                outcomes[first[job.id]] = Added(job, created=True)  # the caller's job, now stored
                if job.status in DEFERRED:
                    self._due_at(job.run_at)
        missing = [job.id for job in fresh if job.id not in inserted and outcomes[first[job.id]] is None]
        wanted = [*missing, *held.values()]
        existing = {job.id: job for job in await self._read(wanted)} if wanted else {}
        for job_id, holder in held.items():
            outcomes[first[job_id]] = (
                Added(existing[holder], created=False, duplicate=True)
                if holder in existing
                else StoreUnavailable(
                    f"job {holder!r}, which held the unique key, was deleted meanwhile: send it again"
                )
            )
        for index, job in enumerate(jobs):
            if outcomes[index] is not None:
                continue
            stored = existing.get(job.id)
            if first[job.id] != index:  # the same id earlier in this call
                earlier = outcomes[first[job.id]]
                outcomes[index] = Added(earlier.job, created=False) if isinstance(earlier, Added) else earlier
            elif stored is not None:
                outcomes[index] = Added(stored, created=False)
            else:
                outcomes[index] = QueueFull(f"the queue holds {self.options.max_waiting} waiting jobs, its limit")
        if created:
            self._wake()  # an idle lease here need not wait for the notification
        return outcomes  # type: ignore[return-value]

    async def get(self, job_id: str) -> Job | None:
        jobs = await self._read([job_id])
        return jobs[0] if jobs else None

    async def get_many(self, job_ids: Sequence[str]) -> list[Job]:
        found = {job.id: job for job in await self._read(job_ids)} if job_ids else {}
        return [found[job_id] for job_id in job_ids if job_id in found]

    # -- consumers ----------------------------------------------------------------------
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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            waiter = loop.create_future()  # listed before looking: a wake-up from now on means "look again"
            self._waiters.add(waiter)
            try:
                claim = loop.create_task(self._claim(max_jobs, lease_seconds, queues, worker, types))
                try:
                    jobs = await asyncio.shield(claim)  # a claim that lands after its caller left is handed back
                except asyncio.CancelledError:
                    claim.add_done_callback(self._hand_back)
                    raise
                left = deadline - loop.time()
                if jobs or left <= 0:
                    return jobs
                sleep = min(left, POLL_SECONDS)
                if self._next_due is not None:
                    sleep = min(sleep, max(self._next_due - self.clock(), 0.0) + 0.001)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(sleep):
                        await waiter
            finally:
                self._waiters.discard(waiter)

    def _hand_back(self, claim: asyncio.Task[list[Job]]) -> None:
        """Release the jobs of a claim whose caller was cancelled meanwhile: nobody runs them (no attempt used)."""
        if claim.cancelled() or claim.exception() is not None or not claim.result():
            return

        def release(job: Job, _: None, now: float) -> None:
            end_run(job, RELEASED, now, self.rules)

        runs = [(job.id, job.lease_id or "", None) for job in claim.result()]
        self._in_background(self._end_runs(runs, release))

    async def _claim(
        self,
        max_jobs: int,
        lease_seconds: float,
        queues: Sequence[str] | None,
        worker: str | None,
        types: Collection[str] | None,
    ) -> list[Job]:
        """Promote due jobs if any may be due, then claim up to ``max_jobs``."""
        if self._next_due is not None and self._next_due <= self.clock():
            await self.promote_due()
        lease_ids = [self._lease_ids.next() for _ in range(max_jobs)]  # one for each job it may claim
        jobs = await self._claim_jobs(max_jobs, lease_seconds, queues, worker, types, lease_ids)
        self._held.update((job.id, job.snapshot()) for job in jobs)
        self._changed([(job, PENDING) for job in jobs])
        return jobs

    async def heartbeat_many(self, leases: Sequence[tuple[str, str]], lease_seconds: float) -> list[Job | JobqError]:
        extended = await self._extend(leases, lease_seconds)
        missing = [job_id for job_id, _ in leases if job_id not in extended]
        current = {job.id: job for job in await self._read(missing)} if missing else {}
        answers: list[Job | JobqError] = []
        for job_id, lease_id in leases:
            job = extended.get(job_id)
            answers.append(job if job is not None else stale(job_id, lease_id, current.get(job_id)))
        return answers

    async def settle_many(self, settlements: Sequence[Settlement]) -> list[Job | JobqError]:
        """Completions in one step where the backend can; failures, and completions that step did not apply (a
        repeat, a stale lease), by reading the jobs and applying the lifecycle rules (``_end_runs``)."""
        answers: dict[int, Job | JobqError] = {}
        completing = [(index, item) for index, item in enumerate(settlements) if item.error is None]
        if completing:
            done = {(job.id, job.lease_id): job for job in await self._complete([item for _, item in completing])}
            for index, item in completing:
                job = done.pop((item.id, item.lease_id), None)
                if job is not None:
                    answers[index] = job
                    self._held.pop(job.id, None)
            self._changed([(answers[index], PROCESSING) for index, _ in completing if index in answers])

        def settle(job: Job, item: Settlement, now: float) -> None:
            settle_run(job, item, now, self.rules)

        rest = [index for index in range(len(settlements)) if index not in answers]
        if rest:
            runs = [(settlements[index].id, settlements[index].lease_id, settlements[index]) for index in rest]
            answers.update(zip(rest, await self._end_runs(runs, settle), strict=True))
        return [answers[index] for index in range(len(settlements))]

    async def release(self, job_id: str, lease_id: str, reason: str = RELEASED) -> Job:
        def end(job: Job, _: None, now: float) -> None:
            end_run(job, reason, now, self.rules)

        [answer] = await self._end_runs([(job_id, lease_id, None)], end)
        if isinstance(answer, JobqError):
            raise answer
        return answer

    async def _end_runs(
        self, runs: Sequence[tuple[str, str, Any]], apply: Callable[[Job, Any, float], None]
    ) -> list[Job | JobqError]:
        """End leased runs: read the jobs, ``apply(job, item, now)`` the rule, write them fenced by their leases.

        A run whose lease moved on between the read and the write (a cancel, an expiry) is
        read again and answered as it is then: its write changed nothing.
        """
        answers: dict[int, Job | JobqError] = {}
        todo = list(enumerate(runs))
        for _ in range(3):  # a run whose write lost a race is read again, and then answered as it is
            if not todo:
                break
            now, found = await self._read_at([job_id for _, (job_id, _, _) in todo])
            jobs = {job.id: job for job in found}
            changes: list[tuple[Job, Fence]] = []
            attempted: list[tuple[int, Job]] = []
            for index, (job_id, lease_id, item) in todo:
                job = jobs.get(job_id)
                if isinstance(item, Settlement) and item.error is None and completed_again(job, lease_id):
                    answers[index] = job  # type: ignore[assignment] # a repeated complete: its first answer
                    continue
                if job is None or job.status is not PROCESSING or job.lease_id != lease_id:
                    answers[index] = stale(job_id, lease_id, job)
                    continue
                before = fence(job)
                apply(job, item, now)
                changes.append((job, before))
                attempted.append((index, job))
            written = await self._write(changes) if changes else set()
            for index, job in attempted:
                if job.id in written:
                    answers[index] = job
                    self._held.pop(job.id, None)
            self._changed([(job, PROCESSING) for _, job in attempted if job.id in written])
            todo = [(index, runs[index]) for index, _ in attempted if index not in answers]
        for index, (job_id, lease_id, _) in todo:  # never, by the fence: each lost race is read again above
            answers[index] = StaleLease(f"lease {lease_id!r} of job {job_id!r} kept changing under it")
        return [answers[index] for index in range(len(runs))]

    # -- operators ------------------------------------------------------------------------
    async def _change(self, job_id: str, change: Callable[[Job, float], None]) -> Job:
        """Apply an operator's change to one job: read it, change it, write it fenced (again if it moved meanwhile)."""
        while True:
            now, found = await self._read_at([job_id])
            if not found:
                raise JobNotFound(job_id)
            [job] = found
            before = fence(job)
            change(job, now)  # raises InvalidTransition for a change its status does not allow
            if await self._write([(job, before)]):
                break
        if job.status is not PROCESSING:
            self._held.pop(job.id, None)
        if job.status is PENDING:
            self._wake()
        self._changed([(job, before[0])])
        return job

    # -- housekeeping ------------------------------------------------------------------
    async def expire_leases(self) -> list[Job]:
        now, found = await self._expiring()
        changes = []
        for job in found:
            if lease_expired(job, now):
                before = fence(job)
                lose_run(job, "lease-expired", now, self.rules)
                changes.append((job, before))
        written = await self._write(changes) if changes else set()
        expired = [job for job, _ in changes if job.id in written]
        for job in expired:
            self._held.pop(job.id, None)
        if any(job.status is PENDING for job in expired):
            self._wake()
        self._changed([(job, PROCESSING) for job in expired])
        return expired
