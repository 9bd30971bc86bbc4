"""Several ``main.py`` processes on one shared store, end to end: a cluster of jobq nodes.

Each test runs on both shared backends (``shared_backend``): PostgreSQL, every node on one schema
of the test's own, and Redis, every node on one key prefix of the test's own (``store``). The
restart tests run on a server of their own (``private_server``): a PostgreSQL cluster restarted
with ``pg_ctl restart -m fast``, and a ``redis-server`` with an append-only file synced at every
write (``appendfsync always``, the durability jobq documents) killed with SIGKILL and started again.

Every node is a real subprocess (``start_server``) with the test handlers: ``record``
appends a job's id to the runs file each time it starts, ``gated`` does so and then
waits for SIGUSR1 (tests/fixture_handlers.py). Which node ran an attempt is the
``worker`` field of the job's history (``host:pid``).
"""

from __future__ import annotations

import itertools
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jobq.store.redis import durability_warning
from tests.conftest import StartServer, store_url
from tests.pg import PgCluster
from tests.procs import ServerProcess, WorkerProcess, http, wait_until
from tests.redisserver import RedisServer

BATCH = 500
SHARED_BACKENDS = ["postgresql", "redis"]


@pytest.fixture(scope="module", params=SHARED_BACKENDS)
def shared_backend(request: pytest.FixtureRequest) -> str:
    """A backend several jobq processes share; every test here runs once on each."""
    return str(request.param)


@pytest.fixture
def store(shared_backend: str, tmp_path: Path) -> str:
    """The store URL the nodes of one test share: a schema, or a key prefix, of the test's own."""
    return store_url(shared_backend, tmp_path)


@dataclass
class PrivateServer:
    """A database server of one test module's own, which it may restart."""

    url: str  # the store URL of the nodes on it
    restart: Callable[[], None]  # cuts every connection; returns once the server answers again


@pytest.fixture(scope="module")
def private_server(shared_backend: str) -> Iterator[PrivateServer]:
    """A server for the restart tests: PostgreSQL restarted fast, Redis killed (AOF, fsync always) and started."""
    if shared_backend == "postgresql":
        cluster = PgCluster()
        try:
            yield PrivateServer(f"{cluster.url}?schema=jobq", cluster.restart)
        finally:
            cluster.stop()
        return
    server = RedisServer("--appendonly", "yes", "--appendfsync", "always")

    def crash_and_start() -> None:
        server.halt()  # SIGKILL: only what is in the append-only file survives
        server.start()  # the same port and directory: it reads its file back

    try:
        yield PrivateServer(f"{server.url}?prefix=jobq", crash_and_start)
    finally:
        server.stop()


def started(runs_file: Path) -> list[str]:
    """Ids of the jobs that started, one per run."""
    return runs_file.read_text().split() if runs_file.exists() else []


def stats(server: ServerProcess) -> dict[str, Any]:
    code, body = server.request("GET", "/stats")
    assert code == 200, body
    return dict(body)


def node_cards(server: ServerProcess) -> list[dict[str, Any]]:
    code, body = server.request("GET", "/nodes")
    assert code == 200, body
    return list(body["nodes"])


def completed(server: ServerProcess, queue: str | None = None) -> int:
    """Jobs completed, in every queue or in ``queue``."""
    counts = stats(server)
    return int(counts["jobs"]["completed"] if queue is None else counts["queues"].get(queue, {}).get("completed", 0))


def worker_of(server: ServerProcess) -> str:
    """The ``worker`` a node writes into the history of the attempts it runs."""
    return f":{server.process.pid}"


def enqueue_batches(nodes: list[ServerProcess], count: int, payload: dict[str, Any]) -> list[str]:
    """Enqueue ``count`` record jobs in batches of BATCH, round-robin over ``nodes``; every one must be accepted."""
    ids: list[str] = []
    for number, offset in enumerate(range(0, count, BATCH)):
        jobs = [{"type": "record", "payload": payload} for _ in range(min(BATCH, count - offset))]
        code, body = nodes[number % len(nodes)].request("POST", "/enqueue/batch", {"jobs": jobs}, timeout=30)
        assert code == 200, body
        assert body["accepted"] == len(jobs), body
        ids += [result["id"] for result in body["results"] if result["code"] == 202]
    assert len(ids) == len(set(ids)) == count
    return ids


def jobs_in(server: ServerProcess, status: str) -> dict[str, dict[str, Any]]:
    """Every job in ``status`` (with its history), by id, read page by page from ``GET /jobs``."""
    jobs: dict[str, dict[str, Any]] = {}
    cursor = ""
    while True:
        code, body = server.request("GET", f"/jobs?status={status}&limit=500{cursor}", timeout=30)
        assert code == 200, body
        jobs |= {job["id"]: job for job in body["jobs"]}
        if body["next_cursor"] is None:
            return jobs
        cursor = f"&cursor={body['next_cursor']}"


def status_of(server: ServerProcess, job_id: str, query: str = "", timeout: float = 10.0) -> dict[str, Any]:
    code, job = server.request("GET", f"/status/{job_id}{query}", timeout=timeout)
    assert code == 200, job
    return dict(job)


def enqueue(server: ServerProcess, job: dict[str, Any]) -> str:
    code, body = server.request("POST", "/enqueue", job)
    assert code == 202, body
    return str(body["id"])


# -- 1. many jobs, three nodes: each runs exactly once, and every node takes a share --

MANY = 20_000


def test_three_nodes_run_every_job_of_a_big_load_exactly_once(
    start_server: StartServer, runs_file: Path, store: str, tmp_path: Path
) -> None:
    schedules = tmp_path / "schedules.toml"  # every node fires a schedule's ticks meanwhile: each one once
    schedules.write_text('[beat]\nevery = 1\njob = { type = "noop", queue = "beat" }\n')
    nodes = [start_server("--store", store, "--workers", "8", "--schedules", str(schedules)) for _ in range(3)]
    began = time.monotonic()
    accepted = enqueue_batches(nodes, MANY, {})
    print(f"enqueued {MANY} jobs in {time.monotonic() - began:.1f}s")
    # the load's queue (not the schedule's)
    wait_until(lambda: completed(nodes[1], "default") == MANY, f"{MANY} completed jobs", timeout=60.0, every=0.2)
    elapsed = time.monotonic() - began
    print(f"{MANY} jobs on 3 nodes in {elapsed:.1f}s: {MANY / elapsed:.0f} jobs/s")

    runs = Counter(started(runs_file))
    assert set(runs) == set(accepted)
    twice = {job_id: count for job_id, count in runs.items() if count > 1}
    assert not twice, f"{len(twice)} jobs ran more than once"

    done = {job_id: job for job_id, job in jobs_in(nodes[2], "completed").items() if job["queue"] != "beat"}
    assert set(done) == set(accepted)
    by_node: Counter[int] = Counter()
    for job in done.values():
        (attempt,) = job["history"]
        assert attempt["outcome"] == "completed", job
        by_node[next(i for i, node in enumerate(nodes) if attempt["worker"].endswith(worker_of(node)))] += 1
    print(f"jobs run by each node: {sorted(by_node.items())}")
    assert sorted(by_node) == [0, 1, 2], by_node

    # Three nodes fired the schedule, each tick once: the ticks (in their jobs' ids) are whole seconds apart,
    # so the nodes agreed on them (a check delayed past a tick by load fires only the latest).
    beats = [job for job in jobs_in(nodes[0], "completed").values() if job["queue"] == "beat"]
    ticks = sorted(int(job["id"].rpartition(":")[2].partition("-")[0]) for job in beats)
    assert len(ticks) >= 3, f"the schedule fired {len(ticks)} times in {elapsed:.0f}s"
    gaps = [later - earlier for earlier, later in itertools.pairwise(ticks)]
    assert all(gap > 0 and gap % 1000 == 0 for gap in gaps), ticks
    print(f"the schedule fired {len(ticks)} ticks over {(ticks[-1] - ticks[0]) / 1000:.0f}s")


# -- 2. kill -9 one node mid-run: the others finish its jobs, nothing accepted is lost --

KILL_JOBS = 144
KILL_WORKERS = 8


def test_a_node_killed_mid_run_loses_no_job_and_only_its_runs_repeat(
    start_server: StartServer, runs_file: Path, store: str
) -> None:
    flags = ("--store", store, "--workers", str(KILL_WORKERS), "--lease-seconds", "2")
    nodes = [start_server(*flags) for _ in range(3)]
    victim = nodes[2]
    accepted = enqueue_batches(nodes, KILL_JOBS, {"seconds": 0.5, "slow_runs": 1})
    wait_until(lambda: len(started(runs_file)) >= 48 and stats(victim)["workers"]["busy"] > 0, "jobs running")
    victim.kill()
    killed_at = time.monotonic()
    ran_before = len(started(runs_file))
    assert ran_before < KILL_JOBS, "every job started before the kill: nothing was tested"

    survivors = nodes[:2]
    wait_until(lambda: completed(survivors[0]) == KILL_JOBS, f"{KILL_JOBS} completed jobs", timeout=30.0)
    print(f"the rest finished {time.monotonic() - killed_at:.1f}s after the kill")
    done = jobs_in(survivors[1], "completed")
    assert set(done) == set(accepted), "an accepted job was lost"

    # The runs the killed node held: attempts of its own that never ended (the lease lapsed).
    held = {
        job_id
        for job_id, job in done.items()
        for attempt in job["history"]
        if attempt["worker"].endswith(worker_of(victim)) and attempt["outcome"] != "completed"
    }
    runs = Counter(started(runs_file))
    assert set(runs) == set(accepted)
    repeated = {job_id for job_id, count in runs.items() if count > 1}
    ends = Counter(
        a["outcome"] for job in done.values() for a in job["history"] if a["worker"].endswith(worker_of(victim))
    )
    print(f"killed node's attempts {dict(ends)}; {len(repeated)} jobs ran twice")
    # A node holds at most 2 x workers leases: runs in its handlers, and runs ended whose settle is on its way
    # (a settle the kill cut off leaves the lease to lapse, and the finished run runs again).
    assert 0 < len(held) <= 2 * KILL_WORKERS, held
    assert repeated <= held, f"jobs the killed node did not hold ran twice: {repeated - held}"
    assert len(repeated) <= 2 * KILL_WORKERS
    assert max(runs.values()) <= 2
    for job_id in held:
        outcomes = [attempt["outcome"] for attempt in done[job_id]["history"]]
        assert outcomes[-1] == "completed" and len(outcomes) == 2, done[job_id]


# -- 3. ?wait= on one node hears a job finish on another --


def test_status_wait_on_one_node_answers_when_another_node_finishes_the_job(
    start_server: StartServer, runs_file: Path, store: str
) -> None:
    front = start_server("--store", store, "--workers", "0")
    back = start_server("--store", store, "--workers", "2")
    job_id = enqueue(front, {"type": "gated"})
    wait_until(lambda: job_id in started(runs_file), "the gated job to run on the back node")
    assert status_of(front, job_id)["status"] == "processing"

    answer: dict[str, Any] = {}

    def long_poll() -> None:
        answer["job"] = status_of(front, job_id, "?wait=10", timeout=20)
        answer["at"] = time.monotonic()

    poller = threading.Thread(target=long_poll)
    poller.start()
    wait_until(lambda: stats(front)["waiting_requests"] == 1, "the ?wait= request to be parked on the front node")
    opened_at = time.monotonic()
    back.send(signal.SIGUSR1)  # the job completes on the back node
    poller.join(timeout=20)
    assert not poller.is_alive()
    took = answer["at"] - opened_at
    print(f"?wait= answered {took:.3f}s after the job was let go on the other node")
    assert answer["job"]["status"] == "completed", answer["job"]
    assert answer["job"]["history"][-1]["worker"].endswith(worker_of(back))
    assert took < 2.0, f"?wait= answered only after {took:.1f}s"

    # Each node lists both, from the cards they keep in the store; one that stops takes its card away.
    for node in (front, back):
        cards = {card["pid"]: card for card in node_cards(node)}
        assert set(cards) == {front.process.pid, back.process.pid}
        assert cards[back.process.pid]["listening"]["http"] == back.url
        assert cards[back.process.pid]["workers"]["total"] == 2 and cards[front.process.pid]["workers"]["total"] == 0
    back.send(signal.SIGTERM)
    assert back.wait() == 0
    assert [card["pid"] for card in node_cards(front)] == [front.process.pid]


# -- 4. a cancel on one node stops the handler running on another --


def test_a_cancel_on_one_node_stops_the_handler_running_on_another(
    start_server: StartServer, runs_file: Path, store: str
) -> None:
    front = start_server("--store", store, "--workers", "0")
    back = start_server("--store", store, "--workers", "1")  # default lease (60 s): no lease check within the test
    gated = enqueue(front, {"type": "gated"})
    wait_until(lambda: gated in started(runs_file), "the gated job to run on the back node")
    queued = enqueue(front, {"type": "record", "payload": {}})  # waits for the back node's only worker
    assert status_of(front, queued)["status"] == "pending"

    cancelled_at = time.monotonic()
    code, job = front.request("POST", f"/jobs/{gated}/cancel")
    assert code == 200 and job["status"] == "cancelled", job
    wait_until(lambda: status_of(front, queued)["status"] == "completed", "the next job to run", timeout=3.0)
    took = time.monotonic() - cancelled_at
    print(f"the back node's worker was free {took:.3f}s after the cancel on the front node")

    ended = status_of(back, gated)
    assert ended["status"] == "cancelled"
    assert [a["outcome"] for a in ended["history"]] == ["cancelled"], ended
    follower = status_of(back, queued)
    # The worker took the next job only once the cancelled handler was stopped.
    assert follower["history"][0]["started_at"] >= ended["finished_at"], (follower, ended)
    assert follower["history"][0]["worker"].endswith(worker_of(back))
    assert Counter(started(runs_file)) == {gated: 1, queued: 1}


# -- 5. a per-key limit holds across nodes and remote workers --

KEYS = 4
JOBS_PER_KEY = 12


def most_at_once(spans: list[str]) -> dict[str, int]:
    """For each key, the most of its jobs running at one time, from the handlers' start and end lines."""
    events = sorted((float(at), 1 if kind == "start" else -1, key) for kind, key, at in map(str.split, spans))
    running: Counter[str] = Counter()
    most: Counter[str] = Counter()
    for _, step, key in events:  # an end sorts before a start at the same instant: a slot passed on
        running[key] += step
        most[key] = max(most[key], running[key])
    return dict(most)


def test_a_per_key_limit_holds_across_nodes_and_remote_workers(
    start_server: StartServer, runs_file: Path, store: str, tmp_path: Path
) -> None:
    nodes = [start_server("--store", store, "--workers", "2") for _ in range(2)]
    code, answer = nodes[0].request("PUT", "/queues/limited/flow", {"key_concurrency": 2})
    assert code == 200, answer
    worker = WorkerProcess(
        tmp_path / "worker.log",
        nodes[1].url,
        "--handlers",
        "tests.fixture_handlers",
        "--queues",
        "limited",
        "--concurrency",
        "6",
        env={"JOBQ_TEST_RUNS_FILE": str(runs_file)},
    )
    try:
        wait_until(lambda: "running 6 at once" in worker.log(), "the remote worker leasing")  # or the nodes run all
        jobs = [
            {
                "type": "span",
                "queue": "limited",
                "concurrency_key": f"k{key}",
                "payload": {"key": f"k{key}", "seconds": 0.05},
            }
            for _ in range(JOBS_PER_KEY)
            for key in range(KEYS)
        ]
        code, body = nodes[0].request("POST", "/enqueue/batch", {"jobs": jobs})
        assert code == 200 and body["accepted"] == len(jobs), body
        wait_until(lambda: completed(nodes[1], "limited") == len(jobs), f"{len(jobs)} completed jobs", timeout=60.0)
    finally:
        worker.stop()
    spans = Path(f"{runs_file}.spans").read_text().splitlines()
    assert len(spans) == 2 * len(jobs)
    most = most_at_once(spans)
    print(f"most jobs of a key running at once, with 10 workers free: {most}")
    assert most == {f"k{key}": 2 for key in range(KEYS)}  # the limit, reached and never passed
    done = jobs_in(nodes[0], "completed")
    runners = {attempt["worker"].rpartition(":")[2] for job in done.values() for attempt in job["history"]}
    assert len(runners) == 3, runners  # both nodes' workers and the remote worker ran some


# -- 5. the database restarts (Redis: is killed and started again) under load: 503s while it is gone,
#    no accepted job lost --

LOADERS = 16  # clients enqueueing at once: requests are in flight at every restart
RESTARTS = 8
RESUMED = 20  # jobs accepted after a restart before the next one


def post(base: str, path: str, body: Any, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """One HTTP call: status, headers and raw body (error answers too)."""
    return http(base + path, "POST", body, timeout=timeout)


@dataclass
class Answer:
    at: float  # time.monotonic() when it came
    job_id: str
    code: int
    headers: dict[str, str]
    body: bytes


@dataclass
class RestartedUnderLoad:
    nodes: list[ServerProcess]
    answers: list[Answer]
    restarts: list[tuple[float, float]]  # (began, returned) of each private_server.restart()

    def accepted(self) -> set[str]:
        return {answer.job_id for answer in self.answers if answer.code == 202}


@pytest.fixture(scope="module")
def restarted(private_server: PrivateServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartedUnderLoad]:
    directory = tmp_path_factory.mktemp("restart")
    nodes: list[ServerProcess] = []
    try:
        for number in range(2):
            # A short lease: a run whose settle failed while the database was away runs again soon.
            flags = ("--store", private_server.url, "--workers", "4", "--lease-seconds", "3")
            nodes.append(
                ServerProcess(
                    directory / f"server-{number}.log",
                    *("--handlers", "tests.fixture_handlers", *flags),
                    env={"JOBQ_TEST_RUNS_FILE": str(directory / "runs.txt")},
                )
            )
        for node in nodes:
            node.wait_ready()
        outcome = RestartedUnderLoad(nodes, [], [])
        failures: list[BaseException] = []
        stop = threading.Event()

        def load(loader: int) -> None:
            number = 0
            while not stop.is_set():
                job_id = f"load-{loader}-{number}"
                try:
                    answer = post(nodes[number % 2].url, "/enqueue", {"type": "record", "id": job_id})
                except Exception as exc:  # jobq itself must always answer
                    failures.append(exc)
                    return
                outcome.answers.append(Answer(time.monotonic(), job_id, *answer))
                number += 1

        def accepted_since(moment: float) -> int:
            return sum(1 for answer in outcome.answers if answer.code == 202 and answer.at > moment)

        loaders = [threading.Thread(target=load, args=(n,)) for n in range(LOADERS)]
        for loader in loaders:
            loader.start()
        try:

            def enqueues_since(moment: float) -> None:
                wait_until(lambda: accepted_since(moment) >= RESUMED or bool(failures), "enqueues to be accepted", 15)

            enqueues_since(0.0)
            for _ in range(RESTARTS):
                began = time.monotonic()
                private_server.restart()
                outcome.restarts.append((began, time.monotonic()))
                enqueues_since(time.monotonic())
        finally:
            stop.set()
            for loader in loaders:
                loader.join(timeout=30)
        assert not failures, failures
        codes = Counter(answer.code for answer in outcome.answers)
        took = max(returned - began for began, returned in outcome.restarts)
        print(f"{RESTARTS} restarts (each at most {took:.1f}s): answers {dict(codes)}")
        yield outcome
    finally:
        for node in nodes:
            node.stop()


def test_a_database_restart_under_load_loses_no_accepted_job_and_enqueues_resume(restarted: RestartedUnderLoad) -> None:
    for _, returned in restarted.restarts:  # after each restart, enqueues succeed again at once
        accepted_after = sorted(
            answer.at for answer in restarted.answers if answer.code == 202 and answer.at > returned
        )
        assert accepted_after[RESUMED - 1] - returned < 3.0, "enqueues took long to resume"
    accepted = restarted.accepted()
    assert len(accepted) >= RESUMED * (RESTARTS + 1)
    wait_until(lambda: accepted <= set(jobs_in(restarted.nodes[0], "completed")), "every accepted job to complete", 20)


def test_a_database_restart_under_load_refuses_with_503_retry_after_problems(restarted: RestartedUnderLoad) -> None:
    unavailable = [answer for answer in restarted.answers if answer.code == 503]
    assert unavailable, "no request was refused: the restart was not seen"
    for answer in unavailable:
        assert "Retry-After" in answer.headers, answer
        assert answer.headers.get("Content-Type", "").startswith("application/problem+json"), answer
        assert json.loads(answer.body)["status"] == 503, answer


def test_a_database_restart_under_load_answers_no_other_5xx(restarted: RestartedUnderLoad) -> None:
    others = [
        (answer.job_id, answer.code, answer.body) for answer in restarted.answers if answer.code not in (202, 503)
    ]
    assert not others, others


# -- 6. a node on a Redis that would lose accepted jobs says so when it starts --


def test_a_node_on_a_redis_without_persistence_logs_the_durability_warning_at_start(
    start_server: StartServer,
) -> None:
    warning = durability_warning({"aof_enabled": "0"}, None)
    assert warning is not None
    bare = RedisServer()  # its defaults: no snapshots, no append-only file
    durable = RedisServer("--appendonly", "yes", "--appendfsync", "always")
    try:
        node = start_server("--store", f"{bare.url}?prefix=jobq")
        warned = [line for line in node.log().splitlines() if warning in line]
        assert len(warned) == 1, node.log()
        assert " WARNING jobq.store: " in warned[0], warned
        quiet = start_server("--store", f"{durable.url}?prefix=jobq")  # what jobq documents: nothing to warn of
        assert "append-only file" not in quiet.log(), quiet.log()
    finally:
        bare.stop()
        durable.stop()
