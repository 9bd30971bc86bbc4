"""Log formats: readable text lines (the default) or JSON lines, for the server and the remote worker.

Both formats carry the same facts. Extra fields a log call passes (``extra={"job_id": ...}``)
are appended to a text line as ``key=value`` and become keys of a JSON line::

    2026-11-23T19:40:53.797Z WARNING jobq.service: job 7 (fail) processing -> failed: boom job_id=7 queue=default
    {"time": "2026-11-23T19:40:53.797Z", "level": "WARNING", "logger": "jobq.service", "message": "...", "job_id": "7"}

A JSON line is one object with no raw newline in it; a traceback travels as its ``exception`` key.

Nothing here imports the server (``jobq.logs`` adds the HTTP access log on top), so the
remote worker, ``jobq.sdk.remote_worker``, logs in the same formats without it.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import IO, Any

from jobq.job import rfc3339

FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a log call added with ``extra=``."""
    return {key: value for key, value in record.__dict__.items() if key not in _STANDARD and not key.startswith("_")}


def timestamp(record: logging.LogRecord) -> str:
    """The record's time in RFC 3339 UTC with milliseconds, as the API renders times."""
    return rfc3339(record.created) or ""


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value ...``, then any traceback on the lines below."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        fields = extra_fields(record)
        if fields:
            line += " " + " ".join(f"{key}={_text_value(value)}" for key, value in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def _text_value(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if not text or any(c.isspace() or c in "\"'=" for c in text) else text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the extra fields, and any exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def formatter(log_format: str) -> logging.Formatter:
    """The formatter for ``--log-format``: ``text`` or ``json``."""
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {log_format!r}")
    return JsonFormatter() if log_format == "json" else TextFormatter()


def setup(level: str = "info", log_format: str = "text", stream: IO[str] | None = None) -> logging.Handler:
    """Send jobq's log records at ``level`` and above to ``stream`` (stderr) in ``log_format``.

    Libraries log at INFO and above even when jobq logs at DEBUG, so ``--log-level debug``
    shows jobq's state changes without grpc's and asyncio's internals. Replaces the root
    logger's handlers, so calling it again switches format. Returns the handler.
    """
    jobq_level = logging.getLevelName(level.upper())
    if not isinstance(jobq_level, int):
        raise ValueError(f"unknown log level {level!r}")
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(jobq_level, logging.INFO))
    logging.getLogger("jobq").setLevel(jobq_level)
    logging.captureWarnings(True)
    return handler
