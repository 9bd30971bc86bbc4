"""The server's HTTP access log (``--access-log``); the log formats themselves are in jobq.logformat."""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from jobq.auth import PRINCIPAL, route_template

ACCESS_LOGGER = "jobq.access"

# A query parameter whose name holds one of these (any case), or is sig or pass, is logged with its value REDACTED.
SECRET_PARAMETER = re.compile(
    r"token|passw|pwd|secret|key|auth|signature|credential|session|cookie|jwt|^sig$|^pass$", re.IGNORECASE
)
REDACTED = "REDACTED"


class AccessLogger(AbstractAccessLogger):
    """One ``jobq.access`` line per HTTP request (``--access-log``), with structured fields.

    Used as aiohttp's ``access_log_class``; the route is the template (``/jobs/{id}``, or
    ``(unparsed)`` for a request aiohttp could not parse), and the caller is the token's name
    when jobq runs with tokens. Secret-looking query values are logged as REDACTED.
    """

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        principal = request.get(PRINCIPAL)
        path = redact_query(request.path_qs)
        fields = {
            "method": request.method,
            "path": request.path,
            "route": route_template(request),
            "status": response.status,
            "duration_seconds": round(time, 6),
            "remote": request.remote,
            "caller": principal.name if principal is not None else None,
        }
        self.logger.info("%s %s %d %.1fms", request.method, path, response.status, time * 1000, extra=fields)


def redact_query(target: str) -> str:
    """``target`` (a path and query) with the value of each secret-looking parameter replaced by REDACTED.

    ``/jobs?access_token=abc&limit=5`` becomes ``/jobs?access_token=REDACTED&limit=5``: tokens,
    passwords, keys, signatures and the like must not reach a log, whatever a client puts in a URL.
    """
    path, mark, query = target.partition("?")
    if not mark:
        return target
    parts = query.split("&")
    for index, part in enumerate(parts):
        name, equals, value = part.partition("=")
        if equals and value and SECRET_PARAMETER.search(unquote_plus(name)):
            parts[index] = f"{name}={REDACTED}"
    return f"{path}?{'&'.join(parts)}"
