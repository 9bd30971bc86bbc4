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

from dataclasses import dataclass, field

from jobq.job import Job


@dataclass(slots=True)
class Run:
    """A job leased to a consumer (as leased: its lease id settles it), and how long it may be held."""

    job: Job
    held_until: float | None  # started_at + timeout (reserve_for): no lease extension beyond it


@dataclass(slots=True)
class Consumer:
    """One Faktory worker process, as this node sees it (a connection without a ``wid`` is a producer)."""

    name: str  # the name jobs record in their history: host and wid (and the token's principal): the key
    wid: str
    connections: int = 0
    state: str = "running"  # what it last said in a BEAT: running, quiet or terminate
    runs: dict[str, Run] = field(default_factory=dict)  # job id -> run

    def hold(self, job: Job) -> None:
        """Note a job just leased to this consumer."""
        held_until = job.started_at + job.timeout if job.timeout is not None and job.started_at else None
        self.runs[job.id] = Run(job, held_until)


class Consumers:
    """Every consumer connected to this node, by name."""

    def __init__(self) -> None:
        self._by_name: dict[str, Consumer] = {}

    def join(self, name: str, wid: str) -> Consumer:
        """A connection of consumer ``name`` opened: the consumer, created on its first connection."""
        consumer = self._by_name.get(name)
        if consumer is None:
            consumer = self._by_name[name] = Consumer(name, wid)
        consumer.connections += 1
        return consumer

    def leave(self, consumer: Consumer) -> dict[str, Run]:
        """A connection of ``consumer`` closed: the runs to hand back if it was the last one, else none."""
        consumer.connections -= 1
        if consumer.connections > 0:
            return {}
        self._by_name.pop(consumer.name, None)
        runs, consumer.runs = consumer.runs, {}
        return runs
