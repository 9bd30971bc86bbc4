"""jobq's processes, and the in-process tests, run on uvloop (jobq.eventloop)."""

from __future__ import annotations

import asyncio

import uvloop

from jobq import eventloop


async def running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def test_jobq_runs_its_coroutine_on_uvloop() -> None:
    assert isinstance(eventloop.run(running_loop()), uvloop.Loop)


async def test_in_process_tests_run_on_the_same_loop() -> None:
    assert isinstance(await running_loop(), uvloop.Loop)
