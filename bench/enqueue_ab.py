"""``POST /enqueue`` against the bare aiohttp ceiling, in rounds, optionally beside another checkout.

    .venv/bin/python bench/enqueue_ab.py                                  # 3 rounds, about 1.5 minutes
    .venv/bin/python bench/enqueue_ab.py --baseline-tree ../jobq-before   # the same for another checkout, in turn
    .venv/bin/python bench/enqueue_ab.py --setups memory-0 --rounds 5 --json out.json
    .venv/bin/python bench/enqueue_ab.py --setups postgresql-0,postgresql-32   # on PostgreSQL (--postgres-url)
    .venv/bin/python bench/enqueue_ab.py --setups redis-0,redis-32 --redis-url redis://127.0.0.1:6390/15   # on Redis

Each round loads the ceiling (``bench/ceiling_server.py``, on uvloop as jobq is), the same
on the standard asyncio loop (a row for reference: shares are taken against the first) and
then, for each setup
(``memory-0``: ``memory://`` with no workers; ``sqlite-32``: the defaults, a fresh SQLite
file and 32 in-process workers that run every job; ``postgresql-0`` and ``postgresql-32``: the
database of ``--postgres-url``, dropped and created again before each run and dropped at the
end, with no workers and with the default 32; ``redis-0`` and ``redis-32``: the same on the Redis
database of ``--redis-url``, emptied before each run and at the end, each run with a key prefix of
its own), this checkout's ``main.py`` and the
baseline's, the two in alternating order from round to round. Every server is a fresh
process loaded by ``bench/loadgen.py`` as ``bench/run.py`` does (64 keep-alive
connections, ``{"type": "noop"}``). Each run's share of the ceiling is taken against the
ceiling of its own round, by rate and by server CPU per request (the ceiling's µs over
jobq's); the table gives the median and the best over the rounds. Other processes on the
machine only ever make a run slower, and CPU per request moves least.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import run as bench

SETUPS = {
    "memory-0": ("memory://", 0),
    "sqlite-32": ("sqlite", 32),
    "postgresql-0": ("postgresql", 0),  # "postgresql": the database of --postgres-url
    "postgresql-32": ("postgresql", 32),
    "redis-0": ("redis", 0),  # "redis": the database of --redis-url
    "redis-32": ("redis", 32),
}


@dataclass
class Runs:
    """Every round's figures for one server: rate, server µs CPU per request, and the shares of the ceiling."""

    setup: str
    tree: str
    rates: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    share_rate: list[float] = field(default_factory=list)
    share_cpu: list[float] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)

    def add(self, result: bench.Load, ceiling: bench.Load | None) -> None:
        self.rates.append(result.rate)
        self.cpu_us.append(result.server_us_per_request)
        if ceiling is not None:
            self.share_rate.append(result.rate / ceiling.rate)
            self.share_cpu.append(ceiling.server_us_per_request / result.server_us_per_request)
        for code, count in result.codes.items():
            if code not in ("200", "202"):
                self.refused[code] = self.refused.get(code, 0) + count
        for error, count in result.errors.items():
            self.refused[error] = self.refused.get(error, 0) + count

    def cells(self) -> list[str]:
        def shares(values: list[float]) -> str:
            return f"{statistics.median(values):.0%} / {max(values):.0%}" if values else ""

        return [
            self.setup,
            self.tree,
            f"{statistics.median(self.rates):,.0f} / {max(self.rates):,.0f}",
            f"{statistics.median(self.cpu_us):.1f} / {min(self.cpu_us):.1f}",
            shares(self.share_rate),
            shares(self.share_cpu),
            ", ".join(f"{k}: {v}" for k, v in self.refused.items()) or "none",
        ]


def one_load(
    tree: Path | None,
    setup: str,
    scale: bench.Scale,
    workdir: Path,
    name: str,
    postgres_url: str,
    redis_url: str = bench.DEFAULT_REDIS_URL,
    ceiling_loop: str = "uvloop",
) -> bench.Load:
    """Start one server (``tree`` None: the ceiling, on ``ceiling_loop``), load it once, stop it."""
    if tree is None:
        command, root = [bench.PYTHON, str(bench.BENCH / "ceiling_server.py"), ceiling_loop], bench.ROOT
    else:
        store, workers = SETUPS[setup]
        store = postgres_url if store == "postgresql" else store
        store = bench.fresh_redis(redis_url, f"jobq-ab-{name}") if store == "redis" else store
        command, root = bench.jobq_command(bench._fresh(store, workdir), workers, root=tree), tree
    with bench.serving(command, workdir, name, root=root) as server:
        return bench.load(server, scale, 1)


def measure(
    trees: dict[str, Path],
    setups: Sequence[str],
    rounds: int,
    scale: bench.Scale,
    workdir: Path,
    postgres_url: str = bench.DEFAULT_POSTGRES_URL,
    redis_url: str = bench.DEFAULT_REDIS_URL,
) -> list[Runs]:
    ceiling = Runs("ceiling", "bare aiohttp")
    standard = Runs("ceiling", "bare aiohttp, standard loop")
    runs = {(setup, name): Runs(setup, name) for setup in setups for name in trees}
    for index in range(rounds):
        top = one_load(None, "", scale, workdir, f"ceiling-{index}", postgres_url)
        ceiling.add(top, top)
        print(f"round {index + 1}: ceiling {top.rate:,.0f} req/s, {top.server_us_per_request:.1f} µs", file=sys.stderr)
        slower = one_load(None, "", scale, workdir, f"standard-{index}", postgres_url, ceiling_loop="asyncio")
        standard.add(slower, top)
        print(f"  standard loop: {slower.rate:,.0f} req/s, {slower.server_us_per_request:.1f} µs", file=sys.stderr)
        names = list(trees) if index % 2 == 0 else list(reversed(trees))
        for setup in setups:
            for name in names:
                label = f"{setup}-{name}-{index}"
                result = one_load(trees[name], setup, scale, workdir, label, postgres_url, redis_url)
                runs[setup, name].add(result, top)
                share = top.server_us_per_request / result.server_us_per_request
                print(
                    f"  {setup} {name}: {result.rate:,.0f} req/s, {result.server_us_per_request:.1f} µs ({share:.0%})",
                    file=sys.stderr,
                )
    return [ceiling, standard, *runs.values()]


def table(runs: Sequence[Runs]) -> str:
    header = [
        "setup",
        "server",
        "req/s median / best",
        "server µs CPU/req median / best",
        "of the ceiling by rate",
        "by CPU/req",
        "not 200/202",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in runs]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-tree", type=Path, help="another checkout, measured the same way in turn")
    parser.add_argument("--setups", default="memory-0,sqlite-32", help=f"comma-separated: {', '.join(SETUPS)}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per run")
    parser.add_argument("--json", type=Path, help="also write every run's figures to this file")
    parser.add_argument("--postgres-url", default=bench.DEFAULT_POSTGRES_URL, help="a dedicated database, dropped")
    parser.add_argument("--redis-url", default=bench.DEFAULT_REDIS_URL, help="a dedicated Redis database, emptied")
    args = parser.parse_args(argv)
    setups = args.setups.split(",")
    unknown = [s for s in setups if s not in SETUPS]
    if unknown:
        parser.error(f"unknown setup {unknown[0]!r}: {', '.join(SETUPS)}")
    trees = bench.checkouts(args.baseline_tree)
    scale = replace(bench.Scale(), duration=args.duration)
    info = bench.machine()
    print(f"machine: {info}", file=sys.stderr)
    try:
        with tempfile.TemporaryDirectory(prefix="jobq-enqueue-ab-") as tmp:
            runs = measure(trees, setups, args.rounds, scale, Path(tmp), args.postgres_url, args.redis_url)
    finally:
        if any(SETUPS[setup][0] == "postgresql" for setup in setups):
            bench.fresh_postgres(args.postgres_url, create=False)
        if any(SETUPS[setup][0] == "redis" for setup in setups):
            bench.fresh_redis(args.redis_url)
    print(table(runs))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "runs": [asdict(r) for r in runs]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
