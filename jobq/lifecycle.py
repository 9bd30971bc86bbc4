"""The lifecycle rules: what happens to a job when a run ends, in one place for every backend.

Pure functions over a :class:`~jobq.job.Job` and the time: no I/O, no store. A
backend finds the job, calls the rule, and persists the outcome; so every store
(and every path into it: in-process workers, remote workers, expired leases, a
crash) treats a job alike.

- A **failed** attempt is retried under the retry policy while attempts remain
  (or after the handler's own ``retry_in``); then the job is given up: ``dead``
  if retries were allowed, ``failed`` if it had one attempt.
- A **lost** run (its lease lapsed, jobq stopped while it ran, or the answer that
  leased it never reached a worker) is not a failure: the job runs again without
  using an attempt, until it is lost ``max_lost_runs`` times in a row; then it is
  ``dead`` with the reason, since it is likely what kills its workers.
- A **released** run (a worker handing a job back as it stops) runs again without
  using an attempt, and does not count as lost.
- A repeated **complete** under the lease that completed the job answers the
  completed job again (an answer lost on the way back is safe to ask again).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jobq.job import DEAD, PROCESSING, Job
from jobq.retry import RetryPolicy

LOST_REASONS = {
    "lease-expired": "its lease expired: the worker stopped responding",
    "recovered": "jobq stopped while it ran",
    "undelivered": "the answer that leased it never reached a worker",
    "disconnected": "its worker's connection closed",
}
RELEASED = "released"


@dataclass(slots=True)  # not frozen: one per run, and frozen costs __init__ a call per field (5x the time)
class Settlement:
    """How a leased run ended: a result (``error`` None), or a failure with its error text."""

    id: str
    lease_id: str
    result: Any = None
    error: str | None = None
    retry_in: float | None = None  # a failure: run again after this long, whatever the policy says
    outcome: str = "failed"  # a failure: failed, timeout or retry
    traceback: str | None = None


@dataclass(frozen=True, slots=True)
class Rules:
    """The settings the rules follow (every backend gets them through ``StoreOptions``)."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_lost_runs: int = 3  # lost runs in a row after which a job is dead


def retry_at(job: Job, now: float, rules: Rules, retry_in: float | None = None) -> float | None:
    """When a job whose attempt just failed runs again, or None if it is out of attempts."""
    if job.attempts >= job.max_attempts:
        return None
    delay = retry_in if retry_in is not None else rules.retry.next_delay(job.attempts)
    return now + delay


def fail_attempt(
    job: Job,
    error: str,
    now: float,
    rules: Rules,
    *,
    retry_in: float | None = None,
    outcome: str = "failed",
    traceback: str | None = None,
) -> None:
    """A leased job's handler failed (or timed out, or asked for a retry)."""
    job.fail(error, now, retry_at(job, now, rules, retry_in), outcome, traceback=traceback)


def settle_run(job: Job, settlement: Settlement, now: float, rules: Rules) -> None:
    """A leased run ended as its worker says: completed with its result, or a failed attempt."""
    if settlement.error is None:
        job.complete(settlement.result, now)
    else:
        fail_attempt(
            job,
            settlement.error,
            now,
            rules,
            retry_in=settlement.retry_in,
            outcome=settlement.outcome,
            traceback=settlement.traceback,
        )


def lost_in_a_row(job: Job) -> int:
    """How many finished runs of ``job``, counting back from the newest, were lost.

    The row ends at a run that was not lost, and at the lost run that gave the job up
    (it carries the error): a job re-run by hand after that starts a new row.
    """
    lost = 0
    for attempt in reversed(job.history):
        if attempt.finished_at is None:
            continue  # the run being ended now
        if not attempt.lost or attempt.error is not None:
            break
        lost += 1
    return lost


def lose_run(job: Job, reason: str, now: float, rules: Rules) -> None:
    """A leased job's run was lost (``reason`` is one of LOST_REASONS): run it again, or give it up."""
    lost = lost_in_a_row(job) + 1
    job.attempts = max(job.attempts - 1, 0)  # a lost run uses no attempt
    if lost < rules.max_lost_runs:
        job.release(reason, now)
        return
    last = LOST_REASONS[reason]
    error = f"lost {lost} runs in a row (the last: {last}): given up, as it may be what stops its workers"
    job.fail(error, now, None, reason, give_up_as=DEAD)


def release_run(job: Job, now: float) -> None:
    """A worker hands a leased job back unfinished (it is stopping): it runs again, using no attempt."""
    job.attempts = max(job.attempts - 1, 0)
    job.release(RELEASED, now)


def end_run(job: Job, reason: str, now: float, rules: Rules) -> None:
    """End a leased job's run without a result: released by its worker, or lost."""
    if reason == RELEASED:
        release_run(job, now)
    elif reason in LOST_REASONS:
        lose_run(job, reason, now, rules)
    else:
        raise ValueError(f"a run ends {RELEASED!r} or lost ({', '.join(LOST_REASONS)}), not {reason!r}")


def lease_expired(job: Job, now: float) -> bool:
    """Whether a processing job's lease has run out."""
    return job.status is PROCESSING and (job.lease_expires_at or 0.0) <= now


def completed_again(job: Job | None, lease_id: str | None) -> bool:
    """Whether completing ``job`` under ``lease_id`` repeats the complete that finished it."""
    return job is not None and job.completed_under(lease_id)
