"""The dashboard's routes: its page and files, logging in and out, and its live feeds (server-sent events).

The page and its files are public (they hold no data); what the page shows comes from the HTTP
API and the feeds here, under the same tokens and roles. Logging in puts the token in an
HttpOnly, SameSite=Strict cookie (Secure over TLS), which the API then accepts as a bearer
token (jobq/auth.py ``credentials``); writes a browser sends from another site are refused
(``refuse_browser_writes``), and with ``--ui read-only`` every write a browser sends.

A feed ends after ``--max-wait`` (or as jobq drains); the browser's EventSource reconnects by
itself, after the ``retry`` the feed names.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.resources
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_json

from jobq import api, schedule_routes
from jobq.api import SERVICE, owner_scope, read_body
from jobq.auth import (
    ANY_ROLE,
    SESSION_COOKIE,
    Principal,
    Role,
    TokenBook,
    access_of,
    principal_of,
    public,
    requires,
)
from jobq.dashboard.trends import INTERVAL, Trends
from jobq.errors import JobNotFound, Unauthorized
from jobq.job import PROCESSING
from jobq.openapi import Reply, documented
from jobq.service import JobService
from jobq.static_files import file_response, page_response

routes = web.RouteTableDef()
TOKENS = web.AppKey("dashboard_tokens", TokenBook)  # absent when jobq runs without tokens
TRENDS = web.AppKey("dashboard_trends", Trends)  # absent when metrics are off

UI_MEDIA = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
UI_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
"""The page's Content-Security-Policy: its own files only, nothing inline, no framing."""
PAGE_HEADERS = {
    "Content-Security-Policy": UI_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
RETRY_MILLISECONDS = 2000  # how soon a browser reconnects to a feed that ended
MAX_WORKER_JOBS = 500  # running jobs the overview lists, by worker


def event_stream(*events: str) -> dict[str, Any]:
    """The media of a feed: server-sent events named ``events``, each with its JSON as the data."""
    event = {"type": "string", "enum": list(events)}
    data = {"type": "string", "contentMediaType": "application/json"}
    return {"text/event-stream": {"type": "object", "properties": {"event": event, "data": data}}}


def ui_files() -> dict[str, str]:
    """The files of jobq/static/ui the page loads (GET /ui/{asset}), with their media types."""
    folder = importlib.resources.files("jobq") / "static" / "ui"
    return {
        entry.name: UI_MEDIA[suffix]
        for entry in folder.iterdir()
        if (suffix := "." + entry.name.rpartition(".")[2]) in UI_MEDIA
    }


UI_FILES: Mapping[str, str] = ui_files()


class Login(BaseModel):
    """``POST /ui/login``: the jobq token to log in to the dashboard with."""

    model_config = ConfigDict(extra="forbid", strict=True)

    token: str = Field(min_length=1, max_length=4096)


ABILITIES = {  # what the page offers -> the route whose declared roles decide it
    "see_jobs": api.list_jobs,
    "see_nodes": api.nodes,
    "cancel": api.cancel,
    "retry": api.retry,
    "delete": api.delete_job,
    "manage_queues": api.pause_queue,
    "see_schedules": schedule_routes.list_schedules,
    "manage_schedules": schedule_routes.pause_schedule,
}
WRITES = frozenset({"cancel", "retry", "delete", "manage_queues", "manage_schedules"})


def abilities(principal: Principal | None, auth: bool, read_only: bool) -> list[str]:
    """What the page may offer a session: every route's own roles decide, and read-only takes the writes away."""
    found = []
    for ability, handler in ABILITIES.items():
        roles = access_of(handler)
        allowed = not auth or roles is None or (principal is not None and principal.may(roles))
        if allowed and not (read_only and ability in WRITES):
            found.append(ability)
    return found


class Session(BaseModel):
    """``GET /ui/session``: who the dashboard is logged in as, and what it may do."""

    model_config = ConfigDict(extra="forbid")

    auth: bool = Field(description="whether jobq needs tokens (false: everything is open, on loopback)")
    logged_in: bool
    name: str | None
    role: Role | None
    read_only: bool = Field(description="--ui read-only: the dashboard may look, not act")
    may: list[str] = Field(
        description="what the session may do: see_jobs (its own, for a client token), see_nodes, cancel (its own "
        "jobs, for a client token), retry, "
        "delete, manage_queues (pause, resume, clear), see_schedules, manage_schedules (pause, resume, run, delete)"
    )
    sees_every_job: bool = Field(description="whether the jobs it sees are every client's (false: only its own)")


# -- the page -----------------------------------------------------------------------------------
@routes.get("/")
@public
@documented("dashboard", {302: Reply("to the dashboard", headers={"Location": "/ui"})})
async def root(request: web.Request) -> web.Response:
    """The dashboard is where a browser pointed at jobq lands."""
    return web.Response(status=302, headers={"Location": "/ui"})


@routes.get("/ui")
@public
@documented("dashboard", {200: Reply("the dashboard's page", media={"text/html": {"type": "string"}})})
async def page(request: web.Request) -> web.Response:
    """The dashboard: one page that loads its own files only, and reads the API as its user."""
    return page_response("ui", PAGE_HEADERS)


@routes.get("/ui/{asset}")
@public
@documented(
    "dashboard",
    {200: Reply("the file", media={media: {"type": "string"} for media in sorted(set(UI_FILES.values()))})},
    problems={404: "no such file"},
)
async def asset(request: web.Request) -> web.Response:
    """A script, style sheet or image of the dashboard."""
    return file_response("ui", request.match_info["asset"], UI_FILES, "no-cache")


# -- logging in ---------------------------------------------------------------------------------
@routes.get("/ui/session")
@public
@documented("dashboard", {200: Reply("the session", Session)})
async def session(request: web.Request) -> web.Response:
    """Who the dashboard's cookie logs in as (nobody, without one), and whether it may act."""
    tokens = request.app.get(TOKENS)
    principal = None
    if tokens is not None and (token := request.cookies.get(SESSION_COOKIE)):
        principal = tokens.authenticate(f"Bearer {token}")
    auth, read_only = tokens is not None, request.app[SERVICE].config.ui == "read-only"
    answer = Session(
        auth=auth,
        logged_in=principal is not None,
        name=principal.name if principal else None,
        role=principal.role if principal else None,
        read_only=read_only,
        may=abilities(principal, auth, read_only),
        sees_every_job=not auth if principal is None else principal.scope is None,
    )
    return web.Response(body=answer.model_dump_json(), content_type="application/json")


@routes.post("/ui/login")
@public
@documented("dashboard", {204: Reply("logged in: the session cookie is set")}, body=Login, problems={401: ""})
async def login(request: web.Request) -> web.Response:
    """Log the dashboard in with a jobq token: kept in an HttpOnly, SameSite=Strict cookie."""
    token = (await read_body(request, Login)).token
    tokens = request.app.get(TOKENS)
    if tokens is not None and tokens.authenticate(f"Bearer {token}") is None:
        raise Unauthorized("that is not a token jobq knows", invalid=True)
    response = web.Response(status=204)
    if tokens is not None:
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="Strict", secure=request.secure, path="/")
    return response


@routes.post("/ui/logout")
@public
@documented("dashboard", {204: Reply("logged out: the session cookie is gone")})
async def logout(request: web.Request) -> web.Response:
    """Log the dashboard out."""
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


# -- live feeds ---------------------------------------------------------------------------------
async def open_feed(request: web.Request) -> web.StreamResponse:
    feed = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await feed.prepare(request)
    await feed.write(f"retry: {RETRY_MILLISECONDS}\n\n".encode())
    return feed


def event_bytes(event: str, data: Any) -> bytes:
    """A server-sent event named ``event`` with ``data`` as its JSON."""
    return b"event: " + event.encode() + b"\ndata: " + to_json(data) + b"\n\n"


async def send(feed: web.StreamResponse, event: str, data: Any) -> None:
    await feed.write(event_bytes(event, data))


@routes.get("/ui/events")
@requires(*ANY_ROLE)
@documented("dashboard", {200: Reply("overview events, every 2 s, until --max-wait", media=event_stream("overview"))})
async def overview_feed(request: web.Request) -> web.StreamResponse:
    """The overview, now and every 2 s: counts, queues, nodes, their trends, and the running jobs by worker."""
    service = request.app[SERVICE]
    owner = owner_scope(request)
    principal = principal_of(request)
    sees_nodes = principal is None or principal.may(access_of(api.nodes) or frozenset())
    if request.method == "HEAD":  # the headers alone: a feed's body is never sent to a HEAD
        return web.Response(content_type="text/event-stream")
    feed = await open_feed(request)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + service.config.max_wait
    overviews = request.app[OVERVIEWS]
    while True:
        await feed.write(await overviews.event(owner, sees_nodes))
        if loop.time() + INTERVAL > deadline or service.draining:
            return feed
        await asyncio.sleep(INTERVAL)


class Overviews:
    """The overview event, made once per tick for every open feed of the same scope (whose jobs, and
    whether nodes are shown): five open dashboards cost the server what one does."""

    def __init__(self, service: JobService, trends: Trends | None) -> None:
        self.service = service
        self.trends = trends
        self._made: dict[tuple[str | None, bool], tuple[float, bytes]] = {}  # scope -> (when, the event)
        self._making: dict[tuple[str | None, bool], asyncio.Task[bytes]] = {}

    async def event(self, owner: str | None, sees_nodes: bool) -> bytes:
        """The overview event for this scope: the one made less than half a tick ago, or a new one."""
        scope = (owner, sees_nodes)
        now = asyncio.get_running_loop().time()
        made = self._made.get(scope)
        if made is not None and now - made[0] < INTERVAL / 2:
            return made[1]
        making = self._making.get(scope)
        if making is None:
            making = self._making[scope] = asyncio.ensure_future(self._make(owner, sees_nodes))
            making.add_done_callback(functools.partial(self._made_one, scope, now))
        return await asyncio.shield(making)  # a feed that closes does not cancel the others' event

    def _made_one(self, scope: tuple[str | None, bool], started: float, making: asyncio.Task[bytes]) -> None:
        """The event of ``scope`` is made: it stands for half a tick from when it was started. Recorded
        as it finishes, not as each feed wakes: a feed that asks in between must find it."""
        del self._making[scope]
        if not making.cancelled() and making.exception() is None:
            self._made[scope] = (started, making.result())

    async def _make(self, owner: str | None, sees_nodes: bool) -> bytes:
        service, trends = self.service, self.trends
        running, _ = await service.store.list_jobs(status=PROCESSING, owner=owner, limit=MAX_WORKER_JOBS)
        by_worker: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for job in running:
            view = job.to_dict()
            by_worker[job.worker or "?"].append(
                {key: view[key] for key in ("id", "type", "queue", "started_at", "lease_expires_at")}
            )
        overview = {
            "stats": await service.stats(),
            "queues": await service.queues(),
            "nodes": await service.nodes() if sees_nodes else [],
            "trends": trends.view() if trends is not None else {"interval": INTERVAL, "times": [], "queues": {}},
            "workers": [{"name": name, "jobs": jobs} for name, jobs in sorted(by_worker.items())],
        }
        return event_bytes("overview", overview)


OVERVIEWS = web.AppKey("dashboard_overviews", Overviews)


@routes.get("/ui/events/jobs/{id}")
@requires(Role.CLIENT)
@documented(
    "dashboard",
    {
        200: Reply(
            "the job, then each change and log line, until it finished or --max-wait", media=event_stream("job", "log")
        )
    },
    problems={404: "no job with this id (a client token sees only the jobs it enqueued)"},
)
async def job_feed(request: web.Request) -> web.StreamResponse:
    """A job now (``job``), its log lines (``log``), and the job again on each change, until it has finished."""
    service = request.app[SERVICE]
    job_id, owner = request.match_info["id"], owner_scope(request)
    job = await service.get(job_id, owner)  # 404 before the stream starts
    if request.method == "HEAD":
        return web.Response(content_type="text/event-stream")
    feed = await open_feed(request)
    await send(feed, "job", await service.record(job, owner))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + service.config.max_wait
    lines = service.follow_logs(job_id, service.config.max_wait, owner)
    following = asyncio.ensure_future(_forward_logs(feed, lines))
    try:
        while not job.finished and not service.draining and (left := deadline - loop.time()) > 0:
            try:
                job = await service.wait_for_change(job_id, left, owner, seen=job.status)
            except JobNotFound:  # deleted meanwhile: the feed ends (and its reconnection gets a 404)
                return feed
            await send(feed, "job", await service.record(job, owner))
        if job.finished:  # its last lines are on their way: the log stream ends by itself
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(following), max(deadline - loop.time(), 0.0))
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
    return feed


async def _forward_logs(feed: web.StreamResponse, lines: Any) -> None:
    async for line in lines:
        await send(feed, "log", line)
