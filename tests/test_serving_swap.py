"""Champion lifecycle: no champion, promotion, hot swap under load, refused versions, shutdown."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serving_fixtures import PYTHON, PROJECT_ROOT, free_port, model_store, running_server, wait_until  # noqa: F401

from serving.watcher import load_version
from spam_assets.model.artifact import RefusedModel
from spam_assets.model.tags import TAG_MODEL_SHA256
from serving.generated.inference import grpc_predict_v2_pb2 as oip_pb
from serving.generated.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from serving.generated.spam.v1 import classifier_pb2 as pb
from serving.generated.spam.v1 import classifier_pb2_grpc as pb_grpc

SPAM = "WINNER! You have won a cash prize, claim now: call 09061701461"
HAM = "are we still on for lunch tomorrow? see you at home"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        result = call(*args, **kwargs)
        if isinstance(result, grpc.Call):
            list(result)
    return info.value


def test_not_serving_without_champion_then_serving_after_promotion(model_store):
    registry = model_store.clone("health", [model_store.good[0]])  # registered, not promoted
    with running_server(model_store, registry.model_name) as srv, grpc.insecure_channel(srv.target) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for service in ("", "spam.v1.Classifier", "inference.GRPCInferenceService"):
            assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status == NOT_SERVING

        classifier = pb_grpc.ClassifierStub(ch)
        for error in (
            rpc_error(classifier.Classify, pb.ClassifyRequest(text=HAM), timeout=5),
            rpc_error(classifier.ClassifyStream, iter([pb.ClassifyStreamRequest()]), timeout=5),
            rpc_error(classifier.GetChampion, pb.GetChampionRequest(), timeout=5),
        ):
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            assert "no champion model loaded yet" in error.details()
        oip = oip_grpc.GRPCInferenceServiceStub(ch)
        assert not oip.ServerReady(oip_pb.ServerReadyRequest(), timeout=5).ready
        assert oip.ServerLive(oip_pb.ServerLiveRequest(), timeout=5).live
        request = oip_pb.ModelInferRequest(model_name=registry.model_name)
        request.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.append(HAM.encode())
        assert rpc_error(oip.ModelInfer, request, timeout=5).code() == grpc.StatusCode.UNAVAILABLE

        health_watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
        assert next(health_watch).status == NOT_SERVING
        champion_watch = classifier.WatchChampion(pb.WatchChampionRequest(), timeout=30)

        registry.promote("1", "first champion")  # the server notices by polling
        assert next(health_watch).status == SERVING
        assert next(champion_watch).version == "1"
        assert classifier.Classify(pb.ClassifyRequest(text=SPAM), timeout=5).verdict.label == "spam"
        assert oip.ServerReady(oip_pb.ServerReadyRequest(), timeout=5).ready

        # Graceful shutdown: watchers see NOT_SERVING, then the server goes away.
        threading.Thread(target=srv.shutdown, kwargs={"grace": 2.0}, daemon=True).start()
        assert next(health_watch).status == NOT_SERVING
        champion_watch.cancel()
        health_watch.cancel()


def paced_stream(stop: threading.Event, sent: list[str]):
    """Stream requests of mixed shapes (1 or 8 messages, SPAM and HAM in turn), paced so the server is busy but
    not flooded (~4k msgs/s), until `stop`; each message's id is appended to `sent` before it goes."""
    n = 0
    while not stop.is_set():
        size = 1 if n % 3 else 8
        batch = [pb.Message(id=str(n + i), text=(SPAM, HAM)[(n + i) % 2]) for i in range(size)]
        sent.extend(m.id for m in batch)
        n += size
        yield pb.ClassifyStreamRequest(messages=batch)
        time.sleep(0.001)


def test_hot_swap_under_streaming_load_drops_nothing(model_store):
    registry = model_store.clone("swap", [model_store.good[0], model_store.good[1]])
    registry.promote("1", "before the swap")
    with running_server(model_store, registry.model_name, wait_for="1", poll_interval=0.1) as srv:
        channel = grpc.insecure_channel(srv.target)
        stub = pb_grpc.ClassifierStub(channel)
        stop = threading.Event()
        sent: list[str] = []

        def requests():
            return paced_stream(stop, sent)

        received: list[pb.Result] = []
        failures: list[BaseException] = []

        def consume():
            try:
                for response in stub.ClassifyStream(requests(), timeout=60):
                    received.extend(response.results)
            except BaseException as error:  # noqa: BLE001
                failures.append(error)

        unary_versions: list[str] = []

        def unary_caller():
            while not stop.is_set():
                try:
                    unary_versions.append(stub.Classify(pb.ClassifyRequest(text=HAM), timeout=10).verdict.model_version)
                except grpc.RpcError as error:
                    failures.append(error)
                time.sleep(0.005)

        threads = [threading.Thread(target=consume), threading.Thread(target=unary_caller)]
        for t in threads:
            t.start()
        wait_until(lambda: len(received) >= 1000, message="1000 results from version 1")
        promoted_at = len(received)
        registry.promote("2", "hot swap under load")
        assert srv.watcher.wait_for("2", timeout=30)
        swapped_at = len(received)
        wait_until(lambda: len(received) >= swapped_at + 1000, message="1000 results after the swap")
        stop.set()
        for t in threads:
            t.join(30)
        channel.close()

    assert not failures, failures
    assert [r.id for r in received] == sent, "every message answered once, in order"
    assert all(r.WhichOneof("outcome") == "verdict" for r in received)
    versions = [r.verdict.model_version for r in received]
    switch = versions.index("2")
    assert switch > 0 and set(versions[:switch]) == {"1"} and set(versions[switch:]) == {"2"}, "monotonic swap"
    assert [r.verdict.label for r in received] == ["spam" if int(r.id) % 2 == 0 else "ham" for r in received]
    assert unary_versions and unary_versions == sorted(unary_versions) and unary_versions[-1] == "2"
    assert swapped_at > promoted_at, "the stream kept being answered while version 2 loaded"


def _truncate_model(folder: Path) -> None:
    model = folder / "model.skops"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])


def test_broken_new_champions_are_refused_and_the_old_keeps_serving(model_store, caplog):
    corrupted = model_store.tampered_copy(model_store.good[1], _truncate_model)
    registry = model_store.clone(
        "refuse", [model_store.good[0], model_store.inverted, corrupted, model_store.good[1]]
    )
    registry.promote("1", "good")
    with running_server(model_store, registry.model_name, wait_for="1", poll_interval=0.1) as srv:
        with grpc.insecure_channel(srv.target) as ch:
            stub = pb_grpc.ClassifierStub(ch)
            health = health_pb2_grpc.HealthStub(ch)
            # Version 3's file was altered after registration: its recorded sha256 no longer matches.
            for bad, reason in (("2", "wrong labels on"), ("3", "checksum mismatch")):
                registry.promote(bad, "this one is broken")
                refusal = wait_until(lambda bad=bad: srv.watcher.refused.get(bad), message=f"version {bad} refused")
                assert reason in refusal.reason
                assert stub.Classify(pb.ClassifyRequest(text=SPAM), timeout=5).verdict.model_version == "1"
                assert stub.GetChampion(pb.GetChampionRequest(), timeout=5).version == "1"
                assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == SERVING
            time.sleep(1.0)  # ten polls: a refused version is remembered, not reloaded each time
            assert srv.watcher.refused["3"].attempts == 1
            assert sum("REFUSED" in r.getMessage() and " version 3 " in r.getMessage() for r in caplog.records) == 1

            registry.promote("4", "a good one again")
            assert srv.watcher.wait_for("4", timeout=30)
            assert stub.Classify(pb.ClassifyRequest(text=HAM), timeout=5).verdict.model_version == "4"
            registry.rollback()  # alias back to 3 (corrupted): still refused, 4 keeps serving
            time.sleep(0.5)
            assert stub.Classify(pb.ClassifyRequest(text=HAM), timeout=5).verdict.model_version == "4"


def _edit_mlmodel(change):
    def edit(folder: Path) -> None:
        path = folder / "MLmodel"
        doc = yaml.safe_load(path.read_text())
        change(doc["flavors"]["sklearn"])
        path.write_text(yaml.safe_dump(doc))

    return edit


@pytest.mark.parametrize(
    ("edit", "tags", "reason"),
    [
        # A version registered before checksums were recorded: skops itself must refuse it.
        (_truncate_model, {TAG_MODEL_SHA256: ""}, "skops could not load"),
        (lambda folder: (folder / "model.skops").unlink(), {}, "model file missing"),
        (_edit_mlmodel(lambda f: f.update(serialization_format="cloudpickle")), {}, "'cloudpickle' refused"),
        (_edit_mlmodel(lambda f: f["skops_trusted_types"].append("builtins.eval")), {}, "builtins.eval"),
        (None, {TAG_MODEL_SHA256: "0" * 64}, "checksum mismatch"),
    ],
    ids=["truncated", "missing", "pickle-format", "widened-trust", "checksum"],
)
def test_load_version_refuses_tampered_artifacts(model_store, edit, tags, reason):
    source = model_store.tampered_copy(model_store.good[0], edit) if edit else model_store.good[0]
    registry = model_store.clone("tampered", [source], tags=[tags])
    version = registry.client.get_model_version(registry.model_name, "1")
    with pytest.raises(RefusedModel, match=reason):
        load_version(registry, version)


def test_load_version_checks_a_recorded_checksum(model_store):
    import hashlib

    digest = hashlib.sha256((model_store.artifact_dir(model_store.good[0]) / "model.skops").read_bytes()).hexdigest()
    registry = model_store.clone("checksum", [model_store.good[0]], tags=[{TAG_MODEL_SHA256: digest}])
    champion = load_version(registry, registry.client.get_model_version(registry.model_name, "1"))
    assert champion.model_sha256 == digest
    assert champion.scorer.scores([SPAM, HAM]).round().tolist() == [1.0, 0.0]
    # The served numbers come from the lean scorer, and they are the pipeline's own.
    assert champion.scorer.name == "lean"
    np.testing.assert_allclose(
        champion.scorer.scores([SPAM, HAM, "see you"]),
        champion.verified.predict_proba([SPAM, HAM, "see you"]),
        atol=1e-9,
    )


def test_in_flight_stream_finishes_during_graceful_shutdown(model_store):
    registry = model_store.clone("grace", [model_store.good[0]])
    registry.promote("1", "shutdown test")
    with running_server(model_store, registry.model_name, wait_for="1") as srv:
        channel = grpc.insecure_channel(srv.target)
        stub = pb_grpc.ClassifierStub(channel)
        outbox: queue.Queue = queue.Queue()
        responses = stub.ClassifyStream(iter(outbox.get, None), timeout=30)
        outbox.put(pb.ClassifyStreamRequest(messages=[pb.Message(id="before", text=HAM)]))
        assert next(responses).results[0].id == "before"

        stopper = threading.Thread(target=srv.shutdown, kwargs={"grace": 5.0})
        stopper.start()
        wait_until(lambda: rpc_code(stub) == grpc.StatusCode.UNAVAILABLE, message="new calls refused")
        for i in range(20):  # the open stream keeps working inside the grace period
            outbox.put(pb.ClassifyStreamRequest(messages=[pb.Message(id=f"during-{i}", text=SPAM)]))
        outbox.put(None)
        rest = [r.id for response in responses for r in response.results]
        assert rest == [f"during-{i}" for i in range(20)]
        stopper.join(10)
        assert not stopper.is_alive()
        channel.close()


def rpc_code(stub) -> grpc.StatusCode:
    try:
        stub.Classify(pb.ClassifyRequest(text=HAM), timeout=2)
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        return error.code()


@pytest.mark.slow
def test_sigterm_drains_and_exits_cleanly(model_store):
    """The real `spam-serve` process: SIGTERM → health NOT_SERVING, in-flight stream finishes, exit 0."""
    registry = model_store.clone("sigterm", [model_store.good[0]])
    registry.promote("1", "sigterm test")
    port = free_port()
    env = {**os.environ, "SPAM_SERVING_TRACKING_URI": model_store.uri, "MLFLOW_DISABLE_TELEMETRY": "true",
           "SPAM_SERVING_PREDICTION_LOG": str(model_store.root / model_store.unique_name("predictions"))}
    process = subprocess.Popen(
        [PYTHON, "-m", "serving.server", "--port", str(port), "--model-name", registry.model_name, "--grace", "5",
         "--poll-interval", "0.2"],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        health = health_pb2_grpc.HealthStub(channel)

        def serving():
            try:
                return health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == SERVING
            except grpc.RpcError:
                return False

        wait_until(serving, timeout=60, interval=0.2, message="the server to serve")
        watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=30)
        assert next(watch).status == SERVING
        outbox: queue.Queue = queue.Queue()
        responses = pb_grpc.ClassifierStub(channel).ClassifyStream(iter(outbox.get, None), timeout=30)
        outbox.put(pb.ClassifyStreamRequest(messages=[pb.Message(id="a", text=HAM)]))
        assert next(responses).results[0].id == "a"

        process.send_signal(signal.SIGTERM)
        assert next(watch).status == NOT_SERVING
        outbox.put(pb.ClassifyStreamRequest(messages=[pb.Message(id="b", text=SPAM)]))
        outbox.put(None)
        assert [r.id for response in responses for r in response.results] == ["b"]
        watch.cancel()
        channel.close()
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = process.stdout.read()
    assert "shutting down" in output and "stopped" in output
