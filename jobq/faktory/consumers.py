"""The Faktory worker processes connected to this node, and the runs leased to each.

A Faktory worker process says who it is (``wid``) in every connection's ``HELLO`` and may
open several connections; a FETCH on one may be ACKed on another. So runs are held per
process, not per connection. Invariants:

- A run leased through this node is held by its consumer until it is settled, handed back,
  or its lease moves on (the store says so when a BEAT extends it).
- When a process's last connection to this node closes, its runs go back at once, as lost
  (``disconnected``): a worker killed mid-job has its job run again within seconds.
- While the process beats, its leases are extended, but never past a job's ``reserve_for``
  (its ``timeout``): a run held longer is lost once its lease lapses, and runs again.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from jobq.job import Job


@dataclass(slots=True)
class Run:
    """A job leased to a consumer (as leased: its lease id settles it), and how long it may be held."""

    job: Job
    held_until: float | None  # started_at + timeout (reserve_for): no lease extension beyond it


@dataclass(slots=True)
class Consumer:
    """One Faktory worker process (or one connection without a ``wid``), as this node sees it."""

    key: str  # its wid, or the connection's own key when it sent none
    name: str  # the worker name jobs record in their history
    connections: int = 0
    state: str = "running"  # what it last said in a BEAT: running, quiet or terminate
    runs: dict[str, Run] = field(default_factory=dict)  # job id -> run

    def hold(self, job: Job) -> None:
        """Note a job just leased to this consumer."""
        held_until = job.started_at + job.timeout if job.timeout is not None and job.started_at else None
        self.runs[job.id] = Run(job, held_until)


class Consumers:
    """Every consumer connected to this node, by key."""

    def __init__(self) -> None:
        self._by_key: dict[str, Consumer] = {}

    def join(self, key: str, name: str) -> Consumer:
        """A connection of consumer ``key`` opened: the consumer, created on its first connection."""
        consumer = self._by_key.get(key)
        if consumer is None:
            consumer = self._by_key[key] = Consumer(key, name)
        consumer.connections += 1
        return consumer

    def leave(self, consumer: Consumer) -> dict[str, Run]:
        """A connection of ``consumer`` closed: the runs to hand back if it was the last one, else none."""
        consumer.connections -= 1
        if consumer.connections > 0:
            return {}
        self._by_key.pop(consumer.key, None)
        runs, consumer.runs = consumer.runs, {}
        return runs

    def get(self, key: str) -> Consumer | None:
        return self._by_key.get(key)

    def __iter__(self) -> Iterator[Consumer]:
        return iter(list(self._by_key.values()))

    def __len__(self) -> int:
        return len(self._by_key)
