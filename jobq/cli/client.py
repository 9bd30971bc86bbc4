"""The client commands of ``jobq``: requests to a running server, printed as plain tables or JSON.

Each command takes ``--url`` (``JOBQ_URL``, default http://127.0.0.1:8080), ``--token``
(``JOBQ_TOKEN``) and ``--json`` (the server's answer as JSON, for scripts). Reading and
enqueueing take a client token; ``retry``, ``delete`` and the queue actions but listing
take an admin one. Errors go to stderr as the problem's title and detail, and the exit
code says what happened (``jobq.cli.EXIT_CODES``).

This module uses the SDK only (:mod:`jobq.sdk.client`), nothing of the server.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from jobq.config import positive
from jobq.errors import JobqError
from jobq.job import COMPLETED, PROCESSING, TERMINAL, WAITING, Job, JobStatus, rfc3339
from jobq.sdk.client import DEFAULT_URL, BadUrl, SyncJobqClient, is_transient
from jobq.sdk.workflow import Step, WorkflowCreated, WorkflowJob, WorkflowView

URL_ENV = "JOBQ_URL"
TOKEN_ENV = "JOBQ_TOKEN"
LONGEST_WAIT = 3600.0  # the most one ?wait= may ask for; the server caps each to its --max-wait
FOLLOW_POLL_SECONDS = 1.0  # logs --follow: how often new lines are fetched (sooner when the job changes)
PARENTS_SHOWN = 3  # a workflow's table names this many parents of a job, then how many more
PARENTS_LISTED = 20  # and jobq status this many

EXIT_OK = 0
EXIT_NOT_DONE = 1  # --wait: the job failed, died or was cancelled; a clear not confirmed
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_UNREACHABLE = 5
EXIT_REFUSED = 6
EXIT_STILL_RUNNING = 7
EXIT_SERVER_ERROR = 8

Handler = Callable[[SyncJobqClient, argparse.Namespace, "Output"], int]


# -- output -------------------------------------------------------------------
class Output:
    """Prints each answer as JSON (``--json``) or as text for people."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def show(self, data: Any, text: Callable[[], str]) -> None:
        print(json.dumps(data, indent=2, ensure_ascii=False) if self.as_json else text(), flush=True)

    def job(self, job: Job) -> None:
        data = job.to_dict()
        self.show(data, lambda: job_text(data))


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """Plain aligned columns; the columns numbered in ``right`` are aligned right (numbers)."""
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        cells = [
            cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    return "\n".join(line(row) for row in [headers, *rows])


def pairs(rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def job_text(job: dict[str, Any]) -> str:
    """One job, a field per line: the set ones, then each attempt."""
    rows = [
        ("id", job["id"]),
        ("type", job["type"]),
        ("queue", job["queue"]),
        ("status", job["status"]),
        ("priority", str(job["priority"])),
        ("attempts", f"{job['attempts']} of {job['max_attempts']}"),
    ]
    for key, label in (
        ("created_at", "created"),
        ("next_run_at", "next run"),
        ("started_at", "started"),
        ("finished_at", "finished"),
        ("lease_expires_at", "lease until"),
    ):
        if job.get(key):
            rows.append((label, job[key]))
    if job.get("timeout") is not None:
        rows.append(("timeout", seconds(job["timeout"])))
    if job.get("progress") is not None:
        rows.append(("progress", f"{job['progress']:.0%} {job.get('progress_note') or ''}".rstrip()))
    if job.get("workflow"):
        rows += workflow_rows(job["status"], job["workflow"])
    rows.append(("payload", compact(job["payload"])))
    if job["status"] == COMPLETED:
        rows.append(("result", compact(job["result"])))
    if job.get("error"):
        rows.append(("error", job["error"]))
    if job.get("owner"):
        rows.append(("owner", job["owner"]))
    for attempt in job.get("history", []):
        outcome = attempt.get("outcome") or "running"
        where = f"on {attempt.get('worker')} at {attempt['started_at']}"
        rows.append((f"attempt {attempt['number']}", f"{outcome} {where}"))
    return pairs(rows)


def workflow_rows(status: str, workflow: dict[str, Any]) -> list[tuple[str, str]]:
    """A job's workflow and parents, as ``job_text`` shows them."""
    rows = [("workflow", workflow["id"])] if workflow["id"] else []
    if workflow["depends_on"]:
        rows.append(("depends on", parents_text(workflow["depends_on"], PARENTS_LISTED)))
        rows.append(("if a parent fails", "run anyway" if workflow["on_parent_failure"] == "run" else "cancel"))
    if status == JobStatus.WAITING:
        rows.append(("parents left", str(workflow["parents_left"])))
    return rows


def jobs_table(jobs: Sequence[Job]) -> str:
    headers = ("ID", "TYPE", "QUEUE", "STATUS", "PRIORITY", "ATTEMPTS", "CREATED")
    rows = [
        (
            j.id,
            j.type,
            j.queue,
            j.status,
            str(j.priority),
            f"{j.attempts}/{j.max_attempts}",
            rfc3339(j.created_at) or "",
        )
        for j in jobs
    ]
    return table(headers, rows, right=(4,)) if rows else "no jobs"


def queues_table(queues: Sequence[dict[str, Any]]) -> str:
    headers = ("QUEUE", "PAUSED", "WAITING", "RUNNING", "COMPLETED", "FAILED", "DEAD", "CANCELLED", "OLDEST WAIT")
    rows = []
    for queue in queues:
        counts = queue.get("jobs", {})
        waiting = sum(counts.get(status, 0) for status in WAITING)
        done = [str(counts.get(s, 0)) for s in ("processing", "completed", "failed", "dead", "cancelled")]
        oldest = queue.get("oldest_wait_seconds")
        paused = "yes" if queue.get("paused") else "no"
        rows.append((queue["name"], paused, str(waiting), *done, seconds(oldest) if waiting else "-"))
    return table(headers, rows, right=range(2, 9)) if rows else "no queues"


def limits_text(flow: dict[str, Any]) -> str:
    """A queue's limits in one line: ``4 running, 2 per key, 10/1s, 1/60s per key``."""
    parts = []
    if flow.get("concurrency") is not None:
        parts.append(f"{flow['concurrency']} running")
    if flow.get("key_concurrency") is not None:
        parts.append(f"{flow['key_concurrency']} per key")
    if flow.get("rate"):
        parts.append(f"{flow['rate']['limit']}/{flow['rate']['period']:g}s")
    if flow.get("key_rate"):
        parts.append(f"{flow['key_rate']['limit']}/{flow['key_rate']['period']:g}s per key")
    return ", ".join(parts) or "none"


def flow_text(queue: str, flow: dict[str, Any] | None) -> str:
    if flow is None:
        return f"queue {queue} has no limits"
    held = flow["held_by"]
    busiest = ", ".join(f"{key} {count}" for key, count in flow["keys_running"].items()) or "-"
    return pairs(
        [
            ("queue", queue),
            ("limits", limits_text(flow)),
            ("running", str(flow["running"])),
            ("busiest keys", busiest),
            ("held by", held_text(held)),
        ]
    )


def held_text(held: dict[str, Any]) -> str:
    reasons = []
    if held["concurrency"]:
        reasons.append("its concurrency")
    if held["rate_until"]:
        reasons.append(f"its rate, until {held['rate_until']}")
    if held["keys_at_limit"]:
        reasons.append(f"{held['keys_at_limit']} keys at their limit")
    if held["keys_rate_limited"]:
        reasons.append(f"{held['keys_rate_limited']} keys at their rate")
    return "; ".join(reasons) or "nothing"


def nodes_table(nodes: Sequence[dict[str, Any]]) -> str:
    headers = ("NODE", "ID", "HTTP", "STATE", "STARTED", "CARD WRITTEN", "BUSY", "REMOTE WORKERS")
    rows = []
    for node in nodes:
        workers = node.get("workers", {})
        remote = ", ".join(worker["name"] for worker in node.get("remote_workers", [])) or "-"
        state = "draining" if node.get("draining") else "serving"
        busy = f"{workers.get('busy', 0)}/{workers.get('total', 0)}"
        where = node.get("listening", {}).get("http", "-")
        rows.append(
            (
                f"{node['host']}:{node['pid']}",
                node["id"],
                where,
                state,
                node["started_at"],
                node["seen_at"],
                busy,
                remote,
            )
        )
    return table(headers, rows, right=(6,)) if rows else "no nodes"


def stats_text(stats: dict[str, Any]) -> str:
    workers = stats.get("workers", {})
    summary = pairs(
        [
            ("waiting jobs", str(stats.get("queue_depth", 0))),
            ("workers busy", f"{workers.get('busy', 0)} of {workers.get('total', 0)}"),
            ("jobs per second", str(stats.get("jobs_per_second", 0))),
            ("held waits", f"{stats.get('waiting_requests', 0)} requests, {stats.get('waiting_leases', 0)} leases"),
            ("paused queues", ", ".join(stats.get("paused_queues", [])) or "none"),
            ("uptime", seconds(stats.get("uptime_seconds"))),
            ("draining", "yes" if stats.get("draining") else "no"),
        ]
    )
    counts = stats.get("jobs", {})
    return summary + "\n\n" + table(("STATUS", "JOBS"), [(s, str(n)) for s, n in counts.items()], right=(1,))


def parents_text(depends_on: Sequence[str], most: int = PARENTS_SHOWN) -> str:
    """The first ``most`` parents of a job, and how many more: a group's callback may have thousands."""
    shown = ", ".join(depends_on[:most]) or "-"
    more = len(depends_on) - most
    return f"{shown} +{more} more" if more > 0 else shown


def workflow_table(jobs: Sequence[WorkflowJob]) -> str:
    headers = ("ID", "TYPE", "QUEUE", "STATUS", "DEPENDS ON", "ERROR")
    rows = [
        (j["id"], j["type"], j["queue"], j["status"], parents_text(j["depends_on"]), j["error"] or "") for j in jobs
    ]
    return table(headers, rows)


def created_text(answer: WorkflowCreated) -> str:
    made = f"{answer['created']} jobs created" if answer["created"] else "sent before: no job created"
    return f"workflow {answer['id']}: {made}\n\n{workflow_table(answer['jobs'])}"


def progress_text(view: WorkflowView) -> str:
    """``workflow wf-1: 3/5 done, 1 failed, running`` and the workflow's jobs."""
    state = "finished" if view["finished"] else "running"
    line = f"workflow {view['id']}: {view['done']}/{view['total']} done, {view['failed']} failed, {state}"
    return f"{line}\n\n{workflow_table(view['jobs'])}"


# -- waiting ------------------------------------------------------------------
def until_finished(jobq: SyncJobqClient, job: Job, wait: float, started: float) -> Job:
    """The job once finished, or as it is when ``wait`` seconds from ``started`` have passed (long-polls)."""
    while job.status not in TERMINAL:
        left = started + wait - time.monotonic()
        if left <= 0:
            break
        job = jobq.get(job.id, wait=min(left, LONGEST_WAIT))
    return job


def finished_code(job: Job) -> int:
    if job.status is COMPLETED:
        return EXIT_OK
    return EXIT_NOT_DONE if job.status in TERMINAL else EXIT_STILL_RUNNING


# -- the commands -------------------------------------------------------------
def enqueue(jobq: SyncJobqClient, args: argparse.Namespace, out: Output) -> int:
    started = time.monotonic()
    job = jobq.enqueue(
        args.type,
        args.payload,
        id=args.id,
        queue=args.queue,
        priority=args.priority,
        delay=args.delay,
        max_attempts=args.max_attempts,
        timeout=args.timeout,
        concurrency_key=args.concurrency_key,
        concurrency_limit=args.concurrency_limit,
        depends_on=args.depends_on,
        on_parent_failure=args.on_parent_failure,
        wait=None if args.wait is None else min(args.wait, LONGEST_WAIT),
    )
    if args.wait is not None:
        job = until_finished(jobq, job, args.wait, started)
    out.job(job)
    return EXIT_OK if args.wait is None else finished_code(job)


def status(jobq: SyncJobqClient, args: argparse.Namespace, out: Output) -> int:
    started = time.monotonic()
    job = jobq.get(args.id)
    if args.wait is not None:
        job = until_finished(jobq, job, args.wait, started)
    out.job(job)
    return EXIT_OK if args.wait is None else finished_code(job)


def list_jobs(jobq: SyncJobqClient, args: argparse.Namespace, out: Output) -> int:
    page = jobq.list(
        status=args.status,
        queue=args.queue,
        type=args.type,
        workflow=args.workflow,
        parent=args.parent,
        limit=args.limit,
        cursor=args.cursor,
    )
    out.show({"jobs": [j.to_dict() for j in page.jobs], "next_cursor": page.next_cursor}, lambda: jobs_table(page.jobs))
    if page.next_cursor and not out.as_json:
        print(f"more: jobq list --cursor {page.next_cursor} (with the same filters)", file=sys.stderr)
    return EXIT_OK


def logs(jobq: SyncJobqClient, args: argparse.Namespace, out: Output) -> int:
    if not args.follow:
        lines = jobq.logs(args.id)
        out.show({"id": args.id, "logs": lines}, lambda: "\n".join(log_line(line) for line in lines) or "no log lines")
        return EXIT_OK
    job = jobq.get(args.id)
    printed = 0
    while True:  # the job's state first, then its lines: every line written before it finished is fetched
        lines = jobq.logs(args.id)
        for line in lines[printed:]:
            print(compact(line) if out.as_json else log_line(line), flush=True)
        printed = len(lines)
        if job.status in TERMINAL:
            return EXIT_OK
        job = jobq.get(args.id, wait=FOLLOW_POLL_SECONDS)  # answers at once when the job changes


def log_line(line: dict[str, Any]) -> str:
    return f"{line['at']}  {line['message']}"


def cancel(jobq: SyncJobqClient, args: argparse.Namespace, out: Output) -> int:
    out.job(jobq.cancel(args.id))
    return EXIT_OK


def retry(jobq: SyncJobqClient, args: argparse.Namespace, out: Output) -> int:
    if check_bulk(args, "retry"):
        answer = jobq.retry_all(
            args.status, queue=args.queue, type=args.type, q=args.search, limit=args.limit, cursor=args.cursor
        )
        out.show(answer, lambda: bulk_text("retried", answer, args.status))
    else:
        out.job(jobq.retry(args.id))
    return EXIT_OK


def delete(jobq: SyncJobqClient, args: argparse.Namespace, out: Output) -> int:
    if check_bulk(args, "delete"):
        answer = jobq.delete_all(
            args.status, queue=args.queue, type=args.type, q=args.search, limit=args.limit, cursor=args.cursor
        )
        out.show(answer, lambda: bulk_text("deleted", answer, args.status))
    else:
        job = jobq.delete(args.id)
        out.show(job.to_dict(), lambda: f"deleted job {job.id} (it was {job.status.value})")
    return EXIT_OK


def check_bulk(args: argparse.Namespace, verb: str) -> bool:
    """Whether this is the ``--all`` form; a usage error when the arguments mix both forms."""
    parser: argparse.ArgumentParser = args.parser
    filters = [args.status, args.queue, args.type, args.search, args.limit, args.cursor]
    if args.all:
        if args.id is not None:
            parser.error(f"give a job ID or --all, not both: {verb} {args.id} or {verb} --all --status ...")
        if args.status is None:
            parser.error("--all needs --status, the state of the jobs to act on")
        return True
    if args.id is None:
        parser.error(f"give a job ID, or --all --status STATUS to {verb} every job in a state")
    if any(value is not None for value in filters):
        parser.error("--status, --queue, --type, --search, --limit and --cursor go with --all")
    return False


def bulk_text(done: str, answer: dict[str, Any], state: str) -> str:
    text = f"{done} {answer[done]} {state} jobs"
    if answer.get("skipped"):
        text += f", skipped {answer['skipped']} that changed meanwhile"
    if answer.get("more"):
        text += f"; more jobs may match: run it again with --cursor {answer['cursor']}"
    return text


def stats(jobq: SyncJobqClient, args: argparse.Namespace, out: Output) -> int:
    answer = jobq.stats()
    out.show(answer, lambda: stats_text(answer))
    return EXIT_OK


def nodes(jobq: SyncJobqClient, args: argparse.Namespace, out: Output) -> int:
    answer = jobq.nodes()
    out.show({"nodes": answer}, lambda: nodes_table(answer))
    return EXIT_OK


def queues(jobq: SyncJobqClient, args: argparse.Namespace, out: Output) -> int:
    answer = jobq.queues()
    out.show({"queues": answer}, lambda: queues_table(answer))
    return EXIT_OK


def pause(jobq: SyncJobqClient, args: argparse.Namespace, out: Output) -> int:
    jobq.pause(args.name)
    out.show({"queue": args.name, "paused": True}, lambda: f"queue {args.name} paused: it accepts jobs, runs none")
    return EXIT_OK


def resume(jobq: SyncJobqClient, args: argparse.Namespace, out: Output) -> int:
    jobq.resume(args.name)
    out.show({"queue": args.name, "paused": False}, lambda: f"queue {args.name} resumed")
    return EXIT_OK


def flow(jobq: SyncJobqClient, args: argparse.Namespace, out: Output) -> int:
    answer = jobq.flow(args.name)
    out.show({"queue": args.name, "flow": answer}, lambda: flow_text(args.name, answer))
    return EXIT_OK


def limit(jobq: SyncJobqClient, args: argparse.Namespace, out: Output) -> int:
    answer = jobq.set_flow(
        args.name,
        concurrency=args.concurrency,
        key_concurrency=args.key_concurrency,
        rate=args.rate,
        key_rate=args.key_rate,
    )
    out.show({"queue": args.name, "flow": answer}, lambda: f"queue {args.name} limits: {limits_text(answer)}")
    return EXIT_OK


def unlimit(jobq: SyncJobqClient, args: argparse.Namespace, out: Output) -> int:
    jobq.remove_flow(args.name)
    out.show({"queue": args.name, "flow": None}, lambda: f"queue {args.name} has no limits now")
    return EXIT_OK


def rate_argument(text: str) -> tuple[int, float]:
    """``N/SECONDS`` (``10/1``, ``100/60``): at most N starts per that many seconds."""
    limit, _, period = text.partition("/")
    try:
        starts, seconds_per = int(limit), float(period)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not N/SECONDS, e.g. 10/1 or 100/60") from None
    if starts < 1 or not seconds_per > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: N must be at least 1 and SECONDS above 0")
    return starts, seconds_per


def clear(jobq: SyncJobqClient, args: argparse.Namespace, out: Output) -> int:
    if not args.yes and not confirm_clear(jobq, args.name):
        return EXIT_NOT_DONE
    cleared = jobq.clear(args.name)
    out.show({"queue": args.name, "cleared": cleared}, lambda: f"deleted {cleared} waiting jobs of queue {args.name}")
    return EXIT_OK


def confirm_clear(jobq: SyncJobqClient, name: str) -> bool:
    """Ask on the terminal (stderr, stdin) before deleting a queue's waiting jobs."""
    counts = next((q.get("jobs", {}) for q in jobq.queues() if q["name"] == name), {})
    waiting = sum(counts.get(status, 0) for status in WAITING)
    print(f"delete the {waiting} waiting jobs of queue {name}? [y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    if answer.strip().lower() in ("y", "yes"):
        return True
    print("not cleared" + ("" if answer else " (no answer; --yes clears without asking)"), file=sys.stderr)
    return False


def schedules(jobq: SyncJobqClient, args: argparse.Namespace, out: Output) -> int:
    answer = jobq.schedules()
    out.show({"schedules": answer}, lambda: schedules_table(answer))
    return EXIT_OK


def put_schedule(jobq: SyncJobqClient, args: argparse.Namespace, out: Output) -> int:
    job = {"type": args.type, "payload": args.payload, "queue": args.queue}
    answer = jobq.put_schedule(
        args.name,
        {key: value for key, value in job.items() if value is not None},
        cron=args.cron,
        every=args.every,
        timezone=args.timezone,
        missed=args.missed,
    )
    out.show(answer, lambda: f"schedule {args.name} defined: next run {answer['next_run_at']}")
    return EXIT_OK


def schedule_action(jobq: SyncJobqClient, args: argparse.Namespace, out: Output) -> int:
    name = args.name
    if args.action == "run":
        receipt = jobq.run_schedule(name)
        out.show(receipt, lambda: f"schedule {name} enqueued job {receipt['id']}")
    elif args.action == "delete":
        jobq.delete_schedule(name)
        out.show({"schedule": name, "deleted": True}, lambda: f"schedule {name} deleted")
    else:
        answer = jobq.pause_schedule(name) if args.action == "pause" else jobq.resume_schedule(name)
        out.show(answer, lambda: f"schedule {name} {args.action}d")
    return EXIT_OK


def peek(jobq: SyncJobqClient, args: argparse.Namespace, out: Output) -> int:
    job = jobq.peek(args.name)
    if job is None:
        out.show(None, lambda: f"no job is ready in queue {args.name}")
    else:
        out.job(job)
    return EXIT_OK


def create_workflow(jobq: SyncJobqClient, args: argparse.Namespace, out: Output) -> int:
    body = read_workflow(args.parser, args.file)
    answer: WorkflowCreated = jobq.create_workflow(body["jobs"], id=body.get("id"))
    out.show(answer, lambda: created_text(answer))
    return EXIT_OK


def read_workflow(parser: argparse.ArgumentParser, name: str) -> dict[str, Any]:
    """The ``{"id"?, "jobs": [...]}`` of a file (``-``: stdin), as POST /workflows takes it; a bare list is its jobs."""
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
        body = json.loads(text)
    except OSError as exc:
        parser.error(f"cannot read {name}: {exc.strerror or exc}")
    except ValueError as exc:
        parser.error(f"{name} is not valid JSON: {exc}")
    if isinstance(body, list):
        body = {"jobs": body}
    if not isinstance(body, dict) or not isinstance(body.get("jobs"), list):
        parser.error(f'{name} holds no workflow: give {{"id": ..., "jobs": [...]}} (the id may be left out)')
    return body


def show_workflow(jobq: SyncJobqClient, args: argparse.Namespace, out: Output) -> int:
    view = jobq.get_workflow(args.id)
    out.show(view, lambda: progress_text(view))
    return EXIT_OK


def build_workflow(jobq: SyncJobqClient, args: argparse.Namespace, out: Output) -> int:
    """``workflow chain`` and ``workflow group``: the steps given, built with the SDK's builder."""
    workflow = jobq.workflow(args.workflow_id)
    steps = [replace_queue(step, args.queue) for step in args.steps]
    if args.action == "chain":
        workflow.chain(*steps, after=args.after or ())
    else:
        workflow.group(*steps, callback=replace_queue(args.callback, args.queue), after=args.after or ())
    answer: WorkflowCreated = jobq.create_workflow(workflow)
    out.show(answer, lambda: created_text(answer))
    return EXIT_OK


def replace_queue(step: Step, queue: str | None) -> Step:
    return step if queue is None else replace(step, queue=queue)


def step_argument(text: str) -> Step:
    """``TYPE`` or ``TYPE=JSON`` (``resize={"width": 64}``): one step of ``workflow chain`` or ``group``."""
    job_type, sep, payload = text.partition("=")
    if not job_type:
        raise argparse.ArgumentTypeError(f"{text!r} names no job type: give TYPE or TYPE=JSON")
    return Step(job_type, json_argument(payload) if sep else None)


# -- the command line ---------------------------------------------------------
def json_argument(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the client commands to the ``jobq`` parser."""
    # Defaults are SUPPRESS so that `jobq queues --json pause x` keeps --json: run() fills them in.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", default=argparse.SUPPRESS, help=f"the jobq server [env {URL_ENV}; default {DEFAULT_URL}]"
    )
    common.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        help=f"bearer token: a client token, or an admin one for retry, delete and queue actions; prefer the "
        f"variable, as flags show in ps [env {TOKEN_ENV}]",
    )
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON, for scripts")

    def command(name: str, handler: Handler, text: str, parent: Any = commands) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(name, parents=[common], help=text, description=text)
        parser.set_defaults(handler=handler, parser=parser)
        return parser

    wait_help = "wait up to this many seconds for the job to finish; the exit code tells how it ended"
    sub = command("enqueue", enqueue, "submit a job")
    sub.add_argument("type", metavar="TYPE", help="job type")
    sub.add_argument("--payload", type=json_argument, metavar="JSON", help="the payload, as JSON (default {})")
    sub.add_argument("--id", help="your own unique job id (the same id and body again answers the same job)")
    sub.add_argument("--queue", help="queue name (default: default)")
    sub.add_argument("--priority", type=int, metavar="N", help="-1000 to 1000, higher first (default 0)")
    sub.add_argument("--delay", type=positive(float, zero_ok=True), metavar="SECONDS", help="wait before it may run")
    sub.add_argument("--max-attempts", type=positive(int), metavar="N", help="attempts before it is dead (default 1)")
    sub.add_argument("--timeout", type=positive(float), metavar="SECONDS", help="seconds an attempt may run")
    sub.add_argument("--concurrency-key", metavar="KEY", help="what its queue's limits count and take turns by")
    sub.add_argument("--concurrency-limit", type=positive(int), metavar="N", help="its key's jobs running at once")
    sub.add_argument(
        "--depends-on",
        action="append",
        metavar="ID",
        help="a job it runs after (again for more): it waits until each has finished",
    )
    sub.add_argument(
        "--on-parent-failure",
        choices=("cancel", "run"),
        help="when a job it depends on fails, dies or is cancelled: cancel this one too (default) or run it anyway",
    )
    sub.add_argument("--wait", type=positive(float), metavar="SECONDS", help=wait_help)

    sub = command("status", status, "show a job, with every attempt")
    sub.add_argument("id", metavar="ID")
    sub.add_argument("--wait", type=positive(float), metavar="SECONDS", help=wait_help)

    sub = command("list", list_jobs, "list jobs, newest first")
    sub.add_argument("--status", choices=[s.value for s in JobStatus])
    sub.add_argument("--queue")
    sub.add_argument("--type")
    sub.add_argument("--workflow", metavar="ID", help="only the jobs of this workflow")
    sub.add_argument("--parent", metavar="ID", help="only the jobs that depend on this one")
    sub.add_argument("--limit", type=positive(int), default=50, metavar="N", help="jobs per page, 1-500 (default 50)")
    sub.add_argument("--cursor", help="the page after this cursor (printed when there are more)")

    sub = command("logs", logs, "print a job's log lines")
    sub.add_argument("id", metavar="ID")
    sub.add_argument("--follow", "-f", action="store_true", help="print new lines as they come, until the job ends")

    sub = command("cancel", cancel, "cancel a waiting or running job")
    sub.add_argument("id", metavar="ID")

    for name, handler, text, states in (
        ("retry", retry, "run a failed or dead job again, or every one in a state (admin)", ["failed", "dead"]),
        ("delete", delete, "delete a job that is not running, or every one in a state (admin)", None),
    ):
        sub = command(name, handler, text)
        sub.add_argument("id", metavar="ID", nargs="?", help="the job; or --all --status STATUS")
        group = sub.add_argument_group("every job in a state")
        group.add_argument("--all", action="store_true", help="act on every job matching the filter")
        group.add_argument("--status", choices=states or [s.value for s in JobStatus if s is not PROCESSING])
        group.add_argument("--queue", help="only this queue's jobs")
        group.add_argument("--type", help="only jobs of this type")
        group.add_argument("--search", metavar="TEXT", help="only jobs whose type, error or payload holds TEXT")
        group.add_argument("--limit", type=positive(int), metavar="N", help="at most this many (default 1000)")
        group.add_argument("--cursor", help="go on from where the last run stopped (it prints the cursor)")

    command("stats", stats, "counts by status and queue, workers, rates")
    command("nodes", nodes, "the jobq processes on the store, their workers and remote workers (worker, admin)")

    sub = command("queues", queues, "list queues; or pause, resume, clear, limit one, or show its next job")
    actions = sub.add_subparsers(dest="action", metavar="ACTION")
    command("list", queues, "list queues with their jobs by state (any token)", actions)
    for name, handler, text in (
        ("pause", pause, "stop running a queue's jobs; it still accepts new ones (admin)"),
        ("resume", resume, "run a paused queue's jobs again (admin)"),
        ("clear", clear, "delete a queue's waiting jobs, after asking (admin)"),
        ("next", peek, "show the job a worker would get next from a queue, without taking it (admin)"),
        ("flow", flow, "show a queue's limits, what runs, and what they hold back (any token)"),
        ("limit", limit, "set a queue's limits; those not given are none (admin)"),
        ("unlimit", unlimit, "remove a queue's limits (admin)"),
    ):
        sub = command(name, handler, text, actions)
        sub.add_argument("name", metavar="NAME", help="queue name")
    sub = actions.choices["clear"]
    sub.add_argument("--yes", "-y", action="store_true", help="do not ask")
    sub = actions.choices["limit"]
    sub.add_argument("--concurrency", type=positive(int), metavar="N", help="its jobs running at once")
    sub.add_argument("--key-concurrency", type=positive(int), metavar="N", help="one key's jobs running at once")
    sub.add_argument("--rate", type=rate_argument, metavar="N/SECONDS", help="its starts per period, e.g. 10/1")
    sub.add_argument("--key-rate", type=rate_argument, metavar="N/SECONDS", help="one key's starts per period")

    sub = command("workflow", show_workflow, "create jobs that depend on one another, and follow them")
    actions = sub.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub = command("create", create_workflow, "create a workflow from a JSON file, as POST /workflows takes it", actions)
    sub.add_argument("file", metavar="FILE", help='{"id": ..., "jobs": [...]} (the id may be left out); - for stdin')
    sub = command("show", show_workflow, "show a workflow's progress and its jobs with their parents", actions)
    sub.add_argument("id", metavar="ID")
    step_help = "TYPE or TYPE=JSON (the payload)"
    sub = command("chain", build_workflow, "create jobs that run one after another", actions)
    sub.add_argument("steps", nargs="+", type=step_argument, metavar="STEP", help=step_help)
    sub = command("group", build_workflow, "create jobs that run side by side, and a callback after them all", actions)
    sub.add_argument("steps", nargs="+", type=step_argument, metavar="STEP", help=step_help)
    sub.add_argument(
        "--callback",
        required=True,
        type=step_argument,
        metavar="STEP",
        help="runs once every member has finished, however each ended (ctx.parents() has their outcomes)",
    )
    for name in ("chain", "group"):
        sub = actions.choices[name]
        sub.add_argument("--id", dest="workflow_id", metavar="ID", help="the workflow's id (default: a new one)")
        sub.add_argument("--queue", help="the queue of every job (default: default)")
        sub.add_argument("--after", action="append", metavar="ID", help="a stored job to start after (again for more)")

    sub = command("schedules", schedules, "list schedules; or define, pause, resume, run or delete one (admin)")
    actions = sub.add_subparsers(dest="action", metavar="ACTION")
    command("list", schedules, "list schedules with their last and next run", actions)
    sub = command("put", put_schedule, "define or redefine a schedule", actions)
    sub.add_argument("name", metavar="NAME", help="schedule name")
    when = sub.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", metavar="EXPR", help='5 fields, or 6 with seconds first: "0 3 * * *"')
    when.add_argument("--every", type=positive(float), metavar="SECONDS", help="an interval instead")
    sub.add_argument("--timezone", metavar="TZ", help="the time zone the cron expression reads in (default UTC)")
    sub.add_argument("--missed", choices=("skip", "once"), help="a tick missed by over a minute (default skip)")
    sub.add_argument("--type", required=True, help="the job type each tick enqueues")
    sub.add_argument("--payload", type=json_argument, metavar="JSON", help="its payload, as JSON (default {})")
    sub.add_argument("--queue", help="its queue (default: default)")
    for name, text in (
        ("pause", "fire no tick until resumed"),
        ("resume", "fire the ticks after now again"),
        ("run", "enqueue the schedule's job now"),
        ("delete", "delete a schedule (its jobs stay)"),
    ):
        sub = command(name, schedule_action, text, actions)
        sub.add_argument("name", metavar="NAME", help="schedule name")


def schedules_table(schedules: Sequence[dict[str, Any]]) -> str:
    headers = ("SCHEDULE", "WHEN", "JOB", "QUEUE", "STATE", "LAST RUN", "NEXT RUN")
    rows = []
    for s in schedules:
        when = f"{s['cron']} ({s['timezone']})" if s.get("cron") else f"every {s['every']:g}s"
        job = s.get("job", {})
        state = "paused" if s.get("paused") else "active"
        rows.append(
            (
                s["name"],
                when,
                job.get("type", ""),
                job.get("queue", ""),
                state,
                s["last_run_at"] or "-",
                s["next_run_at"] or "-",
            )
        )
    return table(headers, rows) if rows else "no schedules"


def exit_code(error: JobqError) -> int:
    """What an error means for the exit code (see ``jobq.cli.EXIT_CODES``)."""
    if is_transient(error):
        return EXIT_UNREACHABLE
    return {
        400: EXIT_USAGE,
        413: EXIT_USAGE,
        422: EXIT_USAGE,
        401: EXIT_REFUSED,
        403: EXIT_REFUSED,
        404: EXIT_NOT_FOUND,
        409: EXIT_CONFLICT,
    }.get(error.status, EXIT_SERVER_ERROR)


def report(error: JobqError) -> int:
    """Print the problem's title, detail and fields to stderr; returns the exit code."""
    print(f"jobq: {error.title}: {error.detail}", file=sys.stderr)
    for item in error.errors or []:
        print(f"  {item.get('field')}: {item.get('message')}", file=sys.stderr)
    if error.status == 401:
        print(f"  set {TOKEN_ENV} (or --token) to a token the server knows", file=sys.stderr)
    elif error.status == 403:
        print(f"  set {TOKEN_ENV} (or --token) to a token with a role named above", file=sys.stderr)
    return exit_code(error)


def run(args: argparse.Namespace) -> int:
    """Run a parsed client command against the server; returns the exit code."""
    url = getattr(args, "url", None) or os.environ.get(URL_ENV) or DEFAULT_URL
    token = getattr(args, "token", None) or os.environ.get(TOKEN_ENV) or None
    out = Output(getattr(args, "json", False))
    try:
        with SyncJobqClient(url, token=token) as jobq:
            return args.handler(jobq, args, out)
    except JobqError as error:
        return report(error)
    except BadUrl as error:
        print(f"jobq: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `jobq list | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when stdout is flushed at exit
        return EXIT_OK
