"""The Faktory worker processes connected to this node, and the runs leased to each.

A Faktory worker process says who it is (``wid``) in every connection's ``HELLO`` and may
open several connections; a FETCH on one may be ACKed on another, and pooled clients close
idle connections and open new ones. So runs are held per process, not per connection.
Invariants:

- A run leased through this node is held by its consumer until it is settled, handed back,
  or its lease moves on (the store says so when a BEAT extends it).
- A consumer whose last connection closed keeps its runs for a grace period; if it connects
  again meanwhile, it carries on with them, else they go back, as lost (``disconnected``).
- While the process beats, its leases are extended, but never past a job's ``reserve_for``
  (its ``timeout``; Faktory's default, 30 minutes, when it has none): a run held longer is
  lost once its lease lapses, and runs again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import StrEnum

from jobq.job import Job

DEFAULT_RESERVATION = 1800.0  # Faktory's reserve_for when a job gives none


class WorkerState(StrEnum):
    """What a worker process last said it is doing (BEAT's ``current_state``)."""

    RUNNING = "running"
    QUIET = "quiet"  # fetches no more
    TERMINATE = "terminate"  # stopping


@dataclass(slots=True)
class Run:
    """A job leased to a consumer (as leased: its lease id settles it), and until when it may be held."""

    job: Job
    held_until: float  # started_at + reserve_for: no lease extension beyond it


@dataclass(slots=True)
class Consumer:
    """One Faktory worker process, as this node sees it (a connection without a ``wid`` is a producer)."""

    name: str  # the name jobs record in their history: host and wid (and the token's principal): the key
    wid: str
    connections: int = 0
    state: WorkerState = WorkerState.RUNNING
    runs: dict[str, Run] = field(default_factory=dict)  # job id -> run
    parting: asyncio.TimerHandle | None = None  # set while it has no connection and keeps its runs

    def hold(self, job: Job) -> None:
        """Note a job just leased to this consumer."""
        started = job.started_at or 0.0
        self.runs[job.id] = Run(job, started + (job.timeout or DEFAULT_RESERVATION))


class Consumers:
    """Every consumer connected to this node (or in its grace period), by name."""

    def __init__(self) -> None:
        self._by_name: dict[str, Consumer] = {}

    def join(self, name: str, wid: str) -> Consumer:
        """A connection of consumer ``name`` opened: the consumer, created on its first connection
        (or found again within its grace period, with its runs)."""
        consumer = self._by_name.get(name)
        if consumer is None:
            consumer = self._by_name[name] = Consumer(name, wid)
        if consumer.parting is not None:
            consumer.parting.cancel()
            consumer.parting = None
        consumer.connections += 1
        return consumer

    def leave(self, consumer: Consumer) -> bool:
        """A connection of ``consumer`` closed; whether it was its last."""
        consumer.connections -= 1
        return consumer.connections == 0

    def forget(self, consumer: Consumer) -> dict[str, Run]:
        """Drop a consumer that has no connection; the runs it held (none if it connected again)."""
        if consumer.connections > 0:
            return {}
        if consumer.parting is not None:
            consumer.parting.cancel()
            consumer.parting = None
        self._by_name.pop(consumer.name, None)
        runs, consumer.runs = consumer.runs, {}
        return runs

    def absent(self) -> list[Consumer]:
        """The consumers in their grace period (no connection, runs kept)."""
        return [consumer for consumer in self._by_name.values() if consumer.connections == 0]
