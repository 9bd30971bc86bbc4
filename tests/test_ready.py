"""The ready queue behind every store's leasing order."""

from __future__ import annotations

from jobq.job import Job, JobStatus
from jobq.store.ready import FlowReady, ReadyQueue


def job(seq: int, priority: int = 0) -> Job:
    return Job(id=f"j{seq}", type="noop", payload={}, priority=priority, seq=seq)


def always(_: Job) -> bool:
    return True


def drain(ready: ReadyQueue) -> list[int]:
    taken = []
    while (next_job := ready.pop(always)) is not None:
        taken.append(next_job.seq)
    return taken


def test_highest_priority_first_then_oldest_first() -> None:
    ready = ReadyQueue()
    for seq, priority in [(1, 0), (2, 5), (3, 0), (4, -3), (5, 5), (6, 10)]:
        ready.push(job(seq, priority))
    assert drain(ready) == [6, 2, 5, 1, 3, 4]
    assert not ready


def test_a_job_pushed_back_goes_to_its_place() -> None:
    ready = ReadyQueue()
    for seq in (1, 2, 3, 4):
        ready.push(job(seq))
    first, second = ready.pop(always), ready.pop(always)
    assert first is not None and second is not None
    ready.push(second)  # released: back before 3 and 4
    ready.push(first)
    assert drain(ready) == [1, 2, 3, 4]


def test_jobs_falling_due_late_take_their_place_by_seq() -> None:
    ready = ReadyQueue()
    for seq in (10, 11, 12):
        ready.push(job(seq))
    for seq in (3, 11_000, 7):  # a scheduled job created early falls due now; one newer than all
        ready.push(job(seq))
    assert drain(ready) == [3, 7, 10, 11, 12, 11_000]


def test_stale_entries_are_skipped_and_dropped() -> None:
    ready = ReadyQueue()
    jobs = [job(seq, priority) for seq, priority in [(1, 1), (2, 1), (3, 0)]]
    for entry in jobs:
        ready.push(entry)
    jobs[0].status = JobStatus.CANCELLED
    jobs[1].status = JobStatus.CANCELLED

    def pending(entry: Job) -> bool:
        return entry.status is JobStatus.PENDING

    peeked = ready.peek(pending)
    assert peeked is jobs[2]
    assert ready.pop(pending) is jobs[2]  # peek left it in place
    assert ready.pop(pending) is None
    assert not ready


def keyed(seq: int, key: str | None, priority: int = 0) -> Job:
    return Job(id=f"j{seq}", type="noop", payload={}, priority=priority, seq=seq, concurrency_key=key)


def test_keys_take_turns_and_a_held_key_holds_back_no_other() -> None:
    ready = FlowReady([keyed(1, "a"), keyed(2, "a"), keyed(3, "a"), keyed(4, "b"), keyed(5, None)])
    assert [ready.pop(always).seq for _ in range(3)] == [1, 4, 5]  # a, b, then the unkeyed turn
    held = {"a"}
    assert ready.pop(always, admit=lambda key, _: key not in held) is None  # only a has jobs, and it is held
    ready.push(keyed(6, "b"))  # b ran dry and left the rotation: it rejoins at its end
    order = []
    while (next_job := ready.pop(always, admit=lambda key, _: key not in held)) is not None:
        order.append(next_job.seq)
    assert order == [6]  # a's jobs stay, held back; b's new one is served
    assert list(ready.by_key) == ["a"] and [job.seq for job in ready.jobs(always)] == [2, 3]


def test_within_a_key_the_highest_priority_goes_first() -> None:
    ready = FlowReady([keyed(1, "a"), keyed(2, "a", priority=5), keyed(3, "b")])
    assert [ready.pop(always).seq for _ in range(3)] == [2, 3, 1]
