"""Server configuration: one frozen dataclass, filled from flags and ``JOBQ_*`` variables."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Config:
    """Everything the server can be told. Each field is a flag and a ``JOBQ_<NAME>`` variable."""

    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=8080, metadata={"help": "HTTP port (0 picks a free one)"})
    workers: int = field(default=32, metadata={"help": "in-process worker tasks (jobs run at once)"})
    store: str = field(
        default="sqlite:///jobq.db",
        metadata={"help": "where jobs live: sqlite:///path (durable), memory:// (fastest)"},
    )
    durability: str = field(
        default="full",
        metadata={
            "help": "sqlite sync level: full (an accepted job survives power loss) or "
            "normal (survives a crash of jobq, not of the machine)",
            "choices": ("full", "normal"),
        },
    )
    queue_size: int = field(default=1_000_000, metadata={"help": "waiting jobs held before enqueue answers 503"})
    body_limit: int = field(default=1024 * 1024, metadata={"help": "largest request body in bytes (413 above)"})
    batch_limit: int = field(default=1000, metadata={"help": "most jobs in one POST /enqueue/batch"})
    drain_timeout: float = field(
        default=30.0, metadata={"help": "seconds to finish accepted jobs on SIGINT/SIGTERM before stopping anyway"}
    )
    lease_seconds: float = field(default=60.0, metadata={"help": "lease length; a job whose lease lapses is retried"})
    retry_base: float = field(default=1.0, metadata={"help": "first retry backoff ceiling in seconds (doubles)"})
    retry_cap: float = field(default=300.0, metadata={"help": "largest retry backoff in seconds"})
    retention_age: float = field(default=7 * 24 * 3600.0, metadata={"help": "seconds finished jobs stay readable"})
    retention_count: int = field(default=100_000, metadata={"help": "most finished jobs kept"})
    handlers: tuple[str, ...] = field(
        default=(), metadata={"help": "modules to import for @handler functions (comma-separated in JOBQ_HANDLERS)"}
    )
    log_level: str = field(
        default="info",
        metadata={"help": "debug, info, warning or error", "choices": ("debug", "info", "warning", "error")},
    )

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> Config:
        """Parse flags; each unset flag falls back to its ``JOBQ_*`` variable, then the default."""
        return cls(**vars(build_parser(environ if environ is not None else dict(os.environ)).parse_args(argv)))


def build_parser(environ: dict[str, str]) -> argparse.ArgumentParser:
    """The ``main.py`` argument parser, with defaults taken from the environment."""
    parser = argparse.ArgumentParser(
        prog="python main.py",
        description="jobq: a job-queue server. Jobs come in over HTTP and run on in-process async workers.",
    )
    for spec in fields(Config):
        env = f"JOBQ_{spec.name.upper()}"
        default: Any = spec.default
        kind: Any = type(default)
        if spec.name == "handlers":
            kind = _comma_list
        raw = environ.get(env)
        if raw is not None:
            default = kind(raw)
        options: dict[str, Any] = {"dest": spec.name, "default": default, "type": kind}
        if "choices" in spec.metadata:
            options["choices"] = spec.metadata["choices"]
        shown = ",".join(default) if isinstance(default, tuple) else default
        options["help"] = f"{spec.metadata['help']} [env {env}; default {shown!s}]"
        parser.add_argument("--" + spec.name.replace("_", "-"), **options)
    return parser


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())
