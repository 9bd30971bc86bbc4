"""Start the jobq server: ``python main.py --help`` lists every flag and its JOBQ_* variable.

SIGINT/SIGTERM drain: new jobs are refused (503), accepted ones finish (up to
``--drain-timeout``), then the process exits 0. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from jobq.api import SERVICE
from jobq.app import create_app
from jobq.config import Config
from jobq.errors import JobqError
from jobq.handlers import load_handler_modules

log = logging.getLogger("jobq")


async def serve(config: Config) -> int:
    """Run until a signal, then drain and stop. Returns the exit code."""
    app = create_app(config)
    service = app[SERVICE]
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    try:
        await runner.setup()
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
    except (JobqError, OSError) as exc:
        log.error("jobq cannot start: %s", exc)
        await runner.cleanup()
        return 2
    log.info(
        "jobq serving on %s with %d workers, store %s",
        ", ".join(f"http://{host}:{port}" for host, port, *_ in runner.addresses),
        config.workers,
        config.store,
    )

    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            held = service.pool.held()
            log.warning(
                "second %s: exiting now; %d jobs not finished: %s",
                signal.Signals(signum).name,
                len(held),
                ", ".join(held) or "none",
            )
            os._exit(1)
        log.info(
            "%s received: draining (up to %.0fs); send it again to stop at once",
            signal.Signals(signum).name,
            config.drain_timeout,
        )
        stop.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)

    await stop.wait()
    report = await service.drain()
    log.info("drained: %d jobs finished during shutdown", report.finished)
    if report.unfinished:
        log.warning(
            "%d jobs not finished (they stay pending in a durable store): %s",
            len(report.unfinished),
            ", ".join(report.unfinished),
        )
    await runner.cleanup()
    log.info("jobq stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    config = Config.from_args(argv)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    load_handler_modules(list(config.handlers))
    return asyncio.run(serve(config))


if __name__ == "__main__":
    sys.exit(main())
