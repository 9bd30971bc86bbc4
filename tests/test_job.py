"""The job state machine."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from jobq.errors import InvalidTransition
from jobq.job import TERMINAL, Job, JobStatus, can_move, rfc3339, same_json


def make_job(**fields: object) -> Job:
    return Job(id="j1", type="noop", payload={}, **fields)  # type: ignore[arg-type]


def test_happy_path_pending_processing_completed() -> None:
    job = make_job()
    job.begin_attempt("lease-1", 200.0, "w1", now=100.0)
    assert (job.status, job.attempts, job.lease_id) == (JobStatus.PROCESSING, 1, "lease-1")
    job.complete({"ok": True}, now=101.0)
    assert job.status is JobStatus.COMPLETED
    assert job.result == {"ok": True}
    assert (job.lease_expires_at, job.completed_under("lease-1"), job.completed_under("lease-2")) == (None, True, False)
    assert job.history[0].outcome == "completed"
    assert job.history[0].finished_at == 101.0


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_terminal_jobs_cannot_run_again(terminal: JobStatus) -> None:
    job = make_job(status=terminal)
    with pytest.raises(InvalidTransition):
        job.move_to(JobStatus.PROCESSING)


def test_pending_cannot_complete_without_running() -> None:
    with pytest.raises(InvalidTransition, match="pending; it cannot become completed"):
        make_job().complete(None, now=1.0)


def test_failure_without_retries_is_failed_and_with_retries_ends_dead() -> None:
    once = make_job()
    once.begin_attempt("l", 10.0, None, now=1.0)
    once.fail("boom", now=2.0, retry_at=None)
    assert (once.status, once.error, once.finished_at) == (JobStatus.FAILED, "boom", 2.0)

    retried = make_job(max_attempts=2)
    retried.begin_attempt("l1", 10.0, None, now=1.0)
    retried.fail("first", now=2.0, retry_at=5.0)
    assert (retried.status, retried.run_at) == (JobStatus.RETRYING, 5.0)
    retried.move_to(JobStatus.PENDING)
    retried.begin_attempt("l2", 10.0, None, now=6.0)
    retried.fail("second", now=7.0, retry_at=None)
    assert retried.status is JobStatus.DEAD
    assert [a.error for a in retried.history] == ["first", "second"]


def test_cancel_finished_job_is_refused_and_requeue_of_dead_allowed() -> None:
    done = make_job(status=JobStatus.COMPLETED)
    with pytest.raises(InvalidTransition):
        done.cancel(now=1.0)
    dead = make_job(status=JobStatus.DEAD, attempts=3)
    dead.requeue(now=300.0)
    assert (dead.status, dead.attempts) == (JobStatus.PENDING, 0)


def test_transition_table_is_consistent() -> None:
    assert can_move(JobStatus.PENDING, JobStatus.PROCESSING)
    assert not can_move(JobStatus.COMPLETED, JobStatus.PENDING)
    assert not can_move(JobStatus.CANCELLED, JobStatus.PENDING)


@pytest.mark.parametrize(
    "timestamp",
    [1_764_547_200.0, 1_764_547_200.9999995, 1_764_547_200.0005, 1_764_547_259.9996, 951_782_400.123, 4_102_444_799.9],
)
def test_rfc3339_matches_datetime_isoformat(timestamp: float) -> None:
    expected = datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert rfc3339(timestamp) == expected


def test_rfc3339_is_utc_with_z() -> None:
    assert rfc3339(0.0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(None) is None


def test_json_view_round_trips() -> None:
    job = make_job(max_attempts=3, priority=5, queue="mail", timeout=2.5, created_at=1700000000.25)
    job.begin_attempt("lease-9", 1700000060.0, "w", now=1700000001.5)
    job.fail("boom", now=1700000002.0, retry_at=1700000010.0)
    again = Job.from_dict(job.to_dict())
    assert again.to_dict() == job.to_dict()
    assert again.status is JobStatus.RETRYING
    assert again.history[0].error == "boom"


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ({"a": 1, "b": [1, 2]}, {"b": [1, 2], "a": 1}, True),  # key order does not matter
        (1, 1.0, False),
        (1, True, False),
        ({"n": 0}, {"n": False}, False),
        ([1, [2]], [1, [2.0]], False),
        (None, None, True),
        ("x", "x", True),
        ({"a": 1}, {"a": 1, "b": 2}, False),
    ],
)
def test_same_json_compares_types_too(a: object, b: object, same: bool) -> None:
    assert same_json(a, b) is same
