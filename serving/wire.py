"""Parse requests that carry invalid UTF-8, and register the services with that parser.

Why: Python protobuf refuses invalid UTF-8 in a proto3 `string` while
parsing. With the generated deserialisers gRPC then answers INTERNAL
("Exception deserializing request!"), logs a traceback, and ends a stream
at the first such message, before any of our code runs. `string` and
`bytes` share one wire format, so the same bytes parse into a *mirror*
message whose `string` fields are `bytes`; there the bad field can be found
and named.

The mirrors are derived from the generated descriptors, once, at import: a
`string` field becomes `bytes`, and a map entry becomes a plain repeated
entry (map keys cannot be `bytes`). tests/test_serving_wire.py holds every
mirror equal to its proto field by field. A valid request costs nothing
extra: it parses with the generated class first, and only a failed parse
tries the mirror.

`add_service` registers a servicer with these parsers. A unary call whose
request did not parse is answered INVALID_ARGUMENT naming the field before
the servicer sees it; a request stream hands the servicer `InvalidRequest`
items, so it can answer each one and go on.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message

_POOL = descriptor_pool.DescriptorPool()
_MIRRORED_FILES: set[str] = set()
# (message full name, field name) of every mirror field that is `string` in the proto.
_WAS_STRING: set[tuple[str, str]] = set()


def _mirror_message(message: descriptor_pb2.DescriptorProto, scope: str) -> None:
    name = f"{scope}.{message.name}" if scope else message.name
    for item in message.field:
        if item.type == FieldDescriptor.TYPE_STRING:
            item.type = FieldDescriptor.TYPE_BYTES
            _WAS_STRING.add((name, item.name))
    if message.options.map_entry:
        message.ClearField("options")  # a repeated entry message: the same wire format, any key type
    for nested in message.nested_type:
        _mirror_message(nested, name)


def _mirror_file(file: FileDescriptor) -> None:
    if file.name in _MIRRORED_FILES:
        return
    for dependency in file.dependencies:
        _mirror_file(dependency)
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    proto.ClearField("service")  # only messages are parsed here
    for message in proto.message_type:
        _mirror_message(message, proto.package)
    _POOL.Add(proto)
    _MIRRORED_FILES.add(file.name)


@functools.cache
def mirror_class(message_class: type[Message]) -> type[Message]:
    """The message class with the same field numbers as `message_class` and `bytes` for every `string`."""
    descriptor: Descriptor = message_class.DESCRIPTOR
    _mirror_file(descriptor.file)
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(descriptor.full_name))


def was_string(mirror_field: FieldDescriptor) -> bool:
    return (mirror_field.containing_type.full_name, mirror_field.name) in _WAS_STRING


@dataclass(frozen=True)
class InvalidRequest:
    """A request that did not parse.

    `bad_fields` maps each field path that is not valid UTF-8 (`text`,
    `messages[2].id`, `inputs[0].name`) to why; `request` is the request with
    those fields' bad bytes replaced by U+FFFD, or None when the bytes are
    not a message of this type at all.
    """

    type_name: str
    bad_fields: dict[str, str] = field(default_factory=dict)
    request: Message | None = None

    def describe(self, prefix: str = "") -> str | None:
        """Why the request (or the part of it under `prefix`, e.g. "messages[2].") cannot be read, or None."""
        if self.request is None:
            return None if prefix else f"request is not a valid {self.type_name} message"
        bad = [(path.removeprefix(prefix), why) for path, why in self.bad_fields.items() if path.startswith(prefix)]
        if not bad:
            return None
        path, why = bad[0]
        more = f" (and {len(bad) - 1} more field{'s' if len(bad) > 2 else ''})" if len(bad) > 1 else ""
        return f"field `{path}` is not valid UTF-8: {why}{more}"


def _repaired(value: bytes, path: str, bad: dict[str, str]) -> bytes | None:
    """None when `value` is valid UTF-8; else record why under `path` and return it with U+FFFD for the bad bytes."""
    try:
        value.decode("utf-8")
        return None
    except UnicodeDecodeError as error:
        bad[path] = f"{error.reason} at byte {error.start}"
        return value.decode("utf-8", "replace").encode("utf-8")


def _repair(message: Message, path: str, bad: dict[str, str]) -> None:
    """Find (and replace) every invalid UTF-8 value of a former `string` field in a mirror message, recursively."""
    for item, value in message.ListFields():
        where = path + item.name
        repeated = item.is_repeated
        if item.type == FieldDescriptor.TYPE_MESSAGE:
            for index, child in enumerate(value) if repeated else [(None, value)]:
                _repair(child, f"{where}[{index}]." if repeated else where + ".", bad)
        elif was_string(item):
            if repeated:
                for index, element in enumerate(value):
                    fixed = _repaired(element, f"{where}[{index}]", bad)
                    if fixed is not None:
                        value[index] = fixed
            else:
                fixed = _repaired(value, where, bad)
                if fixed is not None:
                    setattr(message, item.name, fixed)


def deserializer(message_class: type[Message]) -> Callable[[bytes], Message | InvalidRequest]:
    """bytes -> the message, or an `InvalidRequest` saying which fields are not UTF-8 (never raises)."""
    mirror = mirror_class(message_class)
    type_name = message_class.DESCRIPTOR.full_name

    def parse(data: bytes) -> Message | InvalidRequest:
        try:
            return message_class.FromString(data)
        except DecodeError:
            pass
        try:
            raw = mirror.FromString(data)
        except DecodeError:
            return InvalidRequest(type_name)
        bad: dict[str, str] = {}
        _repair(raw, "", bad)
        if not bad:  # refused for something other than UTF-8
            return InvalidRequest(type_name)
        return InvalidRequest(type_name, bad, message_class.FromString(raw.SerializeToString()))

    return parse


def _refusing_invalid(behaviour: Callable) -> Callable:
    """For single-request methods: INVALID_ARGUMENT naming the field, before the servicer runs."""

    @functools.wraps(behaviour)
    def handle(request, context):
        if isinstance(request, InvalidRequest):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.describe())
        return behaviour(request, context)

    return handle


_HANDLERS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def add_service(server: grpc.Server, servicer: object, service: ServiceDescriptor) -> None:
    """What the generated `add_*Servicer_to_server` does, with `deserializer` for every request type.

    A request-streaming method receives `InvalidRequest` items in its request
    iterator and must answer them itself.
    """
    handlers = {}
    for method in service.methods:
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        behaviour = getattr(servicer, method.name)
        if not method.client_streaming:
            behaviour = _refusing_invalid(behaviour)
        handlers[method.name] = _HANDLERS[method.client_streaming, method.server_streaming](
            behaviour,
            request_deserializer=deserializer(request_class),
            response_serializer=response_class.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)
