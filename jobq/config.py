"""Server configuration: one frozen dataclass, filled from flags and ``JOBQ_*`` variables.

A flag wins over its variable, and the variable over the default. An empty
variable counts as unset. A value that does not parse or is out of range is a
usage error naming the flag or variable (argparse's exit code 2), never a
traceback.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import Field, dataclass, field, fields
from typing import Any, TypeVar

from jobq import logformat
from jobq.sdk.client import BadUrl, check_url

T = TypeVar("T")


def _option(
    default: T,
    help_text: str,
    *,
    choices: tuple[str, ...] | None = None,
    at_least: float | None = None,
    above: float | None = None,
    at_most: float | None = None,
    may_be_empty: bool = False,
) -> T:
    """A config field: its default, its ``--help`` text and the values it accepts."""
    metadata = {
        "help": help_text,
        "choices": choices,
        "at_least": at_least,
        "above": above,
        "at_most": at_most,
        "may_be_empty": may_be_empty,
    }
    return field(default=default, metadata=metadata)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Config:
    """Everything the server can be told. Each field is a flag and a ``JOBQ_<NAME>`` variable."""

    host: str = _option("127.0.0.1", "address to listen on")
    port: int = _option(8080, "HTTP port (0 picks a free one)", at_least=0, at_most=65535)
    grpc_port: int = _option(50051, "gRPC port, on the same host (0 turns gRPC off)", at_least=0, at_most=65535)
    faktory_port: int = _option(
        0,
        "Faktory protocol port, on the same host (0: off; Faktory's own is 7419): Faktory clients in any "
        "language push and fetch jobs; with tokens, a client's password is a jobq token",
        at_least=0,
        at_most=65535,
    )
    workers: int = _option(32, "in-process worker tasks (jobs run at once; 0 runs none)", at_least=0)
    prefetch: int = _option(
        0,
        "jobs the in-process workers lease ahead of the ones they run: more throughput for short jobs, "
        "but a job leased ahead is not passed by a higher-priority one that arrives meanwhile",
        at_least=0,
    )
    queues: tuple[str, ...] = _option(
        (),
        "queues the in-process workers take jobs from (comma-separated; all when empty); "
        "other queues wait for remote workers and accept any job type",
    )
    store: str = _option(
        "sqlite:///jobq.db",
        "where jobs live: sqlite:///path (durable), memory:// (fastest), "
        "postgresql://user@host:5432/db (shared by every jobq process on it; ?schema=name, default jobq), "
        "redis://host:6379/0 (shared likewise; ?prefix=name, default jobq; ?replicas=N: wait for N replicas)",
    )
    durability: str = _option(
        "full",
        "sqlite sync level: full (an accepted job survives power loss) or "
        "normal (survives a crash of jobq, not of the machine)",
        choices=("full", "normal"),
    )
    queue_size: int = _option(1_000_000, "waiting jobs held before enqueue answers 503", at_least=1)
    body_limit: int = _option(1024 * 1024, "largest request body in bytes (413 above)", at_least=1)
    batch_limit: int = _option(1000, "most jobs in one POST /enqueue/batch", at_least=1)
    drain_timeout: float = _option(
        30.0, "seconds to finish accepted jobs on SIGINT/SIGTERM before stopping anyway", at_least=0
    )
    max_wait: float = _option(
        60.0,
        "longest long-poll in seconds: ?wait= on enqueue and status, and a worker's lease wait, are capped to it",
        above=0,
        at_most=3600,
    )
    lease_seconds: float = _option(
        60.0, "lease length; a job whose lease lapses runs again (a lost run, using no attempt)", above=0
    )
    max_lost_runs: int = _option(
        3,
        "lost runs in a row (lease lapsed, jobq stopped while it ran) after which a job is dead",
        at_least=1,
    )
    retry_base: float = _option(1.0, "first retry backoff ceiling in seconds (doubles)", at_least=0)
    retry_cap: float = _option(300.0, "largest retry backoff in seconds", at_least=0)
    retention_age: float = _option(7 * 24 * 3600.0, "seconds finished jobs stay readable", at_least=0)
    retention_count: int = _option(100_000, "most finished jobs kept", at_least=0)
    handlers: tuple[str, ...] = _option(
        (), "modules to import for @handler functions (comma-separated, also in JOBQ_HANDLERS)"
    )
    schedules: str = _option(
        "",
        "a TOML file of schedules to define at start: a table per schedule, named as it, with cron or every, "
        "timezone, missed, and a job table (type, payload, queue, ...); GET /schedules lists them",
        may_be_empty=True,
    )
    log_level: str = _option("info", "debug, info, warning or error", choices=logformat.LEVELS)
    log_format: str = _option(
        "text", "text (one readable line per record) or json (one JSON object per line)", choices=logformat.FORMATS
    )
    access_log: bool = _option(False, "log every HTTP request: method, route, status, duration, caller")
    tokens_file: str = _option(
        "",
        'bearer tokens file: a JSON list of {"name", "role", "token"} objects, role client, worker or admin; '
        "tokens also come from JOBQ_TOKEN (client), JOBQ_WORKER_TOKEN and JOBQ_ADMIN_TOKEN, never from flags",
        may_be_empty=True,
    )
    insecure: bool = _option(
        False, "serve a non-loopback --host without tokens, letting anyone who can connect do anything"
    )
    metrics: bool = _option(True, "count jobs, requests and store commits, and serve them at GET /metrics")
    ui: str = _option(
        "on",
        "the web dashboard at /ui: on, off, or read-only (browsers may look, not act; API clients are unaffected)",
        choices=("on", "off", "read-only"),
    )

    def __post_init__(self) -> None:
        for spec in fields(self):
            problem = _out_of_range(spec, getattr(self, spec.name))
            if problem:
                raise ValueError(f"{spec.name} {problem}")

    @classmethod
    def from_args(
        cls,
        argv: Sequence[str] | None = None,
        environ: Mapping[str, str] | None = None,
        *,
        prog: str = "python main.py",
    ) -> Config:
        """Parse flags; each unset flag falls back to its ``JOBQ_*`` variable, then the default.

        A bad flag or variable exits with a usage message and code 2. ``prog`` names the command in it.
        """
        env = os.environ if environ is None else environ
        parser = build_parser(prog)
        given = vars(parser.parse_args(argv))
        values: dict[str, Any] = {}
        for spec in fields(cls):
            if given[spec.name] is not None:
                values[spec.name] = given[spec.name]
                continue
            name = env_var(spec.name)
            raw = env.get(name, "")
            if raw:
                try:
                    values[spec.name] = parse_value(spec, raw)
                except ValueError as exc:
                    parser.error(f"{name}={raw!r}: {exc}")
        return cls(**values)


def env_var(name: str) -> str:
    """The environment variable behind a config field: ``drain_timeout`` -> ``JOBQ_DRAIN_TIMEOUT``."""
    return f"JOBQ_{name.upper()}"


def flag(name: str) -> str:
    """The command-line flag behind a config field: ``drain_timeout`` -> ``--drain-timeout``."""
    return "--" + name.replace("_", "-")


def build_parser(prog: str = "python main.py") -> argparse.ArgumentParser:
    """The server's argument parser. Unset flags parse as None; ``Config.from_args`` fills them in."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="jobq: a job-queue server. Jobs come in over HTTP and run on in-process async workers. "
        "SIGINT or SIGTERM stops it gracefully: new jobs are refused, accepted ones finish "
        "(up to --drain-timeout), and a second signal stops it at once.",
        epilog="Every flag can also be set by its JOBQ_* environment variable; a flag wins over its variable.",
    )
    for spec in fields(Config):
        default = ",".join(spec.default) if isinstance(spec.default, tuple) else spec.default
        yes_no = isinstance(spec.default, bool)  # a yes/no flag alone means yes: --insecure, or --metrics no
        parser.add_argument(
            flag(spec.name),
            dest=spec.name,
            default=None,
            type=_argument_type(spec),
            choices=spec.metadata["choices"],
            metavar="BOOL" if yes_no else None if spec.metadata["choices"] else spec.name.upper(),
            help=f"{spec.metadata['help']} [env {env_var(spec.name)}; default {default!s}]",
            **({"nargs": "?", "const": True} if yes_no else {}),
        )
    return parser


TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def parse_bool(text: str) -> bool:
    """A yes/no flag or variable: 1/0, true/false, yes/no, on/off (any case); ValueError otherwise."""
    word = text.strip().lower()
    if word not in TRUE_WORDS | FALSE_WORDS:
        raise ValueError(f"expected yes or no (1/0, true/false, on/off), got {text!r}")
    return word in TRUE_WORDS


def positive(kind: type[float] | type[int], *, zero_ok: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number above 0 (or at least 0), else a usage error naming the flag."""

    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
            raise argparse.ArgumentTypeError(f"must be {'at least' if zero_ok else 'above'} 0, got {text!r}")
        return value

    convert.__name__ = kind.__name__
    return convert


def http_url(text: str) -> str:
    """An argparse type: a jobq server's http(s) base URL (``jobq.sdk.client.check_url``), else a usage error."""
    try:
        return check_url(text)
    except BadUrl as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_value(spec: Field[Any], text: str) -> Any:
    """Turn a flag's or variable's text into the field's value; ValueError says what was wrong."""
    kind = type(spec.default)
    value: Any
    if kind is bool:
        value = parse_bool(text)
    elif kind is tuple:
        value = tuple(part.strip() for part in text.split(",") if part.strip())
    elif kind is int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"expected a whole number, got {text!r}") from None
    elif kind is float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"expected a number, got {text!r}") from None
    else:
        value = text.strip().lower() if spec.metadata["choices"] else text
    problem = _out_of_range(spec, value)
    if problem:
        raise ValueError(problem)
    return value


def _argument_type(spec: Field[Any]) -> Any:
    """An argparse ``type`` for a field: its parser, reporting errors the way argparse expects."""

    def convert(text: str) -> Any:
        try:
            return parse_value(spec, text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = spec.name
    return convert


def _out_of_range(spec: Field[Any], value: Any) -> str | None:
    """Why ``value`` is not allowed for this field, or None if it is."""
    meta = spec.metadata
    choices = meta["choices"]
    if choices and value not in choices:
        return f"must be one of {', '.join(choices)}, got {value!r}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value!r}"
    if isinstance(value, int | float):
        if meta["at_least"] is not None and value < meta["at_least"]:
            return f"must be at least {meta['at_least']:g}, got {value!r}"
        if meta["above"] is not None and value <= meta["above"]:
            return f"must be above {meta['above']:g}, got {value!r}"
        if meta["at_most"] is not None and value > meta["at_most"]:
            return f"must be at most {meta['at_most']:g}, got {value!r}"
    if isinstance(value, str) and not choices and not meta["may_be_empty"] and not value.strip():
        return "must not be empty"
    return None
