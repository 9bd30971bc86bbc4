"""Workflows over HTTP: create one (all its jobs, or none), follow it, and read a job's parents' outcomes.

jobq/workflow.py says how jobs wait for their parents.
"""

from __future__ import annotations

from aiohttp import web

from jobq.api import NO_JOB, SERVICE, json_response, owner_scope, read_body, submitter
from jobq.auth import ANY_ROLE, Role, principal_of, requires
from jobq.models import (
    EnqueueRequest,
    ParentOutcomes,
    WorkflowAccepted,
    WorkflowRequest,
    WorkflowView,
    workflow_requests,
)
from jobq.openapi import Reply, documented
from jobq.workflow import job_view, progress

routes = web.RouteTableDef()


@routes.post("/workflows")
@requires(Role.CLIENT)
@documented(
    "workflows",
    {
        202: Reply("accepted: every job is stored (none was before)", WorkflowAccepted),
        200: Reply("the same workflow was sent before: its jobs as they are now", WorkflowAccepted),
    },
    body=WorkflowRequest,
    problems={
        409: "a job id is taken by a job with another body (or another client's)",
        422: "an invalid job (each field named), an id twice, a parent that does not exist, a cycle (named), an "
        "unknown job type, or a unique_key",
        503: "the queue cannot take all the jobs (--queue-size), jobq is shutting down, or the store cannot write",
        507: "",
    },
)
async def create_workflow(request: web.Request) -> web.Response:
    """Create jobs that depend on one another, all in one write or none: a job runs once every job it
    ``depends_on`` has finished. Groups (a callback depending on many jobs, ``on_parent_failure: run``) and
    chains (each job depending on the one before) are workflows too."""
    body = await read_body(request, WorkflowRequest)
    jobs = workflow_requests(body.jobs, EnqueueRequest.__pydantic_validator__.validate_python)
    owner, sees_all = submitter(request)
    workflow_id, answers = await request.app[SERVICE].submit_workflow(body.id, jobs, owner, sees_all=sees_all)
    created = sum(1 for answer in answers if answer.created)
    view = {"id": workflow_id, "created": created, "jobs": [job_view(answer.job) for answer in answers]}
    return json_response(view, 202 if created else 200, {"Location": f"/workflows/{workflow_id}"})


@routes.get("/workflows/{id}")
@requires(Role.CLIENT)
@documented("workflows", {200: Reply("its progress and graph", WorkflowView)}, problems={404: "no such workflow"})
async def get_workflow(request: web.Request) -> web.Response:
    """How far a workflow is (jobs done, failed, in all) and its jobs with their edges (``depends_on``)."""
    workflow_id = request.match_info["id"]
    jobs = await request.app[SERVICE].workflow(workflow_id, owner_scope(request))
    return json_response({"id": workflow_id, **progress(jobs), "jobs": [job_view(job) for job in jobs]})


@routes.get("/jobs/{id}/parents")
@requires(*ANY_ROLE)
@documented("workflows", {200: Reply("its parents' outcomes", ParentOutcomes)}, problems={404: NO_JOB})
async def job_parents(request: web.Request) -> web.Response:
    """How each job this one depends on ended: its status, result and error (a chain's next job reads the
    previous one's result here, a group's callback its members' outcomes)."""
    job_id = request.match_info["id"]
    principal = principal_of(request)
    owner = None if principal is None else principal.run_scope  # a worker reads the parents of any job it runs
    parents = await request.app[SERVICE].parents(job_id, owner)
    return json_response({"id": job_id, "parents": parents})
