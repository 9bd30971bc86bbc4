"""A queue's limits over HTTP: read, set and remove them (jobq/flow.py says what they do).

Setting needs an admin token; reading them, any token (a client token sees only its own keys named).
"""

from __future__ import annotations

from aiohttp import web

from jobq.api import SERVICE, STORE_WRITES, json_response, owner_scope, queue_name, read_body
from jobq.auth import ANY_ROLE, Role, requires
from jobq.errors import NoLimits
from jobq.models import QueueFlowBody, QueueFlowSet
from jobq.openapi import Reply, documented

routes = web.RouteTableDef()


@routes.get("/queues/{name}/flow")
@requires(*ANY_ROLE)
@documented(
    "queues",
    {200: Reply("its limits, and what they hold back now", QueueFlowSet)},
    problems={404: "the queue has no limits"},
)
async def get_flow(request: web.Request) -> web.Response:
    """A queue's limits, what runs, and what they hold back now."""
    name = queue_name(request)
    view = (await request.app[SERVICE].flows(owner_scope(request))).get(name)
    if view is None:
        raise NoLimits(name)
    return json_response(QueueFlowSet(queue=name, flow=view))


@routes.put("/queues/{name}/flow")
@requires(Role.ADMIN)
@documented(
    "queues",
    {200: Reply("set: the next lease applies them, on every node", QueueFlowSet)},
    body=QueueFlowBody,
    problems=STORE_WRITES,
)
async def put_flow(request: web.Request) -> web.Response:
    """Set a queue's limits: jobs running at once (in all, and per concurrency_key) and starts per period
    (in all, and per key). An absent limit is no limit; the new ones replace the old, and rates start afresh."""
    name = queue_name(request)
    body = await read_body(request, QueueFlowBody)
    view = await request.app[SERVICE].set_flow(name, body.to_flow())
    return json_response(QueueFlowSet(queue=name, flow=view))


@routes.delete("/queues/{name}/flow")
@requires(Role.ADMIN)
@documented("queues", {200: Reply("removed: its jobs run without limits", QueueFlowSet)}, problems=STORE_WRITES)
async def delete_flow(request: web.Request) -> web.Response:
    """Remove a queue's limits (its keyed jobs still take turns by key)."""
    name = queue_name(request)
    await request.app[SERVICE].set_flow(name, None)
    return json_response(QueueFlowSet(queue=name, flow=None))
