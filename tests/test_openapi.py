"""GET /openapi.json and GET /docs: every route documented, real answers match the document, and a fuzz run.

The schemathesis run starts ``main.py`` as a subprocess and fuzzes every documented operation with
its checks for server errors and for status codes, content types, headers and bodies the document
does not allow (``JOBQ_FUZZ_EXAMPLES`` and ``JOBQ_FUZZ_SEED`` change its size and seed).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import jsonschema_rs
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pydantic_core import to_json

from jobq.api import leased_view
from jobq.app import create_app
from jobq.auth import PUBLIC, access_of
from jobq.job import Job
from jobq.models import EnqueueRequest, JobRecord, LeasedJob
from jobq.openapi import SWAGGER_UI_VERSION, UndocumentedRoute, build_document
from tests.conftest import TEST_CONFIG, MakeClient, StartServer
from tests.procs import ROOT

PROBLEM = "application/problem+json"


def app_routes(app: web.Application) -> dict[tuple[str, str], Any]:
    """(method, template) -> handler of every route the app serves, HEAD folded into GET."""
    return {
        ("GET" if route.method == "HEAD" else route.method, route.resource.canonical): route.handler
        for route in app.router.routes()
        if route.resource is not None
    }


def the_app() -> web.Application:
    return create_app(replace(TEST_CONFIG, workers=0))


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


# -- the document ------------------------------------------------------------------
def test_every_route_is_in_the_document() -> None:
    app = the_app()
    documented = operations(build_document(app))
    assert set(documented) == set(app_routes(app)), "each route the app serves is documented, and no other"


def test_a_route_that_declares_nothing_stops_the_build() -> None:
    async def undeclared(request: web.Request) -> web.Response:
        return web.Response()

    app = the_app()
    app.router.add_post("/undeclared", undeclared)
    with pytest.raises(UndocumentedRoute, match="POST /undeclared"):
        build_document(app)


def test_each_operation_has_its_summary_security_and_problems() -> None:
    app = the_app()
    handlers = app_routes(app)
    document = build_document(app)
    assert document["openapi"] == "3.1.0"
    bearer = document["components"]["securitySchemes"]["bearerAuth"]
    assert (bearer["type"], bearer["scheme"], set(bearer)) == ("http", "bearer", {"type", "scheme", "description"})
    assert bearer["description"]
    ids = [operation["operationId"] for operation in operations(document).values()]
    assert len(ids) == len(set(ids))
    for (method, path), operation in operations(document).items():
        where = f"{method} {path}"
        assert operation["summary"], where
        responses = operation["responses"]
        assert any(code < "400" for code in responses), where  # an answer, or a redirect (GET /)
        problems = {code for code in responses if code >= "400"}
        assert {"400", "413"} <= problems, where  # every route: a request jobq cannot parse, a body too large
        if method in ("POST", "PUT", "PATCH", "DELETE"):
            assert "from another site" in responses["403"]["description"], where  # a browser's cross-site write
        for code in problems - {"503"} if path == "/health" else problems:  # its 503 is its own JSON answer
            assert responses[code]["content"] == {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
        if access_of(handlers[method, path]) is PUBLIC:
            assert operation["security"] == [], where
            assert "401" not in responses or path == "/ui/login", where  # a login may be refused
        else:
            assert operation["security"] == [{"bearerAuth": []}], where
            assert "401" in responses, where
            assert "Token:" in operation["description"], where
        if "requestBody" in operation:
            assert {"413", "415", "422"} <= problems, where
        for name in re.findall(r"\{(\w+)\}", path):
            assert {"name": name, "in": "path"}.items() <= next(
                p for p in operation["parameters"] if p["name"] == name
            ).items(), where


def test_the_public_routes_are_health_the_docs_and_the_dashboards_page() -> None:
    public = {key for key, handler in app_routes(the_app()).items() if access_of(handler) is PUBLIC}
    assert public == {
        ("GET", "/health"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/docs/{file}"),
        ("GET", "/"),  # to /ui
        ("GET", "/ui"),  # the page and its files hold no data: what it shows needs a token
        ("GET", "/ui/{asset}"),
        ("GET", "/ui/session"),
        ("POST", "/ui/login"),
        ("POST", "/ui/logout"),
    }


def test_query_parameters_come_from_their_models() -> None:
    document = build_document(the_app())
    listing = {p["name"]: p for p in operations(document)["GET", "/jobs"]["parameters"]}
    assert set(listing) == {"status", "queue", "type", "workflow", "parent", "q", "limit", "cursor"}
    assert listing["limit"]["schema"] == {"default": 50, "maximum": 500, "minimum": 1, "type": "integer"}
    assert listing["status"]["schema"] == {"$ref": "#/components/schemas/JobStatus"}  # absent, not null
    wait = next(p for p in operations(document)["POST", "/enqueue"]["parameters"] if p["name"] == "wait")
    assert wait["schema"]["maximum"] == 3600


def test_every_reference_resolves() -> None:
    document = build_document(the_app())
    text = json.dumps(document)
    refs = set(re.findall(r'"\$ref": "([^"]+)"', text)) | set(re.findall(r'"operationRef": "([^"]+)"', text))
    for ref in refs:
        node: Any = document
        for part in ref.removeprefix("#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
    ids = {op["operationId"] for op in operations(document).values()}
    links = [
        link
        for op in operations(document).values()
        for answer in op["responses"].values()
        for link in answer.get("links", {}).values()
    ]
    linked = {link["operationId"] for link in links if "operationId" in link}  # link targets (others use operationRef)
    assert linked and linked <= ids


async def test_the_served_document_is_the_built_one(client: TestClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == json.loads(to_json(build_document(client.app)))


# -- the Job schema is Job.to_dict() ---------------------------------------------------
def jobs_in_every_shape() -> list[Job]:
    """Real jobs: waiting, scheduled, leased with progress, completed, failed with a traceback, cancelled."""
    now = time.time()
    pending = EnqueueRequest(type="echo", payload={"to": "ada"}).to_job(now)
    scheduled = EnqueueRequest(type="echo", delay=30.0, max_attempts=3, timeout=5.0).to_job(now)
    leased = EnqueueRequest(type="echo", queue="images", priority=5).to_job(now)
    leased.owner = "alice"
    leased.begin_attempt("0123456789abcdef01234567", now + 60, "box:1", now)
    leased.progress, leased.progress_note = 0.5, "half way"
    completed = EnqueueRequest(type="echo", payload=[1, 2.5, None]).to_job(now)
    completed.begin_attempt("lease-1", now + 60, "box:1", now)
    completed.complete({"done": True}, now + 1)
    failed = EnqueueRequest(type="fail", max_attempts=2).to_job(now)
    failed.begin_attempt("lease-2", now + 60, None, now)
    failed.fail("JobFailed: smtp down", now + 1, now + 2, traceback="Traceback (most recent call last):\n")
    cancelled = EnqueueRequest(type="echo").to_job(now)
    cancelled.cancel(now + 1)
    return [pending, scheduled, leased, completed, failed, cancelled]


def job_validator(document: dict[str, Any], name: str) -> jsonschema_rs.Validator:
    schema = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    return jsonschema_rs.Draft202012Validator(schema, validate_formats=True)


def test_the_job_schema_is_job_to_dict() -> None:
    document = build_document(the_app())
    validator = job_validator(document, "JobRecord")
    leased_validator = job_validator(document, "LeasedJob")
    assert set(document["components"]["schemas"]["JobRecord"]["required"]) == set(JobRecord.model_fields)
    for job in jobs_in_every_shape():
        view = job.to_dict()
        assert list(view) == list(JobRecord.model_fields), "the same keys, in the same order"
        JobRecord.model_validate_json(to_json(view), strict=True)  # and the same types
        validator.validate(json.loads(to_json(view)))
    leased = leased_view(jobs_in_every_shape()[2])
    assert list(leased) == list(LeasedJob.model_fields), "a lease answer's job: the same keys, in the same order"
    LeasedJob.model_validate_json(to_json(leased), strict=True)
    leased_validator.validate(json.loads(to_json(leased)))
    extra = {**jobs_in_every_shape()[0].to_dict(), "surprise": 1}
    assert not validator.is_valid(json.loads(to_json(extra))), "a key the model lacks is refused"


# -- real answers match the document ----------------------------------------------------
class Checked:
    """A test client whose every answer is checked against the served document."""

    def __init__(self, client: TestClient, document: dict[str, Any]) -> None:
        self.client = client
        self.document = document
        self.seen: set[tuple[str, str, int]] = set()

    async def __call__(
        self,
        method: str,
        template: str,
        status: int,
        *,
        body: Any = None,
        raw: bytes | None = None,
        query: str = "",
        **path: str,
    ) -> Any:
        url = template
        for name, value in path.items():
            url = url.replace("{" + name + "}", value)
        kwargs: dict[str, Any] = {"data": raw} if raw is not None else {"json": body} if body is not None else {}
        response = await self.client.request(
            method, url + ("?" + query if query else ""), allow_redirects=False, **kwargs
        )
        data = await response.read()
        where = f"{method} {url}: {response.status} {data[:300]!r}"
        assert response.status == status, where
        answer = self.document["paths"][template][method.lower()]["responses"].get(str(status))
        assert answer is not None, f"{where}: status not documented"
        self.seen.add((method, template, status))
        content = answer.get("content")
        if content is None:
            assert data == b"", where
            return None
        assert response.content_type in content, f"{where}: {response.content_type} not in {list(content)}"
        for header, spec in answer.get("headers", {}).items():
            if spec.get("required"):
                assert header in response.headers, where
        if not response.content_type.endswith("json"):
            return data
        value = json.loads(data)
        schema = {**content[response.content_type]["schema"], "components": self.document["components"]}
        errors = [str(e) for e in jsonschema_rs.Draft202012Validator(schema, validate_formats=True).iter_errors(value)]
        assert not errors, f"{where}: {errors}"
        return value


async def test_real_answers_match_the_document(make_client: MakeClient) -> None:
    """Every route, through its usual answers and problems, against the schemas of the served document."""
    client = await make_client(queues=("default",), batch_limit=10, max_wait=1.0)  # the dashboard's feeds end
    call = Checked(client, await (await client.get("/openapi.json")).json())

    job = await call("POST", "/enqueue", 202, body={"type": "echo", "id": "a", "payload": {"n": 1}})
    await call("POST", "/enqueue", 200, body={"type": "echo", "id": "a", "payload": {"n": 1}})
    await call("POST", "/enqueue", 409, body={"type": "echo", "id": "a", "payload": {"n": 2}})
    await call("POST", "/enqueue", 422, body={"type": "teleport"})
    await call("POST", "/enqueue", 400, raw=b'{"type": ')
    await call("POST", "/enqueue", 200, query="wait=5", body={"type": "echo", "payload": "waited"})
    await call("POST", "/enqueue", 422, query="wait=forever", body={"type": "echo"})
    await call("POST", "/enqueue/batch", 200, body={"jobs": [{"type": "echo"}, {"type": "teleport"}, "noop"]})
    await call("POST", "/enqueue/batch", 422, body={"jobs": [{"type": "echo"}] * 11})
    await call("GET", "/status/{id}", 200, id=job["id"])
    await call("GET", "/jobs/{id}", 200, id=job["id"])
    await call("GET", "/jobs/{id}", 404, id="nope")
    await call("GET", "/jobs/{id}", 200, id=job["id"], query="wait=0.01")
    await call("GET", "/jobs", 200, query="limit=1")
    await call("GET", "/jobs", 422, query="limit=0")
    await call("GET", "/jobs/{id}/logs", 200, id=job["id"])

    # a remote worker's round: lease, heartbeat, log, progress, settle, fail, release
    for n in range(4):
        await call("POST", "/enqueue", 202, body={"type": "thumb", "queue": "remote", "id": f"r{n}"})
    leased = (await call("POST", "/workers/lease", 200, body={"queues": ["remote"], "max_jobs": 4}))["jobs"]
    leases = {item["id"]: item["lease_id"] for item in leased}
    await call("POST", "/workers/lease", 204, body={"queues": ["remote"]})
    await call("POST", "/jobs/{id}/heartbeat", 200, id="r0", body={"lease_id": leases["r0"]})
    await call("POST", "/jobs/{id}/heartbeat", 409, id="r0", body={"lease_id": "stale"})
    await call("POST", "/jobs/{id}/log", 204, id="r0", body={"lease_id": leases["r0"], "message": "hello"})
    await call("POST", "/jobs/{id}/progress", 204, id="r0", body={"lease_id": leases["r0"], "fraction": 0.5})
    await call("POST", "/jobs/{id}/progress", 422, id="r0", body={"lease_id": leases["r0"], "fraction": 2})
    beats = [{"id": "r0", "lease_id": leases["r0"]}, {"id": "r1", "lease_id": "stale"}, {"id": "no", "lease_id": "x"}]
    await call("POST", "/workers/heartbeat", 200, body={"leases": beats})
    settlements = [
        {"id": "r0", "lease_id": leases["r0"], "result": {"ok": True}},
        {"id": "r1", "lease_id": leases["r1"], "error": "corrupt", "traceback": "Traceback ...\n"},
        {"id": "r2", "lease_id": "stale"},
    ]
    await call("POST", "/workers/settle", 200, body={"jobs": settlements})
    await call("POST", "/jobs/{id}/complete", 200, id="r0", body={"lease_id": leases["r0"], "result": {"ok": 2}})
    await call("POST", "/jobs/{id}/complete", 409, id="r2", body={"lease_id": "stale"})
    await call("POST", "/jobs/{id}/fail", 200, id="r2", body={"lease_id": leases["r2"], "error": "no"})
    await call("POST", "/jobs/{id}/release", 200, id="r3", body={"lease_id": leases["r3"]})
    await call("POST", "/jobs/{id}/release", 404, id="nope", body={"lease_id": "x"})
    await call("GET", "/jobs/{id}/logs", 200, id="r0")
    await call("GET", "/jobs/{id}", 200, id="r1")

    # admin: retry, delete, bulk, queues
    await call("POST", "/jobs/{id}/retry", 200, id="r1")
    await call("POST", "/jobs/{id}/retry", 409, id="r0")
    await call("POST", "/jobs/retry", 200, body={"status": "failed"})
    await call("POST", "/jobs/retry", 422, body={"status": "completed"})
    await call("POST", "/jobs/delete", 200, body={"status": "completed", "queue": "remote"})
    await call("POST", "/jobs/delete", 422, body={"status": "processing"})
    await call("GET", "/queues", 200)
    await call("GET", "/queues/{name}/next", 200, name="remote")
    await call("GET", "/queues/{name}/next", 204, name="empty")
    await call("GET", "/queues/{name}/next", 422, name="-bad")
    await call("POST", "/queues/{name}/pause", 200, name="remote")
    await call("POST", "/queues/{name}/resume", 200, name="remote")
    await call("DELETE", "/queues/{name}/jobs", 200, name="remote")
    # flow control: limits, a held job's reason, the flow in /queues and /stats
    await call("GET", "/queues/{name}/flow", 404, name="limited")
    limits = {"concurrency": 5, "key_concurrency": 1, "rate": {"limit": 10, "period": 1.0}}
    await call("PUT", "/queues/{name}/flow", 200, name="limited", body=limits)
    await call("PUT", "/queues/{name}/flow", 422, name="limited", body={"concurrency": 0})
    for n in range(2):
        keyed = {"type": "echo", "id": f"k{n}", "queue": "limited", "concurrency_key": "acme", "concurrency_limit": 1}
        await call("POST", "/enqueue", 202, body=keyed)
    await call("POST", "/workers/lease", 200, body={"queues": ["limited"], "max_jobs": 4})
    held = await call("GET", "/status/{id}", 200, id="k1")
    assert held["held"]["limit"] == "key_concurrency", held
    await call("GET", "/queues/{name}/flow", 200, name="limited")
    await call("GET", "/queues", 200)
    await call("GET", "/stats", 200)
    await call("DELETE", "/queues/{name}/flow", 200, name="limited")
    scheduled = await call("POST", "/enqueue", 202, body={"type": "echo", "delay": 60})
    await call("POST", "/jobs/{id}/cancel", 200, id=scheduled["id"])
    await call("POST", "/jobs/{id}/cancel", 409, id=scheduled["id"])
    await call("DELETE", "/jobs/{id}", 200, id=scheduled["id"])
    await call("DELETE", "/jobs/{id}", 404, id=scheduled["id"])

    # workflows: a group with a callback, its view, a job's parents and children
    group = [{"type": "echo", "id": f"g{n}", "queue": "remote"} for n in range(2)]
    callback = {
        "type": "echo",
        "id": "g-done",
        "queue": "remote",
        "depends_on": ["g0", "g1"],
        "on_parent_failure": "run",
    }
    await call("POST", "/workflows", 202, body={"id": "wf", "jobs": [*group, callback]})
    await call("POST", "/workflows", 200, body={"id": "wf", "jobs": [*group, callback]})
    await call("POST", "/workflows", 422, body={"jobs": [{"type": "echo", "id": "loop", "depends_on": ["loop"]}]})
    await call("POST", "/workflows", 422, body={"jobs": [{"type": "echo", "depends_on": ["nowhere"]}]})
    await call("GET", "/workflows/{id}", 200, id="wf")
    await call("GET", "/workflows/{id}", 404, id="nope")
    await call("GET", "/jobs/{id}/parents", 200, id="g-done")
    await call("GET", "/jobs/{id}/parents", 404, id="nope")
    waiting = await call("GET", "/status/{id}", 200, id="g0")
    assert waiting["children"] == ["g-done"], waiting
    await call("GET", "/status/{id}", 200, id="g-done")
    await call("GET", "/jobs", 200, query="workflow=wf")

    # schedules
    nightly = {"cron": "0 3 * * *", "timezone": "Europe/Paris", "job": {"type": "echo", "payload": {"n": 1}}}
    await call("POST", "/schedules", 201, body={"name": "nightly", **nightly})
    await call("POST", "/schedules", 409, body={"name": "nightly", **nightly})
    await call("POST", "/schedules", 422, body={"name": "broken", "every": 5, "cron": "* * * * *", "job": {}})
    await call("GET", "/schedules", 200)
    await call("GET", "/schedules/{name}", 200, name="nightly")
    await call("GET", "/schedules/{name}", 404, name="nope")
    await call("PUT", "/schedules/{name}", 200, name="often", body={"every": 30, "job": {"type": "echo"}})
    await call("POST", "/schedules/{name}/pause", 200, name="nightly")
    await call("POST", "/schedules/{name}/resume", 200, name="nightly")
    await call("POST", "/schedules/{name}/run", 202, name="nightly")
    await call("DELETE", "/schedules/{name}", 204, name="often")
    await call("DELETE", "/schedules/{name}", 404, name="often")

    await call("GET", "/stats", 200)
    await call("GET", "/nodes", 200)
    await call("GET", "/health", 200)
    await call("GET", "/metrics", 200)
    await call("GET", "/openapi.json", 200)
    await call("GET", "/docs", 200)
    await call("GET", "/docs/{file}", 200, file="init.js")
    await call("GET", "/docs/{file}", 404, file="secrets.txt")

    # the dashboard
    await call("GET", "/", 302)
    await call("GET", "/ui", 200)
    await call("GET", "/ui/{asset}", 200, asset="app.js")
    await call("GET", "/ui/{asset}", 404, asset="secrets.txt")
    await call("GET", "/ui/session", 200)
    await call("POST", "/ui/login", 204, body={"token": "anything-without-tokens"})
    await call("POST", "/ui/login", 422, body={})
    await call("POST", "/ui/logout", 204)
    await call("GET", "/ui/events", 200)
    await call("GET", "/ui/events/jobs/{id}", 200, id=job["id"])
    await call("GET", "/ui/events/jobs/{id}", 404, id="nope")
    await call("GET", "/jobs", 200, query="q=echo")
    answered = {(method, template) for method, template, _ in call.seen}
    assert answered == {key for key in operations(call.document) if key[0] != "HEAD"}, "every route was called"


# -- GET /docs --------------------------------------------------------------------------
class Assets(HTMLParser):
    """The URLs a page loads (scripts, style sheets, icons) and the text of any inline script."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts: list[str] = []
        self.spec_urls: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "script":
            self._in_script = named.get("src") is None
            if named.get("src"):
                self.urls.append(named["src"] or "")
        elif tag == "link" and named.get("href"):
            self.urls.append(named["href"] or "")
        if named.get("data-spec-url"):
            self.spec_urls.append(named["data-spec-url"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts.append(data)


async def test_docs_is_a_page_whose_files_all_come_from_this_server(client: TestClient) -> None:
    response = await client.get("/docs")
    assert response.status == 200
    assert response.content_type == "text/html"
    policy = response.headers["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"  # no inline script, no other origin
    assert "unsafe" not in policy
    page = Assets()
    page.feed(await response.text())
    assert not page.inline_scripts
    assert len(page.urls) >= 3 and page.spec_urls == ["openapi.json"]
    base = str(client.make_url("/docs"))
    kinds = set()
    for url in page.urls + page.spec_urls:
        if url.startswith("data:"):
            continue
        absolute = urljoin(base, url)
        assert urlsplit(absolute).netloc == urlsplit(base).netloc, f"{url} is from another server"
        asset = await client.get(urlsplit(absolute).path)
        assert asset.status == 200, url
        assert len(await asset.read()) > 0, url
        kinds.add(asset.content_type)
    assert kinds == {"text/css", "text/javascript", "application/json"}


def test_the_vendored_swagger_ui_is_the_pinned_version() -> None:
    package = json.loads((ROOT / "package.json").read_text())
    assert package["dependencies"] == {"swagger-ui-dist": SWAGGER_UI_VERSION}
    lock = json.loads((ROOT / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/swagger-ui-dist"]["version"] == SWAGGER_UI_VERSION
    static = ROOT / "jobq" / "static" / "docs"
    assert f"swagger-ui-dist {SWAGGER_UI_VERSION}" in (static / "README.md").read_text()
    assert SWAGGER_UI_VERSION in (static / "swagger-ui-bundle.js").read_text()


# -- schemathesis against a real server -----------------------------------------------------
FUZZ_TOKEN = "fuzz-admin-token-0123456789"
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "ignored_auth",  # a route that needs a token refuses a request without one
    "use_after_free",  # a deleted job stays gone
    "ensure_resource_availability",  # an accepted job can be read
    "unsupported_method",  # other methods answer 405
]
# Left out: positive_data_acceptance (a job type must be registered; integers may not be written as 1.0;
# settle's result-or-error rule and bulk retry's status rule are not JSON Schema), negative_data_rejection
# (an oversized invalid body answers 413, not 4xx-of-its-list) and allow_header_conformance (/jobs/{id} also
# matches /jobs/retry and /jobs/delete, so their Allow lists GET and DELETE too).


def test_schemathesis_finds_nothing(start_server: StartServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBQ_ADMIN_TOKEN", FUZZ_TOKEN)
    server = start_server(
        "--store",
        f"sqlite:///{tmp_path / 'fuzz.db'}",
        "--durability",
        "normal",
        "--workers",
        "2",
        "--queues",
        "default",  # other queues take any job type, for remote workers: more of the fuzzed jobs are accepted
        "--max-wait",
        "0.2",
        "--batch-limit",
        "20",
        "--drain-timeout",
        "1",
    )
    report = tmp_path / "schemathesis.json"
    seed = os.environ.get("JOBQ_FUZZ_SEED", "20261201")
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        server.url + "/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        os.environ.get("JOBQ_FUZZ_EXAMPLES", "25"),
        "--seed",
        seed,
        "--request-timeout",
        "5",
        "--header",
        f"Authorization: Bearer {FUZZ_TOKEN}",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    run = subprocess.run(
        command,
        cwd=tmp_path,  # its example database (.hypothesis) stays out of the repository
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "120"},
        capture_output=True,
        text=True,
        timeout=100,
    )
    output = run.stdout + run.stderr
    assert report.exists(), output[-5000:]
    result = json.loads(report.read_text())
    cases = result["test_cases"]
    line = (
        f"schemathesis {result['schemathesis_version']}: {result['operations']['tested']} operations, "
        f"{cases['generated']} test cases, {cases['unique_failures']} failures, {len(result['errors'])} errors "
        f"in {result['running_time']:.1f} s (seed {seed})"
    )
    print(line)
    assert run.returncode == 0 and not result["failures"] and not result["errors"], f"{line}\n{output[-8000:]}"
    assert result["operations"]["tested"] == result["operations"]["total"] >= 30
    assert cases["generated"] > 500
    errors = [entry for entry in server.log().splitlines() if " ERROR " in entry or "Traceback" in entry]
    assert not errors, "\n".join(errors[:20])
