"""gRPC Enqueue beside HTTP POST /enqueue: the same jobq process, loaded over each API in turn.

    .venv/bin/python bench/grpc_enqueue.py              # about 25 s
    .venv/bin/python bench/grpc_enqueue.py --quick      # a smoke run

One jobq process serves both APIs (memory store, no workers, so only the
enqueue path is measured), as main.py runs them. Each load runs in a process
of its own, one after the other: HTTP through bench/loadgen.py
(``--connections`` keep-alive connections, one request in flight on each), gRPC
through this script's ``load`` mode (``--concurrency`` unary calls in flight
over ``--channels`` channels). Both generators send a prebuilt request and do
not decode the answer, so the server's work dominates. A third load measures
the ceiling: a bare grpc.aio server whose Enqueue only decodes the request and
answers a fixed job (bench/ceiling_server.py is the HTTP one).

Reported per load: accepted jobs per second, and per second of server CPU
(server and load generator share the machine's cores, so the second number
compares what each API costs the server). Prints a table, then one JSON object
per load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ENQUEUE_METHOD = "/jobq.v1.JobService/Enqueue"
ENQUEUE_BODY = '{"type": "noop"}'


# -- the server process -----------------------------------------------------------
async def serve(http_port: int, grpc_port: int) -> None:
    """jobq's HTTP app and gRPC server over one JobService until killed, as main.py runs them."""
    from aiohttp import web

    from jobq.api import METRICS, SERVICE
    from jobq.app import create_app
    from jobq.config import Config
    from jobq.rpc.server import start_grpc_server

    config = Config(store="memory://", workers=0, port=http_port)
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", http_port).start()
    # metrics on both sides, as main.py serves them (the HTTP app has them on by default)
    grpc_server = await start_grpc_server(app[SERVICE], "127.0.0.1", grpc_port, metrics=app.get(METRICS))
    try:
        await asyncio.Event().wait()
    finally:
        await grpc_server.stop(0)
        await runner.cleanup()


async def serve_ceiling(grpc_port: int) -> None:
    """The ceiling: a bare grpc.aio server whose Enqueue parses the request and answers a fixed job."""
    import grpc

    from jobq.rpc.gen import jobq_pb2 as pb

    answer = pb.EnqueueResponse(job=pb.Job(id="0", type="noop", status=pb.JOB_STATUS_PENDING), created=True)

    async def enqueue(request: pb.EnqueueRequest, context: grpc.aio.ServicerContext) -> pb.EnqueueResponse:
        return answer

    handler = grpc.unary_unary_rpc_method_handler(
        enqueue,
        request_deserializer=pb.EnqueueRequest.FromString,
        response_serializer=pb.EnqueueResponse.SerializeToString,
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("jobq.v1.JobService", {"Enqueue": handler}),))
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    await server.start()
    await server.wait_for_termination()


# -- the gRPC load process --------------------------------------------------------
@dataclass
class Window:
    """The measuring window and the answers that landed in it."""

    starts: float
    ends: float
    server_pid: int | None = None
    codes: Counter[str] = field(default_factory=Counter)
    server_cpu: list[float] = field(default_factory=list)  # the server's CPU seconds as the window opens and closes

    def record(self, code: str) -> None:
        if self.starts <= time.perf_counter() <= self.ends:
            self.codes[code] += 1

    def mark_cpu(self) -> None:
        if self.server_pid is not None:
            self.server_cpu.append(cpu_seconds(self.server_pid))

    def server_cpu_percent(self) -> float | None:
        """The server's CPU use while measuring, in percent of one core."""
        if len(self.server_cpu) < 2:
            return None
        return round(100 * (self.server_cpu[1] - self.server_cpu[0]) / (self.ends - self.starts), 1)


async def grpc_load(
    target: str, concurrency: int, channels: int, duration: float, warmup: float, server_pid: int | None = None
) -> dict[str, Any]:
    """Keep ``concurrency`` Enqueue calls in flight for ``warmup + duration`` s; count the last ``duration``."""
    import grpc

    from jobq.rpc.gen import jobq_pb2 as pb

    body = pb.EnqueueRequest(type="noop").SerializeToString()  # bytes in, bytes out: no client-side protobuf work
    opened = [grpc.aio.insecure_channel(target) for _ in range(channels)]
    calls = [channel.unary_unary(ENQUEUE_METHOD) for channel in opened]
    now = time.perf_counter()
    window = Window(now + warmup, now + warmup + duration, server_pid)
    loop = asyncio.get_running_loop()
    loop.call_later(warmup, window.mark_cpu)
    loop.call_later(warmup + duration, window.mark_cpu)

    async def caller(call: Any) -> None:
        while time.perf_counter() < window.ends:
            try:
                await call(body)
                window.record("OK")
            except grpc.aio.AioRpcError as error:
                window.record(error.code().name)

    await asyncio.gather(*(caller(calls[index % channels]) for index in range(concurrency)))
    for channel in opened:
        await channel.close()
    return {
        "requests": window.codes["OK"],
        "seconds": duration,
        "requests_per_second": round(window.codes["OK"] / duration, 1),
        "codes": dict(window.codes),
        "server_cpu_percent": window.server_cpu_percent(),
    }


# -- the driver --------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def wait_ready(process: subprocess.Popen[bytes], http_port: int | None, grpc_port: int, timeout: float = 30.0) -> None:
    """Until HTTP /health answers (given an HTTP port) and the gRPC port accepts connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            if http_port is not None:
                urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health", timeout=1).close()
            socket.create_connection(("127.0.0.1", grpc_port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the server was not ready after {timeout:g}s")


def measure(server_pid: int, command: list[str], label: str) -> dict[str, Any]:
    """Run one load generator (told the server's pid) to the end; its JSON result, labelled and rated."""
    command = [*command, "--server-pid", str(server_pid)]
    done = subprocess.run(command, cwd=ROOT, env=child_env(), capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["load"] = label
    cores = (result.get("server_cpu_percent") or 0.0) / 100
    result["per_server_cpu_second"] = round(result["requests_per_second"] / cores, 1) if cores else None
    return result


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@contextlib.contextmanager
def server_process(*args: str) -> Iterator[subprocess.Popen[bytes]]:
    """This script in a server mode, as a subprocess; terminated on exit."""
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(
            [PYTHON, __file__, *args], cwd=ROOT, env=child_env(), stdout=log, stderr=subprocess.STDOUT
        )
        try:
            yield server
        finally:
            server.terminate()
            server.wait(timeout=30)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Load jobq over HTTP, then over gRPC, then the bare gRPC ceiling; returns the three results."""
    http_port, grpc_port, ceiling_port = free_port(), free_port(), free_port()
    timing = ["--duration", str(args.duration), "--warmup", str(args.warmup)]
    http = [PYTHON, str(ROOT / "bench" / "loadgen.py"), "--url", f"http://127.0.0.1:{http_port}/enqueue"]
    http += ["--body", ENQUEUE_BODY, "--connections", str(args.concurrency), *timing]

    def grpc_load_command(port: int) -> list[str]:
        command = [PYTHON, __file__, "load", "--target", f"127.0.0.1:{port}", "--concurrency", str(args.concurrency)]
        return [*command, "--channels", str(args.channels), *timing]

    with server_process("serve", "--http-port", str(http_port), "--grpc-port", str(grpc_port)) as server:
        wait_ready(server, http_port, grpc_port)
        results = [
            measure(server.pid, http, "jobq HTTP POST /enqueue"),
            measure(server.pid, grpc_load_command(grpc_port), "jobq gRPC Enqueue"),
        ]
    with server_process("ceiling", "--grpc-port", str(ceiling_port)) as ceiling:
        wait_ready(ceiling, None, ceiling_port)
        results.append(measure(ceiling.pid, grpc_load_command(ceiling_port), "ceiling: bare grpc.aio Enqueue"))
    return results


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| load | jobs/s | jobs per server CPU-second | answers |", "|---|---:|---:|---|"]
    for result in results:
        codes = ", ".join(f"{code}: {count}" for code, count in sorted(result["codes"].items()))
        per_cpu = result["per_server_cpu_second"]
        shown = "n/a" if per_cpu is None else f"{per_cpu:,.0f}"
        lines.append(f"| {result['load']} | {result['requests_per_second']:,.0f} | {shown} | {codes} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="compare", choices=("compare", "serve", "ceiling", "load"))
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per API")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight (HTTP connections)")
    parser.add_argument("--channels", type=int, default=4, help="gRPC channels the calls share")
    parser.add_argument("--quick", action="store_true", help="1 s per API, for a smoke run")
    parser.add_argument("--http-port", type=int, help="serve mode: HTTP port")
    parser.add_argument("--grpc-port", type=int, help="serve and ceiling modes: gRPC port")
    parser.add_argument("--target", help="load mode: gRPC host:port")
    parser.add_argument("--server-pid", type=int, help="load mode: also report this process's CPU use while measuring")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 1.0, 0.3
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.mode == "serve":
        asyncio.run(serve(args.http_port, args.grpc_port))
        return 0
    if args.mode == "ceiling":
        asyncio.run(serve_ceiling(args.grpc_port))
        return 0
    if args.mode == "load":
        result = asyncio.run(
            grpc_load(args.target, args.concurrency, args.channels, args.duration, args.warmup, args.server_pid)
        )
        print(json.dumps(result))
        return 0
    results = run(args)
    print(table(results))
    for result in results:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
