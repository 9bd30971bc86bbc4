"""Built-in job types for demos, tests and benchmarks."""

from __future__ import annotations

import asyncio
from typing import Any

from jobq.handlers import JobContext, Registry

MAX_SLEEP_SECONDS = 300.0


class JobFailed(Exception):
    """Raised by the ``fail`` handler."""


async def noop(ctx: JobContext) -> None:
    """Do nothing: measures the queue's own overhead."""


async def echo(ctx: JobContext) -> Any:
    """Return the payload as the result."""
    return ctx.payload


async def sleep(ctx: JobContext) -> dict[str, float]:
    """Sleep ``payload.seconds`` (capped at five minutes): a stand-in for I/O-bound work."""
    payload = ctx.payload if isinstance(ctx.payload, dict) else {}
    seconds = payload.get("seconds", 1.0)
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
        raise JobFailed("payload.seconds must be a non-negative number")
    seconds = min(float(seconds), MAX_SLEEP_SECONDS)
    await ctx.log(f"sleeping {seconds:g}s")
    await asyncio.sleep(seconds)
    return {"slept": seconds}


async def fail(ctx: JobContext) -> None:
    """Always raise: ``payload.message`` becomes the job's error."""
    payload = ctx.payload if isinstance(ctx.payload, dict) else {}
    raise JobFailed(str(payload.get("message", "failed on purpose")))


def register_builtins(registry: Registry) -> None:
    """Add ``noop``, ``echo``, ``sleep`` and ``fail`` to a registry."""
    for fn in (noop, echo, sleep, fail):
        registry.register(fn.__name__)(fn)
