"""The ready jobs of one queue: highest priority first, oldest (lowest ``seq``) first within a priority.

Per priority, a deque holds jobs in the order they arrived, and a small heap holds
the jobs that come back with an older ``seq`` than the deque's newest (a scheduled or
retried job falling due, a released one): taking or adding a new job is O(1), a
returning one O(log k) in the k returning jobs, never O(n) in a million queued ones.
"""

from __future__ import annotations

import bisect
import heapq
from collections import deque
from collections.abc import Callable

from jobq.job import Job

Usable = Callable[[Job], bool]
"""Whether a queued entry can still run (entries go stale: leased, cancelled, cleared)."""


class _Bucket:
    """The jobs of one priority: arrivals in order, and returning jobs by ``seq``."""

    __slots__ = ("arrived", "returned")

    def __init__(self) -> None:
        self.arrived: deque[Job] = deque()
        self.returned: list[tuple[int, Job]] = []

    def push(self, job: Job) -> None:
        if not self.arrived or self.arrived[-1].seq < job.seq:
            self.arrived.append(job)
        else:
            heapq.heappush(self.returned, (job.seq, job))

    def first(self, usable: Usable) -> Job | None:
        """The lowest-``seq`` usable job, left in place; stale entries in front of it are dropped."""
        arrived, returned = self.arrived, self.returned
        while arrived and not usable(arrived[0]):
            arrived.popleft()
        while returned and not usable(returned[0][1]):
            heapq.heappop(returned)
        if returned and (not arrived or returned[0][0] < arrived[0].seq):
            return returned[0][1]
        return arrived[0] if arrived else None

    def take(self, job: Job) -> None:
        """Remove ``job``, which ``first`` just returned."""
        if self.returned and self.returned[0][1] is job:
            heapq.heappop(self.returned)
        else:
            self.arrived.popleft()


class ReadyQueue:
    """Jobs in priority order, FIFO by ``seq`` within a priority. Entries may go stale: callers say which."""

    __slots__ = ("_buckets", "_priorities")

    def __init__(self) -> None:
        self._buckets: dict[int, _Bucket] = {}
        self._priorities: list[int] = []  # the buckets' priorities, negated and sorted: highest first

    def push(self, job: Job) -> None:
        """Queue ``job`` among the jobs of its priority, by its ``seq``."""
        bucket = self._buckets.get(job.priority)
        if bucket is None:
            bucket = self._buckets[job.priority] = _Bucket()
            bisect.insort(self._priorities, -job.priority)
        bucket.push(job)

    def peek(self, usable: Usable) -> Job | None:
        """The job ``pop`` would return, left in place (stale entries before it are dropped)."""
        while self._priorities:
            job = self._buckets[-self._priorities[0]].first(usable)
            if job is not None:
                return job
            del self._buckets[-self._priorities[0]]  # nothing usable left at this priority
            self._priorities.pop(0)
        return None

    def pop(self, usable: Usable) -> Job | None:
        """Remove and return the first usable job; None when there is none."""
        job = self.peek(usable)
        if job is not None:
            self._buckets[job.priority].take(job)
        return job

    def __bool__(self) -> bool:
        return bool(self._priorities)
