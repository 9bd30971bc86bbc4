"""What bearer-token auth and Prometheus metrics cost ``POST /enqueue``, against the same run without them.

    .venv/bin/python bench/auth_overhead.py              # 4 variants x 3 rounds x 5 s, about 1.5 minutes
    .venv/bin/python bench/auth_overhead.py --quick      # a smoke run
    .venv/bin/python bench/auth_overhead.py --rounds 5 --duration 10 --store sqlite --json out.json

Four variants of the same jobq server (no workers, so only the enqueue path is
measured), each in a fresh process, loaded one after another by a load generator
in another process:

* ``off``: no tokens, ``--metrics no`` (jobq as it was before auth and metrics);
* ``metrics``: metrics only;
* ``auth``: four tokens from ``--tokens-file`` (each request's token is compared with
  all four) and every request carrying a client token, metrics off;
* ``auth+metrics``: both, as a production server runs.

The variants run in turn within each round, so slow drift on the machine hits them
alike. The number to compare is the server's CPU microseconds per request (from
/proc, over the measured window): unlike the rate, it barely moves when the load
generator competes for the same cores. Reported per variant: the median rate, and
the best (lowest) and median CPU per request over the rounds; other processes on
the machine only ever make a run slower, so the best is the steadiest figure.

The server and the measuring come from bench/run.py, the load from bench/loadgen.py,
both imported; this script only adds the ``Authorization`` header to loadgen's request
(its ``loadgen`` mode, run as the load process) and the variants.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import loadgen  # noqa: E402 - bench/loadgen.py, found through the path set just above
import run as bench  # noqa: E402 - bench/run.py

TOKEN_VARIABLE = "JOBQ_TOKEN"  # the load process reads its token here, never from argv
CLIENT_TOKEN = "bench-client-token-000000000000"
VARIANTS: dict[str, tuple[bool, bool]] = {  # name -> (auth, metrics)
    "off": (False, False),
    "metrics": (False, True),
    "auth": (True, False),
    "auth+metrics": (True, True),
}


# -- the load process: loadgen, with the token in every request ----------------------------
def with_token(token: str) -> Any:
    """loadgen's ``build_request``, adding ``Authorization: Bearer <token>`` to the head."""
    original = loadgen.build_request

    def build(url: str, body: bytes) -> tuple[str, int, bytes]:
        host, port, request = original(url, body)
        head, separator, rest = request.partition(b"\r\n\r\n")
        return host, port, head + f"\r\nAuthorization: Bearer {token}".encode() + separator + rest

    return build


def loadgen_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="auth_overhead.py loadgen")
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", default=bench.ENQUEUE_BODY)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--server-pid", type=int)
    args = parser.parse_args(argv)
    token = os.environ.get(TOKEN_VARIABLE)
    if token:
        loadgen.build_request = with_token(token)  # loadgen.run looks it up at call time
    result = asyncio.run(
        loadgen.run(args.url, args.body.encode(), args.connections, args.duration, args.warmup, args.server_pid)
    )
    print(json.dumps(result))
    return 0


# -- the driver --------------------------------------------------------------------------------
def write_tokens(workdir: Path) -> Path:
    """A tokens file with one token per role plus a second client: four comparisons per request."""
    path = workdir / "tokens.json"
    entries = [
        {"name": "bench-admin", "role": "admin", "token": "bench-admin-token-00000000000"},
        {"name": "bench-worker", "role": "worker", "token": "bench-worker-token-0000000000"},
        {"name": "bench-other", "role": "client", "token": "bench-other-token-00000000000"},
        {"name": "bench", "role": "client", "token": CLIENT_TOKEN},
    ]
    path.write_text(json.dumps(entries))
    path.chmod(0o600)
    return path


def server_command(store: str, auth: bool, metrics: bool, tokens: Path) -> list[str]:
    command = [*bench.jobq_command(store, 0), "--grpc-port", "0", "--metrics", "yes" if metrics else "no"]
    return [*command, "--tokens-file", str(tokens)] if auth else command


def load_once(server: bench.Server, scale: bench.Scale, token: str | None) -> bench.Load:
    """One loadgen process (this script's loadgen mode) against ``server``."""
    command = [
        bench.PYTHON,
        str(Path(__file__).resolve()),
        "loadgen",
        "--url",
        server.url + "/enqueue",
        "--connections",
        str(scale.connections),
        "--duration",
        str(scale.duration),
        "--warmup",
        str(scale.warmup),
        "--server-pid",
        str(server.process.pid),
    ]
    env = {k: v for k, v in os.environ.items() if k != TOKEN_VARIABLE}
    if token:
        env[TOKEN_VARIABLE] = token
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=scale.duration + scale.warmup + 60, check=False
    )
    try:
        out = json.loads(done.stdout)
    except ValueError as exc:
        raise RuntimeError(f"the load process failed (exit {done.returncode}): {done.stderr[-2000:]}") from exc
    return bench.Load(
        out["requests_per_second"], out["codes"], out["errors"], out["server_cpu_percent"] or 0.0, [out["cpu_percent"]]
    )


@dataclass
class Result:
    variant: str
    rates: list[float]
    us_per_request: list[float]
    refused: dict[str, int]

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    @property
    def cost(self) -> float:
        return statistics.median(self.us_per_request)

    @property
    def best(self) -> float:
        return min(self.us_per_request)


def measure(scale: bench.Scale, rounds: int, store: str, workdir: Path) -> list[Result]:
    tokens = write_tokens(workdir)
    results = {name: Result(name, [], [], {}) for name in VARIANTS}
    for number in range(1, rounds + 1):
        for name, (auth, metrics) in VARIANTS.items():
            command = server_command(bench._fresh(store, workdir), auth, metrics, tokens)
            with bench.serving(command, workdir, f"{name}-{number}") as server:
                load = load_once(server, scale, CLIENT_TOKEN if auth else None)
            result = results[name]
            result.rates.append(load.rate)
            result.us_per_request.append(load.server_us_per_request)
            for code, count in load.codes.items():
                if code != "202":
                    result.refused[code] = result.refused.get(code, 0) + count
            for error, count in load.errors.items():
                result.refused[error] = result.refused.get(error, 0) + count
            print(
                f"round {number} {name}: {load.rate:,.0f} req/s, {load.server_us_per_request:.0f} µs CPU/req",
                file=sys.stderr,
            )
    return list(results.values())


def table(results: Sequence[Result], rounds: int) -> str:
    base = results[0]
    lines = [
        f"| variant ({rounds} rounds) | median rate | rate change | best CPU/req | best change "
        "| median CPU/req | median change | not 202 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.variant} | {r.rate:,.0f} req/s | {r.rate / base.rate - 1:+.1%} | {r.best:.1f} µs "
            f"| {r.best / base.best - 1:+.1%} | {r.cost:.1f} µs | {r.cost / base.cost - 1:+.1%} "
            f"| {r.refused or 'none'} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["loadgen"]:
        return loadgen_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round: checks that everything runs")
    parser.add_argument("--rounds", type=int, default=3, help="times each variant is measured (medians reported)")
    parser.add_argument("--duration", type=float, help="seconds of measured load per run (default 5)")
    parser.add_argument("--connections", type=int, help="keep-alive connections (default 64)")
    parser.add_argument("--store", default="memory://", help="memory:// or sqlite (a fresh file per run)")
    parser.add_argument("--json", type=Path, help="also write the machine and every run to this file")
    args = parser.parse_args(argv)
    scale = bench.QUICK if args.quick else bench.Scale()
    rounds = 1 if args.quick else args.rounds
    if args.duration:
        scale = replace(scale, duration=args.duration)
    if args.connections:
        scale = replace(scale, connections=args.connections)
    info = bench.machine()
    print(f"machine: {info}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="jobq-auth-bench-") as tmp:
        results = measure(scale, rounds, args.store, Path(tmp))
    print(table(results, rounds))
    if args.json:
        runs = [{"variant": r.variant, "rates": r.rates, "us_per_request": r.us_per_request} for r in results]
        args.json.write_text(json.dumps({"machine": info, "store": args.store, "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
