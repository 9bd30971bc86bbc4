"""The HTTP routes. Each handler parses, calls one JobService verb, and renders JSON.

Each handler says who may call it: ``@requires(Role.CLIENT)`` and the like, or
``@public`` (see jobq/auth.py). With tokens, a client token sees only the jobs it
enqueued; another client's job answers 404, as an unknown id does.
"""

from __future__ import annotations

import math
import re
from typing import Any, TypeVar

from aiohttp import ClientConnectionResetError, hdrs, web
from pydantic import BaseModel, ValidationError
from pydantic_core import from_json, to_json

from jobq.auth import ANY_ROLE, Role, principal_of, public, requires
from jobq.errors import BadRequest, InvalidRequest, JobqError
from jobq.job import Job, rfc3339
from jobq.metrics import Metrics
from jobq.models import (
    MAX_WAIT_PARAMETER,
    NAME_PATTERN,
    BatchAnswer,
    BatchRequest,
    BulkDeleted,
    BulkRequest,
    BulkRetried,
    CompleteRequest,
    EnqueueAnswer,
    EnqueueRequest,
    FailRequest,
    Health,
    HeartbeatAnswer,
    HeartbeatRequest,
    HeartbeatsRequest,
    JobList,
    JobLogs,
    JobRecord,
    JobStatusRecord,
    LeaseAnswer,
    LeasedJob,
    LeaseRequest,
    ListQuery,
    LogRequest,
    NodeList,
    ProgressRequest,
    QueueCleared,
    QueueList,
    QueuePaused,
    ReleaseRequest,
    SettleAnswer,
    SettleRequest,
    Stats,
    Unhealthy,
    WaitQuery,
)
from jobq.openapi import DOCS_CSP, DOCS_FILES, Reply, document_json, documented, links
from jobq.problems import error_body, from_validation_error
from jobq.service import JobService
from jobq.static_files import file_response, page_response
from jobq.store import Added

SERVICE = web.AppKey("service", JobService)
METRICS = web.AppKey("metrics", Metrics)  # absent when metrics are off

routes = web.RouteTableDef()

# Shared pieces of the routes' @documented declarations (jobq/openapi.py builds /openapi.json from them).
LOCATION = {"Location": "the job's own URL: /status/{id}"}
NO_JOB = "no job with this id (a client token sees only the jobs it enqueued)"
STORE_WRITES = {503: "the store cannot write", 507: ""}
LEASE_CONFLICT = "the lease id is not the job's current lease (stale, or the job moved on)"
DUPLICATE_HEADER = "Jobq-Duplicate-Of"  # on an enqueue answered with the job that holds its unique key


# What a client can do next with a job it was answered (OpenAPI links, by operationId: the handler's name).
JOB_LINKS = links(
    {
        "read": "status",
        "status": "GET /status/{id}",
        "logs": "job_logs",
        "cancel": "cancel",
        "retry": "retry",
        "delete": "delete_job",
    },
    {"id": "$response.body#/id"},
)
# What a worker does next with the first job it leased.
LEASED = {"id": "$response.body#/jobs/0/id", "lease_id": "$response.body#/jobs/0/lease_id"}
LEASE_LINKS = {
    **links(
        {
            "heartbeat": "heartbeat",
            "complete": "complete",
            "fail": "fail",
            "release": "release",
            "log": "append_log",
            "progress": "progress",
        },
        {"id": LEASED["id"]},
        {"lease_id": LEASED["lease_id"]},
    ),
    **links({"heartbeat_many": "heartbeat_many"}, {}, {"leases": [LEASED]}),
    **links({"settle": "settle"}, {}, {"jobs": [LEASED]}),
}


def job_reply(description: str, model: type[BaseModel] = JobRecord) -> Reply:
    return Reply(description, model, headers=LOCATION, links=JOB_LINKS)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response serialised by pydantic-core (fast, and handles any JSON value or answer model).

    Hot routes hand it plain dicts shaped like their answer models (jobq/models.py); building a model
    per answer would cost them time. tests/test_openapi.py checks both against the document.
    """
    return web.Response(body=to_json(data), status=status, content_type="application/json", headers=headers)


def job_response(job: Job, status: int = 200) -> web.Response:
    return json_response(job.to_dict(), status, {"Location": f"/status/{job.id}"})


def receipt_response(job: Job, status: int) -> web.Response:
    """A job's receipt (``JobReceipt``): the keys a client follows it by, not its whole record.

    Formatted rather than serialised, at half the cost: none of its texts needs escaping in JSON.
    A job id, a queue name (``NAME_PATTERN``, or a UUID) and a token's name (``jobq.auth.NAME_PATTERN``)
    are letters, digits and ``_.:@-``; a status and an RFC 3339 time too (tests/test_api.py checks
    every character the patterns allow).
    """
    next_run_at = job.next_run_at
    due = "null" if next_run_at is None else f'"{rfc3339(next_run_at)}"'
    owner = "null" if job.owner is None else f'"{job.owner}"'
    body = (
        f'{{"id":"{job.id}","status":"{job.status.value}","queue":"{job.queue}",'
        f'"created_at":"{rfc3339(job.created_at)}","next_run_at":{due},"owner":{owner}}}'
    )
    headers = {hdrs.LOCATION: f"/status/{job.id}", hdrs.CONTENT_TYPE: "application/json"}
    return web.Response(body=body.encode(), status=status, headers=headers)


def owner_scope(request: web.Request) -> str | None:
    """Whose jobs the caller may see: its own name for a client token, None (all) for an admin or without tokens."""
    principal = principal_of(request)
    return principal.scope if principal is not None else None


def wait_seconds(request: web.Request) -> float:
    """The ``?wait=SECONDS`` query parameter (0 when absent); the service caps it."""
    if "?" not in request.raw_path:  # no query at all: nothing to parse (most requests)
        return 0.0
    raw = request.query.get("wait")
    if raw is None:
        return 0.0
    try:
        wait = float(raw)
    except ValueError:
        wait = math.nan
    if not 0 <= wait <= MAX_WAIT_PARAMETER:
        raise InvalidRequest(
            f"wait must be a number of seconds from 0 to {MAX_WAIT_PARAMETER:.0f}, not {raw!r}",
            errors=[{"field": "wait", "message": "a number of seconds"}],
        )
    return wait


M = TypeVar("M", bound=BaseModel)


def _number_shapes() -> bytes:
    """A ``bytes.translate`` table that keeps only what can spell a number JSON cannot carry.

    Every digit becomes ``0``, ``e`` and ``E`` become ``e``, the letters of NaN and Infinity
    stay, and every other byte becomes a space (``+`` is deleted by the caller).
    """
    table = bytearray(b" " * 256)
    table[ord("0") : ord("9") + 1] = b"0" * 10
    table[ord("e")] = table[ord("E")] = ord("e")
    for letter in b"NaIfinty":
        table[letter] = letter
    return bytes(table)


NUMBER_SHAPES = _number_shapes()
# What a number JSON cannot carry looks like once translated: NaN, an infinity, or one that overflows
# a double. A number overflows only at 1.8e308 or more, so its digits before the point plus its
# exponent come to at least 309: with an exponent of two digits at most (< 100) that takes 210 digits
# in a row; otherwise the exponent has three (0e000, also 1e+400 and 0.0001e400). A negative
# exponent only shrinks a number, and a zero before the point needs an exponent of 309 or more.
NOT_FINITE = (b"NaN", b"Infinity", b"0e000", b"0" * 210)


def might_not_be_finite(raw: bytes) -> bool:
    """Whether a JSON text may hold NaN, an infinity or a number too large for a double.

    Never False when it does; True for some texts that do not (such a number inside a string,
    a long integer), which then cost a second parse. About 0.5 µs for a 100-byte body and 5 µs for
    2 kB (one translate and up to four substring searches, all in C; ``find`` costs a short text
    half of what ``in`` does, and a text shorter than 210 bytes cannot hold 210 digits).
    """
    shapes = raw.translate(NUMBER_SHAPES, b"+")
    find = shapes.find
    nan, infinity, exponent, digits = NOT_FINITE
    return (
        find(exponent) >= 0
        or find(nan) >= 0
        or find(infinity) >= 0
        or (len(shapes) >= len(digits) and find(digits) >= 0)
    )


async def read_body(request: web.Request, model: type[M]) -> M:
    """The request body as ``model``: strict JSON (400 if it is not), then validated (422 naming each field).

    NaN and infinities are refused (JSON has no such numbers, and clients could not read them
    back); so is a number too large for a double, which a parser turns into infinity. Only a
    body that might hold one (rare: see ``might_not_be_finite``) is parsed twice to check.
    """
    raw = body_now(request)
    if raw is None:
        raw = await request.read()
    if might_not_be_finite(raw):
        try:
            data = from_json(raw, allow_inf_nan=False)
        except ValueError as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}") from None
        if not all_finite(data):
            raise BadRequest("the body holds a number too large for JSON's double precision")
    # The model's own validator, without model_validate_json's Python wrapper (a third of the cost for a small job).
    return model.__pydantic_validator__.validate_json(raw)  # type: ignore[no-any-return]


def body_now(request: web.Request) -> bytes | None:
    """The request body if all of it is here already (None: ``await request.read()`` for it).

    A small request's body usually comes in with its head, so there is nothing to wait for, and
    aiohttp's read loop (which also copies the body) would cost it a few microseconds. Bounded by
    the app's ``client_max_size`` as ``read()`` is (413): a chunked body has no length to refuse first.
    """
    content = request.content
    if not content.is_eof():
        return None
    raw = content.read_nowait()
    if len(raw) > request.client_max_size:
        raise web.HTTPRequestEntityTooLarge(max_size=request.client_max_size, actual_size=len(raw))
    return raw


def all_finite(value: Any) -> bool:
    """Whether no float anywhere in a parsed JSON value is infinite."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(all_finite(item) for item in value.values())
    if isinstance(value, list):
        return all(all_finite(item) for item in value)
    return True


def submitter(request: web.Request) -> tuple[str | None, bool]:
    """Who owns the jobs the caller submits (its token's name), and whether it may see every job."""
    principal = principal_of(request)
    return (None, True) if principal is None else (principal.name, principal.scope is None)


async def submit(request: web.Request, jobs: list[EnqueueRequest]) -> list[Added | JobqError]:
    """Submit jobs owned by the caller."""
    owner, sees_all = submitter(request)
    return await request.app[SERVICE].submit(jobs, owner, sees_all=sees_all)


@routes.post("/enqueue")
@requires(Role.CLIENT)
@documented(
    "jobs",
    {
        202: job_reply(
            "accepted: a new job's receipt (with ?wait=: the whole job, still unfinished when the wait ended)",
            EnqueueAnswer,
        ),
        200: Reply(
            "the same id and body were sent before, or another job holds its unique_key (Jobq-Duplicate-Of): that "
            "job's receipt (with ?wait=: the whole job, finished)",
            EnqueueAnswer,
            headers={**LOCATION, DUPLICATE_HEADER: "the id of the job that holds the unique_key asked for"},
            links=JOB_LINKS,
        ),
    },
    body=EnqueueRequest,
    query=(WaitQuery,),
    problems={
        409: "the id is taken by a job with another body (or another client's), or another client's job holds "
        "its unique_key",
        422: "an unknown job type, or a value the store cannot keep",
        503: "the queue is full (--queue-size), jobq is shutting down, or the store cannot write",
        507: "",
    },
)
async def enqueue(request: web.Request) -> web.Response:
    """Accept one job: 202 when new, 200 when the same id and body were sent before, or when another job holds
    its unique key (that job is the answer, and ``Jobq-Duplicate-Of`` names it).

    The answer is the job's receipt: its id, status, queue, created_at, next_run_at and owner (and
    ``Location: /status/{id}``, where the whole record is). With ``?wait=``, the whole record.
    """
    wait = wait_seconds(request)
    job_request = await read_body(request, EnqueueRequest)
    service = request.app[SERVICE]
    owner, sees_all = submitter(request)
    answer = await service.submit_one(job_request, owner, sees_all=sees_all)
    if wait:
        job = await service.wait_until_finished(answer.job.id, wait)
        response = job_response(job, 200 if job.finished else 202)
    else:
        response = receipt_response(answer.job, 202 if answer.created else 200)
    if answer.duplicate:
        response.headers[DUPLICATE_HEADER] = answer.job.id
    return response


@routes.post("/enqueue/batch")
@requires(Role.CLIENT)
@documented(
    "jobs",
    {200: Reply("each job's own answer, in order: its code and id, or its code and problem", BatchAnswer)},
    body=BatchRequest,
    problems={422: "more jobs than --batch-limit", 503: "jobq is shutting down, or the store cannot write", 507: ""},
)
async def enqueue_batch(request: web.Request) -> web.Response:
    """Accept many jobs; each gets its own answer (code and job, or code and problem)."""
    items = (await read_body(request, BatchRequest)).jobs
    request.app[SERVICE].check_batch(len(items))
    parsed: list[EnqueueRequest | JobqError] = []
    validate = EnqueueRequest.__pydantic_validator__.validate_python  # model_validate without its wrapper
    for item in items:
        try:
            parsed.append(validate(item))
        except ValidationError as exc:
            parsed.append(from_validation_error(exc))
    valid = [p for p in parsed if isinstance(p, EnqueueRequest)]
    answers = iter(await submit(request, valid) if valid else [])
    results = []
    for entry in parsed:
        answer = next(answers) if isinstance(entry, EnqueueRequest) else entry
        if isinstance(answer, JobqError):
            results.append({"code": answer.status, "problem": error_body(answer)})
        else:
            code = 202 if answer.created else 200
            result = {"code": code, "id": answer.job.id, "status": answer.job.status.value}
            if answer.duplicate:
                result["duplicate"] = True
            results.append(result)
    accepted = sum(1 for r in results if r["code"] in (200, 202))
    return json_response({"accepted": accepted, "rejected": len(results) - accepted, "results": results})


@routes.get("/status/{id}")
@routes.get("/jobs/{id}")
@requires(Role.CLIENT)
@documented("jobs", {200: job_reply("the job", JobStatusRecord)}, query=(WaitQuery,), problems={404: NO_JOB})
async def status(request: web.Request) -> web.Response:
    """The whole job record, with every attempt in ``history``; ``?wait=`` long-polls for its next change."""
    wait = wait_seconds(request)
    service = request.app[SERVICE]
    job_id = request.match_info["id"]
    owner = owner_scope(request)
    job = await service.wait_for_change(job_id, wait, owner) if wait else await service.get(job_id, owner)
    return json_response(await service.record(job, owner), 200, {"Location": f"/status/{job.id}"})


@routes.get("/jobs")
@requires(Role.CLIENT)
@documented(
    "jobs",
    {200: Reply("one page of jobs", JobList, headers={"Link": '<next page>; rel="next", when there is one'})},
    query=(ListQuery,),
)
async def list_jobs(request: web.Request) -> web.Response:
    """Jobs newest first, filtered by status, queue and type; cursor pagination."""
    query = ListQuery.model_validate(dict(request.query))
    jobs, next_cursor = await request.app[SERVICE].list_jobs(query, owner_scope(request))
    headers = {}
    if next_cursor is not None:
        headers["Link"] = f'<{request.rel_url.update_query(cursor=next_cursor)}>; rel="next"'
    return json_response({"jobs": [job.to_dict() for job in jobs], "next_cursor": next_cursor}, headers=headers)


@routes.get("/jobs/{id}/logs")
@requires(Role.CLIENT)
@documented("jobs", {200: Reply("the job's log lines", JobLogs)}, problems={404: NO_JOB})
async def job_logs(request: web.Request) -> web.Response:
    """The lines a job's handler logged, oldest first."""
    job_id = request.match_info["id"]
    return json_response({"id": job_id, "logs": await request.app[SERVICE].logs(job_id, owner_scope(request))})


@routes.post("/jobs/{id}/retry")
@requires(Role.ADMIN)
@documented(
    "jobs",
    {200: job_reply("the job, waiting to run again")},
    problems={404: NO_JOB, 409: "the job is neither failed nor dead", **STORE_WRITES},
)
async def retry(request: web.Request) -> web.Response:
    """Run a failed or dead job again; 409 for a job in any other state."""
    return job_response(await request.app[SERVICE].retry(request.match_info["id"]))


@routes.delete("/jobs/{id}")
@requires(Role.ADMIN)
@documented(
    "jobs",
    {200: Reply("the job as it was before it was deleted", JobRecord)},
    problems={404: NO_JOB, 409: "the job is running (cancel it first)", **STORE_WRITES},
)
async def delete_job(request: web.Request) -> web.Response:
    """Delete a job that is not running, with its logs; answers the job as it was (409 while it runs)."""
    return json_response((await request.app[SERVICE].delete(request.match_info["id"])).to_dict())


@routes.post("/jobs/retry")
@requires(Role.ADMIN)
@documented(
    "jobs",
    {200: Reply("how many jobs were retried", BulkRetried)},
    body=BulkRequest,
    problems={422: "a status other than failed or dead", **STORE_WRITES},
)
async def retry_many(request: web.Request) -> web.Response:
    """Re-run every failed or dead job matching a filter, up to ``limit``; answers how many."""
    return await bulk(request, "retry")


@routes.post("/jobs/delete")
@requires(Role.ADMIN)
@documented(
    "jobs",
    {200: Reply("how many jobs were deleted", BulkDeleted)},
    body=BulkRequest,
    problems={422: "status processing (cancel running jobs first)", **STORE_WRITES},
)
async def delete_many(request: web.Request) -> web.Response:
    """Delete every job in a state (and queue, type) matching a filter, up to ``limit``; answers how many."""
    return await bulk(request, "delete")


async def bulk(request: web.Request, action: str) -> web.Response:
    query = await read_body(request, BulkRequest)
    result = await request.app[SERVICE].bulk(action, query)
    if action == "retry":
        return json_response(
            BulkRetried(retried=result.done, skipped=result.skipped, more=result.more, cursor=result.cursor)
        )
    return json_response(
        BulkDeleted(deleted=result.done, skipped=result.skipped, more=result.more, cursor=result.cursor)
    )


def queue_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not re.fullmatch(NAME_PATTERN, name):
        raise InvalidRequest(f"{name!r} is not a queue name", errors=[{"field": "name", "message": NAME_PATTERN}])
    return name


@routes.get("/queues")
@requires(*ANY_ROLE)
@documented("queues", {200: Reply("the queues, by name", QueueList)})
async def list_queues(request: web.Request) -> web.Response:
    """Every queue holding jobs or paused: counts by state, paused, and how long its next job has waited."""
    return json_response({"queues": await request.app[SERVICE].queues(owner_scope(request))})


@routes.get("/queues/{name}/next")
@requires(Role.ADMIN)
@documented("queues", {200: job_reply("the job a worker would get next"), 204: Reply("no job of this queue is ready")})
async def peek_queue(request: web.Request) -> web.Response:
    """The job a worker would get next from this queue, without leasing it; 204 when none is ready."""
    job = await request.app[SERVICE].peek(queue_name(request))
    return web.Response(status=204) if job is None else job_response(job)


@routes.post("/queues/{name}/pause")
@requires(Role.ADMIN)
@documented("queues", {200: Reply("the queue is paused", QueuePaused)}, problems=STORE_WRITES)
async def pause_queue(request: web.Request) -> web.Response:
    """Stop running a queue's jobs (it still accepts new ones)."""
    name = queue_name(request)
    await request.app[SERVICE].set_paused(name, True)
    return json_response(QueuePaused(queue=name, paused=True))


@routes.post("/queues/{name}/resume")
@requires(Role.ADMIN)
@documented("queues", {200: Reply("the queue runs again", QueuePaused)}, problems=STORE_WRITES)
async def resume_queue(request: web.Request) -> web.Response:
    """Run a paused queue's jobs again."""
    name = queue_name(request)
    await request.app[SERVICE].set_paused(name, False)
    return json_response(QueuePaused(queue=name, paused=False))


@routes.delete("/queues/{name}/jobs")
@requires(Role.ADMIN)
@documented("queues", {200: Reply("how many waiting jobs were deleted", QueueCleared)}, problems=STORE_WRITES)
async def clear_queue(request: web.Request) -> web.Response:
    """Delete a queue's waiting jobs; answers how many."""
    name = queue_name(request)
    return json_response(QueueCleared(queue=name, cleared=await request.app[SERVICE].clear(name)))


@routes.post("/jobs/{id}/cancel")
@requires(Role.CLIENT)
@documented(
    "jobs",
    {200: job_reply("the job, cancelled")},
    problems={404: NO_JOB, 409: "the job has finished already", **STORE_WRITES},
)
async def cancel(request: web.Request) -> web.Response:
    """Cancel a waiting or running job; 409 if it already finished."""
    return job_response(await request.app[SERVICE].cancel(request.match_info["id"], owner_scope(request)))


@routes.get("/health")
@public
@documented(
    "server",
    {
        200: Reply("jobq serves (ok)", Health),
        503: Reply(
            "jobq is shutting down (draining), or the store cannot write (unavailable)",
            Unhealthy,
            headers={"Retry-After": "seconds to wait"},
        ),
    },
)
async def health(request: web.Request) -> web.Response:
    """Readiness, without a store round trip: 200 ``ok``; 503 while jobq drains (a load balancer or a readiness
    probe sends it nothing new) or when the store cannot write."""
    service = request.app[SERVICE]
    unavailable = service.unavailable
    if unavailable is not None:
        return json_response({"status": "unavailable", "detail": unavailable}, 503, {"Retry-After": "5"})
    if service.draining:
        detail = "jobq is shutting down: it finishes the jobs it runs and takes no new ones"
        return json_response({"status": "draining", "detail": detail}, 503, {"Retry-After": "5"})
    return json_response({"status": "ok"})


@routes.get("/stats")
@requires(*ANY_ROLE)
@documented("server", {200: Reply("the numbers", Stats)})
async def stats(request: web.Request) -> web.Response:
    """Counts per status and queue, queue depth, busy workers, jobs/s over the last minute, uptime."""
    return json_response(await request.app[SERVICE].stats(owner_scope(request)))


@routes.get("/nodes")
@requires(Role.WORKER)
@documented("server", {200: Reply("the nodes", NodeList)}, problems={503: "the store cannot be read"})
async def nodes(request: web.Request) -> web.Response:
    """The jobq processes that use this store, each with its workers and the remote workers it serves.

    Worker and admin tokens: a card names hosts, addresses and workers, which a client has no use for.
    """
    return json_response({"nodes": await request.app[SERVICE].nodes()})


@routes.get("/metrics")
@requires(*ANY_ROLE)
@documented(
    "server",
    {
        200: Reply(
            "Prometheus text exposition, or OpenMetrics when the Accept header asks for it",
            media={
                "text/plain": {"type": "string"},
                "application/openmetrics-text": {"type": "string"},
            },
        )
    },
    problems={404: "metrics are off (--metrics no)"},
)
async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics (text exposition, or OpenMetrics when the scraper asks for it)."""
    collected = request.app.get(METRICS)
    if collected is None:
        raise web.HTTPNotFound(text="metrics are off (--metrics no)")
    return await collected.scrape(request, request.app[SERVICE].store)


# -- this API's own description: public, like /health (it holds no job data) --
@routes.get("/openapi.json")
@public
@documented("docs", {200: Reply("this document", media={"application/json": {"type": "object"}})})
async def openapi_document(request: web.Request) -> web.Response:
    """This API's OpenAPI 3.1 document, built from its routes and their request and answer models."""
    return web.Response(body=document_json(request.app), content_type="application/json")


DOCS_HEADERS = {"Content-Security-Policy": DOCS_CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


@routes.get("/docs")
@public
@documented("docs", {200: Reply("an HTML page", media={"text/html": {"type": "string"}})})
async def docs_page(request: web.Request) -> web.Response:
    """An interactive page for this API (Swagger UI, from files jobq ships: nothing is loaded from elsewhere)."""
    return page_response("docs", DOCS_HEADERS)


@routes.get("/docs/{file}")
@public
@documented(
    "docs",
    {200: Reply("the file", media={media: {"type": "string"} for media in sorted(set(DOCS_FILES.values()))})},
    problems={404: "no such file"},
)
async def docs_asset(request: web.Request) -> web.Response:
    """A script or style sheet of the /docs page."""
    return file_response("docs", request.match_info["file"], DOCS_FILES, "public, max-age=3600")


# -- the worker protocol: remote workers lease, heartbeat and settle over HTTP --
def leased_view(job: Job) -> dict[str, Any]:
    """A leased job as its worker sees it (``LeasedJob``): only what a worker reads, nothing it would not."""
    return {
        "id": job.id,
        "type": job.type,
        "queue": job.queue,
        "priority": job.priority,
        "payload": job.payload,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "timeout": job.timeout,
        "lease_id": job.lease_id,
        "lease_expires_at": rfc3339(job.lease_expires_at),
        "depends_on": job.depends_on,  # a tuple: serialised as a JSON array, no list made per job
    }


@routes.post("/workers/lease")
@requires(Role.WORKER)
@documented(
    "workers",
    {
        200: Reply("the jobs leased, each with its lease_id", LeaseAnswer, links=LEASE_LINKS),
        204: Reply("no job came within wait seconds (or jobq is draining)"),
    },
    body=LeaseRequest,
    problems={503: "jobq is shutting down, or the store cannot write", 507: ""},
)
async def lease(request: web.Request) -> web.Response:
    """Lease up to ``max_jobs`` jobs; 204 when none came within ``wait`` seconds (or jobq is draining).

    Jobs leased for a worker that hung up meanwhile, or whose answer cannot be written,
    go straight back (undelivered) instead of waiting out their lease.
    """
    service = request.app[SERVICE]
    jobs = await service.lease(await read_body(request, LeaseRequest))
    if not jobs:
        return web.Response(status=204)
    response = json_response({"jobs": [leased_view(job) for job in jobs]})
    if hung_up(request):
        await service.hand_back(jobs)
        return response  # nobody reads it
    try:
        await response.prepare(request)
        await response.write_eof()
    except (ConnectionError, ClientConnectionResetError):
        await service.hand_back(jobs)
    return response


def hung_up(request: web.Request) -> bool:
    """Whether the client of this request has gone (its connection closed while the handler ran)."""
    transport = request.transport
    return transport is None or transport.is_closing()


@routes.post("/workers/heartbeat")
@requires(Role.WORKER)
@documented(
    "workers",
    {200: Reply("each lease's own answer, in order: 200 with its new deadline, or a problem", HeartbeatAnswer)},
    body=HeartbeatsRequest,
    problems={422: "more leases than --batch-limit", **STORE_WRITES},
)
async def heartbeat_many(request: web.Request) -> web.Response:
    """Extend many leases at once; each gets its own code (200 with its new deadline, or 409 for a stale lease)."""
    body = await read_body(request, HeartbeatsRequest)
    leases = [(item.id, item.lease_id) for item in body.leases]
    results = []
    for (job_id, _), answer in zip(leases, await request.app[SERVICE].heartbeat(leases, body.lease), strict=True):
        if isinstance(answer, JobqError):
            results.append({"id": job_id, "code": answer.status, "problem": error_body(answer)})
        else:
            results.append({"id": job_id, "code": 200, "lease_expires_at": rfc3339(answer.lease_expires_at)})
    return json_response({"results": results})


@routes.post("/workers/settle")
@requires(Role.WORKER)
@documented(
    "workers",
    {200: Reply("each settlement's own answer, in order: 200 with the job's status, or a problem", SettleAnswer)},
    body=SettleRequest,
    problems={422: "more settlements than --batch-limit", **STORE_WRITES},
)
async def settle(request: web.Request) -> web.Response:
    """Complete or fail many leased jobs at once; each gets its own code (200, or 409 for a stale lease)."""
    settlements = (await read_body(request, SettleRequest)).jobs
    results = []
    for item, answer in zip(settlements, await request.app[SERVICE].settle(settlements), strict=True):
        if isinstance(answer, JobqError):
            results.append({"id": item.id, "code": answer.status, "problem": error_body(answer)})
        else:
            results.append({"id": item.id, "code": 200, "status": answer.status.value})
    return json_response({"results": results})


@routes.post("/jobs/{id}/heartbeat")
@requires(Role.WORKER)
@documented(
    "workers",
    {200: Reply("the job with its new lease deadline", LeasedJob)},
    body=HeartbeatRequest,
    problems={404: NO_JOB, 409: LEASE_CONFLICT, **STORE_WRITES},
)
async def heartbeat(request: web.Request) -> web.Response:
    """Extend a lease; 409 if the lease id is not the job's current one."""
    body = await read_body(request, HeartbeatRequest)
    [job] = await request.app[SERVICE].heartbeat([(request.match_info["id"], body.lease_id)], body.lease)
    if isinstance(job, JobqError):
        raise job
    return json_response(leased_view(job))


@routes.post("/jobs/{id}/complete")
@requires(Role.WORKER)
@documented(
    "workers",
    {200: job_reply("the job, completed (a repeat with the same lease: the first result stands)")},
    body=CompleteRequest,
    problems={404: NO_JOB, 409: LEASE_CONFLICT, 422: "a result the store cannot keep", **STORE_WRITES},
)
async def complete(request: web.Request) -> web.Response:
    """Finish a leased job with its result."""
    body = await read_body(request, CompleteRequest)
    return job_response(await request.app[SERVICE].store.complete(request.match_info["id"], body.lease_id, body.result))


@routes.post("/jobs/{id}/fail")
@requires(Role.WORKER)
@documented(
    "workers",
    {200: job_reply("the job: retrying, or failed or dead when given up")},
    body=FailRequest,
    problems={404: NO_JOB, 409: LEASE_CONFLICT, **STORE_WRITES},
)
async def fail(request: web.Request) -> web.Response:
    """Record a failed attempt; the job is retried under its policy or given up."""
    body = await read_body(request, FailRequest)
    return job_response(await request.app[SERVICE].fail(request.match_info["id"], body))


@routes.post("/jobs/{id}/release")
@requires(Role.WORKER)
@documented(
    "workers",
    {200: job_reply("the job, waiting to run again")},
    body=ReleaseRequest,
    problems={404: NO_JOB, 409: LEASE_CONFLICT, **STORE_WRITES},
)
async def release(request: web.Request) -> web.Response:
    """Hand a leased job back unfinished (a worker shutting down); it runs again."""
    body = await read_body(request, ReleaseRequest)
    return job_response(await request.app[SERVICE].store.release(request.match_info["id"], body.lease_id))


@routes.post("/jobs/{id}/log")
@requires(Role.WORKER)
@documented(
    "workers",
    {204: Reply("the line is stored")},
    body=LogRequest,
    problems={404: NO_JOB, 409: LEASE_CONFLICT, **STORE_WRITES},
)
async def append_log(request: web.Request) -> web.Response:
    """Append a line to the log of a job leased under ``lease_id`` (409 for any other lease)."""
    body = await read_body(request, LogRequest)
    await request.app[SERVICE].append_log(request.match_info["id"], body.lease_id, body.message)
    return web.Response(status=204)


@routes.post("/jobs/{id}/progress")
@requires(Role.WORKER)
@documented(
    "workers",
    {204: Reply("the progress is stored")},
    body=ProgressRequest,
    problems={404: NO_JOB, 409: LEASE_CONFLICT, **STORE_WRITES},
)
async def progress(request: web.Request) -> web.Response:
    """Report a leased job's progress (0.0 to 1.0) and an optional note."""
    body = await read_body(request, ProgressRequest)
    await request.app[SERVICE].set_progress(request.match_info["id"], body.lease_id, body.fraction, body.note)
    return web.Response(status=204)
