"""What a handler's own work costs a server under load: the ceiling with N µs of CPU spun per request.

    .venv/bin/python bench/ceiling_work.py                      # 0, 5, 10, 20 and 40 µs, 2 rounds (about 2 minutes)
    .venv/bin/python bench/ceiling_work.py --work 0,15,30 --rounds 3

Each round loads ``bench/ceiling_server.py`` (on uvloop, as jobq runs) once per work level, as
``bench/enqueue_ab.py`` loads a server (64 keep-alive connections, ``{"type": "noop"}``), the
bare handler spinning that many microseconds of CPU before it answers. The table gives, per level,
the median rate and server CPU per request, their share of the bare handler's (work 0) in the same
round, and the server CPU each microsecond of work added. A handler that must reach a share of the
ceiling (``POST /enqueue`` at 80 %, say) can afford the work of the row that reaches it: the rest
of what a request costs is aiohttp's and the kernel's, and grows as the rate falls.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import run as bench


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="0,5,10,20,40", help="microseconds spun per request, comma-separated")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of measured load per run")
    args = parser.parse_args(argv)
    levels = sorted({float(level) for level in args.work.split(",")} | {0.0})
    scale = replace(bench.Scale(), duration=args.duration)
    rates: dict[float, list[float]] = {level: [] for level in levels}
    cpu_us: dict[float, list[float]] = {level: [] for level in levels}
    with tempfile.TemporaryDirectory(prefix="jobq-ceiling-work-") as tmp:
        for round_number in range(1, args.rounds + 1):
            for level in levels:
                command = [bench.PYTHON, str(bench.BENCH / "ceiling_server.py"), f"work={level:g}"]
                with bench.serving(command, Path(tmp), f"work-{level:g}-{round_number}") as server:
                    result = bench.load(server, scale, 1)
                rates[level].append(result.rate)
                cpu_us[level].append(result.server_us_per_request)
                print(f"round {round_number}: work {level:g} µs: {bench.describe(result)}", file=sys.stderr)
    base_rate, base_cpu = statistics.median(rates[0.0]), statistics.median(cpu_us[0.0])
    heads = ["work spun per request", "req/s", "server µs CPU/req", "of the ceiling by rate", "by CPU/req"]
    print("| " + " | ".join([*heads, "µs CPU per µs of work"]) + " |")
    print("|---" * (len(heads) + 1) + "|")
    for level in levels:
        rate, cpu = statistics.median(rates[level]), statistics.median(cpu_us[level])
        added = f"{(cpu - base_cpu) / level:.2f}" if level else ""
        print(f"| {level:g} µs | {rate:,.0f} | {cpu:.1f} | {rate / base_rate:.0%} | {base_cpu / cpu:.0%} | {added} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
