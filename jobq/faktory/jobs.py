"""Faktory work units and jobq jobs: one mapping, both ways.

=============  ==============================================================
Faktory        jobq
=============  ==============================================================
``jid``        ``id`` (8-128 letters, digits or ``_ . : -``)
``jobtype``    ``type``
``args``       ``payload["args"]``: the payload is ``{"args": [...]}``, plus
``custom``     ``payload["custom"]`` when the job has one
``queue``      ``queue``
``priority``   ``priority + 5``: Faktory's default 5 is jobq's default 0 (higher runs first in both)
``at``         ``run_at`` (scheduled when it is in the future)
``retry``      ``max_attempts - 1``: 0 and -1 both mean one attempt; a job out of attempts is kept
               (``failed`` or ``dead``), where Faktory discards it for 0; jobq's backoff applies
``reserve_for`` ``timeout``: a run not settled within it is lost and runs again
``backtrace``  accepted; a fetched job always asks for 50 lines: jobq keeps every failure's traceback
``custom``     also ``concurrency_key`` and ``concurrency_limit`` when it holds them (jobq/flow.py),
               the job's key and own limit, and ``depends_on`` (the ids of the jobs it runs after: jids
               or jobq ids) and ``on_parent_failure`` (jobq/workflow.py), as ``POST /enqueue`` takes them
=============  ==============================================================

A job enqueued over HTTP whose payload is not ``{"args": [...]}`` (with an optional
``custom`` object) reaches a Faktory worker with the payload as its one argument.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from jobq.faktory.protocol import ProtocolError
from jobq.job import Job, rfc3339
from jobq.models import MAX_TIMEOUT_SECONDS, NAME_PATTERN, EnqueueRequest

JID_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{8,128}")  # Faktory asks for 8 or more; Go clients use base64url
DEFAULT_RETRY = 25  # Faktory's default: 26 attempts in all
BACKTRACE_LINES = 50  # what every fetched job asks a failing worker to send (Faktory keeps at most 50)
PRIORITY_OFFSET = 5  # Faktory's default priority: jobq's 0
MAX_ATTEMPTS = 100  # jobq's most (a larger retry count is capped to it)
KNOWN_FIELDS = frozenset(
    {"jid", "jobtype", "args", "queue", "priority", "at", "retry", "reserve_for", "custom", "backtrace", "created_at"}
)
IGNORED_FIELDS = frozenset({"enqueued_at", "failure", "type"})  # read-only or set by the server
FIELD_NAMES = {  # jobq's field names in validation errors, as the client named them
    "type": "jobtype",
    "payload": "args",
    "queue": "queue",
    "priority": "priority (less 5)",
    "run_at": "at",
    "max_attempts": "retry",
    "timeout": "reserve_for",
    **{name: f"custom.{name}" for name in ("concurrency_key", "concurrency_limit", "depends_on", "on_parent_failure")},
}

# What a work unit's custom object may carry for jobq, as POST /enqueue takes it: flow control and parents
CUSTOM_FIELDS = ("concurrency_key", "concurrency_limit", "depends_on", "on_parent_failure")
PARENT_STAND_IN = "parent"  # a valid jobq id: validation checks custom.depends_on's length and rules with these


def enqueue_request(unit: Any) -> EnqueueRequest:
    """The jobq request for a pushed work unit; ProtocolError naming the field when it is not valid."""
    if not isinstance(unit, dict):
        raise ProtocolError(f"a job is a JSON object, not {type(unit).__name__}")
    unknown = set(unit) - KNOWN_FIELDS - IGNORED_FIELDS
    if unknown:
        raise ProtocolError(f"unknown job fields: {', '.join(sorted(unknown))}")
    jid = unit.get("jid")
    if not isinstance(jid, str) or not JID_PATTERN.fullmatch(jid):
        raise ProtocolError("jid must be 8-128 letters, digits or _ . : - (a unique id for the job)")
    args = unit.get("args")
    if not isinstance(args, list):
        raise ProtocolError("args must be a JSON array")
    payload: dict[str, Any] = {"args": args}
    custom = unit.get("custom")
    if custom is not None:
        if not isinstance(custom, dict):
            raise ProtocolError("custom must be a JSON object")
        payload["custom"] = custom
    fields: dict[str, Any] = {"type": unit.get("jobtype"), "payload": payload}
    for name in CUSTOM_FIELDS:  # flow control and parents have no Faktory field: a client sends them in custom
        if custom is not None and name in custom:
            fields[name] = custom[name]
    parents = _parents(fields.get("depends_on"))
    if parents is not None:
        fields["depends_on"] = [PARENT_STAND_IN] * len(parents)
    if unit.get("queue") is not None:
        fields["queue"] = unit["queue"]
    if (priority := unit.get("priority")) is not None:
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise ProtocolError("priority must be a whole number (Faktory's default is 5)")
        fields["priority"] = priority - PRIORITY_OFFSET
    if at := unit.get("at"):
        fields["run_at"] = _time(at)
    fields["max_attempts"] = _attempts(unit.get("retry"))
    if (reserve_for := unit.get("reserve_for")) is not None:
        if not isinstance(reserve_for, int | float) or isinstance(reserve_for, bool) or reserve_for < 0:
            raise ProtocolError("reserve_for must be a number of seconds")
        if reserve_for > 0:
            fields["timeout"] = min(float(reserve_for), MAX_TIMEOUT_SECONDS)
    try:
        request = EnqueueRequest.model_validate(fields)
    except ValidationError as exc:
        raise ProtocolError(_describe(exc)) from None
    request.id = jid  # set after validation: a Faktory jid may start with _ or -, which jobq ids do not
    if parents is not None:
        request.depends_on = parents  # likewise: a parent's jid
    return request


def _parents(depends_on: Any) -> list[str] | None:
    """``custom.depends_on`` as job ids (each a jid or a jobq id), or None when the unit has none."""
    if depends_on is None:
        return None
    if not isinstance(depends_on, list) or not all(
        isinstance(parent, str) and (JID_PATTERN.fullmatch(parent) or re.fullmatch(NAME_PATTERN, parent))
        for parent in depends_on
    ):
        raise ProtocolError("custom.depends_on must be an array of job ids (the jids of the jobs it runs after)")
    return depends_on


def _time(text: Any) -> datetime:
    """``at`` as a time: RFC 3339, any number of fraction digits (Go sends nanoseconds)."""
    if not isinstance(text, str):
        raise ProtocolError("at must be an RFC 3339 time, e.g. 2026-01-01T12:00:00Z")
    trimmed = re.sub(r"(\.\d{6})\d+", r"\1", text.strip()).replace("Z", "+00:00").replace("z", "+00:00")
    try:
        moment = datetime.fromisoformat(trimmed)
    except ValueError:
        raise ProtocolError(f"at must be an RFC 3339 time, e.g. 2026-01-01T12:00:00Z, not {text!r}") from None
    if moment.tzinfo is None:
        raise ProtocolError("at needs a time zone offset, e.g. 2026-01-01T12:00:00Z")
    return moment


def _attempts(retry: Any) -> int:
    """jobq's ``max_attempts`` for Faktory's ``retry`` (retries after the first attempt; -1: none)."""
    if retry is None:
        retry = DEFAULT_RETRY
    if not isinstance(retry, int) or isinstance(retry, bool) or retry < -1:
        raise ProtocolError("retry must be a whole number, -1 or more")
    return min(max(retry, 0) + 1, MAX_ATTEMPTS)


def _describe(exc: ValidationError) -> str:
    parts = []
    for problem in exc.errors():
        field = str(problem["loc"][0]) if problem["loc"] else "job"
        parts.append(f"{FIELD_NAMES.get(field, field)}: {problem['msg']}")
    return "; ".join(parts)


def work_unit(job: Job) -> dict[str, Any]:
    """The Faktory work unit a worker fetches for a job (enqueued over FWP, HTTP or gRPC alike)."""
    args, custom = arguments(job.payload)
    unit: dict[str, Any] = {
        "jid": job.id,
        "jobtype": job.type,
        "args": args,
        "queue": job.queue,
        "priority": job.priority + PRIORITY_OFFSET,
        "retry": job.max_attempts - 1,
        "backtrace": BACKTRACE_LINES,
        "created_at": rfc3339(job.created_at),
        "enqueued_at": rfc3339(job.ready_at or job.created_at),
    }
    if custom is not None:
        unit["custom"] = custom
    if job.timeout is not None:
        unit["reserve_for"] = math.ceil(job.timeout)
    if job.run_at is not None:
        unit["at"] = rfc3339(job.run_at)
    if job.error is not None:
        unit["failure"] = failure(job)
    return unit


def arguments(payload: Any) -> tuple[list[Any], dict[str, Any] | None]:
    """A payload's Faktory ``args`` and ``custom``: its own for ``{"args": [...]}``, else ``[payload]``."""
    if isinstance(payload, Mapping) and isinstance(payload.get("args"), list) and set(payload) <= {"args", "custom"}:
        custom = payload.get("custom")
        if custom is None or isinstance(custom, dict):
            return payload["args"], custom
    return [payload], None


def failure(job: Job) -> dict[str, Any]:
    """Faktory's ``failure`` hash for a job whose last attempt failed."""
    errtype, _, message = (job.error or "").partition(": ")
    if not message:
        errtype, message = "unknown", job.error or ""
    failed = [attempt for attempt in job.history if attempt.error is not None and not attempt.lost]
    last = failed[-1] if failed else None
    details: dict[str, Any] = {
        "retry_count": max(len(failed) - 1, 0),  # as Faktory counts: 0 after the first failure
        "remaining": max(job.max_attempts - len(failed), 0),
        "failed_at": rfc3339(last.finished_at) if last is not None else None,
        "message": message,
        "errtype": errtype,
    }
    if job.next_run_at is not None:
        details["next_at"] = rfc3339(job.next_run_at)
    if last is not None and last.traceback:
        details["backtrace"] = last.traceback.splitlines()
    return details


def failure_text(report: dict[str, Any]) -> tuple[str, str | None]:
    """jobq's error text (``errtype: message``) and traceback for a FAIL's hash."""
    errtype = report.get("errtype")
    message = report.get("message")
    errtype = errtype.strip() if isinstance(errtype, str) and errtype.strip() else "unknown"
    message = message.strip() if isinstance(message, str) and message.strip() else "unknown"
    backtrace = report.get("backtrace")
    if isinstance(backtrace, str):
        backtrace = backtrace.splitlines()
    lines = [str(line) for line in backtrace] if isinstance(backtrace, list) else []
    return f"{errtype}: {message}", "\n".join(lines) or None
