"""RQ (Redis Queue): one worker process, RQ's ``SimpleWorker``, which runs each job in the worker process.

Run by bench/peers/run.py with the Python of ``.venvs/rq``; the worker is
``rq worker --worker-class rq.worker.SimpleWorker``. RQ's default ``Worker`` forks a child
process for every job (a new process per no-op); ``SimpleWorker`` does not fork. Either runs
one job at a time, as RQ does in one worker process.
"""

from __future__ import annotations

from importlib.metadata import version

import redis
import redis.asyncio
import redis_store
from rq import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry

REDIS_URL = redis_store.url()
QUEUE = "default"
ENQUEUE_AT_ONCE = 1000  # jobs per enqueue_many, one pipeline each
COUNT_KEY = "rq_peer:jobs"  # how many jobs ``prepare`` enqueued (RQ keeps no total)


def noop() -> None:
    """Do nothing: measures the queue's own overhead."""


class RqPeer:
    """Jobs wait in the list ``rq:queue:default``; a finished one is in the sorted set ``rq:finished:default``
    (for 500 s, RQ's default result TTL), a failed one in ``rq:failed:default``."""

    name = "RQ"
    store = "Redis"
    settings = "1 process, `SimpleWorker` (no fork per job): one job at a time, logs lines per job"

    def __init__(self) -> None:
        self.sync = redis.Redis.from_url(REDIS_URL)  # RQ's client is synchronous
        self.redis = redis.asyncio.Redis.from_url(REDIS_URL)
        self.queue = Queue(QUEUE, connection=self.sync)
        self.finished = FinishedJobRegistry(queue=self.queue).key
        self.failed = FailedJobRegistry(queue=self.queue).key

    def version(self) -> str:
        return version("rq")

    def worker_command(self, bin_dir: str) -> list[str]:
        return [f"{bin_dir}/rq", "worker", "--url", REDIS_URL, "--worker-class", "rq.worker.SimpleWorker", QUEUE]

    async def service(self) -> str:
        return await redis_store.describe(self.redis)

    async def reset(self) -> None:
        await self.redis.flushdb()

    async def enqueue(self, jobs: int) -> None:
        for offset in range(0, jobs, ENQUEUE_AT_ONCE):
            count = min(ENQUEUE_AT_ONCE, jobs - offset)
            with self.sync.pipeline() as pipe:
                self.queue.enqueue_many([Queue.prepare_data(noop) for _ in range(count)], pipeline=pipe)
                pipe.execute()
        await self.redis.incrby(COUNT_KEY, jobs)

    async def remaining(self) -> int:
        # the registries' sizes, not their ``count`` (which cleans up first, on every poll)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(COUNT_KEY).zcard(self.finished).zcard(self.failed)
            total, finished, failed = await pipe.execute()
        return int(total or 0) - finished - failed

    async def outcome(self, jobs: int) -> dict[str, int]:
        finished = int(await self.redis.zcard(self.finished))
        return {"succeeded": finished, "failed": int(await self.redis.zcard(self.failed))}

    async def close(self) -> None:
        self.sync.close()
        await self.redis.aclose()


PEER = RqPeer
