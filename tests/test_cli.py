"""The ``jobq`` command, end to end: the installed console script run from outside the repository.

One server with tokens serves the whole module; each test uses its own queues and ids.
The commands run from a temporary directory, with the environment a user would set
(``JOBQ_URL``, ``JOBQ_TOKEN``), so they import the installed package, not the checkout.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobq.store import STORE_URL_FORMS, open_store, sqlite_path
from tests.procs import ROOT, ManagedProcess, ServerProcess, free_port

JOBQ = Path(sys.executable).parent / "jobq"
CLIENT = "client-token-0123456789"
WORKER = "worker-token-0123456789"
ADMIN = "admin-token-0123456789"
COMMANDS = (
    "serve",
    "worker",
    "dispatch",
    "enqueue",
    "status",
    "list",
    "logs",
    "retry",
    "cancel",
    "delete",
    "stats",
    "workflow",
)
BULK_QUEUE = "bulk"  # run by the server's workers, used by one test only


def user_env(**extra: str) -> dict[str, str]:
    """The environment without any JOBQ_* variable of the test run, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQ_") and k != "PYTHONPATH"}
    return {**env, **extra}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with client, worker and admin tokens; queues but ``default`` and ``bulk`` wait for remote workers."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    flags = ("--store", "memory://", "--workers", "4", "--queues", f"default,{BULK_QUEUE}", "--retry-base", "0.01")
    tokens = {"JOBQ_TOKEN": CLIENT, "JOBQ_WORKER_TOKEN": WORKER, "JOBQ_ADMIN_TOKEN": ADMIN}
    process = ServerProcess(log, *flags, env=tokens)
    process.wait_ready()
    yield process
    process.stop()


@pytest.fixture
def jobq(server: ServerProcess, tmp_path: Path) -> Any:
    """``jobq(*args, token=..., input=...)``: run the command in a directory outside the repository."""
    assert JOBQ.is_file(), f"{JOBQ} is missing: set up with `make setup` (pip install -e '.[server]')"

    def run(*args: str, token: str = CLIENT, input: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
        environ = user_env(JOBQ_URL=server.url, JOBQ_TOKEN=token, **env)
        return subprocess.run(
            [str(JOBQ), *args], cwd=tmp_path, env=environ, input=input, capture_output=True, text=True, timeout=30
        )

    return run


def answer(result: subprocess.CompletedProcess[str], code: int = 0) -> Any:
    """The JSON a ``--json`` command printed, after checking its exit code."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    return json.loads(result.stdout)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- the command itself ------------------------------------------------------
def test_help_lists_every_command(tmp_path: Path) -> None:
    for argv in ([str(JOBQ), "--help"], [sys.executable, "-m", "jobq", "--help"]):
        result = subprocess.run(argv, cwd=tmp_path, env=user_env(), capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        for command in (*COMMANDS, "queues"):
            assert f"    {command} " in result.stdout, command
        assert "exit codes" in result.stdout
    bare = subprocess.run([str(JOBQ)], cwd=tmp_path, env=user_env(), capture_output=True, text=True, timeout=30)
    assert bare.returncode == 2
    assert "usage: jobq" in bare.stderr


def test_the_client_commands_import_nothing_of_the_server() -> None:
    from tests.test_sdk import SERVER_MODULES

    probe = "import json, sys, jobq.cli, jobq.cli.client; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = json.loads(done.stdout)
    assert [m for m in loaded if any(m == s or m.startswith(s + ".") for s in SERVER_MODULES)] == []


# -- jobs ---------------------------------------------------------------------
def test_enqueue_and_status_wait_for_the_outcome(jobq: Any) -> None:
    done = answer(jobq("enqueue", "echo", "--payload", '{"to": "ada"}', "--wait", "10", "--json"))
    assert (done["status"], done["result"]) == ("completed", {"to": "ada"})
    assert answer(jobq("status", done["id"], "--json"))["id"] == done["id"]

    shown = jobq("status", done["id"])
    assert shown.returncode == 0
    assert "completed" in shown.stdout and '{"to":"ada"}' in shown.stdout

    failed = jobq("enqueue", "fail", "--payload", '{"message": "smtp down"}', "--max-attempts", "2", "--wait", "10")
    assert failed.returncode == 1, failed.stderr  # dead: the exit code says the job did not complete
    assert "JobFailed: smtp down" in failed.stdout

    slow = answer(jobq("enqueue", "sleep", "--payload", '{"seconds": 1}', "--wait", "0.1", "--json"), code=7)
    assert slow["status"] in ("pending", "processing")
    finished = answer(jobq("status", slow["id"], "--wait", "10", "--json"))
    assert finished["result"] == {"slept": 1.0}


def test_list_pages_and_prints_json(jobq: Any) -> None:
    queue = unique("listed")
    ids = [answer(jobq("enqueue", "noop", "--queue", queue, "--json"))["id"] for _ in range(3)]
    page = answer(jobq("list", "--queue", queue, "--json"))
    assert [job["id"] for job in page["jobs"]] == ids[::-1]  # newest first
    assert page["next_cursor"] is None

    first = jobq("list", "--queue", queue, "--limit", "2")
    assert first.returncode == 0
    assert first.stdout.split()[:4] == ["ID", "TYPE", "QUEUE", "STATUS"]
    assert ids[2] in first.stdout and ids[0] not in first.stdout
    cursor = first.stderr.split("--cursor ")[1].split()[0]
    rest = answer(jobq("list", "--queue", queue, "--cursor", cursor, "--json"))
    assert [job["id"] for job in rest["jobs"]] == [ids[0]]


def test_logs_print_and_follow_until_the_job_ends(jobq: Any) -> None:
    job_id = unique("napping")
    jobq("enqueue", "sleep", "--payload", '{"seconds": 0.5}', "--id", job_id)
    started = time.monotonic()
    followed = jobq("logs", job_id, "--follow")
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.strip().endswith("sleeping 0.5s")
    assert time.monotonic() - started < 10
    logs = answer(jobq("logs", job_id, "--json"))
    assert [line["message"] for line in logs["logs"]] == ["sleeping 0.5s"]


def test_cancel_retry_and_delete(jobq: Any) -> None:
    later = answer(jobq("enqueue", "noop", "--delay", "60", "--json"))
    assert answer(jobq("cancel", later["id"], "--json"))["status"] == "cancelled"
    again = jobq("cancel", later["id"])
    assert again.returncode == 4  # conflict: it is cancelled already
    assert "Job is in the wrong state" in again.stderr

    failed = answer(jobq("enqueue", "fail", "--wait", "10", "--json"), code=1)
    refused = jobq("retry", failed["id"])  # a client token may not
    assert refused.returncode == 6
    assert "needs a token with role admin" in refused.stderr
    assert "a token with a role named above" in refused.stderr
    worker_refused = jobq("enqueue", "noop", token=WORKER)  # a worker token may not enqueue: no admin is asked for
    assert worker_refused.returncode == 6
    assert "needs a token with role admin or client" in worker_refused.stderr, worker_refused.stderr
    rerun = answer(jobq("retry", failed["id"], "--json", token=ADMIN))
    assert rerun["status"] in ("pending", "processing", "failed")
    answer(jobq("status", rerun["id"], "--wait", "10", "--json"), code=1)  # it fails again

    deleted = jobq("delete", failed["id"], token=ADMIN)
    assert deleted.returncode == 0, deleted.stderr
    assert f"deleted job {failed['id']}" in deleted.stdout
    assert jobq("status", failed["id"]).returncode == 3


def test_stats(jobq: Any) -> None:
    jobq("enqueue", "noop", "--wait", "10")
    stats = answer(jobq("stats", "--json"))
    assert stats["jobs"]["completed"] >= 1
    shown = jobq("stats")
    assert "workers busy" in shown.stdout and "completed" in shown.stdout


def test_nodes(jobq: Any, server: ServerProcess) -> None:
    [node] = answer(jobq("nodes", "--json", token=WORKER))["nodes"]
    assert (node["pid"], node["listening"]["http"], node["workers"]["total"]) == (server.process.pid, server.url, 4)
    shown = jobq("nodes", token=WORKER)
    assert f":{server.process.pid}" in shown.stdout and "serving" in shown.stdout and node["id"] in shown.stdout


def test_schedules_put_list_pause_run_and_delete(jobq: Any) -> None:
    name = unique("nightly")
    put = ("schedules", "put", name, "--cron", "0 3 * * *", "--timezone", "Europe/Paris", "--type", "noop")
    made = answer(jobq(*put, "--payload", '{"kind": "daily"}', "--json", token=ADMIN))
    assert (made["cron"], made["job"]["payload"], made["last_run_at"]) == ("0 3 * * *", {"kind": "daily"}, None)
    listed = jobq("schedules", token=ADMIN)
    assert name in listed.stdout and "0 3 * * * (Europe/Paris)" in listed.stdout and "active" in listed.stdout
    assert answer(jobq("schedules", "pause", name, "--json", token=ADMIN))["paused"] is True
    ran = jobq("schedules", "run", name, token=ADMIN)
    assert f"schedule {name} enqueued job {name}:now-" in ran.stdout, ran.stderr
    assert jobq("schedules", "delete", name, token=ADMIN).returncode == 0
    gone = jobq("schedules", "run", name, token=ADMIN)
    assert gone.returncode != 0 and f"no schedule named '{name}'" in gone.stderr
    refused = jobq("schedules", "put", name, "--every", "5", "--type", "noop")  # a client token
    assert refused.returncode != 0 and "admin" in refused.stderr


# -- queues and bulk actions ----------------------------------------------------
def test_queues_pause_peek_clear_and_resume(jobq: Any) -> None:
    queue = unique("held")
    assert answer(jobq("queues", "pause", queue, "--json", token=ADMIN)) == {"queue": queue, "paused": True}
    job = answer(jobq("enqueue", "noop", "--queue", queue, "--json"))
    listed = {q["name"]: q for q in answer(jobq("queues", "--json"))["queues"]}
    assert listed[queue]["paused"] is True
    assert listed[queue]["jobs"]["pending"] == 1
    assert queue in jobq("queues").stdout

    assert answer(jobq("queues", "next", queue, "--json", token=ADMIN))["id"] == job["id"]  # a peek: it stays
    declined = jobq("queues", "clear", queue, token=ADMIN, input="n\n")
    assert declined.returncode == 1
    assert "delete the 1 waiting jobs" in declined.stderr
    assert answer(jobq("status", job["id"], "--json"))["status"] == "pending"

    assert answer(jobq("queues", "clear", queue, "--yes", "--json", token=ADMIN)) == {"queue": queue, "cleared": 1}
    assert answer(jobq("queues", "next", queue, "--json", token=ADMIN)) is None
    assert jobq("status", job["id"]).returncode == 3
    assert answer(jobq("queues", "resume", queue, "--json", token=ADMIN))["paused"] is False


def test_queues_limit_flow_and_unlimit(jobq: Any) -> None:
    queue = unique("limited")
    set_to = ("--concurrency", "4", "--key-concurrency", "1", "--rate", "10/1", "--key-rate", "100/60")
    shown = jobq("queues", "limit", queue, *set_to, token=ADMIN)
    assert f"queue {queue} limits: 4 running, 1 per key, 10/1s, 100/60s per key" in shown.stdout, shown.stderr
    assert answer(jobq("queues", "pause", queue, "--json", token=ADMIN))["paused"] is True
    job = answer(
        jobq("enqueue", "noop", "--queue", queue, "--concurrency-key", "acme", "--concurrency-limit", "2", "--json")
    )
    assert job["concurrency"] == {"key": "client/acme", "limit": 2}  # a client token's keys are its own
    flow = answer(jobq("queues", "flow", queue, "--json"))["flow"]
    assert (flow["concurrency"], flow["key_rate"], flow["running"]) == (4, {"limit": 100, "period": 60.0}, 0)
    assert "held by       nothing" in jobq("queues", "flow", queue).stdout
    bad = jobq("queues", "limit", queue, "--rate", "ten", token=ADMIN)
    assert bad.returncode == 2 and "is not N/SECONDS" in bad.stderr
    refused = jobq("queues", "limit", queue, "--concurrency", "1")  # a client token
    assert refused.returncode != 0 and "admin" in refused.stderr
    assert answer(jobq("queues", "unlimit", queue, "--json", token=ADMIN)) == {"queue": queue, "flow": None}
    assert f"queue {queue} has no limits" in jobq("queues", "flow", queue).stdout
    assert answer(jobq("queues", "clear", queue, "--yes", "--json", token=ADMIN))["cleared"] == 1


def test_bulk_retry_and_delete_of_dead_jobs(jobq: Any) -> None:
    queue = BULK_QUEUE
    ids = [
        answer(jobq("enqueue", "fail", "--queue", queue, "--max-attempts", "2", "--wait", "10", "--json"), code=1)["id"]
        for _ in range(3)
    ]
    retried = answer(jobq("retry", "--all", "--status", "dead", "--queue", queue, "--json", token=ADMIN))
    assert retried == {"retried": 3, "skipped": 0, "more": False, "cursor": None}
    for job_id in ids:  # each runs again and dies again (the handler always fails): wait on each with --wait
        again = answer(jobq("status", job_id, "--wait", "10", "--json"), code=1)
        assert again["status"] == "dead" and len(again["history"]) == 4
    dead = ("delete", "--all", "--status", "dead", "--queue", queue)
    unmatched = jobq(*dead, "--search", "no such text", token=ADMIN)
    assert "deleted 0 dead jobs" in unmatched.stdout, unmatched.stderr
    shown = jobq(*dead, "--search", "FAIL", "--limit", "2", token=ADMIN)
    assert shown.returncode == 0, shown.stderr
    assert "deleted 2 dead jobs; more jobs may match: run it again with --cursor " in shown.stdout
    cursor = shown.stdout.split("--cursor ")[1].split()[0]
    rest = answer(jobq(*dead, "--cursor", cursor, "--json", token=ADMIN))
    assert (rest["deleted"], rest["more"]) == (1, False)
    assert answer(jobq("list", "--queue", queue, "--json"))["jobs"] == []

    mixed = jobq("retry", "some-id", "--all", "--status", "dead", token=ADMIN)
    assert mixed.returncode == 2
    assert "not both" in mixed.stderr


# -- workflows ------------------------------------------------------------------------
def test_workflow_create_show_and_a_job_enqueued_after_one(jobq: Any, tmp_path: Path) -> None:
    wf = unique("wf")
    spec = {
        "id": wf,
        "jobs": [
            {"id": f"{wf}-a", "type": "echo", "payload": {"n": 1}},
            {"id": f"{wf}-b", "type": "fail", "payload": {"message": "b broke"}},
            {"id": f"{wf}-c", "type": "echo", "depends_on": [f"{wf}-a"]},
            {
                "id": f"{wf}-sum",
                "type": "echo",
                "depends_on": [f"{wf}-a", f"{wf}-b", f"{wf}-c"],
                "on_parent_failure": "run",
            },
        ],
    }
    (tmp_path / "wf.json").write_text(json.dumps(spec))
    created = jobq("workflow", "create", "wf.json")
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith(f"workflow {wf}: 4 jobs created\n")
    assert f"{wf}-sum  echo  default  waiting  {wf}-a, {wf}-b, {wf}-c" in created.stdout
    answer(jobq("status", f"{wf}-sum", "--wait", "10", "--json"))
    shown = jobq("workflow", "show", wf)
    assert shown.stdout.startswith(f"workflow {wf}: 3/4 done, 1 failed, finished\n"), shown.stdout
    assert "JobFailed: b broke" in shown.stdout
    view = answer(jobq("workflow", "show", wf, "--json"))
    assert (view["done"], view["failed"], view["total"], view["finished"]) == (3, 1, 4, True)
    again = answer(jobq("workflow", "create", "-", "--json", input=json.dumps(spec)))  # stdin; sent before
    assert again["created"] == 0 and [job["id"] for job in again["jobs"]] == [job["id"] for job in spec["jobs"]]
    status = jobq("status", f"{wf}-sum")
    assert f"depends on         {wf}-a, {wf}-b, {wf}-c\nif a parent fails  run anyway" in status.stdout
    assert [job["id"] for job in answer(jobq("list", "--parent", f"{wf}-a", "--json"))["jobs"]] == [
        f"{wf}-sum",
        f"{wf}-c",
    ]

    after = ("enqueue", "echo", "--payload", '{"last": 1}', "--depends-on", f"{wf}-b", "--depends-on", f"{wf}-c")
    cancelled = answer(jobq(*after, "--wait", "10", "--json"), code=1)  # b failed: cancelled, by default
    assert (cancelled["status"], cancelled["error"]) == ("cancelled", f"parent {wf}-b failed")
    ran = answer(jobq(*after, "--on-parent-failure", "run", "--wait", "10", "--json"))
    assert ran["workflow"]["depends_on"] == [f"{wf}-b", f"{wf}-c"] and ran["result"] == {"last": 1}


def test_workflow_chain_group_and_their_errors(jobq: Any, tmp_path: Path) -> None:
    chain = unique("chain")
    made = answer(jobq("workflow", "chain", 'echo={"step": 1}', "noop", "echo=[2]", "--id", chain, "--json"))
    ids = [job["id"] for job in made["jobs"]]
    assert made["id"] == chain and [job["depends_on"] for job in made["jobs"]] == [[], ids[:1], ids[1:2]]
    assert answer(jobq("status", ids[-1], "--wait", "10", "--json"))["result"] == [2]

    group = unique("group")
    args = ("workflow", "group", "echo=1", "fail", "echo=3", "--callback", "echo", "--after", ids[-1], "--id", group)
    made = jobq(*args)
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith(f"workflow {group}: 4 jobs created\n")
    view = answer(jobq("workflow", "show", group, "--json"))
    members, callback = view["jobs"][:3], view["jobs"][3]
    assert [job["depends_on"] for job in members] == [[ids[-1]]] * 3
    assert callback["depends_on"] == [job["id"] for job in members]
    answer(jobq("status", callback["id"], "--wait", "10", "--json"))  # it runs, though a member failed
    assert f"workflow {group}: 3/4 done, 1 failed, finished" in jobq("workflow", "show", group).stdout
    assert f"{members[0]['id']}, {members[1]['id']}, {members[2]['id']}" in jobq("workflow", "show", group).stdout

    (tmp_path / "cycle.json").write_text(
        json.dumps(
            [
                {"id": "cy-a", "type": "echo", "depends_on": ["cy-b"]},
                {"id": "cy-b", "type": "echo", "depends_on": ["cy-a"]},
            ]
        )
    )
    cycle = jobq("workflow", "create", "cycle.json")
    assert cycle.returncode == 2 and "the workflow has a cycle: cy-a -> cy-b -> cy-a" in cycle.stderr
    missing = jobq("workflow", "show", "no-such-workflow")
    assert missing.returncode == 3 and "no workflow with id 'no-such-workflow'" in missing.stderr
    unknown = jobq("enqueue", "echo", "--depends-on", "no-such-parent")
    assert unknown.returncode == 2 and "no-such-parent" in unknown.stderr
    for bad_args, says in (
        (("workflow", "create", "nowhere.json"), "cannot read nowhere.json"),
        (("workflow", "create", "-"), "- is not valid JSON"),
        (("workflow", "chain", "=1"), "names no job type"),
        (("workflow", "chain", "echo={nope"), "not valid JSON"),
        (("workflow",), "required: ACTION"),
        (("workflow", "group", "echo"), "required: --callback"),
    ):
        bad = jobq(*bad_args, input="")
        assert bad.returncode == 2 and says in bad.stderr, (bad_args, bad.stderr)


def test_a_remote_worker_runs_a_chain_each_step_reading_the_one_before(
    jobq: Any, server: ServerProcess, tmp_path: Path
) -> None:
    steps = (
        "from jobq import handler\n\n"
        "@handler('append')\n"
        "async def append(ctx):\n"
        "    parents = await ctx.parents()\n"
        "    return (parents[0]['result'] if parents else '') + ctx.payload\n"
    )
    queue = unique("chained")
    with remote_worker(server, tmp_path, "steps", steps, queue):
        made = answer(jobq("workflow", "chain", 'append="a"', 'append="b"', 'append="c"', "--queue", queue, "--json"))
        last = answer(jobq("status", made["jobs"][-1]["id"], "--wait", "10", "--json"))
    assert last["result"] == "abc"


# -- a worker with handlers from the working directory -------------------------------
def test_worker_runs_handlers_from_the_working_directory(jobq: Any, server: ServerProcess, tmp_path: Path) -> None:
    tasks = (
        "from jobq import handler\n\n"
        "@handler('shout')\n"
        "async def shout(ctx):\n"
        "    await ctx.log('shouting')\n"
        "    return ctx.payload.upper()\n"
    )
    queue = unique("remote")
    with remote_worker(server, tmp_path, "tasks", tasks, queue):
        done = answer(jobq("enqueue", "shout", "--payload", '"hello"', "--queue", queue, "--wait", "10", "--json"))
        assert done["result"] == "HELLO"
        assert "shouting" in jobq("logs", done["id"]).stdout


@contextlib.contextmanager
def remote_worker(server: ServerProcess, workdir: Path, module: str, source: str, queue: str) -> Iterator[None]:
    """``jobq worker`` running the handlers ``source`` (written to ``workdir/module.py``) on ``queue``; it must
    stop cleanly on SIGTERM when the block ends."""
    (workdir / f"{module}.py").write_text(source)
    worker = subprocess.Popen(
        [str(JOBQ), "worker", "--handlers", module, "--queues", queue, "--url", server.url],
        cwd=workdir,
        env=user_env(JOBQ_WORKER_TOKEN=WORKER),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=15)
    assert worker.returncode == 0, output


# -- errors and exit codes --------------------------------------------------------
def test_exit_codes_say_what_went_wrong(jobq: Any) -> None:
    missing = jobq("status", "no-such-job")
    assert missing.returncode == 3
    assert missing.stderr.startswith("jobq: Job not found: no job with id 'no-such-job'")

    unreachable = jobq("list", "--url", f"http://127.0.0.1:{free_port()}")
    assert unreachable.returncode == 5
    assert "Server unreachable" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr

    assert jobq("stats", token="not-a-known-token-at-all").returncode == 6
    invalid = jobq("enqueue", "teleport")
    assert invalid.returncode == 2
    assert "Unknown job type" in invalid.stderr and "type: known types" in invalid.stderr
    bad_json = jobq("enqueue", "echo", "--payload", "{nope")
    assert bad_json.returncode == 2
    assert "not valid JSON" in bad_json.stderr


def test_a_url_that_is_no_jobq_server_is_a_clear_error(jobq: Any) -> None:
    for bad in ("localhost:8080", "notaurl", "ftp://127.0.0.1"):
        refused = jobq("status", "x", "--url", bad)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.startswith(f"jobq: {bad!r} is not an http:// or https:// URL"), refused.stderr
    with socket.create_server(("127.0.0.1", 0)) as listener:  # answers whatever is sent with a line that is not HTTP
        port = listener.getsockname()[1]

        def garble() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(b"\x00\x00\x12 not an HTTP answer\r\n\r\n")

        answering = threading.Thread(target=garble, daemon=True)
        answering.start()
        garbled = jobq("status", "x", "--url", f"http://127.0.0.1:{port}")
        answering.join(10)
    assert garbled.returncode == 5, garbled.stderr
    assert garbled.stderr.startswith("jobq: Server unreachable"), garbled.stderr
    assert "Traceback" not in garbled.stderr


# -- jobq serve -----------------------------------------------------------------
def test_serve_serves_and_drains_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [str(JOBQ), "serve", "--port", str(port), "--store", "memory://", "--grpc-port", "0"],
            cwd=tmp_path,
            env=user_env(),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            probe = subprocess.run([str(JOBQ), "stats", "--url", url], env=user_env(), capture_output=True, timeout=30)
            if probe.returncode == 0:
                break
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "jobq stopped" in log.read_text()


@pytest.mark.parametrize("url", ["sqlite:jobq.db", "sqlite://host/jobq.db", "sqlite:///jobq.db?mode=ro", "bogus://x"])
def test_serve_and_main_refuse_a_malformed_store_url(url: str, tmp_path: Path) -> None:
    for argv in ([str(JOBQ), "serve"], [sys.executable, str(ROOT / "main.py")]):
        result = subprocess.run(
            [*argv, "--store", url, "--port", "0", "--grpc-port", "0"],
            cwd=tmp_path,
            env=user_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2, result.stderr
        assert STORE_URL_FORMS in result.stderr
        assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # no file named after the URL


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///jobq.db", "jobq.db"),
        ("sqlite:///data/jobq.db", "data/jobq.db"),
        ("sqlite:////var/j.db", "/var/j.db"),
    ],
)
def test_store_urls_accepted(url: str, path: str) -> None:
    assert sqlite_path(url) == path


@pytest.mark.parametrize(
    "url", ["sqlite:jobq.db", "sqlite:/jobq.db", "sqlite://", "sqlite:///", "sqlite:///dir/", "sqlite://h/x", "memory:"]
)
def test_store_urls_refused(url: str) -> None:
    with pytest.raises(ValueError, match="sqlite:////absolute/path"):
        open_store(url)


def test_the_worker_subprocess_helpers_still_run_the_module(tmp_path: Path) -> None:
    """``python -m jobq.sdk.remote_worker`` and ``python -m jobq.dispatcher`` keep their own names."""
    for module in ("jobq.sdk.remote_worker", "jobq.dispatcher"):
        process = ManagedProcess(tmp_path / f"{module}.log", ["-m", module, "--help"])
        assert process.wait(timeout=30) == 0
        assert f"usage: python -m {module}" in process.log()


def test_serve_names_the_missing_extra_on_a_plain_install(tmp_path: Path) -> None:
    """Without the server extra (pydantic shadowed here by a module that cannot be imported), serve says what to add."""
    blocked = tmp_path / "blocked" / "pydantic"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'pydantic'\", name='pydantic')\n")
    env = user_env(PYTHONPATH=str(blocked.parent))
    result = subprocess.run([str(JOBQ), "serve"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "pip install 'jobq[server]'" in result.stderr
    assert "Traceback" not in result.stderr
    client = subprocess.run(
        [str(JOBQ), "list", "--url", f"http://127.0.0.1:{free_port()}"], env=env, capture_output=True, timeout=30
    )
    assert client.returncode == 5  # the client commands need no extra
