"""A cheap sliding-window rate: events per second over the last minute."""

from __future__ import annotations

import time


class RateMeter:
    """Counts events in one-second buckets; ``per_second()`` averages the last ``window`` seconds."""

    def __init__(self, window: int = 60) -> None:
        self._window = window
        self._buckets = [0] * window
        self._started = time.monotonic()
        self._second = int(self._started)

    def _advance(self, now: int) -> None:
        gap = now - self._second
        if gap:
            for offset in range(1, min(gap, self._window) + 1):
                self._buckets[(self._second + offset) % self._window] = 0
            self._second = now

    def mark(self, count: int = 1) -> None:
        now = int(time.monotonic())
        if now != self._second:
            self._advance(now)
        self._buckets[now % self._window] += count

    def per_second(self) -> float:
        now = time.monotonic()
        self._advance(int(now))
        return sum(self._buckets) / max(1.0, min(float(self._window), now - self._started))
