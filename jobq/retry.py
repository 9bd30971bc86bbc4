"""Retry policy: exponential backoff with full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long to wait before attempt ``n + 1`` after attempt ``n`` failed.

    Full jitter (a uniform draw between 0 and the exponential ceiling) spreads
    retries of jobs that failed together, so they do not hammer a recovering
    dependency in lockstep.
    """

    base: float = 1.0
    cap: float = 300.0
    rng: random.Random | None = field(default=None, compare=False)  # a seeded one makes the schedule repeatable

    def ceiling(self, attempt: int) -> float:
        """The largest delay after the ``attempt``-th failure (1-based)."""
        return min(self.cap, self.base * 2 ** (attempt - 1))

    def next_delay(self, attempt: int) -> float:
        """A jittered delay in ``[0, ceiling(attempt)]``."""
        return (self.rng or random).uniform(0.0, self.ceiling(attempt))


class Retry(Exception):
    """Raised by a handler to ask for another attempt after ``defer`` seconds."""

    def __init__(self, defer: float | None = None, reason: str = "retry requested") -> None:
        super().__init__(reason)
        self.defer = defer
