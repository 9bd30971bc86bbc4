"""A durable store's start in stages: it serves while its jobs are still being read back.

At open a store reads only what every answer needs at once: how many jobs of each
queue, status and priority the file holds, and its newest ``seq``. It then serves, and
reads the jobs themselves in ``seq`` order, a chunk at a time, between requests. Until
the last chunk is in, :class:`Loading` keeps every answer right:

- A job not read yet is read on demand (by id) before any verb answers about it: never a
  404 for a job that exists, never a second job under a client-chosen id.
- A job is read once: a job already in memory, or deleted since the start (``gone``), is
  skipped when its chunk comes, since memory is ahead of that read.
- Leasing keeps the order (priority, then FIFO): a queue whose ready jobs are not all read
  yet hands out a job only if no job still unread could come before it. The unread ones
  all have a ``seq`` past ``cursor``; a ready job read early (on demand, or added since the
  start) is ``held`` back until the jobs before it are in. A lease that finds a queue
  blocked waits for the next chunk, so it never answers "nothing" while work is loadable.
- Listing, stats, clearing a queue and purging need every job: they wait for the end.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Collection
from operator import attrgetter

from jobq.errors import StoreUnavailable
from jobq.job import Job

SEQ = attrgetter("seq")  # insertion order: how jobs are read back and released


class Loading:
    """What a store still has to read back, and the rules that keep answers right meanwhile."""

    def __init__(self, unread: dict[str, dict[int, int]], last_seq: int) -> None:
        self.unread = unread  # queue -> priority -> runnable jobs (pending, or processing at the stop) not read yet
        self.top = {queue: max(counts) for queue, counts in unread.items() if counts}  # their best priority
        self.last_seq = last_seq  # the newest job the file held at open
        self.cursor = 0  # every job on file with seq <= cursor is in memory (or gone)
        self.gone: set[str] = set()  # ids deleted since open: a chunk read before the delete must not bring them back
        self.held: dict[str, list[tuple[int, Job]]] = {}  # queue -> heap of ready jobs kept out of its index for now
        self.read = 0  # jobs read back so far
        self.failed: str | None = None  # why reading stopped, if it did
        self._progress: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- the order rule ----------------------------------------------------------
    def holds(self, job: Job) -> bool:
        """Keep a ready job out of its queue's ready index while unread jobs of that queue may come before it."""
        if job.seq > self.cursor and job.queue in self.top:
            heapq.heappush(self.held.setdefault(job.queue, []), (job.seq, job))
            return True
        return False

    def may_take(self, queue: str, best: Job | None) -> bool:
        """Whether ``best``, the first ready job of ``queue``, is the first of all its jobs, read or not."""
        top = self.top.get(queue)
        return top is None or (best is not None and best.priority >= top)

    def read_one(self, job: Job) -> None:
        """Count a runnable job as read (by its chunk or on demand)."""
        counts = self.unread.get(job.queue)
        if counts is None or job.priority not in counts:
            return
        counts[job.priority] -= 1
        if not counts[job.priority]:
            del counts[job.priority]
            if counts:
                self.top[job.queue] = max(counts)
            else:
                del self.unread[job.queue]
                del self.top[job.queue]

    def releasable(self) -> list[Job]:
        """Held jobs that may join their ready index now (their queue is read, or the cursor passed them), by seq."""
        free: list[Job] = []
        for queue in list(self.held):
            held = self.held[queue]
            if queue not in self.top:
                free.extend(job for _, job in held)
                del self.held[queue]
                continue
            while held and held[0][0] <= self.cursor:
                free.append(heapq.heappop(held)[1])
            if not held:
                del self.held[queue]
        free.sort(key=SEQ)
        return free

    def release_all(self) -> list[Job]:
        """Every held job, by seq (the last chunk is in)."""
        free = sorted((job for held in self.held.values() for _, job in held), key=SEQ)
        self.held.clear()
        return free

    # -- progress ----------------------------------------------------------------
    def advanced(self) -> None:
        """A chunk is in: wake whoever waits for one."""
        progress, self._progress = self._progress, asyncio.get_running_loop().create_future()
        progress.set_result(None)

    async def next_chunk(self) -> None:
        """Wait for the next chunk (or the end); raises StoreUnavailable if reading failed."""
        self.check()
        await asyncio.shield(self._progress)
        self.check()

    async def finished(self) -> None:
        """Wait until every job is read; raises StoreUnavailable if reading failed."""
        self.check()
        await asyncio.shield(self._done)
        self.check()

    def finish(self) -> None:
        self.advanced()
        self._done.set_result(None)

    def fail(self, why: str) -> None:
        self.failed = why
        self.advanced()
        if not self._done.done():
            self._done.set_result(None)

    def check(self) -> None:
        if self.failed is not None:
            raise StoreUnavailable(self.failed)


def wanted(queues: Collection[str] | None, loading: Loading, paused: Collection[str]) -> list[str]:
    """The queues a lease reads from that still have unread runnable jobs."""
    names = loading.top if queues is None else queues
    return [name for name in names if name in loading.top and name not in paused]
