"""The Faktory Work Protocol on the wire: command lines in, RESP replies out, and the password hash.

A client sends one command per line (``VERB args``, ending in CRLF); the server answers
each with one RESP value: ``+OK``, ``-ERR why``, a bulk string (``$len`` then the bytes)
or a null bulk string (``$-1``). The greeting JSON is compact: one widely used client
splits it on the first space.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from typing import Any

OK = b"+OK\r\n"
NULL = b"$-1\r\n"
PROTOCOL_VERSION = 2
ITERATIONS = 1  # Faktory asks for 4,000-8,095 rounds; a jobq token (16+ random characters) needs no stretching,
# and each HELLO is checked against every token, on the event loop


class ProtocolError(Exception):
    """A command jobq refuses: its text goes back to the client as ``-ERR <text>``."""


def error(text: str) -> bytes:
    """A RESP error reply; line breaks in the text become spaces, so the reply stays one line."""
    return b"-ERR " + " ".join(text.split()).encode("utf-8", "replace") + b"\r\n"


def bulk(data: bytes) -> bytes:
    """A RESP bulk string reply."""
    return b"$%d\r\n%s\r\n" % (len(data), data)


def bulk_json(value: Any) -> bytes:
    """A JSON value as a bulk string reply."""
    return bulk(dumps(value))


def dumps(value: Any) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def split_command(line: bytes) -> tuple[str, str]:
    """``(VERB, arguments)`` of a command line without its line ending."""
    text = line.decode("utf-8")  # UnicodeDecodeError is a ValueError: the caller refuses the line
    verb, _, arguments = text.partition(" ")
    return verb.upper(), arguments


def parse_json_object(arguments: str, what: str) -> dict[str, Any]:
    """The JSON object a command carries; ProtocolError naming the command when it is not one."""
    try:
        value = json.loads(arguments)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"{what} needs a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} needs a JSON object, not {type(value).__name__}")
    return value


# -- the handshake ---------------------------------------------------------------
class Challenge:
    """The ``HI`` a connection starts with, and the check of the ``HELLO`` that answers it.

    With passwords (jobq tokens), ``HI`` carries a salt and an iteration count; a client proves
    it knows a token by sending ``pwdhash``: SHA-256 applied ``i`` times to ``token + salt``
    (once, for a client that sends no protocol version).
    """

    def __init__(self, protected: bool) -> None:
        self.protected = protected
        self.salt = secrets.token_hex(8)
        self.iterations = ITERATIONS

    def greeting(self) -> bytes:
        hi: dict[str, Any] = {"v": PROTOCOL_VERSION}
        if self.protected:
            hi |= {"i": self.iterations, "s": self.salt}
        return b"+HI " + dumps(hi) + b"\r\n"

    def iterations_for(self, hello: dict[str, Any]) -> int:
        """How many rounds the client hashed with: one when it sends no protocol version (as Faktory does)."""
        return self.iterations if isinstance(hello.get("v"), int) and hello["v"] >= 2 else 1

    def matches(self, token: str, pwdhash: str, iterations: int) -> bool:
        """Whether ``pwdhash`` proves knowledge of ``token`` (compared in constant time)."""
        return hmac.compare_digest(
            password_hash(token, self.salt, iterations), pwdhash.lower().encode("ascii", "replace")
        )


def password_hash(password: str, salt: str, iterations: int) -> bytes:
    """The hex of SHA-256 applied ``iterations`` times to ``password + salt``, as ASCII bytes."""
    digest = (password + salt).encode()
    for _ in range(iterations):
        digest = hashlib.sha256(digest).digest()
    return digest.hex().encode()
