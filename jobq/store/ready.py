"""The ready jobs of one queue: highest priority first, oldest first within a priority.

A deque per priority instead of one heap: taking or adding the usual job (a new one,
at the back of its priority) is O(1) rather than O(log n) tuple comparisons, which
matters at a million queued jobs. A job going back to its place (released, recovered)
is inserted by its sequence number: O(n), and rare.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable

from jobq.job import Job


def _seq(job: Job) -> int:
    return job.seq


class ReadyQueue:
    """Jobs in priority order, FIFO by ``seq`` within a priority. Entries may go stale: callers check."""

    __slots__ = ("_buckets", "_priorities")

    def __init__(self) -> None:
        self._buckets: dict[int, deque[Job]] = {}
        self._priorities: list[int] = []  # the buckets' priorities, negated and sorted: highest first

    def push(self, job: Job) -> None:
        """Queue ``job`` behind the jobs of its priority with a lower ``seq``."""
        bucket = self._buckets.get(job.priority)
        if bucket is None:
            bucket = self._buckets[job.priority] = deque()
            bisect.insort(self._priorities, -job.priority)
        if not bucket or bucket[-1].seq < job.seq:
            bucket.append(job)
        else:  # back to its place (a released job): rare
            bucket.insert(bisect.bisect_left(bucket, job.seq, key=_seq), job)

    def pop(self, usable: Callable[[Job], bool]) -> Job | None:
        """Remove and return the first job that is ``usable``, dropping stale ones before it; None when empty."""
        while self._priorities:
            priority = -self._priorities[0]
            bucket = self._buckets[priority]
            while bucket:
                job = bucket.popleft()
                if usable(job):
                    return job
            del self._buckets[priority]
            self._priorities.pop(0)
        return None

    def peek(self, usable: Callable[[Job], bool]) -> Job | None:
        """The first ``usable`` job without taking it (stale ones before it are dropped)."""
        job = self.pop(usable)
        if job is not None:
            self._buckets.setdefault(job.priority, deque()).appendleft(job)
            if -job.priority not in self._priorities:
                bisect.insort(self._priorities, -job.priority)
        return job

    def __bool__(self) -> bool:
        return bool(self._priorities)
