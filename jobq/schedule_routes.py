"""The schedules' routes: define, list, redefine, pause, resume, run now and delete (admin tokens).

What a schedule does is jobq/schedules.py's; these only read requests and answer.
"""

from __future__ import annotations

from aiohttp import web

from jobq.api import SERVICE, json_response, read_body, receipt_response
from jobq.auth import Role, requires
from jobq.models import JobReceipt, NewSchedule, ScheduleDefinition, ScheduleList, ScheduleView
from jobq.openapi import Reply, documented
from jobq.schedules import Schedule

routes = web.RouteTableDef()

NO_SCHEDULE = "no schedule of this name"
STORE = {503: "the store cannot be reached", 507: ""}


def schedule_response(request: web.Request, schedule: Schedule, status: int = 200) -> web.Response:
    now = request.app[SERVICE].store.clock()
    return json_response(schedule.view(now), status, {"Location": f"/schedules/{schedule.name}"})


@routes.get("/schedules")
@requires(Role.ADMIN)
@documented("schedules", {200: Reply("every schedule, with its last and next run", ScheduleList)}, problems=STORE)
async def list_schedules(request: web.Request) -> web.Response:
    """Every schedule, by name: its definition, and when it last and next runs."""
    service = request.app[SERVICE]
    now = service.store.clock()
    return json_response({"schedules": [schedule.view(now) for schedule in await service.schedules.all()]})


@routes.post("/schedules")
@requires(Role.ADMIN)
@documented(
    "schedules",
    {201: Reply("defined", ScheduleView, headers={"Location": "the schedule's URL"})},
    body=NewSchedule,
    problems={409: "a schedule of this name exists (PUT replaces it)", 422: "an unknown job type", **STORE},
)
async def create_schedule(request: web.Request) -> web.Response:
    """Define a schedule: a cron expression or an interval, a time zone, and the job each tick enqueues."""
    new = await read_body(request, NewSchedule)
    return schedule_response(request, await request.app[SERVICE].schedules.create(new), 201)


@routes.get("/schedules/{name}")
@requires(Role.ADMIN)
@documented("schedules", {200: Reply("the schedule", ScheduleView)}, problems={404: NO_SCHEDULE, **STORE})
async def get_schedule(request: web.Request) -> web.Response:
    """A schedule, with its last and next run."""
    return schedule_response(request, await request.app[SERVICE].schedules.get(request.match_info["name"]))


@routes.put("/schedules/{name}")
@requires(Role.ADMIN)
@documented(
    "schedules",
    {200: Reply("defined, or redefined: its ticks count from now", ScheduleView)},
    body=ScheduleDefinition,
    problems={422: "not a schedule name, or an unknown job type", **STORE},
)
async def put_schedule(request: web.Request) -> web.Response:
    """Define or redefine a schedule by name (a redefined one keeps when it last ran)."""
    name = request.match_info["name"]
    definition = await read_body(request, ScheduleDefinition)
    return schedule_response(request, await request.app[SERVICE].schedules.put(name, definition))


@routes.post("/schedules/{name}/pause")
@requires(Role.ADMIN)
@documented("schedules", {200: Reply("paused: it fires nothing", ScheduleView)}, problems={404: NO_SCHEDULE, **STORE})
async def pause_schedule(request: web.Request) -> web.Response:
    """Pause a schedule: no tick fires until it is resumed."""
    return await set_paused(request, True)


@routes.post("/schedules/{name}/resume")
@requires(Role.ADMIN)
@documented(
    "schedules",
    {200: Reply("resumed: the ticks after now fire (not those missed while paused)", ScheduleView)},
    problems={404: NO_SCHEDULE, **STORE},
)
async def resume_schedule(request: web.Request) -> web.Response:
    """Resume a paused schedule."""
    return schedule_response(
        request, await request.app[SERVICE].schedules.set_paused(request.match_info["name"], False)
    )


async def set_paused(request: web.Request, paused: bool) -> web.Response:
    schedule = await request.app[SERVICE].schedules.set_paused(request.match_info["name"], paused)
    return schedule_response(request, schedule)


@routes.post("/schedules/{name}/run")
@requires(Role.ADMIN)
@documented(
    "schedules",
    {202: Reply("enqueued: the job's receipt", JobReceipt)},
    problems={404: NO_SCHEDULE, 422: "an unknown job type", 503: "shutting down, or the store cannot write", 507: ""},
)
async def run_schedule(request: web.Request) -> web.Response:
    """Enqueue the schedule's job now, outside its ticks (its ticks are unchanged)."""
    added = await request.app[SERVICE].schedules.run_now(request.match_info["name"])
    return receipt_response(added.job, 202)


@routes.delete("/schedules/{name}")
@requires(Role.ADMIN)
@documented("schedules", {204: Reply("deleted")}, problems={404: NO_SCHEDULE, **STORE})
async def delete_schedule(request: web.Request) -> web.Response:
    """Delete a schedule (the jobs it enqueued stay)."""
    await request.app[SERVICE].schedules.delete(request.match_info["name"])
    return web.Response(status=204)
