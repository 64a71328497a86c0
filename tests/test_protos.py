"""The committed generated code matches protos/, and the protos keep their public contract."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

from serving import codegen


def _files(root: Path) -> dict[str, Path]:
    return {
        str(p.relative_to(root)): p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }


def test_generated_code_is_not_stale(tmp_path):
    fresh = tmp_path / "generated"
    codegen.generate(fresh)
    committed, regenerated = _files(codegen.OUTPUT_DIR), _files(fresh)
    assert sorted(committed) == sorted(regenerated), "run `python -m serving.codegen` and commit serving/generated/"
    stale = [name for name in regenerated if not filecmp.cmp(committed[name], regenerated[name], shallow=False)]
    assert not stale, f"stale generated files {stale}: run `python -m serving.codegen` and commit serving/generated/"


def test_codegen_command_runs(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "serving.codegen", "--out", str(tmp_path / "out")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "spam" / "v1" / "classifier_pb2_grpc.py").exists()


def test_generated_modules_import_as_a_package():
    from serving.generated.inference import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc
    from serving.generated.spam.v1 import classifier_pb2, classifier_pb2_grpc

    assert classifier_pb2.DESCRIPTOR.package == "spam.v1"
    assert grpc_predict_v2_pb2.DESCRIPTOR.package == "inference"
    assert hasattr(classifier_pb2_grpc, "ClassifierStub")
    assert hasattr(grpc_predict_v2_pb2_grpc, "GRPCInferenceServiceStub")


def test_open_inference_protocol_contract_is_the_standard_one():
    """Service, method and field numbers that stock clients depend on."""
    from serving.generated.inference import grpc_predict_v2_pb2 as pb

    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    assert [m.name for m in service.methods] == [
        "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer",
    ]  # fmt: skip
    fields = {f.name: f.number for f in pb.ModelInferRequest.DESCRIPTOR.fields}
    assert fields == {
        "model_name": 1, "model_version": 2, "id": 3, "parameters": 4, "inputs": 5, "outputs": 6,
        "raw_input_contents": 7,
    }  # fmt: skip
    fields = {f.name: f.number for f in pb.ModelInferResponse.DESCRIPTOR.fields}
    assert fields == {
        "model_name": 1, "model_version": 2, "id": 3, "parameters": 4, "outputs": 5, "raw_output_contents": 6,
    }  # fmt: skip
    assert {f.name: f.number for f in pb.InferTensorContents.DESCRIPTOR.fields}["bytes_contents"] == 8
    assert {f.name: f.number for f in pb.InferTensorContents.DESCRIPTOR.fields}["fp32_contents"] == 6


def test_spam_v1_status_is_wire_compatible_with_google_rpc_status():
    from serving.generated.spam.v1 import classifier_pb2 as pb

    assert {f.name: f.number for f in pb.Status.DESCRIPTOR.fields} == {"code": 1, "message": 2}
