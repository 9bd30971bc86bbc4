"""RFC 9457 problem documents, and what turns every error into one.

``error_response`` answers the errors of routes and of the app's middleware (jobq/app.py, ``gate``);
``refuse_large_body`` refuses a body too large from its ``Content-Length`` alone; ``ProblemRequestHandler``
answers the requests aiohttp cannot parse, which never reach a middleware.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from pydantic import ValidationError
from pydantic_core import to_json

from jobq.errors import BadRequest, InvalidRequest, JobqError, ValidationFailed
from jobq.models import BatchRequest, EnqueueRequest, WorkflowRequest

log = logging.getLogger("jobq.api")

PROBLEM_TYPE = "https://jobq.dev/problems/"
CONTENT_TYPE = "application/problem+json"


def problem_body(status: int, title: str, detail: str, errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The JSON body of a problem: type, title, status, detail and, for validation, errors."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + title.lower().replace(" ", "-"),
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    return body


def error_body(error: JobqError) -> dict[str, Any]:
    """The problem body of a jobq error (also one item's answer inside a batch)."""
    return problem_body(error.status, error.title, error.detail, error.errors)


def problem_response(error: JobqError) -> web.Response:
    """The HTTP response for a jobq error."""
    return web.Response(
        status=error.status,
        body=to_json(error_body(error)),
        content_type=CONTENT_TYPE,
        headers=error.headers,
    )


# A ValidationError is titled by its model: these are jobs ("Invalid job"); any other is a request ("Invalid request").
JOB_MODELS = frozenset(model.__name__ for model in (EnqueueRequest, BatchRequest, WorkflowRequest))


def from_validation_error(exc: ValidationError) -> JobqError:
    """Malformed JSON is a 400; well-formed JSON with bad fields is a 422 naming each field."""
    details = exc.errors(include_url=False, include_input=False, include_context=False)
    if any(d["type"] == "json_invalid" for d in details):
        return BadRequest("the body is not valid JSON: " + details[0]["msg"].removeprefix("Invalid JSON: "))
    fields = [{"field": ".".join(str(p) for p in d["loc"]) or "(body)", "message": message(d["msg"])} for d in details]
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    if exc.title in JOB_MODELS:
        return ValidationFailed(f"the job is invalid: {summary}", errors=fields)
    return InvalidRequest(f"the request is invalid: {summary}", errors=fields)


def message(pydantic_message: str) -> str:
    """A field's message as a client reads it: without pydantic's "Value error, " before a validator's own words."""
    return pydantic_message.removeprefix("Value error, ")


_HTTP_TITLES = {
    404: "Not found",
    405: "Method not allowed",
    413: "Body too large",
}


def error_response(request: web.Request, exc: Exception) -> web.Response:
    """The problem+json answer to an error a route or a middleware raised; never a traceback.

    Re-raises an ``HTTPException`` below 400 (a redirect): that is an answer, not an error.
    """
    if isinstance(exc, JobqError):
        return problem_response(exc)
    if isinstance(exc, ValidationError):
        return problem_response(from_validation_error(exc))
    if isinstance(exc, RequestPayloadError):
        return _unreadable_body(request, exc)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        title = _HTTP_TITLES.get(exc.status, exc.reason)
        detail = _http_detail(exc, request)
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After", "WWW-Authenticate")}
        response = web.Response(
            status=exc.status,
            body=to_json(problem_body(exc.status, title, detail)),
            content_type=CONTENT_TYPE,
            headers=headers,
        )
        if exc.status == 413:
            response.force_close()  # the rest of the body is still coming: the connection cannot carry another request
        return response
    job_id = request.match_info.get("id")
    extra = {"job_id": job_id} if job_id is not None else None
    log.error("unhandled error serving %s %s", request.method, request.path, exc_info=exc, extra=extra)
    return web.Response(
        status=500,
        body=to_json(problem_body(500, "Internal error", "the server failed; the error is in its log")),
        content_type=CONTENT_TYPE,
    )


def _http_detail(exc: web.HTTPException, request: web.Request) -> str:
    if exc.status == 405:
        return f"{request.method} is not allowed on {request.path}; allowed: {exc.headers.get('Allow', '')}"
    if exc.status == 404:
        return f"no route for {request.path}"
    return exc.text or exc.reason


def _unreadable_body(request: web.Request, exc: RequestPayloadError) -> web.Response:
    """400 for a body aiohttp could not decode: bad gzip or deflate data, a broken chunk.

    The connection closes after the answer. Its parser stopped at the bad bytes, and the body's
    stream would only raise again: ending the stream keeps aiohttp from reading on (after any
    answer it reads what is left of a body) and logging that as an unhandled exception.
    """
    cause = exc.__cause__
    encoding = request.headers.get(hdrs.CONTENT_ENCODING)
    if isinstance(cause, ContentEncodingError) and encoding:
        detail = f"the body is not valid {encoding} data (Content-Encoding: {encoding})"
    else:
        detail = f"the body cannot be read: {_first_line(cause if cause is not None else exc)}"
    request.content.feed_eof()
    response = problem_response(BadRequest(detail))
    response.force_close()
    return response


def _first_line(exc: BaseException) -> str:
    """An aiohttp error's message without the request bytes it quotes below it (at most 200 characters)."""
    text = exc.message if isinstance(exc, HttpProcessingError) else str(exc)
    return text.strip().split("\n", 1)[0].rstrip(": ")[:200] or type(exc).__name__


def refuse_large_body(request: web.Request, limit: int) -> None:
    """Refuse a body whose ``Content-Length`` is over ``limit`` bytes at once, with 413, before reading it.

    ``error_response`` makes the 413 a problem and closes the connection after it. A body
    without a length (chunked) is bounded as it is read: ``request.read()`` raises the same
    413 once it passes the app's ``client_max_size``.
    """
    length = request.content_length
    if length is not None and length > limit:
        detail = f"the body is {length} bytes, over the limit of {limit} bytes"
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=length, text=detail)


def expect_handler(limit: int) -> Callable[[web.Request], Awaitable[None]]:
    """A route's answer to ``Expect: 100-continue``: no ``100 Continue`` for a body over ``limit``.

    aiohttp calls it before any middleware; for a body too large it says nothing, so the client
    waits and gets ``refuse_large_body``'s 413 without sending the body. Otherwise it does
    what aiohttp's default does.
    """

    async def continue_unless_too_large(request: web.Request) -> None:
        length = request.content_length
        if length is not None and length > limit:
            return
        if request.version != HttpVersion11:
            return
        expect = request.headers.get(hdrs.EXPECT, "")
        if expect.lower() != "100-continue":
            raise web.HTTPExpectationFailed(text=f"Unknown Expect: {expect}")
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the response proper has not started

    return continue_unless_too_large


class ProblemRequestHandler(RequestHandler):
    """aiohttp's protocol for one connection, answering the errors aiohttp raises itself with problem+json.

    A request aiohttp cannot parse (a bad method, URL character, header or chunk; a request line
    or header too long; too many headers) never reaches a route or a middleware: aiohttp answers
    it here, in ``handle_error``. Its own answer is text, with a traceback logged at ERROR for
    each such request, which a scanner turns into a flood. They are the client's fault: this logs
    them at DEBUG, one line without a traceback, and answers 400 problem+json (415 for a
    Content-Encoding aiohttp cannot decode). A 5xx that reaches here (a bug outside
    ``error_response``'s reach) keeps aiohttp's ERROR log with the traceback. ``jobq.app.Runner``
    serves every connection with it.
    """

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status < 500:
            status, title, detail = _parse_problem(exc, message)
            log.debug("refused an HTTP request from %s: %s", request.remote, detail)
        else:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
            title = "Internal error" if status == 500 else HTTPStatus(status).phrase
            detail = "the server failed; the error is in its log"
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already sent; the error cannot be answered")
        response = web.Response(
            status=status, body=to_json(problem_body(status, title, detail)), content_type=CONTENT_TYPE
        )
        response.force_close()
        return response


def _parse_problem(exc: BaseException | None, message: str | None) -> tuple[int, str, str]:
    """The status, title and detail answering a request aiohttp could not parse."""
    if isinstance(exc, ContentEncodingError):  # at parse time: an encoding aiohttp cannot decode at all (br, zstd)
        detail = "the body's Content-Encoding is not supported: send the body as is, or in gzip or deflate"
        return HTTPStatus.UNSUPPORTED_MEDIA_TYPE.value, "Unsupported Content-Encoding", detail
    if isinstance(exc, LineTooLong):
        reason = f"the request line or a header is longer than {exc.args[1]} bytes"
    elif exc is not None:
        reason = _first_line(exc)
    else:
        reason = (message or "").strip().split("\n", 1)[0][:200] or "it cannot be parsed"
    return BadRequest.status, BadRequest.title, f"the HTTP request is malformed: {reason}"
