"""Start the jobq server: ``python main.py --help`` lists every flag and its JOBQ_* variable.

The same server as ``jobq serve``; the code lives in :mod:`jobq.server`. SIGINT/SIGTERM
drain: new jobs are refused (503), accepted ones finish (up to ``--drain-timeout``), then
the process exits 0; a second signal stops it at once with exit code 1. Exit code 2 when
it cannot start (bad flag or variable, tokens, an exposed host without tokens, handler
module, store URL, busy port).
"""

import sys

from jobq.server import main, tune_gc

__all__ = ["main", "tune_gc"]  # tune_gc: bench/inprocess.py imports it from here

if __name__ == "__main__":
    sys.exit(main())
