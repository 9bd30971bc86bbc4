"""Bearer-token authentication for the jobq.v1 services (health and reflection stay open to probes)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

PROTECTED_PREFIX = "/jobq.v1."
UNAUTHENTICATED_MESSAGE = "Unauthorized: send the metadata 'authorization: Bearer <token>' with the server's token"


class BearerToken(grpc.aio.ServerInterceptor):
    """Refuses jobq.v1 calls without ``authorization: Bearer <token>`` metadata: UNAUTHENTICATED."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(PROTECTED_PREFIX):
            return handler
        if self.authorized(handler_call_details.invocation_metadata):
            return handler
        return refusal(handler)

    def authorized(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> bool:
        """Whether the call's metadata carries the token (compared in constant time)."""
        for key, value in metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else value
                return hmac.compare_digest(given, self._expected)
        return False


async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
    await context.abort(
        grpc.StatusCode.UNAUTHENTICATED,
        UNAUTHENTICATED_MESSAGE,
        (("jobq-error", "Unauthorized"), ("www-authenticate", "Bearer")),
    )


def refusal(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that answers UNAUTHENTICATED."""
    make = grpc.unary_stream_rpc_method_handler if handler.response_streaming else grpc.unary_unary_rpc_method_handler
    return make(
        refuse, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )
