"""A Faktory worker made with ``faktory`` (cdrx/faktory_worker_python 1.0.0), in a process of its own.

``faktory.Worker`` installs a SIGTERM handler when built and ends ``run()`` in ``sys.exit(1)``, so
tests/test_faktory_clients.py runs it here, as a process it can stop with SIGTERM or kill with SIGKILL.

    FAKTORY_URL=tcp://:TOKEN@127.0.0.1:PORT RESULTS=path python tests/faktory_py/cdrx_worker.py QUEUE [MARKERS]

Works QUEUE (threads, concurrency 2). Each job it runs to the end appends
{"jid", "jobtype", "args", "pid"} as a JSON line to RESULTS. Job types:

add   (a, b)     records, and returns a + b
echo  (*args)    records
boom  (what)     raises ValueError("cannot handle <what>"): the worker sends FAIL (this client sends no backtrace)
slow  (*args)    with MARKERS (a directory): writes MARKERS/<jid>.<pid>, then blocks for 10 minutes (a
                 job that is running when the test kills the process); without MARKERS: records

On SIGTERM it finishes its jobs, disconnects, prints "stopped" and exits 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import faktory

RESULTS = Path(os.environ["RESULTS"])
MARKERS = Path(sys.argv[2]) if len(sys.argv) > 2 else None
WRITING = threading.Lock()


def record(jid: str, jobtype: str, args: list[Any]) -> None:
    line = json.dumps({"jid": jid, "jobtype": jobtype, "args": args, "pid": os.getpid()}) + "\n"
    with WRITING, RESULTS.open("a") as results:
        results.write(line)


def add(jid: str, a: int, b: int) -> int:
    record(jid, "add", [a, b])
    return a + b


def echo(jid: str, *args: Any) -> None:
    record(jid, "echo", list(args))


def boom(jid: str, what: str) -> None:
    raise ValueError(f"cannot handle {what}")


def slow(jid: str, *args: Any) -> None:
    if MARKERS is None:
        record(jid, "slow", list(args))
        return
    (MARKERS / f"{jid}.{os.getpid()}").write_text("started\n")
    threading.Event().wait(600)


def main() -> None:
    worker = faktory.Worker(
        faktory=os.environ["FAKTORY_URL"], queues=[sys.argv[1]], concurrency=2, use_threads=True, disconnect_wait=5
    )
    for name, function in {"add": add, "echo": echo, "boom": boom, "slow": slow}.items():
        worker.register(name, function, bind=True)
    print("working", flush=True)
    with contextlib.suppress(SystemExit, KeyboardInterrupt):  # KeyboardInterrupt: a SIGTERM between its try blocks
        worker.run()  # until SIGTERM (a KeyboardInterrupt), then sys.exit(1)
    print("stopped", flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
