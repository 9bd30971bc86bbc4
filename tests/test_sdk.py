"""The SDK on its own: it imports nothing of the server, and it rides out network trouble.

Settling sends a batch again when it did not get through (a reset, a refused
connection, a lost answer), and the remote worker waits out a server it cannot
reach, logging once per try, until ``--give-up-after`` makes it exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from jobq.errors import JobqError, StaleLease, Unauthorized, Unreachable, ValidationFailed
from jobq.handlers import JobContext, Registry
from jobq.job import Job
from jobq.retry import RetryPolicy
from jobq.sdk.client import BatchedSource, JobqClient
from jobq.sdk.remote_worker import EXIT_GAVE_UP, EXIT_REFUSED, PatientSource, build_parser, run
from jobq.workers import WorkerPool
from tests.conftest import MakeClient, wait_for_status
from tests.procs import ROOT, ServerProcess, WorkerProcess, free_port

QUICK = RetryPolicy(base=0.01, cap=0.05)  # settle resends, test-sized

SERVER_MODULES = (
    "aiohttp.web",
    "jobq.models",
    "jobq.api",
    "jobq.app",
    "jobq.service",
    "jobq.store",
    "jobq.auth",
    "jobq.logs",
    "jobq.problems",
    "jobq.rpc",
    "grpc",
    "google.protobuf",
    "pydantic",  # the request models' library (pydantic_core alone serializes values: allowed)
    "prometheus_client",
)


# -- the SDK stands alone ----------------------------------------------------
def test_the_sdk_imports_nothing_of_the_server() -> None:
    """``import aiohttp`` does not import ``aiohttp.web`` (checked first), so the SDK must not either."""
    probe = (
        "import json, sys\n"
        "import aiohttp\n"
        "after_aiohttp = sorted(sys.modules)\n"
        "import jobq.sdk.client, jobq.sdk.remote_worker\n"
        "print(json.dumps([after_aiohttp, sorted(sys.modules)]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    after_aiohttp, after_sdk = json.loads(done.stdout)

    def server_modules(names: list[str]) -> list[str]:
        return [name for name in names if any(name == m or name.startswith(m + ".") for m in SERVER_MODULES)]

    assert server_modules(after_aiohttp) == []  # else the check below would blame the SDK for aiohttp
    assert server_modules(after_sdk) == []
    assert "jobq.workers" in after_sdk  # it did import what it runs


# -- an HTTP proxy that loses requests and answers ---------------------------
class Proxy:
    """Forwards every request to ``upstream``, unless ``rule(request)`` says otherwise.

    ``"reset"`` drops the connection before forwarding (the request never arrives);
    ``"lose"`` forwards it, then drops the connection instead of answering (it landed,
    the answer is lost). ``seen`` counts (path, action) pairs.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.rule: Callable[[web.Request], str] = lambda request: "forward"
        self.seen: Counter[tuple[str, str]] = Counter()
        self.session: aiohttp.ClientSession | None = None
        self.url = ""  # where to send requests through the proxy, once it listens

    async def handle(self, request: web.Request) -> web.StreamResponse:
        action = self.rule(request)
        self.seen[(request.path, action)] += 1
        if action == "reset":
            return _hang_up(request)
        assert self.session is not None
        headers = {k: v for k, v in request.headers.items() if k in ("Content-Type", "Authorization")}
        async with self.session.request(
            request.method, self.upstream + request.path_qs, data=await request.read(), headers=headers
        ) as answer:
            body = await answer.read()
        if action == "lose":
            return _hang_up(request)
        return web.Response(status=answer.status, body=body, content_type=answer.content_type)


def _hang_up(request: web.Request) -> web.Response:
    assert request.transport is not None
    request.transport.close()
    return web.Response(status=599)  # never delivered


@pytest.fixture
async def proxied(aiohttp_server: Any, make_client: MakeClient) -> AsyncIterator[tuple[TestClient, Proxy]]:
    """A real jobq app without in-process workers, and a proxy in front of it."""
    client = await make_client(workers=0)
    proxy = Proxy(str(client.make_url("")))
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as session:
        proxy.session = session
        proxy.url = str(server.make_url(""))
        yield client, proxy


@contextlib.asynccontextmanager
async def running(pool: WorkerPool, source: BatchedSource) -> AsyncIterator[None]:
    """Run ``pool`` on ``source``; drained and closed afterwards, whatever happened."""
    pool.start()
    try:
        yield
    finally:
        await pool.drain(5, run_waiting=False)
        await source.close(timeout=5)


def settle_rule(actions: list[str]) -> Callable[[web.Request], str]:
    """The first settle requests get ``actions`` in turn; later ones, and everything else, are forwarded."""
    queue = list(actions)

    def rule(request: web.Request) -> str:
        if request.path == "/workers/settle" and queue:
            return queue.pop(0)
        return "forward"

    return rule


# -- settling through network trouble ----------------------------------------
async def test_a_settle_whose_answer_was_lost_is_sent_again_and_the_job_completes_once(
    registry: Registry, proxied: tuple[TestClient, Proxy]
) -> None:
    client, proxy = proxied
    runs: list[str] = []

    async def once(ctx: JobContext) -> str:
        runs.append(ctx.job.id)
        return "done"

    registry.register("once")(once)
    proxy.rule = settle_rule(["lose", "reset", "reset"])  # lands unanswered, then two resends never arrive
    async with JobqClient(proxy.url) as jobq:
        source = BatchedSource(jobq, give_up_after=10, backoff=QUICK)
        pool = WorkerPool(source, registry, concurrency=1, lease_seconds=10, idle_wait=0.2)
        async with running(pool, source):
            job_id = (await jobq.enqueue("once")).id
            job = await wait_for_status(client, job_id, "completed", "failed", "dead")
    assert job["status"] == "completed" and job["result"] == "done"
    assert job["attempts"] == 1 and [entry["outcome"] for entry in job["history"]] == ["completed"]
    assert runs == [job_id]
    assert pool.settled == 1  # the resend was answered 200 (a repeated complete), not StaleLease
    settles = {action: n for (path, action), n in proxy.seen.items() if path == "/workers/settle"}
    assert settles == {"lose": 1, "reset": 2, "forward": 1}  # the server got the completion twice


async def test_a_lost_fail_is_recorded_once(proxied: tuple[TestClient, Proxy]) -> None:
    client, proxy = proxied
    proxy.rule = settle_rule(["lose"])
    async with JobqClient(proxy.url) as jobq:
        await jobq.enqueue("echo", max_attempts=1)
        (job,) = await jobq.lease(1, 30)
        # The first fail landed but its answer was lost; the one sent again is answered 409,
        # so the caller hears StaleLease, though its fail is recorded.
        with pytest.raises(StaleLease):
            await BatchedSource(jobq, backoff=QUICK).fail(job.id, job.lease_id or "", "boom")
    failed = await wait_for_status(client, job.id, "failed")
    assert failed["attempts"] == 1 and failed["error"] == "boom"


async def test_the_lease_outlives_a_settle_outage_longer_than_itself(
    registry: Registry, proxied: tuple[TestClient, Proxy]
) -> None:
    """While its settle is sent again and again, the pool keeps heartbeating the job, so it is not lost."""
    client, proxy = proxied
    lease = 1.5  # heartbeats every 0.5 s (a second to spare on a busy machine); lapsed leases expire each second
    outage = lease + 1.5  # long enough that a lease nobody extended would have been expired
    began: list[float] = []
    beats_during_outage = 0

    def rule(request: web.Request) -> str:
        nonlocal beats_during_outage
        now = time.monotonic()
        if request.path == "/workers/settle":
            began[:] = began or [now]
            return "reset" if now - began[0] < outage else "forward"
        if request.path.endswith("/heartbeat") and began and now - began[0] < outage:
            beats_during_outage += 1
        return "forward"

    async def quick(ctx: JobContext) -> int:
        return 7

    registry.register("quick")(quick)
    proxy.rule = rule
    async with JobqClient(proxy.url) as jobq:
        source = BatchedSource(jobq, give_up_after=30, backoff=RetryPolicy(base=0.05, cap=0.2))
        pool = WorkerPool(source, registry, concurrency=1, lease_seconds=lease, idle_wait=0.2)
        async with running(pool, source):
            job_id = (await jobq.enqueue("quick")).id
            # (a lapsed lease would show as a lease-expired attempt in its history)
            job = await wait_for_status(client, job_id, "completed", "failed", "dead", timeout=outage + 10)
    assert job["status"] == "completed" and job["result"] == 7
    assert [entry["outcome"] for entry in job["history"]] == ["completed"]  # never lease-expired
    assert beats_during_outage >= 3
    assert proxy.seen[("/workers/settle", "reset")] >= 3


async def test_a_settle_answered_409_after_an_outage_is_stale_lease(proxied: tuple[TestClient, Proxy]) -> None:
    client, proxy = proxied
    proxy.rule = settle_rule(["reset", "reset"])
    async with JobqClient(proxy.url) as jobq:
        await jobq.enqueue("echo")
        (job,) = await jobq.lease(1, 30)
        with pytest.raises(StaleLease):
            await BatchedSource(jobq, backoff=QUICK).complete(job.id, "not-its-lease", "x")
        assert proxy.seen[("/workers/settle", "forward")] == 1
        assert (await wait_for_status(client, job.id, "processing"))["result"] is None
        await jobq.release(job.id, job.lease_id or "")


async def test_a_settle_gives_up_after_its_deadline() -> None:
    async with JobqClient(f"http://127.0.0.1:{free_port()}") as jobq:
        source = BatchedSource(jobq, give_up_after=0.2, backoff=QUICK)
        started = time.monotonic()
        with pytest.raises(Unreachable):
            await asyncio.wait_for(source.complete("a", "l1", 1), 5)
        assert time.monotonic() - started < 2
        await source.close()


async def test_items_answered_503_are_sent_again_alone(aiohttp_server: Any) -> None:
    requests: list[list[str]] = []

    async def settle(request: web.Request) -> web.Response:
        ids = [item["id"] for item in (await request.json())["jobs"]]
        requests.append(ids)
        unavailable = {"code": 503, "problem": {"title": "Storage unavailable", "status": 503, "detail": "down"}}
        first = len(requests) == 1
        return web.json_response({"results": [unavailable if first and i == "a" else {"code": 200} for i in ids]})

    app = web.Application()
    app.router.add_post("/workers/settle", settle)
    server = await aiohttp_server(app)
    async with JobqClient(str(server.make_url(""))) as jobq:
        source = BatchedSource(jobq, backoff=QUICK)
        outcomes = await asyncio.wait_for(
            asyncio.gather(source.complete("a", "l1", 1), source.complete("b", "l2", 2)), 5
        )
    assert outcomes == [None, None]
    assert requests == [["a", "b"], ["a"]]


# -- leasing while the server is out of reach ----------------------------------
class Ceiling(random.Random):
    """Jitter that always picks the top of its range: each wait is the backoff's ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


class FakeTime:
    """A clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class FlakyLeases:
    """A job source whose ``lease`` raises the queued errors in turn, then answers no jobs."""

    def __init__(self, *errors: JobqError) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def lease(self, *args: Any, **kwargs: Any) -> list[Job]:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return []

    async def heartbeat_many(self, *args: Any) -> Job:
        raise NotImplementedError

    settle_many = release = append_log = set_progress = parents = heartbeat_many


URL = "http://jobq.example:8080"


def patient(source: FlakyLeases, fake: FakeTime, give_up_after: float, gave_up: list[bool]) -> PatientSource:
    return PatientSource(
        source,  # type: ignore[arg-type]
        URL,
        give_up_after=give_up_after,
        on_give_up=lambda: gave_up.append(True),
        backoff=RetryPolicy(base=1.0, cap=30.0, rng=Ceiling()),
        clock=fake.clock,
        sleep=fake.sleep,
    )


async def test_leasing_backs_off_logging_once_per_try_and_says_when_the_server_is_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake, gave_up = FakeTime(), []
    flaky = FlakyLeases(*(Unreachable(f"POST {URL}/workers/lease failed: refused") for _ in range(8)))
    source = patient(flaky, fake, 0, gave_up)  # 0: never give up
    with caplog.at_level(logging.INFO, logger="jobq.sdk"):
        for _ in range(9):
            assert await source.lease(4, 60, wait=30) == []
    assert fake.slept == [1, 2, 4, 8, 16, 30, 30, 30]  # doubling, capped
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"cannot reach {URL}: POST {URL}/workers/lease failed: refused; retrying in {s:.1f}s" for s in fake.slept
    ]
    back = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert back == [f"reached {URL} again after 121.0s without it"]
    assert gave_up == [] and flaky.calls == 9
    # A second outage starts again from the shortest wait.
    flaky.errors.append(Unreachable("refused again"))
    await source.lease(4, 60)
    assert fake.slept[-1] == 1


async def test_leasing_gives_up_after_give_up_after_seconds(caplog: pytest.LogCaptureFixture) -> None:
    fake, gave_up = FakeTime(), []
    flaky = FlakyLeases(*(Unreachable("refused") for _ in range(10)))
    source = patient(flaky, fake, 10, gave_up)
    with caplog.at_level(logging.INFO, logger="jobq.sdk"):
        while not source.gave_up:
            assert await source.lease(1, 60) == []
    assert fake.slept == [1, 2, 4, 3]  # the last wait ends right at the deadline
    assert gave_up == [True]
    (error,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert error == f"giving up: cannot reach {URL} for 10s (--give-up-after 10): refused"
    calls = flaky.calls
    assert await source.lease(1, 60) == []  # given up: no more tries, and a wait so a feeder does not spin
    assert flaky.calls == calls and fake.slept[-1] == 30


async def test_leasing_passes_on_errors_that_are_not_about_reaching_the_server() -> None:
    source = patient(FlakyLeases(ValidationFailed("bad lease")), FakeTime(), 10, [])
    with pytest.raises(ValidationFailed):
        await source.lease(1, 60)


async def test_leasing_stops_the_worker_at_once_when_its_token_is_refused() -> None:
    gave_up: list[bool] = []
    source = patient(FlakyLeases(Unauthorized("no token")), FakeTime(), 10, gave_up)
    assert await source.lease(1, 60) == []
    assert source.refused and source.gave_up and gave_up


async def test_the_remote_worker_exits_when_the_server_stays_out_of_reach(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    args = build_parser().parse_args(["--url", url, "--give-up-after", "0.3", "--concurrency", "2"])
    with caplog.at_level(logging.INFO, logger="jobq"):
        code = await asyncio.wait_for(run(args), 10)
    assert code == EXIT_GAVE_UP != 0
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert any(level == logging.WARNING and m.startswith(f"cannot reach {url}: ") for level, m in messages)
    assert any(level == logging.ERROR and m.startswith(f"giving up: cannot reach {url} for ") for level, m in messages)
    assert not [m for _, m in messages if "leasing jobs failed" in m]  # the pool's feeder saw no error


def test_the_worker_command_exits_non_zero_with_the_reason(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    worker = WorkerProcess(tmp_path / "worker.log", url, "--give-up-after", "0.5")
    try:
        assert worker.wait(timeout=30) == EXIT_GAVE_UP
    finally:
        worker.stop()
    log = worker.log()
    assert f"giving up: cannot reach {url} for " in log
    assert f"exiting with code {EXIT_GAVE_UP}: no jobq server at {url}" in log


def test_give_up_after_comes_from_the_flag_or_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert build_parser().parse_args([]).give_up_after == 300
    monkeypatch.setenv("JOBQ_GIVE_UP_AFTER", "0")  # never
    assert build_parser().parse_args([]).give_up_after == 0
    assert build_parser().parse_args(["--give-up-after", "45"]).give_up_after == 45
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--give-up-after", "-1"])
    assert "--give-up-after: must be at least 0" in capsys.readouterr().err


def test_the_worker_command_stops_at_once_when_the_server_refuses_its_token(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server.log", "--store", "memory://", env={"JOBQ_WORKER_TOKEN": "w" * 24})
    try:
        server.wait_ready()
        worker = WorkerProcess(tmp_path / "worker.log", server.url, env={"JOBQ_WORKER_TOKEN": "not-the-token-at-all"})
        try:
            assert worker.wait(timeout=30) == EXIT_REFUSED
        finally:
            worker.stop()
    finally:
        server.stop()
    log = worker.log()
    assert log.count("refuses this worker (Unauthorized)") == 1  # said once, not once a second
    assert f"exiting with code {EXIT_REFUSED}: set a worker token" in log
