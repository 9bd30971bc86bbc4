"""arq: asyncio jobs in Redis, one worker process at its default ``max_jobs`` (10), polling every 0.01 s.

arq's default poll delay (0.5 s, at most 100 jobs a poll) caps a worker near 200 jobs/s
whatever Redis does, so the worker here polls every ``POLL_DELAY`` seconds instead.

Run by bench/peers/run.py with the Python of ``.venvs/arq``; the worker is
``arq arq_peer.WorkerSettings``.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version
from typing import Any

import redis_store
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.constants import default_queue_name, result_key_prefix
from arq.jobs import deserialize_result

REDIS_URL = redis_store.url()
ENQUEUE_AT_ONCE = 200  # enqueue_job calls in flight: arq has no bulk enqueue
POLL_DELAY = 0.01  # seconds between the worker's polls (arq's default: 0.5)


async def noop(ctx: dict[str, Any]) -> None:
    """Do nothing: measures the queue's own overhead."""


class WorkerSettings:
    """What ``arq arq_peer.WorkerSettings`` runs: the no-op function, a short poll, otherwise arq's defaults."""

    functions = [noop]
    poll_delay = POLL_DELAY
    redis_settings = RedisSettings.from_dsn(REDIS_URL)


class ArqPeer:
    """Queued jobs are the sorted set ``arq:queue``; a job leaves it when it finishes."""

    name = "arq"
    store = "Redis"
    settings = "1 process, `poll_delay` 0.01 s (default 0.5 s), otherwise defaults: max_jobs 10, logs lines per job"

    def __init__(self) -> None:
        self._pool: ArqRedis | None = None

    async def pool(self) -> ArqRedis:
        """The connection pool, opened on first use."""
        if self._pool is None:
            self._pool = await create_pool(WorkerSettings.redis_settings)
        return self._pool

    def version(self) -> str:
        return version("arq")

    def worker_command(self, bin_dir: str) -> list[str]:
        return [f"{bin_dir}/arq", "arq_peer.WorkerSettings"]

    async def service(self) -> str:
        return await redis_store.describe(await self.pool())

    async def reset(self) -> None:
        await (await self.pool()).flushdb()

    async def enqueue(self, jobs: int) -> None:
        pool = await self.pool()
        for offset in range(0, jobs, ENQUEUE_AT_ONCE):
            count = min(ENQUEUE_AT_ONCE, jobs - offset)
            await asyncio.gather(*(pool.enqueue_job("noop") for _ in range(count)))

    async def remaining(self) -> int:
        return int(await (await self.pool()).zcard(default_queue_name))

    async def outcome(self, jobs: int) -> dict[str, int]:
        pool = await self.pool()
        keys = [key async for key in pool.scan_iter(match=f"{result_key_prefix}*", count=1000)]
        counts = {"succeeded": 0, "failed": 0}
        for offset in range(0, len(keys), 1000):
            for raw in await pool.mget(keys[offset : offset + 1000]):
                counts["succeeded" if deserialize_result(raw).success else "failed"] += 1
        return counts

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()


PEER = ArqPeer
