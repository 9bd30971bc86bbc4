"""Request bodies and query parameters, validated by pydantic, and the answers routes send.

Their JSON Schema is the OpenAPI document's (jobq/openapi.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from jobq.cron import check_cron, check_timezone
from jobq.errors import ValidationFailed
from jobq.flow import QueueFlow
from jobq.job import SCHEDULED, Job, JobStatus, new_job_id
from jobq.values import MAX_ERROR_CHARS, MAX_LOG_CHARS, MAX_NOTE_CHARS

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
MAX_DELAY_SECONDS = 366 * 24 * 3600.0
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600.0
MAX_SENT_TRACEBACK = 100_000  # the longest traceback a worker may send (jobq keeps its last MAX_TRACEBACK_CHARS)
MAX_WAIT_PARAMETER = 3600.0  # the longest ?wait= a request may ask for (--max-wait caps what it gets)
MAX_PARENTS = 10_000  # the most jobs one job may depend on
MAX_WORKFLOW_JOBS = 100_000  # the most jobs one POST /workflows creates
MAX_CHILDREN_SHOWN = 1000  # the children GET /status names

Name = Annotated[str, Field(pattern=NAME_PATTERN)]
SearchText = Annotated[str, Field(min_length=1, max_length=200)]
"""Text searched for in a job's type, error and payload, in any case (GET /jobs?q=, bulk actions)."""
Cursor = Annotated[str, Field(pattern=r"^\d{1,20}$")]
UniqueKey = Annotated[str, Field(min_length=1, max_length=200)]
"""Where a listing goes on: the seq after which it reads."""


class EnqueueRequest(BaseModel):
    """``POST /enqueue``: a job to run."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={  # what _run_at_in_range checks, for the document: delay or run_at, not both
            "not": {
                "required": ["delay", "run_at"],
                "properties": {"delay": {"type": "number"}, "run_at": {"type": "string"}},
            }
        },
    )

    type: Name = Field(description="job type; a registered handler runs it", examples=["echo"])
    payload: Any = Field(default_factory=dict, description="any JSON value, handed to the handler")
    id: Name | None = Field(default=None, description="client-chosen unique id; re-sending it is idempotent")
    queue: Name = Field(default="default", description="named queue")
    priority: int = Field(default=0, ge=-1000, le=1000, description="higher runs first; FIFO within a priority")
    delay: float | None = Field(default=None, ge=0, le=MAX_DELAY_SECONDS, description="seconds to wait before running")
    run_at: datetime | None = Field(
        default=None, strict=False, description="RFC 3339 time to run at (instead of delay)"
    )
    max_attempts: int = Field(default=1, ge=1, le=100, description="attempts before the job is given up")
    timeout: float | None = Field(default=None, gt=0, le=MAX_TIMEOUT_SECONDS, description="seconds per attempt")
    unique_key: UniqueKey | None = Field(
        default=None,
        description="while a job with this key holds it (see unique_scope, unique_for), another is not added: "
        "the answer is that job (200, with Jobq-Duplicate-Of)",
    )
    unique_scope: Literal["waiting", "active", "any"] | None = Field(
        default=None,
        description="when the job holds its key: waiting (until it starts), active (until it finishes; the "
        "default), any (finished too, until unique_for ends)",
    )
    unique_for: float | None = Field(
        default=None, gt=0, le=MAX_DELAY_SECONDS, description="seconds from its creation it holds its key at most"
    )

    debounce: float | None = Field(
        default=None,
        gt=0,
        le=MAX_DELAY_SECONDS,
        description="with a unique_key: the job waits this many seconds, and a job enqueued meanwhile with the "
        "same key replaces it (the earlier is cancelled) and waits again, so the last of a burst runs",
    )
    concurrency_key: UniqueKey | None = Field(
        default=None,
        description="the key it is counted, limited and takes turns under in its queue (a customer, say): the "
        "queue's per-key limits apply to it, and the queue's keys are served round-robin",
    )
    concurrency_limit: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="jobs of its key running at once (narrows the queue's key_concurrency, never widens it)",
    )

    depends_on: list[Name] | None = Field(
        default=None,
        max_length=MAX_PARENTS,
        description="ids of the jobs it runs after: it waits (status waiting) until each has finished",
    )
    on_parent_failure: Literal["cancel", "run"] | None = Field(
        default=None,
        description="when a parent fails, dies or is cancelled: cancel this job too (cancel, the default; its own "
        "dependants follow) or run it anyway (run)",
    )

    @field_validator("depends_on")
    @classmethod
    def _parents_decide_when(cls, value: Any, info: ValidationInfo) -> Any:
        if value and any(info.data.get(name) is not None for name in ("delay", "run_at", "debounce")):
            raise ValueError("a job with depends_on runs when its parents finish: give no delay, run_at or debounce")
        return value

    @field_validator("on_parent_failure")
    @classmethod
    def _policy_needs_parents(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and not info.data.get("depends_on"):
            raise ValueError("on_parent_failure goes with depends_on")
        return value

    @field_validator("debounce")
    @classmethod
    def _debounce_needs_a_key(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None:
            if info.data.get("unique_key") is None:
                raise ValueError("debounce goes with a unique_key")
            if info.data.get("unique_scope") is not None or info.data.get("delay") is not None:
                raise ValueError("debounce sets the delay and the unique_scope (waiting): give neither")
            if info.data.get("run_at") is not None:
                raise ValueError("debounce sets the delay: give no run_at")
        return value

    @field_validator("concurrency_limit")
    @classmethod
    def _limit_needs_a_key(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and info.data.get("concurrency_key") is None:
            raise ValueError("concurrency_limit goes with a concurrency_key")
        return value

    @field_validator("unique_scope", "unique_for")
    @classmethod
    def _unique_terms_need_a_key(cls, value: Any, info: ValidationInfo) -> Any:
        # A field validator runs only for a field given: an enqueue without unique terms pays nothing.
        if value is not None and info.data.get("unique_key") is None:
            raise ValueError("unique_scope and unique_for go with a unique_key")
        return value

    @field_validator("run_at", mode="before")
    @classmethod
    def _run_at_is_text(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str | datetime):
            raise ValueError("run_at must be an RFC 3339 string, e.g. 2026-01-01T12:00:00Z")
        return value

    @field_validator("run_at")
    @classmethod
    def _run_at_in_range(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        if value is None:
            return None
        if info.data.get("delay") is not None:
            raise ValueError("give delay or run_at, not both")
        if value.tzinfo is None:
            raise ValueError("run_at needs a time zone offset, e.g. 2026-01-01T12:00:00Z")
        if value.timestamp() > time.time() + MAX_DELAY_SECONDS:
            raise ValueError(f"run_at may be at most {MAX_DELAY_SECONDS / 86400:.0f} days ahead")
        return value

    def to_job(self, now: float | None = None) -> Job:
        """A new job for this request (scheduled when it is due later).

        A copy of ``NEW_JOB`` with this request's fields set: every other field as ``Job`` starts
        it, copied by its own field table (``Job.snapshot``), for about half what ``Job(...)`` with
        these keywords costs (this is every ``POST /enqueue``'s).
        """
        now = time.time() if now is None else now
        job = NEW_JOB.snapshot()
        job.id = self.id or new_job_id()
        job.type = self.type
        job.payload = self.payload
        job.queue = self.queue
        job.priority = self.priority
        job.max_attempts = self.max_attempts
        job.timeout = self.timeout
        job.created_at = job.ready_at = now
        if self.run_at is not None or self.delay:
            due = self.run_at.timestamp() if self.run_at is not None else now + (self.delay or 0.0)
            if due > now:
                job.status = SCHEDULED
                job.run_at = job.ready_at = due
        if self.unique_key is not None:
            job.unique_key = self.unique_key
            job.unique_scope = self.unique_scope or "active"
            job.unique_until = None if self.unique_for is None else now + self.unique_for
        if self.debounce is not None:  # waits, holding its key until it starts (see _debounce_needs_a_key)
            job.status = SCHEDULED
            job.run_at = job.ready_at = now + self.debounce
            job.unique_scope = "waiting"
        if self.concurrency_key is not None:
            job.concurrency_key = self.concurrency_key
            job.concurrency_limit = self.concurrency_limit
        if self.depends_on:  # the store makes it wait (jobq.workflow)
            job.depends_on = tuple(dict.fromkeys(self.depends_on))
            job.on_parent_failure = self.on_parent_failure or "cancel"
        return job


NEW_JOB = Job(id="", type="", payload=None)
"""What a new job is before a request fills it in: ``Job``'s defaults (pending, no attempts, no history)."""


class BatchRequest(BaseModel):
    """``POST /enqueue/batch``: many jobs in one request, each validated on its own."""

    model_config = ConfigDict(extra="forbid", strict=True)

    jobs: list[Any] = Field(min_length=1, description="job objects, as for POST /enqueue; each is checked on its own")


class WorkflowRequest(BaseModel):
    """``POST /workflows``: jobs that depend on one another, created together: all of them, or none."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: Name | None = Field(
        default=None, description="client-chosen workflow id (a new one by default); each of its jobs carries it"
    )
    jobs: list[Any] = Field(
        min_length=1,
        max_length=MAX_WORKFLOW_JOBS,
        description="job objects, as for POST /enqueue; depends_on names jobs of this workflow (by id) or jobs "
        "stored before; re-sending the same workflow (same ids and bodies) is idempotent",
    )


def workflow_requests(items: Sequence[Any], parse: Callable[[Any], EnqueueRequest]) -> list[EnqueueRequest]:
    """Each job of a workflow as an enqueue request (``parse`` reads one); ValidationFailed naming every bad
    field of every job (``jobs.3.type``), so nothing of a workflow with one bad job is stored."""
    parsed: list[EnqueueRequest] = []
    errors: list[dict[str, str]] = []
    for index, item in enumerate(items):
        try:
            parsed.append(parse(item))
        except ValidationFailed as exc:  # found before pydantic: a value JSON cannot carry (a gRPC message's)
            errors += [{"field": f"jobs.{index}.{e['field']}", "message": e["message"]} for e in exc.errors or ()]
        except ValidationError as exc:
            for detail in exc.errors(include_url=False, include_input=False, include_context=False):
                where = ".".join(str(part) for part in ("jobs", index, *detail["loc"]))
                errors.append({"field": where, "message": detail["msg"]})
    if errors:
        summary = "; ".join(f"{error['field']}: {error['message']}" for error in errors[:10])
        raise ValidationFailed(f"the workflow is invalid: {summary}", errors=errors)
    return parsed


class ListQuery(BaseModel):
    """``GET /jobs`` query parameters."""

    model_config = ConfigDict(extra="forbid")

    status: JobStatus | None = None
    queue: Name | None = None
    type: Name | None = None
    workflow: Name | None = Field(default=None, description="only the jobs of this workflow")
    parent: Name | None = Field(default=None, description="only the jobs that depend on this one (its children)")
    q: SearchText | None = Field(
        default=None,
        description="only jobs whose type, error or payload holds this text (any case); a call reads at most "
        "10,000 jobs, so a page may hold fewer (even none) and still have a next one",
    )
    limit: int = Field(default=50, ge=1, le=500)
    cursor: Cursor | None = None


SCHEDULE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"  # no ':': it ends the name in a tick's job id


class JobTemplate(BaseModel):
    """The job a schedule enqueues at each tick (its id is the schedule's name and the tick)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Name = Field(description="job type; a registered handler runs it", examples=["report"])
    payload: Any = Field(default_factory=dict, description="any JSON value, handed to the handler")
    queue: Name = "default"
    priority: int = Field(default=0, ge=-1000, le=1000)
    max_attempts: int = Field(default=1, ge=1, le=100)
    timeout: float | None = Field(default=None, gt=0, le=MAX_TIMEOUT_SECONDS)

    def request(self, job_id: str) -> EnqueueRequest:
        """The enqueue request of this template, under ``job_id``."""
        return EnqueueRequest.model_construct(
            type=self.type,
            payload=self.payload,
            id=job_id,
            queue=self.queue,
            priority=self.priority,
            delay=None,
            run_at=None,
            max_attempts=self.max_attempts,
            timeout=self.timeout,
            unique_key=None,
            unique_scope=None,
            unique_for=None,
            debounce=None,
            concurrency_key=None,
            concurrency_limit=None,
            depends_on=None,
            on_parent_failure=None,
        )


class ScheduleDefinition(BaseModel):
    """``PUT /schedules/{name}``: when a schedule ticks, and the job it enqueues at each tick."""

    model_config = ConfigDict(extra="forbid", strict=True)

    cron: str | None = Field(
        default=None,
        description="5 fields (minute hour day month weekday), or 6 with seconds first; give cron or every",
        examples=["0 3 * * *"],
    )
    every: float | None = Field(default=None, ge=1, le=MAX_DELAY_SECONDS, description="seconds between ticks")
    timezone: str = Field(default="UTC", description="the IANA time zone the cron expression reads in")
    job: JobTemplate
    missed: Literal["skip", "once"] = Field(
        default="skip",
        description="a tick missed by more than a minute (jobq was down): skip it, or run once for all missed",
    )
    paused: bool = Field(default=False, description="a paused schedule fires nothing until resumed")

    @field_validator("cron")
    @classmethod
    def _cron_reads(cls, value: str | None) -> str | None:
        return None if value is None else check_cron(value)

    @field_validator("timezone")
    @classmethod
    def _timezone_exists(cls, value: str) -> str:
        return check_timezone(value)

    @model_validator(mode="after")
    def _cron_or_every(self) -> ScheduleDefinition:
        if (self.cron is None) == (self.every is None):
            raise ValueError("give cron or every (seconds), not both and not neither")
        return self


class NewSchedule(ScheduleDefinition):
    """``POST /schedules``: a schedule, by name."""

    name: str = Field(pattern=SCHEDULE_NAME_PATTERN, examples=["nightly-report"])


MAX_BULK = 10_000  # jobs one bulk retry or delete acts on at most


class BulkRequest(BaseModel):
    """``POST /jobs/retry`` and ``POST /jobs/delete``: act on every job matching a filter, up to ``limit``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    status: JobStatus = Field(strict=False, description="only jobs in this state (retry: failed or dead)")
    queue: Name | None = None
    type: Name | None = None
    q: SearchText | None = Field(
        default=None,
        description="as GET /jobs?q=: a call then reads at most 10,000 jobs; its cursor says where the next goes on",
    )
    limit: int = Field(default=1000, ge=1, le=MAX_BULK, description="act on at most this many; more says if any remain")
    cursor: Cursor | None = Field(default=None, description="go on from the last call's cursor")


class LeaseRequest(BaseModel):
    """``POST /workers/lease``: claim up to ``max_jobs`` jobs, long-polling up to ``wait`` seconds."""

    model_config = ConfigDict(extra="forbid", strict=True)

    queues: list[Name] | None = Field(default=None, description="queues to take from; all when omitted")
    max_jobs: int = Field(default=1, ge=1, le=1000)
    wait: float = Field(default=0.0, ge=0, description="seconds to wait for work (capped by the server)")
    lease: float = Field(default=60.0, gt=0, le=24 * 3600.0, description="seconds before an unfinished job is retried")
    worker: str | None = Field(default=None, max_length=200, description="worker name, shown in job history")
    types: list[Name] | None = Field(
        default=None, description="job types to take (those the worker has handlers for); all when omitted"
    )


class HeartbeatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    lease_id: str
    lease: float = Field(default=60.0, gt=0, le=24 * 3600.0)


class LeaseRef(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: str
    lease_id: str


class HeartbeatsRequest(BaseModel):
    """``POST /workers/heartbeat``: extend many leases in one request."""

    model_config = ConfigDict(extra="forbid", strict=True)

    leases: list[LeaseRef] = Field(max_length=10_000)
    lease: float = Field(default=60.0, gt=0, le=24 * 3600.0)


class CompleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    lease_id: str
    result: Any = None


class FailRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    lease_id: str
    error: str = Field(max_length=MAX_ERROR_CHARS)
    retry_in: float | None = Field(default=None, ge=0, le=MAX_DELAY_SECONDS)
    outcome: Literal["failed", "timeout", "retry"] = "failed"
    traceback: str | None = Field(default=None, max_length=MAX_SENT_TRACEBACK, description="kept: its last lines")


class Settlement(BaseModel):
    """One item of ``POST /workers/settle``: complete the job with ``result``, or, given ``error``, fail it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: str
    lease_id: str
    result: Any = None
    error: str | None = Field(default=None, max_length=MAX_ERROR_CHARS, description="present: the attempt failed")
    retry_in: float | None = Field(default=None, ge=0, le=MAX_DELAY_SECONDS)
    outcome: Literal["failed", "timeout", "retry"] = "failed"
    traceback: str | None = Field(default=None, max_length=MAX_SENT_TRACEBACK, description="kept: its last lines")

    @model_validator(mode="after")
    def _complete_or_fail(self) -> Settlement:
        if self.error is None:
            if self.retry_in is not None or self.traceback is not None or "outcome" in self.model_fields_set:
                raise ValueError("retry_in, outcome and traceback go with error (a failed attempt)")
        elif self.result is not None:
            raise ValueError("give result (completed) or error (failed), not both")
        return self


class SettleRequest(BaseModel):
    """``POST /workers/settle``: the outcomes of many leased jobs in one request."""

    model_config = ConfigDict(extra="forbid", strict=True)

    jobs: list[Settlement] = Field(min_length=1, description="one settlement per finished job")


class ReleaseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    lease_id: str


class LogRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    lease_id: str
    message: str = Field(max_length=MAX_LOG_CHARS)


class ProgressRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    lease_id: str
    fraction: float = Field(ge=0, le=1)
    note: str | None = Field(default=None, max_length=MAX_NOTE_CHARS)


class WaitQuery(BaseModel):
    """The ``?wait=SECONDS`` query parameter of ``POST /enqueue`` and ``GET /status/{id}`` (the server caps it)."""

    wait: float = Field(
        default=0.0, ge=0, le=MAX_WAIT_PARAMETER, description="seconds to hold the request for an answer (0: none)"
    )


# -- answers: the bodies routes send back. /openapi.json documents each route with these models;
# -- hot routes build plain dicts of the same shape (tests check the two agree), colder ones the models.
class Answer(BaseModel):
    """Base of the answer models: every key they send is declared (additionalProperties: false)."""

    model_config = ConfigDict(extra="forbid")


class FieldError(Answer):
    """One invalid field of a request."""

    field: str = Field(description="dotted path of the field (``jobs.0.type``), or ``(body)``")
    message: str


class Problem(Answer):
    """An RFC 9457 problem document: every error answer (``application/problem+json``)."""

    type: str = Field(description="a URI naming the kind of problem", json_schema_extra={"format": "uri"})
    title: str = Field(description="short, the same for every problem of this type")
    status: int = Field(ge=400, le=599, description="the HTTP status code")
    detail: str = Field(description="what went wrong with this request")
    errors: list[FieldError] = Field(default_factory=list, description="present for invalid fields: each named")


class AttemptRecord(Answer):
    """One run of a job, in its ``history``."""

    number: int = Field(ge=1, description="counted across re-runs by hand")
    worker: str | None = Field(description="who ran it")
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None = Field(
        description="completed, failed, timeout, retry, cancelled, released, or a lost run: lease-expired, "
        "recovered, undelivered, disconnected (a Faktory worker's connection closed); null while it runs"
    )
    error: str | None
    traceback: str | None = Field(description="a failed attempt's traceback: its last lines")


class UniqueTerms(Answer):
    key: str
    scope: Literal["waiting", "active", "any"]
    until: datetime | None = Field(description="when it stops holding the key at the latest (null: no end)")


class ConcurrencyTerms(Answer):
    key: str
    limit: int | None = Field(description="its own limit of jobs of its key running at once (null: the queue's)")


class WorkflowTerms(Answer):
    id: str | None = Field(description="the workflow it was created in (null: enqueued on its own)")
    depends_on: list[str] = Field(description="its parents: the jobs it runs after")
    on_parent_failure: Literal["cancel", "run"]
    parents_left: int = Field(ge=0, description="parents not finished yet (while waiting)")


class JobRecord(Answer):
    """A job as the API answers it (``jobq.job.Job.to_dict()``); times are RFC 3339 UTC."""

    id: str
    type: str
    queue: str
    priority: int
    status: JobStatus
    payload: Any = Field(description="any JSON value")
    result: Any = Field(description="the handler's result (any JSON value); null until completed")
    error: str | None = Field(description="the last failure")
    attempts: int = Field(ge=0)
    max_attempts: int = Field(ge=1)
    timeout: float | None = Field(description="seconds per attempt")
    progress: float | None = Field(description="0.0 to 1.0, as the handler last reported it")
    progress_note: str | None
    created_at: datetime
    run_at: datetime | None = Field(description="when a scheduled or retrying job becomes due")
    next_run_at: datetime | None = Field(description="run_at while scheduled or retrying, else null")
    started_at: datetime | None
    finished_at: datetime | None
    lease_expires_at: datetime | None = Field(description="while processing: when its lease lapses")
    history: list[AttemptRecord] = Field(description="every attempt, oldest first")
    owner: str | None = Field(description="the name of the token that enqueued it; null without tokens")
    unique: UniqueTerms | None = Field(description="the unique key it was enqueued with, and its terms; else null")
    concurrency: ConcurrencyTerms | None = Field(description="its concurrency_key and own limit; else null")
    workflow: WorkflowTerms | None = Field(description="its workflow and parents; null for a job of neither")


class JobStatusRecord(JobRecord):
    """``GET /status/{id}``: the record, and for a ready job a limit of its queue holds back, which one."""

    held: Held | None = Field(default=None, description="present on a ready job a limit holds back")
    children: list[str] | None = Field(
        default=None,
        description=f"present when jobs depend on it: their ids, the first {MAX_CHILDREN_SHOWN} (GET /jobs?parent= "
        "lists them all)",
    )


class JobReceipt(Answer):
    """``POST /enqueue`` without ``?wait=``: what jobq decided for the job, to follow it by; ``GET /status/{id}`` has
    the whole record. Each key means what it means in the record (``JobRecord``)."""

    id: str
    status: JobStatus = Field(description="pending or scheduled for a new job; a job sent before: as it is now")
    queue: str
    created_at: datetime
    next_run_at: datetime | None = Field(description="when it becomes due while scheduled or retrying, else null")
    owner: str | None = Field(description="the name of the token that enqueued it; null without tokens")


class EnqueueAnswer(RootModel[JobReceipt | JobRecord]):
    """``POST /enqueue``: the receipt; with ``?wait=``, the whole record."""


class LeasedJob(Answer):
    """A job as its worker leased it: what its handler runs with, and the lease every later call presents.

    Only what a worker reads: the whole record (history, times, owner) is ``GET /status/{id}``.
    """

    id: str
    type: str
    queue: str
    priority: int
    payload: Any = Field(description="any JSON value")
    attempts: int = Field(ge=1, description="this run's attempt number (a lost run does not use one)")
    max_attempts: int = Field(ge=1)
    timeout: float | None = Field(description="seconds per attempt")
    lease_id: str = Field(description="presented by every later call about this run")
    lease_expires_at: datetime = Field(description="when the lease lapses unless extended")
    depends_on: list[str] = Field(description="the jobs it runs after (GET /jobs/{id}/parents: how they ended)")


class JobList(Answer):
    """``GET /jobs``: one page, newest first."""

    jobs: list[JobRecord]
    next_cursor: str | None = Field(description="the cursor of the next page (also in the Link header); null: done")


class BatchItemAccepted(Answer):
    code: Literal[200, 202] = Field(
        description="202 new, 200 the same id and body were sent before, or another job holds its unique key"
    )
    id: str
    status: JobStatus
    duplicate: Literal[True] | None = Field(
        default=None, description="present (true) when the job is the one that holds the unique key asked for"
    )


class BatchItemRefused(Answer):
    code: int = Field(ge=400, le=599)
    problem: Problem


class BatchAnswer(Answer):
    """``POST /enqueue/batch``: one answer per job, in order."""

    accepted: int = Field(ge=0)
    rejected: int = Field(ge=0)
    results: list[BatchItemAccepted | BatchItemRefused]


class LogLine(Answer):
    at: datetime
    message: str


class JobLogs(Answer):
    """``GET /jobs/{id}/logs``: the lines a job's handler logged, oldest first."""

    id: str
    logs: list[LogLine]


class BulkRetried(Answer):
    """``POST /jobs/retry``: what a bulk retry did."""

    retried: int = Field(ge=0)
    skipped: int = Field(ge=0, description="matched, but changed meanwhile")
    more: bool = Field(description="the call stopped with jobs left to read: matching ones may remain (call again)")
    cursor: str | None = Field(description="where the next call goes on (give it as cursor), when more")


class BulkDeleted(Answer):
    """``POST /jobs/delete``: what a bulk delete did."""

    deleted: int = Field(ge=0)
    skipped: int = Field(ge=0, description="matched, but changed meanwhile")
    more: bool = Field(description="the call stopped with jobs left to read: matching ones may remain (call again)")
    cursor: str | None = Field(description="where the next call goes on (give it as cursor), when more")


Counts = dict[JobStatus, Annotated[int, Field(ge=0)]]


class QueueSummary(Answer):
    name: str
    paused: bool
    jobs: Counts = Field(description="jobs by status (every status)")
    oldest_wait_seconds: float = Field(ge=0, description="how long its next ready job has waited (0: none)")
    flow: FlowView | None = Field(description="its limits and what they hold back; null: none set")


class RateLimit(BaseModel):
    """At most ``limit`` starts per ``period`` seconds: a burst of ``limit``, then one per ``period / limit``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    limit: int = Field(ge=1, le=1_000_000)
    period: float = Field(gt=0, le=MAX_DELAY_SECONDS, description="seconds")


class QueueFlowBody(BaseModel):
    """``PUT /queues/{name}/flow``: a queue's limits (each optional; an absent one: no limit of that kind)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    concurrency: int | None = Field(default=None, ge=1, le=1_000_000, description="jobs of the queue running at once")
    key_concurrency: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="jobs of one concurrency_key running at once (a job's own concurrency_limit overrides it)",
    )
    rate: RateLimit | None = Field(default=None, description="starts of the queue's jobs")
    key_rate: RateLimit | None = Field(default=None, description="starts of one concurrency_key's jobs")

    def to_flow(self) -> QueueFlow:
        return QueueFlow.from_dict(self.model_dump())


class HeldBy(Answer):
    concurrency: bool = Field(description="the queue runs as many jobs as it may")
    rate_until: datetime | None = Field(description="the queue's rate allows no start before then")
    keys_at_limit: int = Field(ge=0, description="keys running as many jobs as the per-key limit allows")
    keys_rate_limited: int = Field(ge=0, description="keys whose rate allows no start now")


class FlowView(Answer):
    """A queue's limits, what runs, and what holds its ready jobs back now."""

    concurrency: int | None
    key_concurrency: int | None
    rate: RateLimit | None
    key_rate: RateLimit | None
    running: int = Field(ge=0)
    keys_running: dict[str, int] = Field(description="the keys running most jobs (20 at most), with how many")
    held_by: HeldBy


class Held(Answer):
    """Why a ready job waits: the limit that holds it back now."""

    limit: Literal["concurrency", "rate", "key_concurrency", "key_rate"]
    key: str | None = None
    running: int | None = None
    max: int | None = None
    next_start: datetime | None = Field(default=None, description="when the rate allows its next start")


class QueueFlowSet(Answer):
    queue: str
    flow: FlowView | None = Field(description="null: the queue has no limits now")


class QueueList(Answer):
    """``GET /queues``: every queue that holds jobs or is paused."""

    queues: list[QueueSummary]


class QueuePaused(Answer):
    queue: str
    paused: bool


class QueueCleared(Answer):
    queue: str
    cleared: int = Field(ge=0, description="waiting jobs deleted")


class WorkerCounts(Answer):
    total: int = Field(ge=0)
    busy: int = Field(ge=0)


class Stats(Answer):
    """``GET /stats``."""

    jobs: Counts = Field(description="jobs by status (every status)")
    queues: dict[str, Counts] = Field(description="jobs by queue, then status (statuses with none may be absent)")
    paused_queues: list[str]
    flows: dict[str, FlowView] = Field(description="the queues with limits: what runs and what is held back")
    queue_depth: int = Field(ge=0, description="waiting jobs")
    workers: WorkerCounts = Field(description="the in-process workers")
    waiting_requests: int = Field(ge=0, description="requests held by ?wait= (and gRPC watches)")
    waiting_leases: int = Field(ge=0, description="workers' lease long-polls parked")
    jobs_per_second: float = Field(ge=0, description="jobs finished per second over the last minute")
    uptime_seconds: float = Field(ge=0)
    draining: bool


class ScheduleView(Answer):
    """A schedule as ``GET /schedules`` shows it: its definition, and its last and next run."""

    name: str
    cron: str | None
    every: float | None
    timezone: str
    job: dict[str, Any] = Field(description="the job template")
    missed: Literal["skip", "once"]
    paused: bool
    created_at: datetime
    updated_at: datetime
    last_run_at: datetime | None = Field(description="the latest tick it fired (null: none yet)")
    next_run_at: datetime | None = Field(description="its next tick (null while paused)")


class ScheduleList(Answer):
    """``GET /schedules``: every schedule, by name."""

    schedules: list[ScheduleView]


class RemoteWorker(Answer):
    name: str = Field(description="the name the worker leases under (?: unnamed)")
    idle_seconds: float = Field(
        ge=0, description="how long before its node's card was written it last leased or heartbeat"
    )


class NodeCard(Answer):
    """One jobq process using the store, as its card (rewritten every 5 s) describes it."""

    id: str = Field(description="the node's id, new at each start")
    host: str
    pid: int
    version: str
    started_at: datetime
    seen_at: datetime = Field(description="when the card was written, by the store's clock")
    listening: dict[str, str] = Field(description="protocol (http, grpc, faktory) -> where it listens")
    workers: WorkerCounts = Field(description="its in-process workers")
    draining: bool
    remote_workers: list[RemoteWorker] = Field(description="workers that leased or heartbeat through it lately")


class NodeList(Answer):
    """``GET /nodes``: the jobq processes heard from in the last 15 s (only this one, on a store of one process)."""

    nodes: list[NodeCard]


class Health(Answer):
    """``GET /health`` when jobq can serve."""

    status: Literal["ok"]


class Unhealthy(Answer):
    """``GET /health`` while jobq drains (a shutdown), or when the store cannot write."""

    status: Literal["draining", "unavailable"]
    detail: str


class LeaseAnswer(Answer):
    """``POST /workers/lease``: the jobs leased."""

    jobs: list[LeasedJob] = Field(min_length=1)


class HeartbeatItem(Answer):
    id: str
    code: Literal[200]
    lease_expires_at: datetime


class RefusedItem(Answer):
    """One item of a batch the server refused: why, as a problem."""

    id: str
    code: int = Field(ge=400, le=599)
    problem: Problem


class HeartbeatAnswer(Answer):
    """``POST /workers/heartbeat``: one answer per lease, in order."""

    results: list[HeartbeatItem | RefusedItem]


class SettleItem(Answer):
    id: str
    code: Literal[200]
    status: JobStatus = Field(description="the job's status after the settlement")


class SettleAnswer(Answer):
    """``POST /workers/settle``: one answer per settlement, in order."""

    results: list[SettleItem | RefusedItem]


class WorkflowJob(Answer):
    """One job of a workflow, as the workflow's view shows it."""

    id: str
    type: str
    queue: str
    status: JobStatus
    depends_on: list[str]
    error: str | None


class WorkflowAccepted(Answer):
    """``POST /workflows``: the workflow's id, and each job's id and status, in the order sent."""

    id: str
    created: int = Field(ge=0, description="jobs this request created (0: the same workflow was sent before)")
    jobs: list[WorkflowJob]


class WorkflowView(Answer):
    """``GET /workflows/{id}``: how far a workflow (or a group and its callback) is, and its graph."""

    id: str
    total: int = Field(ge=0)
    counts: dict[str, int] = Field(description="its jobs by status")
    done: int = Field(ge=0, description="jobs completed")
    failed: int = Field(ge=0, description="jobs failed, dead or cancelled")
    finished: bool = Field(description="whether every job has finished")
    jobs: list[WorkflowJob] = Field(description="every job, oldest first; depends_on are its edges")


class ParentOutcome(Answer):
    """How one parent of a job ended (or where it is, while it has not)."""

    id: str
    type: str
    status: JobStatus
    result: Any = Field(description="its handler's result (any JSON value); null unless completed")
    error: str | None


class ParentOutcomes(Answer):
    """``GET /jobs/{id}/parents``: the outcomes of a job's parents, in its depends_on order."""

    id: str
    parents: list[ParentOutcome]
