"""Python SDK: an async client (``JobqClient``) and a blocking one (``SyncJobqClient``).

Every problem+json answer is raised as the jobq error the server raised
(``JobNotFound``, ``IdReused``, ``StaleLease``, ``QueueFull``, ...), so callers
catch the same classes on either side of the wire::

    async with JobqClient("http://127.0.0.1:8080") as jobq:
        job = await jobq.enqueue("send_email", {"to": "ada@example.com"})
        done = await jobq.wait(job.id, timeout=30)

Jobs that wait for other jobs: ``enqueue(..., depends_on=[...])``, or a whole workflow built
with ``jobq.workflow()`` (``add``, ``chain``, ``group``, then ``submit``; see :mod:`jobq.sdk.workflow`)
and followed with ``get_workflow(id)``.

The client also speaks the worker protocol (lease, heartbeat, complete, fail,
settle, release); with :class:`BatchedSource` over it, it is the job source that
``jobq worker`` runs a worker pool on.

A server with tokens needs ``token=``: a client token to enqueue and read its own
jobs, a worker token for the worker protocol, an admin token for everything. A
missing or unknown token raises ``Unauthorized`` (401), the wrong role ``Forbidden`` (403).

Like the rest of ``jobq.sdk``, this module imports nothing of the server (no
``aiohttp.web``, no request models, no gRPC): a worker host needs aiohttp and the
job record, not the server's dependencies.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
import yarl
from pydantic_core import from_json, to_json

from jobq.errors import Forbidden, JobqError, NoLimits, StaleLease, Unauthorized, Unreachable, error_from_problem
from jobq.job import PROCESSING, TERMINAL, Job, JobStatus, parse_rfc3339
from jobq.lifecycle import Settlement
from jobq.retry import RetryPolicy
from jobq.sdk.workflow import ParentFailure, Workflow, WorkflowCreated, WorkflowView, id_list, workflow_jobs

log = logging.getLogger("jobq.sdk")

DEFAULT_URL = "http://127.0.0.1:8080"


class BadUrl(ValueError):
    """A server URL that is not one: no http(s) scheme, no host, or not a URL at all."""


def check_url(url: str) -> str:
    """``url`` if it is a server's http(s) base URL; else BadUrl naming what is wrong."""
    try:
        parsed = yarl.URL(url)
    except (TypeError, ValueError) as exc:
        raise BadUrl(f"{url!r} is not a URL ({exc}); give one like {DEFAULT_URL}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise BadUrl(f"{url!r} is not an http:// or https:// URL with a host; give one like {DEFAULT_URL}")
    return url


TRANSIENT_STATUSES = frozenset({502, 503, 504})  # a gateway's, or jobq's "come back later" (store down, restarting)
SETTLE_BACKOFF = RetryPolicy(base=0.1, cap=2.0)  # between sends of a batch that did not get through


def is_transient(error: JobqError) -> bool:
    """Whether a request that failed this way may succeed sent again as it is: jobq was not reached, or said later."""
    return isinstance(error, Unreachable) or error.status in TRANSIENT_STATUSES


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of ``list()``: the jobs, and the cursor of the next page (None at the end)."""

    jobs: list[Job]
    next_cursor: str | None


class JobqClient:
    """Async client for one jobq server; ``token`` is sent as ``Authorization: Bearer <token>``."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.url = check_url(url).rstrip("/")
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}  # per request: shared sessions too
        self._json_headers = {**self._headers, "Content-Type": "application/json"}
        self._session = session
        self._owns_session = session is None

    async def __aenter__(self) -> JobqClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    # -- transport ---------------------------------------------------------
    async def _call(
        self, method: str, path: str, body: Any = None, *, params: dict[str, Any] | None = None, wait: float = 0.0
    ) -> Any:
        """One request; returns the parsed JSON (None for 204) or raises the server's error.

        ``body`` is sent as JSON: a value to serialise, or ``bytes`` already serialised.
        """
        return (await self._exchange(method, path, body, params=params, wait=wait))[1]

    async def _exchange(
        self, method: str, path: str, body: Any = None, *, params: dict[str, Any] | None = None, wait: float = 0.0
    ) -> tuple[int, Any]:
        """One request; returns its status and parsed JSON (None for 204), or raises the server's error."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}
        timeout = aiohttp.ClientTimeout(total=self.timeout + wait)
        headers = self._headers if body is None else self._json_headers
        data = None if body is None else body if isinstance(body, bytes) else to_json(body)
        try:
            async with self._session.request(
                method, self.url + path, data=data, params=query, timeout=timeout, headers=headers
            ) as response:
                if response.status == 204:
                    return 204, None
                raw = await response.read()
                try:
                    data = from_json(raw)
                except ValueError:  # not jobq answering (a proxy's error page, or another server at this URL)
                    text = raw.decode(errors="replace")
                    heard = f"{response.status} {response.reason or ''}".strip()
                    raise error_from_problem(
                        response.status if response.status >= 500 else 502,  # never "not found": jobq was not asked
                        {"title": "Not a jobq answer", "detail": f"{heard}, not JSON, from {self.url}: {text[:200]!r}"},
                    ) from None
                if response.status >= 400:
                    raise error_from_problem(response.status, data if isinstance(data, dict) else {})
                return response.status, data
        except (aiohttp.ClientError, TimeoutError) as exc:  # a reset mid-answer too, or no HTTP server there
            raise Unreachable(f"{method} {self.url}{path} failed: {exc or type(exc).__name__}") from exc

    # -- producers ---------------------------------------------------------
    async def enqueue(
        self,
        type: str,
        payload: Any = None,
        *,
        id: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        delay: float | None = None,
        run_at: datetime | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        unique_key: str | None = None,
        unique_scope: str | None = None,
        unique_for: float | None = None,
        debounce: float | None = None,
        concurrency_key: str | None = None,
        concurrency_limit: int | None = None,
        depends_on: Iterable[str] | None = None,
        on_parent_failure: ParentFailure | None = None,
        wait: float | None = None,
    ) -> Job:
        """Submit a job and return it as accepted. With ``wait``, hold until it finishes (or ``wait`` seconds pass).

        A new job comes back from what was sent and the server's receipt (its id, status, queue,
        times and owner): the whole record of a job that has not run yet. An id sent before (200)
        is answered with that job's whole record as it is now (one more request, ``GET /status``);
        with ``wait``, the answer is the whole record as the wait ended. With ``unique_key``, while
        another job holds the key (see the server's docs: ``unique_scope``, ``unique_for``), the
        answer is that job; with ``debounce`` too, the job waits that many seconds and replaces the
        waiting one that holds the key (the last of a burst runs). ``concurrency_key`` is what the
        queue's limits count and take turns by (a customer, say); ``concurrency_limit`` its own
        limit of that key's jobs running at once.

        With ``depends_on`` (ids of stored jobs), the job waits (status ``waiting``) until each of them has
        finished; ``on_parent_failure`` says what it does when one fails, dies or is cancelled: ``"cancel"``
        (the default: it is cancelled too) or ``"run"``. Its handler reads their outcomes with
        ``await ctx.parents()``. Several jobs that depend on one another: :meth:`workflow`.
        """
        parents = None if depends_on is None else id_list(depends_on)
        fields = {
            "type": type,
            "payload": {} if payload is None else payload,
            "id": id,
            "queue": queue,
            "priority": priority,
            "delay": delay,
            "run_at": run_at.isoformat() if run_at else None,
            "max_attempts": max_attempts,
            "timeout": timeout,
            "unique_key": unique_key,
            "unique_scope": unique_scope,
            "unique_for": unique_for,
            "debounce": debounce,
            "concurrency_key": concurrency_key,
            "concurrency_limit": concurrency_limit,
            "depends_on": parents,
            "on_parent_failure": on_parent_failure,
        }
        body = to_json({k: v for k, v in fields.items() if v is not None})
        status, data = await self._exchange("POST", "/enqueue", body, params={"wait": wait}, wait=wait or 0.0)
        if "type" in data:  # the whole record: with wait (or from a server that answers it every time)
            return Job.from_dict(data)
        if status != 202 or parents or (data["owner"] is not None and (unique_key or concurrency_key)):
            # a job sent before, which may have run since; a job with parents (how many it still waits for is
            # the store's count); or keys a client token's name may prefix (the server keeps a client's keys as
            # its own): the record as the server keeps it
            return await self.get(data["id"])
        return received_job(data, from_json(body))  # the payload as the server keeps it: JSON's form

    async def get(self, job_id: str, *, wait: float | None = None) -> Job:
        """The job; with ``wait``, first wait up to that long for its next change."""
        return Job.from_dict(await self._call("GET", f"/status/{job_id}", params={"wait": wait}, wait=wait or 0.0))

    async def wait(self, job_id: str, timeout: float | None = None, *, poll: float = 30.0) -> Job:
        """Wait until the job finishes; TimeoutError after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job = await self.get(job_id)
        while job.status not in TERMINAL:
            left = poll if deadline is None else min(poll, deadline - time.monotonic())
            if left <= 0:
                raise TimeoutError(f"job {job_id} is still {job.status} after {timeout}s")
            job = await self.get(job_id, wait=left)
        return job

    async def cancel(self, job_id: str) -> Job:
        return Job.from_dict(await self._call("POST", f"/jobs/{job_id}/cancel"))

    async def retry(self, job_id: str) -> Job:
        """Run a failed or dead job again (an admin token)."""
        return Job.from_dict(await self._call("POST", f"/jobs/{job_id}/retry"))

    async def delete(self, job_id: str) -> Job:
        """Delete a job that is not running, with its logs (an admin token); returns the job as it was."""
        return Job.from_dict(await self._call("DELETE", f"/jobs/{job_id}"))

    async def retry_all(
        self,
        status: str,
        *,
        queue: str | None = None,
        type: str | None = None,
        q: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Re-run every ``failed`` or ``dead`` job matching the filter, up to ``limit`` (an admin token).

        ``q``: only jobs whose type, error or payload holds this text. Answers ``{"retried", "skipped",
        "more", "cursor"}``: ``more`` says matching jobs may remain; pass ``cursor`` to go on from there.
        """
        return await self._call("POST", "/jobs/retry", _bulk_body(status, queue, type, q, limit, cursor))

    async def delete_all(
        self,
        status: str,
        *,
        queue: str | None = None,
        type: str | None = None,
        q: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Delete every job in ``status`` (not ``processing``) matching the filter, up to ``limit`` (admin token).

        Answers ``{"deleted", "skipped", "more", "cursor"}``, as ``retry_all``.
        """
        return await self._call("POST", "/jobs/delete", _bulk_body(status, queue, type, q, limit, cursor))

    async def list(
        self,
        *,
        status: str | None = None,
        queue: str | None = None,
        type: str | None = None,
        workflow: str | None = None,
        parent: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """One page of jobs, newest first: of a ``workflow`` only, or only those depending on ``parent``, if given."""
        params = {
            "status": status,
            "queue": queue,
            "type": type,
            "workflow": workflow,
            "parent": parent,
            "limit": limit,
            "cursor": cursor,
        }
        data = await self._call("GET", "/jobs", params=params)
        return JobPage([Job.from_dict(j) for j in data["jobs"]], data["next_cursor"])

    # -- workflows ---------------------------------------------------------
    def workflow(self, id: str | None = None) -> Workflow:
        """A workflow to build (``add``, ``chain``, ``group``) and ``await .submit()``; see :mod:`jobq.sdk.workflow`.

        ``id`` is the workflow's own (a new one by default, chosen here).
        """
        return Workflow(self, id)

    async def create_workflow(
        self, jobs: Workflow | Sequence[Mapping[str, Any]], *, id: str | None = None
    ) -> WorkflowCreated:
        """``POST /workflows``: create jobs that depend on one another, all of them or none.

        ``jobs`` is a built :class:`Workflow`, or job objects as ``POST /enqueue`` takes them (with
        ``id`` and ``depends_on``). Answers the workflow's id, how many jobs this request created
        (0: the same workflow was sent before) and each job's id and status, in the order sent.
        """
        return await self._call("POST", "/workflows", workflow_jobs(jobs, id))  # type: ignore[no-any-return]

    async def get_workflow(self, workflow_id: str) -> WorkflowView:
        """``GET /workflows/{id}``: how far it is (``done``, ``failed``, ``total``, ``finished``, ``counts`` by
        status) and every job with its ``depends_on``, oldest first. ``WorkflowNotFound`` when there is none."""
        return await self._call("GET", f"/workflows/{workflow_id}")  # type: ignore[no-any-return]

    async def logs(self, job_id: str) -> list[dict[str, Any]]:
        return (await self._call("GET", f"/jobs/{job_id}/logs"))["logs"]

    async def stats(self) -> dict[str, Any]:
        return await self._call("GET", "/stats")

    async def nodes(self) -> list[dict[str, Any]]:
        """The jobq processes on the server's store, each with its workers and the remote workers it serves."""
        return list((await self._call("GET", "/nodes"))["nodes"])

    # -- queues ------------------------------------------------------------
    async def queues(self) -> list[dict[str, Any]]:
        """Every queue holding jobs or paused: ``{"name", "paused", "jobs": {status: count}, "oldest_wait_seconds"}``.

        Any token may ask.
        """
        return (await self._call("GET", "/queues"))["queues"]

    async def peek(self, queue: str) -> Job | None:
        """The job a worker would get next from ``queue``, without leasing it; None when none is ready (admin)."""
        data = await self._call("GET", f"/queues/{queue}/next")
        return None if data is None else Job.from_dict(data)

    async def pause(self, queue: str) -> None:
        """Stop running the queue's jobs; it still accepts new ones (an admin token)."""
        await self._call("POST", f"/queues/{queue}/pause")

    async def resume(self, queue: str) -> None:
        """Run a paused queue's jobs again (an admin token)."""
        await self._call("POST", f"/queues/{queue}/resume")

    async def clear(self, queue: str) -> int:
        """Delete the queue's waiting jobs (an admin token); returns how many."""
        return (await self._call("DELETE", f"/queues/{queue}/jobs"))["cleared"]

    async def flow(self, queue: str) -> dict[str, Any] | None:
        """The queue's limits, what runs and what they hold back now; None when it has none."""
        try:
            return dict((await self._call("GET", f"/queues/{queue}/flow"))["flow"])
        except NoLimits:
            return None

    async def set_flow(
        self,
        queue: str,
        *,
        concurrency: int | None = None,
        key_concurrency: int | None = None,
        rate: tuple[int, float] | None = None,
        key_rate: tuple[int, float] | None = None,
    ) -> dict[str, Any]:
        """Set the queue's limits (an admin token): jobs running at once, in all and per concurrency_key, and
        starts per period, in all and per key (``(limit, period_seconds)``); an absent one is no limit."""
        limits: dict[str, Any] = {"concurrency": concurrency, "key_concurrency": key_concurrency}
        if rate is not None:
            limits["rate"] = {"limit": rate[0], "period": float(rate[1])}
        if key_rate is not None:
            limits["key_rate"] = {"limit": key_rate[0], "period": float(key_rate[1])}
        body = to_json({k: v for k, v in limits.items() if v is not None})
        return dict((await self._call("PUT", f"/queues/{queue}/flow", body))["flow"])

    async def remove_flow(self, queue: str) -> None:
        """Remove the queue's limits (an admin token)."""
        await self._call("DELETE", f"/queues/{queue}/flow")

    # -- schedules (an admin token) ---------------------------------------------
    async def schedules(self) -> list[dict[str, Any]]:
        """Every schedule, with its definition and its last and next run."""
        return list((await self._call("GET", "/schedules"))["schedules"])

    async def put_schedule(
        self,
        name: str,
        job: dict[str, Any],
        *,
        cron: str | None = None,
        every: float | None = None,
        timezone: str | None = None,
        missed: str | None = None,
        paused: bool = False,
    ) -> dict[str, Any]:
        """Define or redefine schedule ``name``: ``cron`` or ``every`` seconds, and the ``job`` each tick enqueues
        (``{"type", "payload", "queue", ...}``)."""
        definition = {"cron": cron, "every": every, "timezone": timezone, "missed": missed, "job": job}
        body = {key: value for key, value in definition.items() if value is not None}
        if paused:
            body["paused"] = True
        return dict(await self._call("PUT", f"/schedules/{name}", body))

    async def pause_schedule(self, name: str) -> dict[str, Any]:
        return dict(await self._call("POST", f"/schedules/{name}/pause"))

    async def resume_schedule(self, name: str) -> dict[str, Any]:
        return dict(await self._call("POST", f"/schedules/{name}/resume"))

    async def run_schedule(self, name: str) -> dict[str, Any]:
        """Enqueue the schedule's job now; answers its receipt."""
        return dict(await self._call("POST", f"/schedules/{name}/run"))

    async def delete_schedule(self, name: str) -> None:
        await self._call("DELETE", f"/schedules/{name}")

    # -- the worker protocol (makes the client a JobSource for WorkerPool) --
    async def lease(
        self,
        max_jobs: int,
        lease_seconds: float,
        *,
        queues: Sequence[str] | None = None,
        worker: str | None = None,
        wait: float = 0.0,
        types: Sequence[str] | None = None,
    ) -> list[Job]:
        """Lease up to ``max_jobs`` jobs (of ``types`` only, when given), long-polling up to ``wait`` seconds."""
        body = {
            "max_jobs": max_jobs,
            "lease": lease_seconds,
            "wait": wait,
            "queues": queues,
            "worker": worker,
            "types": None if types is None else list(types),
        }
        data = await self._call("POST", "/workers/lease", {k: v for k, v in body.items() if v is not None}, wait=wait)
        if data is None:
            return []
        deadlines = _Deadlines()
        return [leased_job(item, deadlines) for item in data["jobs"]]

    async def heartbeat(self, job_id: str, lease_id: str, lease_seconds: float) -> Job:
        body = {"lease_id": lease_id, "lease": lease_seconds}
        return leased_job(await self._call("POST", f"/jobs/{job_id}/heartbeat", body), _Deadlines())

    async def heartbeat_many(self, leases: Sequence[tuple[str, str]], lease_seconds: float) -> list[Job | JobqError]:
        """Extend many leases in one request (``POST /workers/heartbeat``); one answer each, in order.

        An answer is the job as far as the answer tells (its id, lease and new deadline),
        or the error for that lease (``StaleLease`` when it is no longer the job's).
        """
        body = {"leases": [{"id": job_id, "lease_id": lease_id} for job_id, lease_id in leases], "lease": lease_seconds}
        answers = (await self._call("POST", "/workers/heartbeat", body))["results"]
        if len(answers) != len(leases):
            raise JobqError(f"the server answered {len(answers)} heartbeats for {len(leases)}")
        results: list[Job | JobqError] = []
        for (job_id, lease_id), answer in zip(leases, answers, strict=True):
            if answer["code"] != 200:
                results.append(error_from_problem(answer["code"], answer.get("problem", {})))
                continue
            expires = parse_rfc3339(answer["lease_expires_at"])
            results.append(Job(id=job_id, type="", payload=None, lease_id=lease_id, lease_expires_at=expires))
        return results

    async def complete(self, job_id: str, lease_id: str, result: Any) -> Job:
        body = {"lease_id": lease_id, "result": result}
        return Job.from_dict(await self._call("POST", f"/jobs/{job_id}/complete", body))

    async def fail(
        self,
        job_id: str,
        lease_id: str,
        error: str,
        *,
        retry_in: float | None = None,
        outcome: str = "failed",
        traceback: str | None = None,
    ) -> Job:
        body = failure_item(lease_id, error, retry_in, outcome, traceback)
        return Job.from_dict(await self._call("POST", f"/jobs/{job_id}/fail", body))

    async def settle(self, settlements: Sequence[dict[str, Any] | bytes]) -> list[dict[str, Any]]:
        """Complete or fail many leased jobs in one request (``POST /workers/settle``); one answer each.

        Each settlement is ``{"id", "lease_id", "result"}`` or ``{"id", "lease_id", "error"}`` (with
        optional ``retry_in`` and ``outcome``), or such an object already serialised as JSON bytes;
        each answer has its ``code``, 200 or a problem's.
        """
        items = [item if isinstance(item, bytes) else to_json(item) for item in settlements]
        body = b'{"jobs":[' + b",".join(items) + b"]}"
        return (await self._call("POST", "/workers/settle", body))["results"]

    async def release(self, job_id: str, lease_id: str) -> Job:
        return Job.from_dict(await self._call("POST", f"/jobs/{job_id}/release", {"lease_id": lease_id}))

    async def append_log(self, job_id: str, message: str, lease_id: str | None = None) -> None:
        """Add a line to the log of a job this worker holds under ``lease_id``."""
        await self._call("POST", f"/jobs/{job_id}/log", {"lease_id": lease_id, "message": message})

    async def set_progress(self, job_id: str, lease_id: str | None, fraction: float, note: str | None) -> None:
        body = {"lease_id": lease_id, "fraction": fraction, "note": note}
        await self._call("POST", f"/jobs/{job_id}/progress", body)

    async def parents(self, job_id: str) -> list[dict[str, Any]]:
        """How each job ``job_id`` depends on ended: id, type, status, result and error, in depends_on order."""
        body = await self._call("GET", f"/jobs/{job_id}/parents")
        return body["parents"]  # type: ignore[no-any-return]


class _Deadlines(dict[str, float | None]):
    """Lease deadlines parsed once per distinct text: the jobs of one lease answer share theirs."""

    def __missing__(self, text: str) -> float | None:
        self[text] = value = parse_rfc3339(text)
        return value


def leased_job(item: dict[str, Any], deadlines: _Deadlines) -> Job:
    """A job as ``POST /workers/lease`` answers it (only what a worker reads), ready for a worker pool."""
    return Job(
        id=item["id"],
        type=item["type"],
        payload=item["payload"],
        queue=item["queue"],
        priority=item["priority"],
        max_attempts=item["max_attempts"],
        timeout=item["timeout"],
        status=PROCESSING,
        attempts=item["attempts"],
        lease_id=item["lease_id"],
        lease_expires_at=deadlines[item["lease_expires_at"]],
        depends_on=tuple(item.get("depends_on") or ()),  # so ctx.parents() asks only when it has parents
    )


def received_job(receipt: dict[str, Any], sent: dict[str, Any]) -> Job:
    """A new job as ``POST /enqueue`` accepted it: the fields sent (as parsed back from the body, so
    the payload is JSON's form, not the caller's object), and those of its receipt (``JobReceipt``).

    What neither holds is what every new job has: no attempts, result or history yet; the
    priority, attempts and timeout not sent are the record's defaults (``Job``'s and the server's).
    """
    given = {key: sent[key] for key in ("priority", "max_attempts") if key in sent}
    if "timeout" in sent:
        given["timeout"] = float(sent["timeout"])  # the server keeps seconds as a float
    created_at = parse_rfc3339(receipt["created_at"]) or 0.0
    if "unique_key" in sent:
        given["unique_key"] = sent["unique_key"]
        given["unique_scope"] = sent.get("unique_scope", "active")
        given["unique_until"] = None if "unique_for" not in sent else created_at + sent["unique_for"]
    if "concurrency_key" in sent:
        given["concurrency_key"] = sent["concurrency_key"]
        given["concurrency_limit"] = sent.get("concurrency_limit")
    return Job(
        id=receipt["id"],
        type=sent["type"],
        payload=sent["payload"],
        queue=receipt["queue"],
        status=JobStatus(receipt["status"]),
        created_at=created_at,
        run_at=parse_rfc3339(receipt["next_run_at"]),  # a new job's due time, if it is not due yet
        owner=receipt["owner"],
        **given,
    )


def _bulk_body(
    status: str, queue: str | None, type: str | None, q: str | None, limit: int | None, cursor: str | None
) -> dict[str, Any]:
    """The filter of ``POST /jobs/retry`` and ``POST /jobs/delete``, without the fields left out."""
    body = {"status": status, "queue": queue, "type": type, "q": q, "limit": limit, "cursor": cursor}
    return {k: v for k, v in body.items() if v is not None}


def failure_item(
    lease_id: str, error: str, retry_in: float | None, outcome: str, traceback: str | None
) -> dict[str, Any]:
    """The body of a failed attempt, as ``/jobs/{id}/fail`` and ``/workers/settle`` take it."""
    item: dict[str, Any] = {"lease_id": lease_id, "error": error, "outcome": outcome}
    if retry_in is not None:
        item["retry_in"] = retry_in
    if traceback is not None:
        item["traceback"] = traceback
    return item


Batch = list[tuple[bytes, asyncio.Future[None]]]
"""Settlements to send together, each serialised, with the future its caller awaits."""


def settlement_item(settlement: Settlement) -> dict[str, Any]:
    """A settlement as ``POST /workers/settle`` takes it."""
    if settlement.error is None:
        return {"id": settlement.id, "lease_id": settlement.lease_id, "result": settlement.result}
    item = failure_item(
        settlement.lease_id, settlement.error, settlement.retry_in, settlement.outcome, settlement.traceback
    )
    return {"id": settlement.id, **item}


class BatchedSource:
    """The worker protocol over one client, with completes and fails sent in batches.

    Settlements made in one pass of the event loop (several workers finishing at once),
    up to ``max_batch`` of them, go out as one ``POST /workers/settle``; each caller
    still gets its own outcome (``StaleLease`` for a lease that lapsed, say). This is
    the :class:`~jobq.workers.JobSource` that ``python -m jobq.sdk.remote_worker`` runs on.

    A batch that does not get through (jobq unreachable, a connection reset, a timeout,
    a 502, 503 or 504, for the whole batch or for some of its items) is sent again,
    ``backoff`` apart (0.1 s doubling to 2 s, jittered), until each settlement has its
    answer or ``give_up_after`` seconds have passed since the first send; then its
    callers get the last error. The callers wait meanwhile, and a worker pool keeps
    heartbeating a job until its settle returns, so the lease outlives a short outage.

    Sending again is safe when an answer was lost: a complete repeated under the same
    lease answers 200 with the first result. A repeated fail is answered 409, so a fail
    whose first answer was lost reaches its caller as ``StaleLease`` (it did land).
    """

    def __init__(
        self,
        client: JobqClient,
        max_batch: int = 200,
        max_bytes: int = 256 * 1024,
        *,
        give_up_after: float = 60.0,
        backoff: RetryPolicy = SETTLE_BACKOFF,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.client = client
        self.max_batch = max_batch
        self.max_bytes = max_bytes  # well under the server's --body-limit (1 MiB by default)
        self.give_up_after = give_up_after  # a remote worker passes its lease: after that, the jobs are gone anyway
        self.backoff = backoff
        self._clock = clock
        self._sleep = sleep
        self._batch: Batch = []
        self._batch_bytes = 0
        self._sending: set[asyncio.Task[None]] = set()
        # Everything but settling goes to the client as it is.
        self.lease = client.lease
        self.heartbeat_many = client.heartbeat_many
        self.release = client.release
        self.append_log = client.append_log
        self.set_progress = client.set_progress
        self.parents = client.parents

    async def settle_many(self, settlements: Sequence[Settlement]) -> list[JobqError | None]:
        """Settle leased jobs (a worker pool's finished runs); one answer each: None, or why it did not land."""
        outcomes = [self._add(settlement_item(settlement)) for settlement in settlements]
        answers = await asyncio.gather(*outcomes, return_exceptions=True)
        return [
            None if answer is None else answer if isinstance(answer, JobqError) else Unreachable(repr(answer))
            for answer in answers
        ]

    async def complete(self, job_id: str, lease_id: str, result: Any) -> None:
        await self._add({"id": job_id, "lease_id": lease_id, "result": result})

    async def fail(
        self,
        job_id: str,
        lease_id: str,
        error: str,
        *,
        retry_in: float | None = None,
        outcome: str = "failed",
        traceback: str | None = None,
    ) -> None:
        await self._add({"id": job_id, **failure_item(lease_id, error, retry_in, outcome, traceback)})

    def _add(self, item: dict[str, Any]) -> asyncio.Future[None]:
        """Put a settlement in the batch; the future answers it (None, or the error it got)."""
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[None] = loop.create_future()
        if not self._batch:
            loop.call_soon(self._flush)  # after every worker that finishes in this pass has added its own
        encoded = to_json(item)  # results are plain JSON (the pool checked them)
        self._batch.append((encoded, outcome))
        self._batch_bytes += len(encoded)
        if len(self._batch) >= self.max_batch or self._batch_bytes >= self.max_bytes:
            self._flush()
        return outcome

    def _flush(self) -> None:
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        if batch:  # sent even if its callers are cancelled meanwhile: the jobs did finish
            task = asyncio.create_task(self._send(batch), name="jobq-settle")
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: Batch, deadline: float | None = None) -> None:
        """Send ``batch`` until every settlement in it is answered, or ``deadline`` passes; answer each caller."""
        deadline = self._clock() + self.give_up_after if deadline is None else deadline
        tries = 0
        try:
            while True:
                try:
                    answers = await self.client.settle([item for item, _ in batch])
                    if len(answers) != len(batch):
                        raise JobqError(f"the server answered {len(answers)} settlements for {len(batch)}")
                except JobqError as refused:
                    if refused.status in (413, 422) and len(batch) > 1:
                        # Over the server's --batch-limit (422) or --body-limit (413), or one bad item: halve,
                        # so the rest lands, and send no more than that from now on.
                        half = len(batch) // 2
                        self.max_batch = min(self.max_batch, half)
                        await asyncio.gather(self._send(batch[:half], deadline), self._send(batch[half:], deadline))
                        return
                    if not is_transient(refused):
                        _fail_all(batch, refused)
                        return
                    error = refused
                else:
                    batch, error = _answer(batch, answers)
                    if error is None:
                        if tries:
                            log.info("settled %d jobs at try %d", len(answers), tries + 1)
                        return
                tries += 1
                if not await self._wait_to_resend(batch, error, tries, deadline):
                    return
        except BaseException as exc:  # a broken answer, a cancelled send: nobody may wait forever
            _fail_all(batch, exc if isinstance(exc, JobqError) else Unreachable(f"settling failed: {exc!r}"))
            if not isinstance(exc, Exception):
                raise

    async def _wait_to_resend(self, batch: Batch, error: JobqError, tries: int, deadline: float) -> bool:
        """Sleep before sending ``batch`` again; False (and its callers get ``error``) once ``deadline`` would pass."""
        delay = self.backoff.next_delay(tries)
        if self._clock() + delay > deadline:
            log.error(
                "settling %d jobs failed %d times, for %.0fs: %s; giving up",
                len(batch),
                tries,
                self.give_up_after,
                error,
            )
            _fail_all(batch, error)
            return False
        if tries == 1:
            log.warning(
                "settling %d jobs failed: %s; sending again for up to %.0fs", len(batch), error, self.give_up_after
            )
        else:
            log.debug("settling %d jobs failed again: %s; next try in %.2fs", len(batch), error, delay)
        await self._sleep(delay)
        return True

    async def close(self, timeout: float | None = None) -> None:
        """Send what is batched and wait for every settle request in flight, sends again included.

        After ``timeout`` seconds (None: as long as they take), stop sending: what has not
        landed fails its callers with ``Unreachable``, and those jobs' leases lapse on the
        server. Close the client yourself afterwards.
        """
        self._flush()
        if self._sending and timeout is not None:
            _, late = await asyncio.wait(self._sending, timeout=timeout)
            for task in late:
                task.cancel()
        while self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)


def _answer(batch: Batch, answers: Sequence[dict[str, Any]]) -> tuple[Batch, JobqError | None]:
    """Give each caller its settlement's answer; returns the settlements to send again, and why (None: none)."""
    again: Batch = []
    error: JobqError | None = None
    for (item, outcome), answer in zip(batch, answers, strict=True):
        refused = None if answer["code"] == 200 else error_from_problem(answer["code"], answer.get("problem", {}))
        if refused is not None and is_transient(refused):
            again.append((item, outcome))  # even if its caller is gone: the job did finish
            error = refused
        elif outcome.done():
            continue
        elif refused is None:
            outcome.set_result(None)
        else:
            outcome.set_exception(refused)
    return again, error


def _fail_all(batch: Batch, error: BaseException) -> None:
    for _, outcome in batch:
        if not outcome.done():
            outcome.set_exception(error)


class SyncJobqClient:
    """Blocking twin of :class:`JobqClient`: the same methods, called without ``await``.

    It runs a private event loop, so use it from ordinary (non-async) code.
    """

    def __init__(self, url: str = DEFAULT_URL, **options: Any) -> None:
        self._runner = asyncio.Runner()
        self._client = JobqClient(url, **options)

    def __enter__(self) -> SyncJobqClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._runner.run(self._client.close())
        self._runner.close()

    def workflow(self, id: str | None = None) -> Workflow:
        """A workflow to build (``add``, ``chain``, ``group``); send it with ``create_workflow(workflow)``."""
        return Workflow(None, id)  # its async submit() is the async client's: it says so if called

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._client, name)
        if not asyncio.iscoroutinefunction(method):
            return method

        def blocking(*args: Any, **kwargs: Any) -> Any:
            return self._runner.run(method(*args, **kwargs))

        blocking.__doc__ = method.__doc__
        return blocking


__all__ = [
    "BatchedSource",
    "Forbidden",
    "JobPage",
    "JobqClient",
    "JobqError",
    "StaleLease",
    "SyncJobqClient",
    "Unauthorized",
    "Unreachable",
    "is_transient",
]
