"""Handlers loaded by subprocess tests with ``--handlers tests.fixture_handlers``.

``record`` appends the job id to the file named by ``JOBQ_TEST_RUNS_FILE`` each
time it starts, so a test can count how often every job ran. It then sleeps
``payload.seconds`` — only on the first ``payload.slow_runs`` runs when that is
given, so a re-delivered job finishes quickly.

``gated`` records its run the same way, then waits until its process gets
SIGUSR1: a test decides when the job finishes.

``hog`` (an ``async def``) and ``stuck`` (a plain ``def``, run in a thread) record their
run and then block for ``payload.seconds`` in ``time.sleep``: the one the event loop, the
other a handler thread that nothing can stop.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

from jobq import JobContext, ThreadJobContext, handler


def note_run(job_id: str) -> int:
    """Add a run of the job to the runs file; returns the run's number (lost runs use no attempt: count them here)."""
    # One O_APPEND write per run: atomic, so concurrent runs never interleave lines.
    fd = os.open(os.environ["JOBQ_TEST_RUNS_FILE"], os.O_RDWR | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (job_id + "\n").encode())
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 1 << 20).decode().split().count(job_id)
    finally:
        os.close(fd)


@handler("record")
async def record(ctx: JobContext) -> dict[str, str]:
    run = note_run(ctx.job.id)
    payload = ctx.payload if isinstance(ctx.payload, dict) else {}
    seconds = payload.get("seconds", 0)
    if run > payload.get("slow_runs", run):
        seconds = 0
    if seconds:
        await asyncio.sleep(seconds)
    return {"ran": ctx.job.id}


_gate: asyncio.Event | None = None


def gate() -> asyncio.Event:
    """The event SIGUSR1 sets in this process (installed on first use, so send it only after a gated job started)."""
    global _gate
    if _gate is None:
        _gate = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _gate.set)
    return _gate


@handler("gated")
async def gated(ctx: JobContext) -> dict[str, object]:
    """Like ``record``, but instead of sleeping it waits until its process gets SIGUSR1.

    The signal handler is installed before the run is written to the runs file, so a test
    may signal the process once it sees the run there. The gate then stays open: every
    gated job of that process, running or later, finishes. The result names the run
    that finished the job.
    """
    opened = gate()
    run = note_run(ctx.job.id)
    await opened.wait()
    return {"ran": ctx.job.id, "run": run}


@handler("chatty")
async def chatty(ctx: JobContext) -> str:
    """Reports what a careless handler reports: a dict as its progress note, a file name that is not UTF-8."""
    await ctx.progress(0.5, {"step": 1})
    name = os.fsdecode(b"caf\xe9.txt")  # as os.listdir() gives a name that is not UTF-8
    await ctx.log(f"processing {name}")
    return name.encode("utf-8", "backslashreplace").decode()


def note_span(line: str) -> None:
    """Append one line to the spans file, the runs file's name and ``.spans`` (one O_APPEND write: atomic)."""
    fd = os.open(os.environ["JOBQ_TEST_RUNS_FILE"] + ".spans", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@handler("span")
async def span(ctx: JobContext) -> None:
    """Note ``start <payload.key> <time>`` and ``end <payload.key> <time>`` around ``payload.seconds`` of sleep,
    so a test can count how many jobs of one key ran at once, across processes (one clock: one machine)."""
    note_span(f"start {ctx.payload['key']} {time.time():.6f}")
    await asyncio.sleep(ctx.payload["seconds"])
    note_span(f"end {ctx.payload['key']} {time.time():.6f}")


@handler("hog")
async def hog(ctx: JobContext) -> None:
    """Blocks the event loop: what a careless ``async def`` handler does."""
    note_run(ctx.job.id)
    time.sleep(ctx.payload["seconds"])  # noqa: ASYNC251 - blocking the loop is the point


@handler("stuck")
def stuck(ctx: ThreadJobContext) -> None:
    """Blocks its thread, which nothing can stop."""
    note_run(ctx.job.id)
    time.sleep(ctx.payload["seconds"])
