"""Each queue's recent history for the dashboard's charts: throughput, and wait and run percentiles.

Every ``interval`` seconds a sample is taken of this process's metrics (jobq/metrics.py): per
queue, the jobs enqueued, completed and failed so far, and the wait and run histograms. The
difference between two samples gives that interval's rates and percentiles. Only the last
``keep`` samples are kept; taking one reads a few numbers per queue, whatever the load.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from jobq.job import COMPLETED, DEAD, FAILED
from jobq.metrics import Metrics

log = logging.getLogger("jobq.dashboard")

INTERVAL = 2.0  # seconds between samples
KEEP = 300  # samples kept: ten minutes
FAILED_OUTCOMES = frozenset({FAILED.value, DEAD.value})


@dataclass(slots=True)
class QueueCounts:
    """One queue's totals at one moment."""

    enqueued: float = 0.0
    completed: float = 0.0
    failed: float = 0.0
    wait: list[int] = field(default_factory=list)  # histogram bucket counts
    run: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    queues: dict[str, QueueCounts]


def percentile(bounds: Sequence[float], before: Sequence[int], after: Sequence[int], share: float) -> float | None:
    """The ``share`` percentile of the observations made between two histogram samples, as the upper bound
    of the bucket it falls in (None when there were none; the largest bound for the +Inf bucket)."""
    counts = [b - a for a, b in zip(before or [0] * len(after), after, strict=True)]
    total = sum(counts)
    if total <= 0:
        return None
    wanted, running = share * total, 0
    for index, count in enumerate(counts):
        running += count
        if running >= wanted:
            return bounds[min(index, len(bounds) - 1)]
    return bounds[-1]


class Trends:
    """The last ``keep`` samples of each queue's counters, and their rates and percentiles."""

    def __init__(self, metrics: Metrics, clock: Any, interval: float = INTERVAL, keep: int = KEEP) -> None:
        self.metrics = metrics
        self.clock = clock
        self.interval = interval
        self.samples: deque[Sample] = deque(maxlen=keep + 1)  # one more: the first interval needs a start
        self._view: dict[str, Any] | None = None  # the view of these samples, made once for every feed

    def sample(self) -> None:
        """Take one sample of the metrics now."""
        queues: dict[str, QueueCounts] = {}

        def counts(queue: str) -> QueueCounts:
            found = queues.get(queue)
            if found is None:
                found = queues[queue] = QueueCounts()
            return found

        metrics = self.metrics
        for (queue, _), series in metrics.enqueued.items():
            counts(queue).enqueued += series.value
        for (queue, _, outcome), series in metrics.finished.items():
            if outcome == COMPLETED.value:
                counts(queue).completed += series.value
            elif outcome in FAILED_OUTCOMES:
                counts(queue).failed += series.value
        for (queue,), buckets in metrics.wait.items():
            counts(queue).wait = list(buckets.counts)
        for (queue,), buckets in metrics.run.items():
            counts(queue).run = list(buckets.counts)
        self.samples.append(Sample(self.clock(), queues))
        self._view = None

    async def run(self) -> None:
        """Sample every ``interval`` seconds until cancelled (surviving its own errors)."""
        while True:
            try:
                self.sample()
            except Exception:
                log.exception("sampling the dashboard's trends failed; trying again in %.0fs", self.interval)
            await asyncio.sleep(self.interval)

    def view(self) -> dict[str, Any]:
        """Per queue, a value per interval: enqueued, completed and failed per second; wait and run p50 and p95.

        Made once per sample, however many feeds send it (callers must not change it).
        """
        if self._view is None:
            self._view = self._make_view()
        return self._view

    def _make_view(self) -> dict[str, Any]:
        samples = list(self.samples)
        pairs = list(itertools.pairwise(samples))
        names = sorted({name for sample in samples for name in sample.queues})
        wait_bounds, run_bounds = self.metrics.wait.bounds, self.metrics.run.bounds
        queues: dict[str, dict[str, list[float | None]]] = {}
        empty = QueueCounts()
        for name in names:
            series: dict[str, list[float | None]] = {
                key: [] for key in ("enqueued", "completed", "failed", "wait_p50", "wait_p95", "run_p50", "run_p95")
            }
            for before, after in pairs:
                old, new = before.queues.get(name, empty), after.queues.get(name, empty)
                seconds = max(after.at - before.at, 1e-9)
                series["enqueued"].append(round((new.enqueued - old.enqueued) / seconds, 3))
                series["completed"].append(round((new.completed - old.completed) / seconds, 3))
                series["failed"].append(round((new.failed - old.failed) / seconds, 3))
                for kind, bounds, old_counts, new_counts in (
                    ("wait", wait_bounds, old.wait, new.wait),
                    ("run", run_bounds, old.run, new.run),
                ):
                    for share in (0.5, 0.95):
                        key = f"{kind}_p{round(share * 100)}"
                        series[key].append(percentile(bounds, old_counts, new_counts, share) if new_counts else None)
            queues[name] = series
        return {"interval": self.interval, "times": [after.at for _, after in pairs], "queues": queues}
