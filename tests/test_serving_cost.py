"""Bounded cost per request, against the real server: the byte budget, maximal requests, light calls beside them."""

from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serving_fixtures import channel, model_store, random_words, served  # noqa: F401 - fixtures

from serving.classify import HeavyLane
from serving.generated.inference import grpc_predict_v2_pb2 as oip_pb
from serving.generated.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from serving.generated.spam.v1 import classifier_pb2 as pb
from serving.generated.spam.v1 import classifier_pb2_grpc as pb_grpc
from serving.oip import encode_raw_bytes

HAM = "are we still on for lunch tomorrow? see you at home"
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def maximal_request(rng, budget: int, text_bytes: int) -> pb.ClassifyStreamRequest:
    request = pb.ClassifyStreamRequest()
    while True:
        message = pb.Message(id=str(len(request.messages)), text=random_words(rng, text_bytes))
        if request.ByteSize() + message.ByteSize() + 8 > budget:
            return request
        request.messages.append(message)


def assert_healthy(ch) -> None:
    health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_requests_over_the_byte_budget_are_invalid_argument_and_the_stream_goes_on(channel, served):
    budget, text_bytes = served.config.max_request_bytes, served.config.max_text_bytes
    over = pb.ClassifyStreamRequest(messages=[pb.Message(id=str(i), text="z " * (text_bytes // 2)) for i in range(17)])
    assert budget < over.ByteSize() <= served.config.max_message_bytes
    requests = [over, pb.ClassifyStreamRequest(messages=[pb.Message(id="after", text=HAM)])]
    responses = list(pb_grpc.ClassifierStub(channel).ClassifyStream(iter(requests), timeout=30))
    assert [len(r.results) for r in responses] == [17, 1]
    refused = responses[0].results
    assert {r.error.code for r in refused} == {INVALID.value[0]}
    assert refused[0].error.message == (
        f"request is {over.ByteSize()} bytes, over the per-request budget of {budget} bytes "
        "(--max-request-bytes); send fewer or shorter messages per request"
    )
    assert responses[1].results[0].verdict.label == "ham"

    with pytest.raises(grpc.RpcError) as info:  # a short text with a huge id: the id counts too
        pb_grpc.ClassifierStub(channel).Classify(pb.ClassifyRequest(text=HAM, id="i" * budget), timeout=10)
    assert info.value.code() == INVALID and "per-request budget" in info.value.details()

    infer = oip_pb.ModelInferRequest(model_name=served.config.model_name)
    infer.inputs.add(name="text", datatype="BYTES", shape=[17])
    infer.raw_input_contents.append(encode_raw_bytes([m.text.encode() for m in over.messages]))
    with pytest.raises(grpc.RpcError) as info:
        oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(infer, timeout=10)
    assert info.value.code() == INVALID and "per-request budget" in info.value.details()
    assert_healthy(channel)


def test_maximal_requests_are_scored_while_light_calls_go_on(channel, served, record_property):
    """Maximal requests of never-seen words, back to back, and one-message calls beside them all along."""
    rng = np.random.default_rng(11)
    heavy = [maximal_request(rng, served.config.max_request_bytes, served.config.max_text_bytes) for _ in range(4)]
    assert all(r.ByteSize() > served.config.max_request_bytes * 0.9 for r in heavy)
    heavy_done, heavy_results, light = threading.Event(), [], []

    def send_heavy() -> None:
        try:
            for response in pb_grpc.ClassifierStub(channel).ClassifyStream(iter(heavy), timeout=300):
                heavy_results.extend(response.results)
        finally:
            heavy_done.set()

    sender = threading.Thread(target=send_heavy)
    sender.start()
    stub = pb_grpc.ClassifierStub(channel)
    while not heavy_done.is_set():
        call = stub.Classify.with_call(pb.ClassifyRequest(text=HAM), timeout=30)[1]
        light.append(call.code())
    sender.join()
    record_property("light_calls_during_maximal_requests", len(light))
    assert len(heavy_results) == sum(len(r.messages) for r in heavy)
    assert {r.WhichOneof("outcome") for r in heavy_results} == {"verdict"}
    assert len(light) >= 4 and set(light) == {grpc.StatusCode.OK}  # served all along, not after
    assert_healthy(channel)


def test_heavy_scoring_takes_turns_and_light_scoring_never_waits():
    lane = HeavyLane(min_bytes=100, concurrency=1)
    inside, release = threading.Event(), threading.Event()
    order = []

    def heavy(name):
        with lane.turn(["x" * 200]):
            order.append(f"{name} in")
            inside.set()
            release.wait(10)
            order.append(f"{name} out")

    first = threading.Thread(target=heavy, args=("first",))
    first.start()
    assert inside.wait(10)
    inside.clear()
    second = threading.Thread(target=heavy, args=("second",))
    second.start()
    with lane.turn(["short text"]):  # light: goes ahead while the heavy turn is held
        order.append("light")
    assert not inside.wait(0.2)  # the second heavy call is still waiting for its turn
    release.set()
    first.join(10)
    second.join(10)
    assert order == ["first in", "light", "first out", "second in", "second out"]
