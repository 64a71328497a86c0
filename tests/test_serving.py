"""spam.v1.Classifier end to end: a real server, a real MLflow store, real trained models."""

from __future__ import annotations

import json
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from serving_fixtures import (  # noqa: F401 - fixtures
    PYTHON,
    channel,
    model_store,
    run_python,
    running_server,
    self_signed_cert,
    served,
    wait_until,
)

from serving.client import ClassifierClient, read_messages, stream_requests
from serving.generated.spam.v1 import classifier_pb2 as pb
from serving.generated.spam.v1 import classifier_pb2_grpc as pb_grpc
from spam_assets.traffic.verdict_ids import parse_verdict_id

SPAM = "WINNER! You have won a cash prize, claim now: call 09061701461"
HAM = "are we still on for lunch tomorrow? see you at home"


def stub(ch) -> pb_grpc.ClassifierStub:
    return pb_grpc.ClassifierStub(ch)


def code_of(call, *args, **kwargs) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        result = call(*args, **kwargs)
        if isinstance(result, grpc.Call):  # a streaming call: errors surface while reading
            list(result)
    return info.value.code(), info.value.details()


# --- every RPC --------------------------------------------------------------------------------


def test_classify_returns_label_probability_and_version(channel):
    spam = stub(channel).Classify(pb.ClassifyRequest(text=SPAM, id="a"), timeout=10)
    ham = stub(channel).Classify(pb.ClassifyRequest(text=HAM), timeout=10)
    assert spam.id == "a"
    assert (spam.verdict.label, ham.verdict.label) == ("spam", "ham")
    assert spam.verdict.spam_probability > 0.5 > ham.verdict.spam_probability >= 0
    assert spam.verdict.model_version == ham.verdict.model_version == "1"
    # Server-assigned, time-ordered: the later call's id sorts after the earlier one's.
    assert parse_verdict_id(spam.verdict.verdict_id) and spam.verdict.verdict_id < ham.verdict.verdict_id


def test_stream_answers_every_message_in_order_with_ids(channel):
    texts = [SPAM, HAM] * 300  # 600 messages: single-message and batched requests mixed
    messages = [pb.Message(id=f"m{i}", text=t) for i, t in enumerate(texts)]

    def requests():
        yield pb.ClassifyStreamRequest(messages=messages[:1])
        yield pb.ClassifyStreamRequest(messages=messages[1:257])
        for m in messages[257:300]:
            yield pb.ClassifyStreamRequest(messages=[m])
        yield pb.ClassifyStreamRequest(messages=messages[300:])

    responses = list(stub(channel).ClassifyStream(requests(), timeout=30))
    assert [len(r.results) for r in responses] == [1, 256] + [1] * 43 + [300]
    results = [res for r in responses for res in r.results]
    assert [r.id for r in results] == [m.id for m in messages]
    assert [r.verdict.label for r in results] == ["spam", "ham"] * 300
    assert {r.verdict.model_version for r in results} == {"1"}
    verdict_ids = [r.verdict.verdict_id for r in results]
    assert len(set(verdict_ids)) == 600 and all(map(parse_verdict_id, verdict_ids))


def test_stream_vectorised_scores_match_unary(channel):
    texts = [SPAM, HAM, "free entry txt win 87121", "dinner tonight?"]
    unary = [stub(channel).Classify(pb.ClassifyRequest(text=t)).verdict.spam_probability for t in texts]
    request = pb.ClassifyStreamRequest(messages=[pb.Message(id=str(i), text=t) for i, t in enumerate(texts)])
    (response,) = stub(channel).ClassifyStream(iter([request]), timeout=10)
    assert [r.verdict.spam_probability for r in response.results] == pytest.approx(unary, abs=1e-9)


def test_get_champion_reports_lineage(channel, served):
    champion = stub(channel).GetChampion(pb.GetChampionRequest(), timeout=10)
    card = served.watcher.current.card
    assert champion.model_name == served.config.model_name
    assert champion.version == "1"
    assert champion.run_id == card.run_id and len(champion.run_id) == 32
    assert champion.dagster_run_id == "dagster-run-0"
    assert champion.corpus_data_version == "synthetic-0"
    assert champion.candidate == "tfidf_nb"
    assert champion.metrics["holdout_spam_f1"] > 0.9
    assert len(champion.model_sha256) == 64
    assert champion.scorer.name == "lean" and "matches predict_proba" in champion.scorer.reason
    assert abs(champion.loaded_at.ToDatetime().timestamp() - served.watcher.current.loaded_at.timestamp()) < 1e-3


def test_watch_champion_starts_with_the_current_champion(channel):
    watch = stub(channel).WatchChampion(pb.WatchChampionRequest(), timeout=10)
    first = next(watch)
    watch.cancel()
    assert first.version == "1"


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_empty_text_is_invalid_argument(channel, text):
    code, details = code_of(stub(channel).Classify, pb.ClassifyRequest(text=text), timeout=10)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "empty" in details


def test_oversize_text_is_invalid_argument_counted_in_utf8_bytes(channel, served):
    limit = served.config.max_text_bytes
    assert stub(channel).Classify(pb.ClassifyRequest(text="a" * limit), timeout=10).verdict.label
    code, details = code_of(stub(channel).Classify, pb.ClassifyRequest(text="a" * (limit + 1)), timeout=10)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "over the limit" in details
    euros = "€" * (limit // 3 + 1)  # fewer characters than the limit, more bytes
    code, _ = code_of(stub(channel).Classify, pb.ClassifyRequest(text=euros), timeout=10)
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_bad_messages_on_a_stream_get_error_results_and_the_stream_continues(channel, served):
    too_long = "x" * (served.config.max_text_bytes + 1)
    requests = [
        pb.ClassifyStreamRequest(messages=[pb.Message(id="1", text=SPAM), pb.Message(id="2", text="")]),
        pb.ClassifyStreamRequest(messages=[pb.Message(id="3", text=too_long)]),
        pb.ClassifyStreamRequest(messages=[pb.Message(id="4", text=HAM)]),
    ]
    results = [r for resp in stub(channel).ClassifyStream(iter(requests), timeout=10) for r in resp.results]
    assert [r.id for r in results] == ["1", "2", "3", "4"]
    assert [r.WhichOneof("outcome") for r in results] == ["verdict", "error", "error", "verdict"]
    invalid = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert results[1].error.code == results[2].error.code == invalid
    assert "empty" in results[1].error.message and "over the limit" in results[2].error.message
    assert results[3].verdict.label == "ham"


def test_message_over_the_size_limit_is_resource_exhausted(channel, served):
    big = pb.ClassifyStreamRequest(messages=[pb.Message(id=str(i), text="y" * 60_000) for i in range(50)])
    assert big.ByteSize() > served.config.max_message_bytes
    code, _ = code_of(stub(channel).ClassifyStream, iter([big]), timeout=10)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_expired_deadline_is_deadline_exceeded(channel):
    # Already past: a 1 µs deadline sometimes still completed on loopback
    # (gRPC core keeps deadlines in milliseconds). The server's side of
    # deadlines is tested with a stream that outlives its deadline below.
    code, _ = code_of(stub(channel).Classify, pb.ClassifyRequest(text=HAM), timeout=-1)
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_stream_deadline_ends_the_call_and_frees_the_server(channel, served):
    def slow_requests():
        yield pb.ClassifyStreamRequest(messages=[pb.Message(id="1", text=HAM)])
        time.sleep(1.5)  # the client keeps the stream open past its deadline
        yield pb.ClassifyStreamRequest(messages=[pb.Message(id="2", text=HAM)])

    received = []
    with pytest.raises(grpc.RpcError) as info:
        for response in stub(channel).ClassifyStream(slow_requests(), timeout=0.5):
            received.extend(response.results)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert [r.id for r in received] == ["1"]
    wait_until(lambda: served.serving.open_streams == 0, timeout=5, message="the server to drop the stream")


def test_client_cancel_frees_the_server(channel, served):
    gate = threading.Event()

    def requests():
        yield pb.ClassifyStreamRequest(messages=[pb.Message(id="1", text=HAM)])
        gate.wait(5)

    call = stub(channel).ClassifyStream(requests(), timeout=30)
    assert next(call).results[0].id == "1"
    assert served.serving.open_streams >= 1
    call.cancel()
    gate.set()
    wait_until(lambda: served.serving.open_streams == 0, timeout=5, message="the server to drop the stream")


# --- health and reflection ----------------------------------------------------------------------


def test_health_is_serving_with_a_champion(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "spam.v1.Classifier", "inference.GRPCInferenceService"):
        response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING, service


def test_reflection_lists_the_services_and_describes_them(channel):
    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    assert {
        "spam.v1.Classifier",
        "inference.GRPCInferenceService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services
    file = database.FindFileContainingSymbol("spam.v1.Classifier")
    (service,) = [s for s in file.service if s.name == "Classifier"]
    assert [m.name for m in service.method] == ["Classify", "ClassifyStream", "GetChampion", "WatchChampion", "Report"]


# --- CLI ----------------------------------------------------------------------------------------


def test_cli_classifies_arguments_file_and_jsonl_stdin(served, tmp_path):
    target = ["--target", served.target]
    result = run_python("from serving.client import main; raise SystemExit(main())", *target, SPAM, HAM)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["id"], r["label"], r["model_version"]) for r in lines] == [("1", "spam", "1"), ("2", "ham", "1")]
    assert all(parse_verdict_id(r["verdict_id"]) for r in lines)

    text_file = tmp_path / "messages.txt"
    text_file.write_text(f"{SPAM}\n\n{HAM}\n")
    result = run_python(
        "from serving.client import main; raise SystemExit(main())", *target, "--file", str(text_file), "--batch-size", "1"
    )
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == ["1", "3"]  # ids are line numbers

    jsonl = "\n".join(json.dumps(r) for r in [{"id": "x", "text": SPAM}, {"text": ""}, {"id": 7, "text": HAM}])
    result = subprocess_stdin(jsonl, *target)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 1  # one message was rejected
    assert lines[0]["id"] == "x" and lines[0]["label"] == "spam"
    assert lines[1] == {"id": "2", "error": {"code": "INVALID_ARGUMENT", "message": "text is empty"}}
    assert lines[2]["id"] == "7" and lines[2]["label"] == "ham"


def test_cli_shows_progress_for_large_inputs(served):
    stdin = "\n".join([SPAM, HAM] * 2500)
    result = subprocess_stdin(stdin, "--target", served.target)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 5000
    assert "spam-classify: 5,000 messages (0 rejected)" in result.stderr


def test_cli_reports_an_unreachable_server():
    result = run_python(
        "from serving.client import main; raise SystemExit(main())", "--target", "127.0.0.1:1", "--deadline", "2", HAM
    )
    assert result.returncode == 2
    assert "UNAVAILABLE" in result.stderr or "DEADLINE_EXCEEDED" in result.stderr


def subprocess_stdin(stdin: str, *args: str):
    import subprocess

    return subprocess.run(
        [PYTHON, "-m", "serving.client", *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def test_read_messages_formats():
    assert list(read_messages(["hello\n", "\n", "world\n"])) == [("1", "hello"), ("3", "world")]
    assert list(read_messages(['{"id": "a", "text": "hi"}\n', '{"text": "yo"}'])) == [("a", "hi"), ("2", "yo")]
    assert list(read_messages(['{"not": "a message"}'])) == [("1", '{"not": "a message"}')]
    with pytest.raises(ValueError, match="line 2"):
        list(read_messages(['{"text": "hi"}', "plain"]))


def test_stream_requests_batch_by_count_and_size():
    messages = [(str(i), "z" * 100) for i in range(10)]
    assert [len(r.messages) for r in stream_requests(messages, batch_size=4)] == [4, 4, 2]
    requests = list(stream_requests(messages, batch_size=100, max_bytes=250))
    assert [len(r.messages) for r in requests] == [2, 2, 2, 2, 2]
    assert max(r.ByteSize() for r in requests) <= 250


# --- token and TLS --------------------------------------------------------------------------------


def test_token_required_when_configured_except_for_health(model_store):
    registry = model_store.clone("token", [model_store.good[0]])
    registry.promote("1", "token test")
    with running_server(model_store, registry.model_name, wait_for="1", token="s3cret-token") as srv:
        with grpc.insecure_channel(srv.target) as ch:
            request = pb.ClassifyRequest(text=HAM)
            code, details = code_of(stub(ch).Classify, request, timeout=5)
            assert code == grpc.StatusCode.UNAUTHENTICATED and "missing" in details
            code, details = code_of(stub(ch).Classify, request, timeout=5, metadata=[("authorization", "Bearer nope")])
            assert code == grpc.StatusCode.UNAUTHENTICATED and "invalid" in details
            code, _ = code_of(stub(ch).ClassifyStream, iter([pb.ClassifyStreamRequest()]), timeout=5)
            assert code == grpc.StatusCode.UNAUTHENTICATED
            code, _ = code_of(lambda: ProtoReflectionDescriptorDatabase(ch).get_services())
            assert code == grpc.StatusCode.UNAUTHENTICATED
            ok = stub(ch).Classify(request, timeout=5, metadata=[("authorization", "Bearer s3cret-token")])
            assert ok.verdict.label == "ham"
            health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        client = ClassifierClient(srv.target, token="s3cret-token")
        assert [r.verdict.label for r in client.classify_stream([("1", SPAM)])] == ["spam"]
        client.close()


def test_tls_with_token(model_store, tmp_path):
    cert, key = self_signed_cert(tmp_path)
    registry = model_store.clone("tls", [model_store.good[0]])
    registry.promote("1", "tls test")
    with running_server(
        model_store, registry.model_name, wait_for="1", tls_cert=cert, tls_key=key, token="tok"
    ) as srv:
        with grpc.insecure_channel(srv.target) as plain:  # plaintext to a TLS port fails
            code, _ = code_of(stub(plain).Classify, pb.ClassifyRequest(text=HAM), timeout=3)
            assert code == grpc.StatusCode.UNAVAILABLE
        with ClassifierClient(srv.target, tls_ca=cert) as no_token:
            code, _ = code_of(no_token.classify, HAM, timeout=5)
            assert code == grpc.StatusCode.UNAUTHENTICATED
        with ClassifierClient(srv.target, tls_ca=cert, token="tok") as client:
            assert client.classify(SPAM, timeout=5).verdict.label == "spam"
            health = health_pb2_grpc.HealthStub(client.channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        result = run_python(
            "from serving.client import main; raise SystemExit(main())",
            "--target", srv.target, "--tls-ca", str(cert), HAM,
            env={"SPAM_SERVING_TOKEN": "tok"},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["label"] == "ham"


def test_reflection_alone_is_enough_to_call_the_api_like_grpcurl(channel):
    """What grpcurl does: fetch descriptors by reflection, build messages from JSON, call."""
    from google.protobuf import descriptor_pool, json_format, message_factory

    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    method = pool.FindServiceByName("spam.v1.Classifier").FindMethodByName("Classify")
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    call = channel.unary_unary(
        "/spam.v1.Classifier/Classify",
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    response = call(json_format.Parse(json.dumps({"text": SPAM, "id": "g1"}), request_class()), timeout=10)
    as_json = json.loads(json_format.MessageToJson(response))
    assert as_json["id"] == "g1" and as_json["verdict"]["label"] == "spam"
    assert pool.FindMessageTypeByName("spam.v1.Champion").fields_by_name["loaded_at"].message_type.full_name == (
        "google.protobuf.Timestamp"
    )


def test_long_lived_streams_cannot_take_every_worker(model_store):
    registry = model_store.clone("streams", [model_store.good[0]])
    registry.promote("1", "stream limit test")
    settings = dict(workers=4, max_streams=2, max_concurrent_rpcs=8, max_streams_per_client=0)
    with running_server(model_store, registry.model_name, wait_for="1", **settings) as srv:
        with grpc.insecure_channel(srv.target) as ch:
            watches = [stub(ch).WatchChampion(pb.WatchChampionRequest(), timeout=10) for _ in range(2)]
            assert [next(w).version for w in watches] == ["1", "1"]
            code, details = code_of(
                stub(ch).ClassifyStream, iter([pb.ClassifyStreamRequest(messages=[pb.Message(text=HAM)])]), timeout=5
            )
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "all 2 stream slots" in details
            assert stub(ch).Classify(pb.ClassifyRequest(text=HAM), timeout=5).verdict.label == "ham"
            health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            for w in watches:
                w.cancel()
            wait_until(lambda: srv.serving.open_streams == 0, timeout=5, message="streams released")


def test_config_flags_over_env_over_defaults_and_token_only_from_env():
    from serving.config import ServingConfig, from_args

    env = {"SPAM_SERVING_PORT": "6000", "SPAM_SERVING_POLL_INTERVAL": "2.5", "SPAM_SERVING_TOKEN": "from-env"}
    config, level = from_args(["--port", "7000", "--host", "0.0.0.0"], environ=env)
    assert (config.port, config.host, config.poll_interval, config.token) == (7000, "0.0.0.0", 2.5, "from-env")
    assert config.max_text_bytes == ServingConfig().max_text_bytes == 64 * 1024
    assert config.describe()["token"] == "***"
    with pytest.raises(SystemExit):
        from_args(["--token", "on-the-command-line"], environ={})
    with pytest.raises(ValueError, match="both a certificate and a key"):
        from_args(["--tls-cert", "cert.pem"], environ={})
