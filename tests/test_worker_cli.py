"""The remote worker's command line, and the SDK facing an answer that is not jobq's."""

from __future__ import annotations

import importlib
import tomllib

import pytest
from aiohttp import web

from jobq.errors import JobqError
from jobq.sdk.client import JobqClient
from jobq.sdk.remote_worker import build_parser, prefetch_of
from tests.procs import ROOT


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lease", "0"], "--lease: must be above 0"),
        (["--lease", "nan"], "--lease: must be above 0"),
        (["--concurrency", "0"], "--concurrency: must be above 0"),
        (["--concurrency", "many"], "--concurrency: expected a number"),
        (["--drain-timeout", "-1"], "--drain-timeout: must be at least 0"),
        (["--prefetch", "-1"], "--prefetch: must be at least 0"),
        (["--url", "notaurl"], "--url: 'notaurl' is not an http:// or https:// URL"),
    ],
)
def test_bad_numbers_are_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(argv)
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


def test_help_gives_each_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("JOBQ_URL", "JOBQ_CONCURRENCY", "JOBQ_LEASE", "JOBQ_DRAIN_TIMEOUT", "JOBQ_GIVE_UP_AFTER"):
        monkeypatch.delenv(name, raising=False)
    entries = {entry.split()[0]: " ".join(entry.split()) for entry in build_parser().format_help().split("\n  --")[1:]}
    defaults = {"url": "http://127.0.0.1:8080", "concurrency": "64", "lease": "60", "drain-timeout": "30"}
    for flag, default in {**defaults, "give-up-after": "300"}.items():
        assert entries[flag].endswith(f"default {default}]"), entries[flag]


def test_a_worker_leases_as_many_ahead_as_it_runs_unless_told() -> None:
    assert prefetch_of(build_parser().parse_args(["--concurrency", "8"])) == 8
    assert prefetch_of(build_parser().parse_args(["--concurrency", "8", "--prefetch", "0"])) == 0
    assert prefetch_of(build_parser().parse_args(["--prefetch", "3"])) == 3


def test_numbers_from_the_environment_are_checked_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JOBQ_CONCURRENCY", "abc")
    with pytest.raises(SystemExit):
        build_parser().parse_args([])
    assert "--concurrency: expected a number" in capsys.readouterr().err
    monkeypatch.setenv("JOBQ_CONCURRENCY", "8")
    assert build_parser().parse_args([]).concurrency == 8


async def test_a_proxy_error_page_is_a_jobq_error_not_a_decode_error(aiohttp_server: object) -> None:
    async def bad_gateway(request: web.Request) -> web.Response:
        return web.Response(status=502, text="<html>Bad Gateway</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/status/{id}", bad_gateway)
    server = await aiohttp_server(app)  # type: ignore[operator]
    async with JobqClient(str(server.make_url(""))) as jobq:
        with pytest.raises(JobqError) as raised:
            await jobq.get("job-1")
        assert raised.value.status == 502
        assert "Bad Gateway" in raised.value.detail
        with pytest.raises(JobqError) as elsewhere:  # another server's 404 page: not jobq, not "job not found"
            await jobq.cancel("job-1")
    assert (elsewhere.value.status, elsewhere.value.title) == (502, "Not a jobq answer")
    assert elsewhere.value.detail.startswith("404 Not Found, not JSON, from http://"), elsewhere.value.detail


def test_the_installed_commands_point_at_real_entry_points() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    scripts = project["project"]["scripts"]
    assert set(scripts) == {"jobq"}  # one command: jobq worker, jobq dispatch, jobq serve, ...
    for target in scripts.values():
        module, _, function = target.partition(":")
        entry = getattr(importlib.import_module(module), function)
        assert callable(entry), target
    requirements = project["tool"]["setuptools"]["dynamic"]["dependencies"]["file"]
    assert all((ROOT / name).is_file() for name in requirements)


def test_an_empty_variable_counts_as_unset_and_a_bad_log_level_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("JOBQ_LOG_LEVEL", "JOBQ_CONCURRENCY", "JOBQ_PREFETCH", "JOBQ_LEASE"):
        monkeypatch.setenv(name, "")
    args = build_parser().parse_args([])
    assert (args.log_level, args.concurrency, prefetch_of(args), args.lease) == ("info", 64, 64, 60.0)
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["--log-level", "bogus"])
    assert stopped.value.code == 2 and "invalid choice: 'bogus'" in capsys.readouterr().err
