"""Between jobq's plain data and the jobq.v1 messages: jobs, workflows, queues, JSON values, times and enums.

Requests become the same dicts the HTTP API hands its pydantic models, holding
only the fields the client set, so absent fields take the HTTP defaults and
validation explains problems in the HTTP API's words.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import Message
from google.protobuf.struct_pb2 import NULL_VALUE, Value
from google.protobuf.timestamp_pb2 import Timestamp

from jobq.errors import ValidationFailed
from jobq.job import Attempt, Job, JobStatus, parse_rfc3339
from jobq.models import NAME_PATTERN
from jobq.rpc.gen import jobq_pb2 as pb
from jobq.schedules import Schedule
from jobq.workflow import progress

log = logging.getLogger("jobq.rpc")

MAX_EXACT_INTEGER = 2**53  # the largest whole number a double holds exactly
# Objects and arrays a payload or result may nest: the deepest every jobq.v1 message can carry,
# as protobuf decodes at most 100 message levels and each JSON object level takes three.
MAX_NESTING = 32

STATUS_TO_PB: Mapping[JobStatus, pb.JobStatus] = {
    status: pb.JobStatus.Value(f"JOB_STATUS_{status.name}") for status in JobStatus
}
STATUS_FROM_PB: Mapping[int, JobStatus] = {number: status for status, number in STATUS_TO_PB.items()}


OUTCOME_FROM_PB: Mapping[int, str] = {
    pb.FAIL_OUTCOME_UNSPECIFIED: "failed",
    pb.FAIL_OUTCOME_FAILED: "failed",
    pb.FAIL_OUTCOME_TIMEOUT: "timeout",
    pb.FAIL_OUTCOME_RETRY: "retry",
}


def invalid(field: str, message: str) -> ValidationFailed:
    """The 422-style error for one bad field, worded like the HTTP API's."""
    return ValidationFailed(f"the job is invalid: {field}: {message}", errors=[{"field": field, "message": message}])


# -- JSON values -----------------------------------------------------------
def from_value(value: Value, field: str, depth: int = 0) -> Any:
    """The JSON value a ``google.protobuf.Value`` holds; whole numbers up to 2^53 become ints."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return _number(value.number_value, field)
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind in ("struct_value", "list_value") and depth >= MAX_NESTING:
        raise invalid(field, f"objects and arrays nest at most {MAX_NESTING} levels deep over gRPC")
    if kind == "struct_value":
        fields = value.struct_value.fields
        return {key: from_value(item, f"{field}.{key}", depth + 1) for key, item in fields.items()}
    if kind == "list_value":
        items = value.list_value.values
        return [from_value(item, f"{field}.{index}", depth + 1) for index, item in enumerate(items)]
    return None  # null_value, or a Value with nothing set


def _number(number: float, field: str) -> int | float:
    if not math.isfinite(number):
        raise invalid(field, "numbers must be finite (JSON has no NaN or Infinity)")
    if number.is_integer() and abs(number) <= MAX_EXACT_INTEGER:
        return int(number)
    return number


class TooDeep(Exception):
    """A JSON value nests deeper than MAX_NESTING."""


def to_value(data: Any) -> Value:
    """A ``google.protobuf.Value`` holding a JSON value (as stored for a payload or result).

    A value nested deeper than a message can carry (only the HTTP API accepts one) is sent as
    a string holding its JSON text, so the job can still be read and leased over gRPC.
    """
    value = Value()
    try:
        _fill(value, data, 0)
    except TooDeep:
        log.warning("a value nests more than %d levels deep; gRPC sends it as JSON text", MAX_NESTING)
        return Value(string_value=json.dumps(data, separators=(",", ":")))
    return value


def _fill(value: Value, data: Any, depth: int) -> None:
    if isinstance(data, Mapping | list | tuple) and depth >= MAX_NESTING:
        raise TooDeep
    if data is None:
        value.null_value = NULL_VALUE
    elif isinstance(data, bool):
        value.bool_value = data
    elif isinstance(data, int | float):
        try:
            value.number_value = float(data)
        except OverflowError:  # an integer past a double's range: keep every digit, as text
            value.string_value = str(data)
    elif isinstance(data, str):
        value.string_value = data
    elif isinstance(data, Mapping):
        value.struct_value.SetInParent()  # an empty object is still an object
        for key, item in data.items():
            _fill(value.struct_value.fields[str(key)], item, depth + 1)
    elif isinstance(data, list | tuple):
        value.list_value.SetInParent()
        for item in data:
            _fill(value.list_value.values.add(), item, depth + 1)
    else:
        raise TypeError(f"{type(data).__name__} is not a JSON value")


# -- times -------------------------------------------------------------------
def to_timestamp(timestamp: float | None) -> Timestamp | None:
    """A Unix time as a Timestamp, at the HTTP record's precision: milliseconds, cut as ``rfc3339`` cuts them."""
    if timestamp is None:
        return None
    fraction, whole = math.modf(timestamp)
    micros = round(fraction * 1_000_000)  # datetime.fromtimestamp rounds to the microsecond like this
    return Timestamp(seconds=int(whole) + micros // 1_000_000, nanos=micros % 1_000_000 // 1000 * 1_000_000)


def to_datetime(timestamp: Timestamp) -> datetime:
    """A Timestamp as an aware UTC datetime."""
    return timestamp.ToDatetime(tzinfo=UTC)


# -- jobs --------------------------------------------------------------------
def job_message(job: Job, held: dict[str, Any] | None = None, children: Iterable[str] = ()) -> pb.Job:
    """The jobq.v1.Job for a job: the HTTP job record, field for field (``held``, ``children``: GET /status's)."""
    workflow = job.workflow_view()
    return pb.Job(
        id=job.id,
        type=job.type,
        queue=job.queue,
        priority=job.priority,
        status=STATUS_TO_PB[job.status],
        payload=to_value(job.payload),
        result=to_value(job.result),
        error=job.error,
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        timeout=job.timeout,
        progress=job.progress,
        progress_note=job.progress_note,
        created_at=to_timestamp(job.created_at),
        run_at=to_timestamp(job.run_at),
        next_run_at=to_timestamp(job.next_run_at),
        started_at=to_timestamp(job.started_at),
        finished_at=to_timestamp(job.finished_at),
        lease_expires_at=to_timestamp(job.lease_expires_at),
        history=[attempt_message(attempt) for attempt in job.history],
        owner=job.owner,
        unique=None
        if job.unique_key is None
        else pb.UniqueTerms(key=job.unique_key, scope=job.unique_scope, until=to_timestamp(job.unique_until)),
        concurrency=None
        if job.concurrency_key is None
        else pb.ConcurrencyTerms(key=job.concurrency_key, limit=job.concurrency_limit),
        held=None if held is None else held_message(held),
        workflow=None if workflow is None else pb.WorkflowTerms(**workflow),
        children=children,
    )


def held_message(held: dict[str, Any]) -> pb.Held:
    """Which limit holds a ready job back (``jobq.flow.FlowState.held``'s answer)."""
    next_start = held.get("next_start")
    return pb.Held(
        limit=held["limit"],
        key=held.get("key"),
        running=held.get("running"),
        max=held.get("max"),
        next_start=None if next_start is None else to_timestamp(parse_rfc3339(next_start)),
    )


def attempt_message(attempt: Attempt) -> pb.Attempt:
    return pb.Attempt(
        number=attempt.number,
        worker=attempt.worker,
        started_at=to_timestamp(attempt.started_at),
        finished_at=to_timestamp(attempt.finished_at),
        outcome=attempt.outcome,
        error=attempt.error,
        traceback=attempt.traceback,
    )


def leased_message(job: Job) -> pb.LeasedJob:
    """A leased job as its worker sees it: the record plus the lease id."""
    return pb.LeasedJob(job=job_message(job), lease_id=job.lease_id or "")


# -- requests: the fields the client set, as the HTTP API would receive them --
def present(message: Message, *names: str) -> dict[str, Any]:
    """The named fields (each with presence: ``optional`` or a message) that the client set."""
    return {name: getattr(message, name) for name in names if message.HasField(name)}


def enqueue_fields(request: pb.EnqueueRequest) -> dict[str, Any]:
    """The body of the equivalent ``POST /enqueue`` (an empty type counts as missing)."""
    fields = present(request, "id", "queue", "priority", "delay", "max_attempts", "timeout")
    fields |= present(request, "unique_key", "unique_scope", "unique_for")
    fields |= present(request, "debounce", "concurrency_key", "concurrency_limit", "on_parent_failure")
    if request.depends_on:
        fields["depends_on"] = list(request.depends_on)
    if request.type:
        fields["type"] = request.type
    if request.HasField("payload"):
        fields["payload"] = from_value(request.payload, "payload")
    if request.HasField("run_at"):
        fields["run_at"] = to_datetime(request.run_at)
    return fields


def list_fields(request: pb.ListJobsRequest) -> dict[str, Any]:
    """The query of the equivalent ``GET /jobs``."""
    fields = present(request, "queue", "type", "limit", "cursor", "workflow", "parent")
    if request.status != pb.JOB_STATUS_UNSPECIFIED:
        if request.status not in STATUS_FROM_PB:
            raise invalid("status", f"unknown status {request.status}")
        fields["status"] = STATUS_FROM_PB[request.status].value
    return fields


def workflow_fields(request: pb.CreateWorkflowRequest) -> dict[str, Any]:
    """The body of the equivalent ``POST /workflows``, its jobs still messages (see ``enqueue_fields``)."""
    return {**present(request, "id"), "jobs": list(request.jobs)}


def workflow_job(job: Job) -> pb.WorkflowJob:
    """One job of a workflow, as the workflow's view shows it: its place, status and edges."""
    return pb.WorkflowJob(
        id=job.id,
        type=job.type,
        queue=job.queue,
        status=STATUS_TO_PB[job.status],
        depends_on=job.depends_on,
        error=job.error,
    )


def workflow_message(workflow_id: str, jobs: Sequence[Job]) -> pb.Workflow:
    """A workflow's progress and graph (``GET /workflows/{id}``, jobq.workflow.progress)."""
    return pb.Workflow(id=workflow_id, **progress(jobs), jobs=[workflow_job(job) for job in jobs])


def parent_message(outcome: Mapping[str, Any]) -> pb.ParentOutcome:
    """How one parent ended (``jobq.workflow.outcome``'s dict) as a message."""
    return pb.ParentOutcome(
        id=outcome["id"],
        type=outcome["type"],
        status=STATUS_TO_PB[JobStatus(outcome["status"])],
        result=to_value(outcome["result"]),
        error=outcome["error"],
    )


def lease_fields(request: pb.LeaseRequest) -> dict[str, Any]:
    """The body of the equivalent ``POST /workers/lease`` (no queues means every queue)."""
    fields = present(request, "max_jobs", "wait", "lease", "worker")
    if request.queues:
        fields["queues"] = list(request.queues)
    if request.types:
        fields["types"] = list(request.types)
    return fields


def complete_fields(request: pb.CompleteRequest) -> dict[str, Any]:
    """The body of the equivalent ``POST /jobs/{id}/complete``."""
    result = from_value(request.result, "result") if request.HasField("result") else None
    return {"lease_id": request.lease_id, "result": result}


def fail_fields(request: pb.FailRequest) -> dict[str, Any]:
    """The body of the equivalent ``POST /jobs/{id}/fail``."""
    if request.outcome not in OUTCOME_FROM_PB:
        raise invalid("outcome", f"unknown outcome {request.outcome}")
    fields = {"lease_id": request.lease_id, "error": request.error, "outcome": OUTCOME_FROM_PB[request.outcome]}
    return fields | present(request, "retry_in", "traceback")


def settlement_fields(settlement: pb.Settlement) -> dict[str, Any]:
    """One item of the equivalent ``POST /workers/settle``."""
    which = settlement.WhichOneof("outcome")
    if which == "complete":
        return {"id": settlement.complete.id, **complete_fields(settlement.complete)}
    if which == "fail":
        return {"id": settlement.fail.id, **fail_fields(settlement.fail)}
    raise invalid("jobs", "each settlement needs complete or fail")


def log_line(line: dict[str, Any]) -> pb.LogLine:
    """A log line as the service renders it (``at`` in RFC 3339) as a message."""
    return pb.LogLine(at=to_timestamp(parse_rfc3339(line["at"])), message=line["message"])


def bulk_fields(request: pb.BulkRequest) -> dict[str, Any]:
    """The body of the equivalent ``POST /jobs/retry`` or ``POST /jobs/delete``."""
    if request.status not in STATUS_FROM_PB:
        raise invalid("status", "give the state of the jobs to act on")
    return {"status": STATUS_FROM_PB[request.status].value, **present(request, "queue", "type", "limit", "q", "cursor")}


def queue_name(request: pb.QueueRequest | pb.SetQueueFlowRequest) -> str:
    """The queue a request names, checked as the HTTP routes check it."""
    if not re.fullmatch(NAME_PATTERN, request.name):
        raise invalid("name", f"{request.name!r} is not a queue name")
    return request.name


def queue_message(queue: dict[str, Any]) -> pb.Queue:
    """One entry of the service's queue listing as a message."""
    return pb.Queue(
        name=queue["name"],
        paused=queue["paused"],
        jobs={status: count for status, count in queue["jobs"].items() if count},
        oldest_wait_seconds=queue["oldest_wait_seconds"],
        flow=None if queue.get("flow") is None else flow_message(queue["name"], queue["flow"]),
    )


# -- flow control ----------------------------------------------------------------
def flow_fields(request: pb.SetQueueFlowRequest) -> dict[str, Any]:
    """The body of the equivalent ``PUT /queues/{name}/flow`` (an absent limit: no limit of that kind)."""
    fields = present(request, "concurrency", "key_concurrency")
    for name in ("rate", "key_rate"):
        if request.HasField(name):
            rate = getattr(request, name)
            fields[name] = {"limit": rate.limit, "period": rate.period}
    return fields


def flow_message(queue: str, view: dict[str, Any]) -> pb.QueueFlow:
    """A queue's flow as the service shows it (``FlowState.view``, or only the limits) as a message."""
    held_by = view.get("held_by") or {}
    return pb.QueueFlow(
        queue=queue,
        concurrency=view["concurrency"],
        key_concurrency=view["key_concurrency"],
        rate=rate_message(view["rate"]),
        key_rate=rate_message(view["key_rate"]),
        running=view.get("running", 0),
        keys_running=view.get("keys_running", {}),
        held_by=pb.HeldBy(
            concurrency=held_by.get("concurrency", False),
            rate_until=to_timestamp(parse_rfc3339(held_by.get("rate_until"))),
            keys_at_limit=held_by.get("keys_at_limit", 0),
            keys_rate_limited=held_by.get("keys_rate_limited", 0),
        ),
    )


def rate_message(rate: dict[str, Any] | None) -> pb.RateLimit | None:
    return None if rate is None else pb.RateLimit(limit=rate["limit"], period=rate["period"])


def template_fields(template: pb.JobTemplate) -> dict[str, Any]:
    """A schedule's job template, as ``POST /schedules`` takes it (an empty type counts as missing)."""
    fields = present(template, "queue", "priority", "max_attempts", "timeout")
    if template.type:
        fields["type"] = template.type
    if template.HasField("payload"):
        fields["payload"] = from_value(template.payload, "job.payload")
    return fields


def schedule_fields(definition: pb.ScheduleDefinition) -> dict[str, Any]:
    """The body of the equivalent ``PUT /schedules/{name}``."""
    fields = present(definition, "cron", "every", "timezone", "missed")
    if definition.paused:
        fields["paused"] = True
    if definition.HasField("job"):
        fields["job"] = template_fields(definition.job)
    return fields


def schedule_message(schedule: Schedule, now: float) -> pb.Schedule:
    d = schedule.definition
    job = d.job
    template = pb.JobTemplate(
        type=job.type,
        payload=to_value(job.payload),
        queue=job.queue,
        priority=job.priority,
        max_attempts=job.max_attempts,
        timeout=job.timeout,
    )
    definition = pb.ScheduleDefinition(
        cron=d.cron, every=d.every, timezone=d.timezone, job=template, missed=d.missed, paused=d.paused
    )
    return pb.Schedule(
        name=schedule.name,
        definition=definition,
        created_at=to_timestamp(schedule.created_at),
        updated_at=to_timestamp(schedule.updated_at),
        last_run_at=to_timestamp(schedule.fired),
        next_run_at=to_timestamp(schedule.next_run(now)),
    )
