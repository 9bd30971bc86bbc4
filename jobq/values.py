"""What a job may carry: JSON values and texts made storable at the boundary.

Shared by the server and the SDK (it imports no server module). Everything a
handler hands back (a result, an error text, a log line, a progress note) goes
through one of these before it reaches any store, so one bad value can never
make a write fail or a job unreadable.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic_core import PydanticSerializationError, from_json, to_json

MAX_ERROR_CHARS = 10_000  # the longest error text an attempt keeps
MAX_TRACEBACK_CHARS = 8_000  # the longest traceback an attempt keeps (its last lines)
MAX_LOG_CHARS = 8_000  # the longest log line a job keeps
MAX_NOTE_CHARS = 1_000  # the longest progress note a job keeps

PLAIN_JSON = (str, bool, int, type(None))


def json_value(value: Any) -> Any:
    """``value`` as stored JSON will give it back; ValueError if it has no faithful JSON form.

    Refuses what JSON cannot carry (objects, NaN and infinities) and nesting too deep
    to be read back, so a handler's result can never make a job unreadable. Strings
    that are not valid Unicode (lone surrogates) are refused too.
    """
    if isinstance(value, PLAIN_JSON) and (type(value) is not str or value.isascii()):
        return value
    if type(value) is float and math.isfinite(value):
        return value
    try:
        return from_json(to_json(value), allow_inf_nan=False)
    except (PydanticSerializationError, ValueError) as exc:
        detail = str(exc).splitlines()[0]
        raise ValueError(
            f"not plain JSON (objects, NaN, infinities and nesting past 200 levels are not): {detail}"
        ) from None


def copy_json(value: Any) -> Any:
    """A deep copy of a JSON value (a handler's own payload): new dicts and lists, the same scalars."""
    kind = type(value)
    if kind is dict:
        return {key: copy_json(item) if type(item) in _CONTAINERS else item for key, item in value.items()}
    if kind is list:
        return [copy_json(item) if type(item) in _CONTAINERS else item for item in value]
    return value  # str, int, float, bool, None: immutable


_CONTAINERS = (dict, list)


def storable_text(value: Any, limit: int, *, keep: str = "head") -> str:
    """``value`` as text any store can hold: a string of valid UTF-8, at most ``limit`` characters.

    A non-string becomes its JSON text (or its ``str``); lone surrogates (a file name
    that is not UTF-8, from ``os.listdir``) become ``\\udcxx`` escapes; a text too long
    keeps its head (or, with ``keep="tail"``, its tail, as a traceback's last lines
    matter most), marked with ``…``.
    """
    if not isinstance(value, str):
        try:
            value = to_json(value, serialize_unknown=True).decode()
        except (PydanticSerializationError, ValueError):
            value = str(value)
    if not value.isascii():
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(value) <= limit:
        return value
    if keep == "tail":
        return "…" + value[len(value) - limit + 1 :]
    return value[: limit - 1] + "…"
