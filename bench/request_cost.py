"""CPU per ``POST /enqueue`` inside the app, with no sockets: for A/B tests of hot-path changes.

    python bench/request_cost.py jobq       # the jobq app on the memory store, 0 workers
    python bench/request_cost.py ceiling    # the bare handler of bench/ceiling_server.py
    python bench/request_cost.py jobq --tree ../jobq-before   # jobq as another checkout has it (A/B)
    python bench/request_cost.py jobq --store sqlite --workers 32   # the defaults: a new SQLite file, 32 workers

Raw request bytes are fed to aiohttp's own protocol handler (the C parser,
the middlewares, the route, the handler, the response writer) over in-memory
transports: ``--connections`` of them, one request each per round. Kernel
networking and the load generator are left out, so two versions of the code
can be compared in one process each, a few seconds apart. Prints the best
(lowest) CPU microseconds per request over ``--repeats`` runs, and all of them:
other processes on the machine only ever make a run slower.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import functools
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
BODY = b'{"type": "noop"}'


class MemoryTransport(asyncio.Transport):
    """Swallows what the server writes, counting responses; wakes ``waiter`` on each write."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = False
        self.waiter: asyncio.Future[None] | None = None

    def write(self, data: Any) -> None:
        if self.waiter is not None and not self.waiter.done() and b"HTTP/1.1 " in bytes(data):
            self.waiter.set_result(None)

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(bytes(chunk) for chunk in chunks))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def raw_request(body: bytes = BODY) -> bytes:
    head = f"POST /enqueue HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
    return head.encode() + b"\r\n\r\n" + body


async def cost_per_request(app: web.Application, requests: int, connections: int) -> float:
    """CPU microseconds per request over ``requests`` requests (after a warm-up of 20 rounds)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    assert runner.server is not None
    loop = asyncio.get_running_loop()
    request = raw_request()
    pairs = []
    for _ in range(connections):
        protocol, transport = runner.server(), MemoryTransport()
        protocol.connection_made(transport)
        pairs.append((protocol, transport))

    async def one_round() -> None:
        for protocol, transport in pairs:
            transport.waiter = loop.create_future()
            protocol.data_received(request)
        for _, transport in pairs:
            assert transport.waiter is not None
            await transport.waiter

    for _ in range(20):
        await one_round()
    done, started = 0, time.process_time()
    while done < requests:
        await one_round()
        done += connections
    spent = time.process_time() - started
    for protocol, _ in pairs:
        protocol.connection_lost(None)
    await runner.cleanup()
    return spent / done * 1e6


def ceiling_app() -> web.Application:
    async def accept(request: web.Request) -> web.Response:
        json.loads(await request.read())
        return web.Response(status=202, body=b'{"id":"0","status":"pending"}', content_type="application/json")

    app = web.Application()
    app.router.add_post("/enqueue", accept)
    return app


def jobq_app(store: str = "memory://", workers: int = 0) -> web.Application:
    """The jobq app on ``store`` (``sqlite``: a new file, removed at exit) with ``workers`` in-process workers."""
    from jobq.app import create_app
    from jobq.config import Config

    if store == "sqlite":
        directory = tempfile.mkdtemp(prefix="jobq-request-cost-")
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        store = f"sqlite:///{directory}/jobq.db"
    return create_app(Config(store=store, workers=workers, queue_size=100_000_000, log_level="error"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("app", choices=("jobq", "ceiling"))
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose jobq is measured (this one)")
    parser.add_argument("--store", default="memory://", help="jobq's store: a URL, or sqlite for a new file")
    parser.add_argument("--workers", type=int, default=0, help="jobq's in-process workers (they run every job)")
    args = parser.parse_args(argv)
    make: Callable[[], web.Application] = ceiling_app
    if args.app == "jobq":
        make = functools.partial(jobq_app, args.store, args.workers)
    sys.path.insert(0, str(args.tree.resolve()))
    from main import tune_gc

    tune_gc()  # as main.py does once it serves, for both apps alike
    runs = [asyncio.run(cost_per_request(make(), args.requests, args.connections)) for _ in range(args.repeats)]
    best = round(min(runs), 1)
    print(json.dumps({"app": args.app, "best_us_per_request": best, "runs": [round(r, 1) for r in runs]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
