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
from collections.abc import Callable, Collection

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

    def jobs(self, usable: Usable) -> list[Job]:
        """Every usable job queued here, in no particular order."""
        found = []
        for bucket in self._buckets.values():
            found.extend(job for job in bucket.arrived if usable(job))
            found.extend(job for _, job in bucket.returned if usable(job))
        return found

    def __bool__(self) -> bool:
        return bool(self._priorities)


class QueueReady:
    """The ready jobs of one queue, a ReadyQueue per job type, so a worker can lease only the types it runs.

    ``pop`` takes the best job (highest priority, then oldest) across the wanted types,
    so leasing every type keeps the queue's strict order.
    """

    __slots__ = ("by_type",)

    def __init__(self) -> None:
        self.by_type: dict[str, ReadyQueue] = {}

    def push(self, job: Job) -> None:
        ready = self.by_type.get(job.type)
        if ready is None:
            ready = self.by_type[job.type] = ReadyQueue()
        ready.push(job)

    def _best(self, usable: Usable, types: Collection[str] | None) -> tuple[Job, ReadyQueue] | None:
        by_type = self.by_type
        if types is None and len(by_type) == 1:  # most queues hold one type: no comparing
            [(job_type, ready)] = by_type.items()
            job = ready.peek(usable)
            if job is None:
                del by_type[job_type]
                return None
            return job, ready
        best: tuple[Job, ReadyQueue] | None = None
        for job_type in list(by_type) if types is None else [t for t in types if t in by_type]:
            ready = by_type[job_type]
            job = ready.peek(usable)
            if job is None:
                del by_type[job_type]  # nothing usable left of this type
            elif best is None or (-job.priority, job.seq) < (-best[0].priority, best[0].seq):
                best = job, ready
        return best

    def peek(self, usable: Usable, types: Collection[str] | None = None) -> Job | None:
        """The job ``pop`` would return, left in place."""
        best = self._best(usable, types)
        return None if best is None else best[0]

    def pop(self, usable: Usable, types: Collection[str] | None = None) -> Job | None:
        """Remove and return the best usable job of the wanted ``types`` (None: any type)."""
        best = self._best(usable, types)
        if best is None:
            return None
        best[1].pop(usable)  # the same job: peek left it first
        return best[0]

    def jobs(self, usable: Usable) -> list[Job]:
        return [job for ready in self.by_type.values() for job in ready.jobs(usable)]

    def __bool__(self) -> bool:
        return bool(self.by_type)


Admit = Callable[[str, Job], bool]
"""Whether the first ready job of a key (``""``: unkeyed) may start now (its key's limit and rate allow it)."""


class FlowReady:
    """The ready jobs of a flow-controlled queue (see jobq.flow): a QueueReady per key, served round-robin.

    ``pop`` gives the turn to the next key whose first job ``admit`` lets start; a key held back
    keeps its place and holds back no other key. A key that runs dry leaves the rotation, and
    rejoins at its end when a job of it is ready again.
    """

    __slots__ = ("by_key", "rotation")

    def __init__(self, jobs: Collection[Job] = ()) -> None:
        self.by_key: dict[str, QueueReady] = {}
        self.rotation: deque[str] = deque()  # the keys in turn order: the next one first
        for job in sorted(jobs, key=lambda job: job.seq):
            self.push(job)

    def push(self, job: Job) -> None:
        key = job.concurrency_key or ""
        ready = self.by_key.get(key)
        if ready is None:
            ready = self.by_key[key] = QueueReady()
            self.rotation.append(key)
        ready.push(job)

    def pop(self, usable: Usable, types: Collection[str] | None = None, admit: Admit | None = None) -> Job | None:
        """Take the first job of the next key in turn that ``admit`` lets start (None: none may)."""
        rotation, by_key = self.rotation, self.by_key
        for _ in range(len(rotation)):
            key = rotation[0]
            ready = by_key[key]
            job = ready.peek(usable, types)
            if job is None:
                if not ready:  # nothing left of this key: it leaves the rotation
                    del by_key[key]
                    rotation.popleft()
                else:
                    rotation.rotate(-1)
                continue
            rotation.rotate(-1)  # served or held back, the turn passes
            if admit is None or admit(key, job):
                ready.by_type[job.type].pop(usable)  # the job peek found: first of its type
                return job
        return None

    def peek(self, usable: Usable, types: Collection[str] | None = None) -> Job | None:
        """The first job of the next key in turn (limits aside), left in place."""
        for key in self.rotation:
            job = self.by_key[key].peek(usable, types)
            if job is not None:
                return job
        return None

    def jobs(self, usable: Usable) -> list[Job]:
        return [job for ready in self.by_key.values() for job in ready.jobs(usable)]

    def __bool__(self) -> bool:
        return bool(self.by_key)
