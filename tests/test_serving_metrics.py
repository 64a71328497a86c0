"""Prometheus metrics (`--metrics-port`): a real server, known traffic, /metrics scraped over HTTP and parsed."""

from __future__ import annotations

import bisect
import math
import queue
import socket
import threading
import urllib.request

import grpc
import numpy as np
import psutil
import pytest
from prometheus_client import Histogram
from prometheus_client.parser import text_string_to_metric_families
from serving_fixtures import model_store, running_server, wait_until  # noqa: F401

from serving.config import ServingConfig, from_args
from serving.generated.inference import grpc_predict_v2_pb2 as oip_pb
from serving.generated.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from serving.generated.spam.v1 import classifier_pb2 as pb
from serving.generated.spam.v1 import classifier_pb2_grpc as pb_grpc
from serving.metrics import PROBABILITY_BUCKETS, BulkHistogram
from serving.server import start

SPAM = "WINNER! You have won a cash prize, claim now: call 09061701461"
HAM = "are we still on for lunch tomorrow? see you at home"
TOKEN = "metrics-test-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
CLASSIFIER = {"grpc_service": "spam.v1.Classifier"}
INFERENCE = {"grpc_service": "inference.GRPCInferenceService"}


class Scrape:
    """One GET of /metrics, parsed by prometheus_client's own parser."""

    def __init__(self, port: int):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            assert response.status == 200
            text = response.read().decode()
        self.samples = [s for family in text_string_to_metric_families(text) for s in family.samples]

    def all(self, name: str, **labels: str) -> list:
        return [s for s in self.samples if s.name == name and labels.items() <= s.labels.items()]

    def value(self, name: str, default: float | None = None, **labels: str) -> float:
        """The one sample of `name` with these labels (and maybe others); `default` when there is none."""
        found = self.all(name, **labels)
        if not found and default is not None:
            return default
        assert len(found) == 1, f"{name}{labels}: {found}"
        return found[0].value

    def buckets(self, name: str, **labels: str) -> dict[float, float]:
        return {float(s.labels["le"]): s.value for s in self.all(name + "_bucket", **labels)}


def _listening_ports() -> set[int]:
    """TCP ports this test process listens on (its own sockets only)."""
    return {c.laddr.port for c in psutil.Process().net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}


def _expected_buckets(values: list[float], bounds) -> dict[float, float]:
    """Cumulative `le` counts as Prometheus defines them (value <= le)."""
    counts = [0] * (len(bounds) + 1)
    for value in values:
        counts[bisect.bisect_left(bounds, value)] += 1
    cumulative = np.cumsum(counts).tolist()
    return {**{float(b): float(c) for b, c in zip(bounds, cumulative)}, math.inf: float(cumulative[-1])}


def _infer_request(model_name: str, texts: list[str]) -> oip_pb.ModelInferRequest:
    request = oip_pb.ModelInferRequest(model_name=model_name)
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
    tensor.contents.bytes_contents.extend(t.encode() for t in texts)
    return request


def test_metrics_count_the_traffic_sent(model_store):
    """Unary, a stream, OIP, one INVALID_ARGUMENT and one UNAUTHENTICATED call: each counted where it belongs."""
    registry = model_store.clone("metrics", [model_store.good[0]])
    registry.promote("1", "metrics test")
    with running_server(model_store, registry.model_name, wait_for="1", metrics_port=0, token=TOKEN) as srv:
        assert srv.metrics_port and srv.metrics_port != srv.port
        before = Scrape(srv.metrics_port)
        assert before.value("spam_serving_rpcs_handled_total", default=0.0, grpc_method="Classify") == 0.0
        probabilities: list[float] = []
        labels: list[str] = []
        with grpc.insecure_channel(srv.target) as channel:
            stub = pb_grpc.ClassifierStub(channel)
            for i in range(5):
                verdict = stub.Classify(pb.ClassifyRequest(text=(SPAM, HAM)[i % 2]), metadata=AUTH, timeout=10).verdict
                probabilities.append(verdict.spam_probability)
                labels.append(verdict.label)
            assert labels[:2] == ["spam", "ham"]

            # One stream of three requests (1, 4 and 2 messages), each sent after the previous one is
            # answered, so each is scored on its own; mid-stream, the stream holds a slot.
            sizes, answered = (1, 4, 2), queue.Queue()

            def requests():
                for n, size in enumerate(sizes):
                    if n:
                        answered.get(timeout=10)
                    yield pb.ClassifyStreamRequest(
                        messages=[pb.Message(id=f"{n}.{j}", text=(SPAM, HAM)[j % 2]) for j in range(size)]
                    )

            responses = 0
            for response in stub.ClassifyStream(requests(), metadata=AUTH, timeout=30):
                responses += 1
                probabilities += [r.verdict.spam_probability for r in response.results]
                labels += [r.verdict.label for r in response.results]
                if responses == 1:
                    live = Scrape(srv.metrics_port)
                    assert live.value("spam_serving_stream_slots_in_use") == 1
                    assert live.all("spam_serving_rpcs_handled_total", grpc_method="ClassifyStream") == []
                answered.put(None)
            assert responses == 3

            oip = oip_grpc.GRPCInferenceServiceStub(channel)
            texts = [SPAM, HAM, SPAM, HAM, HAM, SPAM]
            result = oip.ModelInfer(_infer_request(registry.model_name, texts), metadata=AUTH, timeout=10)
            tensors = {t.name: i for i, t in enumerate(result.outputs)}
            probabilities += list(result.outputs[tensors["probability"]].contents.fp32_contents)
            labels += [b.decode() for b in result.outputs[tensors["label"]].contents.bytes_contents]

            with pytest.raises(grpc.RpcError) as invalid:
                stub.Classify(pb.ClassifyRequest(text="   "), metadata=AUTH, timeout=10)
            assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.RpcError) as refused:
                stub.Classify(pb.ClassifyRequest(text=HAM), timeout=10)  # no token
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

        m = Scrape(srv.metrics_port)
        handled = "spam_serving_rpcs_handled_total"
        assert m.value(handled, grpc_method="Classify", grpc_code="OK", grpc_type="unary", **CLASSIFIER) == 5
        assert m.value(handled, grpc_method="Classify", grpc_code="INVALID_ARGUMENT") == 1
        assert m.value(handled, grpc_method="Classify", grpc_code="UNAUTHENTICATED") == 1
        assert m.value(handled, grpc_method="ClassifyStream", grpc_code="OK", grpc_type="bidi_stream") == 1
        assert m.value(handled, grpc_method="ModelInfer", grpc_code="OK", **INFERENCE) == 1
        codes = {(s.labels["grpc_method"], s.labels["grpc_code"]) for s in m.all(handled) if s.value}
        assert codes == {("Classify", "OK"), ("Classify", "INVALID_ARGUMENT"), ("Classify", "UNAUTHENTICATED"),
                         ("ClassifyStream", "OK"), ("ModelInfer", "OK")}  # fmt: skip

        # Latency: one observation per call, buckets cumulative up to the count.
        for method, calls in (("Classify", 7), ("ClassifyStream", 1), ("ModelInfer", 1)):
            buckets = m.buckets("spam_serving_rpc_duration_seconds", grpc_method=method)
            assert len(buckets) == 21 and buckets[math.inf] == calls, (method, buckets)
            assert list(buckets.values()) == sorted(buckets.values())
            assert m.value("spam_serving_rpc_duration_seconds_count", grpc_method=method) == calls
            assert m.value("spam_serving_rpc_duration_seconds_sum", grpc_method=method) > 0

        assert m.value("spam_serving_stream_messages_received_total", grpc_method="ClassifyStream") == 3
        assert m.value("spam_serving_stream_messages_sent_total", grpc_method="ClassifyStream") == 3
        assert m.value("spam_serving_stream_slots_in_use") == 0
        assert m.value("spam_serving_stream_slots") == ServingConfig().stream_slots

        texts_per_request = {
            method: (m.value("spam_serving_request_texts_count", grpc_method=method),
                     m.value("spam_serving_request_texts_sum", grpc_method=method))
            for method in ("Classify", "ClassifyStream", "ModelInfer")
        }  # fmt: skip
        assert texts_per_request == {"Classify": (7, 7), "ClassifyStream": (3, 7), "ModelInfer": (1, 6)}
        assert m.buckets("spam_serving_request_texts", grpc_method="ClassifyStream")[2] == 2  # the 1 and the 2

        # Scorer calls: five single texts, three stream batches (1, 4, 2), one OIP batch of 6.
        assert m.buckets("spam_serving_scored_batch_texts") == _expected_buckets(
            [1] * 5 + [1, 4, 2] + [6], [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096]
        )
        assert m.value("spam_serving_scored_batch_texts_sum") == 18

        assert len(labels) == 18
        assert m.value("spam_serving_verdicts_total", label="spam", model_version="1", served="true") == labels.count("spam")
        assert m.value("spam_serving_verdicts_total", label="ham", model_version="1", served="true") == labels.count("ham")
        assert 0 < labels.count("spam") < 18
        assert m.buckets("spam_serving_spam_probability", model_version="1") == _expected_buckets(
            probabilities, PROBABILITY_BUCKETS
        )
        assert m.value("spam_serving_spam_probability_sum", model_version="1") == pytest.approx(sum(probabilities), rel=1e-6)

        info = m.all("spam_serving_model_info")
        assert [s.labels for s in info] == [
            {"model_name": registry.model_name, "version": "1", "scorer": "lean", "alias_version": "1"}
        ]
        assert m.value("spam_serving_model_swaps_total") == 1
        assert m.value("spam_serving_model_refusals_total") == 0
        assert m.value("process_resident_memory_bytes") > 0


def test_a_hot_swap_changes_the_info_metric_and_counts_refusals(model_store):
    registry = model_store.clone("metrics-swap", [model_store.good[0], model_store.inverted, model_store.good[1]])
    registry.promote("1", "first")
    with running_server(model_store, registry.model_name, wait_for="1", metrics_port=0, poll_interval=0.1) as srv:
        with grpc.insecure_channel(srv.target) as channel:
            stub = pb_grpc.ClassifierStub(channel)
            stub.Classify(pb.ClassifyRequest(text=SPAM), timeout=10)

            registry.promote("2", "inverted labels: refused")
            m = wait_until(
                lambda: (m := Scrape(srv.metrics_port)).all("spam_serving_model_info", alias_version="2") and m,
                message="the info metric naming the refused version 2",
            )
            assert m.value("spam_serving_model_refusals_total") == 1
            assert m.value("spam_serving_model_refused_versions") == 1
            (info,) = m.all("spam_serving_model_info")
            assert info.labels["version"] == "1" and info.labels["alias_version"] == "2"  # the alias names 2; 1 serves
            assert m.value("spam_serving_model_swaps_total") == 1

            registry.promote("3", "a good one")
            assert srv.watcher.wait_for("3", timeout=30)
            assert stub.Classify(pb.ClassifyRequest(text=HAM), timeout=10).verdict.model_version == "3"

        m = Scrape(srv.metrics_port)
        (info,) = m.all("spam_serving_model_info")
        assert info.labels == {"model_name": registry.model_name, "version": "3", "scorer": "lean", "alias_version": "3"}
        assert m.value("spam_serving_model_swaps_total") == 2
        assert m.value("spam_serving_model_refused_versions") == 1  # 2, until its backoff ends
        assert m.value("spam_serving_model_refusals_total") == 1  # the alias moved on: 2 was not tried again
        assert m.value("spam_serving_model_loaded_timestamp_seconds") > 0
        # Each verdict is counted under the version that gave it.
        assert m.value("spam_serving_verdicts_total", label="spam", model_version="1") == 1
        assert m.value("spam_serving_verdicts_total", label="ham", model_version="3") == 1
        assert m.all("spam_serving_verdicts_total", model_version="2") == []


def test_a_cancelled_stream_is_counted_cancelled_and_frees_its_slot(model_store):
    registry = model_store.clone("metrics-cancel", [model_store.good[0]])
    registry.promote("1", "cancel test")
    with running_server(model_store, registry.model_name, wait_for="1", metrics_port=0) as srv:
        with grpc.insecure_channel(srv.target) as channel:
            stub = pb_grpc.ClassifierStub(channel)
            hold = threading.Event()

            def requests():
                yield pb.ClassifyStreamRequest(messages=[pb.Message(id="1", text=HAM)])
                hold.wait(10)

            call = stub.ClassifyStream(requests(), timeout=30)
            next(call)
            assert Scrape(srv.metrics_port).value("spam_serving_stream_slots_in_use") == 1
            call.cancel()
            hold.set()
            handled = "spam_serving_rpcs_handled_total"
            m = wait_until(
                lambda: (m := Scrape(srv.metrics_port)).all(handled, grpc_method="ClassifyStream") and m,
                timeout=60,
                message="the cancelled stream counted",
            )
        codes = [(s.labels["grpc_code"], s.value) for s in m.all(handled, grpc_method="ClassifyStream")]
        assert codes == [("CANCELLED", 1.0)]
        assert m.value("spam_serving_stream_slots_in_use") == 0
        assert m.value("spam_serving_stream_messages_sent_total", grpc_method="ClassifyStream") == 1


def test_prediction_log_hook_reports_depth_and_drops_and_survives_a_broken_callback(model_store):
    registry = model_store.clone("metrics-log", [model_store.good[0]])
    with running_server(model_store, registry.model_name, metrics_port=0, prediction_log="off") as srv:
        m = Scrape(srv.metrics_port)
        assert m.all("spam_serving_prediction_log_queue_depth") == []  # no log wired: no metric
        assert m.all("spam_serving_model_info") == []  # no champion yet: the info metric has no sample
        assert m.value("spam_serving_model_swaps_total") == 0

        depth = [3]
        srv.metrics.watch_prediction_log(lambda: depth[0], lambda: 7)
        m = Scrape(srv.metrics_port)
        assert m.value("spam_serving_prediction_log_queue_depth") == 3
        assert m.value("spam_serving_prediction_log_dropped_total") == 7
        depth[0] = 0
        assert Scrape(srv.metrics_port).value("spam_serving_prediction_log_queue_depth") == 0

        def broken() -> int:
            raise RuntimeError("the log is gone")

        srv.metrics.watch_prediction_log(broken, lambda: 9)
        m = Scrape(srv.metrics_port)  # still answers 200
        assert m.all("spam_serving_prediction_log_queue_depth") == []
        assert m.value("spam_serving_prediction_log_dropped_total") == 9
        assert m.value("spam_serving_stream_slots") > 0


def test_metrics_off_nothing_more_listens_and_on_one_port_more(model_store):
    registry = model_store.clone("metrics-off", [model_store.good[0]])
    before = _listening_ports()
    with running_server(model_store, registry.model_name) as srv:
        assert srv.metrics is None and srv.metrics_port is None
        assert _listening_ports() - before == {srv.port}
    with running_server(model_store, registry.model_name, metrics_port=0) as srv:
        assert _listening_ports() - before == {srv.port, srv.metrics_port}
        port = srv.metrics_port
    assert port not in _listening_ports(), "the metrics endpoint stops with the server"


def test_a_taken_metrics_port_is_a_clear_error_and_leaves_nothing_listening(model_store):
    registry = model_store.clone("metrics-taken", [model_store.good[0]])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        before = _listening_ports()
        config = ServingConfig(host="127.0.0.1", port=0, tracking_uri=model_store.uri, model_name=registry.model_name,
                               metrics_port=port)  # fmt: skip
        with pytest.raises(OSError, match=rf"cannot serve metrics on 127\.0\.0\.1:{port} \(--metrics-port\)"):
            start(config)
        assert _listening_ports() == before, "the gRPC port was released"


def test_metrics_settings_come_from_flags_and_environment():
    config, _ = from_args([], environ={})
    assert config.metrics_port is None  # off unless asked for
    config, _ = from_args([], environ={"SPAM_SERVING_METRICS_PORT": "9464", "SPAM_SERVING_HOST": "0.0.0.0"})
    assert config.metrics_port == 9464 and config.metrics_address == "0.0.0.0"  # metrics follow --host by default
    config, _ = from_args(["--metrics-port", "0", "--metrics-host", "127.0.0.1"], environ={"SPAM_SERVING_HOST": "0.0.0.0"})
    assert config.metrics_port == 0 and config.metrics_address == "127.0.0.1"
    with pytest.raises(ValueError, match="metrics_port must be between 0 and 65535"):
        from_args(["--metrics-port", "70000"], environ={})


def test_bulk_histogram_matches_prometheus_histogram_on_the_same_values():
    """Batch observations give what one observe() per value would, edges included (le: value <= bound)."""
    from prometheus_client import CollectorRegistry

    values = np.array([0.0, 0.001, 0.0010001, 0.5, 0.4999, 0.99, 1.0, 0.3, 0.3, 0.75], dtype=float)
    reference = Histogram("reference", "reference", buckets=PROBABILITY_BUCKETS, registry=CollectorRegistry())
    for value in values:
        reference.observe(float(value))
    bulk = BulkHistogram("bulk", "bulk", PROBABILITY_BUCKETS, ("model_version",))
    child = bulk.labels("1")
    child.observe_array(values[:4])  # the three ways in: an array, a list, one value
    child.observe_list(values[4:8].tolist())
    for value in values[8:]:
        child.observe(float(value))

    def samples(collected):
        return {
            (s.name.split("_", 1)[1], s.labels.get("le")): s.value
            for family in collected for s in family.samples if not s.name.endswith("_created")
        }  # fmt: skip

    assert samples(bulk.collect()) == pytest.approx(samples(reference.collect()))


def test_a_taken_grpc_port_also_stops_the_metrics_endpoint(model_store):
    registry = model_store.clone("metrics-grpc-taken", [model_store.good[0]])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        before = _listening_ports()
        config = ServingConfig(host="127.0.0.1", port=port, tracking_uri=model_store.uri, model_name=registry.model_name,
                               metrics_port=0)  # fmt: skip
        with pytest.raises(RuntimeError):
            start(config)
        assert _listening_ports() == before, "the metrics endpoint was stopped"


def test_the_servers_own_prediction_log_is_watched(model_store):
    """With the log on (the default), its queue depth and drops are exported: the real log, not a stand-in."""
    registry = model_store.clone("metrics-real-log", [model_store.good[0]])
    registry.promote("1", "metrics test")
    with running_server(model_store, registry.model_name, wait_for="1", metrics_port=0) as srv:
        stub = pb_grpc.ClassifierStub(grpc.insecure_channel(srv.target))
        for i in range(5):
            stub.Classify(pb.ClassifyRequest(id=str(i), text=HAM), timeout=10)
        srv.predictions.flush(timeout=10)
        m = Scrape(srv.metrics_port)
        assert m.value("spam_serving_prediction_log_queue_depth") == 0  # all written
        assert m.value("spam_serving_prediction_log_dropped_total") == srv.predictions.dropped == 0
        assert m.value("spam_serving_verdicts_total", label="ham", model_version="1") == 5


def test_stream_messages_answered_with_errors_are_counted_and_the_stream_stays_ok(model_store):
    registry = model_store.clone("metrics-message-errors", [model_store.good[0]])
    registry.promote("1", "message errors")
    with running_server(model_store, registry.model_name, wait_for="1", metrics_port=0) as srv:
        with grpc.insecure_channel(srv.target) as channel:
            stub = pb_grpc.ClassifierStub(channel)
            request = pb.ClassifyStreamRequest(
                messages=[pb.Message(id="good", text=HAM), pb.Message(id="empty", text=""), pb.Message(id="blank", text="  ")]
            )
            (response,) = stub.ClassifyStream(iter([request]), timeout=10)
        outcomes = {r.id: r.WhichOneof("outcome") for r in response.results}
        assert outcomes == {"good": "verdict", "empty": "error", "blank": "error"}
        m = Scrape(srv.metrics_port)
        errors = "spam_serving_stream_message_errors_total"
        assert m.value(errors, grpc_method="ClassifyStream", grpc_code="INVALID_ARGUMENT", **CLASSIFIER) == 2
        assert [s.labels["grpc_code"] for s in m.all(errors) if s.value] == ["INVALID_ARGUMENT"]
        assert m.value("spam_serving_rpcs_handled_total", grpc_method="ClassifyStream", grpc_code="OK") == 1
        assert m.value("spam_serving_verdicts_total", label="ham", model_version="1", served="true") == 1


def test_calls_refused_at_the_concurrent_rpc_limit_are_counted(model_store):
    """gRPC refuses a call over --max-concurrent-rpcs before any handler runs; /metrics still counts it."""
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    registry = model_store.clone("metrics-rpc-limit", [model_store.good[0]])
    registry.promote("1", "rpc limit")
    with running_server(
        model_store, registry.model_name, wait_for="1", metrics_port=0, max_streams=1, max_concurrent_rpcs=2
    ) as srv:
        with grpc.insecure_channel(srv.target) as channel:
            stub = pb_grpc.ClassifierStub(channel)
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            release = threading.Event()

            def held_open():  # one request, then the stream stays open (an active RPC) until released
                yield reflection_pb2.ServerReflectionRequest(list_services="")
                release.wait(20)

            streams = [reflection.ServerReflectionInfo(held_open(), timeout=30) for _ in range(2)]
            try:
                for stream in streams:
                    assert next(stream).list_services_response.service  # both are running on the server
                for _ in range(3):
                    with pytest.raises(grpc.RpcError) as refused:
                        stub.Classify(pb.ClassifyRequest(text=HAM), timeout=10)
                    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            finally:
                release.set()
                for stream in streams:
                    list(stream)
            wait_until(lambda: Scrape(srv.metrics_port).value(
                "spam_serving_rpcs_handled_total", default=0.0, grpc_method="ServerReflectionInfo", grpc_code="OK"
            ) == 2, message="both reflection streams counted as ended")  # fmt: skip
            assert stub.Classify(pb.ClassifyRequest(text=HAM), timeout=10).verdict.label == "ham"
        m = Scrape(srv.metrics_port)
        handled = "spam_serving_rpcs_handled_total"
        assert m.value(handled, grpc_method="Classify", grpc_code="RESOURCE_EXHAUSTED", grpc_type="unary") == 3
        assert m.value(handled, grpc_method="Classify", grpc_code="OK") == 1
        # A refused call has no handler time: only the call that ran is in the latency histogram.
        assert m.value("spam_serving_rpc_duration_seconds_count", grpc_method="Classify") == 1


def test_without_grpcs_concurrency_state_refusals_are_not_counted_and_the_log_says_so(caplog):
    """If gRPC moves its active-call count, the interceptor counts what it can and says what it cannot."""
    from types import SimpleNamespace

    from serving.metrics import Metrics

    metrics = Metrics()
    with caplog.at_level("WARNING", logger="serving.metrics"):
        assert metrics.interceptor.watch_limit(SimpleNamespace()) is False  # a server with no `_state`
    assert "calls it refuses are not counted" in caplog.text
    moved = SimpleNamespace(_state=SimpleNamespace(maximum_concurrent_rpcs=2))  # the count itself gone
    assert metrics.interceptor.watch_limit(moved) is False
    state = SimpleNamespace(maximum_concurrent_rpcs=2, active_rpc_count=1)
    assert metrics.interceptor.watch_limit(SimpleNamespace(_state=state)) is True
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: None)
    details = SimpleNamespace(method="/spam.v1.Classifier/Classify", invocation_metadata=())
    labels = {"grpc_service": "spam.v1.Classifier", "grpc_method": "Classify", "grpc_type": "unary"}
    refused = lambda: metrics.registry.get_sample_value(  # noqa: E731
        "spam_serving_rpcs_handled_total", {**labels, "grpc_code": "RESOURCE_EXHAUSTED"}
    )
    metrics.interceptor.intercept_service(lambda d: handler, details)
    assert refused() is None  # under the limit: nothing refused
    state.active_rpc_count = 2
    metrics.interceptor.intercept_service(lambda d: handler, details)
    assert refused() == 1.0
