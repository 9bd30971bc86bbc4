"""The ceiling: the barest aiohttp POST handler, to compare jobq's enqueue rate against.

It does what any JSON API must do per request and nothing more: read the body,
parse it as JSON, and answer 202 with a small JSON document. Run by
``bench/run.py`` in its own process: ``python bench/ceiling_server.py PORT``, on the
event loop jobq runs on (uvloop, jobq/eventloop.py); ``asyncio PORT`` runs it on the
standard loop instead (aiohttp's default). ``work=N PORT`` spins N microseconds of CPU in each
request before answering (``bench/ceiling_work.py``: what a handler's own work costs a server).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import uvloop
from aiohttp import web

WORK_SECONDS = 0.0  # CPU spun in each request (work=N)


async def accept(request: web.Request) -> web.Response:
    """Parse the body and answer 202 with a small JSON body, like an enqueue would."""
    json.loads(await request.read())
    if WORK_SECONDS:
        until = time.perf_counter() + WORK_SECONDS
        while time.perf_counter() < until:
            pass
    return web.Response(status=202, body=b'{"id":"0","status":"pending"}', content_type="application/json")


async def health(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


def main() -> None:
    app = web.Application()
    app.router.add_post("/enqueue", accept)
    app.router.add_get("/health", health)
    global WORK_SECONDS
    *choices, port = sys.argv[1:]
    for choice in choices:
        if choice.startswith("work="):
            WORK_SECONDS = float(choice.removeprefix("work=")) / 1e6
    loop = asyncio.new_event_loop() if "asyncio" in choices else uvloop.new_event_loop()
    web.run_app(app, host="127.0.0.1", port=int(port), access_log=None, print=None, loop=loop)


if __name__ == "__main__":
    main()
