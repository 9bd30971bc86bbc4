"""The application factory: wires config, store, registry, service, auth, metrics and routes into one aiohttp app."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_routedef import AbstractRouteDef

from jobq import flow_routes, schedule_routes, workflow_routes
from jobq.api import METRICS, SERVICE, routes
from jobq.auth import TokenBook, authorize, refuse_browser_writes, route_template
from jobq.config import Config
from jobq.dashboard import routes as dashboard
from jobq.dashboard.trends import Trends
from jobq.handlers import Registry, registry
from jobq.metrics import CLIENT_CLOSED, Metrics
from jobq.problems import ProblemRequestHandler, error_response, expect_handler, refuse_large_body
from jobq.retry import RetryPolicy
from jobq.service import JobService
from jobq.store import Retention, Store, StoreOptions, open_store

TOKENS = web.AppKey("tokens", TokenBook)  # absent when jobq runs without tokens


def store_from_config(config: Config, clock: Callable[[], float] | None = None) -> Store:
    """The store ``config.store`` names, with the retry, retention, size and lost-run settings applied.

    ``clock`` replaces the store's own (tests drive a fake one).
    """
    options = StoreOptions(
        retry=RetryPolicy(base=config.retry_base, cap=config.retry_cap),
        retention=Retention(max_age=config.retention_age, max_count=config.retention_count),
        max_waiting=config.queue_size,
        max_lost_runs=config.max_lost_runs,
        clock=clock,
    )
    extra = {"durability": config.durability} if config.store.startswith("sqlite:") else {}
    return open_store(config.store, options, **extra)


def create_app(
    config: Config,
    *,
    store: Store | None = None,
    handlers: Registry | None = None,
    tokens: TokenBook | None = None,
) -> web.Application:
    """A ready-to-run app. The service starts with the app and drains when it is cleaned up.

    ``tokens`` turns authentication on (main.py loads them from the environment and
    ``--tokens-file``); without them every route is open. ``config.metrics`` counts
    jobs, requests and commits for ``GET /metrics``.
    """
    service = JobService(config, store or store_from_config(config), handlers or registry)
    collected = None
    if config.metrics:
        collected = Metrics()
        collected.watch(service.store, service)
    middlewares = [gate(config.body_limit, collected, tokens or None, read_only=config.ui == "read-only")]
    app = web.Application(client_max_size=config.body_limit, middlewares=middlewares)
    app[SERVICE] = service
    if collected is not None:
        app[METRICS] = collected
    if tokens:
        app[TOKENS] = tokens
    app.cleanup_ctx.append(_service_lifetime)
    app.add_routes(_with_expect_handler(routes, expect_handler(config.body_limit)))
    app.add_routes(_with_expect_handler(schedule_routes.routes, expect_handler(config.body_limit)))
    app.add_routes(_with_expect_handler(flow_routes.routes, expect_handler(config.body_limit)))
    app.add_routes(_with_expect_handler(workflow_routes.routes, expect_handler(config.body_limit)))
    if config.ui != "off":
        add_dashboard(app, collected, tokens or None, expect_handler(config.body_limit))
    return app


def add_dashboard(
    app: web.Application, metrics: Metrics | None, tokens: TokenBook | None, expect: Callable[[web.Request], Any]
) -> None:
    """The dashboard's routes, and (with metrics) the sampling of its trends while the app runs."""
    app.add_routes(_with_expect_handler(dashboard.routes, expect))
    if tokens:
        app[dashboard.TOKENS] = tokens
    trends = None
    if metrics is not None:
        trends = app[dashboard.TRENDS] = Trends(metrics, app[SERVICE].store.clock)

        async def sampling(app: web.Application) -> AsyncIterator[None]:
            task = asyncio.create_task(trends.run(), name="jobq-dashboard-trends")
            yield
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        app.cleanup_ctx.append(sampling)
    app[dashboard.OVERVIEWS] = dashboard.Overviews(app[SERVICE], trends)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def gate(
    body_limit: int, metrics: Metrics | None, tokens: TokenBook | None, *, read_only: bool = False
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """The app's one middleware: what every request goes through, in one pass.

    Outermost first: ``metrics`` count and time every answer (problems and 401s included; 499
    when the client hung up first); every error becomes a problem+json answer (jobq/problems.py);
    a body over ``body_limit`` is refused from its ``Content-Length`` alone, before the token is
    looked at; a browser's cross-site write is refused (and, with ``read_only``, any browser's write);
    with ``tokens``, the caller's token (or dashboard cookie) must allow the route (jobq/auth.py). One
    middleware instead of one per duty: each layer is a coroutine call per request.
    """
    observe = metrics.http_observe if metrics is not None else None
    clock = time.perf_counter

    @web.middleware
    async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = clock()
        code = 500
        try:
            try:
                refuse_large_body(request, body_limit)
                refuse_browser_writes(request, read_only)
                authorize(tokens, request)
                response = await handler(request)
            except Exception as exc:
                if request.writer.output_size > 0:  # a stream has begun: no answer can replace it, its end is cut
                    raise
                response = error_response(request, exc)  # raises a redirect again: it is no error
            code = response.status
            return response
        except web.HTTPException as exc:
            code = exc.status
            raise
        except asyncio.CancelledError:
            code = CLIENT_CLOSED
            raise
        finally:
            if observe is not None:
                observe(request.method, route_template(request), code, clock() - started)

    return gate


def _with_expect_handler(
    definitions: Iterable[AbstractRouteDef], handler: Callable[[web.Request], Any]
) -> Iterator[AbstractRouteDef]:
    """The route definitions, each route answering ``Expect: 100-continue`` with ``handler``."""
    for definition in definitions:
        if isinstance(definition, web.RouteDef):
            kwargs = {"expect_handler": handler, **definition.kwargs}
            yield web.RouteDef(definition.method, definition.path, definition.handler, kwargs)
        else:
            yield definition


async def _service_lifetime(app: web.Application) -> AsyncIterator[None]:
    service = app[SERVICE]
    await service.start()
    yield
    if not service.draining:
        await service.drain()
    await service.close()


class ProblemServer(web.Server):
    """aiohttp's low-level server, serving each connection with a ``ProblemRequestHandler``."""

    @classmethod
    def like(cls, server: web.Server) -> ProblemServer:
        """A ProblemServer with the handler, request factory and settings of ``server``."""
        return cls(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **server._kwargs,
        )

    def __call__(self) -> RequestHandler:
        return ProblemRequestHandler(self, loop=self._loop, **self._kwargs)


class Runner(web.AppRunner):
    """``web.AppRunner`` for a jobq app: requests aiohttp cannot parse get problem+json too.

    Such requests never reach the app (no route, no middleware), so this is the one place to
    answer them: see ``jobq.problems.ProblemRequestHandler``. main.py serves with it.
    """

    async def _make_server(self) -> web.Server:
        return ProblemServer.like(await super()._make_server())
