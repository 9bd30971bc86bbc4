"""The jobq.v1 services: each RPC validates like its HTTP route, calls one JobService verb, and answers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from typing_extensions import override

from jobq.auth import current_principal
from jobq.errors import JobqError, NoLimits
from jobq.job import TERMINAL, Job, JobStatus
from jobq.models import (
    BulkRequest,
    CompleteRequest,
    EnqueueRequest,
    FailRequest,
    HeartbeatRequest,
    LeaseRequest,
    ListQuery,
    LogRequest,
    NewSchedule,
    ProgressRequest,
    QueueFlowBody,
    ReleaseRequest,
    ScheduleDefinition,
    SettleRequest,
    WorkflowRequest,
    workflow_requests,
)
from jobq.rpc import convert
from jobq.rpc.gen import jobq_pb2 as pb
from jobq.rpc.gen import jobq_pb2_grpc as pb_grpc
from jobq.rpc.status import status_code, stream, unary
from jobq.schedules import Schedule
from jobq.service import JobService

Context = grpc.aio.ServicerContext

DEADLINE_MARGIN_SECONDS = 0.2  # a long-poll answers this long before the call's deadline, so the answer arrives
WATCH_POLL_SECONDS = 30.0  # WatchJob re-checks the job (and the deadline) at least this often
LOG_WATCH_SECONDS = 24 * 3600.0  # how long WatchJobLogs follows a job when the call sets no deadline


def owner_scope() -> str | None:
    """Whose jobs the caller may see: its own name for a client token, None (all) for an admin or without tokens."""
    principal = current_principal.get()
    return principal.scope if principal is not None else None


def submitter() -> tuple[str | None, bool]:
    """Who owns the jobs the caller submits (its token's name), and whether it may see every job."""
    principal = current_principal.get()
    return (None, True) if principal is None else (principal.name, principal.scope is None)


def enqueue_request(message: pb.EnqueueRequest) -> EnqueueRequest:
    """The enqueue request an Enqueue (or a CreateWorkflow's job) message asks for."""
    return EnqueueRequest.model_validate(convert.enqueue_fields(message))


def capped_wait(wait: float, remaining: float | None) -> float:
    """A long-poll's wait, cut short to end ``DEADLINE_MARGIN_SECONDS`` before the call's deadline."""
    if remaining is None:
        return wait
    return max(0.0, min(wait, remaining - DEADLINE_MARGIN_SECONDS))


class JobServicer(pb_grpc.JobServiceServicer):
    """jobq.v1.JobService: what POST /enqueue, GET /status/{id}, POST /jobs/{id}/cancel, GET /jobs and the
    workflow routes (POST /workflows, GET /workflows/{id}, GET /jobs/{id}/parents) do."""

    def __init__(self, service: JobService) -> None:
        self.service = service

    @override
    @unary
    async def Enqueue(self, request: pb.EnqueueRequest, context: Context) -> pb.EnqueueResponse:
        job_request = enqueue_request(request)
        owner, sees_all = submitter()
        [answer] = await self.service.submit([job_request], owner, sees_all=sees_all)
        if isinstance(answer, JobqError):
            raise answer
        return pb.EnqueueResponse(
            job=convert.job_message(answer.job), created=answer.created, duplicate=answer.duplicate
        )

    @override
    @unary
    async def GetJob(self, request: pb.GetJobRequest, context: Context) -> pb.Job:
        owner = owner_scope()
        job = await self.service.get(request.id, owner)
        view = await self.service.record(job, owner)  # GET /status's extras: held, children
        return convert.job_message(job, view.get("held"), view.get("children", ()))

    @override
    @unary
    async def CancelJob(self, request: pb.CancelJobRequest, context: Context) -> pb.Job:
        return convert.job_message(await self.service.cancel(request.id, owner_scope()))

    @override
    @unary
    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        query = ListQuery.model_validate(convert.list_fields(request))
        jobs, next_cursor = await self.service.list_jobs(query, owner_scope())
        return pb.ListJobsResponse(jobs=[convert.job_message(job) for job in jobs], next_cursor=next_cursor)

    @override
    @stream
    async def WatchJob(self, request: pb.WatchJobRequest, context: Context) -> AsyncIterator[pb.Job]:
        owner = owner_scope()
        job = await self.service.get(request.id, owner)
        last = job.status
        yield convert.job_message(job)
        while last not in TERMINAL:
            job = await self._next_change(request.id, last, context, owner)
            if job.status is not last:
                last = job.status
                yield convert.job_message(job)

    async def _next_change(self, job_id: str, last: JobStatus, context: Context, owner: str | None) -> Job:
        """The job once its status is no longer ``last``, or as it is when this wait runs out.

        A drain does not end the wait: accepted jobs go on to finish during it, and the watch
        streams them to the end. Only the server's stop (its grace period) cuts a watch short.
        """
        timeout = await self._watch_timeout(context)
        return await self.service.wait_for_change(job_id, timeout, owner, seen=last, through_drain=True)

    @override
    @unary
    async def GetJobLogs(self, request: pb.GetJobLogsRequest, context: Context) -> pb.JobLogs:
        lines = await self.service.logs(request.id, owner_scope())
        return pb.JobLogs(id=request.id, lines=[convert.log_line(line) for line in lines])

    @override
    @stream
    async def WatchJobLogs(self, request: pb.WatchJobLogsRequest, context: Context) -> AsyncIterator[pb.LogLine]:
        remaining = context.time_remaining()
        timeout = LOG_WATCH_SECONDS if remaining is None else max(remaining - DEADLINE_MARGIN_SECONDS, 0.0)
        async for line in self.service.follow_logs(request.id, timeout, owner_scope()):
            yield convert.log_line(line)

    @override
    @unary
    async def CreateWorkflow(self, request: pb.CreateWorkflowRequest, context: Context) -> pb.CreateWorkflowResponse:
        body = WorkflowRequest.model_validate(convert.workflow_fields(request))
        owner, sees_all = submitter()
        jobs = workflow_requests(body.jobs, enqueue_request)
        workflow_id, answers = await self.service.submit_workflow(body.id, jobs, owner, sees_all=sees_all)
        return pb.CreateWorkflowResponse(
            id=workflow_id,
            created=sum(1 for answer in answers if answer.created),
            jobs=[convert.workflow_job(answer.job) for answer in answers],
        )

    @override
    @unary
    async def GetWorkflow(self, request: pb.GetWorkflowRequest, context: Context) -> pb.Workflow:
        return convert.workflow_message(request.id, await self.service.workflow(request.id, owner_scope()))

    @override
    @unary
    async def GetParents(self, request: pb.GetParentsRequest, context: Context) -> pb.JobParents:
        principal = current_principal.get()
        owner = None if principal is None else principal.run_scope  # a worker reads the parents of any job it runs
        parents = await self.service.parents(request.id, owner)
        return pb.JobParents(id=request.id, parents=[convert.parent_message(parent) for parent in parents])

    @staticmethod
    async def _watch_timeout(context: Context) -> float:
        """How long the next wait for a change may last; ends the call once its deadline has passed."""
        remaining = context.time_remaining()
        if remaining is None:
            return WATCH_POLL_SECONDS
        if remaining <= 0:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before the job finished")
        return min(remaining, WATCH_POLL_SECONDS)


class WorkerServicer(pb_grpc.WorkerServiceServicer):
    """jobq.v1.WorkerService: the HTTP worker protocol (lease, heartbeat, complete, fail, release)."""

    def __init__(self, service: JobService) -> None:
        self.service = service
        self.store = service.store

    @override
    @unary
    async def Lease(self, request: pb.LeaseRequest, context: Context) -> pb.LeaseResponse:
        body = LeaseRequest.model_validate(convert.lease_fields(request))
        body = body.model_copy(update={"wait": capped_wait(body.wait, context.time_remaining())})
        jobs = await self.service.lease(body)
        return pb.LeaseResponse(jobs=[convert.leased_message(job) for job in jobs])

    @override
    @unary
    async def Heartbeat(self, request: pb.HeartbeatRequest, context: Context) -> pb.LeasedJob:
        body = HeartbeatRequest.model_validate({"lease_id": request.lease_id, **convert.present(request, "lease")})
        [job] = await self.service.heartbeat([(request.id, body.lease_id)], body.lease)
        if isinstance(job, JobqError):
            raise job
        return convert.leased_message(job)

    @override
    @unary
    async def Complete(self, request: pb.CompleteRequest, context: Context) -> pb.Job:
        body = CompleteRequest.model_validate(convert.complete_fields(request))
        return convert.job_message(await self.store.complete(request.id, body.lease_id, body.result))

    @override
    @unary
    async def Fail(self, request: pb.FailRequest, context: Context) -> pb.Job:
        body = FailRequest.model_validate(convert.fail_fields(request))
        return convert.job_message(await self.service.fail(request.id, body))

    @override
    @unary
    async def Settle(self, request: pb.SettleRequest, context: Context) -> pb.SettleResponse:
        body = SettleRequest.model_validate({"jobs": [convert.settlement_fields(item) for item in request.jobs]})
        results = []
        for item, answer in zip(body.jobs, await self.service.settle(body.jobs), strict=True):
            if isinstance(answer, JobqError):
                code = status_code(answer).value[0]
                results.append(pb.SettleResult(id=item.id, code=code, message=answer.detail))
            else:
                results.append(pb.SettleResult(id=item.id, status=convert.STATUS_TO_PB[answer.status]))
        return pb.SettleResponse(results=results)

    @override
    @unary
    async def Release(self, request: pb.ReleaseRequest, context: Context) -> pb.Job:
        body = ReleaseRequest.model_validate({"lease_id": request.lease_id})
        return convert.job_message(await self.store.release(request.id, body.lease_id))

    @override
    @unary
    async def Log(self, request: pb.LogRequest, context: Context) -> pb.Ack:
        body = LogRequest.model_validate({"lease_id": request.lease_id, "message": request.message})
        await self.service.append_log(request.id, body.lease_id, body.message)
        return pb.Ack()

    @override
    @unary
    async def Progress(self, request: pb.ProgressRequest, context: Context) -> pb.Ack:
        fields = {"lease_id": request.lease_id, "fraction": request.fraction, **convert.present(request, "note")}
        body = ProgressRequest.model_validate(fields)
        await self.service.set_progress(request.id, body.lease_id, body.fraction, body.note)
        return pb.Ack()


class AdminServicer(pb_grpc.AdminServiceServicer):
    """jobq.v1.AdminService: what an admin token may do over HTTP to jobs and queues (and any token may
    read a queue's limits, as over HTTP: see jobq.rpc.auth)."""

    def __init__(self, service: JobService) -> None:
        self.service = service

    @override
    @unary
    async def RetryJob(self, request: pb.RetryJobRequest, context: Context) -> pb.Job:
        return convert.job_message(await self.service.retry(request.id))

    @override
    @unary
    async def DeleteJob(self, request: pb.DeleteJobRequest, context: Context) -> pb.Job:
        return convert.job_message(await self.service.delete(request.id))

    @override
    @unary
    async def RetryJobs(self, request: pb.BulkRequest, context: Context) -> pb.BulkResponse:
        return await self._bulk("retry", request)

    @override
    @unary
    async def DeleteJobs(self, request: pb.BulkRequest, context: Context) -> pb.BulkResponse:
        return await self._bulk("delete", request)

    async def _bulk(self, action: str, request: pb.BulkRequest) -> pb.BulkResponse:
        result = await self.service.bulk(action, BulkRequest.model_validate(convert.bulk_fields(request)))
        return pb.BulkResponse(done=result.done, skipped=result.skipped, more=result.more, cursor=result.cursor)

    @override
    @unary
    async def ListQueues(self, request: pb.ListQueuesRequest, context: Context) -> pb.ListQueuesResponse:
        return pb.ListQueuesResponse(queues=[convert.queue_message(queue) for queue in await self.service.queues()])

    @override
    @unary
    async def PeekQueue(self, request: pb.QueueRequest, context: Context) -> pb.PeekQueueResponse:
        job = await self.service.peek(convert.queue_name(request))
        return pb.PeekQueueResponse() if job is None else pb.PeekQueueResponse(job=convert.job_message(job))

    @override
    @unary
    async def PauseQueue(self, request: pb.QueueRequest, context: Context) -> pb.Queue:
        return await self._paused(request, True)

    @override
    @unary
    async def ResumeQueue(self, request: pb.QueueRequest, context: Context) -> pb.Queue:
        return await self._paused(request, False)

    async def _paused(self, request: pb.QueueRequest, paused: bool) -> pb.Queue:
        name = convert.queue_name(request)
        await self.service.set_paused(name, paused)
        queue = next((q for q in await self.service.queues() if q["name"] == name), None)
        if queue is None:  # an empty queue resumed: nothing holds it any more
            queue = {"name": name, "paused": False, "jobs": {}, "oldest_wait_seconds": 0.0}
        return convert.queue_message(queue)

    @override
    @unary
    async def ClearQueue(self, request: pb.QueueRequest, context: Context) -> pb.ClearQueueResponse:
        name = convert.queue_name(request)
        return pb.ClearQueueResponse(name=name, cleared=await self.service.clear(name))

    # -- flow control ------------------------------------------------------------
    @override
    @unary
    async def GetQueueFlow(self, request: pb.QueueRequest, context: Context) -> pb.QueueFlow:
        name = convert.queue_name(request)
        view = (await self.service.flows(owner_scope())).get(name)
        if view is None:
            raise NoLimits(name)
        return convert.flow_message(name, view)

    @override
    @unary
    async def SetQueueFlow(self, request: pb.SetQueueFlowRequest, context: Context) -> pb.QueueFlow:
        name = convert.queue_name(request)
        flow = QueueFlowBody.model_validate(convert.flow_fields(request)).to_flow()
        view = await self.service.set_flow(name, flow)
        return convert.flow_message(name, flow.to_dict() if view is None else view)

    @override
    @unary
    async def RemoveQueueFlow(self, request: pb.QueueRequest, context: Context) -> pb.Ack:
        await self.service.set_flow(convert.queue_name(request), None)
        return pb.Ack()

    # -- schedules -------------------------------------------------------------
    def _schedule(self, schedule: Schedule) -> pb.Schedule:
        return convert.schedule_message(schedule, self.service.store.clock())

    @override
    @unary
    async def ListSchedules(self, request: pb.ListSchedulesRequest, context: Context) -> pb.ListSchedulesResponse:
        return pb.ListSchedulesResponse(schedules=[self._schedule(s) for s in await self.service.schedules.all()])

    @override
    @unary
    async def GetSchedule(self, request: pb.ScheduleRequest, context: Context) -> pb.Schedule:
        return self._schedule(await self.service.schedules.get(request.name))

    @override
    @unary
    async def CreateSchedule(self, request: pb.PutScheduleRequest, context: Context) -> pb.Schedule:
        new = NewSchedule.model_validate({"name": request.name, **convert.schedule_fields(request.definition)})
        return self._schedule(await self.service.schedules.create(new))

    @override
    @unary
    async def PutSchedule(self, request: pb.PutScheduleRequest, context: Context) -> pb.Schedule:
        definition = ScheduleDefinition.model_validate(convert.schedule_fields(request.definition))
        return self._schedule(await self.service.schedules.put(request.name, definition))

    @override
    @unary
    async def PauseSchedule(self, request: pb.ScheduleRequest, context: Context) -> pb.Schedule:
        return self._schedule(await self.service.schedules.set_paused(request.name, True))

    @override
    @unary
    async def ResumeSchedule(self, request: pb.ScheduleRequest, context: Context) -> pb.Schedule:
        return self._schedule(await self.service.schedules.set_paused(request.name, False))

    @override
    @unary
    async def RunSchedule(self, request: pb.ScheduleRequest, context: Context) -> pb.EnqueueResponse:
        added = await self.service.schedules.run_now(request.name)
        return pb.EnqueueResponse(job=convert.job_message(added.job), created=added.created)

    @override
    @unary
    async def DeleteSchedule(self, request: pb.ScheduleRequest, context: Context) -> pb.Ack:
        await self.service.schedules.delete(request.name)
        return pb.Ack()
