"""dramatiq with its Redis broker: one worker process with 8 threads (the reference row of the comparison).

Run by bench/peers/run.py with the Python of ``.venvs/dramatiq``; the worker is
``dramatiq dramatiq_peer --processes 1 --threads 8``, which imports this module for the actor.
"""

from __future__ import annotations

from importlib.metadata import version

import dramatiq
import redis.asyncio
import redis_store
from dramatiq.brokers.redis import RedisBroker

REDIS_URL = redis_store.url()
QUEUE = "default"
NAMESPACE = "dramatiq"  # the broker's default key prefix

dramatiq.set_broker(RedisBroker(url=REDIS_URL))


@dramatiq.actor(queue_name=QUEUE)
def noop() -> None:
    """Do nothing: measures the queue's own overhead."""


class DramatiqPeer:
    """Messages are ids in the Redis list ``dramatiq:default``, their bodies in the hash ``dramatiq:default.msgs``."""

    name = "dramatiq"
    store = "Redis"
    settings = "1 process x 8 threads (`--processes 1 --threads 8`), default middleware"

    def __init__(self) -> None:
        self.redis = redis.asyncio.Redis.from_url(REDIS_URL)

    def version(self) -> str:
        return version("dramatiq")

    def worker_command(self, bin_dir: str) -> list[str]:
        return [f"{bin_dir}/dramatiq", "dramatiq_peer", "--processes", "1", "--threads", "8"]

    async def service(self) -> str:
        return await redis_store.describe(self.redis)

    async def reset(self) -> None:
        await self.redis.flushdb()

    async def enqueue(self, jobs: int) -> None:
        for _ in range(jobs):  # no bulk enqueue: each send is one call of the broker's Lua script
            noop.send()

    async def remaining(self) -> int:
        # a message leaves the hash when it is acknowledged (done) or dead-lettered
        return int(await self.redis.hlen(f"{NAMESPACE}:{QUEUE}.msgs"))

    async def outcome(self, jobs: int) -> dict[str, int]:
        dead = int(await self.redis.hlen(f"{NAMESPACE}:{QUEUE}.XQ.msgs"))
        return {"acknowledged": jobs - dead, "dead-lettered": dead}

    async def close(self) -> None:
        await self.redis.aclose()


PEER = DramatiqPeer
