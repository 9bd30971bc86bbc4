"""``python -m jobq``: the ``jobq`` command (``python -m jobq --help`` lists its sub-commands)."""

import sys

from jobq.cli import main

if __name__ == "__main__":
    sys.exit(main())
