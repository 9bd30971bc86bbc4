"""The job service: the store, the registry and the worker pool behind one set of verbs.

The HTTP API and gRPC call these methods; they hold no transport details.

Verbs that read or act on one client's jobs take ``owner``: the name of the
token asking, when it may see only its own jobs (None: every job). Another
owner's job answers as if it did not exist, so ids do not leak.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from pydantic_core import to_json

from jobq import nodes
from jobq.config import Config
from jobq.errors import (
    IdReused,
    InvalidRequest,
    InvalidTransition,
    JobNotFound,
    JobqError,
    ShuttingDown,
    ValidationFailed,
    WorkflowNotFound,
)
from jobq.flow import QueueFlow
from jobq.handlers import Registry
from jobq.job import CANCELLED, FAILING, PENDING, PROCESSING, RERUNNABLE, TERMINAL, Job, JobStatus, new_job_id, rfc3339
from jobq.lifecycle import LOST_REASONS
from jobq.models import (
    MAX_CHILDREN_SHOWN,
    BulkRequest,
    EnqueueRequest,
    FailRequest,
    LeaseRequest,
    ListQuery,
    Settlement,
)
from jobq.rate import RateMeter
from jobq.schedules import CHECK_SECONDS, Schedules
from jobq.store.base import Added, LogEvent, Store, StoreEvent
from jobq.store.base import Settlement as StoreSettlement
from jobq.values import MAX_ERROR_CHARS, MAX_LOG_CHARS, MAX_NOTE_CHARS, MAX_TRACEBACK_CHARS, storable_text
from jobq.workers import DrainReport, WorkerPool
from jobq.workflow import find_cycle

log = logging.getLogger("jobq.service")

HOUSEKEEPING_SECONDS = 1.0
STORE_GRACE_SECONDS = 2.0  # how long a stop waits to tell the store this node drains or leaves
SEARCH_SCAN = 10_000  # jobs one search call reads at most (GET /jobs?q=): its cursor goes on from there
SEARCH_PAGE = 500
WORKFLOW_PAGE = 500  # jobs read per store call when a workflow is read whole
REPLACE_TRIES = 5  # debounce: cancel-and-add rounds against concurrent replacers before answering the holder

EnqueueListener = Callable[[Sequence[Job]], None]
"""Called with the jobs each submission created (after they are stored)."""


@dataclass(frozen=True, slots=True)
class BulkResult:
    """What a bulk retry or delete did."""

    done: int  # jobs retried or deleted
    skipped: int  # jobs that matched but changed meanwhile
    more: bool  # the call stopped with jobs left to read: matching ones may remain
    cursor: str | None  # where the next call goes on, when more


def failure(job_id: str, item: Settlement | FailRequest) -> StoreSettlement:
    """A failed attempt as the store takes it, its texts made storable."""
    assert item.error is not None
    return StoreSettlement(
        job_id,
        item.lease_id,
        error=storable_text(item.error, MAX_ERROR_CHARS),
        retry_in=item.retry_in,
        outcome=item.outcome,
        traceback=None if item.traceback is None else storable_text(item.traceback, MAX_TRACEBACK_CHARS, keep="tail"),
    )


class JobService:
    """What jobq does, independent of how it is asked."""

    def __init__(self, config: Config, store: Store, registry: Registry) -> None:
        self.config = config
        self.store = store
        self.registry = registry
        self.pool = WorkerPool(
            store,
            registry,
            concurrency=config.workers,
            lease_seconds=config.lease_seconds,
            queues=config.queues or None,
            prefetch=config.prefetch if config.workers else 0,
        )
        self.started_at = time.time()
        self.draining = False
        self.finish_rate = RateMeter()
        self._drain_started = asyncio.Event()
        self._change_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._enqueue_listeners: list[EnqueueListener] = []
        self._remote_held: set[str] = set()  # jobs leased to remote workers through this service, still running
        self._remote_settled = asyncio.Event()  # set whenever one of them leaves processing
        self._lease_polls = 0  # lease long-polls waiting for work
        self._log_followers: dict[str, set[asyncio.Event]] = {}  # job id -> log streams to wake
        store.add_listener(self._on_change)  # local and immediate: logs and throughput
        store.subscribe(self._on_event)  # durable changes: waiters and drain accounting
        self._stopping = asyncio.Event()  # set by close: the periodic duties end after their current step
        self._duties: list[asyncio.Task[None]] = []
        self._gathered: list[tuple[Job, asyncio.Future[Added | Exception]]] | None = None  # see _add
        self._group_adds: set[asyncio.Task[None]] = set()
        self.listening: dict[str, str] = {}  # protocol -> the address it is served on (set as each starts)
        self.remote_workers = nodes.RemoteWorkers()
        self.schedules = Schedules(self)

    def add_enqueue_listener(self, listener: EnqueueListener) -> None:
        """Call ``listener(jobs)`` with the new jobs of every submission (metrics hang off this)."""
        self._enqueue_listeners.append(listener)

    # -- lifecycle ---------------------------------------------------------
    async def start(self) -> None:
        """Open the store and start the workers and housekeeping."""
        await self.store.open()
        self.pool.start()
        duties = (
            ("housekeeping", HOUSEKEEPING_SECONDS, self._housekeep, False),
            ("writing this node's card", nodes.BEAT_SECONDS, functools.partial(nodes.announce, self), True),
            ("checking the schedules", CHECK_SECONDS, self.schedules.fire_due, True),
        )
        self._duties = [
            asyncio.create_task(self._every(what, seconds, step, first=first), name=f"jobq: {what}")
            for what, seconds, step, first in duties
        ]

    async def drain(self) -> DrainReport:
        """Refuse new jobs, finish accepted ones (up to the drain timeout), and stop the workers."""
        self.draining = True
        self._drain_started.set()  # answers pending long-polls at once
        for waiters in self._change_waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        with contextlib.suppress(TimeoutError):  # the other nodes see this one draining (a store away: later)
            async with asyncio.timeout(STORE_GRACE_SECONDS):
                await nodes.announce(self)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.drain_timeout
        report = await self.pool.drain(self.config.drain_timeout)
        remote = await self._drain_remote(deadline)
        return DrainReport(report.finished + remote.finished, report.unfinished + remote.unfinished)

    async def _drain_remote(self, deadline: float) -> DrainReport:
        """Wait (until ``deadline``) for jobs that remote workers leased from this server to be settled.

        Remote workers go on heartbeating and completing while the server drains; what is
        still leased at the deadline keeps its lease and runs again once that lapses
        (or, on a durable store, after the next start).
        """
        loop = asyncio.get_running_loop()
        held = len(self._remote_held)
        while self._remote_held and (left := deadline - loop.time()) > 0:
            self._remote_settled.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._remote_settled.wait()
        return DrainReport(held - len(self._remote_held), sorted(self._remote_held))

    async def close(self) -> None:
        """Stop housekeeping and close the store (after a drain, and after the group adds in flight)."""
        while self._group_adds:
            await asyncio.gather(*self._group_adds, return_exceptions=True)
        self._stopping.set()  # each duty ends after its current step (not cut off mid-call to the store)...
        if self._duties:
            _, late = await asyncio.wait(self._duties, timeout=STORE_GRACE_SECONDS)
            for task in late:  # ...or, stuck on a store that does not answer, is cancelled
                task.cancel()
            await asyncio.gather(*self._duties, return_exceptions=True)
        with contextlib.suppress(Exception):  # a store that is away: the card lapses by itself
            async with asyncio.timeout(STORE_GRACE_SECONDS):
                await self.store.withdraw()
        await self.store.close()

    async def _every(self, what: str, seconds: float, step: Callable[[], Awaitable[Any]], *, first: bool) -> None:
        """Run ``step`` every ``seconds`` (at once too, if ``first``) until close; a failing step is logged."""
        if not first and await self._stopped_within(seconds):
            return
        while True:
            try:
                await step()
            except Exception:
                log.exception("%s failed; trying again in %.0fs", what, seconds)
            if await self._stopped_within(seconds):
                return

    async def _stopped_within(self, seconds: float) -> bool:
        """Wait up to ``seconds``; whether jobq is stopping by then."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        return self._stopping.is_set()

    async def _housekeep(self) -> None:
        """Promote due jobs, expire lapsed leases and enforce retention."""
        done = await self.store.housekeep()
        for job in done.expired:
            log.warning("job %s lease expired; now %s", job.id, job.status, extra=job.log_fields())

    @property
    def unavailable(self) -> str | None:
        """Why jobq cannot serve jobs now (its store cannot write), or None; ``/health`` reports it."""
        return self.store.unavailable

    def _on_change(self, job: Job, before: JobStatus) -> None:
        """Store listener (local, as each change is made): log the change and count finished jobs."""
        status = job.status
        if status in TERMINAL:
            self.finish_rate.mark()
        if status in FAILING and job.error is not None:
            log.warning(
                "job %s (%s) %s -> %s: %s", job.id, job.type, before, status, job.error, extra=job.log_fields(before)
            )
        elif log.isEnabledFor(logging.DEBUG):
            log.debug("job %s (%s) %s -> %s", job.id, job.type, before, status, extra=job.log_fields(before))

    def _on_event(self, event: StoreEvent) -> None:
        """Store subscriber (once a change is durable): stop the handler of a job cancelled while it ran (on any
        node, with a shared store), account remote leases, wake whoever waits on the job."""
        if isinstance(event, LogEvent):
            for follower in self._log_followers.get(event.job_id, ()):
                follower.set()
            return
        job = event.job
        if job.status is CANCELLED and event.before is PROCESSING:
            self.pool.interrupt(job.id)
        for follower in self._log_followers.get(job.id, ()):
            follower.set()  # a follower stops once the job has finished
        if event.before is PROCESSING and self._remote_held:
            self._remote_held.discard(job.id)
            self._remote_settled.set()
        self._wake_waiters(job.id)

    def _wake_waiters(self, job_id: str) -> None:
        """End the waits on a job that changed (or is gone): each reads the job again."""
        waiters = self._change_waiters.pop(job_id, None)
        if waiters:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def wait_for_change(
        self,
        job_id: str,
        timeout: float,
        owner: str | None = None,
        *,
        seen: JobStatus | None = None,
        through_drain: bool = False,
    ) -> Job:
        """The job after its next status change, or as it is when ``timeout`` passes (capped by ``--max-wait``).

        With ``seen`` (the status the caller last saw), a job that has moved on already is
        answered at once. A drain ends the wait at once, so long-polls never hold it up,
        unless ``through_drain``: a watch follows its job through the drain to the end.
        Waiting costs one future, woken by the store listener: the store is never polled.
        """
        if not through_drain:  # long-polls are capped; a watch's wait is bounded by its caller's deadline
            timeout = min(timeout, self.config.max_wait)
        waiter = asyncio.get_running_loop().create_future()
        waiters = self._change_waiters.setdefault(job_id, [])
        waiters.append(waiter)  # before reading the job, so no change after the read goes unseen
        unfollow = self.store.follow(job_id)  # changes made on other nodes too
        try:
            job = await self.get(job_id, owner)
            if (seen is not None and job.status is not seen) or timeout <= 0 or job.finished:
                return job
            if self.draining and not through_drain:
                return job
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            pass
        finally:  # a timed-out, cancelled or answered wait unlists itself (a woken one was unlisted already)
            unfollow()
            if waiter in waiters:
                waiters.remove(waiter)
                if not waiters and self._change_waiters.get(job_id) is waiters:
                    del self._change_waiters[job_id]
        return await self.get(job_id, owner)

    async def wait_until_finished(self, job_id: str, timeout: float, owner: str | None = None) -> Job:
        """The job once it finished, or as it is after ``timeout`` seconds (capped)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(timeout, self.config.max_wait)
        job = await self.get(job_id, owner)
        while not job.finished and not self.draining and (left := deadline - loop.time()) > 0:
            job = await self.wait_for_change(job_id, left, owner)
        return job

    # -- verbs -------------------------------------------------------------
    async def submit(
        self, requests: Sequence[EnqueueRequest], owner: str | None = None, *, sees_all: bool = True
    ) -> list[Added | JobqError]:
        """Enqueue jobs owned by ``owner``; each gets its own answer: the store's ``Added`` (the job, and
        whether this call created it), or the error that refused it.

        Re-sending a job id answers the stored job only to its owner (or to a caller that ``sees_all``);
        anyone else gets IdReused, as for a different body.
        """
        self._check_accepting()
        answers: list[Added | JobqError | None] = [None] * len(requests)
        jobs: list[Job] = []
        slots: list[int] = []
        now = self.store.clock()  # the store owns the clock: created and due times follow it
        for index, request in enumerate(requests):
            if (unknown := self.unknown_type(request)) is not None:
                answers[index] = unknown
                continue
            job = request.to_job(now)
            self._own(job, owner, sees_all)
            jobs.append(job)
            slots.append(index)
        if any(job.depends_on for job in jobs):
            try:
                await self._check_parents(jobs, owner, sees_all, within={job.id for job in jobs})
            except ValidationFailed as refused:
                return [refused] * len(requests)
        outcomes = await self.store.add(jobs) if jobs else []
        for at, (index, job, outcome) in enumerate(zip(slots, jobs, outcomes, strict=True)):
            if self._replaces(outcome, requests[index]):
                outcomes[at] = outcome = await self._replace(job, outcome)
            answers[index] = self._answer(job, outcome, sees_all)
        if self._enqueue_listeners:
            self._announce([o.job for o in outcomes if isinstance(o, Added) and o.created])
        return answers  # type: ignore[return-value]

    async def submit_one(self, request: EnqueueRequest, owner: str | None = None, *, sees_all: bool = True) -> Added:
        """Enqueue one job, as ``submit`` does, raising the error that refuses it: ``POST /enqueue``'s path.

        The same rules as ``submit`` without its lists, which cost a single job more than its checks.
        """
        self._check_accepting()
        if (unknown := self.unknown_type(request)) is not None:
            raise unknown
        job = request.to_job(self.store.clock())
        self._own(job, owner, sees_all)
        if job.depends_on:
            await self._check_parents([job], owner, sees_all, within=())
        outcome = await self._add(job)
        if self._replaces(outcome, request):
            outcome = await self._replace(job, outcome)
        answer = self._answer(job, outcome, sees_all)
        if isinstance(answer, JobqError):
            raise answer
        if answer.created and self._enqueue_listeners:
            self._announce((answer.job,))
        return answer

    async def submit_workflow(
        self, workflow_id: str | None, requests: Sequence[EnqueueRequest], owner: str | None, *, sees_all: bool
    ) -> tuple[str, list[Added]]:
        """Create a workflow's jobs together, all or none; returns its id (a new one if None) and each job's answer.

        ValidationFailed names what is wrong (an id twice, an unknown parent, a cycle, an unknown
        type, a unique key); re-sending the same workflow answers the stored jobs, created False.
        """
        self._check_accepting()
        workflow_id = workflow_id or new_job_id()
        unknown = [error for request in requests if (error := self.unknown_type(request)) is not None]
        if unknown:
            raise unknown[0]
        if any(request.unique_key is not None for request in requests):
            raise ValidationFailed("a job of a workflow cannot carry a unique_key: the workflow's ids make it unique")
        now = self.store.clock()
        jobs = [request.to_job(now) for request in requests]
        ids = Counter(job.id for job in jobs)
        twice = sorted(job_id for job_id, times in ids.items() if times > 1)
        if twice:
            raise ValidationFailed(f"job ids appear more than once in the workflow: {', '.join(twice[:20])}")
        for job in jobs:
            job.workflow = workflow_id
            self._own(job, owner, sees_all)
        parents = {parent for job in jobs for parent in job.depends_on}
        stored = {job.id: job for job in await self.store.get_many(sorted(parents | ids.keys()))}  # one read
        self._refuse_unknown_parents(parents, stored, owner, sees_all, within=ids)
        cycle = find_cycle({job.id: job.depends_on for job in jobs if job.depends_on})
        if cycle is not None:
            raise ValidationFailed(f"the workflow has a cycle: {' -> '.join(cycle)}")
        for job in jobs:  # all or none: one id taken by another body refuses all
            if (existing := stored.get(job.id)) is not None and isinstance(
                refused := self._answer(job, Added(existing, created=False), sees_all), JobqError
            ):
                raise refused
        answers: list[Added] = []
        for job, outcome in zip(jobs, await self.store.add(jobs, together=True), strict=True):
            answer = self._answer(job, outcome, sees_all)
            if isinstance(answer, JobqError):
                raise answer
            answers.append(answer)
        if self._enqueue_listeners:
            self._announce([answer.job for answer in answers if answer.created])
        log.info("workflow %s: %d jobs", workflow_id, len(jobs))
        return workflow_id, answers

    async def _check_parents(
        self, jobs: Sequence[Job], owner: str | None, sees_all: bool, *, within: Collection[str]
    ) -> None:
        """Read the parents ``jobs`` name and refuse the unknown ones (see _refuse_unknown_parents)."""
        parents = {parent for job in jobs for parent in job.depends_on}
        if parents:
            stored = {job.id: job for job in await self.store.get_many(sorted(parents))}
            self._refuse_unknown_parents(parents, stored, owner, sees_all, within=within)

    @staticmethod
    def _refuse_unknown_parents(
        parents: Collection[str],
        stored: Mapping[str, Job],
        owner: str | None,
        sees_all: bool,
        *,
        within: Collection[str],
    ) -> None:
        """ValidationFailed naming the parents that are neither ``stored`` (and visible to ``owner``) nor new jobs
        ``within`` the request: an id of the request that is another client's stored job is no parent of
        this client's jobs (its answer would be IdReused, and its results are not theirs to read)."""

        def unknown_to(parent: str) -> bool:
            job = stored.get(parent)
            if job is None:
                return parent not in within
            return not sees_all and job.owner != owner

        unknown = sorted(filter(unknown_to, parents))
        if unknown:
            raise ValidationFailed(
                f"depends_on names jobs that do not exist: {', '.join(unknown[:20])}"
                + (f" and {len(unknown) - 20} more" if len(unknown) > 20 else ""),
                errors=[{"field": "depends_on", "message": f"no job with id {job_id!r}"} for job_id in unknown],
            )

    async def workflow(self, workflow_id: str, owner: str | None = None) -> list[Job]:
        """Every job of a workflow (only ``owner``'s, when given), oldest first; WorkflowNotFound if none."""
        jobs: list[Job] = []
        cursor: str | None = None
        while True:
            page, cursor = await self.store.list_jobs(
                workflow=workflow_id, owner=owner, limit=WORKFLOW_PAGE, cursor=cursor
            )
            jobs += page
            if cursor is None:
                break
        if not jobs:
            raise WorkflowNotFound(workflow_id)
        return jobs[::-1]

    async def parents(self, job_id: str, owner: str | None = None) -> list[dict[str, Any]]:
        """How each parent of a job ended, in its depends_on order (see Store.parents)."""
        await self.get(job_id, owner)
        return await self.store.parents(job_id)

    async def children(self, job_id: str, owner: str | None = None, limit: int = MAX_CHILDREN_SHOWN) -> list[str]:
        """The ids of the first ``limit`` jobs that depend on this one (only ``owner``'s, when given), oldest first."""
        page, _ = await self.store.list_jobs(parent=job_id, owner=owner, limit=limit)
        return [job.id for job in reversed(page)]

    @staticmethod
    def _replaces(outcome: Added | Exception, request: EnqueueRequest) -> TypeGuard[Added]:
        """Whether a debounced job found its key held, so it replaces the holder (``_replace``); a plain
        check, so an enqueue that is not debounced awaits nothing more."""
        return request.debounce is not None and isinstance(outcome, Added) and outcome.duplicate

    async def _replace(self, job: Job, outcome: Added) -> Added | Exception:
        """Debounce: cancel the waiting job that holds ``job``'s unique key and add ``job`` in its place.

        Made of the store's own verbs, so it holds on every store. Only a waiting holder is
        cancelled: one that started meanwhile runs on, and if its unique_scope keeps the key while
        it runs, it is the answer. Concurrent replacers each cancel the one they found; the last
        add wins the key.
        """
        for _ in range(REPLACE_TRIES):
            holder = outcome.job
            with contextlib.suppress(InvalidTransition, JobNotFound):  # started or gone meanwhile
                await self.store.cancel_waiting(holder.id)
                log.info("job %s replaced by %s (debounce)", holder.id, job.id)
            [again] = await self.store.add([job])
            if not isinstance(again, Added) or not again.duplicate or again.job.id == holder.id:
                return again
            outcome = again
        return outcome

    @staticmethod
    def _own(job: Job, owner: str | None, sees_all: bool) -> None:
        """Make ``owner`` the job's owner; a client token's unique and concurrency keys are its own
        (``<name>/<key>``), so one client neither blocks another's key nor learns that it is used."""
        job.owner = owner
        if not sees_all and owner is not None:
            if job.unique_key is not None:
                job.unique_key = f"{owner}/{job.unique_key}"
            if job.concurrency_key is not None:
                job.concurrency_key = f"{owner}/{job.concurrency_key}"

    def _check_accepting(self) -> None:
        if self.draining:
            raise ShuttingDown("jobq is shutting down and accepts no new jobs")

    def unknown_type(self, request: EnqueueRequest) -> JobqError | None:
        """Why this job is refused here (a type the in-process workers of its queue cannot run), or None."""
        if self._runs_here(request.queue) and request.type not in self.registry:
            return self.registry.unknown(request.type)
        return None

    def _announce(self, created: Sequence[Job]) -> None:
        """Tell the enqueue listeners of the new jobs of a submission (none: nothing)."""
        if created:
            for listener in self._enqueue_listeners:
                listener(created)

    async def _add(self, job: Job) -> Added | Exception:
        """Store one job, as one add with every other job submitted while the store was busy (a group add).

        With no add in flight the job goes to the store at once (on the memory store it is stored
        before this returns: nothing waits). While one is in flight (a durable store is committing),
        jobs submitted meanwhile wait in ``_gathered`` and go to the store together as soon as it
        answers: one store call, one write and one commit for all of them instead of one each. Each
        caller gets its own job's outcome once it is stored (durably, on a durable store).
        """
        gathered = self._gathered
        if gathered is not None:  # an add is in flight: join the next one
            waiter = asyncio.get_running_loop().create_future()
            gathered.append((job, waiter))
            return await waiter
        self._gathered = []
        try:
            [outcome] = await self.store.add((job,))
        finally:
            self._add_gathered()
        return outcome

    def _add_gathered(self) -> None:
        """Hand the jobs gathered while an add was in flight to the store, as one add (or mark none in flight)."""
        gathered = self._gathered
        if not gathered:
            self._gathered = None
            return
        self._gathered = []
        task = asyncio.create_task(self._add_group(gathered), name="jobq-group-add")
        self._group_adds.add(task)
        task.add_done_callback(self._group_adds.discard)

    async def _add_group(self, group: list[tuple[Job, asyncio.Future[Added | Exception]]]) -> None:
        try:
            outcomes = await self.store.add([job for job, _ in group])
        except BaseException as exc:  # the store refused the whole add: each caller gets why
            for _, waiter in group:
                if not waiter.done():
                    waiter.set_exception(exc if isinstance(exc, Exception) else ShuttingDown("jobq stopped"))
            if not isinstance(exc, Exception):
                raise
        else:
            for (_, waiter), outcome in zip(group, outcomes, strict=True):
                if not waiter.done():  # a caller that hung up: its job is stored all the same
                    waiter.set_result(outcome)
        finally:
            self._add_gathered()

    def _runs_here(self, queue: str) -> bool:
        """Whether in-process workers take jobs from this queue (so its job types must be known here)."""
        return self.pool.concurrency > 0 and (not self.config.queues or queue in self.config.queues)

    @staticmethod
    def _answer(job: Job, outcome: Added | Exception, sees_all: bool) -> Added | JobqError:
        if isinstance(outcome, JobqError):
            return outcome
        if isinstance(outcome, Exception):
            raise outcome
        if not outcome.created and not outcome.duplicate:  # (a duplicate holds a key only its owner can use)
            stored = outcome.job
            if not stored.same_request(job) or not (sees_all or stored.owner == job.owner):
                return IdReused(f"job id {job.id!r} is taken by a job with a different body")
        return outcome

    async def get(self, job_id: str, owner: str | None = None) -> Job:
        """The job; JobNotFound if there is none, or if ``owner`` is given and it is someone else's."""
        job = await self.store.get(job_id)
        if job is None or (owner is not None and job.owner != owner):
            raise JobNotFound(job_id)
        return job

    async def cancel(self, job_id: str, owner: str | None = None) -> Job:
        """Cancel a job; a running one has its handler cancelled too (by the store's event: see _on_event)."""
        if owner is not None:
            await self.get(job_id, owner)
        return await self.store.cancel(job_id)

    async def lease(self, request: LeaseRequest) -> list[Job]:
        """Lease jobs to a remote worker, long-polling up to ``wait`` (capped); nothing once draining.

        Jobs leased for a caller that is gone by then (it hung up, or the call was cancelled)
        go straight back as undelivered (see ``hand_back``).
        """
        self.remote_workers.saw(request.worker)
        if self.draining:  # a worker asking anew backs off; parked long-polls were answered at once
            raise ShuttingDown("jobq is shutting down and leases no more jobs")
        wait = min(request.wait, self.config.max_wait)
        lease = functools.partial(
            self.store.lease,
            request.max_jobs,
            request.lease,
            queues=request.queues,
            worker=request.worker,
            wait=wait,
            types=request.types,
        )
        if wait <= 0:
            return self._hold_remote(await lease())
        leasing = asyncio.ensure_future(lease())  # a task, so a drain can end the long-poll
        stopping = asyncio.ensure_future(self._drain_started.wait())
        self._lease_polls += 1
        try:
            await asyncio.wait((leasing, stopping), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the worker hung up: nobody would ever see these jobs
            await self._abandon(leasing)
            raise
        finally:
            self._lease_polls -= 1
            stopping.cancel()
        if not leasing.done():
            await self._abandon(leasing)
            return []
        return self._hold_remote(leasing.result())

    def held_remotely(self) -> list[str]:
        """Ids of jobs leased to remote workers through this service and not yet settled."""
        return sorted(self._remote_held)

    def _hold_remote(self, jobs: list[Job]) -> list[Job]:
        """Note jobs leased to a remote worker, so a drain waits for them (unless already settled meanwhile)."""
        self._remote_held.update(job.id for job in jobs if job.status is PROCESSING)
        return jobs

    async def _abandon(self, leasing: asyncio.Future[list[Job]]) -> None:
        """Stop a lease call; jobs it already took go straight back."""
        if not leasing.done():
            leasing.cancel()  # still waiting, so it holds no jobs
            await asyncio.gather(leasing, return_exceptions=True)
            return
        if leasing.cancelled() or leasing.exception() is not None:
            return
        await self.hand_back(leasing.result())

    async def hand_back(self, jobs: Sequence[Job], reason: str = "undelivered") -> None:
        """Jobs leased for an answer that never reached its worker (or for a worker whose connection closed,
        ``reason="disconnected"``): back at once, as a lost run (jobq.lifecycle)."""
        handed_back = 0
        for job in jobs:
            with contextlib.suppress(JobqError):  # settled or cancelled meanwhile: nothing to hand back
                await self.store.release(job.id, job.lease_id or "", reason)
                handed_back += 1
            self._remote_held.discard(job.id)
        if handed_back:
            log.info("%d leased jobs are handed back (%s): they run again", handed_back, LOST_REASONS[reason])

    async def settle(self, settlements: Sequence[Settlement]) -> list[Job | JobqError]:
        """Complete or fail many leased jobs; each gets its own answer (the job, or why not, e.g. StaleLease).

        The store settles them in one write. More than ``--batch-limit`` of them is a ValidationFailed.
        """
        self.check_batch(len(settlements))
        return await self.store.settle_many(
            [
                StoreSettlement(item.id, item.lease_id, item.result) if item.error is None else failure(item.id, item)
                for item in settlements
            ]
        )

    def check_batch(self, count: int) -> None:
        """Refuse a batch (of jobs to enqueue or to settle) longer than ``--batch-limit``."""
        limit = self.config.batch_limit
        if count > limit:
            raise InvalidRequest(
                f"a batch holds at most {limit} jobs; this one has {count}",
                errors=[{"field": "jobs", "message": f"at most {limit} items"}],
            )

    async def heartbeat(self, leases: Sequence[tuple[str, str]], lease_seconds: float) -> list[Job | JobqError]:
        """Extend many leases at once; each gets its own answer (the job, or StaleLease)."""
        self.check_batch(len(leases))
        answers = await self.store.heartbeat_many(leases, lease_seconds)
        for answer in answers:
            if isinstance(answer, Job):
                self.remote_workers.saw(answer.worker)
        return answers

    async def fail(self, job_id: str, item: FailRequest) -> Job:
        """Record one failed attempt of a leased job."""
        [answer] = await self.store.settle_many([failure(job_id, item)])
        if isinstance(answer, JobqError):
            raise answer
        return answer

    async def append_log(self, job_id: str, lease_id: str, message: str) -> None:
        """Add a line to the log of a job leased under ``lease_id``."""
        await self.store.append_log(job_id, storable_text(message, MAX_LOG_CHARS), lease_id)

    async def set_progress(self, job_id: str, lease_id: str, fraction: float, note: str | None) -> None:
        """Record how far a job leased under ``lease_id`` is."""
        await self.store.set_progress(
            job_id, lease_id, fraction, None if note is None else storable_text(note, MAX_NOTE_CHARS)
        )

    async def retry(self, job_id: str) -> Job:
        """Run a failed or dead job again."""
        return await self.store.requeue(job_id)

    async def run_now(self, job_id: str) -> Job:
        """Make a scheduled or retrying job due now."""
        return await self.store.run_now(job_id)

    async def give_up(self, job_id: str, reason: str) -> Job:
        """Make a scheduled or retrying job dead, with ``reason`` as its error."""
        return await self.store.give_up(job_id, storable_text(reason, MAX_ERROR_CHARS))

    async def delete(self, job_id: str) -> Job:
        """Delete a job that is not running (and its logs); returns it as it was."""
        job = await self.store.delete(job_id)
        log.info("job %s deleted (it was %s)", job_id, job.status, extra=job.log_fields())
        self._wake_waiters(job_id)  # a wait here on it ends, with JobNotFound (other nodes' at their timeout)
        return job

    async def bulk(self, action: str, query: BulkRequest) -> BulkResult:
        """Retry or delete every job matching ``query``, up to its limit, newest first.

        Reads the store a page at a time; a job that changed meanwhile (retried or deleted
        by someone else, say) is counted as skipped. With search text (``q``), one call reads
        at most ``SEARCH_SCAN`` jobs, as a search does. ``more``: call again, from ``cursor``, for the rest.
        """
        if action == "retry" and query.status not in RERUNNABLE:
            raise InvalidRequest(
                f"only failed and dead jobs can be retried, not {query.status.value} ones",
                errors=[{"field": "status", "message": "failed or dead"}],
            )
        if action == "delete" and query.status is PROCESSING:
            raise InvalidRequest(
                "running jobs cannot be deleted: cancel them first",
                errors=[{"field": "status", "message": "any state but processing"}],
            )
        verb = {"retry": self.store.requeue, "delete": self.store.delete}[action]
        done = skipped = 0
        cursor = query.cursor
        while True:
            wanted = query.limit - done - skipped
            if query.q is None:
                page, cursor = await self.store.list_jobs(
                    status=query.status, queue=query.queue, job_type=query.type, limit=min(500, wanted), cursor=cursor
                )
            else:
                listing = ListQuery.model_construct(
                    status=query.status, queue=query.queue, type=query.type, q=query.q, limit=wanted, cursor=cursor
                )
                page, cursor = await self._search(listing, None)
            for job in page:
                try:
                    await verb(job.id)
                    done += 1
                except (JobNotFound, InvalidTransition):
                    skipped += 1
            if cursor is None or done + skipped >= query.limit or query.q is not None:
                break
        log.info("bulk %s of %s jobs: %d done, %d skipped", action, query.status, done, skipped)
        return BulkResult(done, skipped, more=cursor is not None, cursor=cursor)

    async def queues(self, owner: str | None = None) -> list[dict[str, Any]]:
        """Every queue that holds jobs or is paused: its counts by status, paused or not, and its next job's wait."""
        counts = await self.store.stats()
        flows = await self.flows(owner)
        now = self.store.clock()
        names = sorted(set(counts.by_queue) | set(counts.paused) | set(flows))
        return [
            {
                "name": name,
                "paused": name in counts.paused,
                "jobs": {status.value: counts.by_queue.get(name, {}).get(status.value, 0) for status in JobStatus},
                "oldest_wait_seconds": round(max(now - since, 0.0), 3)
                if (since := counts.next_ready_since.get(name)) is not None
                else 0.0,
                "flow": flows.get(name),
            }
            for name in names
        ]

    async def peek(self, queue: str) -> Job | None:
        """The job a worker would get next from ``queue`` (nothing is leased)."""
        return await self.store.peek(queue)

    async def logs(self, job_id: str, owner: str | None = None) -> list[dict[str, Any]]:
        """A job's log lines with RFC 3339 times."""
        if owner is not None:
            await self.get(job_id, owner)
        return [{"at": rfc3339(line["at"]), "message": line["message"]} for line in await self.store.logs(job_id)]

    async def follow_logs(self, job_id: str, timeout: float, owner: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """A job's log lines, then each new one once it is durable, until the job has finished (or ``timeout``).

        Woken by the store's feed (log lines and status changes), never by polling.
        """
        wake = asyncio.Event()
        followers = self._log_followers.setdefault(job_id, set())
        followers.add(wake)  # before the first read, so no line after it goes unseen
        unfollow = self.store.follow(job_id)  # lines and changes made on other nodes too
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            sent = 0
            while True:
                wake.clear()
                finished = (await self.get(job_id, owner)).finished  # read before the lines: none is missed
                lines = await self.logs(job_id)
                for line in lines[sent:]:
                    yield line
                sent = len(lines)
                left = deadline - loop.time()
                if finished or left <= 0:
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await wake.wait()
        finally:
            unfollow()
            followers.discard(wake)
            if not followers:
                self._log_followers.pop(job_id, None)

    async def list_jobs(self, query: ListQuery, owner: str | None = None) -> tuple[list[Job], str | None]:
        """One page of jobs (only ``owner``'s, when given), newest first, and the cursor of the next page."""
        if query.q is not None:
            return await self._search(query, owner)
        return await self.store.list_jobs(
            status=query.status,
            queue=query.queue,
            job_type=query.type,
            owner=owner,
            workflow=query.workflow,
            parent=query.parent,
            limit=query.limit,
            cursor=query.cursor,
        )

    async def _search(self, query: ListQuery, owner: str | None) -> tuple[list[Job], str | None]:
        """The jobs of ``query`` whose type, error or payload holds ``query.q`` (in any case), newest first.

        One call reads at most ``SEARCH_SCAN`` jobs, so a search of a big store never holds up the
        server; its cursor goes on from the last job read. A page may hold fewer matches than its
        limit (even none) and still have a next one.
        """
        needle = (query.q or "").casefold()
        # As the payload's JSON text spells it: a quote, a backslash or a control character escaped, so the
        # search finds what the payload holds, not the escapes (nor every string's quotes).
        payload_needle = to_json(needle).decode()[1:-1]
        found: list[Job] = []
        cursor, scanned = query.cursor, 0
        while cursor is not None or scanned == 0:
            page, following = await self.store.list_jobs(
                status=query.status,
                queue=query.queue,
                job_type=query.type,
                owner=owner,
                workflow=query.workflow,
                parent=query.parent,
                limit=min(SEARCH_PAGE, SEARCH_SCAN - scanned),
                cursor=cursor,
            )
            scanned += len(page) or 1
            for job in page:
                if (
                    needle in job.type.casefold()
                    or needle in (job.error or "").casefold()
                    or payload_needle in to_json(job.payload).decode().casefold()
                ):
                    found.append(job)
                    if len(found) == query.limit:
                        return found, str(job.seq) if job is not page[-1] or following else None
            cursor = following
            if scanned >= SEARCH_SCAN:
                break
        return found, cursor

    async def set_paused(self, queue: str, paused: bool) -> None:
        """Pause (accept but run nothing) or resume a queue."""
        await self.store.set_paused(queue, paused)
        log.info("queue %s %s", queue, "paused" if paused else "resumed")

    async def set_flow(self, queue: str, flow: QueueFlow | None) -> dict[str, Any] | None:
        """Set (None: remove) a queue's limits; answers its flow's view (None when removed)."""
        await self.store.set_flow(queue, flow)
        log.info("queue %s: limits %s", queue, "removed" if flow is None else flow.to_dict())
        return None if flow is None else (await self.flows()).get(queue)

    async def flows(self, owner: str | None = None) -> dict[str, dict[str, Any]]:
        """Each queue with limits: the limits, what runs, and what they hold back now (naming only
        ``owner``'s keys, when given)."""
        now = self.store.clock()
        return {queue: state.view(now, owner) for queue, state in (await self.store.flows()).items()}

    async def record(self, job: Job, owner: str | None = None) -> dict[str, Any]:
        """The job as ``GET /status`` answers it: its record, with ``held`` when a limit holds it back, and
        ``children`` when jobs depend on it (only ``owner``'s, when given; not while a restarted store still reads
        its jobs back)."""
        view = job.to_dict()
        if job.status is PENDING and (held := await self.held(job)) is not None:
            view["held"] = held
        if not self.store.loading and (children := await self.children(job.id, owner)):  # listing waits for the load
            view["children"] = children
        return view

    async def held(self, job: Job) -> dict[str, Any] | None:
        """Which limit of its queue holds back a ready job now (None: none does, or it is not ready)."""
        if job.status is not PENDING:
            return None
        state = (await self.store.flows()).get(job.queue)
        return None if state is None else state.held(job.concurrency_key, job.concurrency_limit, self.store.clock())

    async def clear(self, queue: str) -> int:
        """Delete a queue's waiting jobs; returns how many."""
        cleared = await self.store.clear(queue)
        log.info("queue %s cleared: %d waiting jobs deleted", queue, cleared)
        return cleared

    async def nodes(self) -> list[dict[str, Any]]:
        """The jobq processes using this store that were heard from lately (jobq.nodes), this one included."""
        return [
            {**card, "started_at": rfc3339(card["started_at"]), "seen_at": rfc3339(card["seen_at"])}
            for card in await self.store.nodes()
        ]

    async def stats(self, owner: str | None = None) -> dict[str, Any]:
        """Counts per status and queue, queue depth, busy workers, throughput, uptime."""
        counts = await self.store.stats()
        return {
            "jobs": {status.value: counts.by_status.get(status.value, 0) for status in JobStatus},
            "queues": counts.by_queue,
            "paused_queues": counts.paused,
            "flows": await self.flows(owner),
            "queue_depth": counts.waiting,
            "workers": {"total": self.pool.concurrency, "busy": self.pool.busy},
            "waiting_requests": sum(len(w) for w in self._change_waiters.values()),  # ?wait= and watches
            "waiting_leases": self._lease_polls,  # workers' lease long-polls parked here
            "jobs_per_second": round(self.finish_rate.per_second(), 2),
            "uptime_seconds": round(time.time() - self.started_at, 3),
            "draining": self.draining,
        }
