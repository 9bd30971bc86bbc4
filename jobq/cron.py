"""When a schedule's ticks fall: a cron expression or a fixed interval, in a time zone.

Cron expressions have 5 fields (minute, hour, day of month, month, day of week) or 6 with
seconds first (``*/10 * * * * *``); croniter reads them, in the schedule's time zone, so
"0 3 * * *" in Europe/Paris is 03:00 Paris time across daylight-saving changes (a time
that does not exist that day moves to the next that does; at a time that happens twice when
clocks go back, an expression with fixed hours ticks once, the first time, as cron does, while
one whose hour field has a ``*`` ticks in both passes of the hour). An interval ticks every
``every`` seconds from its anchor (when the schedule was defined).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

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
    try:  # a valid expression may still name no date that exists (31 February)
        croniter(expression, datetime.now(ZoneInfo("UTC")), second_at_beginning=True).get_next(float)
    except CroniterError:
        raise ValueError(f"{expression!r} names no time that exists") from None
    return expression


def check_timezone(name: str) -> str:
    """The name, if it is an IANA time zone (Europe/Paris, UTC); else ValueError."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder of zones (America), a name too long
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
        ticks = self._croniter(now + INCLUSIVE)
        tick = ticks.get_prev(datetime)
        earlier = ticks.get_prev(datetime)
        if self._fixed_hours and _same_wall_time(earlier, tick):  # the repeated hour: its first pass was the tick
            tick = earlier
        at = tick.timestamp()
        return at if at > self.anchor else None

    def next(self, after: float) -> float:
        """The first tick after ``after`` (and after the anchor)."""
        after = max(after, self.anchor)
        if self.every is not None:
            return self.anchor + (math.floor((after - self.anchor) / self.every) + 1) * self.every
        ticks = self._croniter(after)
        before, tick = self._croniter(after + INCLUSIVE).get_prev(datetime), ticks.get_next(datetime)
        while self._fixed_hours and _same_wall_time(before, tick):  # the repeated hour: skip its second pass
            before, tick = tick, ticks.get_next(datetime)
        return tick.timestamp()

    @property
    def _fixed_hours(self) -> bool:
        """Whether the hour field names hours (``3``, ``1,13``), not ``*`` or a step: a tick at most once an hour."""
        assert self.cron is not None
        fields = self.cron.split()
        return "*" not in fields[-4]

    def _croniter(self, start: float) -> croniter:
        assert self.cron is not None
        zone = ZoneInfo(self.timezone)
        return croniter(self.cron, datetime.fromtimestamp(start, zone), second_at_beginning=True)


def _same_wall_time(a: datetime, b: datetime) -> bool:
    """Whether two ticks read the same on a wall clock (the hour that happens twice when clocks go back)."""
    return a.replace(tzinfo=None) == b.replace(tzinfo=None) and a.timestamp() != b.timestamp()
