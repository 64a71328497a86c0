"""Fair stream admission against the real server: per-client shares, idle timeout, refusals that say when to retry."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serving_fixtures import PROJECT_ROOT, model_store, running_server, wait_until  # noqa: F401 - fixtures

from serving.admission import StreamAdmission, client_of
from serving.client import Backoff, ClassifierClient
from serving.generated.spam.v1 import classifier_pb2 as pb
from serving.generated.spam.v1 import classifier_pb2_grpc as pb_grpc

HAM = "are we still on for lunch tomorrow? see you at home"
SPAM = "WINNER! You have won a cash prize, claim now: call 09061701461"


@pytest.fixture(scope="module")
def registry(model_store):
    registry = model_store.clone("admission", [model_store.good[0]])
    registry.promote("1", "admission tests")
    return registry


def request(*texts: str) -> pb.ClassifyStreamRequest:
    return pb.ClassifyStreamRequest(messages=[pb.Message(id=str(i), text=t) for i, t in enumerate(texts)])


class Silent:
    """Request iterators that send nothing (or a first request, then nothing) until released."""

    def __init__(self):
        self.release = threading.Event()

    def nothing(self):
        self.release.wait(60)
        yield from ()

    def one_then_nothing(self):
        yield request(HAM)
        self.release.wait(60)


def assert_healthy(ch) -> None:
    health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_twenty_idle_streams_of_one_client_leave_room_for_a_new_client(model_store, registry):
    # Dual-stack on "::": 127.0.0.1 and ::1 are two clients (peer addresses) on one machine. Default limits.
    silent = Silent()
    with running_server(model_store, registry.model_name, wait_for="1", host="::") as srv:
        per_client = srv.config.max_streams_per_client
        assert per_client < 20 < srv.config.stream_slots
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as hog, grpc.insecure_channel(f"[::1]:{srv.port}") as other:
            calls = [pb_grpc.ClassifierStub(hog).ClassifyStream(silent.nothing(), timeout=30) for _ in range(20)]
            try:
                wait_until(lambda: sum(c.done() for c in calls) == 20 - per_client, timeout=10, message="refusals")
                refused = [c for c in calls if c.done()]
                assert {c.code() for c in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
                details = refused[0].details()
                assert f"this client (127.0.0.1) already has {per_client} open streams" in details
                assert "--max-streams-per-client" in details and "retry after 1000 ms" in details
                assert ("grpc-retry-pushback-ms", "1000") in [tuple(m) for m in refused[0].trailing_metadata()]
                assert srv.serving.open_streams == per_client

                responses = list(pb_grpc.ClassifierStub(other).ClassifyStream(iter([request(SPAM, HAM)]), timeout=10))
                assert [r.verdict.label for r in responses[0].results] == ["spam", "ham"]
                watch = pb_grpc.ClassifierStub(other).WatchChampion(pb.WatchChampionRequest(), timeout=10)
                assert next(watch).version == "1"
                watch.cancel()
                assert pb_grpc.ClassifierStub(hog).Classify(pb.ClassifyRequest(text=HAM), timeout=5).verdict.label == "ham"
                assert_healthy(hog)
                assert_healthy(other)
            finally:
                silent.release.set()
                for call in calls:
                    call.cancel()
            wait_until(lambda: srv.serving.open_streams == 0, timeout=10, message="every slot released")


def test_a_full_server_refuses_naming_the_limit_and_when_to_retry(model_store, registry):
    silent = Silent()
    settings = dict(workers=6, max_streams=2, max_concurrent_rpcs=16, max_streams_per_client=0)
    with running_server(model_store, registry.model_name, wait_for="1", **settings) as srv:
        with grpc.insecure_channel(srv.target) as ch:
            stub = pb_grpc.ClassifierStub(ch)
            held = [stub.ClassifyStream(silent.nothing(), timeout=30) for _ in range(2)]
            wait_until(lambda: srv.serving.open_streams == 2, message="two streams admitted")
            with pytest.raises(grpc.RpcError) as info:
                list(stub.ClassifyStream(iter([request(HAM)]), timeout=10))
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert info.value.details() == (
                "all 2 stream slots of this server are in use (--max-streams); retry after 1000 ms with backoff "
                f"(idle streams are closed after {srv.config.stream_idle_timeout:g} s)"
            )
            silent.release.set()
            for call in held:
                call.cancel()
            wait_until(lambda: srv.serving.open_streams == 0, message="slots released")
            assert [r.verdict.label for r in next(stub.ClassifyStream(iter([request(HAM)]), timeout=10)).results] == ["ham"]
            assert_healthy(ch)


def test_idle_streams_are_closed_after_the_idle_timeout(model_store, registry):
    silent = Silent()
    with running_server(model_store, registry.model_name, wait_for="1", stream_idle_timeout=0.5) as srv:
        with grpc.insecure_channel(srv.target) as ch:
            stub = pb_grpc.ClassifierStub(ch)
            for requests, answered in [(silent.nothing(), 0), (silent.one_then_nothing(), 1)]:
                received = []
                started = time.monotonic()
                with pytest.raises(grpc.RpcError) as info:
                    for response in stub.ClassifyStream(requests, timeout=20):
                        received.extend(response.results)
                assert time.monotonic() - started < 15  # closed by the server, not by the 20 s deadline
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
                assert info.value.details().startswith("no request on this stream for 0.5 s (--stream-idle-timeout)")
                assert len(received) == answered
            wait_until(lambda: srv.serving.open_streams == 0, message="idle slots released")
            silent.release.set()
            assert_healthy(ch)


def test_client_resends_unanswered_messages_after_an_idle_close(model_store, registry):
    """A pause in the input longer than the idle timeout: the stream is closed and the client goes on, losing nothing."""
    texts = [SPAM if i % 2 else HAM for i in range(40)]

    def slow_input():
        for i, text in enumerate(texts):
            if i == 20:
                time.sleep(1.5)
            yield str(i), text

    retries = []
    with running_server(model_store, registry.model_name, wait_for="1", stream_idle_timeout=0.4) as srv:
        with ClassifierClient(srv.target) as client:
            results = list(
                client.classify_stream(slow_input(), batch_size=4, on_retry=lambda e, d: retries.append(e.code()))
            )
    assert [r.id for r in results] == [str(i) for i in range(40)]  # each once, in order
    assert [r.verdict.label for r in results] == ["spam" if i % 2 else "ham" for i in range(40)]
    assert retries and set(retries) == {grpc.StatusCode.UNAVAILABLE}


def test_spam_classify_retries_until_a_slot_frees(model_store, registry, tmp_path):
    silent = Silent()
    settings = dict(workers=6, max_streams=2, max_concurrent_rpcs=16, max_streams_per_client=0)
    with running_server(model_store, registry.model_name, wait_for="1", **settings) as srv:
        with grpc.insecure_channel(srv.target) as ch:
            held = [pb_grpc.ClassifierStub(ch).ClassifyStream(silent.nothing(), timeout=60) for _ in range(2)]
            wait_until(lambda: srv.serving.open_streams == 2, message="every slot taken")
            cli = subprocess.Popen(
                [sys.executable, "-m", "serving.client", "--target", srv.target, SPAM, HAM],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=PROJECT_ROOT,
                env={**os.environ},
            )
            time.sleep(2.5)
            assert cli.poll() is None  # still retrying, not failed
            silent.release.set()
            for call in held:
                call.cancel()
            out, err = cli.communicate(timeout=30)
    assert cli.returncode == 0, err
    assert [line.split('"label": "')[1].split('"')[0] for line in out.splitlines()] == ["spam", "ham"]
    assert "RESOURCE_EXHAUSTED" in err and "retrying in" in err


def test_retries_are_bounded(model_store, registry):
    silent = Silent()
    settings = dict(workers=6, max_streams=1, max_concurrent_rpcs=16, max_streams_per_client=0)
    with running_server(model_store, registry.model_name, wait_for="1", **settings) as srv:
        with grpc.insecure_channel(srv.target) as ch, ClassifierClient(srv.target) as client:
            held = pb_grpc.ClassifierStub(ch).ClassifyStream(silent.nothing(), timeout=60)
            wait_until(lambda: srv.serving.open_streams == 1, message="the slot taken")
            tries = []
            with pytest.raises(grpc.RpcError) as info:
                list(client.classify_stream([("1", HAM)], backoff=Backoff(attempts=3, base=0.01, cap=0.02),
                                            on_retry=lambda e, d: tries.append(d)))  # fmt: skip
            # The server's pushback (1 s) is the floor of every wait.
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and tries == [1.0, 1.0]
            silent.release.set()
            held.cancel()


def test_admission_counts_per_client_and_in_total():
    admission = StreamAdmission(max_streams=3, max_per_client=2, idle_timeout=30)
    assert admission.admit("a") is None and admission.admit("a") is None
    assert "per-client limit" in admission.admit("a").message
    assert admission.admit("b") is None
    assert "all 3 stream slots" in admission.admit("c").message
    admission.release("a")
    assert admission.admit("c") is None and admission.open_streams == 3


@pytest.mark.parametrize(
    "peer, client",
    [
        ("ipv4:10.0.0.7:51234", "10.0.0.7"),
        ("ipv6:[::1]:51234", "::1"),
        ("ipv6:%5B::1%5D:51234", "::1"),
        ("ipv6:[::ffff:127.0.0.1]:80", "127.0.0.1"),
        ("unix:/tmp/sock", "unix:/tmp/sock"),
    ],
)
def test_client_is_the_peer_address_without_the_port(peer, client):
    assert client_of(peer) == client


def test_stream_limits_in_the_config():
    from serving.config import ServingConfig, from_args

    assert (ServingConfig().workers, ServingConfig().stream_slots) == (64, 48)
    assert ServingConfig(workers=16).stream_slots == 12  # a config that set only --workers keeps its old share
    config, _ = from_args(["--max-streams", "10", "--max-streams-per-client", "0", "--stream-idle-timeout", "5"], environ={})
    assert (config.stream_slots, config.max_streams_per_client, config.stream_idle_timeout) == (10, 0, 5.0)
    assert config.describe()["max_streams"] == 10
    with pytest.raises(ValueError, match="max_streams must be between 1 and workers - 2"):
        ServingConfig(workers=16, max_streams=15)
    with pytest.raises(ValueError, match="max_concurrent_rpcs must exceed max_streams"):
        ServingConfig(max_concurrent_rpcs=48)
    with pytest.raises(ValueError, match="must not be negative"):
        ServingConfig(stream_idle_timeout=-1)
    with pytest.raises(ValueError, match="max_message_bytes must be at least max_request_bytes"):
        ServingConfig(max_message_bytes=1024 * 1024, max_request_bytes=2 * 1024 * 1024)
