"""Workflows: jobs that wait for other jobs.

A job enqueued with ``depends_on`` (its parents) is stored ``waiting`` until every parent
has finished. What a parent's end means for a child still waiting on it is decided here,
once, for every store (the SQL and Lua of the shared stores follow the same table):

- the parent **completed**: it is counted off; the last parent counted off makes the child
  pending;
- the parent **failed, died, was cancelled or deleted**: under the child's policy
  ``"cancel"`` (the default) the child is cancelled, and its own waiting children in turn
  (a cascade); under ``"run"`` the parent is counted off as if it had completed.

A parent that has finished already when the child is added counts at once, by the same
table; a parent that does not exist counts as deleted. Each parent is counted off each child
exactly once. Groups (many jobs and a callback that depends on them all, under ``"run"``)
and chains (each job depending on the one before) are workflows of this one kind of edge.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from jobq.job import CANCELLED, COMPLETED, FAILING, RETRYING, TERMINAL, Job, JobStatus

DELETED = "deleted"  # how a parent that is gone (deleted, or never stored) ends, for its children
GAVE_UP = FAILING - {RETRYING} | {CANCELLED}  # how a job ends without completing


def parent_outcome(parent: Job | None) -> str | None:
    """How ``parent`` ended, as its children read it (None while it has not finished)."""
    if parent is None:
        return DELETED
    return parent.status.value if parent.finished else None


def outcome(parent: Job) -> dict[str, Any]:
    """How a parent ended, as its child reads it (``GET /jobs/{id}/parents``, ``ctx.parents()``)."""
    return {
        "id": parent.id,
        "type": parent.type,
        "status": parent.status.value,
        "result": parent.result,
        "error": parent.error,
    }


def job_view(job: Job) -> dict[str, Any]:
    """One job of a workflow as the workflow's view shows it: its place, status and edges."""
    return {
        "id": job.id,
        "type": job.type,
        "queue": job.queue,
        "status": job.status.value,
        "depends_on": list(job.depends_on),
        "error": job.error,
    }


def progress(jobs: Sequence[Job]) -> dict[str, Any]:
    """How far a workflow's jobs are: in all, by status, completed (``done``), ended otherwise (``failed``),
    and whether every one has finished."""
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.status.value] = counts.get(job.status.value, 0) + 1
    return {
        "total": len(jobs),
        "counts": counts,
        "done": counts.get(COMPLETED.value, 0),
        "failed": sum(counts.get(status.value, 0) for status in GAVE_UP),
        "finished": all(job.status in TERMINAL for job in jobs),
    }


def count_off(child: Job, parent_id: str, outcome: str, now: float) -> bool:
    """One parent of a waiting ``child`` ended as ``outcome``: count it off, or cancel the child.

    Returns whether the child left ``waiting`` (pending, or cancelled: a cascade goes on from it).
    """
    if child.status is not JobStatus.WAITING:
        return False
    if outcome == COMPLETED.value or child.on_parent_failure == "run":
        child.parents_left -= 1
        if child.parents_left > 0:
            return False
        child.parents_finished(now)
    else:
        child.parent_failed(parent_id, outcome, now)
    return True


def find_cycle(parents: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle among ``parents`` (job id -> the ids it depends on), as the ids along it; None if there is none.

    Iterative, so a chain of any length is fine; ids that are not keys (existing jobs) end a path.
    """
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in parents:
        if root in state:
            continue
        path: list[str] = [root]
        pending: list[Iterable[str]] = [iter(parents[root])]
        state[root] = 1
        while pending:
            step = next(pending[-1], None)  # type: ignore[call-overload]
            if step is None:
                state[path.pop()] = 2
                pending.pop()
            elif state.get(step) == 1:
                return [*path[path.index(step) :], step]
            elif step not in state and step in parents:
                state[step] = 1
                path.append(step)
                pending.append(iter(parents[step]))
    return None
