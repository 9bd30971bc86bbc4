"""Schedules: their ticks (cron in a time zone, intervals), the routes that manage them, firing on a fake clock,
once per tick across nodes of a shared store, missed ticks, and the file given at start."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient

from jobq.api import SERVICE
from jobq.cron import Timing, check_cron
from jobq.errors import ValidationFailed
from jobq.schedules import MISSED_GRACE_SECONDS
from tests.conftest import FakeClock, MakeClient
from tests.test_api import assert_problem

PARIS = ZoneInfo("Europe/Paris")


def at(text: str, zone: ZoneInfo = PARIS) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=zone).timestamp()


# -- ticks ------------------------------------------------------------------------------------------
def test_a_cron_expression_ticks_in_its_time_zone_across_daylight_saving() -> None:
    nightly = Timing("30 2 * * *", None, "Europe/Paris", anchor=at("2026-03-27 12:00"))
    assert nightly.next(at("2026-03-27 12:00")) == at("2026-03-28 02:30")
    # 2026-03-29: clocks go from 02:00 to 03:00 in Paris, so 02:30 does not exist that day
    assert nightly.next(at("2026-03-28 02:30")) == at("2026-03-29 03:00")
    assert nightly.latest(at("2026-03-29 10:00")) == at("2026-03-29 03:00")
    assert nightly.latest(at("2026-03-27 23:00")) is None  # nothing between the anchor and then


def test_six_fields_tick_by_the_second_and_a_tick_at_now_is_due() -> None:
    every_ten = Timing("*/10 * * * * *", None, "UTC", anchor=at("2026-12-06 00:00:00", ZoneInfo("UTC")))
    start = at("2026-12-06 00:00:00", ZoneInfo("UTC"))
    assert every_ten.next(start) == start + 10
    assert every_ten.latest(start + 20) == start + 20
    assert every_ten.latest(start + 29.9) == start + 20


def test_an_interval_ticks_from_its_anchor() -> None:
    timing = Timing(None, 90.0, "UTC", anchor=1000.0)
    assert (timing.latest(1089.0), timing.latest(1090.0), timing.latest(1300.0)) == (None, 1090.0, 1270.0)
    assert (timing.next(0.0), timing.next(1090.0), timing.next(1100.0)) == (1090.0, 1180.0, 1180.0)


def test_a_fixed_hour_ticks_once_when_clocks_go_back_and_an_hourly_one_in_both_passes() -> None:
    fall_back = at("2026-10-24 12:00")  # 2026-10-25: 03:00 in Paris goes back to 02:00
    nightly = Timing("30 2 * * *", None, "Europe/Paris", anchor=fall_back)
    first = nightly.next(fall_back)
    assert nightly.next(first) - first == 25 * 3600  # the next night, not the 02:30 an hour later
    assert nightly.latest(first + 3600 + 60) == first  # in the second pass of the hour: still the first tick
    hourly = Timing("0 * * * *", None, "Europe/Paris", anchor=fall_back)
    two = hourly.next(at("2026-10-25 01:30"))
    assert hourly.next(two) - two == 3600  # 02:00 twice: both are hours of their own


@pytest.mark.parametrize("expression", ["* * * *", "* * * * * * *", "61 * * * *", "0 3 * * mon-fri-sat", "0 0 31 2 *"])
def test_a_cron_expression_croniter_cannot_read_is_refused(expression: str) -> None:
    with pytest.raises(ValueError):
        check_cron(expression)


# -- the routes and firing -------------------------------------------------------------------------
async def create(client: TestClient, status: int = 201, **schedule: Any) -> dict[str, Any]:
    response = await client.post("/schedules", json=schedule)
    assert response.status == status, await response.text()
    return dict(await response.json())


async def jobs_of(client: TestClient, queue: str) -> list[dict[str, Any]]:
    response = await client.get(f"/jobs?queue={queue}&limit=500")
    return list((await response.json())["jobs"])


async def fire(client: TestClient) -> None:
    await client.app[SERVICE].schedules.fire_due()


async def test_a_schedule_fires_each_tick_once_and_shows_its_last_and_next_run(make_client: MakeClient) -> None:
    clock = FakeClock(at("2026-12-06 09:00:00"))
    client = await make_client(clock=clock, workers=0)
    made = await create(client, name="tidy", every=60, job={"type": "noop", "queue": "cron", "payload": {"n": 1}})
    assert made["last_run_at"] is None and made["next_run_at"] == "2026-12-06T08:01:00.000Z"  # UTC
    await fire(client)
    assert await jobs_of(client, "cron") == []  # the first tick is a minute after it was defined
    clock.advance(60)
    await fire(client)
    await fire(client)  # again at the same time: the tick has fired
    clock.advance(59)
    await fire(client)
    [job] = await jobs_of(client, "cron")
    assert (job["type"], job["payload"], job["owner"]) == ("noop", {"n": 1}, None)
    name, _, rest = job["id"].partition(":")
    tick, _, salt = rest.partition("-")  # the salt, which no answer shows, keeps clients from taking the id
    assert (name, int(tick)) == ("tidy", round((clock.now - 59) * 1000)) and len(salt) == 8
    assert salt not in str(await (await client.get("/schedules")).json())
    clock.advance(1)
    await fire(client)
    assert len(await jobs_of(client, "cron")) == 2
    shown = await (await client.get("/schedules/tidy")).json()
    assert (shown["last_run_at"], shown["next_run_at"]) == ("2026-12-06T08:02:00.000Z", "2026-12-06T08:03:00.000Z")


async def test_pause_resume_run_now_redefine_and_delete(make_client: MakeClient) -> None:
    clock = FakeClock(at("2026-12-06 09:00:00"))
    client = await make_client(clock=clock, workers=0)
    await create(client, name="report", cron="0 * * * *", timezone="Europe/Paris", job={"type": "noop", "queue": "r"})
    paused = await (await client.post("/schedules/report/pause")).json()
    assert paused["paused"] is True and paused["next_run_at"] is None
    clock.advance(3600)
    await fire(client)
    assert await jobs_of(client, "r") == []  # paused: the 10:00 tick did not fire
    resumed = await (await client.post("/schedules/report/resume")).json()
    assert resumed["next_run_at"] == "2026-12-06T10:00:00.000Z"  # 11:00 in Paris; the missed tick stays missed
    await fire(client)
    assert await jobs_of(client, "r") == []

    ran = await client.post("/schedules/report/run")
    assert ran.status == 202 and (await ran.json())["id"].startswith("report:now-")
    assert len(await jobs_of(client, "r")) == 1

    put = await client.put("/schedules/report", json={"every": 30, "job": {"type": "noop", "queue": "r"}})
    assert put.status == 200 and (await put.json())["every"] == 30
    clock.advance(30)
    await fire(client)
    assert len(await jobs_of(client, "r")) == 2
    listed = await (await client.get("/schedules")).json()
    assert [s["name"] for s in listed["schedules"]] == ["report"]
    assert (await client.delete("/schedules/report")).status == 204
    clock.advance(30)
    await fire(client)
    assert len(await jobs_of(client, "r")) == 2  # deleted: fires no more; its jobs stay
    await assert_problem(await client.delete("/schedules/report"), 404, "no schedule named 'report'")


async def test_bad_schedules_are_refused_naming_what_is_wrong(make_client: MakeClient) -> None:
    client = await make_client(workers=1)
    job = {"type": "noop"}
    await create(client, name="one", every=5, job=job)
    refusals = [
        ({"name": "one", "every": 5, "job": job}, 409, "a schedule named 'one' exists"),
        ({"name": "two", "job": job}, 422, "give cron or every"),
        ({"name": "two", "cron": "* * *", "every": 5, "job": job}, 422, "5 fields"),
        ({"name": "two", "cron": "0 3 * * *", "timezone": "Mars/Olympus", "job": job}, 422, "not a time zone"),
        ({"name": "two", "every": 60, "timezone": "America", "job": job}, 422, "not a time zone"),  # a folder
        ({"name": "two", "every": 60, "timezone": "x" * 300, "job": job}, 422, "not a time zone"),  # too long a file
        ({"name": "two", "every": 0.5, "job": job}, 422, "every"),
        ({"name": "two:three", "every": 5, "job": job}, 422, "name"),
        ({"name": "two", "every": 5, "job": {"type": "teleport"}}, 422, "teleport"),
    ]
    for body, status, detail in refusals:
        await assert_problem(await client.post("/schedules", json=body), status, detail)
    await assert_problem(await client.get("/schedules/nope"), 404, "no schedule named 'nope'")


@pytest.mark.parametrize(("missed", "fired"), [("skip", 0), ("once", 1)])
async def test_ticks_missed_while_nothing_ran_are_skipped_or_run_once(
    make_client: MakeClient, missed: str, fired: int
) -> None:
    clock = FakeClock(at("2026-12-06 09:00:00"))
    client = await make_client(clock=clock, workers=0)
    await create(client, name="m", every=3600, missed=missed, job={"type": "noop", "queue": "m"})
    clock.advance(2 * 3600 + MISSED_GRACE_SECONDS + 1)  # two ticks, the latest missed by more than the grace
    await fire(client)
    assert len(await jobs_of(client, "m")) == fired
    shown = await (await client.get("/schedules/m")).json()
    assert shown["last_run_at"] is not None  # noted either way: the missed ticks never fire later
    clock.advance(3600 - MISSED_GRACE_SECONDS - 1)
    await fire(client)
    assert len(await jobs_of(client, "m")) == fired + 1  # the next tick, on time, runs


@pytest.mark.parametrize("backend", ["postgresql", "redis"])
async def test_three_nodes_fire_each_tick_once(make_client: MakeClient) -> None:
    clock = FakeClock(at("2026-12-06 09:00:00"))
    nodes = [await make_client(clock=clock, workers=0) for _ in range(3)]  # one store: one schema, one prefix
    await create(nodes[0], name="beat", every=1, job={"type": "noop", "queue": "beat"})
    for _ in range(20):
        clock.advance(1)
        await asyncio.gather(*(fire(node) for node in nodes))  # all three see each tick at once
    jobs = await jobs_of(nodes[1], "beat")
    assert len(jobs) == 20 and len({job["id"] for job in jobs}) == 20


# -- the file given at start ------------------------------------------------------------------------
SCHEDULES_FILE = """
[nightly-report]
cron = "0 3 * * *"
timezone = "Europe/Paris"
missed = "once"

[nightly-report.job]
type = "noop"
queue = "reports"
payload = { kind = "daily" }

[heartbeat]
every = 30
job = { type = "noop" }
"""


async def test_a_schedules_file_defines_them_and_loading_it_again_moves_no_tick(
    make_client: MakeClient, tmp_path: Path
) -> None:
    clock = FakeClock(at("2026-12-06 09:00:00"))
    client = await make_client(clock=clock, workers=0)
    path = tmp_path / "schedules.toml"
    path.write_text(SCHEDULES_FILE)
    schedules = client.app[SERVICE].schedules
    assert await schedules.load_file(path) == 2
    first = {s["name"]: s for s in (await (await client.get("/schedules")).json())["schedules"]}
    assert first["nightly-report"]["job"]["payload"] == {"kind": "daily"}
    assert first["nightly-report"]["next_run_at"] == "2026-12-07T02:00:00.000Z"
    clock.advance(10)
    await schedules.load_file(path)  # a restart: the same definitions
    again = {s["name"]: s for s in (await (await client.get("/schedules")).json())["schedules"]}
    assert again["heartbeat"]["updated_at"] == first["heartbeat"]["updated_at"]

    path.write_text('[broken]\nevery = "often"\njob = { type = "noop" }\n')
    with pytest.raises(ValidationFailed, match=r"schedule 'broken' in .*every"):
        await schedules.load_file(path)
    path.write_text("[broken\n")
    with pytest.raises(ValidationFailed, match="cannot be read"):
        await schedules.load_file(path)
