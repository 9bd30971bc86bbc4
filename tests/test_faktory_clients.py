"""Stock Faktory clients against jobq's Faktory Work Protocol listener, end to end.

Each test starts its own ``main.py`` (a SQLite file, no in-process workers, a token for each of
the three roles) with ``--faktory-port``, and drives it with real third-party clients:

* pyfaktory 0.2.13 and faktory 1.0.0 (cdrx), each in a script of its own under tests/faktory_py/
  (both take over SIGTERM, and end their worker loops in ``sys.exit``), run as subprocesses;
  faktory's producer side (``faktory.connection``) also runs here, in the test's process;
* the Node client faktory-worker 4.7.1, through tests/faktory_node/drive.js;
* a tiny raw-socket client (:class:`Fwp`) to set up exact states and to read the wire itself.

What came of the jobs is read back over HTTP with the admin token. Waits are deadline polls.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import faktory
import pytest

from tests.procs import ROOT, ServerProcess, free_port, wait_until

CLIENT = "client-token-faktory-0123"
WORKER = "worker-token-faktory-4567"
ADMIN = "admin-token-faktory-89ab"
TOKENS = {"JOBQ_TOKEN": CLIENT, "JOBQ_WORKER_TOKEN": WORKER, "JOBQ_ADMIN_TOKEN": ADMIN}

PY_SCRIPTS = ROOT / "tests" / "faktory_py"
NODE_DIR = ROOT / "tests" / "faktory_node"
NODE = shutil.which("node") or "/usr/bin/node"


# -- jobq ----------------------------------------------------------------------------
class Jobq:
    """One ``main.py`` with tokens and a Faktory listener; HTTP calls carry a bearer token."""

    def __init__(self, server: ServerProcess, faktory_port: int) -> None:
        self.server = server
        self.faktory_port = faktory_port

    def url(self, token: str) -> str:
        """A FAKTORY_URL whose password is ``token``."""
        return f"tcp://:{token}@127.0.0.1:{self.faktory_port}"

    def http(self, method: str, path: str, body: Any = None, token: str = ADMIN) -> tuple[int, Any]:
        return self.server.request(method, path, body, token=token)

    def job(self, jid: str) -> dict[str, Any]:
        status, body = self.http("GET", f"/jobs/{jid}")
        assert status == 200, (jid, status, body)
        return dict(body)

    def wait_status(self, jids: list[str], status: str, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Wait until every job of ``jids`` is in ``status``; their records."""

        def settled() -> list[dict[str, Any]] | None:
            jobs = [self.job(jid) for jid in jids]
            return jobs if all(job["status"] == status for job in jobs) else None

        try:
            return wait_until(settled, f"{jids} to be {status}", timeout)
        except AssertionError:
            states = {jid: self.job(jid)["status"] for jid in jids}
            raise AssertionError(f"jobs not {status} after {timeout}s: {states}\n{self.server.log()}") from None


@pytest.fixture
def start_jobq(tmp_path: Path) -> Iterator[Callable[..., Jobq]]:
    """``start(*flags)``: a jobq with all three tokens and a Faktory port, ready; stopped at teardown."""
    servers: list[ServerProcess] = []

    def start(*flags: str) -> Jobq:
        port = free_port()
        server = ServerProcess(
            tmp_path / "server.log",
            *("--store", f"sqlite:///{tmp_path / 'jobq.db'}", "--workers", "0", "--faktory-port", str(port)),
            *flags,
            env=TOKENS,
        )
        servers.append(server)
        server.wait_ready()
        return Jobq(server, port)

    yield start
    for server in servers:
        server.stop()
        server.wait(timeout=10)


# -- client processes ----------------------------------------------------------------------
class Child:
    """A client process in a process group of its own (so it is killed with every process it started)."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM to the client's main process (its graceful stop); its exit code."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"client did not stop within {timeout}s:\n{self.log()}") from None

    def kill_group(self) -> None:
        """SIGKILL to the whole process group: a crash, children and all."""
        with contextlib.suppress(ProcessLookupError):  # gone already
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Child]]:
    """``spawn(argv, env)``: a client process, its output in tmp_path; every group killed at teardown."""
    children: list[Child] = []

    def start(argv: list[str], env: dict[str, str]) -> Child:
        child = Child(argv, tmp_path / f"client-{len(children)}.log", env)
        children.append(child)
        return child

    yield start
    for child in children:
        child.kill_group()


def run_json(argv: list[str], env: dict[str, str], timeout: float = 45.0) -> Any:
    """Run a client script to its end; the JSON it printed last (fails on a non-zero exit)."""
    done = subprocess.run(
        argv, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def drive(jobq: Jobq, token: str, scenario: str, check: bool = True, **env: str) -> Any:
    """Run a scenario of tests/faktory_node/drive.js; its JSON (or, with check=False, the CompletedProcess)."""
    assert (NODE_DIR / "node_modules" / "faktory-worker").is_dir(), (
        "the Node client is not installed: run `cd tests/faktory_node && npm ci` (make test does)"
    )
    argv = [NODE, str(NODE_DIR / "drive.js"), scenario]
    full_env = {"FAKTORY_URL": jobq.url(token), **env}
    if check:
        return run_json(argv, full_env)
    return subprocess.run(
        argv, cwd=ROOT, env={**os.environ, **full_env}, capture_output=True, text=True, timeout=45, check=False
    )


def cdrx_worker(
    spawn: Callable[..., Child], jobq: Jobq, queue: str, results: Path, markers: Path | None = None
) -> Child:
    """A faktory (cdrx) worker process with the worker token, working ``queue``."""
    argv = [sys.executable, str(PY_SCRIPTS / "cdrx_worker.py"), queue, *([str(markers)] if markers else [])]
    return spawn(argv, {"FAKTORY_URL": jobq.url(WORKER), "RESULTS": str(results)})


def read_results(path: Path) -> list[dict[str, Any]]:
    """The JSON lines a client's handlers appended."""
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -- the wire itself ---------------------------------------------------------------------------
class FwpError(Exception):
    """A ``-ERR`` reply (its text, without the ``-``)."""


class Fwp:
    """A minimal Faktory client on a raw socket: it reads the HI; :meth:`hello`, then one command at a time."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")
        self.hi = json.loads(self.read_line().removeprefix("+HI "))

    def hello(
        self, token: str | None, wid: str | None = None, version: int | None = 2, rounds: int | None = None
    ) -> Any:
        """HELLO, the password hashed as Faktory 1.x does (``rounds`` from the HI; one round without a version)."""
        hello: dict[str, Any] = {"hostname": "test", "pid": os.getpid()}
        if version is not None:
            hello["v"] = version
        if wid is not None:
            hello["wid"] = wid
        if token is not None:
            if rounds is None:
                rounds = self.hi["i"] if version is not None else 1
            digest = (token + self.hi["s"]).encode()
            for _ in range(rounds):
                digest = hashlib.sha256(digest).digest()
            hello["pwdhash"] = digest.hex()
        return self.call("HELLO", hello)

    def read_line(self) -> str:
        line = self.file.readline()
        if not line:
            raise EOFError("the server closed the connection")
        return line.decode().rstrip("\r\n")

    def read(self) -> Any:
        """One reply: a simple string's text, a bulk string's JSON (None for a null one); FwpError for -ERR."""
        line = self.read_line()
        if line.startswith("-"):
            raise FwpError(line[1:])
        if line.startswith("$"):
            size = int(line[1:])
            if size < 0:
                return None
            return json.loads(self.file.read(size + 2)[:size])
        return line[1:]

    def call(self, verb: str, argument: Any = None) -> Any:
        text = verb if argument is None else f"{verb} {argument if isinstance(argument, str) else json.dumps(argument)}"
        self.sock.sendall(text.encode() + b"\r\n")
        return self.read()

    def closed_by_server(self) -> bool:
        return self.file.readline() == b""

    def __enter__(self) -> Fwp:
        return self

    def __exit__(self, *_: object) -> None:
        self.file.close()
        self.sock.close()


@contextlib.contextmanager
def fwp(port: int, token: str, wid: str | None = None) -> Iterator[Fwp]:
    """A raw connection that said HELLO (protocol version 2) with ``token``."""
    with Fwp(port) as conn:
        assert conn.hello(token, wid) == "OK"
        yield conn


def push(conn: Fwp, jid: str, jobtype: str, queue: str, **fields: Any) -> None:
    assert conn.call("PUSH", {"jid": jid, "jobtype": jobtype, "args": [], "queue": queue, **fields}) == "OK"


def fetch(conn: Fwp, queue: str) -> dict[str, Any]:
    unit = conn.call("FETCH", queue)
    assert unit is not None, f"nothing to fetch from {queue}"
    return dict(unit)


def fail(conn: Fwp, jid: str, message: str = "nope") -> None:
    assert conn.call("FAIL", {"jid": jid, "errtype": "RuntimeError", "message": message}) == "OK"


# -- pyfaktory -------------------------------------------------------------------------------
def test_pyfaktory_pushes_and_a_pyfaktory_consumer_acks_and_fails(
    start_jobq: Callable[..., Jobq], spawn: Callable[..., Child], tmp_path: Path
) -> None:
    jobq = start_jobq()
    script = [sys.executable, str(PY_SCRIPTS / "pyfaktory_scenario.py")]
    pushed = run_json([*script, "produce", "pyq"], {"FAKTORY_URL": jobq.url(CLIENT)})
    assert pushed["bulk_refused"] == {}  # PUSHB: every job accepted
    adds = {pushed["single"]: [1, 2]} | {jid: [i, 10] for i, jid in enumerate(pushed["bulk"])}
    for jid, args in adds.items():
        job = jobq.job(jid)
        assert (job["status"], job["type"], job["queue"]) == ("pending", "add", "pyq")
        assert job["payload"] == {"args": args}
        assert job["owner"] == "client"  # the principal whose token was the password
        assert (job["max_attempts"], job["timeout"], job["run_at"]) == (26, 1800.0, None)  # retry 25, reserve_for
    assert jobq.job(pushed["boom"])["max_attempts"] == 1  # retry 0: one attempt

    results = tmp_path / "pyfaktory-results.jsonl"
    wid = f"pyfaktory-{os.getpid()}"
    consumer = spawn(
        [*script, "consume", "pyq"], {"FAKTORY_URL": jobq.url(WORKER), "RESULTS": str(results), "WID": wid}
    )
    done = jobq.wait_status(list(adds), "completed", timeout=20)
    [boom] = jobq.wait_status([pushed["boom"]], "failed")

    assert {row["jid"]: row["sum"] for row in read_results(results)} == {jid: a + b for jid, (a, b) in adds.items()}
    for job in done:
        assert [attempt["outcome"] for attempt in job["history"]] == ["completed"]
        assert job["history"][0]["worker"].endswith(f"/{wid}")  # the consumer as its HELLO named it
    assert boom["error"] == "ValueError: cannot handle bad input"
    assert boom["payload"] == {"args": ["bad input"]}
    [attempt] = boom["history"]
    assert (attempt["outcome"], attempt["error"]) == ("failed", "ValueError: cannot handle bad input")
    assert attempt["traceback"]  # as many lines as the fetched job's "backtrace" asks for

    assert consumer.stop() == 0, consumer.log()  # SIGTERM: it left its run loop and said END
    assert "stopped" in consumer.log()


def test_a_fetched_job_asks_for_its_failures_backtrace(start_jobq: Callable[..., Jobq]) -> None:
    jobq = start_jobq()
    with fwp(jobq.faktory_port, ADMIN, wid="backtrace-worker") as conn:
        push(conn, "backtrace-0001", "boom", "bt", backtrace=0)  # jobq keeps every failure's traceback
        unit = fetch(conn, "bt")
    assert unit["backtrace"] == 50, unit  # the lines pyfaktory and others send with a FAIL


# -- faktory (cdrx) ----------------------------------------------------------------------------
def test_cdrx_client_pushes_and_cdrx_worker_acks_and_fails(
    start_jobq: Callable[..., Jobq], spawn: Callable[..., Child], tmp_path: Path
) -> None:
    jobq = start_jobq()
    adds = {f"cdrx-add-{i}": [i, 100] for i in range(3)}
    with faktory.connection(jobq.url(CLIENT)) as client:  # HELLO without "v": the password hashed once
        for jid, args in adds.items():
            assert client.queue("add", args=args, queue="cdrx", jid=jid)
        assert client.queue("boom", args=["x"], queue="cdrx", jid="cdrx-boom-1", retry=0)
    for jid in adds:
        job = jobq.job(jid)
        assert (job["status"], job["payload"], job["priority"], job["max_attempts"]) == (
            "pending",
            {"args": adds[jid]},
            0,  # Faktory's priority 5
            6,  # the client's default retry 5
        )

    results = tmp_path / "cdrx-results.jsonl"
    worker = cdrx_worker(spawn, jobq, "cdrx", results)
    done = jobq.wait_status(list(adds), "completed")
    [boom] = jobq.wait_status(["cdrx-boom-1"], "failed")

    assert {row["jid"]: row["args"] for row in read_results(results)} == adds
    assert all([attempt["outcome"] for attempt in job["history"]] == ["completed"] for job in done)
    assert boom["error"] == "ValueError: cannot handle x"
    [attempt] = boom["history"]
    assert (attempt["outcome"], attempt["error"], attempt["traceback"]) == (
        "failed",
        "ValueError: cannot handle x",
        None,  # this client's FAIL has no backtrace
    )
    assert worker.stop() == 0, worker.log()


def test_cdrx_password_checks(start_jobq: Callable[..., Jobq]) -> None:
    jobq = start_jobq()
    with faktory.connection(jobq.url(CLIENT)) as client:  # the right token, hashed once (no "v" in HELLO)
        assert client.is_connected
        assert client.queue("echo", args=[1], queue="auth", jid="auth-right-1")
    assert jobq.job("auth-right-1")["status"] == "pending"

    # a wrong token: the client saw "-ERR Invalid password"; no token at all: "-ERR jobq needs a password ..."
    with pytest.raises(faktory.FaktoryAuthenticationError), faktory.connection(jobq.url("not-a-known-0000")) as client:
        client.queue("echo", args=[1], queue="auth", jid="auth-wrong-1")
    no_password = f"tcp://127.0.0.1:{jobq.faktory_port}"
    with (
        pytest.raises(faktory.FaktoryHandshakeError, match="needs a password"),
        faktory.connection(no_password) as client,
    ):
        client.queue("echo", args=[1], queue="auth", jid="auth-none-1")
    for jid in ("auth-wrong-1", "auth-none-1"):
        assert jobq.http("GET", f"/jobs/{jid}")[0] == 404

    # On the wire: one round without "v" (as this client hashes), the HI's count of rounds with "v": 2
    # (one too: a jobq token needs no stretching); a hash of other rounds proves nothing.
    with Fwp(jobq.faktory_port) as conn:
        assert conn.hi["i"] == 1
        assert conn.hello(CLIENT, version=None) == "OK"
    for token, rounds in (("not-a-known-token-0000", None), (CLIENT, 2)):
        with Fwp(jobq.faktory_port) as conn:
            with pytest.raises(FwpError, match="Invalid password"):
                conn.hello(token, version=2, rounds=rounds)
            assert conn.closed_by_server()


# -- Node: faktory-worker -------------------------------------------------------------------------
def test_node_pushes_and_works(start_jobq: Callable[..., Jobq]) -> None:
    jobq = start_jobq()
    result = drive(jobq, ADMIN, "push-and-work")  # one URL pushes and fetches: the admin token may do both
    assert result["sums"] == sorted(2 * i for i in range(20))
    *add_jids, boom_jid = result["pushed_jids"]
    assert boom_jid == result["boom_jid"] and len(add_jids) == 20
    for i, job in enumerate(jobq.wait_status(add_jids, "completed")):
        assert (job["type"], job["queue"], job["payload"]) == ("add", "node", {"args": [i, i]})
    [boom] = jobq.wait_status([boom_jid], "failed")
    assert boom["error"] == "undefined: kaboom"  # the Node client sends errtype `${err.code}`
    [attempt] = boom["history"]
    assert attempt["outcome"] == "failed"
    assert "kaboom" in attempt["traceback"]  # the Error's stack, as its backtrace


def test_node_info_reports_queues_and_sets(start_jobq: Callable[..., Jobq]) -> None:
    jobq = start_jobq("--retry-base", "300")  # a failed job with retries left stays retrying
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    with fwp(jobq.faktory_port, ADMIN, wid="info-worker") as conn:
        for i in range(3):
            push(conn, f"alpha-{i:04}", "t", "alpha")
        for i in range(2):
            push(conn, f"beta-{i:04}", "t", "beta")
        push(conn, "later-0001", "t", "later", at=later)
        for name in ("done", "retry", "fail", "held"):
            push(conn, f"work-{name}", "t", "work", retry=3 if name == "retry" else 0)
        for _ in range(4):
            jid = fetch(conn, "work")["jid"]
            if jid == "work-done":
                assert conn.call("ACK", {"jid": jid}) == "OK"
            elif jid != "work-held":
                fail(conn, jid)
        assert [jobq.job(f"work-{name}")["status"] for name in ("done", "retry", "fail", "held")] == [
            "completed",
            "retrying",
            "failed",
            "processing",
        ]

        info = drive(jobq, CLIENT, "info")  # INFO: any role; conn stays open and holds work-held

    stats = info["faktory"]
    assert stats["queues"] == {"alpha": 3, "beta": 2, "later": 0, "work": 0}
    assert stats["sets"] == {"scheduled": 1, "retries": 1, "dead": 1, "working": 1}
    assert (stats["total_processed"], stats["total_failures"]) == (1, 1)
    assert (stats["total_enqueued"], stats["total_queues"]) == (5, 4)
    assert info["server"]["description"] == "jobq"
    assert info["server"]["connections"] >= 2  # the raw worker and the Node client


def test_node_mutate_kills_retries_and_requeues_dead(start_jobq: Callable[..., Jobq]) -> None:
    jobq = start_jobq("--retry-base", "300")
    with fwp(jobq.faktory_port, ADMIN, wid="mutate-worker") as conn:
        push(conn, "doomed-0001", "doomed", "mq", retry=3)
        push(conn, "doomed-0002", "doomed", "mq", retry=3)
        push(conn, "revive-0001", "revive", "mq", retry=0)
        push(conn, "revive-0002", "revive", "mq", retry=3)
        for _ in range(4):
            fail(conn, fetch(conn, "mq")["jid"])
    before = {"doomed-0001": "retrying", "doomed-0002": "retrying", "revive-0001": "failed", "revive-0002": "retrying"}
    assert {jid: jobq.job(jid)["status"] for jid in before} == before

    refused = drive(jobq, WORKER, "mutate", check=False, JIDS="doomed-0001", JOBTYPE="revive")
    assert refused.returncode != 0
    assert "MUTATE needs a token with role admin" in refused.stderr
    assert {jid: jobq.job(jid)["status"] for jid in before} == before

    # kill doomed-0001 (by jid, in retries), then requeue every "revive" job in dead
    assert drive(jobq, ADMIN, "mutate", JIDS="doomed-0001", JOBTYPE="revive") == {"ok": True}
    after = {"doomed-0001": "dead", "doomed-0002": "retrying", "revive-0001": "pending", "revive-0002": "retrying"}
    assert {jid: jobq.job(jid)["status"] for jid in after} == after
    killed = jobq.job("doomed-0001")
    assert "MUTATE kill" in killed["error"]


# -- across protocols ---------------------------------------------------------------------------
def test_http_job_reaches_a_faktory_worker(
    start_jobq: Callable[..., Jobq], spawn: Callable[..., Child], tmp_path: Path
) -> None:
    jobq = start_jobq()
    status, plain = jobq.http("POST", "/enqueue", {"type": "echo", "payload": {"x": 1}, "queue": "cross"}, CLIENT)
    assert status == 202, plain
    status, shaped = jobq.http(
        "POST",
        "/enqueue",
        {"type": "echo", "payload": {"args": [1, "two"], "custom": {"k": "v"}}, "queue": "cross"},
        CLIENT,
    )
    assert status == 202, shaped

    results = tmp_path / "cross-results.jsonl"
    worker = cdrx_worker(spawn, jobq, "cross", results)
    jobq.wait_status([plain["id"], shaped["id"]], "completed")
    seen = {row["jid"]: row["args"] for row in read_results(results)}
    assert seen == {plain["id"]: [{"x": 1}], shaped["id"]: [1, "two"]}  # a payload not {"args": [...]} is one arg
    assert jobq.job(plain["id"])["payload"] == {"x": 1}  # as enqueued
    assert worker.stop() == 0, worker.log()


def test_faktory_pushed_job_reads_over_http(start_jobq: Callable[..., Jobq]) -> None:
    jobq = start_jobq()
    at = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=250000)
    with faktory.connection(jobq.url(CLIENT)) as client:
        assert client.queue(
            "report",
            args=[7, {"kind": "monthly"}],
            queue="reports",
            jid="report-0001",
            priority=9,
            custom={"trace": "abc"},
            reserve_for=120,
            retry=2,
            at=at.isoformat().replace("+00:00", "Z"),
        )
    job = jobq.job("report-0001")
    assert (job["id"], job["type"], job["queue"], job["status"]) == ("report-0001", "report", "reports", "scheduled")
    assert job["payload"] == {"args": [7, {"kind": "monthly"}], "custom": {"trace": "abc"}}
    assert (job["priority"], job["max_attempts"], job["timeout"]) == (4, 3, 120.0)  # 9 - 5, retry + 1, reserve_for
    assert datetime.fromisoformat(job["run_at"]) == at
    assert job["owner"] == "client"
    status, own = jobq.http("GET", "/jobs/report-0001", token=CLIENT)  # the pushing client reads its own job
    assert (status, own["id"]) == (200, "report-0001")


# -- roles -----------------------------------------------------------------------------------
def test_roles_apply_to_faktory_commands(start_jobq: Callable[..., Jobq]) -> None:
    jobq = start_jobq()
    with fwp(jobq.faktory_port, CLIENT, wid="client-as-worker") as producer:
        push(producer, "role-0001", "t", "roles")
        with pytest.raises(FwpError, match="FETCH needs a token with role admin or worker; 'client' has role client"):
            producer.call("FETCH", "roles")
        assert producer.call("INFO")["faktory"]["queues"] == {"roles": 1}  # INFO: any role
    assert jobq.job("role-0001")["status"] == "pending"

    with fwp(jobq.faktory_port, WORKER, wid="a-worker") as worker:
        with pytest.raises(FwpError, match="MUTATE needs a token with role admin"):
            worker.call("MUTATE", {"cmd": "clear", "target": "dead"})
        # enqueueing: a worker token may over FWP what it may over HTTP
        http_status, _ = jobq.http("POST", "/enqueue", {"type": "t", "queue": "roles", "payload": {}}, WORKER)
        try:
            pushed = worker.call("PUSH", {"jid": "role-0002", "jobtype": "t", "args": [], "queue": "roles"}) == "OK"
        except FwpError:
            pushed = False
        assert pushed == (http_status == 202), http_status
        assert fetch(worker, "roles")["jid"] == "role-0001"
        assert worker.call("ACK", {"jid": "role-0001"}) == "OK"
    assert jobq.job("role-0001")["status"] == "completed"


# -- a worker killed mid-job -----------------------------------------------------------------------
def test_killed_faktory_worker_job_runs_again_at_once(
    start_jobq: Callable[..., Jobq], spawn: Callable[..., Child], tmp_path: Path
) -> None:
    # leases last 9 s; a worker with no connection keeps its runs for a third of that: the job comes back
    # as "disconnected" after 3 s, before its lease could lapse
    jobq = start_jobq("--lease-seconds", "9")
    with faktory.connection(jobq.url(CLIENT)) as client:
        assert client.queue("slow", args=["k9"], queue="k9", jid="slow-0001")
    markers = tmp_path / "markers"
    markers.mkdir()
    results = tmp_path / "k9-results.jsonl"

    first = cdrx_worker(spawn, jobq, "k9", results, markers)
    [marker] = wait_until(lambda: list(markers.iterdir()), "the first worker to start the job")
    assert marker.name == f"slow-0001.{first.process.pid}"
    assert jobq.job("slow-0001")["status"] == "processing"

    killed_at = time.monotonic()
    first.kill_group()
    jobq.wait_status(["slow-0001"], "pending", timeout=8)  # handed back after the grace, not after its lease

    cdrx_worker(spawn, jobq, "k9", results)  # runs it to the end this time
    [job] = jobq.wait_status(["slow-0001"], "completed")
    assert time.monotonic() - killed_at < 15
    assert [attempt["outcome"] for attempt in job["history"]] == ["disconnected", "completed"]
    assert job["history"][0]["worker"] != job["history"][1]["worker"]
    [row] = read_results(results)
    assert (row["jid"], row["args"]) == ("slow-0001", ["k9"])
    assert list(markers.iterdir()) == [marker]  # the first run was the only one that blocked
