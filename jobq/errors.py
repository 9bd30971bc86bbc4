"""One exception hierarchy for jobq.

Each error carries the HTTP status it maps to and a short title, so the API
turns any of them into one RFC 9457 problem document without a lookup table
scattered across handlers.
"""

from __future__ import annotations

from typing import Any


class JobqError(Exception):
    """Base class: every error jobq raises on purpose."""

    status = 500
    title = "Internal error"
    headers: dict[str, str] = {}

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors


class BadRequest(JobqError):
    status = 400
    title = "Malformed request"


class ValidationFailed(JobqError):
    status = 422
    title = "Invalid job"


class InvalidRequest(ValidationFailed):
    """Invalid fields or parameters of a request that is not a job (a query, a lease, a schedule, a queue name)."""

    title = "Invalid request"


class UnknownJobType(ValidationFailed):
    title = "Unknown job type"


class JobNotFound(JobqError):
    status = 404
    title = "Job not found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class ScheduleNotFound(JobqError):
    status = 404
    title = "Schedule not found"

    def __init__(self, name: str) -> None:
        super().__init__(f"no schedule named {name!r}")


class WorkflowNotFound(JobqError):
    status = 404
    title = "Workflow not found"

    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"no workflow with id {workflow_id!r}")


class NoLimits(JobqError):
    status = 404
    title = "No limits set"

    def __init__(self, queue: str) -> None:
        super().__init__(f"queue {queue!r} has no limits")


class Conflict(JobqError):
    status = 409
    title = "Conflict"


class ScheduleExists(Conflict):
    title = "Schedule already exists"

    def __init__(self, name: str) -> None:
        super().__init__(f"a schedule named {name!r} exists: PUT /schedules/{name} replaces it")


class IdReused(Conflict):
    title = "Job id already used"


class StaleLease(Conflict):
    title = "Stale or unknown lease"


class InvalidTransition(Conflict):
    title = "Job is in the wrong state"

    def __init__(self, job_id: str, source: str, target: str) -> None:
        super().__init__(f"job {job_id!r} is {source}; it cannot become {target}")
        self.source = source
        self.target = target


REALM = "jobq"  # of the bearer challenge in a 401 or 403 answer's WWW-Authenticate


class Unauthorized(JobqError):
    """No token, or one jobq does not know (401; gRPC UNAUTHENTICATED)."""

    status = 401
    title = "Unauthorized"

    def __init__(self, detail: str, *, invalid: bool = False) -> None:
        super().__init__(detail)
        challenge = f'Bearer realm="{REALM}"' + (', error="invalid_token"' if invalid else "")
        self.headers = {"WWW-Authenticate": challenge}


class Forbidden(JobqError):
    """A known token whose role may not do this (403; gRPC PERMISSION_DENIED)."""

    status = 403
    title = "Forbidden"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.headers = {"WWW-Authenticate": f'Bearer realm="{REALM}", error="insufficient_scope"'}


class QueueFull(JobqError):
    status = 503
    title = "Queue full"
    headers = {"Retry-After": "1"}


class ShuttingDown(JobqError):
    status = 503
    title = "Shutting down"
    headers = {"Retry-After": "5"}


class StoreFull(JobqError):
    status = 507
    title = "Storage full"
    headers = {"Retry-After": "30"}


class UnstorableValue(JobqError):
    """A value the store cannot write (a lone surrogate, an integer too large): nothing of it is stored."""

    status = 422
    title = "Value cannot be stored"


class StoreUnavailable(JobqError):
    status = 503
    title = "Storage unavailable"
    headers = {"Retry-After": "5"}


class StoreCorrupt(JobqError):
    """The store's file or server holds data jobq cannot read; never start over it."""

    title = "Storage corrupt"


class HandlersFailed(JobqError):
    """A ``--handlers`` module could not be imported: jobq (or the worker) does not start."""


class Unreachable(JobqError):
    """The client could not reach the jobq server (refused, reset, timed out)."""

    status = 503
    title = "Server unreachable"


def _subclasses(cls: type[JobqError]) -> list[type[JobqError]]:
    return [cls, *(sub for direct in cls.__subclasses__() for sub in _subclasses(direct))]


def error_from_problem(status: int, problem: dict[str, Any]) -> JobqError:
    """Rebuild the jobq error a problem+json body describes (the client raises what the server raised)."""
    by_title = {cls.title: cls for cls in _subclasses(JobqError) if cls.status == status}
    cls = by_title.get(problem.get("title", ""), JobqError)
    error = cls.__new__(cls)
    JobqError.__init__(error, str(problem.get("detail", "")), errors=problem.get("errors"))
    error.status = status
    error.title = str(problem.get("title", cls.title))
    return error
