"""When a schedule's ticks fall: a cron expression or a fixed interval, in a time zone.

Cron expressions have 5 fields (minute, hour, day of month, month, day of week) or 6 with
seconds first (``*/10 * * * * *``); croniter reads them, in the schedule's time zone, so
"0 3 * * *" in Europe/Paris is 03:00 Paris time across daylight-saving changes (a time
that does not exist that day moves to the next that does). An interval ticks every
``every`` seconds from its anchor (when the schedule was defined).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

INCLUSIVE = 0.001  # a tick exactly at "now" is due: croniter looks strictly before the time it starts from


def check_cron(expression: str) -> str:
    """The expression, if croniter reads it with 5 or 6 fields; else ValueError naming what is wrong."""
    fields = expression.split()
    if len(fields) not in (5, 6):
        raise ValueError(
            f"a cron expression has 5 fields (minute hour day month weekday) or 6 with seconds first; "
            f"{expression!r} has {len(fields)}"
        )
    if not croniter.is_valid(expression, second_at_beginning=True):
        raise ValueError(f"{expression!r} is not a cron expression croniter can read")
    return expression


def check_timezone(name: str) -> str:
    """The name, if it is an IANA time zone (Europe/Paris, UTC); else ValueError."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not a time zone name (e.g. UTC, Europe/Paris)") from None
    return name


@dataclass(frozen=True, slots=True)
class Timing:
    """A schedule's ticks: ``cron`` in ``timezone``, or every ``every`` seconds after ``anchor``."""

    cron: str | None
    every: float | None
    timezone: str
    anchor: float  # Unix time the ticks count from: no tick is at or before it

    def latest(self, now: float) -> float | None:
        """The latest tick at or before ``now`` (and after the anchor), or None."""
        if self.every is not None:
            count = math.floor((now - self.anchor) / self.every)
            return self.anchor + count * self.every if count >= 1 else None
        tick = float(self._croniter(now + INCLUSIVE).get_prev(float))
        return tick if tick > self.anchor else None

    def next(self, after: float) -> float:
        """The first tick after ``after`` (and after the anchor)."""
        after = max(after, self.anchor)
        if self.every is not None:
            return self.anchor + (math.floor((after - self.anchor) / self.every) + 1) * self.every
        return float(self._croniter(after).get_next(float))

    def _croniter(self, start: float) -> croniter:
        assert self.cron is not None
        zone = ZoneInfo(self.timezone)
        return croniter(self.cron, datetime.fromtimestamp(start, zone), second_at_beginning=True)
