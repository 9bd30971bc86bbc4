"""The event loop every jobq process runs on: uvloop.

uvloop is libuv under asyncio's API: a turn of the loop, a socket read or write and a
wake-up from another thread (the SQLite writer's answers) cost less than on the
standard loop. Measured in docs/benchmarks.md ("The event loop"). The tests run on
it too (tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to its end on a new uvloop event loop (what ``asyncio.run`` does on the standard loop)."""
    return uvloop.run(main)
