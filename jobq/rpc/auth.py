"""Bearer tokens and roles for the jobq.v1 services; health and reflection stay open to probes.

The same :class:`~jobq.auth.TokenBook` and role rules as HTTP: every JobService RPC
needs a client token, every WorkerService RPC a worker token, and an admin token
may call anything; an RPC in METHOD_ROLES takes its own roles instead (reading a
queue's limits takes any token, as ``GET /queues/{name}/flow`` does, and so does reading a
job's parents' outcomes, as ``GET /jobs/{id}/parents``). A missing or
unknown token ends the call UNAUTHENTICATED, a token of the wrong role
PERMISSION_DENIED; both carry ``www-authenticate`` and ``jobq-error`` trailing
metadata. While an allowed call runs, its caller is ``jobq.auth.current_principal``
(servicers read it to scope jobs to their owner).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import grpc

from jobq.auth import ANY_ROLE, Principal, Role, TokenBook, bearer_token, current_principal, refusal
from jobq.errors import JobqError
from jobq.rpc.intercept import Continuation, replaced, wrapped
from jobq.rpc.status import status_code, trailing_metadata

PROTECTED_PREFIX = "jobq.v1."
SERVICE_ROLES: Mapping[str, frozenset[Role]] = {
    "jobq.v1.JobService": frozenset({Role.CLIENT}),
    "jobq.v1.WorkerService": frozenset({Role.WORKER}),
}
ADMIN_ONLY = frozenset({Role.ADMIN})  # a jobq.v1 service missing from SERVICE_ROLES
METHOD_ROLES: Mapping[str, frozenset[Role]] = {  # RPCs whose roles are not their service's
    "jobq.v1.AdminService/GetQueueFlow": ANY_ROLE,
    "jobq.v1.JobService/GetParents": ANY_ROLE,  # as GET /jobs/{id}/parents: a worker reads its job's parents
}


def required_roles(method: str) -> frozenset[Role] | None:
    """Who may call a method (``/package.Service/Method``): its roles, or None when it is open."""
    name = method.lstrip("/")
    service = name.partition("/")[0]
    if not service.startswith(PROTECTED_PREFIX):
        return None
    return METHOD_ROLES.get(name) or SERVICE_ROLES.get(service, ADMIN_ONLY)


def authorization(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    """The call's ``authorization`` metadata value, if any."""
    for key, value in metadata or ():
        if key == "authorization":
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return None


@contextmanager
def acting_as(principal: Principal) -> Iterator[None]:
    """Make ``principal`` the caller of the code run inside (``jobq.auth.current_principal``)."""
    token = current_principal.set(principal)
    try:
        yield
    finally:
        current_principal.reset(token)


class Authorizer(grpc.aio.ServerInterceptor):
    """Checks every jobq.v1 call's bearer token and role before the servicer sees it."""

    def __init__(self, tokens: TokenBook) -> None:
        self.tokens = tokens

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        roles = required_roles(method)
        if handler is None or roles is None:
            return handler
        header = authorization(handler_call_details.invocation_metadata)
        principal = self.tokens.authenticate(header)
        if principal is None or not principal.may(roles):
            error = refusal(principal, roles, method.lstrip("/"), presented=bearer_token(header) is not None)
            return replaced(handler, refuser(error))
        return wrapped(handler, lambda context: acting_as(principal))


def refuser(error: JobqError) -> Any:
    """A behaviour that ends any call with ``error``'s status (UNAUTHENTICATED or PERMISSION_DENIED)."""
    metadata = (*trailing_metadata(error), ("www-authenticate", error.headers["WWW-Authenticate"]))

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(status_code(error), f"{error.title}: {error.detail}", metadata)

    return refuse
