"""A lean HTTP/1.1 load generator, run as its own process by ``bench/run.py``.

Each of ``--connections`` keep-alive connections sends one prebuilt POST,
waits for the whole response, and sends the next: one request in flight per
connection, no pipelining. The client parses only the status line and
``Content-Length``, so it spends far less CPU per request than a general
client (aiohttp's client costs about as much as the server per request). Only
responses finished inside the measuring window, after a warm-up, are counted.

Prints one JSON object: requests, seconds, requests_per_second, codes, errors and
cpu_percent (this generator's CPU use while measuring) and, given --server-pid,
server_cpu_percent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit


@dataclass
class Window:
    """The measuring window and what landed in it."""

    starts: float
    ends: float
    codes: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    server_pid: int | None = None
    cpu: list[tuple[float, float | None]] = field(default_factory=list)  # (own, server) CPU s at start and end

    def record(self, code: int) -> None:
        if self.starts <= time.perf_counter() <= self.ends:
            self.codes[code] += 1

    def mark_cpu(self) -> None:
        server = process_cpu(self.server_pid) if self.server_pid else 0.0
        self.cpu.append((time.process_time(), server))

    def cpu_percent(self, which: int) -> float | None:
        """CPU use during the window, of this generator (0) or the server (1), in percent of one core."""
        if len(self.cpu) < 2:
            return None
        start, end = self.cpu[0][which], self.cpu[1][which]
        if start is None or end is None:
            return None
        return round(100 * (end - start) / (self.ends - self.starts), 1)


def process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of another process, from /proc/PID/stat (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Connection(asyncio.Protocol):
    """One keep-alive connection that sends ``request`` again as soon as each answer is complete."""

    def __init__(self, request: bytes, window: Window, done: asyncio.Future[None]) -> None:
        self.request = request
        self.window = window
        self.done = done
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self._take_response():
            if time.perf_counter() >= self.window.ends:
                self._finish()
                return
            assert self.transport is not None
            self.transport.write(self.request)

    def _take_response(self) -> bool:
        """Consume one complete response from the buffer and record it; False if it is not all here."""
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return False
        head = bytes(self.buffer[:head_end]).lower()
        total = head_end + 4 + content_length(head)
        if len(self.buffer) < total:
            return False
        self.window.record(int(head[9:12]))
        del self.buffer[:total]
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if time.perf_counter() < self.window.ends:
            self.window.errors["connection lost" if exc is None else type(exc).__name__] += 1
        self._finish()

    def _finish(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if not self.done.done():
            self.done.set_result(None)


def content_length(head: bytes) -> int:
    """The Content-Length of a lower-cased response head (0 when absent)."""
    at = head.find(b"content-length:")
    if at < 0:
        return 0
    end = head.find(b"\r\n", at)
    return int(head[at + 15 : end if end >= 0 else None])


def build_request(url: str, body: bytes) -> tuple[str, int, bytes]:
    """Host, port and the raw bytes of one keep-alive POST."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = (
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return host, port, head.encode() + body


async def run(
    url: str, body: bytes, connections: int, duration: float, warmup: float, server_pid: int | None = None
) -> dict[str, object]:
    """Load ``url`` for ``warmup + duration`` seconds; counts only the last ``duration``."""
    host, port, request = build_request(url, body)
    loop = asyncio.get_running_loop()
    now = time.perf_counter()
    window = Window(now + warmup, now + warmup + duration, server_pid=server_pid)
    loop.call_later(warmup, window.mark_cpu)
    finished = []
    for _ in range(connections):
        done: asyncio.Future[None] = loop.create_future()
        try:
            await loop.create_connection(lambda d=done: Connection(request, window, d), host, port)
        except OSError as exc:
            window.errors[type(exc).__name__] += 1
            done.set_result(None)
        finished.append(done)
    await asyncio.wait_for(asyncio.gather(*finished), warmup + duration + 30)
    window.mark_cpu()  # every connection stops at its first answer after the window: close enough
    total = sum(window.codes.values())
    return {
        "requests": total,
        "seconds": duration,
        "requests_per_second": round(total / duration, 1),
        "codes": {str(code): n for code, n in sorted(window.codes.items())},
        "errors": dict(window.errors),
        "cpu_percent": window.cpu_percent(0),
        "server_cpu_percent": window.cpu_percent(1) if server_pid else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="full URL to POST to")
    parser.add_argument("--body", default='{"type": "noop"}', help="request body (JSON text)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
    parser.add_argument("--server-pid", type=int, help="also report this process's CPU use while measuring")
    args = parser.parse_args()
    body = args.body.encode()
    result = asyncio.run(run(args.url, body, args.connections, args.duration, args.warmup, args.server_pid))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
