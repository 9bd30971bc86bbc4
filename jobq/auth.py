"""Bearer tokens and roles: who may call which HTTP route and gRPC method.

Each token belongs to a named principal with one role:

* ``client`` enqueues jobs and reads, lists, waits on and cancels its own jobs;
* ``worker`` leases jobs and heartbeats, completes, fails, releases and reports on them;
* ``admin`` may do everything, including pausing, resuming and clearing queues and
  re-running failed or dead jobs, and sees every client's jobs.

Tokens come from the environment (``JOBQ_TOKEN``, ``JOBQ_WORKER_TOKEN``,
``JOBQ_ADMIN_TOKEN``: one principal each, named after its role) and from a tokens
file (``--tokens-file``), a JSON list of ``{"name", "role", "token"}`` objects.
They never come from flags, so they do not show in ``ps``.

A presented token's SHA-256 digest is compared with every known token's digest
using :func:`hmac.compare_digest`, without stopping at a match: the digests all
have one length, so the time taken says nothing about which token, how much of
one, or how long a one was right. The tokens are also kept as given, in this
process only: a Faktory client proves one by a salted hash of it (``proven``).

Each HTTP handler declares who may call it with :func:`requires` (or :func:`public`);
:func:`authorize` enforces it, in the app's middleware (jobq/app.py). A handler that declares
nothing is for admins only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from aiohttp import web

from jobq.errors import Forbidden, JobqError, Unauthorized

log = logging.getLogger("jobq.auth")

MIN_TOKEN_LENGTH = 16
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9._~+/-]+=*")  # RFC 6750 b64token: safe in a header as it is
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}")
NAME_RULE = "1-128 letters, digits or _ . : @ - (starting with a letter or digit)"


class Role(StrEnum):
    """What a token may do (admin may do everything)."""

    CLIENT = "client"
    WORKER = "worker"
    ADMIN = "admin"


ENV_TOKENS: Mapping[str, Role] = {
    "JOBQ_TOKEN": Role.CLIENT,
    "JOBQ_WORKER_TOKEN": Role.WORKER,
    "JOBQ_ADMIN_TOKEN": Role.ADMIN,
}

ANY_ROLE = frozenset(Role)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a token belongs to: a name (recorded as the owner of the jobs it enqueues) and a role."""

    name: str
    role: Role

    def may(self, roles: frozenset[Role]) -> bool:
        """Whether this principal may call something open to ``roles`` (an admin may call anything)."""
        return self.role is Role.ADMIN or self.role in roles

    @property
    def scope(self) -> str | None:
        """The owner whose jobs this principal sees: its own name, or None (every job) for an admin."""
        return None if self.role is Role.ADMIN else self.name

    @property
    def run_scope(self) -> str | None:
        """The owner whose jobs' parents this principal may read (what a running job reads): a client its own
        jobs', a worker or an admin any job's (None), as a worker runs any client's jobs."""
        return self.name if self.role is Role.CLIENT else None


SESSION_COOKIE = "jobq_session"  # the dashboard's login: a token, in an HttpOnly, SameSite=Strict cookie
SESSION_PATHS = frozenset({"/ui/login", "/ui/logout"})
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

MISSING_TOKEN = "send 'Authorization: Bearer <token>' with a jobq token"
WRONG_TOKEN = "the bearer token is not one jobq knows"


def refusal(principal: Principal | None, roles: frozenset[Role], what: str, *, presented: bool) -> JobqError:
    """The error for a call ``principal`` may not make: 401 without a known token, 403 for the wrong role.

    ``what`` names the call, ``roles`` who may make it, ``presented`` whether a bearer token was sent at all.
    """
    if principal is None:
        return Unauthorized(WRONG_TOKEN if presented else MISSING_TOKEN, invalid=presented)
    allowed = sorted({*roles, Role.ADMIN})
    needed = " or ".join([", ".join(allowed[:-1]), allowed[-1]] if len(allowed) > 1 else allowed)
    return Forbidden(f"{what} needs a token with role {needed}; {principal.name!r} has role {principal.role}")


# -- the token book --------------------------------------------------------
class TokenError(ValueError):
    """A token source jobq cannot use (says which and why)."""


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value (scheme in any case), or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


class TokenBook:
    """Every token jobq accepts, with whom each belongs to."""

    def __init__(self, entries: Iterable[tuple[str, Principal]]) -> None:
        self._entries: list[tuple[bytes, Principal]] = []
        self._tokens: list[tuple[str, Principal]] = []  # as given: a Faktory client proves one by a salted hash
        names: set[str] = set()
        tokens: set[str] = set()
        for token, principal in entries:
            where = f"the token of {principal.name!r}"
            if not NAME_PATTERN.fullmatch(principal.name):  # a job's owner: answers carry it as it is
                raise TokenError(f"{principal.name!r} is not a token name: {NAME_RULE}")
            check_token(token, where)
            if principal.name in names:
                raise TokenError(f"two tokens are named {principal.name!r}; each name must be unique")
            if token in tokens:
                raise TokenError(f"{where} is also another principal's token; each token must be unique")
            names.add(principal.name)
            tokens.add(token)
            self._entries.append((token_digest(token), principal))
            self._tokens.append((token, principal))

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def principals(self) -> list[Principal]:
        return [principal for _, principal in self._entries]

    def authenticate(self, header: str | None) -> Principal | None:
        """The principal an ``Authorization`` header's bearer token belongs to, or None.

        The token is compared with every known one in constant time; the loop
        never stops early, so how long it takes does not depend on which token matched.
        """
        token = bearer_token(header)
        if token is None:
            return None
        given = token_digest(token)
        found = None
        for known, principal in self._entries:
            if hmac.compare_digest(given, known):
                found = principal
        return found

    def proven(self, proves: Callable[[str], bool]) -> Principal | None:
        """The principal whose token ``proves(token)`` accepts, or None (a Faktory client's password hash).

        Every token is tried, without stopping at a match, as in ``authenticate``.
        """
        found = None
        for token, principal in self._tokens:
            if proves(token):
                found = principal
        return found

    @classmethod
    def load(cls, environ: Mapping[str, str], tokens_file: str = "") -> TokenBook:
        """The tokens of ``JOBQ_TOKEN``, ``JOBQ_WORKER_TOKEN``, ``JOBQ_ADMIN_TOKEN`` and the tokens file."""
        entries = [
            (environ[variable].strip(), Principal(role.value, role))
            for variable, role in ENV_TOKENS.items()
            if environ.get(variable, "").strip()
        ]
        if tokens_file:
            entries += read_tokens_file(tokens_file)
        return cls(entries)

    def describe(self) -> str:
        """``2 tokens (client: 1, worker: 1, admin: 0)`` for the startup log; never the tokens."""
        counts = {role: sum(1 for p in self.principals if p.role is role) for role in Role}
        return f"{len(self)} tokens ({', '.join(f'{role}: {n}' for role, n in counts.items())})"


def token_digest(token: str) -> bytes:
    """The SHA-256 of a token: what is kept and compared, so every comparison is of equal length."""
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()  # known tokens are ASCII


def check_token(token: str, where: str) -> None:
    """Refuse a token that is short, or that cannot travel in a header as it is."""
    if len(token) < MIN_TOKEN_LENGTH:
        raise TokenError(
            f"{where} is {len(token)} characters long; use at least {MIN_TOKEN_LENGTH} "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if not TOKEN_PATTERN.fullmatch(token):
        raise TokenError(f"{where} may hold only letters, digits and - . _ ~ + / (then = padding)")


def read_tokens_file(path: str) -> list[tuple[str, Principal]]:
    """The entries of a tokens file: a JSON list of ``{"name": ..., "role": ..., "token": ...}``."""
    try:
        with open(path, encoding="utf-8") as file:
            mode = os.fstat(file.fileno()).st_mode
            data = json.load(file)
    except OSError as exc:
        raise TokenError(f"cannot read the tokens file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise TokenError(f"the tokens file {path} is not valid JSON: {exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the tokens file %s can be read by other users; chmod 600 it", path)
    if not isinstance(data, list):
        raise TokenError(f"the tokens file {path} must hold a JSON list of {{name, role, token}} objects")
    return [_file_entry(path, index, item) for index, item in enumerate(data)]


def _file_entry(path: str, index: int, item: Any) -> tuple[str, Principal]:
    where = f"{path} entry {index}"
    if not isinstance(item, dict) or set(item) != {"name", "role", "token"}:
        raise TokenError(f"{where} must be an object with exactly the keys name, role and token")
    name, role, token = item["name"], item["role"], item["token"]
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise TokenError(f"{where}: name must be {NAME_RULE}")
    if role not in set(Role):
        raise TokenError(f"{where}: role must be one of {', '.join(Role)}, not {role!r}")
    if not isinstance(token, str):
        raise TokenError(f"{where}: token must be a string")
    check_token(token, f"{where} ({name!r})")
    return token, Principal(name, Role(role))


# -- who may call what -------------------------------------------------------
H = TypeVar("H", bound=Callable[..., Any])
ACCESS_ATTRIBUTE = "jobq_access"
PUBLIC = None  # the access of a route anyone may call


def requires(*roles: Role) -> Callable[[H], H]:
    """Mark an HTTP handler as callable with a token of one of ``roles`` (and always with an admin token)."""
    if not roles:
        raise ValueError("requires() needs at least one role; use @public for an open route")

    def mark(handler: H) -> H:
        setattr(handler, ACCESS_ATTRIBUTE, frozenset(roles))
        return handler

    return mark


def public(handler: H) -> H:
    """Mark an HTTP handler as callable without a token (liveness probes)."""
    setattr(handler, ACCESS_ATTRIBUTE, PUBLIC)
    return handler


def access_of(handler: Any) -> frozenset[Role] | None:
    """Who may call a handler: its roles, or None when it is public. Undeclared handlers are admin-only."""
    return getattr(handler, ACCESS_ATTRIBUTE, frozenset({Role.ADMIN}))


PRINCIPAL = web.RequestKey[Principal | None]("principal")
"""Who made a request: set by the app's middleware before the route runs (None without tokens, on a
public route, or for a token jobq does not know)."""


def route_template(request: web.BaseRequest) -> str:
    """The matched route's template (``/jobs/{id}``), never the raw path.

    ``(unmatched)`` for a path no route serves; ``(unparsed)`` for a request aiohttp could
    not parse, which never reached the router.
    """
    try:
        match = request.match_info  # type: ignore[attr-defined]
    except (AttributeError, AssertionError):  # aiohttp asserts on a request it never routed
        return "(unparsed)"
    resource = match.route.resource if match is not None else None
    return resource.canonical if resource is not None else "(unmatched)"


def principal_of(request: web.Request) -> Principal | None:
    """Who made an HTTP request (None when jobq runs without tokens, or on a public route)."""
    return request.get(PRINCIPAL)


def authorize(tokens: TokenBook | None, request: web.Request) -> None:
    """Refuse a request whose token is missing or unknown (401) or whose role may not call the route (403).

    Without ``tokens`` every route is open. A request no route serves (404, 405) has nothing to
    protect, nor has a public route. The caller's principal is kept on the request (``principal_of``;
    None when there is none), refused or not: the access log names it.
    """
    request[PRINCIPAL] = None
    if tokens is None:
        return
    match = request.match_info
    if match.http_exception is not None:
        return
    roles = access_of(match.handler)
    if roles is PUBLIC:
        return
    header = credentials(request)
    principal = tokens.authenticate(header)
    if principal is not None:
        request[PRINCIPAL] = principal
        if principal.may(roles):
            return
    raise refusal(
        principal, roles, f"{request.method} {route_template(request)}", presented=bearer_token(header) is not None
    )


def credentials(request: web.BaseRequest) -> str | None:
    """The request's ``Authorization`` header or, without one, the dashboard's session cookie as one."""
    header = request.headers.get("Authorization")
    if header is None and (token := request.cookies.get(SESSION_COOKIE)):
        return f"Bearer {token}"
    return header


def refuse_browser_writes(request: web.BaseRequest, read_only: bool) -> None:
    """Refuse a request that would change something, sent by a browser from another site (CSRF); with a
    read-only dashboard, refuse any such request a browser sends, but logging in and out of it.

    Browsers say where a request comes from (``Sec-Fetch-Site``, or at least ``Origin``); API
    clients send neither, and are not affected.
    """
    if request.method not in UNSAFE_METHODS:
        return
    site = request.headers.get("Sec-Fetch-Site")
    origin = request.headers.get("Origin")
    if site in ("cross-site", "same-site") or (site is None and origin is not None and not same_origin(request)):
        raise Forbidden(f"{request.method} from another site is refused: jobq changes nothing for a cross-site request")
    from_browser = site is not None or origin is not None or SESSION_COOKIE in request.cookies
    if read_only and from_browser and request.path not in SESSION_PATHS:
        raise Forbidden("the dashboard is read-only (--ui read-only): it may look, not act")


def same_origin(request: web.BaseRequest) -> bool:
    """Whether the request's ``Origin`` is this server as the browser addressed it (its ``Host``)."""
    origin = request.headers.get("Origin", "")
    _, _, authority = origin.partition("://")
    return bool(authority) and authority.lower() == request.host.lower()


# -- gRPC: the principal of the call being served --------------------------
current_principal: ContextVar[Principal | None] = ContextVar("jobq_principal", default=None)
"""Who made the gRPC call this task serves (None when jobq runs without tokens)."""
