"""What the peer modules and the runner share: the drain measure, service URLs, and each peer's command line.

Standard library only: this module is imported both by ``bench/peers/run.py`` (in jobq's
``.venv``) and by every ``<peer>_peer.py`` (each in its own virtual environment).

A peer module (``<name>_peer.py``) defines the no-op task, the worker's settings, and ``PEER``:
a class with the methods of :class:`Peer`, which ``peer.py`` drives.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/jobq_peers"
REDIS_URL_VARIABLE = "PEERS_REDIS_URL"
POSTGRES_URL_VARIABLE = "PEERS_POSTGRES_URL"
POLL_SECONDS = 0.02
HIGH_MARK = 0.9  # the window starts when the backlog first drops to 90 % of N ...
LOW_MARK = 0.1  # ... and ends when it first drops to 10 %
PROTECTED_DATABASES = {"postgres", "template0", "template1"}


class Peer(Protocol):
    """One peer job queue, driven from its own virtual environment."""

    name: str
    store: str  # "Redis" or "PostgreSQL"
    settings: str  # how its worker runs, for the table

    def version(self) -> str:
        """The installed library's version."""
        ...

    def worker_command(self, bin_dir: str) -> list[str]:
        """The worker's command line; ``bin_dir`` is the peer's ``.venvs/<peer>/bin``."""
        ...

    async def service(self) -> str:
        """The store's version and durability settings, for the output."""
        ...

    async def reset(self) -> None:
        """Empty the peer's dedicated database (Redis DB or PostgreSQL database) and set it up."""
        ...

    async def enqueue(self, jobs: int) -> None:
        """Enqueue ``jobs`` no-op jobs, as fast as the library allows."""
        ...

    async def remaining(self) -> int:
        """Jobs enqueued and not finished yet."""
        ...

    async def outcome(self, jobs: int) -> dict[str, int]:
        """How the ``jobs`` jobs ended, as the library records it (e.g. ``{"succeeded": 20000}``)."""
        ...

    async def close(self) -> None:
        """Close connections."""
        ...


# -- the measure -------------------------------------------------------------------


@dataclass
class Drain:
    """How a backlog of N jobs drained, seen by polling the count of unfinished jobs.

    ``rate`` is the figure the tables report: jobs finished per second between the first poll at
    or below 90 % of N and the first at or below 10 %, from the counts seen at those two polls.
    Process start-up and the first and last jobs are outside that window.
    """

    jobs: int
    rate: float | None = None  # jobs/s inside the window
    window_seconds: float | None = None
    window_jobs: int | None = None
    startup_seconds: float | None = None  # from the first poll (worker starting) to the first job finished
    drain_seconds: float | None = None  # from the first job finished to none left
    polls: int = 0
    error: str | None = None
    outcome: dict[str, int] = field(default_factory=dict)


@dataclass
class _Sample:
    at: float
    remaining: int


def drain(count: Callable[[], int], jobs: int, timeout: float, on_ready: Callable[[], None]) -> Drain:
    """Poll ``count`` every 20 ms until it reaches 0 (or ``timeout`` seconds pass); the window's rate.

    ``on_ready`` runs after the first poll: the caller starts the worker (or resumes the queue) then.
    """
    samples = [_poll(count)]
    on_ready()
    deadline = samples[0].at + timeout
    while samples[-1].remaining > 0 and samples[-1].at < deadline:
        time.sleep(POLL_SECONDS)
        samples.append(_poll(count))
    return summarise(samples, jobs)


def _poll(count: Callable[[], int]) -> _Sample:
    before = time.perf_counter()
    remaining = count()
    return _Sample((before + time.perf_counter()) / 2, remaining)


def summarise(samples: list[_Sample], jobs: int) -> Drain:
    """The :class:`Drain` of a list of polls (the first taken before any job could finish)."""
    result = Drain(jobs=jobs, polls=len(samples))
    if samples[0].remaining < jobs:
        result.error = f"only {samples[0].remaining} of {jobs} jobs were waiting at the first poll"
        return result
    started = next((s for s in samples if s.remaining < jobs), None)
    high = next((s for s in samples if s.remaining <= jobs * HIGH_MARK), None)
    low = next((s for s in samples if s.remaining <= jobs * LOW_MARK), None)
    done = next((s for s in samples if s.remaining == 0), None)
    if started is not None:
        result.startup_seconds = round(started.at - samples[0].at, 3)
    if started is not None and done is not None:
        result.drain_seconds = round(done.at - started.at, 3)
    if high is None or low is None:
        result.error = f"{samples[-1].remaining} of {jobs} jobs still unfinished when the wait ended"
    elif low is high:
        result.error = "the backlog went from above 90 % to below 10 % between two polls: use more jobs"
    else:
        result.window_seconds = round(low.at - high.at, 4)
        result.window_jobs = high.remaining - low.remaining
        result.rate = round(result.window_jobs / result.window_seconds, 1)
    return result


# -- service URLs ---------------------------------------------------------------------


def redis_db(url: str) -> int:
    """The database number of a Redis URL; refuses 0, which other programs use and each run empties."""
    path = urlsplit(url).path.strip("/")
    number = int(path) if path else 0
    if number == 0:
        raise SystemExit(f"{url}: name a dedicated Redis database (e.g. /15): it is emptied before each run")
    return number


def postgres_database(url: str) -> str:
    """The database a PostgreSQL URL names; refuses the server's own ones (it is dropped before each run)."""
    name = urlsplit(url).path.strip("/")
    if not name or name in PROTECTED_DATABASES:
        raise SystemExit(f"{url}: name a dedicated database (e.g. /jobq_peers): it is dropped before each run")
    return name


def postgres_admin_url(url: str) -> str:
    """The same server and user, database ``postgres``: where the dedicated database is dropped and created."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, parts.fragment))
