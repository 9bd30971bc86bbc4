"""The in-process worker pool: N asyncio tasks draining one ``asyncio.Queue``.

A feeder task leases ready jobs from the store in batches (as many as there are
idle workers, plus ``prefetch``) and puts them on the queue; each worker takes a
job, runs its handler under the job's timeout, and settles it under the lease it
was given: complete, fail (retried under the job's policy) or, on a forced stop,
release. A lease that lapsed meanwhile makes the settle a no-op (StaleLease), and
the lease keeper stops a handler whose lease is gone.

A handler gets its own copy of the job (payload included): nothing it does to
it reaches the store. A plain ``def`` handler runs in the pool's threads. A failed
attempt keeps its traceback. The feeder and the lease keeper are supervised: an
unexpected error is logged at once and the task restarts after a backoff.

A worker does not wait for its job's settle: the runs that end in one pass of
the event loop are settled together, in one ``settle_many`` call (one write, or
one request for a remote worker), while the workers take their next jobs. Their
leases stay held, and extended, until that call answers; a pool holds at most
twice its concurrency plus ``prefetch`` leases. Settling never needs
``asyncio.shield``: the call runs in a task nobody cancels (a stop waits for it),
and every store method changes the job and queues its write before its first
``await``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import traceback
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from jobq.errors import JobNotFound, JobqError, StaleLease
from jobq.handlers import JobContext, Registry, Reporter, ThreadJobContext
from jobq.job import CANCELLED, Job
from jobq.lifecycle import Settlement
from jobq.retry import Retry
from jobq.values import MAX_ERROR_CHARS, MAX_TRACEBACK_CHARS, json_value, storable_text

log = logging.getLogger("jobq.workers")

IDLE_POLL_SECONDS = 1.0
RESTART_SECONDS = (0.1, 5.0)  # a supervised task that failed restarts after this, doubling up to the cap


def describe(exc: BaseException) -> str:
    """How a failed attempt's error reads: ``ValueError: bad input`` (storable, cut to what a job keeps)."""
    return storable_text(f"{type(exc).__name__}: {exc}", MAX_ERROR_CHARS)


def traceback_of(exc: BaseException) -> str:
    """A failed attempt's traceback, its last lines (storable)."""
    return storable_text("".join(traceback.format_exception(exc)), MAX_TRACEBACK_CHARS, keep="tail")


class _ThreadsBusy:
    """Counts the plain ``def`` handlers running in handler threads now, in every pool of the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def run(self, handler: Callable[[Any], Any], context: Any) -> Any:
        """Call ``handler(context)`` in this thread, counted while it runs."""
        with self._lock:
            self.count += 1
        try:
            return handler(context)
        finally:
            with self._lock:
                self.count -= 1


_THREADS_BUSY = _ThreadsBusy()


def handler_threads_running() -> int:
    """How many plain ``def`` handlers still run in their threads (nothing can stop one), in any pool."""
    return _THREADS_BUSY.count


async def supervise(name: str, run: Callable[[], Awaitable[None]]) -> None:
    """Run ``run`` until it returns; if it fails, log it at once and start it again after a growing pause."""
    pause = RESTART_SECONDS[0]
    while True:
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; restarting it in %.1fs", name, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, RESTART_SECONDS[1])


class JobSource(Reporter, Protocol):
    """Where a pool leases jobs and settles them: a Store in process, or a server over HTTP."""

    async def lease(
        self,
        max_jobs: int,
        lease_seconds: float,
        *,
        queues: Sequence[str] | None = None,
        worker: str | None = None,
        wait: float = 0.0,
        types: Sequence[str] | None = None,
    ) -> list[Job]: ...

    async def heartbeat_many(
        self, leases: Sequence[tuple[str, str]], lease_seconds: float
    ) -> Sequence[Job | JobqError]: ...

    async def settle_many(self, settlements: Sequence[Settlement]) -> Sequence[object]:
        """Complete or fail leased jobs; one answer each, in order: a JobqError for one that did not land."""
        ...

    async def release(self, job_id: str, lease_id: str) -> Job: ...


@dataclass(slots=True)  # not frozen: one per run (see Settlement)
class Ending:
    """How a run's attempt ended: completed (``value`` is the result), retry (a Retry), failed or
    timeout (``value`` is the error text, with the traceback of what the handler raised), or cancelled."""

    outcome: str
    value: object = None
    traceback: str | None = None


Leased = tuple[Job, str]
"""A job this pool leased and the lease id it holds: the job object itself may be leased again later."""


@dataclass(frozen=True, slots=True)
class DrainReport:
    """What a drain achieved."""

    finished: int  # jobs settled while draining
    unfinished: list[str]  # ids released or abandoned when the drain timed out


def settlement_of(leased: Leased, ending: Ending) -> Settlement | None:
    """What the store is told of a run that ended so: None for a cancelled job (whoever cancelled it settled it)."""
    job_id, lease_id = leased[0].id, leased[1]
    outcome, value = ending.outcome, ending.value
    if outcome == "completed":
        try:
            return Settlement(job_id, lease_id, json_value(value))
        except ValueError as exc:
            outcome, value = "failed", f"the handler's result cannot be stored: {exc}"
    if outcome == "retry":
        assert isinstance(value, Retry)
        return Settlement(
            job_id, lease_id, error=storable_text(str(value), MAX_ERROR_CHARS), retry_in=value.defer, outcome="retry"
        )
    if outcome == "cancelled":
        return None
    error = storable_text(str(value), MAX_ERROR_CHARS)
    return Settlement(job_id, lease_id, error=error, outcome=outcome, traceback=ending.traceback)


class WorkerPool:
    """Runs jobs from ``store`` with ``concurrency`` worker tasks."""

    def __init__(
        self,
        store: JobSource,
        registry: Registry,
        *,
        concurrency: int,
        lease_seconds: float,
        queues: Sequence[str] | None = None,
        idle_wait: float = IDLE_POLL_SECONDS,
        prefetch: int = 0,
        types: Sequence[str] | None = None,
        check_every: float | None = None,
    ) -> None:
        self.store = store
        self.types = types  # the job types to lease (None: every type)
        # How often held leases are extended, which is also how soon a run learns that its job was
        # cancelled elsewhere (a stale lease stops its handler); a third of the lease by default.
        self.check_every = check_every if check_every is not None else lease_seconds / 3
        self.prefetch = prefetch  # jobs leased ahead of idle workers
        self.queues = queues
        self.idle_wait = idle_wait
        self.registry = registry
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.name = f"{os.uname().nodename}:{os.getpid()}"
        self.busy = 0
        self.settled = 0
        self._queue: asyncio.Queue[Leased | None] = asyncio.Queue(maxsize=max(concurrency + prefetch, 1))
        self._room = asyncio.Event()
        # By lease id, not job id: a job whose lease lapsed may be leased again to this same pool,
        # and the stale run and the live one must never be taken for each other.
        self._held: dict[str, Leased] = {}  # leased by this pool and not yet settled
        self._max_held = 2 * (concurrency + prefetch)  # running or queued, and as many settles on their way
        self._endings: list[tuple[Leased, Settlement | None]] = []  # finished runs not yet handed to the store
        self._settling: set[asyncio.Task[None]] = set()  # settle_many calls on their way
        self._running: dict[str, tuple[str, asyncio.Task[None]]] = {}  # lease -> (job id, task in its handler)
        self._interrupted: set[str] = set()  # leases whose handler interrupt() cancelled
        self._released: list[str] = []  # ids handed back unfinished by a stop
        self._feeder: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._threads: ThreadPoolExecutor | None = None  # for plain def handlers, made when first needed
        self._draining = False
        self._run_waiting = True

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        """Start the feeder, the lease keeper and the worker tasks (nothing if concurrency is 0)."""
        if self.concurrency <= 0:
            return
        self._workers = [asyncio.create_task(self._work(), name=f"jobq-worker-{i}") for i in range(self.concurrency)]
        self._feeder = asyncio.create_task(supervise("the feeder", self._feed), name="jobq-feeder")
        self._keeper = asyncio.create_task(supervise("the lease keeper", self._keep_leases), name="jobq-lease-keeper")

    async def drain(self, timeout: float, *, run_waiting: bool = True) -> DrainReport:
        """Finish held jobs (and, with ``run_waiting``, every ready job), then stop.

        Without ``run_waiting``, the jobs leased ahead (prefetched, not started) are
        released at once, for other workers. After ``timeout`` seconds, what is left
        is released: back to pending in the store (a durable store runs them after
        the next start). Scheduled jobs are left for later.
        """
        if not self._workers:
            return DrainReport(0, [])
        settled_before = self.settled
        self._draining = True
        self._run_waiting = run_waiting
        if self._feeder is not None:  # restart the feeder so it stops waiting for new work
            self._feeder.cancel()
            await asyncio.gather(self._feeder, return_exceptions=True)
        if not run_waiting:
            await self._release_queued()
        self._feeder = asyncio.create_task(supervise("the feeder", self._feed), name="jobq-feeder-draining")
        # asyncio.wait, not gather under a timeout: a timeout would cancel the gather and with it
        # every worker, which releases and forgets its job before anyone can report it.
        done, pending = await asyncio.wait([*self._workers, self._feeder], timeout=timeout)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error("%s failed while draining: %s", task.get_name(), task.exception())
        if pending:
            log.warning("drain timeout (%gs) reached with %d jobs unfinished", timeout, len(self._held))
        unfinished = await self._stop_now()
        return DrainReport(self.settled - settled_before, unfinished)

    async def _stop_now(self) -> list[str]:
        """Cancel every task and hand unfinished jobs back to the store; returns their ids.

        Jobs whose handler finished are settled, not released: their settles are sent and waited for.
        """
        tasks = [t for t in (*self._workers, self._feeder, self._keeper) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # a cancelled worker releases its job
        self._send_endings()
        while self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)
        for leased in list(self._held.values()):  # leased but never started
            await self._release(leased)
            self._unhold(leased)
        if self._threads is not None:  # a handler thread still running cannot be stopped: it is left to end
            self._threads.shutdown(wait=False, cancel_futures=True)
        return list(self._released)

    async def _release_queued(self) -> None:
        """Hand back the jobs leased ahead that no worker has started."""
        queued: list[Leased] = []
        while not self._queue.empty():
            leased = self._queue.get_nowait()
            if leased is not None:
                queued.append(leased)
        for leased in queued:
            await self._release(leased)
            self._unhold(leased)

    def held(self) -> list[str]:
        """Ids of jobs this pool has leased and not settled."""
        return list(dict.fromkeys(job.id for job, _ in self._held.values()))

    def running(self) -> int:
        """How many runs are inside their handlers now (the rest of ``held`` is leased ahead, or settling)."""
        return len(self._running)

    def interrupt(self, job_id: str) -> bool:
        """Cancel the handler of every run of this job here now (after the store marked it cancelled)."""
        runs = [lease_id for lease_id, (running, _) in self._running.items() if running == job_id]
        return any([self._interrupt(lease_id) for lease_id in runs])

    def _interrupt(self, lease_id: str) -> bool:
        """Cancel the handler of the run that holds ``lease_id``, if it is inside it and not interrupted yet."""
        run = self._running.get(lease_id)
        if run is None or lease_id in self._interrupted:
            return False
        self._interrupted.add(lease_id)
        run[1].cancel()
        return True

    # -- feeding -----------------------------------------------------------
    async def _feed(self) -> None:
        queue = self._queue
        while True:
            # Lease for idle workers only, unless told to prefetch: a job leased early jumps ahead
            # of higher-priority jobs that arrive while it sits here, but a worker that finds the
            # next job waiting does not have to wait for the feeder (see --prefetch).
            waiting = queue.qsize()
            room = min(self.concurrency + self.prefetch - self.busy - waiting, self._max_held - len(self._held))
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            if self._draining:
                if not self._run_waiting:
                    break
                jobs = await self.store.lease(
                    room, self.lease_seconds, queues=self.queues, worker=self.name, types=self.types
                )
                if not jobs:
                    break
            else:
                jobs = await self._lease_or_wait(room)
            for job in jobs:
                leased = (job, job.lease_id or "")
                self._held[leased[1]] = leased
                queue.put_nowait(leased)
        for _ in self._workers:
            await queue.put(None)  # one stop sentinel per worker, after every real job

    async def _lease_or_wait(self, room: int) -> list[Job]:
        try:
            return await self.store.lease(
                room, self.lease_seconds, queues=self.queues, worker=self.name, wait=self.idle_wait, types=self.types
            )
        except JobqError as exc:  # the store is down: keep the loop alive and retry
            log.error("leasing jobs failed: %s", exc)
            await asyncio.sleep(IDLE_POLL_SECONDS)
            return []

    async def _keep_leases(self) -> None:
        """Extend the leases of held jobs well before they run out, all in one call.

        While that fails (the store or server is out of reach) it says so once, and again
        when it works: the next round always tries again.
        """
        failing_since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.check_every)
            held = list(self._held.values())
            if not held:
                continue
            try:
                answers = await self.store.heartbeat_many(
                    [(job.id, lease_id) for job, lease_id in held], self.lease_seconds
                )
            except JobqError as exc:
                if failing_since is None:
                    failing_since = loop.time()
                    log.warning(
                        "extending %d leases failed: %s; trying again every %gs",
                        len(held),
                        exc.detail,
                        self.check_every,
                    )
                continue
            if failing_since is not None:
                log.info("extending leases works again, after %.1fs", loop.time() - failing_since)
                failing_since = None
            for (job, lease_id), answer in zip(held, answers, strict=True):
                if isinstance(answer, StaleLease | JobNotFound):  # cancelled, lapsed and run elsewhere, or gone
                    if self._interrupt(lease_id):
                        log.info("job %s lost its lease (cancelled, or it lapsed): its handler is stopped", job.id)
                elif isinstance(answer, JobqError):
                    log.warning(
                        "extending the lease of job %s failed: %s", job.id, answer.detail, extra=job.log_fields()
                    )

    # -- running -----------------------------------------------------------
    async def _work(self) -> None:
        queue = self._queue
        task = asyncio.current_task()
        assert task is not None
        while True:
            leased = await queue.get()
            if leased is None:
                return
            await self._run(leased, task)
            self._room.set()

    async def _run(self, leased: Leased, task: asyncio.Task[None]) -> None:
        """Run one job; its settle is handed on, and the worker is free for the next job at once."""
        self.busy += 1
        try:
            ending = await self._execute(leased, task)
        except asyncio.CancelledError:
            await self._release(leased)
            self._unhold(leased)
            raise
        finally:
            self.busy -= 1
        self._end(leased, settlement_of(leased, ending))

    # -- settling: the runs that end in one pass of the event loop go to the store in one call --
    def _end(self, leased: Leased, settlement: Settlement | None) -> None:
        """Queue a finished run's settlement (None: nothing to settle, a cancelled job); sent after this pass."""
        if not self._endings:
            asyncio.get_running_loop().call_soon(self._send_endings)
        self._endings.append((leased, settlement))

    def _send_endings(self) -> None:
        endings, self._endings = self._endings, []
        if endings:  # a task, never cancelled: the jobs did finish (the store changes them before its first await)
            task = asyncio.create_task(self._settle(endings), name="jobq-settle")
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)

    async def _settle(self, endings: list[tuple[Leased, Settlement | None]]) -> None:
        """Settle finished runs in one call; held leases are kept (and extended) until it answers."""
        sent = [(leased, settlement) for leased, settlement in endings if settlement is not None]
        try:
            answers: Sequence[object] = await self.store.settle_many([s for _, s in sent]) if sent else []
        except JobqError as exc:  # the store refused the write (full, unavailable): its message says why
            answers = [exc] * len(sent)
        except Exception as exc:
            log.exception("settling %d jobs failed", len(sent))
            answers = [exc] * len(sent)
        try:
            for (leased, _), answer in zip(sent, answers, strict=True):
                job = leased[0]
                if isinstance(answer, StaleLease):
                    log.debug(
                        "job %s lost its lease while running (cancelled or expired)", job.id, extra=job.log_fields()
                    )
                elif isinstance(answer, JobqError):
                    log.error("settling job %s failed: %s", job.id, answer.detail, extra=job.log_fields())
                elif not isinstance(answer, BaseException):
                    self.settled += 1
            self.settled += len(endings) - len(sent)
        finally:
            for leased, _ in endings:
                self._unhold(leased)
            self._room.set()

    def _unhold(self, leased: Leased) -> None:
        """Forget a settled or released lease."""
        self._held.pop(leased[1], None)

    def _invoke(self, handler: Any, job_type: str, context: JobContext) -> Awaitable[Any]:
        """Start the handler: an ``async def`` on the loop, a plain ``def`` in one of the pool's threads."""
        if not self.registry.runs_in_thread(job_type):
            return handler(context)  # type: ignore[no-any-return]
        if self._threads is None:
            self._threads = ThreadPoolExecutor(max(self.concurrency, 1), thread_name_prefix="jobq-handler")
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._threads, _THREADS_BUSY.run, handler, ThreadJobContext(context, loop))

    async def _execute(self, leased: Leased, task: asyncio.Task[None]) -> Ending:
        """Run the handler and say how the attempt ended.

        ``interrupt()`` cancels ``task`` (this worker) while it is inside the handler; that
        cancellation, and only that one, becomes the "cancelled" outcome.
        """
        job, lease_id = leased
        if job.status is CANCELLED:  # cancelled while it sat in this pool's queue
            return Ending("cancelled")
        try:
            handler = self.registry.get(job.type)
        except JobqError as exc:
            return Ending("failed", exc.detail)
        context = JobContext(job, self.store, lease_id)  # copies the payload once the handler looks
        self._running[lease_id] = (job.id, task)
        guard: asyncio.Timeout | None = None
        try:
            if job.timeout is None:  # most jobs: skip the cost of a timeout context
                return Ending("completed", await self._invoke(handler, job.type, context))
            async with asyncio.timeout(job.timeout) as guard:
                result = await self._invoke(handler, job.type, context)
            if guard.expired():  # the handler swallowed its cancellation: the attempt still timed out
                return Ending("timeout", f"timed out after {job.timeout:g}s")
            return Ending("completed", result)
        except Retry as request:
            return Ending("retry", request)
        except asyncio.CancelledError:
            if lease_id in self._interrupted:
                self._interrupted.discard(lease_id)
                if task.uncancel() == 0:
                    return Ending("cancelled")
            if task.cancelling() == 0:  # raised by the handler itself, not a cancellation of this worker
                return Ending("failed", "CancelledError: the handler was cancelled from within")
            raise
        except TimeoutError as exc:
            if guard is not None and guard.expired():
                return Ending("timeout", f"timed out after {job.timeout:g}s")
            return self._failed(job, exc)  # the handler's own timeout (a client call, wait_for, ...)
        except BaseException as exc:  # SystemExit too: one handler never stops the server
            return self._failed(job, exc)
        finally:
            del self._running[lease_id]
            if lease_id in self._interrupted:  # the handler swallowed the interrupt: take it back
                self._interrupted.discard(lease_id)
                task.uncancel()

    @staticmethod
    def _failed(job: Job, exc: BaseException) -> Ending:
        """A handler raised: its error and traceback go into the attempt, and the traceback into the log."""
        log.warning("job %s (%s) raised %s", job.id, job.type, type(exc).__name__, exc_info=exc, extra=job.log_fields())
        return Ending("failed", describe(exc), traceback_of(exc))

    async def _release(self, leased: Leased) -> None:
        """Hand an unfinished job back to the store and note its id (unless it was settled meanwhile)."""
        job, lease_id = leased
        try:
            await self.store.release(job.id, lease_id)
        except StaleLease:
            return  # settled meanwhile: finished, or cancelled through the API
        except Exception:
            log.exception(
                "releasing job %s failed; it runs again once its lease expires", job.id, extra=job.log_fields()
            )
        self._released.append(job.id)
