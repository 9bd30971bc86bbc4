"""HTTP edge cases: numbers that overflow a double, bodies that do not decompress, requests aiohttp
cannot parse, secrets in the URLs of the access log, and bodies too large by their Content-Length.

Each is refused with a 4xx problem+json answer, stores nothing, and the server goes on serving.
The server runs on jobq's Runner, as main.py runs it; raw requests go through a socket.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import math
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.compression_utils import HAS_BROTLI
from aiohttp.test_utils import TestClient, TestServer
from pydantic_core import from_json

from jobq.api import might_not_be_finite
from jobq.app import Runner, create_app
from jobq.handlers import Registry
from jobq.logs import ACCESS_LOGGER, AccessLogger, redact_query
from tests.conftest import TEST_CONFIG

PROBLEM = "application/problem+json"
LIMIT = 64 * 1024


class JobqTestServer(TestServer):
    """aiohttp's test server, run by jobq's Runner as main.py runs the app."""

    def __init__(self, app: web.Application, **runner_kwargs: Any) -> None:
        super().__init__(app)
        self.runner_kwargs = runner_kwargs

    async def _make_runner(self, **kwargs: Any) -> Runner:
        return Runner(self.app, **kwargs, **self.runner_kwargs)


@pytest.fixture
async def client(aiohttp_client: Any, registry: Registry) -> TestClient:
    """A client of an app with no workers (jobs stay where they are stored) and a 64 KiB body limit."""
    app = create_app(replace(TEST_CONFIG, workers=0, body_limit=LIMIT), handlers=registry)
    access_log = logging.getLogger(ACCESS_LOGGER)
    return await aiohttp_client(JobqTestServer(app, access_log=access_log, access_log_class=AccessLogger))


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


async def answer_of(response: ClientResponse) -> Answer:
    return Answer(response.status, {k.lower(): v for k, v in response.headers.items()}, await response.read())


async def exchange(client: TestClient, request: bytes) -> Answer:
    """Send raw bytes on a new connection and read one answer (the server may close after it)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        async with asyncio.timeout(5):
            writer.write(request)
            await writer.drain()
            return await read_answer(reader)
    finally:
        writer.close()


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status_line, *lines = head.strip().split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Answer(int(status_line.split()[1]), headers, body)


def check_problem(answer: Answer, status: int, detail_part: str) -> dict[str, Any]:
    assert answer.status == status, answer
    assert answer.headers["content-type"].startswith(PROBLEM)
    problem = json.loads(answer.body)
    assert problem["status"] == status
    assert problem["type"].startswith("https://jobq.dev/problems/")
    assert problem["title"]
    assert detail_part in problem["detail"]
    assert "Traceback" not in problem["detail"]
    return problem


async def assert_nothing_stored_and_still_serving(client: TestClient) -> None:
    stats = await (await client.get("/stats")).json()
    assert sum(stats["jobs"].values()) == 0, stats
    assert (await client.post("/enqueue", json={"type": "noop"})).status == 202


def assert_no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


# -- 1. numbers that overflow a double --
OVERFLOWING = {
    "long-mantissa-small-exponent": b"1" * 300 + b"e10",
    "long-mantissa-fraction-exponent": b"1" * 250 + b".5e80",
    "just-over": b"9" * 210 + b"e99",
    "fraction-large-exponent": b"0.0001e400",
    "plus-and-zero-padded-exponent": b"1E+00309",
    "negative-long-mantissa-negative-exponent": b"-" + b"1" * 320 + b"e-5",
}


@pytest.mark.parametrize("number", OVERFLOWING.values(), ids=OVERFLOWING)
async def test_a_number_that_overflows_a_double_is_400_and_stores_nothing(client: TestClient, number: bytes) -> None:
    body = b'{"type": "echo", "payload": {"x": [' + number + b"]}}"
    check_problem(await answer_of(await client.post("/enqueue", data=body)), 400, "too large")
    batch = b'{"jobs": [' + body + b"]}"
    check_problem(await answer_of(await client.post("/enqueue/batch", data=batch)), 400, "too large")
    await assert_nothing_stored_and_still_serving(client)


async def test_large_finite_numbers_are_still_accepted(client: TestClient) -> None:
    numbers = [b"9" * 209 + b"e99", b"0." + b"0" * 300 + b"1e400", b"1" * 400, b"-1.7976931348623157e308"]
    response = await client.post("/enqueue", data=b'{"type": "echo", "payload": [' + b", ".join(numbers) + b"]}")
    assert response.status == 202
    job = await (await client.get(response.headers["Location"])).json()
    assert job["payload"] == [float(numbers[0]), 1e99, int(numbers[2]), -1.7976931348623157e308]


def test_the_pre_filter_flags_every_number_that_parses_to_an_infinity() -> None:
    mantissas = [
        *(b"9" * digits for digits in (*range(1, 20), *range(200, 215), *range(300, 312))),
        *(b"1" + b"0" * (digits - 1) + b".5" for digits in (1, 150, 209, 210, 211)),
        b"0.0009",
        b"0." + b"0" * 300 + b"9",
    ]
    exponents = [b"", *(b"e%d" % e for e in (*range(-40, 120), *range(280, 330))), b"E+99", b"e+0100", b"e-0400"]
    infinite = 0
    for mantissa in mantissas:
        for exponent in exponents:
            for sign in (b"", b"-"):
                text = b"[" + sign + mantissa + exponent + b"]"
                value = from_json(text)[0]
                if isinstance(value, float) and math.isinf(value):
                    infinite += 1
                    assert might_not_be_finite(text), text
    assert infinite > 1000  # the sweep crosses the boundary many times


def test_the_pre_filter_lets_ordinary_bodies_through_unparsed() -> None:
    numbers = [[i * 1.2345678901234567, i * 10**12, 1e-300, 2.5e30] for i in range(60)]
    ordinary = [
        b'{"type": "send_email", "priority": 5, "payload": {"to": "ada@example.com", "user_id": 123456}}',
        json.dumps({"type": "x", "payload": numbers}).encode(),
        b'{"type": "x", "run_at": "2026-12-01T06:27:40.162Z", "id": "01a23049-9c02-7367-8247-e36b450c001d"}',
    ]
    for body in ordinary:
        assert not might_not_be_finite(body)
    for suspect in (b"[NaN]", b"[-Infinity]", b'"NaN"', b"[1e999]", b"[2.5e+300]", b"[" + b"7" * 210 + b"]"):
        assert might_not_be_finite(suspect)


# -- 2. bodies that do not decompress --
@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_that_does_not_decompress_is_400_naming_the_encoding(
    client: TestClient, caplog: pytest.LogCaptureFixture, encoding: str
) -> None:
    headers = {"Content-Encoding": encoding, "Content-Type": "application/json"}
    response = await client.post("/enqueue", data=b"this is not compressed at all", headers=headers)
    check_problem(await answer_of(response), 400, f"not valid {encoding} data")
    assert_no_errors_logged(caplog)
    await assert_nothing_stored_and_still_serving(client)


@pytest.mark.parametrize(("encoding", "compress"), [("gzip", gzip.compress), ("deflate", zlib.compress)])
async def test_a_compressed_body_is_read(client: TestClient, encoding: str, compress: Any) -> None:
    body = compress(b'{"type": "echo", "payload": {"n": 1}}')
    response = await client.post("/enqueue", data=body, headers={"Content-Encoding": encoding})
    assert response.status == 202
    job = await (await client.get(response.headers["Location"])).json()
    assert job["payload"] == {"n": 1}


# -- 3. requests aiohttp cannot parse --
UNPARSABLE = {
    "bad-method": b"G@T /health HTTP/1.1\r\nHost: jobq\r\n\r\n",
    "bad-url-character": b"GET /hea\x01lth HTTP/1.1\r\nHost: jobq\r\n\r\n",
    "request-line-too-long": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: jobq\r\n\r\n",
    "too-many-headers": b"GET /health HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n",
    "header-too-large": b"GET /health HTTP/1.1\r\nHost: jobq\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
    "bad-chunk-size": (
        b"POST /enqueue HTTP/1.1\r\nHost: jobq\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"
    ),
}


@pytest.mark.parametrize("request_bytes", UNPARSABLE.values(), ids=UNPARSABLE)
async def test_a_request_aiohttp_cannot_parse_is_a_400_problem_logged_at_debug(
    client: TestClient, caplog: pytest.LogCaptureFixture, request_bytes: bytes
) -> None:
    caplog.set_level(logging.DEBUG, logger="jobq")
    problem = check_problem(await exchange(client, request_bytes), 400, "the HTTP request is malformed")
    assert problem["title"] == "Malformed request"
    assert_no_errors_logged(caplog)
    [line] = [r for r in caplog.records if r.name.startswith("jobq") and "refused an HTTP request" in r.getMessage()]
    assert (line.levelno, line.exc_info) == (logging.DEBUG, None)
    access = [r for r in caplog.records if r.name == ACCESS_LOGGER and r.status == 400]  # type: ignore[attr-defined]
    assert [r.route for r in access] == ["(unparsed)"]  # type: ignore[attr-defined]
    await assert_nothing_stored_and_still_serving(client)


@pytest.mark.skipif(HAS_BROTLI, reason="aiohttp decodes brotli here")
async def test_a_content_encoding_aiohttp_cannot_decode_is_415(client: TestClient) -> None:
    request = b"POST /enqueue HTTP/1.1\r\nHost: jobq\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\n{}"
    check_problem(await exchange(client, request), 415, "Content-Encoding is not supported")
    await assert_nothing_stored_and_still_serving(client)


# -- 4. secrets in the access log --
def test_secret_looking_query_values_are_redacted() -> None:
    assert redact_query("/jobs?access_token=abc&limit=5") == "/jobs?access_token=REDACTED&limit=5"
    assert redact_query("/jobs?limit=5&cursor=x") == "/jobs?limit=5&cursor=x"
    assert redact_query("/health") == "/health"
    for name in ("token", "TOKEN", "Password", "client_secret", "api_key", "apiKey", "auth", "X-Amz-Signature", "sig"):
        assert redact_query(f"/x?{name}=s3cr3t&ok=1") == f"/x?{name}=REDACTED&ok=1"
    assert redact_query("/x?access%5Ftoken=s3cr3t") == "/x?access%5Ftoken=REDACTED"  # a percent-encoded name


async def test_the_access_log_redacts_secrets_in_the_query(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    response = await client.get("/stats?access_token=s3cr3t-t0ken&limit=5&API_KEY=k3y-v4lue&Signature=s1g")
    assert response.status == 200
    [line] = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    logged = line.getMessage() + json.dumps(line.__dict__, default=str)
    for secret in ("s3cr3t-t0ken", "k3y-v4lue", "s1g"):
        assert secret not in logged
    assert "/stats?access_token=REDACTED&limit=5&API_KEY=REDACTED&Signature=REDACTED" in line.getMessage()
    assert line.__dict__["path"] == "/stats"


# -- 5. bodies too large by their Content-Length --
async def test_a_content_length_over_the_limit_is_413_before_the_body_is_sent(client: TestClient) -> None:
    head = b"POST /enqueue HTTP/1.1\r\nHost: jobq\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n"
    answer = await exchange(client, head + b"\r\n" + b'{"type": ')  # then nothing: the server must not wait for it
    check_problem(answer, 413, f"over the limit of {LIMIT} bytes")
    assert answer.headers["connection"] == "close"
    await assert_nothing_stored_and_still_serving(client)


async def test_expect_100_continue_over_the_limit_gets_413_instead_of_continue(client: TestClient) -> None:
    head = b"POST /enqueue HTTP/1.1\r\nHost: jobq\r\nExpect: 100-continue\r\nContent-Length: 1000000000\r\n\r\n"
    check_problem(await exchange(client, head), 413, "over the limit")
    await assert_nothing_stored_and_still_serving(client)


async def test_expect_100_continue_within_the_limit_continues(client: TestClient) -> None:
    body = b'{"type": "noop"}'
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        async with asyncio.timeout(5):
            head = b"POST /enqueue HTTP/1.1\r\nHost: jobq\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n"
            writer.write(head % len(body))
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(body)
            assert (await read_answer(reader)).status == 202
    finally:
        writer.close()


@pytest.mark.parametrize("size", [LIMIT // 2, LIMIT + 1])
async def test_a_chunked_body_sent_at_once_is_read_and_bounded(client: TestClient, size: int) -> None:
    """One write: the body is all there when the route reads it, and still bounded by the limit."""
    body = b'{"type": "noop", "payload": "' + b"x" * (size - 30) + b'"}'
    head = b"POST /enqueue HTTP/1.1\r\nHost: jobq\r\nTransfer-Encoding: chunked\r\n\r\n"
    answer = await exchange(client, head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    if size > LIMIT:
        check_problem(answer, 413, str(LIMIT))
        await assert_nothing_stored_and_still_serving(client)
    else:
        assert answer.status == 202, answer
        job = await (await client.get(f"/status/{json.loads(answer.body)['id']}")).json()
        assert len(job["payload"]) == size - 30


async def test_a_chunked_body_over_the_limit_is_still_413(client: TestClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"type": "echo", "payload": "'
        for _ in range(LIMIT // 1024 + 1):
            yield b"x" * 1024
        yield b'"}'

    response = await client.post("/enqueue", data=chunks())
    assert response.request_info.headers.get("Transfer-Encoding") == "chunked"
    check_problem(await answer_of(response), 413, str(LIMIT))
    await assert_nothing_stored_and_still_serving(client)
