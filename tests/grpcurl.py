"""A stand-in for grpcurl, so the README's grpcurl examples run in tests without it.

grpcurl is not a Python package and the tests run without a network, so tests/test_readme.py
puts this on PATH as ``grpcurl``. It does what grpcurl does for the calls the docs show, the
same way: every descriptor comes from the server's reflection service (no generated code, no
proto file), requests are parsed from ``-d`` JSON (proto or JSON field names), and answers are
printed as grpcurl 1.9.3 prints them (read from its source and jhump/protoreflect 1.17's dynamic
messages): a message's fields in field-number order, unset ones left out, compacted and
re-indented by two spaces; a field's key is its ``json_name`` when the served descriptor has one
and its proto name when not, which is why jobq's answers print as ``max_attempts``, not
``maxAttempts`` (protoc's Python descriptors, which reflection serves, carry no ``json_name``).
``describe`` prints methods sorted, types fully qualified. Errors go to stderr as ``ERROR:`` /
``Code:`` / ``Message:``, with grpcurl's exit code (64 + the status code).

    grpcurl [-plaintext] [-H 'name: value']... [-d JSON] ADDRESS list [SERVICE]
    grpcurl [-plaintext] ADDRESS describe SERVICE
    grpcurl [-plaintext] [-H 'name: value']... [-d JSON] ADDRESS SERVICE/METHOD
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory, struct_pb2, timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

DEADLINE = 60.0  # grpcurl sets none; a stand-in in a test should not hang
WELL_KNOWN = {struct_pb2.DESCRIPTOR.name, timestamp_pb2.DESCRIPTOR.name}
STATUS_OFFSET = 64  # grpcurl exits with this plus the status code


class Reflection:
    """The server's own description of itself, as grpcurl reads it."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        self.protos: dict[str, descriptor_pb2.FileDescriptorProto] = {}
        self.pool = descriptor_pool.DescriptorPool()

    def ask(self, **request: str) -> reflection_pb2.ServerReflectionResponse:
        [answer] = list(self.stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(**request)])))
        if answer.HasField("error_response"):
            raise LookupError(answer.error_response.error_message)
        return answer

    def services(self) -> list[str]:
        return sorted(s.name for s in self.ask(list_services="").list_services_response.service)

    def load(self, symbol: str) -> None:
        """Add the file defining ``symbol`` and every file it imports to the pool, as served."""
        answer = self.ask(file_containing_symbol=symbol)
        for raw in answer.file_descriptor_response.file_descriptor_proto:
            proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
            self.protos.setdefault(proto.name, proto)
        for name in list(self.protos):
            self._add(name)

    def _add(self, name: str) -> None:
        try:
            self.pool.FindFileByName(name)
            return
        except KeyError:
            pass
        proto = self.protos.get(name)
        if proto is None:
            if name not in WELL_KNOWN:  # the server did not send it: ask for it by name, as grpcurl does
                raw = self.ask(file_by_filename=name).file_descriptor_response.file_descriptor_proto[0]
                proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
            else:
                proto = descriptor_pb2.FileDescriptorProto()
                {s.DESCRIPTOR.name: s for s in (struct_pb2, timestamp_pb2)}[name].DESCRIPTOR.CopyToProto(proto)
            self.protos[name] = proto
        for dependency in proto.dependency:
            self._add(dependency)
        self.pool.Add(proto)

    def json_names(self) -> dict[str, str]:
        """Each field's key in grpcurl's JSON, by full field name: json_name where served, else the proto name."""
        names = {}
        for proto in self.protos.values():
            stack = [(f"{proto.package}.{m.name}" if proto.package else m.name, m) for m in proto.message_type]
            while stack:
                prefix, message = stack.pop()
                for field in message.field:
                    names[f"{prefix}.{field.name}"] = field.json_name if field.HasField("json_name") else field.name
                stack.extend((f"{prefix}.{nested.name}", nested) for nested in message.nested_type)
        return names


def go_number(value: float) -> int | float:
    """A double as Go's JSON writes it: a whole number without a fraction."""
    return int(value) if math.isfinite(value) and value == int(value) else value


def sort_keys(value: Any) -> Any:
    """JSON held in google.protobuf.Value/Struct: Go writes object keys sorted, and whole numbers whole."""
    if isinstance(value, dict):
        return {key: sort_keys(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [sort_keys(item) for item in value]
    if isinstance(value, float):
        return go_number(value)
    return value


def to_json(message: Any, names: dict[str, str]) -> Any:
    """A message as grpcurl writes it (see the module docstring)."""
    full_name = message.DESCRIPTOR.full_name
    if full_name.startswith("google.protobuf."):
        return sort_keys(json_format.MessageToDict(message))
    out: dict[str, Any] = {}
    for field, value in message.ListFields():  # set fields only, in field-number order
        key = names.get(field.full_name, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[key] = {str(k): scalar(value_field, value[k], names) for k in sorted(value)}
        elif field.is_repeated:
            out[key] = [scalar(field, item, names) for item in value]
        else:
            out[key] = scalar(field, value, names)
    return out


def scalar(field: FieldDescriptor, value: Any, names: dict[str, str]) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if field.message_type.full_name == "google.protobuf.Value" and value.WhichOneof("kind") == "null_value":
            return None
        return to_json(value, names)
    if field.type == FieldDescriptor.TYPE_ENUM:
        number = field.enum_type.values_by_number.get(value)
        return number.name if number is not None else value
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return go_number(value)
    if field.type in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64):
        return str(value)
    return value


def status_name(code: grpc.StatusCode) -> str:
    """Go's name of a status code: PERMISSION_DENIED is PermissionDenied."""
    return "".join(part.capitalize() for part in code.name.split("_"))


def describe(reflection: Reflection, symbol: str) -> str:
    """``describe SERVICE``, as grpcurl prints it (its printer sorts methods and qualifies every type)."""
    reflection.load(symbol)
    service = reflection.pool.FindServiceByName(symbol)
    lines = [f"{symbol} is a service:", f"service {service.name} {{"]
    for method in sorted(service.methods, key=lambda m: m.name):
        proto = descriptor_pb2.MethodDescriptorProto()
        method.CopyToProto(proto)
        request = ("stream " if proto.client_streaming else "") + f".{method.input_type.full_name}"
        answer = ("stream " if proto.server_streaming else "") + f".{method.output_type.full_name}"
        lines.append(f"  rpc {method.name} ( {request} ) returns ( {answer} );")
    lines.append("}")
    return "\n".join(lines)


def invoke(channel: grpc.Channel, reflection: Reflection, target: str, data: str, headers: list[str]) -> int:
    service_name, _, method_name = target.replace("/", ".").rpartition(".")
    reflection.load(service_name)
    method = reflection.pool.FindServiceByName(service_name).FindMethodByName(method_name)
    request_class = message_factory.GetMessageClass(method.input_type)
    answer_class = message_factory.GetMessageClass(method.output_type)
    request = request_class()
    if data:
        json_format.Parse(data, request)
    metadata = [(name.strip().lower(), value.strip()) for name, _, value in (h.partition(":") for h in headers)]
    proto = descriptor_pb2.MethodDescriptorProto()
    method.CopyToProto(proto)
    path = f"/{service_name}/{method_name}"
    names = reflection.json_names()
    options: dict[str, Any] = {
        "request_serializer": request_class.SerializeToString,
        "response_deserializer": answer_class.FromString,
    }
    try:
        if proto.server_streaming:
            for answer in channel.unary_stream(path, **options)(request, metadata=metadata, timeout=DEADLINE):
                print(json.dumps(to_json(answer, names), indent=2), flush=True)
        else:
            answer = channel.unary_unary(path, **options)(request, metadata=metadata, timeout=DEADLINE)
            print(json.dumps(to_json(answer, names), indent=2))
    except grpc.RpcError as error:
        sys.stdout.flush()
        print(f"ERROR:\n  Code: {status_name(error.code())}\n  Message: {error.details()}", file=sys.stderr)
        return STATUS_OFFSET + error.code().value[0]
    return 0


def main(argv: list[str]) -> int:
    headers: list[str] = []
    data = ""
    args = list(argv)
    while args and args[0].startswith("-"):
        flag = args.pop(0)
        if flag == "-plaintext":
            continue
        if flag == "-H":
            headers.append(args.pop(0))
        elif flag == "-d":
            data = args.pop(0)
        else:
            print(f"grpcurl stand-in: {flag} is not supported (tests/grpcurl.py)", file=sys.stderr)
            return 2
    address, *rest = args
    with grpc.insecure_channel(address) as channel:
        reflection = Reflection(channel)
        if rest == ["list"]:
            print("\n".join(reflection.services()))
            return 0
        if len(rest) == 2 and rest[0] == "describe":
            print(describe(reflection, rest[1]))
            return 0
        if len(rest) == 1:
            return invoke(channel, reflection, rest[0], data, headers)
    print(f"grpcurl stand-in: cannot run {argv}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
