"""Bearer tokens and roles: every HTTP route and gRPC method for every caller, owners, tokens, exposure."""

from __future__ import annotations

import hmac
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from jobq import auth
from jobq.api import SERVICE
from jobq.app import create_app
from jobq.auth import Forbidden, Principal, Role, TokenBook, TokenError, Unauthorized, bearer_token, token_digest
from jobq.errors import JobNotFound
from jobq.handlers import Registry
from jobq.job import Job, JobStatus
from jobq.rpc.gen import jobq_pb2 as pb
from jobq.rpc.gen import jobq_pb2_grpc as pb_grpc
from jobq.rpc.server import GrpcServer, start_grpc_server
from jobq.sdk.client import JobqClient
from jobq.store.sqlite import MIGRATIONS, SQLiteStore
from tests.conftest import TEST_CONFIG
from tests.procs import ROOT, ManagedProcess, ServerProcess, WorkerProcess, free_port

CLIENT_TOKEN = "client-token-0123456789"
OTHER_CLIENT_TOKEN = "other-client-token-0123456789"
WORKER_TOKEN = "worker-token-0123456789"
ADMIN_TOKEN = "admin-token-0123456789"
WRONG_TOKEN = "wrong-token-0123456789"

CALLERS: dict[str, str | None] = {
    "none": None,
    "wrong": WRONG_TOKEN,
    "client": CLIENT_TOKEN,
    "worker": WORKER_TOKEN,
    "admin": ADMIN_TOKEN,
}

PUBLIC = "public"
ANY = "any role"
# Who may call each route. A route missing here fails test_every_route_is_in_the_access_table.
ACCESS: dict[tuple[str, str], str] = {
    ("GET", "/health"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/{file}"): PUBLIC,
    ("GET", "/"): PUBLIC,  # to the dashboard, whose page and files hold no data
    ("GET", "/ui"): PUBLIC,
    ("GET", "/ui/{asset}"): PUBLIC,
    ("GET", "/ui/session"): PUBLIC,
    ("POST", "/ui/login"): PUBLIC,
    ("POST", "/ui/logout"): PUBLIC,
    ("GET", "/ui/events"): ANY,
    ("GET", "/ui/events/jobs/{id}"): "client",
    ("GET", "/stats"): ANY,
    ("GET", "/nodes"): "worker",
    ("GET", "/schedules"): "admin",
    ("POST", "/schedules"): "admin",
    ("GET", "/schedules/{name}"): "admin",
    ("PUT", "/schedules/{name}"): "admin",
    ("DELETE", "/schedules/{name}"): "admin",
    ("POST", "/schedules/{name}/pause"): "admin",
    ("POST", "/schedules/{name}/resume"): "admin",
    ("POST", "/schedules/{name}/run"): "admin",
    ("GET", "/metrics"): ANY,
    ("POST", "/enqueue"): "client",
    ("POST", "/enqueue/batch"): "client",
    ("GET", "/status/{id}"): "client",
    ("GET", "/jobs/{id}"): "client",
    ("GET", "/jobs"): "client",
    ("GET", "/jobs/{id}/logs"): "client",
    ("GET", "/jobs/{id}/parents"): ANY,  # a worker reads the parents of the job it runs
    ("POST", "/workflows"): "client",
    ("GET", "/workflows/{id}"): "client",
    ("POST", "/jobs/{id}/cancel"): "client",
    ("POST", "/jobs/{id}/retry"): "admin",
    ("DELETE", "/jobs/{id}"): "admin",
    ("POST", "/jobs/retry"): "admin",
    ("POST", "/jobs/delete"): "admin",
    ("GET", "/queues"): ANY,
    ("GET", "/queues/{name}/next"): "admin",
    ("POST", "/queues/{name}/pause"): "admin",
    ("POST", "/queues/{name}/resume"): "admin",
    ("DELETE", "/queues/{name}/jobs"): "admin",
    ("GET", "/queues/{name}/flow"): ANY,
    ("PUT", "/queues/{name}/flow"): "admin",
    ("DELETE", "/queues/{name}/flow"): "admin",
    ("POST", "/workers/lease"): "worker",
    ("POST", "/workers/settle"): "worker",
    ("POST", "/workers/heartbeat"): "worker",
    ("POST", "/jobs/{id}/heartbeat"): "worker",
    ("POST", "/jobs/{id}/complete"): "worker",
    ("POST", "/jobs/{id}/fail"): "worker",
    ("POST", "/jobs/{id}/release"): "worker",
    ("POST", "/jobs/{id}/log"): "worker",
    ("POST", "/jobs/{id}/progress"): "worker",
}


def token_book() -> TokenBook:
    return TokenBook(
        [
            (CLIENT_TOKEN, Principal("alice", Role.CLIENT)),
            (OTHER_CLIENT_TOKEN, Principal("bob", Role.CLIENT)),
            (WORKER_TOKEN, Principal("worker-1", Role.WORKER)),
            (ADMIN_TOKEN, Principal("root", Role.ADMIN)),
        ]
    )


def allowed(access: str, caller: str) -> bool:
    if access == PUBLIC:
        return True
    if caller in ("none", "wrong"):
        return False
    return access == ANY or caller in (access, "admin")


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def router_routes() -> list[tuple[str, str]]:
    """(method, route template) of every route the app serves, HEAD included, from its own router."""
    app = create_app(replace(TEST_CONFIG, workers=0), tokens=token_book())
    return sorted({(route.method, route.resource.canonical) for route in app.router.routes() if route.resource})


ROUTES = router_routes()


def expected_access(method: str, template: str) -> str:
    return ACCESS[("GET" if method == "HEAD" else method, template)]


@pytest.fixture
async def guarded(aiohttp_client: Any, registry: Registry) -> TestClient:
    """An app with tokens for every role (two clients), on the memory store, with no workers."""
    app = create_app(replace(TEST_CONFIG, workers=0, max_wait=0.1), handlers=registry, tokens=token_book())
    return await aiohttp_client(app)  # max_wait: the dashboard's feeds end at once


# -- tokens ------------------------------------------------------------------
def test_every_route_is_in_the_access_table() -> None:
    served = {("GET" if method == "HEAD" else method, template) for method, template in ROUTES}
    assert served == set(ACCESS), "a route was added or removed: say in ACCESS who may call it"


def test_tokens_come_from_the_environment_and_a_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps([{"name": "ci", "role": "worker", "token": "ci-token-0123456789"}]))
    path.chmod(0o600)
    environ = {"JOBQ_TOKEN": CLIENT_TOKEN, "JOBQ_ADMIN_TOKEN": ADMIN_TOKEN, "JOBQ_WORKER_TOKEN": ""}
    book = TokenBook.load(environ, str(path))
    assert book.principals == [
        Principal("client", Role.CLIENT),
        Principal("admin", Role.ADMIN),
        Principal("ci", Role.WORKER),
    ]
    assert book.authenticate("Bearer ci-token-0123456789") == Principal("ci", Role.WORKER)
    assert book.describe() == "3 tokens (client: 1, worker: 1, admin: 1)"
    assert not TokenBook.load({}, "")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "is not valid JSON"),
        ('{"name": "x"}', "must hold a JSON list"),
        ('[{"name": "x", "role": "client"}]', "exactly the keys name, role and token"),
        ('[{"name": "x", "role": "root", "token": "0123456789abcdefgh"}]', "role must be one of client, worker, admin"),
        ('[{"name": "x", "role": "client", "token": "short"}]', "use at least 16"),
        ('[{"name": "x", "role": "client", "token": "has spaces in it, alas"}]', "may hold only letters"),
        ('[{"name": "", "role": "client", "token": "0123456789abcdefgh"}]', "name must be"),
        (
            '[{"name": "x", "role": "client", "token": "0123456789abcdefgh"},'
            ' {"name": "x", "role": "admin", "token": "0123456789abcdefghij"}]',
            "two tokens are named 'x'",
        ),
        (
            '[{"name": "x", "role": "client", "token": "0123456789abcdefgh"},'
            ' {"name": "y", "role": "admin", "token": "0123456789abcdefgh"}]',
            "each token must be unique",
        ),
    ],
)
def test_a_bad_tokens_file_is_refused_naming_why(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(content)
    with pytest.raises(TokenError, match=message):
        TokenBook.load({}, str(path))


def test_a_missing_tokens_file_and_a_short_variable_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match="cannot read the tokens file"):
        TokenBook.load({}, str(tmp_path / "nope.json"))
    with pytest.raises(TokenError, match="the token of 'worker' is 5 characters long"):
        TokenBook.load({"JOBQ_WORKER_TOKEN": "short"})


def test_a_tokens_file_others_can_read_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "tokens.json"
    path.write_text("[]")
    path.chmod(0o644)
    TokenBook.load({}, str(path))
    assert "can be read by other users" in caplog.text


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Bearer   ", None),
        ("Basic dXNlcjpwYXNz", None),
        (f"Bearer {CLIENT_TOKEN}", CLIENT_TOKEN),
        (f"bearer {CLIENT_TOKEN}", CLIENT_TOKEN),
        (f"  BEARER   {CLIENT_TOKEN} ", CLIENT_TOKEN),
    ],
)
def test_bearer_header_parsing(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_every_token_is_compared_with_compare_digest_without_stopping_early(monkeypatch: pytest.MonkeyPatch) -> None:
    book = token_book()
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(given: bytes, known: bytes) -> bool:
        compared.append((given, known))
        return real(given, known)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    known = [CLIENT_TOKEN, OTHER_CLIENT_TOKEN, WORKER_TOKEN, ADMIN_TOKEN]
    for presented, who in [(CLIENT_TOKEN, "alice"), (ADMIN_TOKEN, "root"), (WRONG_TOKEN, None)]:
        compared.clear()
        principal = book.authenticate(f"Bearer {presented}")
        assert (principal.name if principal else None) == who
        # one constant-time comparison per known token, the first match included: no early exit
        assert compared == [(token_digest(presented), token_digest(token)) for token in known]
        assert {len(given) for pair in compared for given in pair} == {32}  # equal lengths: nothing to time


def test_the_decision_is_compare_digests_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    book = token_book()
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda given, known: False)
    assert book.authenticate(f"Bearer {CLIENT_TOKEN}") is None  # a right token is refused: no == behind it
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda given, known: known == token_digest(WORKER_TOKEN))
    assert book.authenticate("Bearer anything-at-all-here").name == "worker-1"


def test_a_non_ascii_token_is_refused_not_an_error() -> None:
    assert token_book().authenticate("Bearer ünïcödé-token-0123456789") is None


# -- HTTP: every route for every caller ---------------------------------------
@pytest.mark.parametrize(("method", "template"), ROUTES, ids=[f"{m} {t}" for m, t in ROUTES])
async def test_every_route_answers_every_caller_by_role(guarded: TestClient, method: str, template: str) -> None:
    access = expected_access(method, template)
    path = template.replace("{id}", "job-1").replace("{name}", "default")
    for caller, token in CALLERS.items():
        response = await guarded.request(method, path, headers=bearer(token))
        body = await response.read()
        context = f"{method} {path} as {caller}: {response.status} {body[:200]!r}"
        if allowed(access, caller):
            # past auth, the route itself answers: success, or its own 4xx for the empty body and unknown job
            assert response.status < 500 and response.status not in (401, 403), context
            continue
        expected = 401 if caller in ("none", "wrong") else 403
        assert response.status == expected, context
        assert response.content_type == "application/problem+json", context
        challenge = response.headers["WWW-Authenticate"]
        if caller == "none":
            assert challenge == 'Bearer realm="jobq"', context
        elif caller == "wrong":
            assert challenge == 'Bearer realm="jobq", error="invalid_token"', context
        else:
            assert challenge == 'Bearer realm="jobq", error="insufficient_scope"', context
        if method != "HEAD":
            problem = json.loads(body)
            assert (problem["status"], problem["title"]) == (
                expected,
                "Unauthorized" if expected == 401 else "Forbidden",
            )


async def test_another_scheme_is_a_missing_token(guarded: TestClient) -> None:
    response = await guarded.get("/jobs", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="jobq"'


async def test_unknown_routes_and_methods_answer_as_without_tokens(guarded: TestClient) -> None:
    assert (await guarded.get("/nope")).status == 404
    assert (await guarded.get("/enqueue")).status == 405


async def test_an_undeclared_handler_is_for_admins_only(aiohttp_client: Any) -> None:
    async def undeclared(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = create_app(replace(TEST_CONFIG, workers=0), tokens=token_book())
    app.router.add_get("/undeclared", undeclared)
    client = await aiohttp_client(app)
    assert (await client.get("/undeclared", headers=bearer(CLIENT_TOKEN))).status == 403
    assert (await client.get("/undeclared", headers=bearer(ADMIN_TOKEN))).status == 200


# -- HTTP: clients see their own jobs ------------------------------------------
async def job_ids(client: TestClient, headers: dict[str, str]) -> list[str]:
    response = await client.get("/jobs", headers=headers)
    assert response.status == 200
    return [job["id"] for job in (await response.json())["jobs"]]


async def test_a_client_sees_only_its_own_jobs(guarded: TestClient) -> None:
    alice, bob, admin = bearer(CLIENT_TOKEN), bearer(OTHER_CLIENT_TOKEN), bearer(ADMIN_TOKEN)
    response = await guarded.post("/enqueue", json={"type": "echo", "id": "a-1"}, headers=alice)
    assert response.status == 202
    assert (await response.json())["owner"] == "alice"
    for method, path in [
        ("GET", "/status/a-1"),
        ("GET", "/jobs/a-1"),
        ("GET", "/status/a-1?wait=5"),
        ("GET", "/jobs/a-1/logs"),
        ("POST", "/jobs/a-1/cancel"),
    ]:
        refused = await guarded.request(method, path, headers=bob)
        assert refused.status == 404, f"{method} {path}"
        assert (await refused.json())["detail"] == "no job with id 'a-1'"  # as for an id nobody used
    assert (await guarded.get("/status/a-1", headers=alice)).status == 200
    assert (await guarded.get("/status/a-1", headers=admin)).status == 200
    assert await job_ids(guarded, bob) == []
    assert await job_ids(guarded, alice) == ["a-1"]
    assert await job_ids(guarded, admin) == ["a-1"]
    replay = await guarded.post("/enqueue", json={"type": "echo", "id": "a-1"}, headers=bob)
    assert replay.status == 409  # an id is not a way to read someone else's job
    assert (await guarded.post("/enqueue", json={"type": "echo", "id": "a-1"}, headers=alice)).status == 200
    batch = await guarded.post("/enqueue/batch", json={"jobs": [{"type": "echo", "id": "a-1"}]}, headers=bob)
    assert (await batch.json())["results"][0]["code"] == 409
    cancelled = await guarded.post("/jobs/a-1/cancel", headers=alice)
    assert (await cancelled.json())["status"] == "cancelled"


async def test_a_client_tokens_unique_keys_are_its_own(guarded: TestClient) -> None:
    alice, bob, admin = bearer(CLIENT_TOKEN), bearer(OTHER_CLIENT_TOKEN), bearer(ADMIN_TOKEN)
    job = {"type": "echo", "unique_key": "invoice-7"}
    first = await guarded.post("/enqueue", json=job, headers=alice)
    assert first.status == 202
    mine = await guarded.post("/enqueue", json=job, headers=alice)
    assert mine.status == 200 and mine.headers["Jobq-Duplicate-Of"] == (await first.json())["id"]
    theirs = await guarded.post("/enqueue", json=job, headers=bob)  # bob's key is bob's: neither blocked nor told
    assert theirs.status == 202 and "Jobq-Duplicate-Of" not in theirs.headers
    record = await (await guarded.get(f"/jobs/{(await first.json())['id']}", headers=alice)).json()
    assert record["unique"]["key"] == "alice/invoice-7"
    held = await guarded.post("/enqueue", json={"type": "echo", "unique_key": "alice/invoice-7"}, headers=admin)
    assert held.status == 200  # an admin sees every job, and may name any key


async def test_a_clients_listing_reads_on_past_other_clients_jobs(guarded: TestClient) -> None:
    bob = bearer(OTHER_CLIENT_TOKEN)
    assert (await guarded.post("/enqueue", json={"type": "echo", "id": "b-1"}, headers=bob)).status == 202
    jobs = [{"type": "echo", "id": f"a-{n}"} for n in range(30)]
    assert (await guarded.post("/enqueue/batch", json={"jobs": jobs}, headers=bearer(CLIENT_TOKEN))).status == 200
    response = await guarded.get("/jobs?limit=5", headers=bob)
    page = await response.json()
    assert [job["id"] for job in page["jobs"]] == ["b-1"]
    assert page["next_cursor"] is None


async def test_workers_serve_every_clients_jobs(guarded: TestClient) -> None:
    await guarded.post("/enqueue", json={"type": "echo", "id": "a-2"}, headers=bearer(CLIENT_TOKEN))
    worker = bearer(WORKER_TOKEN)
    leased = await (await guarded.post("/workers/lease", json={"max_jobs": 5}, headers=worker)).json()
    [job] = leased["jobs"]
    assert job["id"] == "a-2"
    done = await guarded.post("/jobs/a-2/complete", json={"lease_id": job["lease_id"], "result": 1}, headers=worker)
    assert (await done.json())["status"] == "completed"
    assert (await done.json())["owner"] == "alice"  # a worker serves every client's jobs


async def test_the_sdk_sends_its_token_and_raises_401_and_403(guarded: TestClient) -> None:
    url = str(guarded.make_url(""))
    async with JobqClient(url, token=CLIENT_TOKEN) as alice, JobqClient(url, token=OTHER_CLIENT_TOKEN) as bob:
        job = await alice.enqueue("echo", {"n": 1})
        assert job.owner == "alice"
        assert (await alice.get(job.id)).status is JobStatus.PENDING
        with pytest.raises(JobNotFound):
            await bob.get(job.id)
        with pytest.raises(Forbidden):
            await alice.retry(job.id)
    async with JobqClient(url) as anonymous:
        with pytest.raises(Unauthorized) as caught:
            await anonymous.list()
        assert caught.value.status == 401


async def test_without_tokens_everything_stays_open(aiohttp_client: Any) -> None:
    client = await aiohttp_client(create_app(replace(TEST_CONFIG, workers=0)))
    response = await client.post("/enqueue", json={"type": "echo", "id": "open-1"})
    assert response.status == 202
    assert (await response.json())["owner"] is None
    assert (await client.post("/queues/default/pause")).status == 200
    assert (await client.get("/status/open-1", headers=bearer(WRONG_TOKEN))).status == 200


# -- gRPC: every method for every caller ----------------------------------------
@pytest.fixture
async def grpc_guarded(guarded: TestClient) -> AsyncIterator[tuple[GrpcServer, grpc.aio.Channel]]:
    server = await start_grpc_server(guarded.app[SERVICE], "127.0.0.1", 0, tokens=token_book())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    yield server, channel
    await channel.close()
    await server.stop(0)


JOBQ_METHODS = [
    (service.full_name, method.name, method.server_streaming)
    for service in pb.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]
GRPC_ACCESS = {"jobq.v1.JobService": "client", "jobq.v1.WorkerService": "worker", "jobq.v1.AdminService": "admin"}
GRPC_METHOD_ACCESS = {
    "jobq.v1.AdminService/GetQueueFlow": ANY,  # as GET /queues/{name}/flow: any token
    "jobq.v1.JobService/GetParents": ANY,  # as GET /jobs/{id}/parents: a worker reads its job's parents
}


def metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


async def grpc_code(channel: grpc.aio.Channel, service: str, method: str, streaming: bool, token: str | None) -> Any:
    """The status code a call with an empty request ends with."""
    descriptor = pb.DESCRIPTOR.services_by_name[service.rpartition(".")[2]].methods_by_name[method]
    request = getattr(pb, descriptor.input_type.name)()
    response = getattr(pb, descriptor.output_type.name)
    path = f"/{service}/{method}"
    try:
        if streaming:
            call = channel.unary_stream(
                path, request_serializer=type(request).SerializeToString, response_deserializer=response.FromString
            )
            async for _ in call(request, metadata=metadata(token), timeout=5):
                break
        else:
            unary = channel.unary_unary(
                path, request_serializer=type(request).SerializeToString, response_deserializer=response.FromString
            )
            await unary(request, metadata=metadata(token), timeout=5)
    except grpc.aio.AioRpcError as error:
        return error
    return grpc.StatusCode.OK


def test_every_jobq_service_is_in_the_grpc_access_table() -> None:
    assert {service for service, _, _ in JOBQ_METHODS} == set(GRPC_ACCESS)


@pytest.mark.parametrize(("service", "method", "streaming"), JOBQ_METHODS, ids=[f"{s}/{m}" for s, m, _ in JOBQ_METHODS])
async def test_every_rpc_answers_every_caller_by_role(
    grpc_guarded: tuple[GrpcServer, grpc.aio.Channel], service: str, method: str, streaming: bool
) -> None:
    _, channel = grpc_guarded
    for caller, token in CALLERS.items():
        outcome = await grpc_code(channel, service, method, streaming, token)
        code = outcome.code() if isinstance(outcome, grpc.aio.AioRpcError) else outcome
        context = f"{service}/{method} as {caller}: {code}"
        if allowed(GRPC_METHOD_ACCESS.get(f"{service}/{method}", GRPC_ACCESS[service]), caller):
            assert code not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED), context
            assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), context
            continue
        expected = grpc.StatusCode.UNAUTHENTICATED if caller in ("none", "wrong") else grpc.StatusCode.PERMISSION_DENIED
        assert code == expected, context
        trailers = dict(outcome.trailing_metadata() or ())
        assert trailers["www-authenticate"].startswith('Bearer realm="jobq"'), context
        assert trailers["jobq-error"] == ("Unauthorized" if caller in ("none", "wrong") else "Forbidden")


@pytest.mark.parametrize("caller", list(CALLERS))
async def test_health_and_reflection_stay_open(grpc_guarded: tuple[GrpcServer, grpc.aio.Channel], caller: str) -> None:
    _, channel = grpc_guarded
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    answer = await check(health_pb2.HealthCheckRequest(), metadata=metadata(CALLERS[caller]), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflect = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    call = reflect(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=metadata(CALLERS[caller]))
    names = [service.name async for reply in call for service in reply.list_services_response.service]
    assert "jobq.v1.JobService" in names


async def test_grpc_clients_see_only_their_own_jobs(grpc_guarded: tuple[GrpcServer, grpc.aio.Channel]) -> None:
    _, channel = grpc_guarded
    jobs = pb_grpc.JobServiceStub(channel)
    alice, bob, admin = metadata(CLIENT_TOKEN), metadata(OTHER_CLIENT_TOKEN), metadata(ADMIN_TOKEN)
    answer = await jobs.Enqueue(pb.EnqueueRequest(type="echo", id="g-1"), metadata=alice)
    assert answer.created
    for call in (
        jobs.GetJob(pb.GetJobRequest(id="g-1"), metadata=bob),
        jobs.CancelJob(pb.CancelJobRequest(id="g-1"), metadata=bob),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    watch = jobs.WatchJob(pb.WatchJobRequest(id="g-1"), metadata=bob)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await watch.read()
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert [j.id for j in (await jobs.ListJobs(pb.ListJobsRequest(), metadata=bob)).jobs] == []
    assert [j.id for j in (await jobs.ListJobs(pb.ListJobsRequest(), metadata=alice)).jobs] == ["g-1"]
    assert (await jobs.GetJob(pb.GetJobRequest(id="g-1"), metadata=admin)).id == "g-1"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await jobs.Enqueue(pb.EnqueueRequest(type="echo", id="g-1"), metadata=bob)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    first = await jobs.WatchJob(pb.WatchJobRequest(id="g-1"), metadata=alice).read()
    assert first.id == "g-1"


# -- the process: exposure, tokens, remote workers ------------------------------
def run_main(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JOBQ_")}
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args],
        cwd=ROOT,
        env={**clean, "PYTHONPATH": str(ROOT), "JOBQ_GRPC_PORT": "0", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_non_loopback_host_without_tokens_refuses_to_start() -> None:
    result = run_main("--store", "memory://", "--host", "0.0.0.0", "--port", str(free_port()))
    assert result.returncode == 2, result.stderr
    assert "--host 0.0.0.0 is not a loopback address and no tokens are configured" in result.stderr
    assert "--insecure" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_token_variable_refuses_to_start() -> None:
    result = run_main("--store", "memory://", "--port", "0", env={"JOBQ_ADMIN_TOKEN": "short"})
    assert result.returncode == 2, result.stderr
    assert "jobq cannot start: the token of 'admin' is 5 characters long" in result.stderr
    assert "Traceback" not in result.stderr


def wait_healthy(process: ManagedProcess, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert process.process.poll() is None, f"server exited with {process.process.returncode}:\n{process.log()}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return
        except OSError:
            assert time.monotonic() < deadline, f"server not ready:\n{process.log()}"
            time.sleep(0.05)


@pytest.mark.parametrize(
    ("args", "env", "logged"),
    [
        (("--insecure",), {}, "--insecure: serving 0.0.0.0 without tokens"),
        ((), {"JOBQ_ADMIN_TOKEN": ADMIN_TOKEN}, "bearer tokens required: 1 tokens (client: 0, worker: 0, admin: 1)"),
    ],
    ids=["insecure", "tokens"],
)
def test_a_non_loopback_host_starts_with_insecure_or_tokens(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], logged: str
) -> None:
    port = free_port()
    clean = {k: "" for k in os.environ if k.startswith("JOBQ_")}
    argv = [str(ROOT / "main.py"), "--store", "memory://", "--host", "0.0.0.0", "--port", str(port), *args]
    server = ManagedProcess(tmp_path / "server.log", argv, {**clean, "JOBQ_GRPC_PORT": "0", **env})
    try:
        wait_healthy(server, port)
        server.send(signal.SIGTERM)
        assert server.wait(timeout=15) == 0
    finally:
        server.stop()
    assert logged in server.log()
    assert ADMIN_TOKEN not in server.log()  # tokens are never logged


def test_a_remote_worker_and_a_client_use_their_tokens(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(
        json.dumps(
            [
                {"name": "alice", "role": "client", "token": CLIENT_TOKEN},
                {"name": "box-1", "role": "worker", "token": WORKER_TOKEN},
            ]
        )
    )
    tokens.chmod(0o600)
    runs = tmp_path / "runs.txt"
    env = {"JOBQ_TEST_RUNS_FILE": str(runs)}
    server = ServerProcess(
        tmp_path / "server.log", "--store", "memory://", "--workers", "0", "--tokens-file", str(tokens), env=env
    )
    worker: WorkerProcess | None = None
    try:
        server.wait_ready()
        status, problem = server.request("POST", "/enqueue", {"type": "record", "id": "r-1"})
        assert status == 401, problem
        request = urllib.request.Request(
            server.url + "/enqueue?wait=20",
            data=json.dumps({"type": "record", "id": "r-1"}).encode(),
            headers={"Authorization": f"Bearer {CLIENT_TOKEN}", "Content-Type": "application/json"},
        )
        worker = WorkerProcess(
            tmp_path / "worker.log",
            server.url,
            "--handlers",
            "tests.fixture_handlers",
            env={**env, "JOBQ_WORKER_TOKEN": WORKER_TOKEN},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            job = json.loads(response.read())
        assert (job["status"], job["owner"], job["history"][0]["worker"] is not None) == ("completed", "alice", True)
        assert runs.read_text().split() == ["r-1"]
    finally:
        if worker is not None:
            worker.stop()
        server.stop()


# -- owners on disk ---------------------------------------------------------------
async def test_owners_survive_a_restart_and_files_from_before_owners_stay_readable(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    with sqlite3.connect(path) as conn:  # a store as the first schema version wrote it
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (1)")
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO jobs (id, seq, type, queue, priority, status, payload, attempts, max_attempts, created_at,"
            " history) VALUES ('old-1', 1, 'echo', 'default', 0, 'pending', '{}', 0, 1, 1.0, '[]')"
        )
    conn.close()
    store = SQLiteStore(path)
    await store.open()
    old = await store.get("old-1")
    assert old is not None and (old.status, old.owner) == (JobStatus.PENDING, None)
    await store.add([Job(id="new-1", type="echo", payload={}, owner="alice")])
    assert await store.with_connection(lambda c: c.execute("SELECT version FROM schema_version").fetchone()[0]) == len(
        MIGRATIONS
    )
    await store.close()
    reopened = SQLiteStore(path)
    await reopened.open()
    try:
        assert (await reopened.get("new-1")).owner == "alice"  # type: ignore[union-attr]
        assert (await reopened.get("old-1")).owner is None  # type: ignore[union-attr]
    finally:
        await reopened.close()


async def test_workflows_keep_to_their_owner_and_a_worker_reads_any_jobs_parents(guarded: TestClient) -> None:
    alice, bob, worker = bearer(CLIENT_TOKEN), bearer(OTHER_CLIENT_TOKEN), bearer(WORKER_TOKEN)
    jobs = [{"type": "echo", "id": "w-1"}, {"type": "echo", "id": "w-2", "depends_on": ["w-1"]}]
    created = await guarded.post("/workflows", json={"id": "alices", "jobs": jobs}, headers=alice)
    assert created.status == 202
    assert (await guarded.get("/workflows/alices", headers=bob)).status == 404
    assert (await guarded.get("/jobs/w-2/parents", headers=bob)).status == 404
    theirs = await guarded.post("/enqueue", json={"type": "echo", "depends_on": ["w-1"]}, headers=bob)
    assert theirs.status == 422  # another client's job is no parent of bob's: it does not exist for bob
    parents = await guarded.get("/jobs/w-2/parents", headers=worker)  # the worker that runs w-2 reads them
    assert parents.status == 200 and [p["id"] for p in (await parents.json())["parents"]] == ["w-1"]
    assert (await (await guarded.get("/status/w-1", headers=alice)).json())["children"] == ["w-2"]


async def test_a_client_cannot_make_another_clients_job_a_parent_by_naming_it_in_its_own_request(
    guarded: TestClient,
) -> None:
    alice, bob, worker = bearer(CLIENT_TOKEN), bearer(OTHER_CLIENT_TOKEN), bearer(WORKER_TOKEN)
    assert (await guarded.post("/enqueue", json={"type": "echo", "id": "secret"}, headers=alice)).status == 202
    leased = (await (await guarded.post("/workers/lease", json={}, headers=worker)).json())["jobs"][0]
    await guarded.post(
        "/jobs/secret/complete", json={"lease_id": leased["lease_id"], "result": "hunter2"}, headers=worker
    )
    sneaky = [{"type": "echo", "id": "secret"}, {"type": "echo", "id": "spy", "depends_on": ["secret"]}]
    for path in ("/workflows", "/enqueue/batch"):
        answer = await guarded.post(path, json={"jobs": sneaky}, headers=bob)
        text = await answer.text()
        assert "hunter2" not in text and (answer.status == 422 or '"code":422' in text), (path, text)
        assert (await guarded.get("/status/spy", headers=bob)).status == 404, path  # nothing of it was stored
