"""Prometheus metrics: one ``CollectorRegistry`` per app, counted where things happen, read at scrape.

Families (prometheus.io naming: ``jobq_`` prefix, base units, counters end in ``_total``;
label values are queue names, job types, outcomes, route templates and method names, never job ids):

* ``jobq_jobs_enqueued_total{queue,type}``: jobs accepted (a replayed id is not counted again);
* ``jobq_jobs_finished_total{queue,type,outcome}``: jobs that reached a final state
  (outcome ``completed``, ``failed``, ``dead`` or ``cancelled``);
* ``jobq_jobs_retried_total{queue,type}``: failed attempts followed by another one, and re-runs by hand;
* ``jobq_leases_expired_total{queue,type}``: attempts that ended because their lease ran out;
* ``jobq_job_wait_seconds{queue}``: from when a job could run (created, due, released) to its attempt's start;
* ``jobq_job_run_seconds{queue}``: how long each attempt ran;
* ``jobq_queue_depth{queue,state}``: waiting jobs (``pending``, ``scheduled``, ``retrying``), read at scrape;
* ``jobq_jobs_running{queue}`` and ``jobq_queue_paused{queue}``, read at scrape;
* ``jobq_workers{state}``: this process's worker tasks, ``busy`` or ``idle``, read at scrape;
* ``jobq_queue_oldest_job_age_seconds{queue}``: how long the job next in line has waited (since it was
  created or fell due, released or re-run), read at scrape: in a queue whose jobs share one priority,
  the oldest job (these four are the store's: on a store shared by several jobq processes, one of them
  at a time reports them, so a sum over the processes counts each job once);
* ``jobq_http_requests_total{method,route,code}`` and ``jobq_http_request_duration_seconds{method,route,code}``;
* ``jobq_grpc_requests_total{method,code}`` and ``jobq_grpc_request_duration_seconds{method,code}``;
* ``jobq_faktory_commands_total{command,result}``: Faktory protocol commands (``ok`` or ``error``), and
  ``jobq_faktory_connections``: its connections open now, read at scrape;
* ``jobq_schedule_ticks_total{schedule,outcome}``: schedule ticks this process handled: ``fired`` (it
  enqueued the tick's job), ``skipped`` (missed, with missed=skip) or ``failed`` (the job could not be
  enqueued; the next check tries again);
* ``jobq_store_commit_seconds``: each group commit of the SQLite store (write and fsync);
* ``jobq_build_info{version}``.

The hot path stays cheap: counters and histograms are kept as plain numbers
(jobq/tally.py) and rendered by prometheus-client only at scrape; each labelled
series is created once and cached, so a job's state change costs a dict lookup and
an addition, with no lock. Depth gauges are computed from the store's counters at
scrape time, not updated per job.

Queue names and job types come from clients, so each family holds at most
``MAX_LABEL_SETS`` of them; beyond that, new ones are counted under ``_other``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Info
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from jobq import __version__
from jobq.errors import StoreUnavailable
from jobq.flow import FlowState
from jobq.job import DEAD, FAILED, PENDING, PROCESSING, RETRYING, SCHEDULED, TERMINAL, Job, JobStatus
from jobq.store.base import Store, StoreStats
from jobq.tally import CounterFamily, HistogramFamily

if TYPE_CHECKING:
    from jobq.service import JobService

log = logging.getLogger("jobq.metrics")

MAX_LABEL_SETS = 1000  # distinct (queue, type) pairs, or queues, one family holds before folding into OTHER
OTHER = "_other"
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
CLIENT_CLOSED = 499  # the client hung up before the answer (as nginx counts it)

JOB_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
COMMIT_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
WAITING_STATES = (JobStatus.WAITING, PENDING, SCHEDULED, RETRYING)


class JobSeries:
    """The cached children one (queue, type) pair counts into."""

    __slots__ = ("enqueued", "expired", "finished", "retried", "run", "wait")

    def __init__(self, metrics: Metrics, queue: str, job_type: str) -> None:
        self.enqueued = metrics.enqueued.labels(queue, job_type)
        self.retried = metrics.retried.labels(queue, job_type)
        self.expired = metrics.leases_expired.labels(queue, job_type)
        self.finished = {status: metrics.finished.labels(queue, job_type, status.value) for status in TERMINAL}
        self.wait = metrics.wait.labels(queue)
        self.run = metrics.run.labels(queue)


class Metrics:
    """Every jobq metric family, in a registry of its own (one per app, so tests never share counts)."""

    def __init__(self, version: str = __version__) -> None:
        self.registry = registry = CollectorRegistry()
        job_labels = ["queue", "type"]
        self.enqueued = CounterFamily("jobq_jobs_enqueued", "Jobs accepted.", job_labels, registry)
        self.finished = CounterFamily(
            "jobq_jobs_finished",
            "Jobs that reached a final state, by outcome: completed, failed, dead or cancelled.",
            [*job_labels, "outcome"],
            registry,
        )
        self.retried = CounterFamily(
            "jobq_jobs_retried",
            "Failed attempts followed by another attempt, and failed or dead jobs re-run by hand.",
            job_labels,
            registry,
        )
        self.leases_expired = CounterFamily(
            "jobq_leases_expired", "Attempts that ended because their lease ran out.", job_labels, registry
        )
        self.wait = HistogramFamily(
            "jobq_job_wait_seconds",
            "Seconds from when a job could run (created, due or released) to the start of its attempt.",
            ["queue"],
            registry,
            JOB_BUCKETS,
        )
        self.run = HistogramFamily(
            "jobq_job_run_seconds", "Seconds each attempt ran.", ["queue"], registry, JOB_BUCKETS
        )
        self.http_requests = CounterFamily(
            "jobq_http_requests",
            "HTTP requests answered, by method, route template and status code (499: the client hung up).",
            ["method", "route", "code"],
            registry,
        )
        self.http_duration = HistogramFamily(
            "jobq_http_request_duration_seconds",
            "Seconds from routing an HTTP request to its answer (long-polls included).",
            ["method", "route", "code"],
            registry,
            REQUEST_BUCKETS,
        )
        self.grpc_requests = CounterFamily(
            "jobq_grpc_requests",
            "gRPC calls finished, by method and status code.",
            ["method", "code"],
            registry,
        )
        self.grpc_duration = HistogramFamily(
            "jobq_grpc_request_duration_seconds",
            "Seconds each gRPC call took (streams and long-polls included).",
            ["method", "code"],
            registry,
            REQUEST_BUCKETS,
        )
        self.faktory_commands = CounterFamily(
            "jobq_faktory_commands",
            "Faktory protocol commands answered, by command and result (ok or error).",
            ["command", "result"],
            registry,
        )
        self._faktory: dict[tuple[str, bool], Any] = {}
        self.schedule_ticks = CounterFamily(
            "jobq_schedule_ticks",
            "Schedule ticks handled here, by schedule and outcome (fired, skipped or failed).",
            ["schedule", "outcome"],
            registry,
        )
        self.commit = HistogramFamily(
            "jobq_store_commit_seconds",
            "Seconds each store group commit took (writing the group, then COMMIT and its fsync).",
            [],
            registry,
            COMMIT_BUCKETS,
        ).labels()
        Info("jobq_build", "The running jobq's version.", registry=registry).info({"version": version})
        self.state = StateCollector()
        registry.register(self.state)
        self._jobs: dict[tuple[str, str], JobSeries] = {}
        self._http: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._grpc: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._folding = False
        self._render = make_aiohttp_handler(self.registry)

    # -- attaching ------------------------------------------------------------
    def watch(self, store: Store, service: JobService) -> None:
        """Count ``service``'s jobs, observe ``store``'s commits, and read both at scrape."""
        store.add_listener(self.job_changed)
        service.add_enqueue_listener(self.jobs_enqueued)
        if hasattr(store, "on_commit"):  # the SQLite store
            store.on_commit = self.commit.observe
        self.state.service = service
        service.schedules.on_tick = self.schedule_tick

    # -- jobs (called on the event loop, from store and service listeners) ----
    def series(self, queue: str, job_type: str) -> JobSeries:
        """The children for a (queue, type) pair, created on first use."""
        key = (queue, job_type)
        series = self._jobs.get(key)
        if series is None:
            if len(self._jobs) >= MAX_LABEL_SETS:
                self._fold_warning()
                key = (OTHER, OTHER)
                series = self._jobs.get(key)
            if series is None:
                series = self._jobs[key] = JobSeries(self, *key)
        return series

    def _fold_warning(self) -> None:
        if not self._folding:
            self._folding = True
            log.warning("more than %d queue and job type pairs: counting new ones as %s", MAX_LABEL_SETS, OTHER)

    def jobs_enqueued(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            self.series(job.queue, job.type).enqueued.inc()

    def job_changed(self, job: Job, before: JobStatus) -> None:
        """Store listener: count the change of one job's status."""
        series = self._jobs.get((job.queue, job.type)) or self.series(job.queue, job.type)
        status = job.status
        if status is PROCESSING:
            ready = job.ready_at or job.created_at
            series.wait.observe(max((job.started_at or time.time()) - ready, 0.0))
            return
        if before is PROCESSING and job.history:
            attempt = job.history[-1]
            if attempt.finished_at is not None:
                series.run.observe(max(attempt.finished_at - attempt.started_at, 0.0))
            if attempt.outcome == "lease-expired":
                series.expired.inc()
        if status is PENDING:
            if before in (FAILED, DEAD):
                series.retried.inc()
        elif status is RETRYING:
            series.retried.inc()
        elif status in TERMINAL:
            series.finished[status].inc()

    # -- HTTP ---------------------------------------------------------------------
    def http_observe(self, method: str, route: str, code: int, seconds: float) -> None:
        """Count and time one HTTP answer (the app's middleware calls it for every request: jobq/app.py)."""
        if method not in HTTP_METHODS:
            method = "other"
        key = (method, route, code)
        children = self._http.get(key)
        if children is None:
            labels = (method, route, str(code))
            children = self._http[key] = (self.http_requests.labels(*labels), self.http_duration.labels(*labels))
        children[0].inc()
        children[1].observe(seconds)

    # -- gRPC ---------------------------------------------------------------------
    def grpc_observe(self, method: str, code: str, seconds: float) -> None:
        key = (method, code)
        children = self._grpc.get(key)
        if children is None:
            children = self._grpc[key] = (
                self.grpc_requests.labels(method, code),
                self.grpc_duration.labels(method, code),
            )
        children[0].inc()
        children[1].observe(seconds)

    # -- Faktory protocol ------------------------------------------------------------
    def faktory_observe(self, command: str, ok: bool) -> None:
        """Count one Faktory command's answer (``command`` is one jobq serves, or ``other``)."""
        key = (command, ok)
        child = self._faktory.get(key)
        if child is None:
            child = self._faktory[key] = self.faktory_commands.labels(command, "ok" if ok else "error")
        child.inc()

    # -- schedules -------------------------------------------------------------------
    def schedule_tick(self, schedule: str, outcome: str) -> None:
        self.schedule_ticks.labels(schedule, outcome).inc()

    # -- scraping -----------------------------------------------------------------
    async def scrape(self, request: web.Request, store: Store) -> web.Response:
        """Answer a scrape (text or OpenMetrics, as the scraper's Accept asks), with the store read now.

        A store that cannot answer (it went away) leaves out the gauges read from it and sets
        ``jobq_store_up`` to 0, and the scrape still answers: an alert tells a store that is away
        from a process that is down.
        """
        try:
            self.state.snapshot = await store.stats()
            self.state.flows = await store.flows()
        except StoreUnavailable:
            self.state.snapshot, self.state.flows, self.state.store_up = None, {}, False
        else:
            self.state.store_up = store.unavailable is None
        return await self._render(request)


class StateCollector:
    """Gauges read at scrape time: queue depth, running jobs, paused queues and busy workers.

    The scrape handler refreshes ``snapshot`` (the store's counters) just before rendering.
    Queues seen once stay listed at 0, so their series do not vanish when they empty.
    """

    def __init__(self) -> None:
        self.snapshot: StoreStats | None = None
        self.flows: dict[str, FlowState] = {}  # the queues with limits, read with the snapshot
        self.service: JobService | None = None
        self.faktory_connections: Callable[[], int] | None = None  # set while a Faktory listener runs
        self.store_up = True  # whether the store answered the last scrape (and can write)
        self._queues: set[str] = set()

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        depth, running, paused, oldest, workers, held = self._families()
        snapshot = self.snapshot
        if snapshot is not None and (self.service is None or self.service.store.reports_totals):
            now = self.service.store.clock() if self.service is not None else time.time()
            for queue in snapshot.by_queue:
                if len(self._queues) < MAX_LABEL_SETS:
                    self._queues.add(queue)
            for queue in sorted(self._queues):
                counts = snapshot.by_queue.get(queue, {})
                for state in WAITING_STATES:
                    depth.add_metric([queue, state.value], counts.get(state.value, 0))
                running.add_metric([queue], counts.get(PROCESSING.value, 0))
                paused.add_metric([queue], 1 if queue in snapshot.paused else 0)
                ready_since = snapshot.next_ready_since.get(queue)
                oldest.add_metric([queue], max(now - ready_since, 0.0) if ready_since is not None else 0.0)
            for queue, flow in sorted(self.flows.items()):
                holds = flow.held_by(now)
                held.add_metric([queue, "concurrency"], int(holds["concurrency"]))
                held.add_metric([queue, "rate"], int(holds["rate_until"] is not None))
                held.add_metric([queue, "key_concurrency"], holds["keys_at_limit"])
                held.add_metric([queue, "key_rate"], holds["keys_rate_limited"])
        if self.service is not None:
            pool = self.service.pool
            workers.add_metric(["busy"], pool.busy)
            workers.add_metric(["idle"], max(pool.concurrency - pool.busy, 0))
        store_up = GaugeMetricFamily(
            "jobq_store_up",
            "1 while this process's store answers and can write, 0 while it cannot.",
            int(self.store_up),
        )
        families = [depth, running, paused, oldest, workers, held, store_up]
        if self.faktory_connections is not None:
            families.append(
                GaugeMetricFamily(
                    "jobq_faktory_connections", "Faktory protocol connections open now.", self.faktory_connections()
                )
            )
        return families

    @staticmethod
    def _families() -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "jobq_queue_depth", "Jobs waiting to run, by queue and state.", labels=["queue", "state"]
        )
        yield GaugeMetricFamily("jobq_jobs_running", "Jobs leased and running, by queue.", labels=["queue"])
        yield GaugeMetricFamily("jobq_queue_paused", "1 for a paused queue, 0 otherwise.", labels=["queue"])
        yield GaugeMetricFamily(
            "jobq_queue_oldest_job_age_seconds",
            "Seconds the job next in line has waited since it could run: created or due, released, re-run (0: none).",
            labels=["queue"],
        )
        yield GaugeMetricFamily("jobq_workers", "This process's worker tasks, busy or idle.", labels=["state"])
        yield GaugeMetricFamily(
            "jobq_queue_held",
            "What each limit of a queue holds back now: 1 while its concurrency or rate does, else 0; "
            "for key_concurrency and key_rate, how many keys it holds.",
            labels=["queue", "limit"],
        )
