"""Drives jobq's Faktory listener with pyfaktory (0.2.13), in a process of its own.

Importing pyfaktory replaces the process's SIGTERM handler, its Consumer runs jobs in a pebble
process pool, and ``Consumer.run()`` ends in ``sys.exit(1)``: so tests/test_faktory_clients.py
runs it here, never in pytest's own process.

    FAKTORY_URL=tcp://:TOKEN@127.0.0.1:PORT python tests/faktory_py/pyfaktory_scenario.py produce QUEUE
    FAKTORY_URL=... RESULTS=path WID=id python tests/faktory_py/pyfaktory_scenario.py consume QUEUE

produce  pushes one "add" job (args [1, 2]) with ``Producer.push``, then three "add" jobs (args
         [i, 10]) and one "boom" job (args ["bad input"], retry 0: one attempt) with one
         ``Producer.push_bulk``. Prints one JSON line: {"single": jid, "bulk": [3 jids],
         "boom": jid, "bulk_refused": what push_bulk returned}.
consume  works QUEUE (concurrency 2, worker id WID) until SIGTERM: "add" appends
         {"jid", "sum", "pid"} as a JSON line to RESULTS; "boom" raises ValueError("cannot handle
         <arg>"), so the consumer sends FAIL. On SIGTERM it finishes, says END, prints "stopped"
         and exits 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

from pyfaktory import Client, Consumer, Job, Producer


def add(jid: str, a: int, b: int) -> int:
    """Runs in a pebble worker process: records its sum for the test."""
    line = json.dumps({"jid": jid, "sum": a + b, "pid": os.getpid()}) + "\n"
    with open(os.environ["RESULTS"], "a") as results:
        results.write(line)
    return a + b


def boom(jid: str, what: str) -> None:
    raise ValueError(f"cannot handle {what}")


def produce(url: str, queue: str) -> None:
    with Client(faktory_url=url, role="producer") as client:
        producer = Producer(client)
        single = Job(jobtype="add", args=[1, 2], queue=queue)
        assert producer.push(single)
        bulk = [Job(jobtype="add", args=[i, 10], queue=queue) for i in range(3)]
        failing = Job(jobtype="boom", args=["bad input"], queue=queue, retry=0)
        refused = producer.push_bulk([*bulk, failing])
    result = {"single": single.jid, "bulk": [job.jid for job in bulk], "boom": failing.jid, "bulk_refused": refused}
    print(json.dumps(result), flush=True)


def consume(url: str, queue: str) -> None:
    # beat_period 5 (pyfaktory's least): its heartbeat thread is not a daemon and sleeps that long between BEATs
    client = Client(faktory_url=url, role="consumer", worker_id=os.environ["WID"], beat_period=5)
    client.connect()
    consumer = Consumer(client, queues=[queue], concurrency=2, grace_period=5)
    consumer.register("add", add, bind=True)
    consumer.register("boom", boom, bind=True)
    print("working", flush=True)
    with contextlib.suppress(SystemExit, KeyboardInterrupt):  # KeyboardInterrupt: a SIGTERM between its try blocks
        consumer.run()  # until SIGTERM (pyfaktory turns it into KeyboardInterrupt), then sys.exit(1)
    client.disconnect()  # sends END
    print("stopped", flush=True)
    os._exit(0)  # not waiting for the heartbeat thread's sleep


if __name__ == "__main__":
    command, queue_name = sys.argv[1:3]
    {"produce": produce, "consume": consume}[command](os.environ["FAKTORY_URL"], queue_name)
