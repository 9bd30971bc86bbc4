"""SAQ (Simple Async Queue) on Redis: one worker process at its default concurrency (10).

Run by bench/peers/run.py with the Python of ``.venvs/saq``; the worker is ``saq saq_peer.settings``.
"""

from __future__ import annotations

import asyncio
import json
from importlib.metadata import version
from typing import Any

import redis_store
from saq import Queue

REDIS_URL = redis_store.url()
ENQUEUE_AT_ONCE = 200  # enqueue calls in flight: SAQ has no bulk enqueue (map waits for the results)


async def noop(ctx: dict[str, Any]) -> None:
    """Do nothing: measures the queue's own overhead."""


queue = Queue.from_url(REDIS_URL)
settings = {"queue": queue, "functions": [noop]}  # what ``saq saq_peer.settings`` runs


class SaqPeer:
    """Unfinished jobs are the sorted set ``saq:default:incomplete``; each job's record is a key of its own."""

    name = "SAQ"
    store = "Redis"
    settings = "1 process, default concurrency (10)"

    def version(self) -> str:
        return version("saq")

    def worker_command(self, bin_dir: str) -> list[str]:
        return [f"{bin_dir}/saq", "saq_peer.settings"]

    async def service(self) -> str:
        return await redis_store.describe(queue.redis)

    async def reset(self) -> None:
        await queue.redis.flushdb()

    async def enqueue(self, jobs: int) -> None:
        for offset in range(0, jobs, ENQUEUE_AT_ONCE):
            count = min(ENQUEUE_AT_ONCE, jobs - offset)
            await asyncio.gather(*(queue.enqueue("noop") for _ in range(count)))

    async def remaining(self) -> int:
        return await queue.count("incomplete")

    async def outcome(self, jobs: int) -> dict[str, int]:
        keys = [key async for key in queue.redis.scan_iter(match=queue.job_id("*"), count=1000)]
        counts: dict[str, int] = {}
        for offset in range(0, len(keys), 1000):
            for raw in await queue.redis.mget(keys[offset : offset + 1000]):
                status = json.loads(raw)["status"] if raw else "expired"
                counts[status] = counts.get(status, 0) + 1
        return counts

    async def close(self) -> None:
        await queue.disconnect()


PEER = SaqPeer
