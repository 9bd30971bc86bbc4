"""Counter and histogram families kept as plain numbers, rendered by prometheus-client at scrape.

prometheus-client's own ``Counter`` and ``Histogram`` take a lock on every
increment, and a histogram walks its buckets in Python on every observation:
several microseconds per request or job state change. These families keep each
labelled series as plain floats (a bucket found by ``bisect``) and hand them to
the registry as ``CounterMetricFamily`` / ``HistogramMetricFamily`` when it is
scraped, so exposition, formats and naming stay prometheus-client's.

Each series has one writer thread (the event loop; the SQLite commit histogram,
the writer thread), so no lock is needed: CPython reads and writes each number whole.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric


class Count:
    """One counter series."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class Buckets:
    """One histogram series: a count per bucket (cumulated at scrape), their sum and how many."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # "le": value <= bound
        self.total += value


class _Family:
    """A named, labelled family registered with ``registry``; ``labels(...)`` gives (and keeps) one series."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str], registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.label_names = list(labels)
        registry.register(self)

    def describe(self) -> Iterable[Metric]:
        return self.collect()


class CounterFamily(_Family):
    """A counter family (exposed with the ``_total`` suffix)."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str], registry: CollectorRegistry) -> None:
        self._series: dict[tuple[str, ...], Count] = {}
        super().__init__(name, documentation, labels, registry)

    def labels(self, *values: str) -> Count:
        series = self._series.get(values)
        if series is None:
            series = self._series[values] = Count()
        return series

    def items(self) -> list[tuple[tuple[str, ...], Count]]:
        """Every series, by its label values."""
        return list(self._series.items())

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.label_names)
        for values, series in list(self._series.items()):
            family.add_metric(list(values), series.value)
        return [family]


class HistogramFamily(_Family):
    """A histogram family with fixed bucket bounds."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str],
        registry: CollectorRegistry,
        buckets: Sequence[float],
    ) -> None:
        self.bounds = tuple(sorted(buckets))
        self._series: dict[tuple[str, ...], Buckets] = {}
        super().__init__(name, documentation, labels, registry)

    def labels(self, *values: str) -> Buckets:
        series = self._series.get(values)
        if series is None:
            series = self._series[values] = Buckets(self.bounds)
        return series

    def items(self) -> list[tuple[tuple[str, ...], Buckets]]:
        """Every series, by its label values."""
        return list(self._series.items())

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.label_names)
        edges = [*(repr(float(bound)) for bound in self.bounds), "+Inf"]
        for values, series in list(self._series.items()):
            counts, running, cumulative = list(series.counts), 0, []
            for edge, count in zip(edges, counts, strict=True):
                running += count
                cumulative.append((edge, running))
            family.add_metric(list(values), cumulative, sum_value=series.total)
        return [family]
