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
(jobq/store/ready.py, ``FlowReady``), PostgreSQL in its schema's ``claim_flow`` function (under
the queue's advisory lock), Redis in its claim script; tests/test_flow_store.py holds all four to the same behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass
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
        """How many jobs of ``key`` may run at once: the queue's per-key limit, or the job's own when it is
        lower (or the queue has none): a client can narrow its key's limit, never widen the operator's."""
        if key == UNKEYED:
            return None
        if own_limit is None or (self.key_concurrency is not None and self.key_concurrency < own_limit):
            return self.key_concurrency
        return own_limit

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
