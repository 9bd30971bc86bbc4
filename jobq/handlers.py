"""The handler registry: which async function runs each job type.

Users register their own handlers with a decorator, Sidekiq-style, in a module
they load with ``--handlers my.module``::

    from jobq import handler

    @handler("send_email")
    async def send_email(ctx):
        await mailer.send(**ctx.payload)
        return {"sent": True}
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from jobq.errors import UnknownJobType
from jobq.job import Job


class Reporter(Protocol):
    """Where a running job's log lines and progress go: the store, or a server over HTTP."""

    async def append_log(self, job_id: str, message: str) -> None: ...

    async def set_progress(self, job_id: str, lease_id: str | None, fraction: float, note: str | None) -> None: ...


@dataclass(slots=True)
class JobContext:
    """What a handler receives: the job, and ways to report on it while it runs."""

    job: Job
    reporter: Reporter
    lease_id: str | None = None  # the lease this run holds (the job object may be leased again meanwhile)

    @property
    def payload(self) -> Any:
        return self.job.payload

    async def log(self, message: str) -> None:
        """Append a line to the job's log (``GET /jobs/{id}/logs``)."""
        await self.reporter.append_log(self.job.id, str(message))

    async def progress(self, fraction: float, note: str | None = None) -> None:
        """Report how far along the job is (0.0 to 1.0), shown in its status."""
        await self.reporter.set_progress(self.job.id, self.lease_id or self.job.lease_id, fraction, note)


Handler = Callable[[JobContext], Awaitable[Any]]


class Registry:
    """Maps job types to handlers."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, job_type: str) -> Callable[[Handler], Handler]:
        """Decorator: ``@registry.register("type")`` makes the function run jobs of that type."""

        def decorate(fn: Handler) -> Handler:
            self._handlers[job_type] = fn
            return fn

        return decorate

    def get(self, job_type: str) -> Handler:
        """The handler for a type; UnknownJobType if none is registered."""
        try:
            return self._handlers[job_type]
        except KeyError:
            raise self.unknown(job_type) from None

    def unknown(self, job_type: str) -> UnknownJobType:
        """The error for a type nobody registered, listing the known ones."""
        return UnknownJobType(
            f"no handler is registered for job type {job_type!r}",
            errors=[{"field": "type", "message": f"known types: {', '.join(sorted(self._handlers))}"}],
        )

    def __contains__(self, job_type: object) -> bool:
        return job_type in self._handlers

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._handlers))


registry = Registry()
"""The default registry: built-in handlers plus every module loaded with ``--handlers``."""

handler = registry.register


def load_handler_modules(modules: list[str]) -> None:
    """Import user modules so their ``@handler`` decorators register into the default registry."""
    for name in modules:
        importlib.import_module(name)
