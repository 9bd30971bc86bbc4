"""The handler registry: which function runs each job type.

Users register their own handlers with a decorator, Sidekiq-style, in a module
they load with ``--handlers my.module``::

    from jobq import handler

    @handler("send_email")
    async def send_email(ctx):
        await mailer.send(**ctx.payload)
        return {"sent": True}

An ``async def`` handler runs on the event loop; a plain ``def`` runs in a thread
of the worker pool (as Celery, RQ and dramatiq run theirs), and its context's
``log`` and ``progress`` are plain calls there.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from jobq.errors import HandlersFailed, UnknownJobType
from jobq.job import Job
from jobq.values import MAX_LOG_CHARS, MAX_NOTE_CHARS, copy_json, storable_text


class Reporter(Protocol):
    """Where a running job's log lines and progress go: the store, or a server over HTTP."""

    async def append_log(self, job_id: str, message: str, lease_id: str | None = None) -> None: ...

    async def set_progress(self, job_id: str, lease_id: str | None, fraction: float, note: str | None) -> None: ...

    async def parents(self, job_id: str) -> list[dict[str, Any]]: ...


class JobContext:
    """What a handler receives: its own copy of the job, and ways to report on it while it runs.

    The job's payload is copied the first time the handler reads ``job`` or ``payload``
    (a handler that never looks pays nothing), so nothing a handler does to it reaches
    the store. Log lines and progress notes are made storable here (text, valid UTF-8,
    bounded), so nothing a handler passes can make a write fail: a dict note is stored
    as its JSON text, a file name that is not UTF-8 with escapes.
    """

    __slots__ = ("_copied", "_job", "lease_id", "reporter")

    def __init__(self, job: Job, reporter: Reporter, lease_id: str | None = None) -> None:
        self._job = job  # a snapshot whose payload is still the store's
        self._copied = False
        self.reporter = reporter
        self.lease_id = lease_id  # the lease this run holds

    @property
    def job(self) -> Job:
        if not self._copied:
            self._job.payload = copy_json(self._job.payload)
            self._copied = True
        return self._job

    @property
    def payload(self) -> Any:
        return self.job.payload

    async def log(self, message: str) -> None:
        """Append a line to the job's log (``GET /jobs/{id}/logs``)."""
        await self.reporter.append_log(self._job.id, storable_text(message, MAX_LOG_CHARS), self.lease_id)

    async def progress(self, fraction: float, note: Any = None) -> None:
        """Report how far along the job is (0.0 to 1.0), shown in its status, with an optional note."""
        text = None if note is None else storable_text(note, MAX_NOTE_CHARS)
        await self.reporter.set_progress(self._job.id, self.lease_id, fraction, text)

    async def parents(self) -> list[dict[str, Any]]:
        """How each job this one depends on ended: its id, type, status, result and error, in ``depends_on``
        order (a chain's job reads the one before's result here, a group's callback its members')."""
        return await self.reporter.parents(self._job.id) if self._job.depends_on else []


@dataclass(slots=True)
class ThreadJobContext:
    """What a plain ``def`` handler receives: as JobContext, but ``log`` and ``progress`` are blocking calls.

    They hand the report to the event loop and wait for it, so a handler thread never
    touches the store itself.
    """

    context: JobContext
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.get_running_loop)

    @property
    def job(self) -> Job:
        return self.context.job

    @property
    def payload(self) -> Any:
        return self.context.job.payload

    @property
    def lease_id(self) -> str | None:
        return self.context.lease_id

    def log(self, message: str) -> None:
        """Append a line to the job's log."""
        asyncio.run_coroutine_threadsafe(self.context.log(message), self.loop).result()

    def progress(self, fraction: float, note: Any = None) -> None:
        """Report how far along the job is (0.0 to 1.0)."""
        asyncio.run_coroutine_threadsafe(self.context.progress(fraction, note), self.loop).result()

    def parents(self) -> list[dict[str, Any]]:
        """How each job this one depends on ended (see JobContext.parents)."""
        return asyncio.run_coroutine_threadsafe(self.context.parents(), self.loop).result()


Handler = Callable[[JobContext], Awaitable[Any]] | Callable[[ThreadJobContext], Any]
"""An ``async def`` taking a JobContext, or a plain ``def`` taking a ThreadJobContext."""


class Registry:
    """Maps job types to handlers."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._threaded: set[str] = set()  # types whose handler is a plain def

    def register(self, job_type: str) -> Callable[[Handler], Handler]:
        """Decorator: ``@registry.register("type")`` makes the function run jobs of that type."""

        def decorate(fn: Handler) -> Handler:
            self._handlers[job_type] = fn
            if inspect.iscoroutinefunction(fn):
                self._threaded.discard(job_type)
            else:
                self._threaded.add(job_type)
            return fn

        return decorate

    def runs_in_thread(self, job_type: str) -> bool:
        """Whether this type's handler is a plain ``def`` (run in a thread) rather than an ``async def``."""
        return job_type in self._threaded

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


def load_handler_modules(modules: Sequence[str]) -> None:
    """Import user modules so their ``@handler`` decorators register into the default registry.

    The working directory comes first on ``sys.path``, as under ``python -m``, so ``--handlers
    tasks`` finds ./tasks.py wherever jobq or its worker is started. HandlersFailed names the
    module that could not be loaded and why (the error it raised is its cause).
    """
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise HandlersFailed(f"handler module {name!r} cannot be imported: {exc}") from exc
        except Exception as exc:
            raise HandlersFailed(f"handler module {name!r} failed while being imported: {exc!r}") from exc
