"""The dashboard's server side: its page, logging in with a cookie, browser-write refusals, feeds, search, trends.

The page itself runs in a real browser in tests/test_dashboard_browser.py.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from jobq import nodes
from jobq import service as service_module
from jobq.api import SERVICE
from jobq.app import create_app
from jobq.auth import SESSION_COOKIE, Principal, Role, TokenBook
from jobq.config import Config
from jobq.dashboard.routes import OVERVIEWS
from jobq.dashboard.trends import Trends, percentile
from jobq.errors import StoreUnavailable
from jobq.handlers import Registry
from jobq.job import JobStatus
from jobq.metrics import Metrics
from tests.conftest import TEST_CONFIG, FakeClock, MakeClient, wait_for_status

EVERYTHING = [  # what the dashboard may do with an admin token, or without tokens
    "see_jobs",
    "see_nodes",
    "cancel",
    "retry",
    "delete",
    "manage_queues",
    "see_schedules",
    "manage_schedules",
]
UI = Path(__file__).resolve().parent.parent / "jobq" / "static" / "ui"
ADMIN, CLIENT, WORKER = "admin-token-0123456789", "client-token-0123456789", "worker-token-0123456789"
BROWSER = {"Sec-Fetch-Site": "same-origin"}


@pytest.fixture
def backend() -> str:
    return "memory"


@pytest.fixture
def tokens() -> TokenBook:
    return TokenBook(
        [
            (ADMIN, Principal("ops", Role.ADMIN)),
            (CLIENT, Principal("shop", Role.CLIENT)),
            (WORKER, Principal("box", Role.WORKER)),
        ]
    )


async def with_tokens(aiohttp_client: Any, registry: Registry, tokens: TokenBook, **overrides: Any) -> TestClient:
    config = Config(**{**TEST_CONFIG.__dict__, "max_wait": 1.0, **overrides})
    return await aiohttp_client(create_app(config, handlers=registry, tokens=tokens))  # type: ignore[no-any-return]


async def events(client: TestClient, path: str, **headers: str) -> list[tuple[str, Any]]:
    """A feed's events, ``(name, data)``, read to its end (the feeds end after --max-wait)."""
    response = await client.get(path, headers=headers)
    assert response.status == 200, await response.text()
    assert response.content_type == "text/event-stream"
    found = []
    for block in (await response.text()).split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            found.append((fields["event"], json.loads(fields["data"])))
    return found


# -- the page ----------------------------------------------------------------------------------------
async def test_the_page_loads_only_its_own_files_under_a_strict_policy(client: TestClient) -> None:
    response = await client.get("/", allow_redirects=False)
    assert (response.status, response.headers["Location"]) == (302, "/ui")
    page = await client.get("/ui")
    assert page.status == 200 and page.content_type == "text/html"
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
    html = await page.text()
    assert "<script>" not in html  # no inline script: every script is a file of its own
    assets = [part.split('"')[0] for part in html.split('src="/ui/')[1:] + html.split('href="/ui/')[1:]]
    assert "app.js" in assets
    for name in assets:
        asset = await client.get(f"/ui/{name}")
        assert asset.status == 200, name
        assert asset.headers["X-Content-Type-Options"] == "nosniff"
    assert (await client.get("/ui/..%2Fapi.py")).status == 404
    assert (await client.get("/ui/index.html")).status == 404  # the page is /ui itself


async def test_every_module_the_page_imports_is_served(client: TestClient) -> None:
    imported = {name for script in UI.glob("*.js") for name in re.findall(r'from "\./([\w.-]+)"', script.read_text())}
    assert {"api.js", "dom.js", "graph.js", "job.js", "workflow.js"} <= imported
    for name in sorted(imported):
        response = await client.get(f"/ui/{name}")
        assert (response.status, response.content_type) == (200, "text/javascript"), name


def test_the_page_knows_every_job_status_in_order() -> None:
    listed = re.search(r"export const STATUSES = \[([^\]]*)\]", (UI / "dom.js").read_text())
    assert listed is not None
    assert re.findall(r'"(\w+)"', listed.group(1)) == [status.value for status in JobStatus]


async def test_the_dashboard_can_be_turned_off(make_client: MakeClient) -> None:
    client = await make_client(ui="off")
    for path in ("/", "/ui", "/ui/app.js", "/ui/session"):
        assert (await client.get(path, allow_redirects=False)).status == 404, path


# -- logging in ---------------------------------------------------------------------------------------
async def test_without_tokens_there_is_nothing_to_log_in_to(client: TestClient) -> None:
    assert await (await client.get("/ui/session")).json() == {
        "auth": False,
        "logged_in": False,
        "name": None,
        "role": None,
        "read_only": False,
        "may": EVERYTHING,
        "sees_every_job": True,
    }


@pytest.mark.parametrize(
    ("token", "may", "every_job"),
    [
        (ADMIN, EVERYTHING, True),
        (CLIENT, ["see_jobs", "cancel"], False),
        (WORKER, ["see_nodes"], False),
    ],
    ids=["admin", "client", "worker"],
)
async def test_the_session_says_what_its_role_may_do(
    aiohttp_client: Any, registry: Registry, tokens: TokenBook, token: str, may: list[str], every_job: bool
) -> None:
    client = await with_tokens(aiohttp_client, registry, tokens)
    assert (await client.post("/ui/login", json={"token": token}, headers=BROWSER)).status == 204
    session = await (await client.get("/ui/session")).json()
    assert (session["may"], session["sees_every_job"]) == (may, every_job)


async def test_logging_in_sets_a_strict_http_only_cookie_the_api_accepts(
    aiohttp_client: Any, registry: Registry, tokens: TokenBook
) -> None:
    client = await with_tokens(aiohttp_client, registry, tokens)
    assert (await client.get("/jobs")).status == 401
    refused = await client.post("/ui/login", json={"token": "not-a-token-0000000"}, headers=BROWSER)
    assert refused.status == 401 and SESSION_COOKIE not in refused.cookies
    response = await client.post("/ui/login", json={"token": CLIENT}, headers=BROWSER)
    assert response.status == 204
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    session = await (await client.get("/ui/session")).json()
    assert (session["name"], session["may"], session["sees_every_job"]) == ("shop", ["see_jobs", "cancel"], False)
    mine = await client.post("/enqueue", json={"type": "echo", "id": "mine"}, headers=BROWSER)
    assert mine.status == 202
    assert [job["owner"] for job in (await (await client.get("/jobs")).json())["jobs"]] == ["shop"]
    assert (await client.post("/queues/default/pause", headers=BROWSER)).status == 403  # a client's role
    assert (await client.post("/ui/logout", headers=BROWSER)).status == 204
    assert (await client.get("/jobs")).status == 401
    assert (await (await client.get("/ui/session")).json())["logged_in"] is False


# -- writes from browsers ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [{"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}, {"Origin": "http://evil.example"}],
    ids=["cross-site", "same-site", "foreign-origin"],
)
async def test_a_write_from_another_site_is_refused(client: TestClient, headers: dict[str, str]) -> None:
    for method, path in (("POST", "/queues/default/pause"), ("POST", "/enqueue"), ("DELETE", "/queues/q/jobs")):
        response = await client.request(method, path, json={"type": "echo"}, headers=headers)
        assert response.status == 403, (method, path)
        assert "another site" in (await response.json())["detail"]
    assert (await (await client.get("/queues")).json())["queues"] == []  # nothing happened
    assert (await client.get("/stats", headers=headers)).status == 200  # reading is not refused


async def test_a_write_from_the_same_origin_or_an_api_client_goes_through(client: TestClient) -> None:
    origin = f"http://{client.server.host}:{client.server.port}"
    for headers in ({"Sec-Fetch-Site": "same-origin", "Origin": origin}, {"Origin": origin}, {}):
        response = await client.post("/enqueue", json={"type": "echo"}, headers=headers)
        assert response.status == 202, headers


async def test_a_read_only_dashboard_may_look_not_act(make_client: MakeClient) -> None:
    client = await make_client(ui="read-only")
    session = await (await client.get("/ui/session")).json()
    assert (session["read_only"], session["may"]) == (True, ["see_jobs", "see_nodes", "see_schedules"])
    refused = await client.post("/enqueue", json={"type": "echo"}, headers=BROWSER)
    assert refused.status == 403 and "read-only" in (await refused.json())["detail"]
    assert (await client.post("/ui/logout", headers=BROWSER)).status == 204  # logging out is not acting
    assert (await client.post("/enqueue", json={"type": "echo"})).status == 202  # an API client is not a browser
    assert (await client.get("/jobs", headers=BROWSER)).status == 200


# -- feeds --------------------------------------------------------------------------------------------------
async def test_the_overview_feed_sends_counts_queues_nodes_trends_and_running_jobs(make_client: MakeClient) -> None:
    client = await make_client(max_wait=0.1, workers=0)
    await client.post("/enqueue", json={"type": "echo", "queue": "mail"})
    await client.post("/workers/lease", json={"queues": ["mail"], "worker": "box-1"})
    await nodes.announce(client.app[SERVICE])  # the next beat, without waiting for it
    [(name, overview)] = await events(client, "/ui/events")
    assert name == "overview"
    assert overview["stats"]["jobs"]["processing"] == 1
    assert [queue["name"] for queue in overview["queues"]] == ["mail"]
    assert set(overview["trends"]) == {"interval", "times", "queues"}
    [worker] = overview["workers"]
    assert worker["name"] == "box-1" and worker["jobs"][0]["queue"] == "mail"
    [node] = overview["nodes"]
    assert [remote["name"] for remote in node["remote_workers"]] == ["box-1"]


async def test_open_feeds_of_one_scope_share_each_overview(make_client: MakeClient) -> None:
    client = await make_client(max_wait=0.1, workers=0)
    overviews = client.app[OVERVIEWS]
    made = 0
    make = overviews._make

    async def counted(owner: str | None, sees_nodes: bool) -> bytes:
        nonlocal made
        made += 1
        return await make(owner, sees_nodes)

    overviews._make = counted  # type: ignore[method-assign]
    feeds = await asyncio.gather(*(events(client, "/ui/events") for _ in range(5)))
    assert [[name for name, _ in feed] for feed in feeds] == [["overview"]] * 5
    assert made == 1  # one event, made once, for the five feeds of this tick


async def test_a_feed_that_fails_once_begun_is_cut_off_not_answered_again(make_client: MakeClient) -> None:
    client = await make_client(max_wait=0.1, workers=0)

    async def broken(owner: str | None, sees_nodes: bool) -> bytes:
        raise StoreUnavailable("the store went away")

    client.app[OVERVIEWS]._make = broken  # type: ignore[method-assign]
    feed = await client.get("/ui/events")
    assert feed.status == 200  # the stream began before the overview failed
    with pytest.raises(aiohttp.ClientPayloadError):  # its end is cut: no second answer is written into it
        await asyncio.wait_for(feed.read(), 10)
    assert (await client.get("/health")).status == 200  # the server serves on


async def test_the_job_feed_follows_a_job_to_its_end(client: TestClient, registry: Registry) -> None:
    release = asyncio.Event()

    @registry.register("chatty")
    async def chatty(context: Any) -> str:
        await context.log("one")
        await release.wait()
        await context.log("two")
        return "done"

    job = await (await client.post("/enqueue", json={"type": "chatty", "id": "c1"})).json()
    await wait_for_status(client, job["id"], "processing")
    feed = asyncio.ensure_future(events(client, f"/ui/events/jobs/{job['id']}"))
    release.set()  # the feed may open before or after the job moves on: it sends every line and the end
    seen = await asyncio.wait_for(feed, 10)
    assert seen[0][0] == "job"
    assert [data["message"] for name, data in seen if name == "log"] == ["one", "two"]
    assert [data["status"] for name, data in seen if name == "job"][-1] == "completed"
    assert (await client.get("/ui/events/jobs/missing")).status == 404


async def test_the_job_feed_ends_cleanly_when_its_job_is_deleted(make_client: MakeClient) -> None:
    client = await make_client(max_wait=30, workers=0)
    job = await (await client.post("/enqueue", json={"type": "echo", "id": "doomed"})).json()
    feed = await client.get(f"/ui/events/jobs/{job['id']}")
    assert feed.status == 200
    first = await feed.content.readuntil(b"\n\n")  # the retry hint: the stream has begun
    assert first.startswith(b"retry:")
    assert (await client.delete(f"/jobs/{job['id']}")).status == 200
    rest = await asyncio.wait_for(feed.read(), 10)  # ends without waiting out --max-wait, and without an error
    assert b"event: job" in rest and b"HTTP/1.1" not in rest and b"problem" not in rest
    assert (await client.get(f"/ui/events/jobs/{job['id']}")).status == 404  # the reconnection


async def test_a_client_token_follows_only_its_own_jobs(
    aiohttp_client: Any, registry: Registry, tokens: TokenBook
) -> None:
    client = await with_tokens(aiohttp_client, registry, tokens, max_wait=0.1)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    theirs = await (await client.post("/enqueue", json={"type": "echo", "id": "theirs"}, headers=admin)).json()
    shop = {"Authorization": f"Bearer {CLIENT}"}
    assert (await client.get(f"/ui/events/jobs/{theirs['id']}", headers=shop)).status == 404
    assert (await client.get("/ui/events")).status == 401


# -- search ----------------------------------------------------------------------------------------------------
async def test_search_finds_text_in_type_error_and_payload(client: TestClient) -> None:
    await client.post("/enqueue", json={"type": "echo", "id": "p", "payload": {"to": "Ada@Example.com"}})
    await client.post("/enqueue", json={"type": "fail", "id": "e", "payload": {"message": "disk Full"}})
    await client.post("/enqueue", json={"type": "noop", "id": "n"})
    for job_id in ("p", "e", "n"):
        await wait_for_status(client, job_id, "completed", "failed")
    found = {
        text: [job["id"] for job in (await (await client.get("/jobs", params={"q": text})).json())["jobs"]]
        for text in ("ada@example", "DISK FULL", "noop", "nothing like it")
    }
    assert found == {"ada@example": ["p"], "DISK FULL": ["e"], "noop": ["n"], "nothing like it": []}


async def test_search_reads_a_payload_as_its_text_not_as_its_json_escapes(make_client: MakeClient) -> None:
    client = await make_client(workers=0)
    payloads = {
        "nul": {"s": "a\u0000b"},
        "quote": {"s": 'say "hi"'},
        "slash": {"s": "back\\slash"},
        "plain": {"s": "x"},
    }
    for job_id, payload in payloads.items():
        assert (await client.post("/enqueue", json={"type": "echo", "id": job_id, "payload": payload})).status == 202
    found = {
        text: sorted(job["id"] for job in (await (await client.get("/jobs", params={"q": text})).json())["jobs"])
        for text in ("\u0000", "\\", '"', 'say "hi')
    }
    assert found == {"\u0000": ["nul"], "\\": ["slash"], '"': ["quote"], 'say "hi': ["quote"]}


async def test_a_search_reads_a_bounded_number_of_jobs_per_call(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "SEARCH_SCAN", 3)
    monkeypatch.setattr(service_module, "SEARCH_PAGE", 2)
    for n in range(8):
        payload = {"tag": "needle"} if n in (0, 7) else {}
        await client.post("/enqueue", json={"type": "noop", "id": f"j{n}", "payload": payload})
    found, cursor, calls = [], None, 0
    while True:
        params = {"q": "needle", **({"cursor": cursor} if cursor else {})}
        page = await (await client.get("/jobs", params=params)).json()
        found += [job["id"] for job in page["jobs"]]
        cursor, calls = page["next_cursor"], calls + 1
        if cursor is None:
            break
    assert found == ["j7", "j0"] and calls >= 3  # newest first, three jobs read per call at most


# -- trends --------------------------------------------------------------------------------------------------------
def test_percentiles_come_from_the_buckets_filled_between_two_samples() -> None:
    bounds = (0.1, 1.0, 10.0)
    assert percentile(bounds, [5, 0, 0, 0], [5, 0, 0, 0], 0.5) is None  # nothing new
    assert percentile(bounds, [5, 0, 0, 0], [6, 8, 1, 0], 0.5) == 1.0
    assert percentile(bounds, [], [0, 0, 1, 3], 0.95) == 10.0  # past the last bound: the largest one


def test_trends_give_each_queue_its_rates_per_interval() -> None:
    metrics, clock = Metrics(), FakeClock(1000.0)
    trends = Trends(metrics, clock)
    trends.sample()
    metrics.enqueued.labels("mail", "send").inc(20)
    metrics.finished.labels("mail", "send", "completed").inc(10)
    metrics.finished.labels("mail", "send", "dead").inc(2)
    metrics.wait.labels("mail").observe(0.003)
    clock.advance(2.0)
    trends.sample()
    view = trends.view()
    assert view["times"] == [1002.0]
    mail = view["queues"]["mail"]
    assert (mail["enqueued"], mail["completed"], mail["failed"]) == ([10.0], [5.0], [1.0])
    assert mail["wait_p50"] == [0.005] and mail["run_p50"] == [None]
