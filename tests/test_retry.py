"""The retry schedule: exponential ceilings with full jitter."""

from __future__ import annotations

import random

from jobq.retry import RetryPolicy


def test_ceiling_doubles_until_the_cap() -> None:
    policy = RetryPolicy(base=0.5, cap=10.0)
    assert [policy.ceiling(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_delays_are_jittered_within_the_ceiling() -> None:
    policy = RetryPolicy(base=1.0, cap=60.0, rng=random.Random(7))
    for attempt in range(1, 10):
        delays = [policy.next_delay(attempt) for _ in range(200)]
        assert all(0.0 <= d <= policy.ceiling(attempt) for d in delays)
        assert len(set(delays)) == len(delays)  # jittered: no two retries in lockstep
        # full jitter spreads over the whole range, not just near the ceiling
        assert min(delays) < policy.ceiling(attempt) * 0.1
        assert max(delays) > policy.ceiling(attempt) * 0.9


def test_average_delay_grows_with_attempts() -> None:
    policy = RetryPolicy(base=1.0, cap=1000.0, rng=random.Random(1))
    means = [sum(policy.next_delay(n) for _ in range(500)) / 500 for n in range(1, 6)]
    assert means == sorted(means)
    assert means[-1] > 4 * means[0]
