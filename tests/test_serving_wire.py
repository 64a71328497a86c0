"""Invalid UTF-8 in any string field, against the real server: INVALID_ARGUMENT naming the field, no traceback."""

from __future__ import annotations

import logging

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serving_fixtures import channel, model_store, served  # noqa: F401 - fixtures

from serving import wire
from serving.generated.inference import grpc_predict_v2_pb2 as oip_pb
from serving.generated.spam.v1 import classifier_pb2 as pb

HAM = "are we still on for lunch tomorrow? see you at home"
BAD = b"caf\xe9 \xff prize"  # Latin-1 bytes: not UTF-8
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def mirror(message_class, **fields):
    return wire.mirror_class(message_class)(**fields)


def nested(message_class, field_name: str):
    """The mirror class of a message field of the mirror of `message_class`."""
    return message_factory.GetMessageClass(wire.mirror_class(message_class).DESCRIPTOR.fields_by_name[field_name].message_type)


def raw_call(ch, method: str, response_class, streaming: bool = False):
    """A call that sends already serialised bytes, as a careless client in another language would."""
    make = ch.stream_stream if streaming else ch.unary_unary
    return make(method, request_serializer=None, response_deserializer=response_class.FromString)


def status_of(call, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=10)
    return info.value.code(), info.value.details()


def assert_healthy(ch) -> None:
    health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture()
def no_tracebacks(caplog):
    caplog.set_level(logging.WARNING)
    yield
    noisy = [r for r in caplog.records if r.exc_info or "Exception" in r.getMessage()]
    assert not noisy, [r.getMessage() for r in noisy]


# --- the mirrors ------------------------------------------------------------------------------


def _all_messages(file):
    def walk(message):
        yield message
        for child in message.nested_types:
            yield from walk(child)

    for message in file.message_types_by_name.values():
        yield from walk(message)


@pytest.mark.parametrize("file", [pb.DESCRIPTOR, oip_pb.DESCRIPTOR], ids=["spam.v1", "inference"])
def test_every_mirror_matches_its_proto_field_by_field(file):
    strings = 0
    for message in _all_messages(file):
        original = message
        copy = wire.mirror_class(message_factory.GetMessageClass(message)).DESCRIPTOR
        assert copy.full_name == original.full_name
        assert [f.name for f in copy.fields] == [f.name for f in original.fields]
        for ours, theirs in zip(copy.fields, original.fields, strict=True):
            assert (ours.number, ours.is_repeated) == (theirs.number, theirs.is_repeated), ours.full_name
            if theirs.type == FieldDescriptor.TYPE_STRING:
                strings += 1
                assert ours.type == FieldDescriptor.TYPE_BYTES and wire.was_string(ours)
            else:
                assert ours.type == theirs.type and not wire.was_string(ours), ours.full_name
            if theirs.message_type is not None:
                assert ours.message_type.full_name == theirs.message_type.full_name
        assert [o.name for o in copy.oneofs] == [o.name for o in original.oneofs]
    assert strings > 0


def test_a_valid_request_parses_as_the_generated_class_and_a_broken_one_never_raises():
    parse = wire.deserializer(pb.ClassifyRequest)
    ok = parse(pb.ClassifyRequest(text="hi", id="1").SerializeToString())
    assert isinstance(ok, pb.ClassifyRequest) and ok.text == "hi"
    bad = parse(mirror(pb.ClassifyRequest, text=BAD, id=b"\xc3(").SerializeToString())
    assert isinstance(bad, wire.InvalidRequest)
    assert set(bad.bad_fields) == {"text", "id"}
    assert bad.request.text == "caf\ufffd \ufffd prize"
    assert bad.describe() == "field `text` is not valid UTF-8: invalid continuation byte at byte 3 (and 1 more field)"
    garbage = parse(b"\xff\xff\xff\xff")
    assert isinstance(garbage, wire.InvalidRequest) and garbage.request is None
    assert garbage.describe() == "request is not a valid spam.v1.ClassifyRequest message"


# --- against the real server ----------------------------------------------------------------------


@pytest.mark.parametrize("field", ["text", "id"])
def test_unary_invalid_utf8_is_invalid_argument_naming_the_field(channel, field, no_tracebacks):
    request = mirror(pb.ClassifyRequest, **{"text": b"hello", "id": b"7", field: BAD}).SerializeToString()
    code, details = status_of(raw_call(channel, "/spam.v1.Classifier/Classify", pb.ClassifyResponse), request)
    assert code == INVALID
    assert details.startswith(f"field `{field}` is not valid UTF-8")
    assert_healthy(channel)


def test_unparsable_request_is_invalid_argument(channel, no_tracebacks):
    call = raw_call(channel, "/spam.v1.Classifier/Classify", pb.ClassifyResponse)
    assert status_of(call, b"\x0a\xff\x01") == (INVALID, "request is not a valid spam.v1.ClassifyRequest message")


def test_stream_answers_the_bad_message_with_an_error_and_goes_on(channel, no_tracebacks):
    message = nested(pb.ClassifyStreamRequest, "messages")
    request_class = wire.mirror_class(pb.ClassifyStreamRequest)
    requests = [
        pb.ClassifyStreamRequest(messages=[pb.Message(id="1", text=HAM)]).SerializeToString(),
        request_class(
            messages=[message(id=b"2", text=b"fine text"), message(id=b"3", text=BAD), message(id=b"4\xff", text=b"ok")]
        ).SerializeToString(),
        b"\x0a\x03\xff\xff\xff",  # not a message at all
        pb.ClassifyStreamRequest(messages=[pb.Message(id="5", text=HAM)]).SerializeToString(),
    ]
    call = raw_call(channel, "/spam.v1.Classifier/ClassifyStream", pb.ClassifyStreamResponse, streaming=True)
    responses = list(call(iter(requests), timeout=10))
    assert [len(r.results) for r in responses] == [1, 3, 1, 1]  # one response per request, the stream went on
    results = [r for response in responses for r in response.results]
    assert [r.WhichOneof("outcome") for r in results] == ["verdict", "verdict", "error", "error", "error", "verdict"]
    assert [r.id for r in results] == ["1", "2", "3", "4\ufffd", "", "5"]
    errors = [r.error for r in results if r.WhichOneof("outcome") == "error"]
    assert {e.code for e in errors} == {INVALID.value[0]}
    assert errors[0].message.startswith("field `text` is not valid UTF-8")
    assert errors[1].message.startswith("field `id` is not valid UTF-8")
    assert errors[2].message == "request is not a valid spam.v1.ClassifyStreamRequest message"
    assert_healthy(channel)


def _infer_request(**overrides) -> bytes:
    tensor = nested(oip_pb.ModelInferRequest, "inputs")
    parameter = nested(oip_pb.ModelInferRequest, "parameters")
    value = message_factory.GetMessageClass(parameter.DESCRIPTOR.fields_by_name["value"].message_type)
    fields = {
        "model_name": b"MODEL",
        "id": b"req",
        "inputs": [tensor(name=b"text", datatype=b"BYTES", shape=[1], contents={"bytes_contents": [HAM.encode()]})],
        "parameters": [parameter(key=b"k", value=value(string_param=b"v"))],
    }
    fields.update(overrides)
    return wire.mirror_class(oip_pb.ModelInferRequest)(**fields).SerializeToString()


def test_oip_invalid_utf8_in_every_string_field(channel, served, no_tracebacks):
    name = served.config.model_name.encode()
    tensor = nested(oip_pb.ModelInferRequest, "inputs")
    parameter = nested(oip_pb.ModelInferRequest, "parameters")
    value = message_factory.GetMessageClass(parameter.DESCRIPTOR.fields_by_name["value"].message_type)
    call = raw_call(channel, "/inference.GRPCInferenceService/ModelInfer", oip_pb.ModelInferResponse)
    good = oip_pb.ModelInferResponse.FromString(call(_infer_request(model_name=name), timeout=10).SerializeToString())
    assert good.outputs[0].name == "label"
    cases = {
        "model_name": _infer_request(model_name=BAD),
        "model_version": _infer_request(model_name=name, model_version=BAD),
        "id": _infer_request(model_name=name, id=BAD),
        "inputs[0].name": _infer_request(model_name=name, inputs=[tensor(name=BAD, datatype=b"BYTES", shape=[1])]),
        "inputs[0].datatype": _infer_request(model_name=name, inputs=[tensor(name=b"text", datatype=BAD, shape=[1])]),
        "parameters[0].key": _infer_request(model_name=name, parameters=[parameter(key=BAD)]),
        "parameters[0].value.string_param": _infer_request(
            model_name=name, parameters=[parameter(key=b"k", value=value(string_param=BAD))]
        ),
    }
    for field, request in cases.items():
        code, details = status_of(call, request)
        assert (code, details.split(":")[0]) == (INVALID, f"field `{field}` is not valid UTF-8"), field
    for method, response_class in [("ModelReady", oip_pb.ModelReadyResponse), ("ModelMetadata", oip_pb.ModelMetadataResponse)]:
        request_class = oip_pb.ModelReadyRequest if method == "ModelReady" else oip_pb.ModelMetadataRequest
        request = mirror(request_class, name=BAD).SerializeToString()
        code, details = status_of(raw_call(channel, f"/inference.GRPCInferenceService/{method}", response_class), request)
        assert (code, details.split(":")[0]) == (INVALID, "field `name` is not valid UTF-8"), method
    assert_healthy(channel)
