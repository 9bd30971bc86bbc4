"""The application factory: wires config, store, registry, service and routes into one aiohttp app."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from jobq.api import SERVICE, routes
from jobq.config import Config
from jobq.handlers import Registry, registry
from jobq.problems import problem_middleware
from jobq.retry import RetryPolicy
from jobq.service import JobService
from jobq.store import Retention, Store, StoreOptions, open_store


def store_from_config(config: Config) -> Store:
    """The store ``config.store`` names, with the retry, retention and size settings applied."""
    options = StoreOptions(
        retry=RetryPolicy(base=config.retry_base, cap=config.retry_cap),
        retention=Retention(max_age=config.retention_age, max_count=config.retention_count),
        max_waiting=config.queue_size,
    )
    extra = {"durability": config.durability} if config.store.startswith("sqlite:") else {}
    return open_store(config.store, options, **extra)


def create_app(config: Config, *, store: Store | None = None, handlers: Registry | None = None) -> web.Application:
    """A ready-to-run app. The service starts with the app and drains when it is cleaned up."""
    app = web.Application(client_max_size=config.body_limit, middlewares=[problem_middleware])
    app[SERVICE] = JobService(config, store or store_from_config(config), handlers or registry)
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
