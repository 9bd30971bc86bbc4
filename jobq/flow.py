"""Flow control: how many jobs of a queue, and of each key in it, may run at once; how often they
may start; and whose turn it is.

A queue's flow (:class:`QueueFlow`) is set by an operator; a job brings its ``concurrency_key``
(and may bring its own ``concurrency_limit``). In a queue with a flow, or holding keyed jobs,
the ready jobs take turns by key, round-robin (the unkeyed jobs share one turn, the key ``""``),
and within a key go by priority, then oldest first. The limits hold across every worker and node
of a store, because only the store's lease applies them. A job held back by a limit stays
pending: it uses no attempt, and holds back no job of another key.

Rates use GCRA (the generic cell rate algorithm): one number per queue or key, its "theoretical
arrival time" (tat). A start is allowed while ``tat <= now + period - interval``; it moves tat on
by one interval. That allows a burst of ``limit`` starts, then one per interval: at most
``limit * (1 + t / period)`` starts in any ``t`` seconds.

Each store applies these rules where its lease is atomic: memory and SQLite in their ready index
(jobq/store/ready.py, ``FlowReady``), PostgreSQL with :func:`plan` under the queue's advisory lock,
Redis in its claim script; tests/test_flow_store.py holds all four to the same behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from jobq.job import rfc3339

UNKEYED = ""  # the turn of the jobs without a concurrency_key


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``limit`` starts per ``period`` seconds."""

    limit: int
    period: float

    @property
    def interval(self) -> float:
        return self.period / self.limit

    def next_start(self, tat: float | None, now: float) -> float:
        """When the next start is allowed (``now`` or earlier: allowed now), given the tat."""
        if tat is None:
            return now
        return tat - self.period + self.interval

    def start(self, tat: float | None, now: float) -> float:
        """The tat after a start at ``now`` (which ``next_start`` allowed)."""
        return max(tat or now, now) + self.interval

    def to_dict(self) -> dict[str, Any]:
        return {"limit": self.limit, "period": self.period}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Rate | None:
        return None if data is None else cls(int(data["limit"]), float(data["period"]))


@dataclass(frozen=True, slots=True)
class QueueFlow:
    """A queue's limits; None: no limit of that kind."""

    concurrency: int | None = None  # jobs of the queue running at once
    key_concurrency: int | None = None  # jobs of one key running at once (unless a job sets its own limit)
    rate: Rate | None = None  # starts in the queue
    key_rate: Rate | None = None  # starts of one key

    def to_dict(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "key_concurrency": self.key_concurrency,
            "rate": None if self.rate is None else self.rate.to_dict(),
            "key_rate": None if self.key_rate is None else self.key_rate.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QueueFlow:
        return cls(
            concurrency=data.get("concurrency"),
            key_concurrency=data.get("key_concurrency"),
            rate=Rate.from_dict(data.get("rate")),
            key_rate=Rate.from_dict(data.get("key_rate")),
        )

    def key_limit(self, key: str, own_limit: int | None) -> int | None:
        """How many jobs of ``key`` may run at once: the job's own limit, else the queue's per-key one."""
        if key == UNKEYED:
            return None
        return own_limit if own_limit is not None else self.key_concurrency

    def key_rate_of(self, key: str) -> Rate | None:
        return None if key == UNKEYED else self.key_rate


NO_FLOW = QueueFlow()  # a queue nobody set limits on (its keyed jobs still take turns)

MAX_KEYS_SHOWN = 20  # keys a view of a queue's flow names (the busiest), at most


@dataclass(frozen=True, slots=True)
class FlowState:
    """A queue with a flow, as its store sees it now (``/stats``, the metrics and a held job's view read it)."""

    flow: QueueFlow
    running: int  # the queue's jobs running
    keys_running: dict[str, int]  # concurrency_key -> its jobs running (keys with one or more)
    next_start: float | None  # when the queue's rate allows the next start (None, or past: now)
    keys_next_start: dict[str, float]  # concurrency_key -> when its rate allows the next start (later than now)

    def keys_at_limit(self) -> list[str]:
        """The keys running as many jobs as the queue's per-key limit allows (a job's own limit aside)."""
        limit = self.flow.key_concurrency
        return [] if limit is None else sorted(key for key, n in self.keys_running.items() if n >= limit)

    def view(self, now: float, owner: str | None = None) -> dict[str, Any]:
        """What the API shows of it: the limits, what runs, and what holds jobs back now. With ``owner``
        (a client token's name), only the keys of that client are named (see JobService._own)."""
        shown = self.keys_running.items()
        if owner is not None:
            shown = [(key, n) for key, n in shown if key.startswith(f"{owner}/")]
        busiest = sorted(shown, key=lambda item: (-item[1], item[0]))[:MAX_KEYS_SHOWN]
        return {
            **self.flow.to_dict(),
            "running": self.running,
            "keys_running": dict(busiest),
            "held_by": self.held_by(now),
        }

    def held_by(self, now: float) -> dict[str, Any]:
        """What each limit holds back now: the queue's (whether), and the keys' (how many keys)."""
        return {
            "concurrency": self.flow.concurrency is not None and self.running >= self.flow.concurrency,
            "rate_until": _future(self.next_start, now),
            "keys_at_limit": len(self.keys_at_limit()),
            "keys_rate_limited": len(self.keys_next_start),
        }

    def held(self, key: str | None, own_limit: int | None, now: float) -> dict[str, Any] | None:
        """Which limit holds back a ready job of ``key`` now, if one does (None: it waits only for its turn)."""
        flow = self.flow
        if flow.concurrency is not None and self.running >= flow.concurrency:
            return {"limit": "concurrency", "running": self.running, "max": flow.concurrency}
        if (until := _future(self.next_start, now)) is not None:
            return {"limit": "rate", "next_start": until}
        if key is None:
            return None
        limit = flow.key_limit(key, own_limit)
        running = self.keys_running.get(key, 0)
        if limit is not None and running >= limit:
            return {"limit": "key_concurrency", "key": key, "running": running, "max": limit}
        if (until := _future(self.keys_next_start.get(key), now)) is not None:
            return {"limit": "key_rate", "key": key, "next_start": until}
        return None


def _future(at: float | None, now: float) -> str | None:
    """``at`` as an RFC 3339 time if it is still to come, else None."""
    return rfc3339(at) if at is not None and at > now else None


@dataclass(slots=True)
class Turn:
    """One key of a queue with ready jobs, as a store sees it when it plans a lease."""

    key: str
    ready: int  # ready jobs the store may take of it now (it read at most this many)
    running: int = 0
    own_limit: int | None = None  # the concurrency_limit of its first ready job
    tat: float | None = None  # its rate's tat
    served: int = 0  # when it last had a turn (a queue-wide counter): the least recent goes first


@dataclass(slots=True)
class Plan:
    """What to lease from one queue: how many jobs of each key, in turn order, and the state to keep."""

    takes: dict[str, int] = field(default_factory=dict)  # key -> jobs (in the order they were served)
    queue_tat: float | None = None
    tats: dict[str, float] = field(default_factory=dict)  # key -> its new tat (keys that started a job)
    served: dict[str, int] = field(default_factory=dict)  # key -> its new turn counter value
    held: Held | None = None


@dataclass(slots=True)
class Held:
    """Why ready jobs of a queue did not start (what ``/stats`` and the metrics show)."""

    queue_concurrency: bool = False  # the queue runs its limit
    queue_rate_until: float | None = None  # the queue's rate allows no start before then
    keys_at_limit: int = 0  # keys with ready jobs that run their limit
    keys_rate_limited: int = 0  # keys with ready jobs whose rate allows no start yet
    next_start: float | None = None  # the earliest a rate allows another start (None: no rate holds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "queue_concurrency": self.queue_concurrency,
            "queue_rate_until": self.queue_rate_until,
            "keys_at_limit": self.keys_at_limit,
            "keys_rate_limited": self.keys_rate_limited,
            "next_start": self.next_start,
        }


def plan(
    flow: QueueFlow,
    now: float,
    max_jobs: int,
    queue_running: int,
    queue_tat: float | None,
    turns: Sequence[Turn],
    served: int,
) -> Plan:
    """Lease up to ``max_jobs`` of one queue: keys round-robin (least recently served first, one job a
    round), skipping a key at its limit or rate, within the queue's limit and rate.

    ``served`` is the queue's turn counter; each key served gets the next value.
    """
    result = Plan(queue_tat=queue_tat, held=Held())
    held = result.held
    assert held is not None
    room = max_jobs
    if flow.concurrency is not None:
        room = min(room, flow.concurrency - queue_running)
        if room <= 0:
            held.queue_concurrency = True
    order = sorted(turns, key=lambda turn: turn.served)
    open_turns: list[Turn] = []
    for turn in order:
        limit = flow.key_limit(turn.key, turn.own_limit)
        rate = flow.key_rate_of(turn.key)
        if limit is not None and turn.running >= limit:
            held.keys_at_limit += 1
        elif rate is not None and rate.next_start(turn.tat, now) > now:
            held.keys_rate_limited += 1
            _earliest(held, rate.next_start(turn.tat, now))
        elif turn.ready > 0:
            open_turns.append(turn)
    while room > 0 and open_turns:
        still: list[Turn] = []
        for turn in open_turns:
            if room <= 0:
                break
            if flow.rate is not None:
                start_at = flow.rate.next_start(result.queue_tat, now)
                if start_at > now:
                    held.queue_rate_until = start_at
                    _earliest(held, start_at)
                    room = 0
                    break
                result.queue_tat = flow.rate.start(result.queue_tat, now)
            key = turn.key
            result.takes[key] = result.takes.get(key, 0) + 1
            if key not in result.served:
                served += 1
                result.served[key] = served
            room -= 1
            turn.ready -= 1
            turn.running += 1
            rate = flow.key_rate_of(key)
            if rate is not None:
                turn.tat = result.tats[key] = rate.start(turn.tat, now)
            limit = flow.key_limit(key, turn.own_limit)
            if turn.ready <= 0:
                continue
            if limit is not None and turn.running >= limit:
                held.keys_at_limit += 1
            elif rate is not None and rate.next_start(turn.tat, now) > now:
                held.keys_rate_limited += 1
                _earliest(held, rate.next_start(turn.tat, now))
            else:
                still.append(turn)
        open_turns = still
    return result


def _earliest(held: Held, at: float) -> None:
    if held.next_start is None or at < held.next_start:
        held.next_start = at
