"""In-process measurements, each run in a fresh process by ``bench/run.py``; prints one JSON object.

    python bench/inprocess.py add    --store sqlite:///tmp/b.db --jobs 100000 --batch 1000
    python bench/inprocess.py e2e    --store memory:// --jobs 200000 --workers 32
    python bench/inprocess.py floor  --jobs 200000 --workers 32
    python bench/inprocess.py memory --jobs 1000000
    python bench/inprocess.py e2e    --store sqlite:///tmp/e.db --jobs 20000 --payload-bytes 2048
    python bench/inprocess.py e2e    --store sqlite:///tmp/e.db --jobs 10000 --chord   # one workflow, a callback
    python bench/inprocess.py e2e    --tree ../other-checkout ...   # measure another checkout's jobq

``add`` times ``Store.add`` alone (the jobs are built beforehand), with one or
more concurrent callers. ``e2e`` goes
through ``JobService`` and its ``WorkerPool``: submit every job (in batches,
as ``POST /enqueue/batch`` would), then wait until the pool has settled them
all; the time covers both. ``memory`` fills a memory store with queued jobs
and reports the growth of the process's resident set (VmRSS).

``--payload-bytes N`` gives every job (``add``, ``e2e``) its own copy of a
realistic JSON object that serialises to N bytes (``bench/payload_cost.py``
builds it); the default is the empty payload, ``{}``. ``--tree PATH`` imports
jobq (and ``main.tune_gc``) from another checkout, e.g. a worktree of an older
commit, so the same measurement runs against both.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import uvloop  # the loop jobq runs on (jobq/eventloop.py)

BENCH = Path(__file__).resolve().parent


def source_tree(argv: Sequence[str]) -> Path:
    """The checkout whose jobq is measured: ``--tree PATH`` if given, else the one this file is in.

    Read before anything of jobq is imported, so it cannot go through argparse.
    """
    for at, arg in enumerate(argv):
        if arg == "--tree" and at + 1 < len(argv):
            return Path(argv[at + 1]).resolve()
        if arg.startswith("--tree="):
            return Path(arg.split("=", 1)[1]).resolve()
    return BENCH.parent


ROOT = source_tree(sys.argv[1:])
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(BENCH))

from payload_cost import sized_payload  # noqa: E402 - bench/payload_cost.py: plain Python, no jobq

from jobq.app import store_from_config  # noqa: E402
from jobq.builtin_handlers import register_builtins  # noqa: E402
from jobq.config import Config  # noqa: E402
from jobq.handlers import Registry  # noqa: E402
from jobq.models import EnqueueRequest  # noqa: E402
from jobq.service import JobService  # noqa: E402
from main import tune_gc  # noqa: E402

BASE = Config(store="memory://", workers=0, queue_size=10_000_000, log_level="warning")


def rss_bytes() -> int:
    """This process's resident set size, from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def batches(total: int, size: int) -> list[int]:
    """Batch sizes that add up to ``total``."""
    return [min(size, total - start) for start in range(0, total, size)]


def requests(count: int, job_type: str = "noop", payload_bytes: int = 0, keys: int = 0) -> list[EnqueueRequest]:
    """``count`` requests, each with its own payload object (as each parsed request body would have);
    with ``keys``, each with one of that many concurrency keys in turn."""
    if keys:
        return [EnqueueRequest(type=job_type, concurrency_key=f"k{n % keys}") for n in range(count)]
    if not payload_bytes:
        return [EnqueueRequest(type=job_type) for _ in range(count)]
    text = json.dumps(sized_payload(payload_bytes))
    return [EnqueueRequest(type=job_type, payload=json.loads(text)) for _ in range(count)]


def new_service(config: Config) -> JobService:
    """A service over the store ``config`` names, with the built-in handlers."""
    registry = Registry()
    register_builtins(registry)
    return JobService(config, store_from_config(config), registry)


async def bench_add(config: Config, jobs: int, batch: int, producers: int, payload_bytes: int = 0) -> dict[str, Any]:
    """Time ``Store.add`` alone: ``producers`` tasks each add ``batch`` prebuilt jobs per call, in turn.

    One producer waits for each commit before building the next call, so its
    loop-thread work and the store's write never overlap; several producers
    (like concurrent HTTP requests) let a durable store commit their batches together.
    """
    store = store_from_config(config)
    await store.open()
    now = time.time()
    groups = [requests(size, payload_bytes=payload_bytes) for size in batches(jobs, batch)]
    prepared = iter([[r.to_job(now) for r in group] for group in groups])

    async def produce() -> None:
        for group in prepared:  # shared iterator: each batch is added once
            outcomes = await store.add(group)
            assert all(not isinstance(o, Exception) for o in outcomes), outcomes[0]

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(produce() for _ in range(producers)))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    await store.close()
    return {
        "jobs": jobs,
        "batch": batch,
        "producers": producers,
        "payload_bytes": payload_bytes,
        "seconds": round(seconds, 4),
        "jobs_per_second": round(jobs / seconds),
        "cpu_us_per_job": round(cpu / jobs * 1e6, 2),  # this process, every thread (SQLite's writer too)
    }


async def wait_settled(service: JobService, count: int, timeout: float) -> None:
    """Return once the pool has settled ``count`` jobs (checked every 5 ms); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while service.pool.settled < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {service.pool.settled} of {count} jobs settled in {timeout}s")
        await asyncio.sleep(0.005)


async def bench_e2e(
    config: Config,
    jobs: int,
    batch: int,
    timeout: float,
    payload_bytes: int = 0,
    keys: int = 0,
    key_limit: int = 0,
    chord: bool = False,
) -> dict[str, Any]:
    """Submit ``jobs`` no-op jobs through the service and time until every one has completed.

    With ``keys``, the jobs spread over that many concurrency keys; with ``key_limit`` too, the
    queue allows that many of a key's jobs running at once (jobq.flow). With ``chord``, the jobs
    are one workflow with a callback that depends on them all (one request), timed until it ran.
    """
    service = new_service(config)
    await service.start()
    if key_limit:
        from jobq.flow import QueueFlow  # only here: a checkout from before flow control measures without

        await service.store.set_flow("default", QueueFlow(key_concurrency=key_limit))
    prepared = [requests(size, payload_bytes=payload_bytes, keys=keys) for size in batches(jobs, batch)]
    if chord:
        members = [request.model_copy(update={"id": f"m{n}"}) for n, request in enumerate(requests(jobs))]
        callback = EnqueueRequest(
            type="noop", id="callback", depends_on=[m.id for m in members], on_parent_failure="run"
        )
    started, cpu = time.perf_counter(), time.process_time()
    if chord:
        await service.submit_workflow(None, [*members, callback], None, sees_all=True)
    for group in [] if chord else prepared:
        answers = await service.submit(group)
        assert all(hasattr(a, "job") for a in answers), answers[0]
        await asyncio.sleep(0)  # let the workers run between batches, as between requests
    submitted = time.perf_counter() - started
    await wait_settled(service, jobs + chord, timeout)
    if chord:
        finished = await service.store.get("callback")
        assert finished is not None and finished.status.value == "completed", finished
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    counts = (await service.store.stats()).by_status
    await service.drain()
    await service.close()
    return {
        "jobs": jobs,
        "workers": config.workers,
        "payload_bytes": payload_bytes,
        "keys": keys,
        "key_limit": key_limit,
        "chord": chord,
        "submit_seconds": round(submitted, 4),
        "seconds": round(seconds, 4),
        "jobs_per_second": round(jobs / seconds),
        "cpu_us_per_job": round(cpu / jobs * 1e6, 2),
        "settled": service.pool.settled,
        "statuses": counts,  # what the store still holds: retention drops finished jobs past 100,000
    }


async def bench_floor(jobs: int, workers: int) -> dict[str, Any]:
    """The ceiling for ``e2e``: ``workers`` tasks draining an ``asyncio.Queue`` of no-op calls, nothing else.

    What any asyncio worker pool pays per job (a queue hand-off, a task switch, one await)
    before it stores, leases or records anything.
    """

    async def noop() -> None:
        return None

    queue: asyncio.Queue[int | None] = asyncio.Queue(maxsize=workers)

    async def work() -> None:
        while await queue.get() is not None:
            await noop()

    tasks = [asyncio.create_task(work()) for _ in range(workers)]
    started, cpu = time.perf_counter(), time.process_time()
    for n in range(jobs):
        await queue.put(n)
    for _ in tasks:
        await queue.put(None)
    await asyncio.gather(*tasks)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "jobs": jobs,
        "workers": workers,
        "jobs_per_second": round(jobs / seconds),
        "cpu_us_per_job": round(cpu / jobs * 1e6, 2),
    }


async def bench_memory(jobs: int, batch: int) -> dict[str, Any]:
    """RSS growth while a memory store holds ``jobs`` queued (pending) jobs."""
    service = new_service(BASE)
    await service.start()
    gc.collect()
    before = rss_bytes()
    for size in batches(jobs, batch):
        await service.submit(requests(size))
    gc.collect()
    after = rss_bytes()
    queued = (await service.store.stats()).by_status.get("pending", 0)
    await service.close()
    delta = after - before
    return {"jobs": queued, "rss_delta_bytes": delta, "bytes_per_job": round(delta / max(queued, 1))}


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("add", "e2e", "floor", "memory"))
    parser.add_argument("--store", default="memory://")
    parser.add_argument("--durability", default="full", choices=("full", "normal"))
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--prefetch", type=int, default=0, help="e2e: jobs the pool leases ahead")
    parser.add_argument("--producers", type=int, default=1, help="add: concurrent Store.add callers")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--payload-bytes", type=int, default=0, help="add, e2e: a JSON payload of about this size")
    parser.add_argument("--keys", type=int, default=0, help="e2e: spread the jobs over this many concurrency keys")
    parser.add_argument("--key-limit", type=int, default=0, help="e2e: a key's jobs running at once (with --keys)")
    parser.add_argument("--chord", action="store_true", help="e2e: one workflow, a callback waiting for every job")
    parser.add_argument("--tree", type=Path, help="import jobq from this checkout (read before parsing)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    config = replace(BASE, store=args.store, durability=args.durability, workers=args.workers, prefetch=args.prefetch)
    if args.what == "add":
        result = uvloop.run(bench_add(config, args.jobs, args.batch, args.producers, args.payload_bytes))
    elif args.what == "e2e":
        tune_gc()  # as main.py does once it serves
        result = uvloop.run(
            bench_e2e(
                config, args.jobs, args.batch, args.timeout, args.payload_bytes, args.keys, args.key_limit, args.chord
            )
        )
    elif args.what == "floor":
        tune_gc()
        result = uvloop.run(bench_floor(args.jobs, args.workers))
    else:
        result = uvloop.run(bench_memory(args.jobs, args.batch))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
