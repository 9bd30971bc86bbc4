"""Workflows on a cluster: several ``main.py`` nodes on one shared store (PostgreSQL, Redis), real processes.

A diamond and a chord run across the nodes with each job after its parents and the callback once, however
the nodes finish the members at once; a node killed with SIGKILL mid-workflow loses nothing and the callback
still runs once. The ``record`` handler (tests/fixture_handlers.py) notes each run in the runs file.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from jobq.job import parse_rfc3339
from tests.conftest import StartServer
from tests.procs import ServerProcess
from tests.test_cluster import shared_backend, started, stats, status_of, store, wait_until

__all__ = ["shared_backend", "store"]  # the fixtures, so pytest finds them here


def create_workflow(node: ServerProcess, jobs: list[dict[str, Any]]) -> dict[str, Any]:
    code, body = node.request("POST", "/workflows", {"jobs": jobs}, timeout=30)
    assert code == 202, body
    return dict(body)


def workflow(node: ServerProcess, workflow_id: str) -> dict[str, Any]:
    code, body = node.request("GET", f"/workflows/{workflow_id}", timeout=30)
    assert code == 200, body
    return dict(body)


def chord(members: int, seconds: float, **payload: Any) -> list[dict[str, Any]]:
    jobs = [{"id": f"m{n}", "type": "record", "payload": {"seconds": seconds, **payload}} for n in range(members)]
    callback = {
        "id": "callback",
        "type": "record",
        "depends_on": [job["id"] for job in jobs],
        "on_parent_failure": "run",
    }
    return [*jobs, callback]


def test_a_diamond_and_a_chord_run_across_nodes_each_job_after_its_parents_and_once(
    start_server: StartServer, runs_file: Path, store: str
) -> None:
    nodes = [start_server("--store", store, "--workers", "4") for _ in range(3)]
    diamond = [
        {"id": "a", "type": "record", "payload": {"seconds": 0.05}},
        {"id": "b", "type": "record", "depends_on": ["a"], "payload": {"seconds": 0.05}},
        {"id": "c", "type": "record", "depends_on": ["a"], "payload": {"seconds": 0.05}},
        {"id": "d", "type": "record", "depends_on": ["b", "c"]},
    ]
    first = create_workflow(nodes[0], diamond)
    second = create_workflow(nodes[1], chord(120, 0.02))  # members finish on every node at once
    wait_until(lambda: workflow(nodes[2], second["id"])["finished"], "the chord to finish", timeout=60)
    wait_until(lambda: workflow(nodes[2], first["id"])["finished"], "the diamond to finish", timeout=30)
    runs = started(runs_file)
    assert Counter(runs) == Counter(
        {job_id: 1 for job_id in ["a", "b", "c", "d", "callback", *(f"m{n}" for n in range(120))]}
    )
    assert runs.index("d") > max(runs.index("b"), runs.index("c")) > runs.index("a")
    jobs = {
        job_id: status_of(nodes[2], job_id) for job_id in ["b", "c", "d", "callback", *(f"m{n}" for n in range(120))]
    }
    assert parse_rfc3339(jobs["d"]["started_at"]) >= max(parse_rfc3339(jobs[x]["finished_at"]) for x in "bc")  # type: ignore[type-var]
    members_done = max(parse_rfc3339(jobs[f"m{n}"]["finished_at"]) or 0.0 for n in range(120))
    assert (parse_rfc3339(jobs["callback"]["started_at"]) or 0.0) >= members_done
    ran_on = Counter(job["history"][0]["worker"].rpartition(":")[2] for job in jobs.values())
    assert len(ran_on) >= 2, f"one node ran every job: {ran_on}"
    view = workflow(nodes[0], second["id"])
    assert (view["total"], view["done"], view["failed"]) == (121, 121, 0)


def test_a_node_killed_mid_workflow_loses_nothing_and_the_callback_runs_once(
    start_server: StartServer, runs_file: Path, store: str
) -> None:
    flags = ("--store", store, "--workers", "6", "--lease-seconds", "2")
    nodes = [start_server(*flags) for _ in range(3)]
    victim = nodes[2]
    answer = create_workflow(nodes[0], chord(60, 0.5, slow_runs=1))
    wait_until(lambda: len(started(runs_file)) >= 12 and stats(victim)["workers"]["busy"] > 0, "members running")
    victim.kill()
    assert "callback" not in started(runs_file)
    survivors = nodes[:2]
    wait_until(lambda: workflow(survivors[0], answer["id"])["finished"], "the workflow to finish", timeout=60)
    view = workflow(survivors[1], answer["id"])
    assert (view["done"], view["failed"], view["total"]) == (61, 0, 61), view
    runs = Counter(started(runs_file))
    assert runs["callback"] == 1, runs
    assert set(runs) == {"callback", *(f"m{n}" for n in range(60))}, "a member never ran"
    callback = status_of(survivors[0], "callback")
    assert callback["status"] == "completed" and callback["workflow"]["parents_left"] == 0
    members_done = max(parse_rfc3339(status_of(survivors[0], f"m{n}")["finished_at"]) or 0.0 for n in range(60))
    assert (parse_rfc3339(callback["started_at"]) or 0.0) >= members_done
