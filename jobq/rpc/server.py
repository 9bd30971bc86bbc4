"""The gRPC server: jobq.v1 services, standard health checking and reflection, on the running event loop.

It serves the same :class:`~jobq.service.JobService` as the HTTP app, so both
APIs share one store, one worker pool and one set of rules::

    grpc_server = await start_grpc_server(app[SERVICE], config.host, config.grpc_port)
    ...
    await grpc_server.begin_shutdown()  # on SIGINT/SIGTERM: health says NOT_SERVING
    await service.drain()
    await grpc_server.stop(grace=5.0)  # refuse new calls, let running ones finish
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

import grpc
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from jobq.auth import TokenBook
from jobq.metrics import Metrics
from jobq.rpc.auth import Authorizer
from jobq.rpc.gen import jobq_pb2 as pb
from jobq.rpc.intercept import MeasuredCalls
from jobq.rpc.servicers import AdminServicer, JobServicer, WorkerServicer
from jobq.rpc.status import lenient
from jobq.service import JobService

log = logging.getLogger("jobq.rpc")

JOBQ_SERVICES = tuple(service.full_name for service in pb.DESCRIPTOR.services_by_name.values())
SERVICE_NAMES = (*JOBQ_SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME)
DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024  # as the HTTP API's default body limit


@dataclass(slots=True)
class GrpcServer:
    """A running gRPC server: its bound port, and how to stop it."""

    server: grpc.aio.Server
    health: health.aio.HealthServicer
    port: int

    async def begin_shutdown(self) -> None:
        """Report NOT_SERVING from now on (for load balancers), while calls are still served."""
        await self.health.enter_graceful_shutdown()

    async def stop(self, grace: float) -> None:
        """Refuse new calls and give running ones ``grace`` seconds before cancelling them."""
        await self.begin_shutdown()
        await self.server.stop(grace)
        log.info("gRPC server on port %d stopped", self.port)


def add_service(server: grpc.aio.Server, servicer: object, name: str) -> None:
    """Register a jobq.v1 service as its generated ``add_*Servicer_to_server`` does, with lenient decoding.

    A request that does not decode reaches the servicer as ``Undecodable`` and is answered
    INVALID_ARGUMENT, where gRPC itself would answer UNKNOWN and name the parser's exception.
    """
    descriptor = pb.DESCRIPTOR.services_by_name[name]
    handlers = {method.name: method_handler(servicer, method) for method in descriptor.methods}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(descriptor.full_name, handlers),))
    server.add_registered_method_handlers(descriptor.full_name, handlers)


def method_handler(servicer: object, method: MethodDescriptor) -> grpc.RpcMethodHandler:
    """The handler for one RPC: the servicer's method, a lenient request parser, the response serializer."""
    request, response = getattr(pb, method.input_type.name), getattr(pb, method.output_type.name)
    make = grpc.unary_stream_rpc_method_handler if method.server_streaming else grpc.unary_unary_rpc_method_handler
    return make(
        getattr(servicer, method.name),
        request_deserializer=lenient(request),
        response_serializer=response.SerializeToString,
    )


def listen_address(host: str, port: int) -> str:
    """``host:port`` for gRPC, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


async def start_grpc_server(
    service: JobService,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    tokens: TokenBook | None = None,
    metrics: Metrics | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> GrpcServer:
    """Serve jobq.v1, health and reflection on ``host:port`` (0 picks a free port) in the running loop.

    ``tokens`` requires ``authorization: Bearer <token>`` metadata of the right role on
    jobq.v1 calls (see jobq/rpc/auth.py); ``metrics`` counts and times every call.
    Raises OSError (``strerror`` says why) when the address cannot be bound.
    """
    interceptors: list[grpc.aio.ServerInterceptor] = []
    if metrics is not None:
        interceptors.append(MeasuredCalls(metrics.grpc_observe))  # first: it also counts refused calls
    if tokens:
        interceptors.append(Authorizer(tokens))
    server = grpc.aio.server(
        interceptors=interceptors or None,
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),  # a busy port is an error, not a port shared with another process
        ],
    )
    add_service(server, JobServicer(service), "JobService")
    add_service(server, WorkerServicer(service), "WorkerService")
    add_service(server, AdminServicer(service), "AdminService")
    health_servicer = await add_health(server)
    reflection.enable_server_reflection(SERVICE_NAMES, server)
    address = listen_address(host, port)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        raise bind_error(host, port) from None
    await server.start()
    log.info("gRPC serving on %s", listen_address(host, bound))
    return GrpcServer(server, health_servicer, bound)


def bind_error(host: str, port: int) -> OSError:
    """Why ``host:port`` cannot be bound, found by trying it with a plain socket (gRPC's error does not say)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.bind((host.strip("[]"), port))
    except OSError as exc:
        return exc
    return OSError(f"gRPC cannot listen on {listen_address(host, port)}")


async def add_health(server: grpc.aio.Server) -> health.aio.HealthServicer:
    """The standard health service, SERVING for the whole server ("") and for each jobq.v1 service."""
    servicer = health.aio.HealthServicer()
    for name in ("", *JOBQ_SERVICES):
        await servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return servicer
