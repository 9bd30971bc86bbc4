"""The application factory: wires config, store, registry, service, auth, metrics and routes into one aiohttp app."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from jobq.api import METRICS, SERVICE, routes
from jobq.auth import TokenBook, auth_middleware
from jobq.config import Config
from jobq.handlers import Registry, registry
from jobq.metrics import Metrics
from jobq.problems import problem_middleware
from jobq.retry import RetryPolicy
from jobq.service import JobService
from jobq.store import Retention, Store, StoreOptions, open_store

TOKENS = web.AppKey("tokens", TokenBook)  # absent when jobq runs without tokens


def store_from_config(config: Config) -> Store:
    """The store ``config.store`` names, with the retry, retention and size settings applied."""
    options = StoreOptions(
        retry=RetryPolicy(base=config.retry_base, cap=config.retry_cap),
        retention=Retention(max_age=config.retention_age, max_count=config.retention_count),
        max_waiting=config.queue_size,
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
    middlewares = [problem_middleware]
    collected = None
    if config.metrics:
        collected = Metrics()
        collected.watch(service.store, service)
        middlewares.insert(0, collected.http_middleware())  # outermost: it sees every answer, 401s included
    if tokens:
        middlewares.append(auth_middleware(tokens))  # innermost: its 401s and 403s become problem+json
    app = web.Application(client_max_size=config.body_limit, middlewares=middlewares)
    app[SERVICE] = service
    if collected is not None:
        app[METRICS] = collected
    if tokens:
        app[TOKENS] = tokens
    app.cleanup_ctx.append(_service_lifetime)
    app.add_routes(routes)
    return app


async def _service_lifetime(app: web.Application) -> AsyncIterator[None]:
    service = app[SERVICE]
    await service.start()
    yield
    if not service.draining:
        await service.drain()
    await service.close()
