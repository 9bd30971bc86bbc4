"""Workflows from the client: jobs that wait for other jobs, built here and created together.

A job runs once every job it ``depends_on`` has finished; a parent that fails, dies or is
cancelled cancels its waiting children, unless a child says ``on_parent_failure="run"``
(the server's ``jobq/workflow.py`` holds the rules). A handler reads its parents' outcomes
with ``await ctx.parents()``.

The builder chooses every job id here (``jobq.job.new_job_id``), so a job can be named as a
parent before anything is sent, and sending the same workflow again (after a lost answer,
say) is idempotent::

    async with JobqClient(url) as jobq:
        wf = jobq.workflow()
        download = wf.add("download", {"url": url})
        thumbs = wf.group(*(Step("thumbnail", {"size": s}) for s in (64, 256)), callback="publish", after=[download])
        wf.chain("notify", "archive", after=[thumbs.callback])
        created = await wf.submit()            # POST /workflows: all of its jobs, or none
        view = await jobq.get_workflow(created["id"])
        print(view["done"], view["failed"], view["total"])

A step is a :class:`Step`, a ``(type, payload)`` pair, or a bare job type. With the blocking
client, build the same way and send with ``jobq.create_workflow(wf)``.

Like the rest of ``jobq.sdk``, this module imports nothing of the server.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from jobq.job import new_job_id

if TYPE_CHECKING:
    from jobq.sdk.client import JobqClient

ParentFailure = Literal["cancel", "run"]
"""What a child does when a parent fails, dies or is cancelled: be cancelled too (the default), or run anyway."""


@dataclass(frozen=True, slots=True)
class Step:
    """One job of a workflow, before it is placed: its type, payload and own options (None: the server's default)."""

    type: str
    payload: Any = None
    id: str | None = None  # chosen by the builder when None
    queue: str | None = None
    priority: int | None = None
    max_attempts: int | None = None
    timeout: float | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None


StepLike = Step | tuple[str, Any] | str
"""A :class:`Step`, a ``(type, payload)`` pair, or a bare job type (payload ``{}``)."""


@dataclass(frozen=True, slots=True)
class Group:
    """The ids a group placed: its members, and its callback."""

    members: list[str]
    callback: str


class WorkflowJob(TypedDict):
    """One job as a workflow's answers show it."""

    id: str
    type: str
    queue: str
    status: str
    depends_on: list[str]
    error: str | None


class WorkflowCreated(TypedDict):
    """``POST /workflows``: the workflow's id, how many jobs this request created (0: sent before), each job."""

    id: str
    created: int
    jobs: list[WorkflowJob]


class WorkflowView(TypedDict):
    """``GET /workflows/{id}``: progress (done; failed: failed, dead or cancelled; total) and its jobs, oldest first."""

    id: str
    total: int
    counts: dict[str, int]
    done: int
    failed: int
    finished: bool
    jobs: list[WorkflowJob]


def as_step(step: StepLike) -> Step:
    if isinstance(step, Step):
        return step
    if isinstance(step, str):
        return Step(step)
    job_type, payload = step
    return Step(job_type, payload)


def id_list(ids: Iterable[str]) -> list[str]:
    """Job ids as a list; one id given as a plain string is one id, not its letters."""
    return [ids] if isinstance(ids, str) else list(ids)


def job_body(
    step: Step, job_id: str, depends_on: Sequence[str], on_parent_failure: ParentFailure | None
) -> dict[str, Any]:
    """A job as ``POST /workflows`` (and ``POST /enqueue``) takes it, without the fields left to the server."""
    fields = {
        "id": job_id,
        "type": step.type,
        "payload": {} if step.payload is None else step.payload,
        "queue": step.queue,
        "priority": step.priority,
        "max_attempts": step.max_attempts,
        "timeout": step.timeout,
        "concurrency_key": step.concurrency_key,
        "concurrency_limit": step.concurrency_limit,
        "depends_on": list(dict.fromkeys(depends_on)) or None,
        "on_parent_failure": on_parent_failure if depends_on else None,
    }
    return {key: value for key, value in fields.items() if value is not None}


class Workflow:
    """A workflow being built: place jobs with ``add``, ``chain`` and ``group``, then ``submit`` them together.

    ``id`` is the workflow's (chosen here when None, so it is known before sending). Each placing
    method answers the ids it chose, to name as parents (``depends_on``, ``after``) of later jobs;
    a parent may also be a job stored before. Nothing is checked here but ids placed twice: the
    server refuses an unknown parent, a cycle or a bad field by name, and stores nothing then.
    """

    def __init__(self, client: JobqClient | None = None, id: str | None = None) -> None:
        self.client = client
        self.id = id or new_job_id()
        self.jobs: list[dict[str, Any]] = []  # the bodies POST /workflows takes, in the order placed
        self._ids: set[str] = set()

    def __len__(self) -> int:
        return len(self.jobs)

    def add(
        self,
        type: str,
        payload: Any = None,
        *,
        depends_on: Iterable[str] = (),
        on_parent_failure: ParentFailure | None = None,
        id: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        concurrency_key: str | None = None,
        concurrency_limit: int | None = None,
    ) -> str:
        """Place one job that runs after every job in ``depends_on``; returns its id."""
        step = Step(type, payload, id, queue, priority, max_attempts, timeout, concurrency_key, concurrency_limit)
        return self.add_step(step, depends_on=depends_on, on_parent_failure=on_parent_failure)

    def add_step(
        self, step: StepLike, *, depends_on: Iterable[str] = (), on_parent_failure: ParentFailure | None = None
    ) -> str:
        """Place a step (a Step, a ``(type, payload)`` pair or a type) that runs after every job in ``depends_on``;
        returns its id."""
        step = as_step(step)
        job_id = step.id or new_job_id()
        if job_id in self._ids:
            raise ValueError(f"job id {job_id!r} is in this workflow already")
        self._ids.add(job_id)
        self.jobs.append(job_body(step, job_id, id_list(depends_on), on_parent_failure))
        return job_id

    def chain(self, *steps: StepLike, after: Iterable[str] = ()) -> list[str]:
        """Place steps that run one after another (the first after every job in ``after``); returns their ids.

        A step that fails cancels the ones after it; each step reads the one before's result with
        ``(await ctx.parents())[0]["result"]``.
        """
        ids: list[str] = []
        previous = id_list(after)
        for step in steps:
            ids.append(self.add_step(step, depends_on=previous))
            previous = ids[-1:]
        return ids

    def group(self, *steps: StepLike, callback: StepLike, after: Iterable[str] = ()) -> Group:
        """Place steps that run side by side (each after every job in ``after``), and a callback after them all.

        The callback runs once every member has finished, however each ended
        (``on_parent_failure="run"``): ``await ctx.parents()`` gives it every member's status,
        result and error, in the order placed. Name ``group(...).callback`` as the parent of what
        comes next.
        """
        if not steps:
            raise ValueError("a group needs at least one member for its callback to wait for")
        parents = id_list(after)
        members = [self.add_step(step, depends_on=parents) for step in steps]
        return Group(members, self.add_step(callback, depends_on=members, on_parent_failure="run"))

    def body(self) -> dict[str, Any]:
        """The request ``POST /workflows`` takes: ``{"id", "jobs"}``."""
        return {"id": self.id, "jobs": self.jobs}

    async def submit(self) -> WorkflowCreated:
        """Create every job placed, in one request (all or none); answers the workflow's id and its jobs.

        Sending it again answers the same jobs (``created`` 0): safe after a lost answer.
        """
        if self.client is None:
            raise RuntimeError(
                "this workflow has no client: build it with client.workflow(), or send it with "
                "client.create_workflow(workflow)"
            )
        return await self.client.create_workflow(self)


def workflow_jobs(jobs: Workflow | Sequence[Mapping[str, Any]], id: str | None) -> dict[str, Any]:
    """The body of ``POST /workflows`` for a built workflow, or for job objects and an optional id."""
    if isinstance(jobs, Workflow):
        return jobs.body() if id is None else {"id": id, "jobs": jobs.jobs}
    body: dict[str, Any] = {"jobs": [dict(job) for job in jobs]}
    if id is not None:
        body["id"] = id
    return body


__all__ = ["Group", "ParentFailure", "Step", "StepLike", "Workflow", "WorkflowCreated", "WorkflowJob", "WorkflowView"]
