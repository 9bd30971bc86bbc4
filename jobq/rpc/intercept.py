"""Wrapping gRPC method handlers: run each call of an RPC inside a context manager, whatever its shape.

The auth interceptor uses it to make the caller known to the servicer while a call
runs; the metrics interceptor to time each call and read its final status code.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import grpc

Around = Callable[[grpc.aio.ServicerContext], AbstractContextManager[None]]
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


def shape(handler: grpc.RpcMethodHandler) -> tuple[Callable[..., Any], Callable[..., grpc.RpcMethodHandler]]:
    """The handler's behaviour, and the grpc factory that builds a handler of the same shape."""
    if handler.request_streaming and handler.response_streaming:
        return handler.stream_stream, grpc.stream_stream_rpc_method_handler
    if handler.request_streaming:
        return handler.stream_unary, grpc.stream_unary_rpc_method_handler
    if handler.response_streaming:
        return handler.unary_stream, grpc.unary_stream_rpc_method_handler
    return handler.unary_unary, grpc.unary_unary_rpc_method_handler


def wrapped(handler: grpc.RpcMethodHandler, around: Around) -> grpc.RpcMethodHandler:
    """A handler of the same shape whose every call runs inside ``around(context)``."""
    inner, make = shape(handler)
    behavior: Callable[..., Any]
    if inspect.isasyncgenfunction(inner):  # a stream that yields its messages

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with around(context):
                async for response in inner(request, context):
                    yield response

        behavior = stream
    elif inspect.iscoroutinefunction(inner):  # a unary call, or a stream that writes with context.write

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with around(context):
                return await inner(request, context)

        behavior = call
    else:

        def plain(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with around(context):
                return inner(request, context)

        behavior = plain
    return make(
        behavior, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )


def replaced(handler: grpc.RpcMethodHandler, behavior: Callable[..., Any]) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that runs ``behavior`` instead (a refusal)."""
    _, make = shape(handler)
    return make(
        behavior, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )


class MeasuredCalls(grpc.aio.ServerInterceptor):
    """Times every call and reports ``observe(method, code name, seconds)`` when it ends.

    ``method`` is the full name without its leading slash (``jobq.v1.JobService/Enqueue``);
    a call cut short by the client or a deadline counts as ``CANCELLED``.
    """

    def __init__(self, observe: Callable[[str, str, float], None]) -> None:
        self.observe = observe

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method.lstrip("/")
        observe = self.observe

        @contextmanager
        def timed(context: grpc.aio.ServicerContext) -> Iterator[None]:
            started = time.perf_counter()
            code = "UNKNOWN"
            try:
                yield
            except grpc.aio.AbortError:
                code = code_name(context.code(), "UNKNOWN")
                raise
            except (asyncio.CancelledError, GeneratorExit):
                code = "CANCELLED"
                raise
            else:
                code = code_name(context.code(), "OK")
            finally:
                observe(method, code, time.perf_counter() - started)

        return wrapped(handler, timed)


def code_name(code: Any, default: str) -> str:
    """``NOT_FOUND`` for a status code (as grpc reports it: enum, or None when none was set)."""
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        for status in grpc.StatusCode:
            if status.value[0] == code:
                return status.name
    return default
