"""How a jobq process stops: the first SIGINT or SIGTERM asks for a drain, the second exits at once.

``jobq serve`` and ``jobq worker`` both stop this way. The signals are caught by plain
Python signal handlers, not by the event loop's: Python runs those between any two
bytecodes of the main thread (and inside a ``time.sleep``), so both signals are seen at
once even while a handler blocks the event loop, where a loop's own signal handler would
wait for the loop. The first logs that it was received and hands the drain to the loop
(``call_soon_threadsafe``); the second exits.

A plain ``def`` handler runs in a thread that nothing can stop, and Python joins such
threads before it exits. ``leave`` exits without waiting for one still running after the
drain has given up on it, so a process that has logged that it stopped is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType

from jobq.workers import handler_threads_running

log = logging.getLogger("jobq")

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """SIGINT and SIGTERM: the first calls ``on_first(signum)``, the second ``on_second(signum)``.

    Both run inside the signal handler, wherever the main thread was: they may log, read
    state and hand work to the loop (``hand_to_loop``), and ``on_second``
    ends the process (``exit_now``); neither may await or change what the loop is using.
    """

    def __init__(self, on_first: Callable[[int], None], on_second: Callable[[int], None]) -> None:
        self._on_first = on_first
        self._on_second = on_second
        self.received = 0
        self._previous: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}

    def install(self) -> None:
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._caught)

    def uninstall(self) -> None:
        """Put back the handlers there were before ``install``."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def _caught(self, signum: int, frame: FrameType | None) -> None:
        self.received += 1
        (self._on_first if self.received == 1 else self._on_second)(signum)


def hand_to_loop(loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
    """Run ``callback`` on ``loop`` soon; from a signal handler too (nothing, if the loop has closed)."""
    with contextlib.suppress(RuntimeError):  # a closed loop: the process is ending anyway
        loop.call_soon_threadsafe(callback)


def exit_now(code: int) -> None:
    """End the process at once with ``code``, after writing out what was logged (no cleanup, no thread joins)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed or gone: nothing more can be written anyway
            stream.flush()
    os._exit(code)


def leave(code: int) -> int:
    """``code``, to exit with; or, if a handler thread still runs (the drain gave up on it), exit at once with it."""
    running = handler_threads_running()
    if running:
        log.warning(
            "%d plain def handlers are still running in their threads, which cannot be stopped; "
            "exiting without waiting for them",
            running,
        )
        exit_now(code)
    return code
