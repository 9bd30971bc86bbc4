"""The ``jobq`` command: one entry point, a sub-command for each thing jobq does.

    jobq serve                      the server (the same as ``python main.py``, same flags and JOBQ_* variables)
    jobq worker --handlers tasks    a remote worker (``python -m jobq.sdk.remote_worker``)
    jobq dispatch --jobs 1000       the load generator (``python -m jobq.dispatcher``)
    jobq enqueue|status|list|logs|retry|cancel|delete|stats|queues|workflow ...   a client of a running server

``serve``, ``worker`` and ``dispatch`` hand their arguments to the programs they run, untouched,
so their flags and ``--help`` are those programs' own. The client commands are in
:mod:`jobq.cli.client`; they need only the SDK's dependencies (see ``EXIT_CODES`` for what
their exit codes mean).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jobq.cli import client, run

EXIT_CODES = """\
exit codes of the client commands:
  0  done (with --wait: the job completed)
  1  with --wait: the job ended failed, dead or cancelled; queues clear: not confirmed
  2  usage error, or the server refused the request as invalid (400, 413, 422)
  3  not found (404): no such job or workflow (or none this token may see)
  4  conflict (409): the job is in the wrong state, or its id is taken by another body
  5  server unreachable or unavailable (connection refused, timeout, 502, 503, 504)
  6  token missing or unknown (401), or of the wrong role (403)
  7  with --wait: the job had not finished when the wait ended
  8  any other server error
"""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: ``jobq --help`` lists every sub-command."""
    parser = argparse.ArgumentParser(
        prog="jobq",
        description="jobq: a job-queue server, its workers, and a client for it. "
        "`jobq COMMAND --help` tells more about each command.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, text) in run.COMMANDS.items():
        commands.add_parser(name, help=text, add_help=False)  # never parsed here: see main()
    client.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``jobq`` command; returns its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in run.COMMANDS:
        # Passed on whole: argparse would need to know every flag of the program to pass them on.
        command, _ = run.COMMANDS[args[0]]
        return command(args[1:])
    return client.run(build_parser().parse_args(args))
