"""Handlers loaded by subprocess tests with ``--handlers tests.fixture_handlers``.

``record`` appends the job id to the file named by ``JOBQ_TEST_RUNS_FILE`` each
time it starts, so a test can count how often every job ran. It then sleeps
``payload.seconds`` — only on the first ``payload.slow_attempts`` attempts when
that is given, so a re-delivered job finishes quickly.
"""

from __future__ import annotations

import asyncio
import os

from jobq import JobContext, handler


@handler("record")
async def record(ctx: JobContext) -> dict[str, str]:
    # One O_APPEND write per run: atomic, so concurrent runs never interleave lines.
    fd = os.open(os.environ["JOBQ_TEST_RUNS_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (ctx.job.id + "\n").encode())
    finally:
        os.close(fd)
    payload = ctx.payload if isinstance(ctx.payload, dict) else {}
    seconds = payload.get("seconds", 0)
    if ctx.job.attempts > payload.get("slow_attempts", ctx.job.attempts):
        seconds = 0
    if seconds:
        await asyncio.sleep(seconds)
    return {"ran": ctx.job.id}
