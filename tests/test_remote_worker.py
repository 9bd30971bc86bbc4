"""``python -m jobq.sdk.remote_worker`` as real processes beside a real server: sharing, crashes, drains.

Also the long-polls of a real server: ``POST /enqueue?wait=`` and a thousand ``GET /status/{id}?wait=``.
"""

from __future__ import annotations

import asyncio
import resource
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import StartServer
from tests.procs import ServerProcess, WorkerProcess, wait_until

HANDLERS = ("--handlers", "tests.fixture_handlers")


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[ServerProcess | WorkerProcess]]:
    """Processes a test started; all stopped at teardown."""
    processes: list[ServerProcess | WorkerProcess] = []
    yield processes
    for process in processes:
        process.stop()


def runs(runs_file: Path) -> Counter[str]:
    return Counter(runs_file.read_text().split()) if runs_file.exists() else Counter()


def start_worker(tmp_path: Path, runs_file: Path, started: list, url: str, name: str, *args: str) -> WorkerProcess:  # type: ignore[type-arg]
    env = {"JOBQ_TEST_RUNS_FILE": str(runs_file)}
    worker = WorkerProcess(tmp_path / f"{name}.log", url, *HANDLERS, *args, env=env)
    started.append(worker)
    return worker


def start_one(server: ServerProcess, runs_file: Path, job: dict[str, Any], started_by: str) -> str:
    """Enqueue ``job`` and wait until a worker has started it (its run in the runs file); its id."""
    status, body = server.request("POST", "/enqueue", job)
    assert status == 202, body
    job_id = str(body["id"])
    wait_until(lambda: runs(runs_file)[job_id] == 1, f"{started_by} to start the job", 30)
    return job_id


def job_status(server: ServerProcess, job_id: str) -> dict:  # type: ignore[type-arg]
    status, job = server.request("GET", f"/status/{job_id}")
    assert status == 200
    return job


def test_remote_and_in_process_workers_share_the_queue(
    start_server: StartServer, tmp_path: Path, runs_file: Path, started: list
) -> None:  # type: ignore[type-arg]
    server = start_server("--store", "memory://", "--workers", "2")
    worker = start_worker(tmp_path, runs_file, started, server.url, "remote", "--concurrency", "4")
    status, body = server.request(
        "POST", "/enqueue/batch", {"jobs": [{"type": "record", "payload": {"seconds": 0.05}}] * 60}
    )
    assert status == 200 and body["accepted"] == 60
    ids = [r["id"] for r in body["results"]]
    wait_until(lambda: server.request("GET", "/stats")[1]["jobs"]["completed"] == 60, "60 completed jobs", 30)
    ran_by = Counter(job_status(server, job_id)["history"][0]["worker"] for job_id in ids)
    assert len(ran_by) == 2, f"expected the server and the remote worker to share the work: {ran_by}"
    assert sum(runs(runs_file).values()) == 60
    worker.send(signal.SIGTERM)
    assert worker.wait(10) == 0


def test_killed_remote_worker_lease_lapses_and_the_job_is_redelivered(
    start_server: StartServer,
    tmp_path: Path,
    runs_file: Path,
    started: list,  # type: ignore[type-arg]
) -> None:
    server = start_server("--store", "memory://", "--workers", "0")
    doomed = start_worker(tmp_path, runs_file, started, server.url, "doomed", "--lease", "1")
    job = {"type": "record", "payload": {"seconds": 60, "slow_runs": 1}}  # default options: one attempt
    job_id = start_one(server, runs_file, job, "the first worker")
    doomed.kill()
    start_worker(tmp_path, runs_file, started, server.url, "rescuer", "--lease", "5")
    wait_until(lambda: job_status(server, job_id)["status"] == "completed", "the job to complete elsewhere", 30)
    final = job_status(server, job_id)
    assert runs(runs_file)[job_id] == 2
    assert [a["outcome"] for a in final["history"]] == ["lease-expired", "completed"]


def test_remote_worker_drains_its_jobs_on_sigterm(
    start_server: StartServer, tmp_path: Path, runs_file: Path, started: list
) -> None:  # type: ignore[type-arg]
    server = start_server("--store", "memory://", "--workers", "0")
    worker = start_worker(tmp_path, runs_file, started, server.url, "draining", "--concurrency", "2")
    ids = [
        server.request("POST", "/enqueue", {"type": "record", "payload": {"seconds": 0.5}})[1]["id"] for _ in range(4)
    ]
    wait_until(lambda: len(runs(runs_file)) == 2, "two jobs to start", 20)
    worker.send(signal.SIGTERM)
    assert worker.wait(15) == 0
    statuses = Counter(job_status(server, job_id)["status"] for job_id in ids)
    assert statuses == {"completed": 2, "pending": 2}, statuses  # finished what it held, leased no more
    assert "SIGTERM received: finishing the 2 jobs running" in worker.log()
    assert "worker stopped" in worker.log()


def test_a_worker_hears_both_signals_while_a_handler_blocks_its_loop(
    start_server: StartServer, tmp_path: Path, runs_file: Path, started: list
) -> None:  # type: ignore[type-arg]
    server = start_server("--store", "memory://", "--workers", "0")
    worker = start_worker(tmp_path, runs_file, started, server.url, "hogged", "--concurrency", "1")
    start_one(server, runs_file, {"type": "hog", "payload": {"seconds": 60}}, "the worker (its loop then blocked)")
    worker.send(signal.SIGINT)
    wait_until(lambda: "SIGINT received" in worker.log(), "the first signal to be logged")
    sent = time.monotonic()
    worker.send(signal.SIGINT)
    assert worker.wait(10) == 1
    assert time.monotonic() - sent < 3, "the second signal stops the worker at once"
    assert "second SIGINT: exiting now" in worker.log()


def test_a_worker_exits_after_its_drain_though_a_handler_thread_still_runs(
    start_server: StartServer, tmp_path: Path, runs_file: Path, started: list
) -> None:  # type: ignore[type-arg]
    server = start_server("--store", "memory://", "--workers", "0")
    worker = start_worker(tmp_path, runs_file, started, server.url, "stuck", "--drain-timeout", "0.5")
    job_id = start_one(server, runs_file, {"type": "stuck", "payload": {"seconds": 120}}, "the stuck handler")
    sent = time.monotonic()
    worker.send(signal.SIGTERM)
    assert worker.wait(15) == 0
    assert time.monotonic() - sent < 8, "the worker exits once its drain gives up, not when the thread ends"
    log = worker.log()
    assert "worker stopped: 0 jobs finished while draining, 1 released" in log
    assert "1 plain def handlers are still running in their threads" in log
    wait_until(lambda: job_status(server, job_id)["status"] == "pending", "the released job to wait again")


def outcomes(job: dict) -> list[str | None]:  # type: ignore[type-arg]
    return [attempt["outcome"] for attempt in job["history"]]


def test_stopped_worker_late_complete_is_refused_and_the_job_completes_once(
    start_server: StartServer,
    tmp_path: Path,
    runs_file: Path,
    started: list,  # type: ignore[type-arg]
) -> None:
    server = start_server("--store", "memory://", "--workers", "0")
    held = ("--lease", "2", "--concurrency", "1", "--log-level", "debug")
    sleeper = start_worker(tmp_path, runs_file, started, server.url, "sleeper", *held)
    job_id = start_one(server, runs_file, {"type": "gated"}, "the sleeper")

    sleeper.send(signal.SIGSTOP)  # holding the lease of attempt 1, unable to heartbeat
    wait_until(lambda: outcomes(job_status(server, job_id)) == ["lease-expired"], "the lease to lapse", 30)
    rescuer = start_worker(tmp_path, runs_file, started, server.url, "rescuer", "--lease", "30")
    wait_until(lambda: runs(runs_file)[job_id] == 2, "the rescuer to start attempt 2", 30)

    # The sleeper wakes up and finishes attempt 1 while the rescuer holds attempt 2.
    sleeper.send(signal.SIGUSR1)  # pending while it is stopped: delivered with the SIGCONT
    sleeper.send(signal.SIGCONT)
    # Its late settle is refused (409 for its item), or its heartbeat finds the lease gone first and
    # stops the handler: either way it logs the lost lease and changes nothing.
    wait_until(lambda: f"job {job_id} lost its lease" in sleeper.log(), "the sleeper to log its lost lease", 30)
    running = job_status(server, job_id)
    assert running["status"] == "processing" and running["result"] is None, running  # changed nothing
    assert outcomes(running) == ["lease-expired", None]

    rescuer.send(signal.SIGUSR1)
    wait_until(lambda: job_status(server, job_id)["status"] == "completed", "the rescuer to complete the job", 30)
    done = job_status(server, job_id)
    assert done["result"] == {"ran": job_id, "run": 2}
    assert outcomes(done) == ["lease-expired", "completed"]
    assert done["history"][0]["worker"].endswith(f":{sleeper.process.pid}")
    assert done["history"][1]["worker"].endswith(f":{rescuer.process.pid}")
    assert runs(runs_file)[job_id] == 2
    sleeper.send(signal.SIGTERM)  # the refusal did not hurt it: it drains and exits as usual
    assert sleeper.wait(15) == 0, sleeper.log()


def test_enqueue_wait_answers_200_with_the_result(
    start_server: StartServer, tmp_path: Path, runs_file: Path, started: list
) -> None:  # type: ignore[type-arg]
    server = start_server("--store", "memory://", "--workers", "2")
    payload = {"to": "ada@example.com", "n": [1, 2.5, None]}
    status, body = server.request("POST", "/enqueue?wait=10", {"type": "echo", "payload": payload}, timeout=30)
    assert status == 200, body
    assert body["status"] == "completed" and body["result"] == payload
    assert outcomes(body) == ["completed"] and body["finished_at"] is not None

    status, body = server.request(
        "POST", "/enqueue?wait=10", {"type": "record", "payload": {"seconds": 0.3}}, timeout=30
    )
    assert status == 200, body
    assert body["status"] == "completed" and body["result"] == {"ran": body["id"]}
    assert runs(runs_file)[body["id"]] == 1

    # the control: a job still running when the wait ends answers 202 as it is, and runs on
    status, body = server.request("POST", "/enqueue?wait=0.5", {"type": "gated"}, timeout=30)
    assert status == 202, body
    assert body["status"] in ("pending", "processing")
    wait_until(lambda: runs(runs_file)[body["id"]] == 1, "the gated job to start", 30)
    server.send(signal.SIGUSR1)
    status, job = server.request("GET", f"/status/{body['id']}?wait=10", timeout=30)
    assert status == 200 and job["status"] == "completed", job


WAITERS = 1000
WAIT = 60  # the longest wait the server grants: a waiter nobody wakes answers only after that
WOKEN_WITHIN = 20.0  # seconds from the job's end to the last answer; about one on an idle machine


@pytest.fixture
def open_files() -> Iterator[None]:
    """Room for a thousand sockets on each side (the server inherits the limit); restored after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 3 * WAITERS if hard == resource.RLIM_INFINITY else min(hard, 3 * WAITERS)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def wait_parked(session: aiohttp.ClientSession, server: ServerProcess, count: int, timeout: float) -> None:
    """Until the server holds ``count`` parked long-polls (its /stats says so)."""
    deadline = time.monotonic() + timeout
    while True:
        async with session.get(f"{server.url}/stats") as response:
            parked = (await response.json())["waiting_requests"]
        if parked >= count:
            return
        assert time.monotonic() < deadline, f"only {parked} of {count} long-polls reached the server"
        await asyncio.sleep(0.05)


async def watch(server: ServerProcess, job_id: str) -> tuple[list[tuple[int, Any, float]], float]:
    """Hold ``WAITERS`` concurrent ``GET /status/{id}?wait=60``, then open the job's gate.

    Returns every (status, body, arrival time) and the time the gate was opened.
    """
    sent = 0
    all_sent = asyncio.Event()

    async def on_headers_sent(*_: object) -> None:
        nonlocal sent
        sent += 1
        if sent == WAITERS:
            all_sent.set()

    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(on_headers_sent)
    connector = aiohttp.TCPConnector(limit=0)  # one connection per waiter
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, trace_configs=[trace]) as session:

        async def wait_once() -> tuple[int, Any, float]:
            async with session.get(f"{server.url}/status/{job_id}", params={"wait": str(WAIT)}) as response:
                return response.status, await response.json(), time.monotonic()

        waiters = [asyncio.create_task(wait_once()) for _ in range(WAITERS)]
        try:
            await asyncio.wait_for(all_sent.wait(), 60)
            await wait_parked(session, server, WAITERS, 60)
            early = [w.result() if not w.exception() else w.exception() for w in waiters if w.done()]
            assert not early, f"{len(early)} waiters answered before the job finished: {early[:3]}"
            opened_at = time.monotonic()
            server.send(signal.SIGUSR1)
            return await asyncio.wait_for(asyncio.gather(*waiters), WAIT + 30), opened_at
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)


def test_a_thousand_waiters_all_see_the_final_status(
    start_server: StartServer,
    tmp_path: Path,
    runs_file: Path,
    started: list,  # type: ignore[type-arg]
    open_files: None,
) -> None:
    server = start_server("--store", "memory://", "--workers", "1")
    status, body = server.request("POST", "/enqueue", {"type": "gated"})
    assert status == 202, body
    job_id = body["id"]
    wait_until(lambda: runs(runs_file)[job_id] == 1, "the job to start", 30)
    assert job_status(server, job_id)["status"] == "processing"

    answers, opened_at = asyncio.run(watch(server, job_id))

    assert len(answers) == WAITERS
    assert Counter(code for code, _, _ in answers) == {200: WAITERS}
    assert Counter(job["status"] for _, job, _ in answers) == {"completed": WAITERS}
    assert all(job["result"] == {"ran": job_id, "run": 1} for _, job, _ in answers)
    assert min(at for _, _, at in answers) >= opened_at  # every one was held until the job finished
    last = max(at for _, _, at in answers) - opened_at
    assert last < WOKEN_WITHIN, f"the last answer came {last:.1f}s after the job finished: not woken by it"
    assert runs(runs_file)[job_id] == 1


# -- lost runs and network trouble --------------------------------------------
class BlinkingProxy:
    """An HTTP proxy in the test's loop that, while ``dark``, resets every connection it gets."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.dark = False
        self.reset = 0
        self._session: aiohttp.ClientSession | None = None

    async def forward(self, request: web.Request) -> web.StreamResponse:
        if self.dark:
            self.reset += 1
            assert request.transport is not None
            request.transport.abort()  # a reset, as a network blip looks to the client
            return web.Response(status=500)  # never sent
        if self._session is None:
            self._session = aiohttp.ClientSession()
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "authorization")}
        timeout = aiohttp.ClientTimeout(total=120)
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers, timeout=timeout
        ) as answer:
            return web.Response(body=await answer.read(), status=answer.status, content_type=answer.content_type)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


async def eventually(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_a_network_blip_during_settle_still_ends_the_job_completed_once(
    start_server: StartServer, tmp_path: Path, runs_file: Path, started: list, aiohttp_server: Any
) -> None:  # type: ignore[type-arg]
    server = start_server("--store", f"sqlite:///{tmp_path / 'jobq.db'}", "--workers", "0")
    proxy = BlinkingProxy(server.url)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.forward)
    front = await aiohttp_server(app)
    worker = start_worker(tmp_path, runs_file, started, str(front.make_url("")).rstrip("/"), "blinked")
    status, body = await asyncio.to_thread(server.request, "POST", "/enqueue", {"type": "gated"})
    assert status == 202
    job_id = body["id"]
    await eventually(lambda: runs(runs_file)[job_id] == 1, 30, "the worker to start the job")
    proxy.dark = True  # from now on every connection is reset: the settle the job's end sends meets it
    worker.send(signal.SIGUSR1)
    # The blip lasts until the worker has been refused several times (the settle, sent again, and its
    # heartbeats): what is under test is that the result survives it.
    await eventually(lambda: proxy.reset >= 3, 30, "the worker's requests to meet the blip")
    proxy.dark = False
    done: dict[str, Any] = {}

    def completed() -> bool:
        done.update(job_status(server, job_id))
        return done["status"] == "completed"

    await eventually(completed, 30, "the job to complete through the proxy")
    assert [a["outcome"] for a in done["history"]] == ["completed"]
    assert done["result"] == {"ran": job_id, "run": 1}
    assert runs(runs_file)[job_id] == 1  # ran once, completed once
    await proxy.close()
    worker.send(signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait, 15) == 0


async def test_a_lease_long_poll_that_hung_up_gives_its_job_back_at_once(start_server: StartServer) -> None:
    server = start_server("--store", "memory://", "--workers", "0")
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    body = b'{"wait": 30, "worker": "gone"}'
    writer.write(
        b"POST /workers/lease HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    await writer.drain()
    await eventually(lambda: server.request("GET", "/stats")[1]["waiting_leases"] == 1, 10, "the poll to park")
    writer.close()  # the worker goes away while its long-poll waits
    await writer.wait_closed()
    status, enqueued = await asyncio.to_thread(server.request, "POST", "/enqueue", {"type": "record"})
    assert status == 202
    status, leased = await asyncio.to_thread(server.request, "POST", "/workers/lease", {"wait": 10, "worker": "alive"})
    assert status == 200, leased  # handed back at once, not after its 60 s lease
    [job] = leased["jobs"]
    assert job["id"] == enqueued["id"]
    # The hung-up poll ended with its connection (it took nothing), so the job ran at once elsewhere.
    history = job_status(server, job["id"])["history"]
    assert [(a["worker"], a["outcome"]) for a in history] == [("alive", None)]
    assert server.request("GET", "/stats")[1]["waiting_leases"] == 0


async def test_a_careless_handler_cannot_fail_other_clients_writes(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server("--store", f"sqlite:///{tmp_path / 'jobq.db'}", "--workers", "4")
    jobs = [{"type": "chatty"} if i % 5 == 0 else {"type": "echo", "payload": {"i": i}} for i in range(100)]
    answers = await asyncio.gather(*(asyncio.to_thread(server.request, "POST", "/enqueue", job) for job in jobs))
    assert [status for status, _ in answers] == [202] * 100  # every enqueue landed, beside the chatty runs
    ids = [body["id"] for _, body in answers]
    await eventually(
        lambda: server.request("GET", "/stats")[1]["jobs"]["completed"] == 100, 30, "every job to complete"
    )
    chatty = job_status(server, ids[0])
    assert chatty["progress_note"] == '{"step":1}'
    status, logs = server.request("GET", f"/jobs/{ids[0]}/logs")
    assert [line["message"] for line in logs["logs"]] == ["processing caf\\udce9.txt"]
    status, later = server.request("POST", "/enqueue?wait=10", {"type": "echo"})
    assert (status, later["status"]) == (200, "completed")  # and it still runs jobs
    assert "set aside" not in server.log() and "Storage corrupt" not in server.log()


def test_a_remote_handler_learns_of_a_cancel_within_seconds(
    start_server: StartServer, tmp_path: Path, runs_file: Path, started: list
) -> None:  # type: ignore[type-arg]
    server = start_server("--store", "memory://", "--workers", "0")
    worker = start_worker(tmp_path, runs_file, started, server.url, "cancelled")  # the default 60 s lease
    status, body = server.request("POST", "/enqueue", {"type": "gated"})
    assert status == 202
    job_id = body["id"]
    wait_until(lambda: runs(runs_file)[job_id] == 1, "the worker to start the job", 20)
    assert server.request("POST", f"/jobs/{job_id}/cancel")[0] == 200
    cancelled_at = time.monotonic()
    wait_until(lambda: f"job {job_id} lost its lease" in worker.log(), "the handler to be stopped", 10)
    assert time.monotonic() - cancelled_at < 3.0  # within a second or two, not at a heartbeat 20 s away
    assert job_status(server, job_id)["status"] == "cancelled"
