"""The Faktory commands that read and steer the queue as a whole: INFO, MUTATE, QUEUE and FLUSH.

They act on many jobs at once through the store's verbs, a page of jobs at a time, and let the
event loop serve others between pages (a store in this process's memory never waits).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from jobq import __version__
from jobq.errors import InvalidTransition, JobNotFound
from jobq.faktory.jobs import work_unit
from jobq.faktory.protocol import OK, ProtocolError, bulk_json, dumps, parse_json_object
from jobq.job import DEAD, FAILED, PROCESSING, RERUNNABLE, RETRYING, SCHEDULED, Job, JobStatus, rfc3339
from jobq.models import NAME_PATTERN
from jobq.service import JobService

log = logging.getLogger("jobq.faktory")

QUEUE_NAME = re.compile(NAME_PATTERN)
PAGE = 500
MUTATE_TARGETS = {  # Faktory's sets, as jobq states: dead holds every job given up after failing
    "scheduled": (SCHEDULED,),
    "retries": (RETRYING,),
    "dead": (DEAD, FAILED),
}
KILLED = "killed by hand (MUTATE kill)"


def check_queue_names(names: Sequence[str]) -> None:
    """ProtocolError naming the first of ``names`` that is not a queue name."""
    for name in names:
        if not QUEUE_NAME.fullmatch(name):
            raise ProtocolError(f"{name[:130]!r} is not a queue name: 1-128 letters, digits or _ . : -")


@dataclass(frozen=True, slots=True)
class Filter:
    """A MUTATE filter: job ids, a job type, and a glob over the job's Faktory JSON (Redis's MATCH syntax)."""

    jids: tuple[str, ...] = ()
    jobtype: str | None = None
    pattern: str | None = None

    @classmethod
    def parse(cls, raw: Any) -> Filter:
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise ProtocolError("MUTATE filter must be an object with jids, jobtype or regexp")
        jids = raw.get("jids") or []
        if not isinstance(jids, list) or not all(isinstance(jid, str) for jid in jids):
            raise ProtocolError("MUTATE filter jids must be a list of strings")
        jobtype = raw.get("jobtype") or None
        pattern = raw.get("regexp") or None
        if jobtype is not None and not isinstance(jobtype, str):
            raise ProtocolError("MUTATE filter jobtype must be a string")
        if pattern is not None and not isinstance(pattern, str):
            raise ProtocolError("MUTATE filter regexp must be a string (a glob, as Redis's MATCH)")
        return cls(tuple(jids), jobtype, None if pattern == "*" else pattern)

    def accepts(self, job: Job) -> bool:
        if self.jobtype is not None and job.type != self.jobtype:
            return False
        return self.pattern is None or fnmatch.fnmatchcase(dumps(work_unit(job)).decode(), self.pattern)


class Operators:
    """INFO, MUTATE, QUEUE and FLUSH over a :class:`JobService`."""

    def __init__(self, service: JobService) -> None:
        self.service = service

    async def info(self, connections: int, commands: int) -> bytes:
        """INFO: the server's state in the shape Faktory clients read."""
        service = self.service
        stats = await service.store.stats()
        by_status = stats.by_status
        queues = {name: counts.get("pending", 0) for name, counts in sorted(stats.by_queue.items())}
        given_up = by_status.get("dead", 0) + by_status.get("failed", 0)
        now = service.store.clock()
        return bulk_json(
            {
                "now": rfc3339(now),
                "server_utc_time": time.strftime("%H:%M:%S UTC", time.gmtime(now)),
                "faktory": {
                    "queues": queues,
                    "sets": {
                        "scheduled": by_status.get("scheduled", 0),
                        "retries": by_status.get("retrying", 0),
                        "dead": given_up,
                        "working": by_status.get("processing", 0),
                    },
                    "tasks": {},
                    "total_failures": given_up,
                    "total_processed": by_status.get("completed", 0),
                    "total_enqueued": sum(queues.values()),
                    "total_queues": len(queues),
                },
                "server": {
                    "description": "jobq",
                    "faktory_version": __version__,
                    "uptime": int(time.time() - service.started_at),
                    "connections": connections,
                    "command_count": commands,
                    "used_memory_mb": 0,
                },
            }
        )

    async def mutate(self, arguments: str) -> bytes:
        """MUTATE {cmd, target, filter}: clear, discard, kill or requeue jobs of the scheduled, retries or dead set."""
        operation = parse_json_object(arguments, "MUTATE")
        command, target = operation.get("cmd"), operation.get("target")
        if command not in ("clear", "discard", "kill", "requeue"):
            raise ProtocolError("MUTATE cmd must be clear, discard, kill or requeue")
        if target not in MUTATE_TARGETS:
            raise ProtocolError("MUTATE target must be scheduled, retries or dead")
        matches = Filter.parse(operation.get("filter") if command != "clear" else None)
        done = 0
        async for job in self._matching(MUTATE_TARGETS[target], matches):
            with contextlib.suppress(JobNotFound, InvalidTransition):  # changed meanwhile: no longer in the set
                done += await self._mutate_one(command, job)
        log.info("MUTATE %s %s: %d jobs", command, target, done)
        return OK

    async def _mutate_one(self, command: str, job: Job) -> bool:
        """Apply one MUTATE command to one job; whether it changed it."""
        service = self.service
        if command in ("clear", "discard"):
            await service.store.delete(job.id)
        elif command == "kill":
            if job.status in RERUNNABLE:
                return False  # dead already
            await service.give_up(job.id, KILLED)
        elif job.status in RERUNNABLE:
            await service.retry(job.id)
        else:
            await service.run_now(job.id)
        return True

    async def _matching(self, statuses: tuple[JobStatus, ...], matches: Filter) -> AsyncIterator[Job]:
        """Every job in one of ``statuses`` that ``matches`` accepts (by id first, when it names ids)."""
        store = self.service.store
        if matches.jids:
            for jid in matches.jids:
                job = await store.get(jid)
                if job is not None and job.status in statuses:
                    yield job
            return
        for status in statuses:
            cursor: str | None = None
            while True:
                page, cursor = await store.list_jobs(status=status, job_type=matches.jobtype, limit=PAGE, cursor=cursor)
                for job in page:
                    if matches.accepts(job):
                        yield job
                if cursor is None:
                    break
                await asyncio.sleep(0)  # a page at a time: other connections and requests are served between

    async def queue(self, arguments: str) -> bytes:
        """QUEUE PAUSE|RESUME|REMOVE name ... (or *), and QUEUE LATENCY name ..."""
        subcommand, *names = arguments.split() or [""]
        subcommand = subcommand.upper()
        if subcommand not in ("PAUSE", "RESUME", "REMOVE", "LATENCY"):
            raise ProtocolError(f"no such QUEUE subcommand {subcommand[:32]!r}: PAUSE, RESUME, REMOVE or LATENCY")
        if not names:
            raise ProtocolError(f"QUEUE {subcommand} needs queue names (or *)")
        known = await self.service.queues()
        if names == ["*"]:
            if subcommand == "LATENCY":
                raise ProtocolError("QUEUE LATENCY needs queue names, not *")
            names = [queue["name"] for queue in known]
        check_queue_names(names)
        if subcommand == "LATENCY":
            waits = {queue["name"]: queue["oldest_wait_seconds"] for queue in known}
            return bulk_json({name: waits.get(name, 0.0) for name in names})
        for name in names:
            if subcommand == "REMOVE":
                await self.service.clear(name)
            else:
                await self.service.set_paused(name, subcommand == "PAUSE")
        return OK

    async def flush(self) -> bytes:
        """FLUSH: delete every job that is not running."""
        deleted = 0
        for status in JobStatus:
            if status is PROCESSING:
                continue
            async for job in self._matching((status,), Filter()):
                with contextlib.suppress(JobNotFound, InvalidTransition):
                    await self.service.store.delete(job.id)
                    deleted += 1
        log.warning("FLUSH: %d jobs deleted", deleted)
        return OK
