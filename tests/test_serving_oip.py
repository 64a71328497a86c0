"""Open Inference Protocol (KServe v2) over gRPC: our stubs, raw and typed tensors, and stock tritonclient."""

from __future__ import annotations

import json
import struct

import grpc
import numpy as np
import pytest
from serving_fixtures import channel, model_store, run_python, served  # noqa: F401 - fixtures

from serving.generated.inference import grpc_predict_v2_pb2 as pb
from serving.generated.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from serving.oip import decode_raw_bytes, encode_raw_bytes
from spam_assets.traffic.verdict_ids import parse_verdict_id

SPAM = "WINNER! You have won a cash prize, claim now: call 09061701461"
HAM = "are we still on for lunch tomorrow? see you at home"


def stub(ch):
    return pb_grpc.GRPCInferenceServiceStub(ch)


def infer_request(model: str, texts: list[str], raw: bool, **tensor) -> pb.ModelInferRequest:
    spec = {"name": "text", "datatype": "BYTES", "shape": [len(texts)], **tensor}
    request = pb.ModelInferRequest(model_name=model, id="req-1")
    tensor_pb = request.inputs.add(**spec)
    encoded = [t.encode() for t in texts]
    if raw:
        request.raw_input_contents.append(encode_raw_bytes(encoded))
    else:
        tensor_pb.contents.bytes_contents.extend(encoded)
    return request


def error_of(call, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=10)
    return info.value.code(), info.value.details()


def test_liveness_readiness_and_metadata(channel, served):
    s, name = stub(channel), served.config.model_name
    assert s.ServerLive(pb.ServerLiveRequest(), timeout=5).live
    assert s.ServerReady(pb.ServerReadyRequest(), timeout=5).ready
    assert s.ModelReady(pb.ModelReadyRequest(name=name), timeout=5).ready
    assert s.ModelReady(pb.ModelReadyRequest(name=name, version="1"), timeout=5).ready
    assert not s.ModelReady(pb.ModelReadyRequest(name=name, version="99"), timeout=5).ready
    server = s.ServerMetadata(pb.ServerMetadataRequest(), timeout=5)
    assert server.name == "spam-platform" and server.version
    meta = s.ModelMetadata(pb.ModelMetadataRequest(name=name), timeout=5)
    assert (meta.name, list(meta.versions), meta.platform) == (name, ["1"], "sklearn")
    assert meta.parameters["scorer"].string_param == "lean"  # the extension field 6, as MLServer's
    assert "matches predict_proba" in meta.parameters["scorer_reason"].string_param
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("text", "BYTES", [-1])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        ("label", "BYTES", [-1]),
        ("probability", "FP32", [-1]),
        ("verdict_id", "BYTES", [-1]),
        ("tier", "BYTES", [-1]),
        ("explanation", "BYTES", [-1]),  # optional: only when asked for
    ]


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
def test_model_infer_typed_and_raw(channel, served, raw):
    texts = [SPAM, HAM, SPAM]
    response = stub(channel).ModelInfer(infer_request(served.config.model_name, texts, raw), timeout=10)
    assert (response.model_name, response.model_version, response.id) == (served.config.model_name, "1", "req-1")
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("label", "BYTES", [3]),
        ("probability", "FP32", [3]),
        ("verdict_id", "BYTES", [3]),
        ("tier", "BYTES", [3]),
    ]
    if raw:
        assert len(response.raw_output_contents) == 4
        assert not response.outputs[0].HasField("contents")
        labels = [b.decode() for b in decode_raw_bytes(response.raw_output_contents[0], 3)]
        probabilities = np.frombuffer(response.raw_output_contents[1], dtype="<f4")
        verdict_ids = [b.decode() for b in decode_raw_bytes(response.raw_output_contents[2], 3)]
        tiers = [b.decode() for b in decode_raw_bytes(response.raw_output_contents[3], 3)]
    else:
        assert not response.raw_output_contents
        labels = [b.decode() for b in response.outputs[0].contents.bytes_contents]
        probabilities = np.array(response.outputs[1].contents.fp32_contents)
        verdict_ids = [b.decode() for b in response.outputs[2].contents.bytes_contents]
        tiers = [b.decode() for b in response.outputs[3].contents.bytes_contents]
    assert labels == ["spam", "ham", "spam"]
    assert tiers == labels  # this version has no operating point: 0.5, no suspicious tier
    assert probabilities[0] > 0.5 > probabilities[1]
    assert all(parse_verdict_id(v) for v in verdict_ids) and sorted(set(verdict_ids)) == verdict_ids


def test_model_infer_accepts_n_by_1_and_selected_outputs(channel, served):
    request = infer_request(served.config.model_name, [HAM, SPAM], raw=True, shape=[2, 1])
    request.outputs.add(name="probability")
    response = stub(channel).ModelInfer(request, timeout=10)
    assert [o.name for o in response.outputs] == ["probability"]
    assert np.frombuffer(response.raw_output_contents[0], dtype="<f4").shape == (2,)


def test_model_infer_batches_larger_than_one_model_call(channel, served):
    texts = [SPAM, HAM] * 400  # 800 texts: scored in chunks of max_batch
    response = stub(channel).ModelInfer(infer_request(served.config.model_name, texts, raw=True), timeout=20)
    labels = [b.decode() for b in decode_raw_bytes(response.raw_output_contents[0], 800)]
    assert labels == ["spam", "ham"] * 400


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"datatype": "INT32"}, "datatype 'INT32'"),
        ({"name": "input_0"}, "unknown input 'input_0'"),
        ({"shape": [2, 2]}, "shape [2, 2]"),
        ({"shape": [3]}, "3"),  # shape says 3, contents hold 2
    ],
    ids=["datatype", "name", "shape", "count"],
)
@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
def test_model_infer_rejects_wrong_tensors(channel, served, change, expected, raw):
    request = infer_request(served.config.model_name, [SPAM, HAM], raw, **change)
    code, details = error_of(stub(channel).ModelInfer, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in details


def test_model_infer_rejects_bad_elements_and_outputs(channel, served):
    name, infer = served.config.model_name, stub(channel).ModelInfer
    code, details = error_of(infer, infer_request(name, [SPAM, ""], raw=True))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "element 1: text is empty" in details
    code, details = error_of(infer, infer_request(name, ["x" * (served.config.max_text_bytes + 1)], raw=False))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "over the limit" in details
    bad_utf8 = infer_request(name, [HAM], raw=True)
    bad_utf8.raw_input_contents[0] = struct.pack("<I", 2) + b"\xff\xfe"
    code, details = error_of(infer, bad_utf8)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not valid UTF-8" in details
    truncated = infer_request(name, [HAM], raw=True)
    truncated.raw_input_contents[0] = truncated.raw_input_contents[0][:-3]
    code, details = error_of(infer, truncated)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "claims" in details
    unknown_output = infer_request(name, [HAM], raw=False)
    unknown_output.outputs.add(name="logits")
    code, details = error_of(infer, unknown_output)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "logits" in details


def test_unknown_model_or_version_is_not_found(channel, served):
    s = stub(channel)
    code, details = error_of(s.ModelInfer, infer_request("other-model", [HAM], raw=True))
    assert code == grpc.StatusCode.NOT_FOUND and "other-model" in details
    request = infer_request(served.config.model_name, [HAM], raw=True)
    request.model_version = "42"
    code, details = error_of(s.ModelInfer, request)
    assert code == grpc.StatusCode.NOT_FOUND and "version 1 is serving" in details
    code, _ = error_of(s.ModelMetadata, pb.ModelMetadataRequest(name="other-model"))
    assert code == grpc.StatusCode.NOT_FOUND
    code, _ = error_of(s.ModelReady, pb.ModelReadyRequest(name="other-model"))
    assert code == grpc.StatusCode.NOT_FOUND


def test_raw_bytes_round_trip():
    items = [b"", b"a", "€uro".encode(), b"x" * 300]
    assert decode_raw_bytes(encode_raw_bytes(items), 4) == items


# tritonclient's generated protos define the same `inference.*` symbols as ours, and one
# process's protobuf descriptor pool refuses duplicates, so the stock client runs in its own
# interpreter, as it would on a real client machine.
TRITON_SCRIPT = r"""
import json, sys
import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

target, model = sys.argv[1], sys.argv[2]
client = triton.InferenceServerClient(url=target)
out = {
    "live": client.is_server_live(),
    "ready": client.is_server_ready(),
    "model_ready": client.is_model_ready(model),
    "metadata": client.get_model_metadata(model, as_json=True),
}
texts = np.array([t.encode() for t in sys.argv[3:]], dtype=object)
text = triton.InferInput("text", [len(texts)], "BYTES")
text.set_data_from_numpy(texts)
result = client.infer(model, [text], request_id="t-1",
                      outputs=[triton.InferRequestedOutput("label"), triton.InferRequestedOutput("probability"),
                               triton.InferRequestedOutput("verdict_id")])
response = result.get_response()
out["model_version"] = response.model_version
out["id"] = response.id
out["labels"] = [x.decode() for x in result.as_numpy("label").tolist()]
out["probabilities"] = result.as_numpy("probability").astype(float).tolist()
out["verdict_ids"] = [x.decode() for x in result.as_numpy("verdict_id").tolist()]
default = client.infer(model, [text])  # no outputs named: all of them
out["default_outputs"] = [o.name for o in default.get_response().outputs]
bad = triton.InferInput("text", [1], "INT32")
bad.set_data_from_numpy(np.array([1], dtype=np.int32))
try:
    client.infer(model, [bad])
except InferenceServerException as error:
    out["bad_status"] = error.status()
    out["bad_message"] = error.message()
try:
    client.infer("no-such-model", [text])
except InferenceServerException as error:
    out["missing_status"] = error.status()
print(json.dumps(out))
"""


def test_stock_tritonclient_works_unchanged(served):
    result = run_python(TRITON_SCRIPT, served.target, served.config.model_name, SPAM, HAM)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["live"] and out["ready"] and out["model_ready"]
    assert out["metadata"]["name"] == served.config.model_name
    assert out["metadata"]["versions"] == ["1"]
    assert (out["model_version"], out["id"]) == ("1", "t-1")
    assert out["labels"] == ["spam", "ham"]
    assert out["probabilities"][0] > 0.5 > out["probabilities"][1]
    assert len(out["verdict_ids"]) == 2 and all(parse_verdict_id(v) for v in out["verdict_ids"])
    assert out["default_outputs"] == ["label", "probability", "verdict_id", "tier"]
    assert out["bad_status"] == "StatusCode.INVALID_ARGUMENT" and "INT32" in out["bad_message"]
    assert out["missing_status"] == "StatusCode.NOT_FOUND"
