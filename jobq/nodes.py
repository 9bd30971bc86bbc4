"""The nodes of a deployment: each jobq process keeps a card about itself in its store.

Every BEAT_SECONDS a node writes its card (``announce``, one of the service's duties, through
``Store.announce``): who it is, where it listens, its in-process workers, whether it drains,
and the remote workers that leased or heartbeat through it lately. A card lapses TTL_SECONDS
after it was written, by the store's clock, so a node killed outright drops out of
``GET /nodes`` within that; one that stops cleanly takes its card away. On a store of one
process, the only card is its own.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from jobq import __version__

if TYPE_CHECKING:
    from jobq.service import JobService

log = logging.getLogger("jobq.nodes")

BEAT_SECONDS = 5.0  # how often a node rewrites its card
TTL_SECONDS = 3 * BEAT_SECONDS  # a card lapses after three missed beats
REMOTE_WORKER_MEMORY = 300.0  # seconds a remote worker stays on its node's card after it was last seen
MAX_REMOTE_WORKERS = 200  # remote workers a card lists at most, the most recently seen


class RemoteWorkers:
    """The remote workers seen through this node (leasing or heartbeating), and when each was last."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._seen: dict[str, float] = {}

    def saw(self, name: str | None) -> None:
        """Note that worker ``name`` (unnamed ones count as one, "?") just called this node."""
        self._seen[name or "?"] = self._clock()

    def recent(self) -> list[dict[str, Any]]:
        """The workers seen within REMOTE_WORKER_MEMORY, with how long ago, most recent first."""
        now = self._clock()
        self._seen = {name: at for name, at in self._seen.items() if now - at <= REMOTE_WORKER_MEMORY}
        recent = sorted(self._seen.items(), key=lambda item: -item[1])[:MAX_REMOTE_WORKERS]
        return [{"name": name, "idle_seconds": round(now - at, 3)} for name, at in recent]


def card(service: JobService) -> dict[str, Any]:
    """This node's card, as it is now."""
    return {
        "id": service.store.node,
        "host": os.uname().nodename,
        "pid": os.getpid(),
        "version": __version__,
        "started_at": service.started_at,
        "listening": dict(service.listening),
        "workers": {"total": service.pool.concurrency, "busy": service.pool.busy},
        "draining": service.draining,
        "remote_workers": service.remote_workers.recent(),
    }


async def announce(service: JobService) -> None:
    """Write this node's card now; a store that fails is logged, and the card tried again at the next beat."""
    try:
        await service.store.announce(card(service), TTL_SECONDS)
    except Exception as exc:
        log.warning("this node's card could not be written to the store: %s", exc)
