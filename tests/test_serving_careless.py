"""Careless clients and a registry that never answers, against the real server and the real CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serving_fixtures import PROJECT_ROOT, PYTHON, channel, free_port, model_store, running_server, served  # noqa: F401

from serving.generated.inference import grpc_predict_v2_pb2 as oip_pb
from serving.generated.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from serving.generated.spam.v1 import classifier_pb2 as pb
from serving.generated.spam.v1 import classifier_pb2_grpc as pb_grpc

SPAM = "WINNER! You have won a cash prize, claim now: call 09061701461"
HAM = "are we still on for lunch tomorrow? see you at home"


def assert_healthy(ch) -> None:
    health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "-m", "serving.client", *args], input=stdin, capture_output=True, timeout=60, cwd=PROJECT_ROOT,
        env={**os.environ},
    )  # fmt: skip


def test_bearer_scheme_in_any_case(model_store):
    registry = model_store.clone("bearer", [model_store.good[0]])
    registry.promote("1", "bearer test")
    with running_server(model_store, registry.model_name, wait_for="1", token="t0ken") as srv:
        with grpc.insecure_channel(srv.target) as ch:
            classify = pb_grpc.ClassifierStub(ch).Classify
            for value in ("bearer t0ken", "BEARER t0ken", "Bearer t0ken", "bEaReR   t0ken"):
                response = classify(pb.ClassifyRequest(text=HAM), metadata=[("authorization", value)], timeout=5)
                assert response.verdict.label == "ham", value
            for value, reason in [("Basic t0ken", "unsupported authorization scheme 'Basic'"),
                                  ("bearer wrong", "invalid bearer token"), ("t0ken", "unsupported authorization scheme")]:  # fmt: skip
                with pytest.raises(grpc.RpcError) as info:
                    classify(pb.ClassifyRequest(text=HAM), metadata=[("authorization", value)], timeout=5)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED and reason in info.value.details(), value
            assert_healthy(ch)


def test_duplicate_requested_outputs_are_invalid_argument(channel, served):
    def infer(*outputs: str):
        request = oip_pb.ModelInferRequest(model_name=served.config.model_name)
        request.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.append(SPAM.encode())
        for name in outputs:
            request.outputs.add(name=name)
        return oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)

    for outputs in [("label", "label"), ("probability", "label", "probability")]:
        with pytest.raises(grpc.RpcError) as info:
            infer(*outputs)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "requested more than once" in info.value.details() and outputs[-1] in info.value.details()
    assert [o.name for o in infer("probability", "label").outputs] == ["probability", "label"]
    assert_healthy(channel)


@pytest.mark.parametrize("via", ["stdin", "file"])
def test_cli_classifies_the_other_lines_and_reports_the_one_that_is_not_utf8(served, tmp_path, via):
    data = SPAM.encode() + b"\n" + b"caf\xe9 \xff\xfe latin-1\n" + HAM.encode() + b"\n"
    if via == "stdin":
        result = cli("--target", served.target, stdin=data)
    else:
        path = tmp_path / "messages.txt"
        path.write_bytes(data)
        result = cli("--target", served.target, "--file", str(path))
    records = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [r["id"] for r in records] == ["1", "2", "3"]
    assert (records[0]["label"], records[2]["label"]) == ("spam", "ham")
    assert records[1]["error"] == {
        "code": "INVALID_ARGUMENT",
        "message": "line 2 is not valid UTF-8 (invalid continuation byte at byte 3); not sent",
    }
    assert result.returncode == 1
    assert b"line 2 is not valid UTF-8" in result.stderr and b"Traceback" not in result.stderr
    assert_healthy(grpc.insecure_channel(served.target))


def test_cli_reports_a_bad_first_line_of_jsonl_in_place(served):
    data = b'{"id": "x\xff", "text": "hi"}\n' + json.dumps({"id": "a", "text": SPAM}).encode() + b"\n"
    result = cli("--target", served.target, stdin=data)
    records = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [r["id"] for r in records] == ["1", "a"] and records[1]["label"] == "spam"
    assert result.returncode == 1


def test_cli_missing_file_is_one_line_and_exit_2(tmp_path):
    missing = tmp_path / "missing.txt"
    result = cli("--target", "127.0.0.1:1", "--file", str(missing))
    assert result.returncode == 2
    assert result.stderr.decode().splitlines() == [f"spam-classify: cannot read {missing}: No such file or directory"]
    assert result.stdout == b""


class SilentServer:
    """A TCP server that accepts connections and never answers (a hung tracking server)."""

    def __init__(self):
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.connections.append(connection)  # held open, never read from or written to

    def close(self) -> None:
        self.socket.close()
        for connection in self.connections:
            connection.close()


@pytest.mark.slow
def test_sigterm_is_bounded_when_the_tracking_server_never_answers(tmp_path):
    silent = SilentServer()
    grace = 1.0
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "SPAM_HOME": str(tmp_path)}
    process = subprocess.Popen(
        [PYTHON, "-m", "serving.server", "--port", str(free_port()), "--tracking-uri", f"http://127.0.0.1:{silent.port}",
         "--grace", str(grace), "--poll-interval", "0.2"],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not silent.connections and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        assert silent.connections, "the server never asked the tracking server"
        time.sleep(0.5)  # the champion poll is now waiting on a connection that never answers
        assert process.poll() is None
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
        took = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        silent.close()
    output = process.stdout.read()
    assert code == 0, output
    assert took <= grace + 2.0, f"SIGTERM took {took:.1f}s (grace {grace}s)\n{output}"
    assert "stopped" in output
