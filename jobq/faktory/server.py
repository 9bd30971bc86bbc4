"""The Faktory Work Protocol listener: Faktory clients in any language push to and fetch from jobq.

It runs in the server's event loop beside HTTP and gRPC and serves the same
:class:`~jobq.service.JobService`, so a job pushed here can be read over HTTP and run by
any worker, and a job enqueued over HTTP can be fetched here::

    faktory = FaktoryServer(service, tokens=tokens, metrics=metrics)
    await faktory.start(config.host, config.faktory_port)
    ...
    await service.drain()  # BEATs answer "quiet", then "terminate"; FETCH hands out nothing
    await faktory.stop()  # connections close; runs still held go back at once

With tokens, the password a client sends is a jobq token and its role applies: a client
token may PUSH, PUSHB and INFO; a worker token may also FETCH, ACK, FAIL and BEAT; an admin
token may also MUTATE, QUEUE and FLUSH. Field mapping: jobq/faktory/jobs.py; runs held per
worker process: jobq/faktory/consumers.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from jobq.auth import Principal, Role, TokenBook
from jobq.errors import JobqError
from jobq.faktory.consumers import Consumer, Consumers, WorkerState
from jobq.faktory.jobs import enqueue_request, failure_text, work_unit
from jobq.faktory.operators import Operators, check_queue_names
from jobq.faktory.protocol import (
    NULL,
    OK,
    Challenge,
    ProtocolError,
    bulk_json,
    error,
    parse_json_object,
    split_command,
)
from jobq.job import PROCESSING, Job
from jobq.models import EnqueueRequest, FailRequest, LeaseRequest, Settlement
from jobq.service import JobService

log = logging.getLogger("jobq.faktory")

HELLO_SECONDS = 2.0  # a connection that has not said HELLO by then is dropped
FETCH_WAIT = 2.0  # how long a FETCH blocks for work, as Faktory's does
STOP_SECONDS = 5.0  # how long stop() waits for connections to wind down
MAX_FETCH_CALLS = 16  # queue lists a connection's FETCH calls are kept for (some clients shuffle them)
PRODUCERS = frozenset({Role.CLIENT})
CONSUMERS = frozenset({Role.WORKER})
ANYONE = frozenset({Role.CLIENT, Role.WORKER})
ADMINS = frozenset({Role.ADMIN})


class Closing(Exception):
    """The connection ends: after END, or a reply that must be the last (a refused HELLO, an overlong line)."""


@dataclass(slots=True)
class Session:
    """One connection: who said HELLO, and the consumer it belongs to (None for a producer)."""

    reader: asyncio.StreamReader
    principal: Principal | None = None
    consumer: Consumer | None = None
    fetches: dict[tuple[str, ...], list[LeaseRequest]] = field(default_factory=dict)  # queues -> lease calls
    sending: Job | None = None  # a job leased for the FETCH whose reply is being sent


Command = Callable[[Session, str], Awaitable[bytes]]


class FaktoryServer:
    """A Faktory Work Protocol listener over a :class:`JobService`."""

    def __init__(
        self,
        service: JobService,
        *,
        tokens: TokenBook | None = None,
        observe: Callable[[str, bool], None] | None = None,
        max_line: int = 1024 * 1024,
    ) -> None:
        self.service = service
        self.tokens = tokens or None
        self.max_line = max_line
        self.consumers = Consumers()
        self.operators = Operators(service)
        self.grace = service.config.lease_seconds / 3  # how long a worker with no connection keeps its runs
        self.port = 0
        self.commands_served = 0
        self._observe = observe  # metrics: (verb, succeeded) per command
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        self._hand_backs: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._commands: dict[str, tuple[Command, frozenset[Role]]] = {
            "PUSH": (self._push, PRODUCERS),
            "PUSHB": (self._push_batch, PRODUCERS),
            "FETCH": (self._fetch, CONSUMERS),
            "ACK": (self._ack, CONSUMERS),
            "FAIL": (self._fail, CONSUMERS),
            "BEAT": (self._beat, CONSUMERS),
            "INFO": (self._info, ANYONE),
            "MUTATE": (lambda session, arguments: self.operators.mutate(arguments), ADMINS),
            "QUEUE": (lambda session, arguments: self.operators.queue(arguments), ADMINS),
            "FLUSH": (lambda session, arguments: self.operators.flush(), ADMINS),
        }

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._sessions)

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0 picks a free port); returns the bound port. OSError when it cannot bind."""
        self._server = await asyncio.start_server(self._serve, host, port, limit=self.max_line + 2)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("Faktory protocol serving on %s:%d", host, self.port)
        return self.port

    async def stop(self) -> None:
        """Stop listening and close every connection.

        Runs still held are not handed back: their workers may still finish them, and settle them
        through another jobq on the same store; if they do not, the leases lapse and the jobs run again.
        A listener that never started (its port was busy) has nothing to stop.
        """
        self._stopping = True
        if self._server is None:
            return
        self._server.close()
        for task in list(self._sessions):
            task.cancel()
        if self._sessions:
            await asyncio.wait(list(self._sessions), timeout=STOP_SECONDS)
        for consumer in self.consumers.absent():
            self.consumers.forget(consumer)
        if self._hand_backs:
            await asyncio.wait(list(self._hand_backs), timeout=STOP_SECONDS)
        await self._server.wait_closed()
        log.info("Faktory protocol listener on port %d stopped", self.port)

    # -- a connection -------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        session = Session(reader)
        try:
            await self._converse(session, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, Closing, TimeoutError):
            pass  # the client went, or the connection ended as it had to
        except asyncio.CancelledError:
            pass  # the listener is stopping
        except Exception:
            log.exception("Faktory connection failed")
        finally:
            self._sessions.discard(task)
            writer.close()
            if session.consumer is not None:
                if session.sending is not None:  # its FETCH's answer never left: the job goes back at once
                    session.consumer.runs.pop(session.sending.id, None)
                    await self._hand_back([session.sending], "undelivered")
                self._left(session.consumer)

    def _left(self, consumer: Consumer) -> None:
        """A connection of ``consumer`` closed. If it was its last, its runs go back after ``grace`` seconds
        unless it connects again meanwhile (clients close idle pooled connections, and reconnect)."""
        if not self.consumers.leave(consumer) or self._stopping:
            return
        if not consumer.runs:
            self.consumers.forget(consumer)
            return
        consumer.parting = asyncio.get_running_loop().call_later(self.grace, self._parted, consumer)

    def _parted(self, consumer: Consumer) -> None:
        """``consumer`` stayed away for the grace period: the runs it held run again."""
        runs = self.consumers.forget(consumer)
        if runs:
            task = asyncio.create_task(self._hand_back([run.job for run in runs.values()], "disconnected"))
            self._hand_backs.add(task)
            task.add_done_callback(self._hand_backs.discard)

    async def _hand_back(self, jobs: list[Job], reason: str) -> None:
        try:
            await self.service.hand_back(jobs, reason)
        except Exception:  # the store failed: the leases lapse instead, and the jobs run again then
            log.exception("handing back %d jobs of a Faktory worker failed", len(jobs))

    async def _converse(self, session: Session, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        challenge = Challenge(protected=self.tokens is not None)
        writer.write(challenge.greeting())
        async with asyncio.timeout(HELLO_SECONDS):
            line = await self._line(reader, writer)
        try:
            writer.write(self._hello(session, challenge, line))
        except Closing as refused:
            writer.write(refused.args[0])
            await writer.drain()
            raise
        while not self._stopping:
            line = await self._line(reader, writer)
            writer.write(await self._command(session, line))
            await writer.drain()
            session.sending = None

    async def _line(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        """The next command line, without its line ending; Closing (after saying why) for an overlong one."""
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            writer.write(error(f"a command line may be at most {self.max_line} bytes"))
            await writer.drain()
            raise Closing from None
        return line.rstrip(b"\r\n")

    def _hello(self, session: Session, challenge: Challenge, line: bytes) -> bytes:
        """Check the HELLO that must open a connection; Closing (after saying why) when it fails."""
        try:
            verb, arguments = split_command(line)
            if verb != "HELLO":
                raise ProtocolError(f"a connection starts with HELLO, not {verb[:32]!r}")
            hello = parse_json_object(arguments, "HELLO")
            session.principal = self._authenticate(challenge, hello)
            wid = hello.get("wid")
            if wid is not None:
                if not isinstance(wid, str) or not 0 < len(wid) <= 100:
                    raise ProtocolError("wid must be a string of 1-100 characters")
                hostname = hello.get("hostname")
                host = hostname[:90] if isinstance(hostname, str) and hostname else "faktory"
                # the worker's name in job history; with tokens, its principal's too, so two never share runs
                name = f"{host}/{wid}" if session.principal is None else f"{session.principal.name}@{host}/{wid}"
                session.consumer = self.consumers.join(name, wid)
        except (ProtocolError, ValueError) as exc:
            self._count("HELLO", False)
            raise Closing(error(str(exc))) from None
        self._count("HELLO", True)
        return OK

    def _authenticate(self, challenge: Challenge, hello: dict[str, Any]) -> Principal | None:
        if self.tokens is None:
            return None
        pwdhash = hello.get("pwdhash")
        if not isinstance(pwdhash, str):
            raise ProtocolError("jobq needs a password: a jobq token (send pwdhash)")
        rounds = challenge.iterations_for(hello)
        principal = self.tokens.proven(lambda token: challenge.matches(token, pwdhash, rounds))
        if principal is None:
            raise ProtocolError("Invalid password")
        return principal

    async def _command(self, session: Session, line: bytes) -> bytes:
        """Run one command line and return its reply (Closing for END)."""
        self.commands_served += 1
        try:
            verb, arguments = split_command(line)
        except ValueError:
            self._count("other", False)
            return error("a command line must be UTF-8 text")
        if verb == "END":
            self._count(verb, True)
            raise Closing
        entry = self._commands.get(verb)
        if entry is None:
            self._count("other", False)
            known = ", ".join(sorted({*self._commands, "END"}))
            return error(f"unknown command {verb[:32]!r}; jobq serves {known} (BATCH and TRACK are not offered)")
        run, roles = entry
        principal = session.principal
        if principal is not None and not principal.may(roles):
            self._count(verb, False)
            allowed = " or ".join(sorted({*roles, Role.ADMIN}))
            return error(f"{verb} needs a token with role {allowed}; {principal.name!r} has role {principal.role}")
        try:
            reply = await run(session, arguments)
        except ProtocolError as exc:
            self._count(verb, False)
            return error(str(exc))
        except JobqError as exc:
            self._count(verb, False)
            return error(exc.detail)
        except Exception as exc:  # a fault of jobq's: this command fails, the connection and the server go on
            log.exception("Faktory command %s failed", verb)
            self._count(verb, False)
            return error(f"{verb} failed in jobq: {type(exc).__name__}")
        self._count(verb, True)
        return reply

    def _count(self, verb: str, ok: bool) -> None:
        if self._observe is not None:
            self._observe(verb, ok)

    # -- producers ----------------------------------------------------------------
    def _submitter(self, session: Session) -> tuple[str | None, bool]:
        principal = session.principal
        return (None, True) if principal is None else (principal.name, principal.scope is None)

    async def _push(self, session: Session, arguments: str) -> bytes:
        request = enqueue_request(parse_json_object(arguments, "PUSH"))
        owner, sees_all = self._submitter(session)
        await self.service.submit_one(request, owner, sees_all=sees_all)
        return OK

    async def _push_batch(self, session: Session, arguments: str) -> bytes:
        """PUSHB [job, ...]: ``{}`` when every job was accepted, else ``{jid: why}`` for each refused one."""
        try:
            units = json.loads(arguments)
        except (ValueError, RecursionError) as exc:
            raise ProtocolError(f"PUSHB needs a JSON array of jobs: {exc}") from None
        if not isinstance(units, list):
            raise ProtocolError("PUSHB needs a JSON array of jobs")
        self.service.check_batch(len(units))
        refused: dict[str, str] = {}
        requests: list[EnqueueRequest] = []
        for index, unit in enumerate(units):
            try:
                requests.append(enqueue_request(unit))
            except ProtocolError as exc:
                jid = unit.get("jid") if isinstance(unit, dict) else None
                refused[jid if isinstance(jid, str) else f"#{index}"] = str(exc)
        owner, sees_all = self._submitter(session)
        answers = await self.service.submit(requests, owner, sees_all=sees_all) if requests else []
        for request, answer in zip(requests, answers, strict=True):
            if isinstance(answer, JobqError):
                refused[request.id or ""] = answer.detail
        return bulk_json(refused)

    # -- consumers ----------------------------------------------------------------
    def _consumer(self, session: Session, verb: str) -> Consumer:
        if session.consumer is None:
            raise ProtocolError(f"{verb} is for workers: say who you are (wid) in HELLO")
        return session.consumer

    async def _fetch(self, session: Session, arguments: str) -> bytes:
        """FETCH [queue ...]: the first job of the first queue that has one; else wait up to 2 s for any."""
        consumer = self._consumer(session, "FETCH")
        queues = tuple(arguments.split()) or ("default",)
        if self.service.draining or consumer.state is not WorkerState.RUNNING:
            await asyncio.sleep(FETCH_WAIT)  # a quiet worker would ask again at once (stop() cancels this)
            return NULL
        calls = session.fetches.get(queues)
        if calls is None:
            if len(session.fetches) >= MAX_FETCH_CALLS:
                session.fetches.clear()
            calls = session.fetches[queues] = self._fetch_calls(queues, consumer.name)
        for call in calls:
            jobs = await self.service.lease(call)
            if jobs:
                [job] = jobs
                if session.reader.at_eof():  # the worker hung up while this FETCH waited
                    await self._hand_back([job], "undelivered")
                    return NULL
                consumer.hold(job)
                session.sending = job
                return bulk_json(work_unit(job))
        return NULL

    def _fetch_calls(self, queues: tuple[str, ...], worker: str) -> list[LeaseRequest]:
        """The lease calls a FETCH makes: each queue in order without waiting, then all of them, waiting up to 2 s."""
        check_queue_names(queues)
        lease = self.service.config.lease_seconds

        def call(names: tuple[str, ...], wait: float) -> LeaseRequest:
            return LeaseRequest.model_construct(queues=list(names), max_jobs=1, wait=wait, lease=lease, worker=worker)

        # without waiting first: a lease that need not wait skips the long-poll's tasks (jobq.service)
        return [*(call((queue,), 0.0) for queue in queues), call(queues, FETCH_WAIT)]

    async def _ack(self, session: Session, arguments: str) -> bytes:
        jid = self._jid(parse_json_object(arguments, "ACK"), "ACK")
        consumer = self._consumer(session, "ACK")
        lease_id = await self._lease_of(consumer, jid)
        [answer] = await self.service.settle([Settlement.model_construct(id=jid, lease_id=lease_id, result=None)])
        consumer.runs.pop(jid, None)  # settled, or settled elsewhere meanwhile (StaleLease): no longer held
        if isinstance(answer, JobqError):
            raise answer
        return OK

    async def _fail(self, session: Session, arguments: str) -> bytes:
        """FAIL {jid, errtype, message, backtrace}: a failed attempt; jobq's retry policy decides what follows."""
        report = parse_json_object(arguments, "FAIL")
        jid = self._jid(report, "FAIL")
        consumer = self._consumer(session, "FAIL")
        lease_id = await self._lease_of(consumer, jid)
        text, traceback = failure_text(report)
        try:
            await self.service.fail(
                jid, FailRequest.model_construct(lease_id=lease_id, error=text, traceback=traceback)
            )
        finally:
            consumer.runs.pop(jid, None)
        return OK

    @staticmethod
    def _jid(hash_: dict[str, Any], verb: str) -> str:
        jid = hash_.get("jid")
        if not isinstance(jid, str) or not jid:
            raise ProtocolError(f'{verb} needs {{"jid": "..."}}')
        return jid

    async def _lease_of(self, consumer: Consumer, jid: str) -> str:
        """The lease under which ``consumer`` runs ``jid``: leased through this node, or (say, through another
        node sharing the store) as the store shows it running for this worker."""
        run = consumer.runs.get(jid)
        if run is not None:
            return run.job.lease_id or ""
        job = await self.service.store.get(jid)
        if job is not None and job.status is PROCESSING and job.worker == consumer.name:
            return job.lease_id or ""
        state = "unknown" if job is None else job.status.value
        raise ProtocolError(
            f"job {jid} is not running for this worker (it is {state}): settled already, cancelled, "
            "or run again elsewhere after its lease lapsed"
        )

    async def _beat(self, session: Session, arguments: str) -> bytes:
        """BEAT: extend this worker's leases. While jobq drains: ``quiet`` (finish your jobs, fetch no more)
        while the worker holds jobs leased here, then ``terminate`` (stop: whatever supervises the worker
        starts it again, against the next jobq)."""
        beat = parse_json_object(arguments, "BEAT")
        consumer = self._consumer(session, "BEAT")
        if beat.get("wid") != consumer.wid:
            raise ProtocolError(f"unknown worker {str(beat.get('wid'))[:100]!r}: BEAT with the wid of your HELLO")
        if beat.get("current_state") in (WorkerState.QUIET, WorkerState.TERMINATE):
            consumer.state = WorkerState(beat["current_state"])
        await self._extend(consumer)
        if self.service.draining:
            return bulk_json({"state": "quiet" if consumer.runs else "terminate"})
        return OK

    async def _extend(self, consumer: Consumer) -> None:
        """Extend the leases of the runs ``consumer`` holds, each at most to its ``reserve_for``."""
        lease = self.service.config.lease_seconds
        now = self.service.store.clock()
        by_length: dict[float, list[tuple[str, str]]] = {}
        for jid, run in consumer.runs.items():
            length = min(lease, run.held_until - now)
            if length > 0:
                by_length.setdefault(length, []).append((jid, run.job.lease_id or ""))
        for length, leases in by_length.items():
            answers = await self.service.heartbeat(leases, length)
            for (jid, _), answer in zip(leases, answers, strict=True):
                if isinstance(answer, JobqError):  # settled elsewhere, cancelled, or lapsed: no longer held
                    consumer.runs.pop(jid, None)

    async def _info(self, session: Session, arguments: str) -> bytes:
        return await self.operators.info(self.connections, self.commands_served)
