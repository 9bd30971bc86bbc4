"""``jobq serve``, ``jobq worker`` and ``jobq dispatch``: the long-running programs, under one command.

Each hands its arguments to the program's own ``main`` (the server's, the remote worker's,
the dispatcher's), so the flags, ``JOBQ_*`` variables, signals and exit codes are theirs.
Each program is imported only when its command runs: a worker-only install, without the
server's dependencies, runs ``jobq worker`` and is told what to install for ``jobq serve``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

EXIT_CANNOT_START = 2
SERVER_EXTRA = "server"
SERVER_PACKAGES = frozenset({"pydantic", "grpc", "grpc_health", "grpc_reflection", "google", "prometheus_client"})
"""Top-level modules the server needs beyond the SDK's dependencies: the ``jobq[server]`` extra."""


def serve(argv: Sequence[str]) -> int:
    try:
        from jobq import server
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in SERVER_PACKAGES:
            raise
        print(
            f"jobq serve: this install lacks the server's dependencies (no module named {exc.name!r}); "
            f"install them with: pip install 'jobq[{SERVER_EXTRA}]'",
            file=sys.stderr,
        )
        return EXIT_CANNOT_START
    return server.main(argv, prog="jobq serve")


def worker(argv: Sequence[str]) -> int:
    from jobq.sdk import remote_worker

    return remote_worker.main(argv, prog="jobq worker")


def dispatch(argv: Sequence[str]) -> int:
    from jobq import dispatcher

    return dispatcher.main(argv, prog="jobq dispatch")


COMMANDS: dict[str, tuple[Callable[[Sequence[str]], int], str]] = {
    "serve": (serve, "run the jobq server (the same as python main.py, same flags)"),
    "worker": (worker, "run a remote worker: lease jobs and run them with your --handlers"),
    "dispatch": (dispatch, "submit many jobs, wait for them, report throughput and latency"),
}
