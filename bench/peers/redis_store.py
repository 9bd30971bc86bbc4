"""What the Redis peers (dramatiq, arq, SAQ, RQ) share; imported in their own environments, each with redis-py."""

from __future__ import annotations

import os

import common
import redis.asyncio


def url() -> str:
    """The Redis URL of this run (a dedicated database, emptied before each measurement)."""
    value = os.environ.get(common.REDIS_URL_VARIABLE) or common.DEFAULT_REDIS_URL
    common.redis_db(value)
    return value


async def describe(client: redis.asyncio.Redis) -> str:
    """The server's version and persistence settings (jobq's SQLite rows sync every commit to disk)."""
    info = await client.info("server")
    append_only = (await client.config_get("appendonly")).get("appendonly")
    save = (await client.config_get("save")).get("save") or "off"
    return f"Redis {info['redis_version']}, appendonly {append_only}, RDB snapshots {save}"
