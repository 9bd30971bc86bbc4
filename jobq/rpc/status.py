"""jobq errors as gRPC status codes, and the decorators that apply the mapping to every RPC.

Each jobq error maps by its class where the HTTP status is ambiguous (409 and
503 each cover two gRPC codes), otherwise by its HTTP status. The message is
the error's title and detail, as in the HTTP problem document; the title also
travels in the ``jobq-error`` trailing metadata, and ``Retry-After`` as
``retry-after``. A request that does not decode is INVALID_ARGUMENT. Anything
else is logged and answered INTERNAL without details.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from pydantic import ValidationError

from jobq.errors import BadRequest, IdReused, JobqError, QueueFull, ScheduleExists, StoreFull
from jobq.problems import from_validation_error
from jobq.rpc.convert import MAX_NESTING

log = logging.getLogger("jobq.rpc")

Code = grpc.StatusCode

BY_CLASS: tuple[tuple[type[JobqError], Code], ...] = (
    (IdReused, Code.ALREADY_EXISTS),  # the other 409s are FAILED_PRECONDITION
    (ScheduleExists, Code.ALREADY_EXISTS),
    (QueueFull, Code.RESOURCE_EXHAUSTED),  # the other 503s are UNAVAILABLE
    (StoreFull, Code.RESOURCE_EXHAUSTED),
)

BY_HTTP_STATUS: dict[int, Code] = {
    400: Code.INVALID_ARGUMENT,
    401: Code.UNAUTHENTICATED,
    403: Code.PERMISSION_DENIED,
    404: Code.NOT_FOUND,
    409: Code.FAILED_PRECONDITION,  # stale lease, wrong state: retrying the same call cannot succeed
    412: Code.FAILED_PRECONDITION,
    413: Code.RESOURCE_EXHAUSTED,
    422: Code.INVALID_ARGUMENT,
    429: Code.RESOURCE_EXHAUSTED,
    503: Code.UNAVAILABLE,
    504: Code.DEADLINE_EXCEEDED,
    507: Code.RESOURCE_EXHAUSTED,
}

INTERNAL_MESSAGE = "the server failed; the error is in its log"

Request = TypeVar("Request")
Response = TypeVar("Response")
Servicer = TypeVar("Servicer")
UnaryMethod = Callable[[Servicer, Request, grpc.aio.ServicerContext], Awaitable[Response]]
StreamMethod = Callable[[Servicer, Request, grpc.aio.ServicerContext], AsyncIterator[Response]]


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A request that is not a valid message: handed to the RPC in its place, which answers INVALID_ARGUMENT."""

    message_type: str
    reason: str

    def error(self) -> BadRequest:
        if "MaxDepth" in self.reason:
            why = f"it nests too deeply (a payload or result nests at most {MAX_NESTING} levels over gRPC)"
        else:
            why = self.reason
        return BadRequest(f"the request is not a valid {self.message_type}: {why}")


def lenient(message_class: type[Message]) -> Callable[[bytes], Message | Undecodable]:
    """A request deserializer that returns Undecodable instead of raising (gRPC would answer UNKNOWN)."""

    def parse(data: bytes) -> Message | Undecodable:
        try:
            return message_class.FromString(data)
        except DecodeError as exc:
            return Undecodable(message_class.DESCRIPTOR.full_name, str(exc))

    return parse


def status_code(error: JobqError) -> Code:
    """The gRPC status code for a jobq error."""
    for cls, code in BY_CLASS:
        if isinstance(error, cls):
            return code
    return BY_HTTP_STATUS.get(error.status, Code.INTERNAL)


def trailing_metadata(error: JobqError) -> tuple[tuple[str, str], ...]:
    """The error's title and, when it has one, its Retry-After hint in seconds."""
    metadata = [("jobq-error", error.title)]
    if "Retry-After" in error.headers:
        metadata.append(("retry-after", error.headers["Retry-After"]))
    return tuple(metadata)


async def abort(context: grpc.aio.ServicerContext, error: JobqError) -> None:
    """End the RPC with the error's status code, message and metadata (raises)."""
    await context.abort(status_code(error), f"{error.title}: {error.detail}", trailing_metadata(error))


def known_error(exc: Exception) -> JobqError | None:
    """The jobq error an exception stands for (a pydantic error is a 400 or 422), or None."""
    if isinstance(exc, ValidationError):
        return from_validation_error(exc)
    return exc if isinstance(exc, JobqError) else None


async def abort_for(context: grpc.aio.ServicerContext, exc: Exception, rpc: str, request: object = None) -> None:
    """End the RPC for an exception a verb raised: a jobq error as itself, anything else as INTERNAL (logged).

    The log line carries the request's job id, when it names one.
    """
    if isinstance(exc, grpc.aio.AbortError):
        raise exc
    error = known_error(exc)
    if error is None:
        job_id = getattr(request, "id", None)
        log.error("gRPC %s failed", rpc, exc_info=exc, extra={"job_id": job_id} if job_id else None)
        await context.abort(Code.INTERNAL, INTERNAL_MESSAGE)
    else:
        await abort(context, error)


def unary(method: UnaryMethod[Servicer, Request, Response]) -> UnaryMethod[Servicer, Request, Response]:
    """Wrap a unary RPC so every error it raises becomes the right status."""

    @functools.wraps(method)
    async def call(self: Servicer, request: Request, context: grpc.aio.ServicerContext) -> Response:
        try:
            if isinstance(request, Undecodable):
                raise request.error()
            return await method(self, request, context)
        except Exception as exc:
            await abort_for(context, exc, method.__name__, request)
            raise  # not reached: abort_for always raises

    return call


def stream(method: StreamMethod[Servicer, Request, Response]) -> StreamMethod[Servicer, Request, Response]:
    """Wrap a server-streaming RPC so every error it raises becomes the right status."""

    @functools.wraps(method)
    async def call(self: Servicer, request: Request, context: grpc.aio.ServicerContext) -> AsyncIterator[Response]:
        try:
            if isinstance(request, Undecodable):
                raise request.error()
            async for response in method(self, request, context):
                yield response
        except Exception as exc:
            await abort_for(context, exc, method.__name__, request)

    return call
