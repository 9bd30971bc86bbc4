"""Lock-free counter and histogram families, as Prometheus reads them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jobq.tally import CounterFamily, HistogramFamily


def samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_counter_family_counts_per_label_set() -> None:
    registry = CollectorRegistry()
    counter = CounterFamily("jobq_things", "Things.", ["queue"], registry)
    counter.labels("a").inc()
    counter.labels("a").inc(2)
    counter.labels("b").inc()
    assert counter.labels("a") is counter.labels("a")  # one series, kept
    got = samples(registry)
    assert got[("jobq_things_total", frozenset({("queue", "a")}))] == 3
    assert got[("jobq_things_total", frozenset({("queue", "b")}))] == 1
    assert not any(name.endswith("_created") for name, _ in got)


def test_a_histogram_family_puts_each_value_in_the_first_bucket_it_fits() -> None:
    registry = CollectorRegistry()
    histogram = HistogramFamily("jobq_wait_seconds", "Waits.", [], registry, [0.1, 1.0, 10.0])
    for value in (0.05, 0.1, 0.5, 1.0, 7.0, 99.0):
        histogram.labels().observe(value)
    got = samples(registry)
    bucket = {le: got[("jobq_wait_seconds_bucket", frozenset({("le", le)}))] for le in ("0.1", "1.0", "10.0", "+Inf")}
    assert bucket == {"0.1": 2, "1.0": 4, "10.0": 5, "+Inf": 6}  # cumulative; a value on a bound counts in it
    assert got[("jobq_wait_seconds_count", frozenset())] == 6
    assert got[("jobq_wait_seconds_sum", frozenset())] == 0.05 + 0.1 + 0.5 + 1.0 + 7.0 + 99.0
