"""What a job's payload costs: CPU per job with an empty and with a 2 kB payload, on SQLite, against the ceilings.

    .venv/bin/python bench/payload_cost.py                                # 3 rounds, about 2.5 minutes
    .venv/bin/python bench/payload_cost.py --baseline-tree ../jobq-before  # the same against another checkout
    .venv/bin/python bench/payload_cost.py --quick                        # a smoke run

Two measurements, each with the payload ``{}`` and with a realistic JSON object
of ``--payload-bytes`` (2,048) bytes (:func:`sized_payload`: a few strings and
numbers, a nested object and a list of line items):

* **end to end in-process**: ``bench/inprocess.py e2e`` on a fresh SQLite file
  (default durability, ``full``), 32 workers, ``--jobs`` no-op jobs submitted in
  batches of 1,000; process CPU time (``time.process_time``, every thread, the
  SQLite writer's too) per job from the first submit to the last job settled.
  The ceiling is ``bench/inprocess.py floor`` (32 tasks draining an
  ``asyncio.Queue``, nothing stored).
* **HTTP enqueue**: ``POST /enqueue`` on a fresh SQLite file, ``main.py`` with
  ``--workers 0`` and bench/run.py's other flags, loaded by ``bench/loadgen.py``
  (64 connections, one generator); the body is ``{"type": "noop"}`` or the same
  with the payload. The ceiling is ``bench/ceiling_server.py`` under the same
  bodies. Reported: requests per second, the server's CPU per request (every
  thread, from /proc) and jobq's share of the ceiling by both.

Every variant runs in a fresh process. With ``--baseline-tree`` each is also run
against that checkout's jobq (its ``main.py`` for HTTP; the measuring code is
this checkout's either way). The variants run in turn within each round, in the
reverse order every other round, so drift on the machine hits them alike; the
tables give the best (lowest CPU) and the median of the rounds. Other processes
only ever make a run slower, so the best is the steadiest figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import run as bench  # noqa: E402 - bench/run.py, found through the path set just above

PAYLOAD_BYTES = 2048
TARGET_RATIO = 1.3  # a 2 kB payload may cost at most 1.3x the CPU per job of an empty one


def sized_payload(size: int) -> dict[str, Any]:
    """A plausible job payload (an order to process) whose compact JSON is exactly ``size`` bytes.

    ``{}`` below 64 bytes, a note alone below about 260. Deterministic: every run and checkout gets the same one.
    """
    if size < 64:
        return {}
    payload: dict[str, Any] = {
        "order_id": 48213377,
        "customer": {"id": "cus_8f14e45fceea167a", "email": "jane.doe@example.com", "name": "Jane Doe", "tier": 2},
        "currency": "EUR",
        "total": 1234.56,
        "placed_at": "2026-12-01T07:51:00Z",
        "gift": False,
        "tags": ["priority", "gift-wrap", "eu"],
        "items": [],
        "note": "",
    }
    line = 0
    while True:
        item = {
            "sku": f"SKU-{10_000 + line * 37:05d}",
            "name": f"Item {line}: stainless steel water bottle, 750 ml",
            "quantity": 1 + line % 3,
            "unit_price": round(4.99 + line * 1.25, 2),
        }
        if compact_size({**payload, "items": [*payload["items"], item]}) > size - 16:
            break
        payload["items"].append(item)
        line += 1
    if compact_size(payload) > size:  # too small for an order: a note alone
        payload = {"note": ""}
    filler = "Leave the parcel with the neighbour at number 12 if nobody answers. "
    missing = size - compact_size(payload)
    payload["note"] = (filler * (missing // len(filler) + 1))[:missing]
    return payload


def compact_size(value: Any) -> int:
    """Bytes of ``value`` as compact JSON (the form the store writes)."""
    return len(json.dumps(value, separators=(",", ":")).encode())


def enqueue_body(payload_bytes: int) -> str:
    """A ``POST /enqueue`` body: a no-op job, with the sized payload unless ``payload_bytes`` is 0."""
    job: dict[str, Any] = {"type": "noop"}
    if payload_bytes:
        job["payload"] = sized_payload(payload_bytes)
    return json.dumps(job, separators=(",", ":"))


# -- the variants ---------------------------------------------------------------------------


@dataclass
class Runs:
    """One variant's figures over the rounds: CPU microseconds per job or request, and rates."""

    tree: str  # "HEAD" (this checkout), "baseline", or "ceiling"
    payload: int  # bytes; 0 is the empty payload
    cpu_us: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    notes: dict[str, int] = field(default_factory=dict)  # non-202 answers, errors, unfinished jobs

    @property
    def best(self) -> float:
        return min(self.cpu_us)

    @property
    def median(self) -> float:
        return statistics.median(self.cpu_us)

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    def add_notes(self, counts: dict[str, int]) -> None:
        for key, count in counts.items():
            self.notes[key] = self.notes.get(key, 0) + count


def e2e_once(tree: Path, payload: int, jobs: int, workdir: Path) -> tuple[float, float, dict[str, int]]:
    """One in-process end-to-end run on a fresh SQLite file: (µs CPU/job, jobs/s, anything not completed)."""
    store = bench._fresh("sqlite", workdir)
    command = [bench.PYTHON, str(BENCH / "inprocess.py"), "e2e", "--tree", str(tree), "--store", store]
    out = bench.run_json([*command, "--jobs", str(jobs), "--workers", "32", "--payload-bytes", str(payload)])
    unfinished = {k: v for k, v in out["statuses"].items() if k != "completed"}
    if out["settled"] != out["jobs"]:
        unfinished["unsettled"] = out["jobs"] - out["settled"]
    return out["cpu_us_per_job"], out["jobs_per_second"], unfinished


def floor_once(jobs: int) -> tuple[float, float]:
    out = bench.inprocess("floor", "--jobs", str(jobs), "--workers", "32")
    return out["cpu_us_per_job"], out["jobs_per_second"]


def http_once(
    tree: Path | None, payload: int, scale: bench.Scale, workdir: Path
) -> tuple[float, float, dict[str, int]]:
    """One ``POST /enqueue`` load run: (server µs CPU/request, req/s, non-202 answers); ``tree`` None is the ceiling."""
    if tree is None:
        command, root, name = [bench.PYTHON, str(BENCH / "ceiling_server.py")], bench.ROOT, f"ceiling-{payload}"
    else:
        command, root = bench.jobq_command(bench._fresh("sqlite", workdir), 0, root=tree), tree
        name = f"enqueue-{tree.name}-{payload}"
    with bench.serving(command, workdir, name, root=root) as server:
        result = bench.load(server, scale, 1, body=enqueue_body(payload))
    refused = {k: v for k, v in result.codes.items() if k != "202"}
    return result.server_us_per_request, result.rate, {**refused, **result.errors}


def measure(
    trees: dict[str, Path], payloads: Sequence[int], rounds: int, jobs: int, scale: bench.Scale, workdir: Path
) -> tuple[list[Runs], list[Runs]]:
    """Every variant once per round, in turn (reversed every other round): the e2e runs and the HTTP runs."""
    e2e = {(name, p): Runs(name, p) for name in [*trees, "ceiling"] for p in payloads if name != "ceiling" or p == 0}
    http = {(name, p): Runs(name, p) for name in ["ceiling", *trees] for p in payloads}
    for number in range(1, rounds + 1):
        order = list(e2e) if number % 2 else list(reversed(e2e))
        for name, payload in order:
            runs = e2e[name, payload]
            if name == "ceiling":
                cpu, rate = floor_once(jobs)
            else:
                cpu, rate, unfinished = e2e_once(trees[name], payload, jobs, workdir)
                runs.add_notes(unfinished)
            runs.cpu_us.append(cpu)
            runs.rates.append(rate)
            say(f"round {number} e2e {name} {payload} B: {cpu:.1f} µs CPU/job, {rate:,.0f} jobs/s")
        order = list(http) if number % 2 else list(reversed(http))
        for name, payload in order:
            runs = http[name, payload]
            cpu, rate, refused = http_once(trees.get(name), payload, scale, workdir)
            runs.cpu_us.append(cpu)
            runs.rates.append(rate)
            runs.add_notes(refused)
            say(f"round {number} http {name} {payload} B: {cpu:.1f} µs CPU/req, {rate:,.0f} req/s")
    return list(e2e.values()), list(http.values())


# -- reporting -------------------------------------------------------------------------------


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def size_label(payload: int) -> str:
    return "{}" if not payload else f"{payload:,} B"


def e2e_table(runs: Sequence[Runs], rounds: int) -> str:
    ceiling = next(r for r in runs if r.tree == "ceiling")
    empty = {r.tree: r for r in runs if r.payload == 0}
    lines = [
        f"| code | payload | best µs CPU/job ({rounds} rounds) | median µs CPU/job | median jobs/s "
        "| vs empty, best | vs empty, median | ceiling's CPU/job over this | not completed |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        if r.tree == "ceiling":
            code = "ceiling: bare asyncio.Queue, 32 tasks"
            versus = ("", "")
        else:
            code, base = r.tree, empty[r.tree]
            versus = (f"{r.best / base.best:.2f}x", f"{r.median / base.median:.2f}x")
        lines.append(
            f"| {code} | {size_label(r.payload)} | {r.best:.1f} | {r.median:.1f} | {r.rate:,.0f} "
            f"| {versus[0]} | {versus[1]} | {ceiling.best / r.best:.1%} | {r.notes or 'none'} |"
        )
    return "\n".join(lines)


def http_table(runs: Sequence[Runs], rounds: int) -> str:
    ceilings = {r.payload: r for r in runs if r.tree == "ceiling"}
    lines = [
        f"| server | payload | median req/s ({rounds} rounds) | of ceiling's rate | best server µs CPU/req "
        "| median µs CPU/req | of ceiling by CPU (best) | not 202 |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        ceiling = ceilings[r.payload]
        server = "ceiling: bare aiohttp" if r.tree == "ceiling" else f"jobq {r.tree}, sqlite, 0 workers"
        by_rate = statistics.median(own / top for own, top in zip(r.rates, ceiling.rates, strict=True))
        lines.append(
            f"| {server} | {size_label(r.payload)} | {r.rate:,.0f} | {by_rate:.0%} | {r.best:.1f} | {r.median:.1f} "
            f"| {ceiling.best / r.best:.0%} | {r.notes or 'none'} |"
        )
    return "\n".join(lines)


def verdict(e2e: Sequence[Runs], http: Sequence[Runs], payload: int) -> str:
    """The issue's two checks on this checkout: the payload ratio, and HTTP enqueue against the baseline."""
    got = {(r.tree, r.payload): r for r in [*e2e, *http]}
    lines = []
    head_e2e = [r for r in e2e if r.tree == "HEAD"]
    ratio = got_ratio(head_e2e, payload)
    lines.append(
        f"- end to end, {payload:,} B over {{}} on HEAD: {ratio:.2f}x by best CPU/job "
        f"(target ≤ {TARGET_RATIO}x: {'met' if ratio <= TARGET_RATIO else 'NOT met'})"
    )
    base_e2e = [r for r in e2e if r.tree == "baseline"]
    if base_e2e:
        lines.append(f"- end to end, {payload:,} B over {{}} on the baseline: {got_ratio(base_e2e, payload):.2f}x")
    http_head = [r for r in http if r.tree == "HEAD"]
    for r in http_head:
        base = got.get(("baseline", r.payload))
        ceiling = got[("ceiling", r.payload)]
        line = f"- HTTP enqueue, {size_label(r.payload)}: HEAD at {ceiling.best / r.best:.0%} of the ceiling by CPU"
        if base is not None:
            ours, theirs = ceiling.best / r.best, ceiling.best / base.best
            line += f", the baseline at {theirs:.0%}: HEAD {'at least as fast' if ours >= theirs else 'SLOWER'}"
            line += f" ({r.best:.1f} against {base.best:.1f} µs CPU/req, {r.best / base.best - 1:+.1%})"
        lines.append(line)
    return "\n".join(lines)


def got_ratio(runs: Sequence[Runs], payload: int) -> float:
    by_size = {r.payload: r for r in runs}
    return by_size[payload].best / by_size[0].best


def git_describe(tree: Path) -> str:
    """The commit a checkout is at, and whether files tracked there have uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    changed = [line[3:] for line in dirty if line.strip()]
    return commit + (f" with uncommitted changes to {', '.join(changed)}" if changed else "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round: checks that everything runs")
    parser.add_argument("--rounds", type=int, default=3, help="times each variant is measured")
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per end-to-end run")
    parser.add_argument("--payload-bytes", type=int, default=PAYLOAD_BYTES, help="the payload to compare with {}")
    parser.add_argument("--duration", type=float, help="seconds of measured HTTP load per run (default 5)")
    parser.add_argument("--tree", type=Path, default=bench.ROOT, help="the checkout measured as HEAD (this one)")
    parser.add_argument("--baseline-tree", type=Path, help="another checkout to measure the same way, in turn")
    parser.add_argument("--json", type=Path, help="also write the machine and every run to this file")
    args = parser.parse_args(argv)
    scale = bench.QUICK if args.quick else bench.Scale()
    rounds, jobs = (1, 2_000) if args.quick else (args.rounds, args.jobs)
    if args.duration:
        scale = replace(scale, duration=args.duration)
    trees = bench.checkouts(args.baseline_tree, head=args.tree)
    info = {**bench.machine(), "trees": {name: f"{path} ({git_describe(path)})" for name, path in trees.items()}}
    say(f"machine: {info}")
    say(f"payload: {compact_size(sized_payload(args.payload_bytes)):,} bytes of compact JSON")
    with tempfile.TemporaryDirectory(prefix="jobq-payload-bench-") as tmp:
        e2e, http = measure(trees, (0, args.payload_bytes), rounds, jobs, scale, Path(tmp))
    info["load_average_at_end"] = os.getloadavg()
    say(f"load average at the end: {info['load_average_at_end']}")
    print(f"End to end in-process, SQLite (durability full), 32 workers, {jobs:,} no-op jobs per run:\n")
    print(e2e_table(e2e, rounds))
    print(f"\nHTTP POST /enqueue, SQLite, 0 workers, {scale.connections} connections, {scale.duration:g} s per run:\n")
    print(http_table(http, rounds))
    print()
    print(verdict(e2e, http, args.payload_bytes))
    if args.json:
        runs = {"e2e": [vars(r) for r in e2e], "http": [vars(r) for r in http]}
        args.json.write_text(json.dumps({"machine": info, "jobs": jobs, **runs}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
