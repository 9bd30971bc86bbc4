"""Schedules: jobs enqueued at each tick of a cron expression or an interval, once per tick on any number of nodes.

A schedule lives in the store (``Store.put_schedule``): its definition (``ScheduleDefinition``
and when it was created and last changed), and the latest tick it fired. Every node checks
the schedules once a second (``fire_due``, one of the service's duties) and enqueues the job of each tick that fell
due, under an id made of the schedule's name and the tick (``tick_job_id``). Two nodes
firing the same tick add the same id, and the store keeps one job: a tick fires once
however many nodes see it, with no leader to fail over. The store then notes the tick
(``Store.fired``, which only moves forward), so no node fires it again.

Ticks count from when the schedule was last defined, paused or resumed (``updated_at``):
redefining or resuming a schedule never fires what fell due before. A tick missed by more
than ``MISSED_GRACE_SECONDS`` (every node was down, or the store away) is skipped with
``missed="skip"``; with ``missed="once"`` the latest one runs, once for all missed. Ticks
closer together than the checks (an interval of 1 s with a check delayed by 2 s) are
likewise one job, for the latest.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from jobq.cron import Timing
from jobq.errors import InvalidRequest, JobqError, ScheduleExists, ScheduleNotFound
from jobq.job import new_job_id, rfc3339
from jobq.models import SCHEDULE_NAME_PATTERN, NewSchedule, ScheduleDefinition
from jobq.store.base import StoredSchedule

if TYPE_CHECKING:
    from jobq.service import JobService
    from jobq.store.base import Added

log = logging.getLogger("jobq.schedules")

CHECK_SECONDS = 1.0  # how often each node looks for ticks that fell due
MISSED_GRACE_SECONDS = 60.0  # a tick older than this when first seen was missed (see missed=)


def _ignore(schedule: str, outcome: str) -> None:
    return None


def tick_job_id(name: str, tick: float, salt: str) -> str:
    """The id of the job a schedule enqueues at ``tick``: the same on every node, so the tick fires once.

    The schedule's salt (random, made when it is defined, shown to nobody) keeps a client from
    taking a tick's id ahead of it.
    """
    return f"{name}:{round(tick * 1000)}-{salt}"


@dataclass(frozen=True, slots=True)
class Schedule:
    """A schedule as its store keeps it, read: the definition, its times, and the latest tick fired."""

    name: str
    definition: ScheduleDefinition
    created_at: float
    updated_at: float
    fired: float | None
    salt: str  # in its ticks' job ids (see tick_job_id)

    @classmethod
    def read(cls, stored: StoredSchedule) -> Schedule:
        """A stored schedule; ValueError if its definition is not one this jobq reads."""
        fields = dict(stored.definition)
        created_at, updated_at = float(fields.pop("created_at")), float(fields.pop("updated_at"))
        salt = str(fields.pop("salt"))
        return cls(stored.name, ScheduleDefinition.model_validate(fields), created_at, updated_at, stored.fired, salt)

    @property
    def timing(self) -> Timing:
        d = self.definition
        return Timing(d.cron, d.every, d.timezone, anchor=self.updated_at)

    def due(self, now: float) -> tuple[float, bool] | None:
        """The latest tick due at ``now`` and not yet fired, and whether to run it (False: missed, skipped)."""
        if self.definition.paused:
            return None
        tick = self.timing.latest(now)
        if tick is None or (self.fired is not None and tick <= self.fired):
            return None
        return tick, self.definition.missed == "once" or now - tick <= MISSED_GRACE_SECONDS

    def next_run(self, now: float) -> float | None:
        """Its next tick after ``now`` (None while paused)."""
        return None if self.definition.paused else self.timing.next(max(now, self.fired or 0.0))

    def view(self, now: float) -> dict[str, Any]:
        """What ``GET /schedules`` shows of it."""
        d = self.definition
        return {
            "name": self.name,
            "cron": d.cron,
            "every": d.every,
            "timezone": d.timezone,
            "job": d.job.model_dump(mode="json"),
            "missed": d.missed,
            "paused": d.paused,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
            "last_run_at": rfc3339(self.fired),
            "next_run_at": rfc3339(self.next_run(now)),
        }


def stored_definition(
    definition: ScheduleDefinition, created_at: float, updated_at: float, salt: str
) -> dict[str, Any]:
    return {**definition.model_dump(mode="json"), "created_at": created_at, "updated_at": updated_at, "salt": salt}


class Schedules:
    """What jobq does with schedules: define, list, pause, run now, delete, and fire their ticks."""

    def __init__(self, service: JobService) -> None:
        self.service = service
        self.store = service.store
        self.on_tick: Callable[[str, str], None] = _ignore  # (schedule, fired|skipped|failed): the metrics
        self._firing = asyncio.Lock()  # one check at a time here: each tick is counted once per node

    async def all(self) -> list[Schedule]:
        """Every schedule this jobq can read, by name (one it cannot is logged and left alone)."""
        found = []
        for stored in await self.store.schedules():
            try:
                found.append(Schedule.read(stored))
            except (KeyError, TypeError, ValueError) as exc:
                log.error("schedule %s cannot be read, and does not fire: %s", stored.name, exc)
        return found

    async def get(self, name: str) -> Schedule:
        for schedule in await self.all():
            if schedule.name == name:
                return schedule
        raise ScheduleNotFound(name)

    async def create(self, new: NewSchedule) -> Schedule:
        """Define a new schedule; ScheduleExists if the name is taken (by another node meanwhile too)."""
        return await self.put(new.name, ScheduleDefinition.model_validate(new.model_dump(exclude={"name"})), new=True)

    async def put(self, name: str, definition: ScheduleDefinition, *, new: bool = False) -> Schedule:
        """Define schedule ``name``, or redefine it (its ticks then count from now); with ``new``, define only."""
        if not re.fullmatch(SCHEDULE_NAME_PATTERN, name):
            raise InvalidRequest(
                f"{name!r} is not a schedule name", errors=[{"field": "name", "message": SCHEDULE_NAME_PATTERN}]
            )
        self._check_type(definition)
        now = self.store.clock()
        known = None if new else next((s for s in await self.all() if s.name == name), None)
        created_at = known.created_at if known is not None else now
        salt = known.salt if known is not None else secrets.token_hex(4)
        if not await self.store.put_schedule(name, stored_definition(definition, created_at, now, salt), new=new):
            raise ScheduleExists(name)
        log.info("schedule %s %s", name, "redefined" if known is not None else "defined")
        return await self.get(name)

    async def set_paused(self, name: str, paused: bool) -> Schedule:
        """Pause or resume a schedule (resumed, it fires the ticks after now, not those missed)."""
        schedule = await self.get(name)
        definition = schedule.definition.model_copy(update={"paused": paused})
        stored = stored_definition(definition, schedule.created_at, self.store.clock(), schedule.salt)
        await self.store.put_schedule(name, stored)
        log.info("schedule %s %s", name, "paused" if paused else "resumed")
        return await self.get(name)

    async def delete(self, name: str) -> None:
        if not await self.store.delete_schedule(name):
            raise ScheduleNotFound(name)
        log.info("schedule %s deleted", name)

    async def run_now(self, name: str) -> Added:
        """Enqueue the schedule's job now, outside its ticks (a new job each call)."""
        schedule = await self.get(name)
        return await self.service.submit_one(schedule.definition.job.request(f"{name}:now-{new_job_id()[-12:]}"))

    def _check_type(self, definition: ScheduleDefinition) -> None:
        """Refuse a job type this node's in-process workers would refuse at every tick."""
        unknown = self.service.unknown_type(definition.job.request(""))
        if unknown is not None:
            raise unknown

    # -- firing ------------------------------------------------------------------
    async def fire_due(self) -> list[str]:
        """Enqueue the job of every tick due now and not yet fired; returns the ids of the jobs enqueued here."""
        async with self._firing:
            return await self._fire_due()

    async def _fire_due(self) -> list[str]:
        if self.service.draining:  # a stopping node enqueues nothing; the others fire the ticks
            return []
        now = self.store.clock()
        enqueued = []
        for schedule in await self.all():
            try:
                due = schedule.due(now)
                if due is not None and (job_id := await self._fire(schedule, *due, now)) is not None:
                    enqueued.append(job_id)
            except Exception:  # one schedule's trouble (the store away mid-way) never stops the others
                log.exception("schedule %s could not be checked; it is tried again at the next check", schedule.name)
        return enqueued

    async def _fire(self, schedule: Schedule, tick: float, run: bool, now: float) -> str | None:
        """Enqueue a due tick's job (or skip it, missed); note the tick fired. The job's id if this node added it."""
        added_id = None
        if run:
            request = schedule.definition.job.request(tick_job_id(schedule.name, tick, schedule.salt))
            try:
                added = await self.service.submit_one(request)
            except JobqError as exc:  # the store away, the queue full: the next check tries again
                log.warning("schedule %s could not enqueue its %s tick: %s", schedule.name, rfc3339(tick), exc)
                self.on_tick(schedule.name, "failed")
                return None
            if added.created:  # this node fired it (another may have, first)
                added_id = added.job.id
                self.on_tick(schedule.name, "fired")
                log.info("schedule %s fired its %s tick: job %s", schedule.name, rfc3339(tick), added.job.id)
        else:
            self.on_tick(schedule.name, "skipped")
            log.warning(
                "schedule %s skipped its tick of %s: missed by %.0fs (missed=skip)",
                schedule.name,
                rfc3339(tick),
                now - tick,
            )
        await self.store.fired(schedule.name, tick)
        return added_id

    # -- the file given at start ---------------------------------------------------
    async def load_file(self, path: Path) -> int:
        """Define (or redefine) every schedule of a TOML file; returns how many.

        Each table is a schedule, its name the table's: ``[nightly-report]`` with ``cron =
        "0 3 * * *"`` and a ``[nightly-report.job]`` table. A schedule whose definition is
        already the file's is left as it is, so restarting does not move its ticks (nor resume a
        schedule paused through the API, unless the file says ``paused``).
        """
        try:
            tables = tomllib.loads(await asyncio.to_thread(path.read_text))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise InvalidRequest(f"the schedules file {path} cannot be read: {exc}") from None
        known = {schedule.name: schedule for schedule in await self.all()}
        for name, table in tables.items():
            try:
                new = NewSchedule.model_validate({**table, "name": name}, strict=False)
            except ValidationError as exc:
                raise InvalidRequest(f"schedule {name!r} in {path}: {_first_error(exc)}") from None
            definition = ScheduleDefinition.model_validate(new.model_dump(exclude={"name"}))
            if name in known and "paused" not in table:  # paused or resumed through the API: it stays so
                definition = definition.model_copy(update={"paused": known[name].definition.paused})
            if name not in known or known[name].definition != definition:
                await self.put(name, definition)
        return len(tables)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])
