"""The Faktory Work Protocol listener, spoken over a raw socket: commands, mapping, edge cases, auth.

Real Faktory clients (Python and Node) drive it in tests/test_faktory_clients.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from jobq.api import SERVICE
from jobq.auth import Principal, Role, TokenBook
from jobq.config import Config
from jobq.faktory import server as faktory_server
from jobq.faktory.jobs import arguments, enqueue_request, work_unit
from jobq.faktory.protocol import Challenge, ProtocolError, password_hash
from jobq.faktory.server import FaktoryServer
from jobq.job import rfc3339
from jobq.server import start_faktory
from jobq.service import JobService
from tests.conftest import BACKENDS, FakeClock, MakeClient

CLIENT_TOKEN, WORKER_TOKEN, ADMIN_TOKEN = "client-token-0123456789", "worker-token-0123456789", "admin-token-0123456789"


class FwpError(Exception):
    """A ``-ERR`` reply."""


class Fwp:
    """A raw Faktory protocol connection: one command line out, one RESP reply back."""

    opened: list[Fwp] = []  # closed after each test (see close_connections)

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.hi: dict[str, Any] = {}
        Fwp.opened.append(self)

    @classmethod
    async def open(cls, port: int, hello: dict[str, Any] | None = None, password: str | None = None) -> Fwp:
        """Connect and read the greeting; with ``hello``, say HELLO (hashing ``password`` as ``HI`` asks)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        connection = cls(reader, writer)
        greeting = await reader.readline()
        assert greeting.startswith(b"+HI ") and b" " not in greeting[4:], greeting  # compact JSON
        connection.hi = json.loads(greeting[4:])
        if hello is not None:
            hello = dict(hello)
            if password is not None:
                rounds = connection.hi["i"] if hello.get("v", 0) >= 2 else 1
                hello["pwdhash"] = password_hash(password, connection.hi["s"], rounds).decode()
            assert await connection.call("HELLO " + json.dumps(hello)) == "OK"
        return connection

    async def call(self, line: str | bytes) -> Any:
        """Send a command; its reply: text for ``+``, the decoded JSON (or text) of a bulk string, None for ``$-1``."""
        self.writer.write((line.encode() if isinstance(line, str) else line) + b"\r\n")
        await self.writer.drain()
        return await self.reply()

    async def reply(self) -> Any:
        line = await self.reader.readline()
        if not line:
            raise EOFError("the server closed the connection")
        kind, text = line[:1], line[1:].rstrip(b"\r\n").decode()
        if kind == b"+":
            return text
        if kind == b"-":
            raise FwpError(text)
        assert kind == b"$", line
        if text == "-1":
            return None
        data = (await self.reader.readexactly(int(text) + 2))[:-2].decode()
        return json.loads(data) if data[:1] in "{[" else data

    async def closed(self, timeout: float = 5.0) -> bool:
        """Whether the server closes the connection within ``timeout`` (it sends nothing more)."""
        async with asyncio.timeout(timeout):
            return await self.reader.read() == b""

    def close(self) -> None:
        self.writer.close()


def consumer(wid: str = "w1", **more: Any) -> dict[str, Any]:
    return {"v": 2, "hostname": "box", "wid": wid, "pid": 1, "labels": [], **more}


def unit(jid: str = "job-00000001", **fields: Any) -> dict[str, Any]:
    return {"jid": jid, "jobtype": "t", "args": [1, 2], **fields}


StartFaktory = Callable[..., Awaitable[tuple[TestClient, FaktoryServer]]]


@pytest.fixture(autouse=True)
async def close_connections() -> AsyncIterator[None]:
    yield
    while Fwp.opened:
        Fwp.opened.pop().close()


@pytest.fixture
def backend() -> str:
    return "memory"  # the protocol is the same on every store: one test below runs on each


@pytest.fixture
async def start(make_client: MakeClient) -> AsyncIterator[StartFaktory]:
    """Start an app (no in-process workers) and its Faktory listener on a free port; stopped at teardown."""
    listeners: list[FaktoryServer] = []

    async def run(tokens: TokenBook | None = None, clock: FakeClock | None = None, **overrides: Any) -> Any:
        overrides.setdefault("drain_timeout", 0.1)  # runs still leased at teardown keep their leases: no waiting
        client = await make_client(clock=clock, workers=0, **overrides)
        listener = start_faktory(client.server.app, tokens)
        await listener.start("127.0.0.1", 0)
        listeners.append(listener)
        return client, listener

    yield run
    for listener in listeners:
        await listener.stop()


async def job_view(client: TestClient, job_id: str) -> dict[str, Any]:
    response = await client.get(f"/jobs/{job_id}")
    assert response.status == 200, await response.text()
    return await response.json()  # type: ignore[no-any-return]


async def until_status(client: TestClient, job_id: str, status: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (job := await job_view(client, job_id))["status"] != status:
        assert time.monotonic() < deadline, f"{job_id} is {job['status']}, not {status}"
        await asyncio.sleep(0.01)
    return job


# -- the mapping ------------------------------------------------------------------------------
def test_a_work_unit_maps_onto_a_job_and_back() -> None:
    request = enqueue_request(
        unit("-Go_base64url", args=[1, "x"], custom={"k": "v"}, queue="fk", priority=7, retry=3, reserve_for=600)
    )
    job = request.to_job(1000.0)
    assert (job.id, job.type, job.payload, job.queue) == (
        "-Go_base64url",
        "t",
        {"args": [1, "x"], "custom": {"k": "v"}},
        "fk",
    )
    assert (job.priority, job.max_attempts, job.timeout) == (2, 4, 600.0)
    back = work_unit(job)
    assert {
        key: back[key] for key in ("jid", "jobtype", "args", "custom", "queue", "priority", "retry", "reserve_for")
    } == {
        "jid": "-Go_base64url",
        "jobtype": "t",
        "args": [1, "x"],
        "custom": {"k": "v"},
        "queue": "fk",
        "priority": 7,
        "retry": 3,
        "reserve_for": 600,
    }


def test_custom_carries_a_concurrency_key_and_limit() -> None:
    job = enqueue_request(unit(custom={"concurrency_key": "acme", "concurrency_limit": 2, "k": 1})).to_job(1000.0)
    assert (job.concurrency_key, job.concurrency_limit) == ("acme", 2)
    assert job.payload["custom"] == {"concurrency_key": "acme", "concurrency_limit": 2, "k": 1}  # kept for the worker
    with pytest.raises(ProtocolError, match="concurrency_limit"):
        enqueue_request(unit(custom={"concurrency_limit": 2}))  # a limit needs a key, as over HTTP


def test_custom_carries_depends_on_and_on_parent_failure() -> None:
    custom = {"depends_on": ["-Go_parent1", "http-job", "-Go_parent1"], "on_parent_failure": "run", "k": 1}
    job = enqueue_request(unit(custom=custom)).to_job(1000.0)
    assert (job.depends_on, job.on_parent_failure) == (("-Go_parent1", "http-job"), "run")  # the store makes it wait
    assert job.payload["custom"] == custom  # kept for the worker
    assert enqueue_request(unit(custom={"depends_on": ["job-0000000a"]})).to_job(1000.0).on_parent_failure == "cancel"
    for bad, named in (
        ({"on_parent_failure": "run"}, "on_parent_failure goes with depends_on"),  # as over HTTP
        ({"depends_on": ["job-0000000a"], "on_parent_failure": "later"}, "custom.on_parent_failure"),
        ({"depends_on": "job-0000000a"}, "custom.depends_on must be an array"),
        ({"depends_on": ["has space 1"]}, "custom.depends_on must be an array"),
    ):
        with pytest.raises(ProtocolError, match=named):
            enqueue_request(unit(custom=bad))
    with pytest.raises(ProtocolError, match="give no delay, run_at"):  # its parents say when it runs, not at
        enqueue_request(unit(at=rfc3339(time.time() + 60), custom={"depends_on": ["job-0000000a"]}))


async def test_a_pushed_job_waits_for_its_parents_jids(start: StartFaktory) -> None:
    client, listener = await start()
    producer = await Fwp.open(listener.port, {"v": 2})
    assert await producer.call("PUSH " + json.dumps(unit("-Go_parent1"))) == "OK"
    child = unit("child-000001", custom={"depends_on": ["-Go_parent1"]})
    assert await producer.call("PUSH " + json.dumps(child)) == "OK"
    waiting = await job_view(client, "child-000001")
    assert (waiting["status"], waiting["workflow"]["depends_on"], waiting["workflow"]["parents_left"]) == (
        "waiting",
        ["-Go_parent1"],
        1,
    )
    worker = await Fwp.open(listener.port, consumer())
    assert (await worker.call("FETCH"))["jid"] == "-Go_parent1"  # the child waits: not fetched before its parent ends
    assert await worker.call('ACK {"jid":"-Go_parent1"}') == "OK"
    fetched = await worker.call("FETCH")
    assert (fetched["jid"], fetched["custom"]) == ("child-000001", {"depends_on": ["-Go_parent1"]})
    with pytest.raises(FwpError, match="ghost-000001"):  # a parent that does not exist, as over HTTP
        await producer.call("PUSH " + json.dumps(unit("orphan-00001", custom={"depends_on": ["ghost-000001"]})))
    batch = [unit("b-parent-001"), unit("b-child-0001", custom={"depends_on": ["b-parent-001"]})]
    assert await producer.call("PUSHB " + json.dumps(batch)) == {}  # a parent in the same batch
    assert (await job_view(client, "b-child-0001"))["status"] == "waiting"


def test_faktory_defaults_and_times() -> None:
    job = enqueue_request(unit(at="")).to_job(1000.0)  # pyfaktory always sends "at": ""
    assert (job.status.value, job.max_attempts, job.priority, job.queue) == ("pending", 26, 0, "default")
    later = time.time() + 3600
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(later)) + ".123456789Z"  # Go sends nanoseconds
    scheduled = enqueue_request(unit(at=stamp)).to_job()
    assert scheduled.status.value == "scheduled" and abs((scheduled.run_at or 0) - (int(later) + 0.123456)) < 1e-3
    assert enqueue_request(unit(retry=-1)).max_attempts == enqueue_request(unit(retry=0)).max_attempts == 1
    assert enqueue_request(unit(retry=500)).max_attempts == 100  # jobq's most


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"jid": "short"}, "jid"),
        ({"jid": "has space 123"}, "jid"),
        ({"jobtype": None}, "jobtype"),
        ({"jobtype": "has space"}, "jobtype"),
        ({"args": {"a": 1}}, "args"),
        ({"retry": -2}, "retry"),
        ({"retry": "3"}, "retry"),
        ({"queue": "a/b"}, "queue"),
        ({"at": "tomorrow"}, "at"),
        ({"reserve_for": "1h"}, "reserve_for"),
        ({"custom": [1]}, "custom"),
        ({"priority": 1.5}, "priority"),
        ({"color": "red"}, "color"),
    ],
)
def test_a_bad_work_unit_is_refused_naming_its_field(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(ProtocolError, match=named):
        enqueue_request(unit(**fields))


def test_a_payload_that_is_not_faktory_style_is_the_one_argument() -> None:
    assert arguments({"x": 1}) == ([{"x": 1}], None)
    assert arguments(None) == ([None], None)
    assert arguments({"args": [1], "custom": {"a": 1}}) == ([1], {"a": 1})
    assert arguments({"args": [1], "other": 2}) == ([{"args": [1], "other": 2}], None)


def test_the_password_hash_is_iterated_sha256_of_password_and_salt() -> None:
    digest = b"secret" + b"salt"
    for _ in range(3):
        digest = hashlib.sha256(digest).digest()
    assert password_hash("secret", "salt", 3) == digest.hex().encode()
    challenge = Challenge(protected=True)
    assert challenge.iterations_for({"v": 2}) == challenge.iterations and challenge.iterations_for({}) == 1
    assert challenge.matches("secret", password_hash("secret", challenge.salt, 1).decode().upper(), 1)
    assert not challenge.matches("secret", password_hash("other", challenge.salt, 1).decode(), 1)


def test_the_port_is_a_flag_and_a_variable() -> None:
    assert Config.from_args([], environ={}).faktory_port == 0  # off unless set
    assert Config.from_args(["--faktory-port", "7419"], environ={}).faktory_port == 7419
    assert Config.from_args([], environ={"JOBQ_FAKTORY_PORT": "7420"}).faktory_port == 7420


# -- producing and consuming -------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
async def test_push_fetch_ack_on_every_store(start: StartFaktory) -> None:
    client, listener = await start()
    producer = await Fwp.open(listener.port, {"v": 2})
    assert await producer.call("PUSH " + json.dumps(unit("job-00000001", custom={"k": 1}, queue="fk"))) == "OK"
    stored = await job_view(client, "job-00000001")
    assert (stored["status"], stored["payload"], stored["max_attempts"]) == (
        "pending",
        {"args": [1, 2], "custom": {"k": 1}},
        26,
    )
    worker = await Fwp.open(listener.port, consumer())
    fetched = await worker.call("FETCH fk")
    assert (fetched["jid"], fetched["args"], fetched["custom"], fetched["queue"]) == (
        "job-00000001",
        [1, 2],
        {"k": 1},
        "fk",
    )
    assert (await job_view(client, "job-00000001"))["history"][-1]["worker"] == "box/w1"
    assert await worker.call('ACK {"jid":"job-00000001"}') == "OK"
    assert (await job_view(client, "job-00000001"))["status"] == "completed"
    with pytest.raises(FwpError, match="not running for this worker"):  # a second ACK changes nothing
        await worker.call('ACK {"jid":"job-00000001"}')


async def test_a_job_enqueued_over_http_is_fetched_with_its_payload_as_the_argument(start: StartFaktory) -> None:
    client, listener = await start()
    response = await client.post("/enqueue", json={"type": "t", "payload": {"x": 1}, "queue": "q", "id": "http-job-1"})
    assert response.status == 202
    worker = await Fwp.open(listener.port, consumer())
    fetched = await worker.call("FETCH q")
    assert (fetched["jid"], fetched["args"], fetched["priority"], fetched["retry"]) == ("http-job-1", [{"x": 1}], 5, 0)
    failure = {"jid": "http-job-1", "errtype": "ValueError", "message": "bad", "backtrace": ["line 1", "line 2"]}
    assert await worker.call("FAIL " + json.dumps(failure)) == "OK"
    failed = await job_view(client, "http-job-1")
    assert (failed["status"], failed["error"]) == ("failed", "ValueError: bad")  # one attempt: failed, kept
    assert failed["history"][-1]["traceback"] == "line 1\nline 2"


async def test_a_failed_job_with_retries_left_is_retried_with_its_failure(start: StartFaktory) -> None:
    clock = FakeClock()
    client, listener = await start(clock=clock)
    producer = await Fwp.open(listener.port, {"v": 2})
    await producer.call("PUSH " + json.dumps(unit(retry=1)))
    worker = await Fwp.open(listener.port, consumer())
    await worker.call("FETCH")
    await worker.call('FAIL {"jid":"job-00000001","errtype":"E","message":"first"}')
    assert (await job_view(client, "job-00000001"))["status"] == "retrying"
    clock.advance(3600)
    await client.app[SERVICE].store.promote_due()  # type: ignore[attr-defined]
    again = await worker.call("FETCH")
    assert again["failure"]["message"] == "first" and again["failure"]["errtype"] == "E"
    assert again["failure"]["retry_count"] == 0 and again["failure"]["remaining"] == 1
    await worker.call('FAIL {"jid":"job-00000001","errtype":"E","message":"second"}')
    assert (await job_view(client, "job-00000001"))["status"] == "dead"


async def test_fetch_takes_queues_in_order_and_waits_for_work(
    start: StartFaktory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(faktory_server, "FETCH_WAIT", 0.2)
    _, listener = await start()
    producer = await Fwp.open(listener.port, {"v": 2})
    await producer.call("PUSH " + json.dumps(unit("low-00000001", queue="low")))
    await producer.call("PUSH " + json.dumps(unit("high-0000001", queue="high")))
    worker = await Fwp.open(listener.port, consumer())
    assert (await worker.call("FETCH high low"))["jid"] == "high-0000001"  # the older job waits in a later queue
    assert (await worker.call("FETCH high low"))["jid"] == "low-00000001"
    assert await worker.call("FETCH high low") is None  # nothing within the wait
    waiting = asyncio.ensure_future(worker.call("FETCH other"))
    await asyncio.sleep(0)
    await producer.call("PUSH " + json.dumps(unit("late-0000001", queue="other")))
    assert (await waiting)["jid"] == "late-0000001"  # a push during the wait answers it
    with pytest.raises(FwpError, match="queue name"):
        await worker.call("FETCH bad/queue")


async def test_pushb_answers_each_refused_job(start: StartFaktory) -> None:
    client, listener = await start()
    producer = await Fwp.open(listener.port, {"v": 2})
    batch = [unit("good-0000001"), unit("bad"), unit("good-0000002", args="x"), unit("good-0000003", queue="b")]
    refused = await producer.call("PUSHB " + json.dumps(batch))
    assert set(refused) == {"bad", "good-0000002"} and "jid" in refused["bad"] and "args" in refused["good-0000002"]
    assert [(await job_view(client, jid))["queue"] for jid in ("good-0000001", "good-0000003")] == ["default", "b"]
    assert await producer.call("PUSHB " + json.dumps([unit("good-0000004")])) == {}
    response = await client.get("/jobs/good-0000002")
    assert response.status == 404


async def test_a_pushed_id_is_idempotent_for_the_same_job_only(start: StartFaktory) -> None:
    _, listener = await start()
    producer = await Fwp.open(listener.port, {"v": 2})
    for _ in range(2):
        assert await producer.call("PUSH " + json.dumps(unit())) == "OK"
    with pytest.raises(FwpError, match="different body"):
        await producer.call("PUSH " + json.dumps(unit(args=[3])))


# -- runs: leases, beats, disconnects --------------------------------------------------------------
async def test_a_worker_gone_for_its_grace_period_hands_its_runs_back(start: StartFaktory) -> None:
    clock = FakeClock()  # leases never lapse here: only the grace period can bring the job back
    client, listener = await start(clock=clock, lease_seconds=0.3)  # grace: 0.1 s
    producer = await Fwp.open(listener.port, {"v": 2})
    await producer.call("PUSH " + json.dumps(unit()))
    worker = await Fwp.open(listener.port, consumer("gone"))
    await worker.call("FETCH")
    worker.writer.write(b'ACK {"jid":')  # half a line, then the client's side closes (a half-open connection)
    worker.writer.write_eof()
    assert await worker.closed()
    job = await until_status(client, "job-00000001", "pending")
    assert job["history"][-1]["outcome"] == "disconnected" and job["attempts"] == 0  # lost: no attempt used
    other = await Fwp.open(listener.port, consumer("other"))
    with pytest.raises(FwpError, match="not running for this worker"):
        await other.call('ACK {"jid":"job-00000001"}')
    assert (await other.call("FETCH"))["jid"] == "job-00000001"


async def test_a_worker_that_connects_again_within_its_grace_period_keeps_its_runs(start: StartFaktory) -> None:
    client, listener = await start(lease_seconds=30.0)  # grace: 10 s
    producer = await Fwp.open(listener.port, {"v": 2})
    await producer.call("PUSH " + json.dumps(unit()))
    worker = await Fwp.open(listener.port, consumer("pooled"))
    await worker.call("FETCH")
    worker.writer.write(b"END\r\n")  # a pool closing its idle connection
    assert await worker.closed()
    again = await Fwp.open(listener.port, consumer("pooled"))
    assert await again.call('BEAT {"wid":"pooled"}') == "OK"
    assert await again.call('ACK {"jid":"job-00000001"}') == "OK"
    assert [a["outcome"] for a in (await job_view(client, "job-00000001"))["history"]] == ["completed"]


async def test_a_job_leased_for_a_worker_that_hung_up_goes_back_at_once(
    start: StartFaktory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(faktory_server, "FETCH_WAIT", 5.0)
    client, listener = await start()
    worker = await Fwp.open(listener.port, consumer("hasty"))
    worker.writer.write(b"FETCH\r\n")
    await worker.writer.drain()
    deadline = time.monotonic() + 5
    while (await (await client.get("/stats")).json())["waiting_leases"] == 0:  # its FETCH waits for work
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    worker.writer.close()  # gone while its FETCH waits (the server sees it before the push below, some turns on)
    producer = await Fwp.open(listener.port, {"v": 2})
    await producer.call("PUSH " + json.dumps(unit()))
    deadline = time.monotonic() + 5
    while not (job := await job_view(client, "job-00000001"))["history"] or job["status"] != "pending":
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.01)
    assert [attempt["outcome"] for attempt in job["history"]] == ["undelivered"]


async def test_a_worker_keeps_its_runs_while_another_of_its_connections_is_open(start: StartFaktory) -> None:
    client, listener = await start()
    producer = await Fwp.open(listener.port, {"v": 2})
    await producer.call("PUSH " + json.dumps(unit()))
    fetching, acking = await Fwp.open(listener.port, consumer("w")), await Fwp.open(listener.port, consumer("w"))
    await fetching.call("FETCH")
    fetching.writer.write(b"END\r\n")
    assert await fetching.closed()
    assert (await job_view(client, "job-00000001"))["status"] == "processing"
    assert await acking.call('ACK {"jid":"job-00000001"}') == "OK"  # a FETCH on one, the ACK on another
    assert (await job_view(client, "job-00000001"))["status"] == "completed"


async def test_a_late_ack_after_re_delivery_changes_nothing(start: StartFaktory) -> None:
    clock = FakeClock()
    client, listener = await start(clock=clock, lease_seconds=30.0)
    store = client.app[SERVICE].store  # type: ignore[attr-defined]
    producer = await Fwp.open(listener.port, {"v": 2})
    await producer.call("PUSH " + json.dumps(unit()))
    slow, fast = await Fwp.open(listener.port, consumer("slow")), await Fwp.open(listener.port, consumer("fast"))
    await slow.call("FETCH")
    clock.advance(31)
    assert [job.id for job in await store.expire_leases()] == ["job-00000001"]
    assert (await fast.call("FETCH"))["jid"] == "job-00000001"
    with pytest.raises(FwpError, match="lease"):
        await slow.call('ACK {"jid":"job-00000001"}')
    assert (await job_view(client, "job-00000001"))["status"] == "processing"
    assert await fast.call('ACK {"jid":"job-00000001"}') == "OK"
    outcomes = [attempt["outcome"] for attempt in (await job_view(client, "job-00000001"))["history"]]
    assert outcomes == ["lease-expired", "completed"]


async def test_beat_extends_leases_up_to_reserve_for(start: StartFaktory) -> None:
    clock = FakeClock()
    client, listener = await start(clock=clock, lease_seconds=30.0)
    producer = await Fwp.open(listener.port, {"v": 2})
    await producer.call("PUSHB " + json.dumps([unit("free-0000001"), unit("held-0000001", reserve_for=40)]))
    worker = await Fwp.open(listener.port, consumer())
    started = clock()
    for _ in range(2):
        await worker.call("FETCH")
    clock.advance(20)
    assert await worker.call('BEAT {"wid":"w1"}') == "OK"
    leases = {jid: (await job_view(client, jid))["lease_expires_at"] for jid in ("free-0000001", "held-0000001")}
    assert leases["free-0000001"] == rfc3339(started + 50) and leases["held-0000001"] == rfc3339(started + 40)
    with pytest.raises(FwpError, match="unknown worker"):
        await worker.call('BEAT {"wid":"someone-else"}')


async def test_a_drain_quiets_workers_and_waits_for_their_runs(
    start: StartFaktory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(faktory_server, "FETCH_WAIT", 0.05)
    client, listener = await start(drain_timeout=10.0)
    service: JobService = client.app[SERVICE]  # type: ignore[attr-defined]
    producer = await Fwp.open(listener.port, {"v": 2})
    await producer.call("PUSHB " + json.dumps([unit("job-00000001"), unit("job-00000002")]))
    worker = await Fwp.open(listener.port, consumer())
    await worker.call("FETCH")
    draining = asyncio.ensure_future(service.drain())
    await asyncio.sleep(0)
    assert service.draining
    assert await worker.call('BEAT {"wid":"w1"}') == {"state": "quiet"}
    assert await worker.call("FETCH") is None  # the other job waits for the next start
    assert not draining.done()
    assert await worker.call('ACK {"jid":"job-00000001"}') == "OK"
    assert await worker.call('BEAT {"wid":"w1"}') == {"state": "terminate"}  # nothing left to finish here
    report = await asyncio.wait_for(draining, 5.0)
    assert report.unfinished == []
    with pytest.raises(FwpError, match="shutting down"):
        await producer.call("PUSH " + json.dumps(unit("job-00000003")))
    await listener.stop()
    assert await worker.closed()


# -- protocol edges ---------------------------------------------------------------------------------
async def test_a_connection_must_start_with_hello(start: StartFaktory) -> None:
    _, listener = await start()
    connection = await Fwp.open(listener.port)
    with pytest.raises(FwpError, match="starts with HELLO"):
        await connection.call('PUSH {"jid":"x"}')
    assert await connection.closed()
    connection = await Fwp.open(listener.port)
    with pytest.raises(FwpError, match="HELLO needs a JSON object"):
        await connection.call("HELLO {not json")
    assert await connection.closed()


async def test_a_silent_client_is_dropped(start: StartFaktory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faktory_server, "HELLO_SECONDS", 0.2)
    _, listener = await start()
    connection = await Fwp.open(listener.port)
    assert await connection.closed(timeout=5.0)


async def test_bad_commands_get_an_error_and_the_connection_goes_on(start: StartFaktory) -> None:
    _, listener = await start()
    connection = await Fwp.open(listener.port, {"v": 2})
    for line, why in [
        ("FROB", "unknown command"),
        ("BATCH NEW {}", "unknown command"),
        ("PUSH {not json", "PUSH needs a JSON object"),
        ("PUSH [1]", "PUSH needs a JSON object"),
        ("PUSH " + "[" * 100_000, "PUSH needs a JSON object"),
        (b"PUSH \xff\xfe", "UTF-8"),
        ("FETCH", "for workers"),
        ('ACK {"jid":"x"}', "for workers"),
        ("MUTATE {}", "cmd must be"),
        ('MUTATE {"cmd":"kill","target":"working"}', "target must be"),
        ("QUEUE FROB q", "no such QUEUE subcommand"),
    ]:
        with pytest.raises(FwpError, match=why):
            await connection.call(line)
    assert (await connection.call("INFO"))["server"]["description"] == "jobq"


async def test_an_oversized_line_is_refused_and_the_server_serves_on(start: StartFaktory) -> None:
    _, listener = await start(body_limit=1000)
    connection = await Fwp.open(listener.port, {"v": 2})
    with pytest.raises(FwpError, match="at most 1000 bytes"):
        await connection.call("PUSH " + json.dumps(unit(args=["x" * 2000])))
    assert await connection.closed()
    again = await Fwp.open(listener.port, {"v": 2})
    assert await again.call("PUSH " + json.dumps(unit())) == "OK"


# -- reading and steering ------------------------------------------------------------------------------
async def test_info_counts_queues_and_sets(start: StartFaktory) -> None:
    _, listener = await start()
    producer = await Fwp.open(listener.port, {"v": 2})
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    await producer.call(
        "PUSHB "
        + json.dumps(
            [unit("a-00000001", queue="a"), unit("a-00000002", queue="a"), unit("b-00000001", queue="b", at=later)]
        )
    )
    worker = await Fwp.open(listener.port, consumer())
    await worker.call("FETCH a")
    info = await worker.call("INFO")
    assert info["faktory"]["queues"] == {"a": 1, "b": 0}
    assert info["faktory"]["sets"] == {"scheduled": 1, "retries": 0, "dead": 0, "working": 1}
    assert info["faktory"]["total_enqueued"] == 1 and info["server"]["connections"] == 2


async def test_mutate_kills_requeues_and_discards(start: StartFaktory) -> None:
    client, listener = await start()
    admin = await Fwp.open(listener.port, consumer("admin"))
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    await admin.call(
        "PUSHB "
        + json.dumps(
            [
                unit("retry-000001", retry=5),
                unit("retry-000002", retry=5),
                unit("sched-000001", at=later, jobtype="report"),
                unit("sched-000002", at=later, jobtype="other", args=["needle"]),
            ]
        )
    )
    for _ in range(2):
        fetched = await admin.call("FETCH")
        await admin.call("FAIL " + json.dumps({"jid": fetched["jid"], "errtype": "E", "message": "m"}))
    kill = {"cmd": "kill", "target": "retries", "filter": {"jids": ["retry-000001"]}}
    assert await admin.call("MUTATE " + json.dumps(kill)) == "OK"
    assert (await job_view(client, "retry-000001"))["status"] == "dead"
    assert (await job_view(client, "retry-000002"))["status"] == "retrying"
    requeue = {"cmd": "requeue", "target": "scheduled", "filter": {"jobtype": "report"}}
    assert await admin.call("MUTATE " + json.dumps(requeue)) == "OK"
    assert (await job_view(client, "sched-000001"))["status"] == "pending"
    assert (await job_view(client, "sched-000002"))["status"] == "scheduled"
    discard = {"cmd": "discard", "target": "scheduled", "filter": {"regexp": "*needle*"}}
    assert await admin.call("MUTATE " + json.dumps(discard)) == "OK"
    assert (await client.get("/jobs/sched-000002")).status == 404
    assert await admin.call('MUTATE {"cmd":"requeue","target":"dead"}') == "OK"  # the killed job runs again
    assert (await job_view(client, "retry-000001"))["status"] == "pending"
    assert await admin.call('MUTATE {"cmd":"clear","target":"retries"}') == "OK"
    assert (await client.get("/jobs/retry-000002")).status == 404


async def test_queue_pause_resume_remove_and_latency(start: StartFaktory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faktory_server, "FETCH_WAIT", 0.05)
    client, listener = await start()
    worker = await Fwp.open(listener.port, consumer())
    await worker.call("PUSHB " + json.dumps([unit("q1-0000001", queue="q1"), unit("q2-0000001", queue="q2")]))
    assert await worker.call("QUEUE PAUSE q1") == "OK"
    assert await worker.call("FETCH q1") is None
    assert [q["name"] for q in (await (await client.get("/queues")).json())["queues"] if q["paused"]] == ["q1"]
    assert await worker.call("QUEUE RESUME *") == "OK"
    assert (await worker.call("FETCH q1"))["jid"] == "q1-0000001"
    latency = await worker.call("QUEUE LATENCY q2 none")
    assert set(latency) == {"q2", "none"} and latency["q2"] >= 0 and latency["none"] == 0
    assert await worker.call("QUEUE REMOVE q2") == "OK"
    assert (await client.get("/jobs/q2-0000001")).status == 404


async def test_flush_deletes_every_job_not_running(start: StartFaktory) -> None:
    client, listener = await start()
    worker = await Fwp.open(listener.port, consumer())
    await worker.call("PUSHB " + json.dumps([unit("run-0000001"), unit("wait-000001")]))
    await worker.call("FETCH")
    assert await worker.call("FLUSH") == "OK"
    assert (await job_view(client, "run-0000001"))["status"] == "processing"
    assert (await client.get("/jobs/wait-000001")).status == 404


# -- tokens and roles ------------------------------------------------------------------------------------
@pytest.fixture
def tokens() -> TokenBook:
    return TokenBook(
        [
            (CLIENT_TOKEN, Principal("app", Role.CLIENT)),
            (WORKER_TOKEN, Principal("runner", Role.WORKER)),
            (ADMIN_TOKEN, Principal("ops", Role.ADMIN)),
        ]
    )


async def test_the_password_is_a_jobq_token_and_its_role_applies(start: StartFaktory, tokens: TokenBook) -> None:
    client, listener = await start(tokens=tokens)
    producer = await Fwp.open(listener.port, {"v": 2}, password=CLIENT_TOKEN)
    assert set(producer.hi) == {"v", "i", "s"}
    assert await producer.call("PUSH " + json.dumps(unit())) == "OK"
    assert (await job_view(client, "job-00000001"))["owner"] == "app"
    with pytest.raises(FwpError, match="role admin or worker; 'app' has role client"):
        await producer.call("FETCH")
    worker = await Fwp.open(listener.port, consumer(), password=WORKER_TOKEN)
    assert (await worker.call("FETCH"))["jid"] == "job-00000001"
    with pytest.raises(FwpError, match="role admin"):
        await worker.call("FLUSH")
    single_round = await Fwp.open(listener.port, {"wid": "old", "hostname": "h"}, password=ADMIN_TOKEN)  # no "v"
    assert await single_round.call("QUEUE PAUSE x") == "OK"


@pytest.mark.parametrize(
    "hello", [{"v": 2, "pwdhash": "0" * 64}, {"v": 2}, {"v": 2, "pwdhash": 7}], ids=["wrong", "missing", "not text"]
)
async def test_a_wrong_password_is_refused_and_the_connection_closed(
    start: StartFaktory, tokens: TokenBook, hello: dict[str, Any]
) -> None:
    _, listener = await start(tokens=tokens)
    connection = await Fwp.open(listener.port)
    with pytest.raises(FwpError, match="password"):
        await connection.call("HELLO " + json.dumps(hello))
    assert await connection.closed()


async def test_commands_are_counted_in_metrics(start: StartFaktory) -> None:
    client, listener = await start()
    connection = await Fwp.open(listener.port, {"v": 2})
    await connection.call("PUSH " + json.dumps(unit()))
    with pytest.raises(FwpError):
        await connection.call("FROB")
    text = await (await client.get("/metrics")).text()
    assert 'jobq_faktory_commands_total{command="PUSH",result="ok"} 1.0' in text
    assert 'jobq_faktory_commands_total{command="other",result="error"} 1.0' in text
    assert "jobq_faktory_connections 1.0" in text


async def test_two_principals_never_share_runs_through_one_wid(start: StartFaktory) -> None:
    other_token = "other-worker-token-0123"
    book = TokenBook(
        [
            (CLIENT_TOKEN, Principal("app", Role.CLIENT)),
            (WORKER_TOKEN, Principal("runner", Role.WORKER)),
            (other_token, Principal("intruder", Role.WORKER)),
        ]
    )
    client, listener = await start(tokens=book, clock=FakeClock(), lease_seconds=0.3)  # grace: 0.1 s
    producer = await Fwp.open(listener.port, {"v": 2}, password=CLIENT_TOKEN)
    await producer.call("PUSH " + json.dumps(unit()))
    owner = await Fwp.open(listener.port, consumer("same"), password=WORKER_TOKEN)
    intruder = await Fwp.open(listener.port, consumer("same"), password=other_token)
    await owner.call("FETCH")
    with pytest.raises(FwpError, match="not running for this worker"):
        await intruder.call('ACK {"jid":"job-00000001"}')
    owner.close()  # its last connection: the run goes back after the grace, though the intruder's is open
    assert (await until_status(client, "job-00000001", "pending"))["history"][-1]["outcome"] == "disconnected"


async def test_a_fault_in_a_command_fails_that_command_only(
    start: StartFaktory, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, listener = await start()
    connection = await Fwp.open(listener.port, {"v": 2})

    async def broken(*args: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(listener.service, "queues", broken)
    with pytest.raises(FwpError, match="QUEUE failed in jobq: RuntimeError"):
        await connection.call("QUEUE PAUSE *")
    with pytest.raises(FwpError, match="no such QUEUE subcommand"):
        await connection.call("QUEUE")
    with pytest.raises(FwpError, match="QUEUE PAUSE needs queue names"):
        await connection.call("QUEUE PAUSE")
    assert await connection.call("PUSH " + json.dumps(unit())) == "OK"
