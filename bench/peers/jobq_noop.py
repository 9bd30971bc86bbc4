"""The no-op job type of jobq's rows: ``jobq serve --handlers jobq_noop`` and ``jobq worker --handlers jobq_noop``."""

from __future__ import annotations

from jobq import JobContext, handler

JOB_TYPE = "peers_noop"


@handler(JOB_TYPE)
async def noop(ctx: JobContext) -> None:
    """Do nothing: measures the queue's own overhead."""
