"""The dashboard in a real browser: Debian's Chromium, driven by Playwright, against ``main.py`` processes.

Each test starts its own server (``--store memory://``, ``--max-wait 3`` so the live feeds end and
reconnect within a test) and a fresh browser context; the browser is shared by the module. The
in-process workers run queue ``default`` only: the other queues are served by the test itself,
as a remote worker over HTTP, which decides what a job logs, how it fails and when it finishes.

Chromium is Debian's (``/usr/bin/chromium``), never a browser build Playwright downloads. Without it
the tests skip, but under CI (``CI=true``) they fail. ``JOBQ_SCREENSHOTS=1`` writes the README's
screenshots to docs/img/.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import StartServer
from tests.procs import ROOT, ServerProcess

IN_CI = os.environ.get("CI") == "true"
try:
    from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect, sync_playwright
except ImportError:
    if IN_CI:
        raise
    pytest.skip("playwright is not installed: pip install -r requirements-dev.txt", allow_module_level=True)

CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 10_000  # the longest any expectation waits (a loaded CI machine; passing runs take far less)
expect.set_options(timeout=WAIT_MS)

# In-process workers take queue "default"; other queues wait for the test, as a remote worker.
SERVER_FLAGS = ("--store", "memory://", "--max-wait", "3", "--queues", "default", "--workers", "4")
ADMIN_TOKEN = "admin-token-0123456789abcdef"
CLIENT_TOKEN = "client-token-0123456789abcdef"

# Collects the page's Content-Security-Policy violations (they are console errors too), before any script runs.
WATCH_CSP = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""

XSS = [
    '<img src=x onerror="window.__xss=1">',
    "<script>window.__xss=1</script>",
    '"><svg onload=window.__xss=1>',
]


# -- the server, over HTTP ------------------------------------------------------------------------
class Api:
    """The jobq HTTP API of one server, as an API client (or a remote worker) calls it."""

    def __init__(self, server: ServerProcess, token: str | None = None) -> None:
        self.server = server
        self.token = token

    def call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200,)) -> Any:
        status, answer = self.server.request(method, path, body, token=self.token or None)
        assert status in ok, f"{method} {path}: {status} {answer}"
        return answer

    def enqueue(self, job_type: str, payload: Any = None, **fields: Any) -> str:
        body = {"type": job_type, "payload": {} if payload is None else payload, **fields}
        return self.call("POST", "/enqueue", body, ok=(202,))["id"]

    def job(self, job_id: str) -> dict[str, Any]:
        return self.call("GET", f"/jobs/{job_id}")

    def queue(self, name: str) -> dict[str, Any]:
        return next(q for q in self.call("GET", "/queues")["queues"] if q["name"] == name)

    def lease(self, queue: str, count: int = 1, worker: str = "browser-test") -> list[dict[str, Any]]:
        """Lease ``count`` jobs of ``queue`` as a remote worker (each with its ``lease_id``)."""
        leased: list[dict[str, Any]] = []
        deadline = time.monotonic() + WAIT_MS / 1000
        while len(leased) < count:
            assert time.monotonic() < deadline, f"leased {len(leased)} of {count} jobs of {queue}"
            body = {"queues": [queue], "max_jobs": count - len(leased), "wait": 1, "worker": worker}
            answer = self.call("POST", "/workers/lease", body, ok=(200, 204))
            leased += answer["jobs"] if answer else []
        return leased

    def log(self, job: dict[str, Any], message: str) -> None:
        self.call("POST", f"/jobs/{job['id']}/log", {"lease_id": job["lease_id"], "message": message}, ok=(204,))

    def progress(self, job: dict[str, Any], fraction: float, note: str | None = None) -> None:
        body = {"lease_id": job["lease_id"], "fraction": fraction, "note": note}
        self.call("POST", f"/jobs/{job['id']}/progress", body, ok=(204,))

    def complete(self, job: dict[str, Any], result: Any = None) -> dict[str, Any]:
        return self.call("POST", f"/jobs/{job['id']}/complete", {"lease_id": job["lease_id"], "result": result})

    def fail(self, job: dict[str, Any], error: str, **extra: Any) -> dict[str, Any]:
        return self.call("POST", f"/jobs/{job['id']}/fail", {"lease_id": job["lease_id"], "error": error, **extra})

    def make_failed(self, queue: str, job_id: str, error: str = "boom", **fields: Any) -> None:
        """A job that ended ``failed`` (one attempt), or ``dead`` given ``max_attempts``: each attempt fails."""
        self.enqueue("import", {"file": f"{job_id}.csv"}, queue=queue, id=job_id, **fields)
        for _ in range(fields.get("max_attempts", 1)):
            (leased,) = self.lease(queue)
            assert leased["id"] == job_id
            self.fail(leased, error, retry_in=0)

    def wait_for(self, job_id: str, *statuses: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT_MS / 1000
        while (job := self.job(job_id))["status"] not in statuses:
            assert time.monotonic() < deadline, f"{job_id} is {job['status']}, not {statuses}"
            time.sleep(0.02)
        return job


# -- the browser ----------------------------------------------------------------------------------
@dataclass
class Tab:
    """A page of a fresh browser context, with what went wrong in it."""

    page: Page
    errors: list[str] = field(default_factory=list)  # console errors, uncaught exceptions
    dialogs: list[str] = field(default_factory=list)  # alert/confirm/prompt: each is dismissed, unless expected
    confirmed: list[str] = field(default_factory=list)  # the confirm() dialogs the test expected, and accepted
    to_confirm: int = 0

    def __post_init__(self) -> None:
        self.page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        self.page.on("dialog", self._dialog)

    def _dialog(self, dialog: Any) -> None:
        if dialog.type == "confirm" and self.to_confirm:
            self.to_confirm -= 1
            self.confirmed.append(dialog.message)
            dialog.accept()
            return
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def confirm_next(self) -> None:
        """The next confirm() is expected: it is accepted (and noted in ``confirmed``)."""
        self.to_confirm += 1

    def open(self, route: str) -> Page:
        """Load the page afresh at a route (``#/jobs?status=dead``)."""
        self.page.goto("/ui" + route)
        return self.page

    def by(self, testid: str) -> Locator:
        return self.page.get_by_test_id(testid)

    def assert_clean(self) -> None:
        violations = self.page.evaluate("window.__cspViolations")
        assert not violations, f"Content-Security-Policy violations: {violations}"
        assert not self.errors, "\n".join(self.errors)
        assert not self.dialogs, self.dialogs

    def eventually(self, condition: Callable[[], bool], what: str) -> None:
        """Wait for a condition on what the test saw (page events are dispatched while waiting)."""
        deadline = time.monotonic() + WAIT_MS / 1000
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            self.page.wait_for_timeout(50)


OpenTab = Callable[..., Tab]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: apt-get install chromium"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def open_tab(browser: Browser) -> Iterator[OpenTab]:
    """``open_tab(server, width=, height=, bypass_csp=)``: a page in a fresh context on that server."""
    contexts: list[BrowserContext] = []

    def open_(server: ServerProcess, width: int = 1280, height: int = 800, bypass_csp: bool = False) -> Tab:
        context = browser.new_context(
            base_url=server.url,
            viewport={"width": width, "height": height},
            color_scheme="light",
            bypass_csp=bypass_csp,
        )
        contexts.append(context)
        context.set_default_timeout(WAIT_MS)
        context.add_init_script(WATCH_CSP)
        return Tab(context.new_page())

    yield open_
    for context in contexts:
        context.close()


@pytest.fixture
def jobq(start_server: StartServer) -> Callable[..., Api]:
    """``jobq(*flags)``: a fresh ``main.py`` with the module's flags and those given, and its API."""

    def start(*flags: str, token: str | None = None) -> Api:
        return Api(start_server(*SERVER_FLAGS, *flags), token)

    return start


@pytest.fixture
def with_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    """Servers started by the test take an admin and a client token (from the environment)."""
    monkeypatch.setenv("JOBQ_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("JOBQ_TOKEN", CLIENT_TOKEN)


def row(tab: Tab, testid: str, **data: str) -> Locator:
    """The element with a data-testid and data-* attributes: ``row(tab, "job-row", job_id="x")``."""
    attrs = "".join(f'[data-{key.replace("_", "-")}="{value}"]' for key, value in data.items())
    return tab.page.locator(f'[data-testid="{testid}"]{attrs}')


def open_job(tab: Tab, job_id: str, status: str) -> Page:
    page = tab.open(f"#/job/{job_id}")
    expect(tab.by("job-id").first).to_have_text(job_id)
    expect(page.locator('.view-head [data-testid="job-status"]')).to_have_text(status)
    return page


def page_fetch(tab: Tab, method: str, path: str) -> dict[str, Any]:
    """What the server answers the page's own same-origin fetch (as the dashboard's code would send it)."""
    return tab.page.evaluate(
        """async ([method, path]) => {
            const response = await fetch(path, {method, headers: {"Content-Type": "application/json"}});
            return {status: response.status, body: await response.text()};
        }""",
        [method, path],
    )


# -- 1. every view loads cleanly ------------------------------------------------------------------
def test_every_view_loads_without_errors_or_policy_violations(jobq: Callable[..., Api], open_tab: OpenTab) -> None:
    api = jobq("--retry-base", "0.01")
    done = api.enqueue("echo", {"n": 1}, id="echo-1")
    api.wait_for(done, "completed")
    api.enqueue("fail", {"message": "smtp down"}, id="fail-1", max_attempts=2)
    api.wait_for("fail-1", "dead")
    api.enqueue("noop", queue="nightly", id="later-1", delay=600)
    api.enqueue("report", queue="reports", id="waiting-1", unique_key="monthly-report")
    api.call("PUT", "/queues/tenants/flow", {"key_concurrency": 1})
    for n in range(2):
        api.enqueue("report", queue="tenants", id=f"tenant-{n}", concurrency_key="acme")
    api.lease("tenants")  # tenant-0 runs: tenant-1 is held back by its key's limit
    tab = open_tab(api.server)

    tab.open("#/overview")
    expect(tab.by("live-status")).to_have_attribute("data-state", "live")
    expect(row(tab, "queue-row", queue="default")).to_be_visible()
    expect(tab.by("stat-dead")).to_contain_text("1")
    expect(tab.by("workers")).to_contain_text("tenant-0 report on tenants")  # the one job leased
    node = tab.by("node-row")
    expect(node).to_have_count(1)
    expect(node).to_contain_text(f":{api.server.process.pid}")
    expect(node).to_contain_text(f"http http://127.0.0.1:{api.server.port}")
    expect(node.get_by_test_id("node-workers")).to_have_text("0 / 4")
    tab.assert_clean()

    tab.open("#/jobs")
    expect(tab.by("job-row")).to_have_count(6)
    tab.assert_clean()

    open_job(tab, "fail-1", "dead")
    expect(tab.by("job-error")).to_have_text("JobFailed: smtp down")
    expect(tab.by("attempt")).to_have_count(2)
    expect(tab.by("log-status")).to_have_attribute("data-state", "finished")
    tab.assert_clean()

    page = open_job(tab, "waiting-1", "pending")  # not finished: the live feed opens
    expect(tab.by("log-status")).to_have_attribute("data-state", "live")
    expect(page.locator('[data-field="unique_key"]')).to_have_text("monthly-report held while active")
    tab.assert_clean()

    page = open_job(tab, "tenant-1", "pending")
    expect(page.locator('[data-field="concurrency_key"]')).to_have_text("acme")
    expect(tab.by("job-held")).to_have_text("key acme runs 1 of at most 1 jobs at once")
    tab.assert_clean()

    tab.open("#/queues")
    for name in ("default", "nightly", "reports"):
        expect(row(tab, "queue-row", queue=name)).to_be_visible()
    tenants = row(tab, "queue-row", queue="tenants")
    expect(tenants.get_by_test_id("queue-limits")).to_contain_text("1 per key")
    expect(tenants.get_by_test_id("queue-held")).to_have_text("holding back: 1 keys at their limit")
    expect(row(tab, "queue-row", queue="reports").get_by_test_id("queue-limits")).to_have_text("none")
    expect(tab.by("live-status")).to_have_attribute("data-state", "live")
    tab.assert_clean()

    tab.open("#/dead")
    expect(tab.by("job-row")).to_have_count(1)
    expect(row(tab, "job-row", job_id="fail-1", status="dead")).to_be_visible()
    tab.assert_clean()

    tab.open("#/scheduled")
    expect(tab.by("job-row")).to_have_count(1)
    expect(row(tab, "job-row", job_id="later-1", status="scheduled")).to_be_visible()
    expect(tab.by("runs-in")).to_contain_text("in ")
    tab.assert_clean()

    tab.open("#/login")  # no tokens: nothing to log in to, and no login link
    expect(tab.page.locator("main")).to_contain_text("no login is needed")
    expect(tab.by("login-link")).to_have_count(0)
    tab.assert_clean()


# -- 2. live updates ------------------------------------------------------------------------------
def test_a_running_job_finishes_and_logs_live_across_feed_reconnects(
    jobq: Callable[..., Api], open_tab: OpenTab
) -> None:
    api = jobq()
    api.enqueue("report", {"month": "2026-11"}, queue="reports", id="live-1")
    (job,) = api.lease("reports")
    tab = open_tab(api.server)
    feeds: list[str] = []
    tab.page.on("request", lambda r: feeds.append(r.url) if "/ui/events/jobs/" in r.url else None)

    page = open_job(tab, "live-1", "processing")
    page.evaluate("window.__notReloaded = true")
    expect(tab.by("log-status")).to_have_attribute("data-state", "live")
    expect(tab.by("progress-text")).to_have_text("running")

    api.log(job, "fetched 120 rows")
    expect(tab.by("log-line")).to_have_count(1)
    expect(tab.by("log-line")).to_contain_text("fetched 120 rows")
    api.progress(job, 0.5, "half way")
    expect(tab.by("progress-text")).to_have_text("50%")
    expect(tab.by("progress-note")).to_have_text("half way")

    # The feed ends after --max-wait (3 s) and the browser reconnects; the reconnection replays
    # the earlier lines, which must not show twice.
    tab.eventually(lambda: len(feeds) >= 2, "the job feed to reconnect")
    api.log(job, "wrote report.csv")
    expect(tab.by("log-line")).to_have_count(2)
    expect(tab.by("log-line").nth(1)).to_contain_text("wrote report.csv")
    expect(tab.by("log-status")).to_have_attribute("data-state", "live")

    api.complete(job, {"rows": 120})
    expect(page.locator('.view-head [data-testid="job-status"]')).to_have_text("completed")
    expect(tab.by("job-result")).to_contain_text('"rows": 120')
    expect(tab.by("log-status")).to_have_attribute("data-state", "finished")
    expect(tab.by("attempt-outcome")).to_have_text("completed")
    expect(tab.by("log-line")).to_have_count(2)
    assert page.evaluate("window.__notReloaded") is True, "the page reloaded"
    tab.assert_clean()


def test_the_overview_follows_the_queue_live(jobq: Callable[..., Api], open_tab: OpenTab) -> None:
    api = jobq()
    api.enqueue("report", queue="reports", id="r-1")
    tab = open_tab(api.server)
    tab.open("#/overview")
    reports = row(tab, "queue-row", queue="reports")
    expect(reports.locator('[data-status="pending"]')).to_have_text("1")
    expect(tab.by("stat-completed")).to_contain_text("0")

    (job,) = api.lease("reports", worker="box-7")  # running: listed under its worker
    expect(row(tab, "worker-row", worker="box-7")).to_contain_text("r-1")
    # the remote worker is on its node's card from the next beat (every 5 s) on
    expect(tab.by("node-remote-workers")).to_contain_text("box-7", timeout=10_000)
    expect(tab.by("stat-remote-workers")).to_contain_text("1")
    expect(row(tab, "worker-row", worker="box-7")).to_contain_text("remote, via ")
    expect(reports.locator('[data-status="processing"]')).to_have_text("1")
    api.complete(job)
    expect(reports.locator('[data-status="completed"]')).to_have_text("1")
    expect(tab.by("stat-completed")).to_contain_text("1")
    expect(row(tab, "worker-row", worker="box-7")).to_have_count(0)
    tab.assert_clean()


# -- 3. retrying a dead job -----------------------------------------------------------------------
def test_retrying_a_dead_job_from_its_page_runs_it_again(jobq: Callable[..., Api], open_tab: OpenTab) -> None:
    api = jobq()
    api.make_failed("imports", "dead-1", "disk full", max_attempts=2)
    assert api.job("dead-1")["status"] == "dead"
    tab = open_tab(api.server)
    page = open_job(tab, "dead-1", "dead")
    expect(tab.by("attempt")).to_have_count(2)

    tab.by("action-retry").click()
    expect(tab.by("flash-message").first).to_contain_text("will run again")
    expect(page.locator('.view-head [data-testid="job-status"]')).to_have_text("pending")
    expect(tab.by("action-retry")).to_have_count(0)
    assert api.job("dead-1")["status"] == "pending"

    (job,) = api.lease("imports")  # it runs again (with a fresh set of attempts), and the page follows it live
    assert job["id"] == "dead-1"
    expect(page.locator('.view-head [data-testid="job-status"]')).to_have_text("processing")
    api.complete(job, {"imported": 7})
    expect(page.locator('.view-head [data-testid="job-status"]')).to_have_text("completed")
    expect(tab.by("attempt")).to_have_count(3)
    final = api.job("dead-1")
    assert [a["outcome"] for a in final["history"]] == ["failed", "failed", "completed"]
    tab.assert_clean()


# -- 4. pausing a queue ---------------------------------------------------------------------------
def test_pausing_and_resuming_a_queue_from_the_queues_view(jobq: Callable[..., Api], open_tab: OpenTab) -> None:
    api = jobq()
    api.enqueue("send", queue="emails", id="mail-1")
    api.enqueue("report", queue="reports", id="report-1")
    tab = open_tab(api.server)
    tab.open("#/queues")
    emails = row(tab, "queue-row", queue="emails")

    emails.get_by_test_id("pause-queue").click()
    expect(emails.get_by_test_id("queue-paused")).to_be_visible()
    expect(row(tab, "queue-row", queue="reports").get_by_test_id("queue-paused")).to_have_count(0)
    assert api.queue("emails")["paused"] is True
    assert api.queue("reports")["paused"] is False
    assert api.call("POST", "/workers/lease", {"queues": ["emails"]}, ok=(200, 204)) is None  # runs nothing

    tab.open("#/overview")  # the overview shows it too
    expect(row(tab, "queue-row", queue="emails").get_by_test_id("queue-paused")).to_be_visible()
    expect(tab.by("stat-paused")).to_contain_text("1")

    tab.open("#/queues")
    emails.get_by_test_id("resume-queue").click()
    expect(emails.get_by_test_id("queue-paused")).to_have_count(0)
    expect(emails.get_by_test_id("pause-queue")).to_be_visible()
    assert api.queue("emails")["paused"] is False
    assert api.lease("emails")[0]["id"] == "mail-1"
    tab.assert_clean()


# -- 5. bulk retries ------------------------------------------------------------------------------
def test_retrying_selected_and_all_matching_dead_letters(jobq: Callable[..., Api], open_tab: OpenTab) -> None:
    api = jobq()
    for n in range(3):
        api.make_failed("imports", f"failed-{n}", "bad row")
    api.make_failed("imports", "dead-1", "bad row", max_attempts=2)
    api.make_failed("imports", "dead-2", "bad row", max_attempts=2)
    api.enqueue("echo", {"ok": True}, id="fine-1")
    api.wait_for("fine-1", "completed")
    tab = open_tab(api.server)

    tab.open("#/dead?status=failed")
    expect(tab.by("tab-failed")).to_have_attribute("aria-current", "page")
    expect(tab.by("job-row")).to_have_count(3)
    tab.by("bulk-retry-all").click()
    expect(tab.by("flash-message").first).to_contain_text("Retried 3 job(s)")
    expect(tab.by("no-jobs")).to_be_visible()  # the list reloads: nothing failed is left
    assert [api.job(f"failed-{n}")["status"] for n in range(3)] == ["pending"] * 3
    assert [api.job(f"dead-{n}")["status"] for n in (1, 2)] == ["dead", "dead"]  # the filter held
    assert api.job("fine-1")["status"] == "completed"

    tab.by("tab-dead").click()
    expect(tab.by("job-row")).to_have_count(2)
    row(tab, "job-row", job_id="dead-2").get_by_test_id("select-job").check()
    expect(tab.by("selection-count")).to_have_text("1 selected")
    tab.by("bulk-retry").click()
    expect(tab.page.get_by_text("Retried 1 job(s)")).to_be_visible()
    expect(tab.by("job-row")).to_have_count(1)
    assert api.job("dead-2")["status"] == "pending"
    assert api.job("dead-1")["status"] == "dead"
    assert len(api.lease("imports", 4)) == 4  # every retried job runs again
    tab.assert_clean()


# -- 6. search ------------------------------------------------------------------------------------
def test_searching_the_payload_finds_only_the_matching_job(jobq: Callable[..., Api], open_tab: OpenTab) -> None:
    api = jobq()
    api.enqueue("invoice", {"customer": "zanzibar-4821", "amount": 10}, queue="billing", id="inv-1")
    api.enqueue("invoice", {"customer": "oslo-1200", "amount": 12}, queue="billing", id="inv-2")
    api.enqueue("invoice", {"customer": "zanzibar-9000", "amount": 14}, queue="billing", id="inv-3")
    tab = open_tab(api.server)
    page = tab.open("#/jobs")
    expect(tab.by("job-row")).to_have_count(3)

    tab.by("search-input").fill("zanzibar-4821")
    tab.by("search-input").press("Enter")
    expect(page).to_have_url(re.compile(r"#/jobs\?q=zanzibar-4821$"))
    expect(tab.by("job-row")).to_have_count(1)
    expect(row(tab, "job-row", job_id="inv-1")).to_be_visible()

    page.reload()  # the search is in the URL: a bookmark finds it again
    expect(tab.by("search-input")).to_have_value("zanzibar-4821")
    expect(tab.by("job-row")).to_have_count(1)

    tab.by("search-input").fill("no-such-customer")
    tab.by("filter-apply").click()
    expect(tab.by("no-jobs")).to_be_visible()
    tab.assert_clean()


def test_retrying_all_dead_letters_matching_a_search(jobq: Callable[..., Api], open_tab: OpenTab) -> None:
    api = jobq()
    api.make_failed("imports", "acme-1", "acme feed: bad row", max_attempts=2)
    api.make_failed("imports", "acme-2", "acme feed: bad row", max_attempts=2)
    api.make_failed("imports", "globex-1", "globex feed: bad row", max_attempts=2)
    tab = open_tab(api.server)
    tab.open("#/dead?status=dead&q=ACME")
    expect(tab.by("job-row")).to_have_count(2)
    tab.by("bulk-retry-all").click()
    expect(tab.by("flash-message").first).to_contain_text('Retried 2 job(s) (status dead, holding "ACME")')
    assert [api.job(job_id)["status"] for job_id in ("acme-1", "acme-2", "globex-1")] == ["pending", "pending", "dead"]
    tab.assert_clean()


# -- schedules ------------------------------------------------------------------------------------
def test_the_schedules_view_shows_last_and_next_runs_and_pauses_and_runs_one(
    jobq: Callable[..., Api], open_tab: OpenTab
) -> None:
    api = jobq()
    api.call("POST", "/schedules", {"name": "beat", "every": 1, "job": {"type": "noop", "queue": "beats"}}, ok=(201,))
    api.call(
        "POST",
        "/schedules",
        {"name": "nightly", "cron": "0 3 * * *", "timezone": "Europe/Paris", "job": {"type": "noop"}},
        ok=(201,),
    )
    tab = open_tab(api.server)
    tab.open("#/schedules")
    beat, nightly = row(tab, "schedule-row", schedule="beat"), row(tab, "schedule-row", schedule="nightly")
    expect(nightly.get_by_test_id("schedule-when")).to_have_text("0 3 * * * (Europe/Paris)")
    expect(nightly.get_by_test_id("schedule-next")).to_contain_text("in ")
    expect(nightly.get_by_test_id("schedule-last")).to_have_text("never")
    expect(beat.get_by_test_id("schedule-last")).to_contain_text("ago")  # it ticks every second: the view refreshes

    nightly.get_by_test_id("pause-schedule").click()
    expect(nightly.get_by_test_id("schedule-paused")).to_be_visible()
    expect(nightly.get_by_test_id("schedule-next")).to_have_text("—")
    assert api.call("GET", "/schedules/nightly")["paused"] is True
    nightly.get_by_test_id("run-schedule").click()  # paused, it still runs when asked
    expect(tab.by("flash-message").filter(has_text="Schedule nightly enqueued job nightly:now-")).to_be_visible()
    nightly.get_by_test_id("resume-schedule").click()
    expect(nightly.get_by_test_id("schedule-paused")).to_have_count(0)
    tab.assert_clean()


# -- 7. logging in, roles, read-only --------------------------------------------------------------
@pytest.mark.usefixtures("with_tokens")
def test_logging_in_with_an_admin_token_and_out(jobq: Callable[..., Api], open_tab: OpenTab) -> None:
    api = jobq(token=ADMIN_TOKEN)
    api.enqueue("send", queue="emails", id="mail-1")
    tab = open_tab(api.server)
    page = tab.open("#/queues")
    expect(tab.by("login-form")).to_be_visible()  # sent to log in, and brought back after
    expect(page).to_have_url(re.compile(r"#/login\?next=%23%2Fqueues$"))
    expect(page.locator("#nav")).to_be_hidden()

    tab.by("login-token").fill("not-a-token-jobq-knows")
    tab.by("login-submit").click()
    expect(tab.by("login-error")).to_be_visible()
    tab.errors.clear()  # the 401 of the wrong token is in the console

    tab.by("login-token").fill(ADMIN_TOKEN)
    tab.by("login-submit").click()
    expect(page).to_have_url(re.compile(r"/ui#/queues$"))
    expect(tab.by("user-role")).to_have_text("admin")
    expect(row(tab, "queue-row", queue="emails").get_by_test_id("pause-queue")).to_be_visible()
    (cookie,) = page.context.cookies()
    assert (cookie["value"], cookie["httpOnly"], cookie["sameSite"]) == (ADMIN_TOKEN, True, "Strict")
    assert ADMIN_TOKEN not in page.evaluate("document.cookie")
    tab.assert_clean()

    tab.by("logout").click()
    expect(tab.by("login-form")).to_be_visible()
    assert page.context.cookies() == []
    assert page.request.get("/ui/session").json()["logged_in"] is False
    tab.open("#/jobs")
    expect(tab.by("login-form")).to_be_visible()
    expect(tab.by("jobs-table")).to_have_count(0)


@pytest.mark.usefixtures("with_tokens")
def test_a_client_token_sees_no_admin_actions_and_the_server_refuses_them(
    jobq: Callable[..., Api], open_tab: OpenTab
) -> None:
    admin = jobq(token=ADMIN_TOKEN)
    client = Api(admin.server, CLIENT_TOKEN)
    client.enqueue("send", queue="emails", id="mine-1")
    client.enqueue("send", queue="emails", id="mine-2")
    admin.enqueue("send", queue="emails", id="theirs-1")
    (leased,) = admin.lease("emails")
    admin.fail(leased, "smtp down")  # mine-1: failed, which only an admin may retry
    assert client.job("mine-1")["status"] == "failed"
    tab = open_tab(admin.server)
    tab.open("#/login")
    tab.by("login-token").fill(CLIENT_TOKEN)
    tab.by("login-submit").click()
    expect(tab.by("user-role")).to_have_text("client")

    tab.open("#/queues")
    expect(row(tab, "queue-row", queue="emails")).to_be_visible()
    expect(tab.by("pause-queue")).to_have_count(0)
    expect(tab.by("clear-queue")).to_have_count(0)

    tab.open("#/jobs")
    expect(tab.by("job-row")).to_have_count(2)  # its own jobs only
    expect(row(tab, "job-row", job_id="theirs-1")).to_have_count(0)
    expect(tab.by("bulk-cancel")).to_be_visible()
    expect(tab.by("bulk-retry")).to_have_count(0)
    expect(tab.by("bulk-delete")).to_have_count(0)

    open_job(tab, "mine-1", "failed")
    expect(tab.by("action-retry")).to_have_count(0)
    expect(tab.by("action-delete")).to_have_count(0)
    open_job(tab, "mine-2", "pending")
    expect(tab.by("action-cancel")).to_be_visible()  # its own job: it may cancel it
    tab.assert_clean()

    # Sent anyway, from the page with the client's cookie: refused.
    assert page_fetch(tab, "POST", "/queues/emails/pause")["status"] == 403
    assert page_fetch(tab, "POST", "/jobs/mine-1/retry")["status"] == 403
    assert admin.queue("emails")["paused"] is False
    assert admin.job("mine-1")["status"] == "failed"


def test_a_read_only_dashboard_offers_no_actions_and_refuses_them(jobq: Callable[..., Api], open_tab: OpenTab) -> None:
    api = jobq("--ui", "read-only")
    api.make_failed("imports", "dead-1", "disk full", max_attempts=2)
    api.enqueue("send", queue="emails", id="mail-1")
    tab = open_tab(api.server)

    tab.open("#/queues")
    expect(row(tab, "queue-row", queue="emails")).to_be_visible()
    expect(tab.page.locator("main button")).to_have_count(0)
    open_job(tab, "dead-1", "dead")
    expect(tab.by("job-actions").locator("button")).to_have_count(0)
    open_job(tab, "mail-1", "pending")
    expect(tab.by("job-actions").locator("button")).to_have_count(0)
    tab.open("#/dead")
    expect(row(tab, "job-row", job_id="dead-1")).to_be_visible()
    expect(tab.by("select-job")).to_have_count(0)
    expect(tab.by("bulk-retry-all")).to_have_count(0)
    tab.assert_clean()

    for method, path in [
        ("POST", "/jobs/dead-1/retry"),
        ("POST", "/queues/emails/pause"),
        ("POST", "/jobs/mail-1/cancel"),
        ("DELETE", "/jobs/dead-1"),
    ]:
        answer = page_fetch(tab, method, path)
        assert answer["status"] == 403, (method, path, answer)
        assert "read-only" in json.loads(answer["body"])["detail"]
    assert api.job("dead-1")["status"] == "dead"
    assert api.job("mail-1")["status"] == "pending"
    assert api.queue("emails")["paused"] is False


# -- 8. markup in the data stays text -------------------------------------------------------------
def test_markup_in_payloads_results_errors_and_logs_is_shown_as_text(
    jobq: Callable[..., Api], open_tab: OpenTab
) -> None:
    api = jobq()
    text = " ".join(XSS)
    api.enqueue("render", {"html": XSS}, queue="web", id="xss-failed")
    (job,) = api.lease("web")
    for line in XSS:
        api.log(job, line)
    api.progress(job, 0.25, XSS[0])
    api.fail(job, text, traceback=f"Traceback (most recent call last):\nValueError: {text}\n")
    api.enqueue("render", {"html": XSS}, queue="web", id="xss-done")
    (job,) = api.lease("web")
    api.complete(job, {"html": XSS})

    # Without the page's Content-Security-Policy: the page's own escaping is what is tested here.
    tab = open_tab(api.server, bypass_csp=True)
    injected = "document.querySelectorAll('[onerror], [onload], img[src=x], main script').length"

    def assert_inert() -> None:
        assert tab.page.evaluate("window.__xss") is None, "a payload ran"
        assert tab.page.evaluate(injected) == 0, "markup from the data became elements"
        assert not tab.dialogs, tab.dialogs
        assert not tab.errors, tab.errors

    open_job(tab, "xss-failed", "failed")
    expect(tab.by("job-error")).to_have_text(text)
    expect(tab.by("attempt-error")).to_have_text(text)
    expect(tab.by("traceback")).to_contain_text(text, use_inner_text=False)
    expect(tab.by("job-payload")).to_contain_text(XSS[2].replace('"', '\\"'))  # JSON text of the payload
    expect(tab.by("progress-note")).to_have_text(XSS[0])
    expect(tab.by("log-line")).to_have_count(3)
    for n, line in enumerate(XSS):
        expect(tab.by("log-line").nth(n).locator(".msg")).to_have_text(line)
    assert_inert()

    open_job(tab, "xss-done", "completed")
    expect(tab.by("job-result")).to_contain_text(XSS[1])
    assert_inert()

    for route in ("#/jobs", "#/dead?status=failed"):
        tab.open(route)
        error_cell = row(tab, "job-row", job_id="xss-failed").locator("td.err span")
        expect(error_cell).to_have_text(text)
        expect(error_cell).to_have_attribute("title", text)
        assert_inert()

    tab.open("#/jobs?q=" + urllib.request.quote(XSS[2]))  # search text from the URL
    expect(tab.by("search-input")).to_have_value(XSS[2])
    expect(tab.by("job-row")).to_have_count(2)
    assert_inert()

    tab.open("#/job/" + urllib.request.quote(XSS[0]))  # a job id from the URL, echoed in a 404
    expect(tab.by("job-error-message")).to_contain_text(XSS[0])
    expect(tab.page.locator("main h1 code")).to_have_text(XSS[0])
    tab.errors.clear()  # the console reports the 404
    assert_inert()

    for route in ("#/overview", "#/queues"):
        tab.open(route)
        expect(row(tab, "queue-row", queue="web")).to_be_visible()
        assert_inert()


# -- 9. a phone -----------------------------------------------------------------------------------
def test_a_small_screen_shows_the_overview_and_a_job_without_sideways_scrolling(
    jobq: Callable[..., Api], open_tab: OpenTab
) -> None:
    api = jobq()
    for queue in ("emails-transactional", "reports.monthly"):
        api.enqueue("send", queue=queue)
    job_id = "invoice-2026-11-customer-00042-monthly-summary"
    payload = {
        "customer": "ACME Corporation International",
        "download": "https://files.example.com/invoices/2026/11/customer-00042/monthly-summary-final-v2.pdf",
        "lines": [{"sku": f"SKU-{n:05}", "qty": n, "price": 19.99} for n in range(3)],
    }
    api.enqueue("invoice", payload, queue="billing", id=job_id)
    (job,) = api.lease("billing", worker="worker-host-with-a-long-name.internal:4242")
    api.log(job, "rendering " + payload["download"])
    api.progress(job, 0.4, "rendered page 4 of 10 of /srv/invoices/2026/11/customer-00042/monthly-summary.pdf")
    tab = open_tab(api.server, width=375, height=740)

    def assert_fits() -> None:
        widths = tab.page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth, document.body.scrollWidth]"
        )
        assert max(widths[0], widths[2]) <= 375 + 2, f"the page scrolls sideways: {widths}"

    tab.open("#/overview")
    expect(row(tab, "queue-row", queue="reports.monthly")).to_be_visible()
    expect(tab.by("worker-row")).to_have_count(1)
    assert_fits()
    # The queue table is wider than the screen: it scrolls in its own box, not the page.
    table_width = tab.by("queue-table").evaluate("table => table.getBoundingClientRect().width")
    assert table_width > 375, table_width

    open_job(tab, job_id, "processing")
    expect(tab.by("log-line")).to_have_count(1)
    expect(tab.by("progress-note")).to_be_visible()
    assert_fits()
    tab.assert_clean()


# -- 10. workflows --------------------------------------------------------------------------------
DIAMOND = "wf-diamond"


def diamond(api: Api) -> None:
    """Workflow wf-diamond: a, then b and c, then d (which runs however b and c end), on queue "flows",
    which the test runs as a remote worker."""
    step = {"type": "step", "queue": "flows", "payload": {}}
    jobs = [
        {"id": "a", **step},
        {"id": "b", **step, "depends_on": ["a"]},
        {"id": "c", **step, "depends_on": ["a"]},
        {"id": "d", **step, "depends_on": ["b", "c"], "on_parent_failure": "run"},
    ]
    api.call("POST", "/workflows", {"id": DIAMOND, "jobs": jobs}, ok=(202,))


def node(tab: Tab, job_id: str) -> Locator:
    return row(tab, "graph-node", job_id=job_id)


def edge(tab: Tab, parent: str, child: str) -> Locator:
    return row(tab, "graph-edge", **{"from": parent, "to": child})


def test_a_workflow_page_draws_its_graph_and_follows_its_jobs_live(jobq: Callable[..., Api], open_tab: OpenTab) -> None:
    api = jobq()
    diamond(api)
    tab = open_tab(api.server)
    page = tab.open(f"#/workflows/{DIAMOND}")
    expect(tab.by("workflow-id")).to_have_text(DIAMOND)
    expect(tab.by("graph-node")).to_have_count(4)
    expect(tab.by("graph-edge")).to_have_count(4)
    edges = tab.by("graph-edge").evaluate_all("paths => paths.map((p) => [p.dataset.from, p.dataset.to])")
    assert sorted(edges) == [["a", "b"], ["a", "c"], ["b", "d"], ["c", "d"]]
    # Layers left to right: a; b and c, one above the other; d.
    box = {job_id: node(tab, job_id).bounding_box() or {} for job_id in "abcd"}
    assert box["a"]["x"] < box["b"]["x"] == box["c"]["x"] < box["d"]["x"], box
    assert abs(box["b"]["y"] - box["c"]["y"]) >= box["b"]["height"], box
    assert [node(tab, job_id).get_attribute("data-layer") for job_id in "abcd"] == ["0", "1", "1", "2"]
    for job_id, status in {"a": "pending", "b": "waiting", "c": "waiting", "d": "waiting"}.items():
        expect(node(tab, job_id)).to_have_attribute("data-status", status)
    expect(tab.by("workflow-done")).to_have_text("0 of 4 done")
    expect(row(tab, "workflow-count", status="waiting")).to_have_text("waiting 3")
    expect(tab.by("live-status")).to_have_attribute("data-state", "refreshing")
    page.evaluate("window.__notReloaded = true")

    (a,) = api.lease("flows")
    expect(node(tab, "a")).to_have_attribute("data-status", "processing")
    api.complete(a)
    expect(node(tab, "a")).to_have_attribute("data-status", "completed")
    expect(node(tab, "b")).to_have_attribute("data-status", "pending")
    expect(node(tab, "c")).to_have_attribute("data-status", "pending")
    expect(edge(tab, "a", "b")).to_have_class(re.compile(r"\bedge-done\b"))
    expect(tab.by("workflow-done")).to_have_text("1 of 4 done")

    b, c = sorted(api.lease("flows", 2), key=lambda job: job["id"])
    api.complete(b)
    api.fail(c, "upstream 503")
    expect(node(tab, "c")).to_have_attribute("data-status", "failed")
    expect(edge(tab, "c", "d")).to_have_class(re.compile(r"\bedge-gave-up\b"))
    expect(tab.by("workflow-failed")).to_have_text("1 failed")
    expect(node(tab, "d")).to_have_attribute("data-status", "pending")  # "run": however its parents ended
    (d,) = api.lease("flows")
    api.complete(d)
    expect(node(tab, "d")).to_have_attribute("data-status", "completed")
    expect(tab.by("workflow-done")).to_have_text("3 of 4 done")
    expect(tab.by("workflow-state")).to_have_text("finished")
    expect(tab.by("live-status")).to_have_attribute("data-state", "finished")
    assert page.evaluate("window.__notReloaded") is True, "the page reloaded"

    node(tab, "c").click()  # each node is a link to its job
    expect(page).to_have_url(re.compile(r"#/job/c$"))
    expect(page.locator('.view-head [data-testid="job-status"]')).to_have_text("failed")
    tab.assert_clean()

    tab.open("#/workflows/no-such-workflow")
    expect(tab.by("workflow-error")).to_contain_text("no-such-workflow")
    tab.errors.clear()  # the console reports the 404


def test_a_job_page_shows_its_workflow_parents_and_children_and_a_waiting_job_is_cancelled(
    jobq: Callable[..., Api], open_tab: OpenTab
) -> None:
    api = jobq()
    diamond(api)
    tab = open_tab(api.server)
    page = open_job(tab, "d", "waiting")
    expect(tab.by("workflow-link")).to_have_text(DIAMOND)
    expect(tab.by("job-parent")).to_have_count(2)
    expect(row(tab, "job-parent", job_id="b", status="waiting")).to_contain_text("b waiting")
    expect(row(tab, "job-parent", job_id="c", status="waiting")).to_be_visible()
    expect(tab.by("parents-left")).to_have_text("2 of 2 parents")
    expect(tab.by("parent-policy")).to_contain_text("run:")
    expect(tab.by("job-child")).to_have_count(0)

    # While d waits, its parents change without d changing: the page reads them again.
    (a,) = api.lease("flows")
    api.complete(a)
    b = min(api.lease("flows", 2), key=lambda job: job["id"])  # c stays processing
    api.complete(b)
    expect(row(tab, "job-parent", job_id="b", status="completed")).to_be_visible()
    expect(row(tab, "job-parent", job_id="c", status="processing")).to_be_visible()
    expect(tab.by("parents-left")).to_have_text("1 of 2 parents")

    open_job(tab, "a", "completed")
    expect(tab.by("workflow-link")).to_have_text(DIAMOND)
    expect(tab.by("job-parent")).to_have_count(0)
    assert tab.by("job-child").evaluate_all("items => items.map((li) => li.dataset.jobId)") == ["b", "c"]
    tab.by("children-link").click()
    expect(page).to_have_url(re.compile(r"#/jobs\?parent=a$"))
    expect(tab.by("list-scope")).to_contain_text("Jobs that depend on a")
    expect(tab.by("job-row")).to_have_count(2)

    tab.open(f"#/jobs?workflow={DIAMOND}&status=waiting")  # "waiting" is a status the list filters by
    expect(tab.by("filter-status")).to_have_value("waiting")
    expect(tab.by("job-row")).to_have_count(1)
    expect(row(tab, "job-row", job_id="d", status="waiting")).to_be_visible()
    expect(tab.by("bulk-cancel")).to_have_text("Cancel selected")
    expect(tab.by("bulk-delete-all")).to_have_count(0)  # the bulk routes cannot keep to one workflow

    open_job(tab, "d", "waiting")  # a waiting job can be cancelled
    tab.confirm_next()
    tab.by("action-cancel").click()
    expect(page.locator('.view-head [data-testid="job-status"]')).to_have_text("cancelled")
    assert tab.confirmed == ["Cancel job d?"]
    assert api.job("d")["status"] == "cancelled"
    tab.by("workflow-link").click()
    expect(page).to_have_url(re.compile(rf"#/workflows/{DIAMOND}$"))
    expect(node(tab, "d")).to_have_attribute("data-status", "cancelled")
    expect(node(tab, "c")).to_have_attribute("data-status", "processing")
    tab.assert_clean()


# Long tasks (the page's main thread busy for more than 50 ms at once), collected before any script runs.
WATCH_LONG_TASKS = """
window.__longTasks = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__longTasks.push(Math.round(entry.duration));
}).observe({ type: "longtask", buffered: true });
"""


def test_a_workflow_of_ten_thousand_jobs_is_summed_up_per_layer_without_freezing_the_page(
    jobq: Callable[..., Api], open_tab: OpenTab
) -> None:
    api = jobq()
    chains, length = 50, 200  # 10,000 jobs in 200 layers
    jobs = [
        {"id": f"c{n}-{k}", "type": "step", "queue": "big", **({"depends_on": [f"c{n}-{k - 1}"]} if k else {})}
        for n in range(chains)
        for k in range(length)
    ]
    api.call("POST", "/workflows", {"id": "big", "jobs": jobs}, ok=(202,))
    tab = open_tab(api.server)
    tab.page.add_init_script(WATCH_LONG_TASKS)
    tab.open("#/workflows/big")
    expect(tab.by("workflow-layers")).to_be_visible()
    expect(tab.by("graph-too-large")).to_contain_text("200 layers")
    expect(tab.by("graph-node")).to_have_count(0)
    rows = tab.by("layer-row")
    expect(rows).to_have_count(100)  # two layers a row
    expect(rows.first.locator("th")).to_have_text("1\u20132")  # an en dash
    expect(rows.first.locator('[data-status="pending"]')).to_have_text("50")
    expect(rows.first.locator('[data-status="waiting"]')).to_have_text("50")
    expect(tab.by("workflow-done")).to_have_text(re.compile(r"^0 of 10\D?000 done$"))
    expect(tab.by("live-status")).to_have_attribute("data-state", "refreshing-slowly")  # each read sends 10,000 jobs
    longest = max(tab.page.evaluate("window.__longTasks"), default=0)
    assert longest < 1000, f"the page was busy for {longest} ms at once"

    (job,) = api.lease("big")
    api.complete(job)
    tab.by("refresh").click()
    expect(rows.first.locator('[data-status="completed"]')).to_have_text("1")
    expect(tab.by("workflow-done")).to_have_text(re.compile(r"^1 of 10\D?000 done$"))
    tab.assert_clean()


# -- 11. the README's screenshots -----------------------------------------------------------------
def test_screenshots_of_the_overview_and_a_job(jobq: Callable[..., Api], open_tab: OpenTab, tmp_path: Path) -> None:
    """Renders the two pages the README shows; with JOBQ_SCREENSHOTS=1 they are written to docs/img."""
    for_docs = os.environ.get("JOBQ_SCREENSHOTS") == "1"
    folder = ROOT / "docs" / "img" if for_docs else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    api = jobq("--retry-base", "0.01")
    for n in range(12):
        api.enqueue("echo", {"n": n})
    api.enqueue("fail", {"message": "SMTP 451: try again later"}, id="welcome-bob", max_attempts=2)
    api.enqueue("fail", {"message": "card declined"}, id="charge-8812")
    for n in range(6):
        api.enqueue("send_email", {"to": f"user{n}@example.com"}, queue="emails")
    api.call("POST", "/queues/emails/pause")
    # report-2026-08: a failed attempt, then a second one that finishes with a result.
    api.enqueue("report", {"month": "2026-08"}, queue="reports", id="report-2026-08", max_attempts=3)
    (first,) = api.lease("reports", worker="report-box-1")
    api.log(first, "querying orders for 2026-08")
    api.fail(first, "S3 upload timed out after 30s", retry_in=0)
    (again,) = api.lease("reports", worker="report-box-2")
    for line in ("querying orders for 2026-08", "18,230 rows", "uploading s3://reports/2026-08.csv"):
        api.log(again, line)
    api.progress(again, 1.0, "uploaded")
    api.complete(again, {"rows": 18230, "file": "s3://reports/2026-08.csv"})
    for n in range(9, 12):
        api.enqueue("report", {"month": f"2026-{n:02}"}, queue="reports", id=f"report-2026-{n:02}")
    (running,) = api.lease("reports", worker="report-box-1")
    api.progress(running, 0.4, "page 4 of 10")
    api.wait_for("welcome-bob", "dead")

    if for_docs:  # traffic over ten seconds (five of the charts' intervals), so they have a shape
        for n in range(5):
            for k in range(4 + 3 * (n % 3)):
                api.enqueue("sleep", {"seconds": round(0.02 * (k + n), 2)})
            if n % 2:
                api.enqueue("fail", {"message": "upstream 503"})
            time.sleep(2.0)

    tab = open_tab(api.server)
    tab.open("#/overview")
    expect(row(tab, "worker-row", worker="report-box-1")).to_be_visible()
    expect(row(tab, "queue-row", queue="emails").get_by_test_id("queue-paused")).to_be_visible()
    expect(tab.by("chart-throughput").first).to_be_visible()  # two samples: 2-4 s after the start
    expect(tab.by("node-row")).to_be_visible()
    tab.page.screenshot(path=folder / "dashboard-overview.png", full_page=True)

    open_job(tab, first["id"], "completed")
    expect(tab.by("attempt")).to_have_count(2)
    expect(tab.by("log-line")).to_have_count(4)
    tab.page.screenshot(path=folder / "dashboard-job.png", full_page=True)  # down to its history and log
    tab.assert_clean()
    for name in ("dashboard-overview.png", "dashboard-job.png"):
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
