"""RFC 9457 problem documents, and the middleware that turns every error into one."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError
from pydantic_core import to_json

from jobq.errors import BadRequest, JobqError, ValidationFailed

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


def from_validation_error(exc: ValidationError) -> JobqError:
    """Malformed JSON is a 400; well-formed JSON with bad fields is a 422 naming each field."""
    details = exc.errors(include_url=False, include_input=False, include_context=False)
    if any(d["type"] == "json_invalid" for d in details):
        return BadRequest("the body is not valid JSON: " + details[0]["msg"].removeprefix("Invalid JSON: "))
    fields = [{"field": ".".join(str(p) for p in d["loc"]) or "(body)", "message": d["msg"]} for d in details]
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    return ValidationFailed(f"the job is invalid: {summary}", errors=fields)


_HTTP_TITLES = {
    404: "Not found",
    405: "Method not allowed",
    413: "Body too large",
}


@web.middleware
async def problem_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Answer every failure with problem+json; never leak a traceback."""
    try:
        return await handler(request)
    except JobqError as exc:
        return problem_response(exc)
    except ValidationError as exc:
        return problem_response(from_validation_error(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        title = _HTTP_TITLES.get(exc.status, exc.reason)
        detail = _http_detail(exc, request)
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After", "WWW-Authenticate")}
        return web.Response(
            status=exc.status,
            body=to_json(problem_body(exc.status, title, detail)),
            content_type=CONTENT_TYPE,
            headers=headers,
        )
    except Exception:
        job_id = request.match_info.get("id")
        extra = {"job_id": job_id} if job_id is not None else None
        log.exception("unhandled error serving %s %s", request.method, request.path, extra=extra)
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
