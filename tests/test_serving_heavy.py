"""Heavy requests scored in worker processes (`serving.heavy_pool`), against the real server.

Same answers as in process, bit for bit; hot swaps followed; a worker killed
mid-request costs that request (UNAVAILABLE) and nothing else; no worker
outlives its server, however the server ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading

import grpc
import numpy as np
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serving_fixtures import PROJECT_ROOT, PYTHON, model_store, random_words, running_server, wait_until  # noqa: F401 - fixtures

from serving.generated.inference import grpc_predict_v2_pb2 as oip_pb
from serving.generated.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from serving.generated.spam.v1 import classifier_pb2 as pb
from serving.generated.spam.v1 import classifier_pb2_grpc as pb_grpc
from serving.heavy_pool import score_in_chunks
from serving.oip import encode_raw_bytes

HAM = "are we still on for lunch tomorrow? see you at home"
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def heavy_texts(seed: int, count: int = 3, nbytes: int = 40 * 1024) -> list[str]:
    """Over the 64 KiB heavy bound together, each a legal text; a spam and a ham text among them."""
    rng = np.random.default_rng(seed)
    texts = [random_words(rng, nbytes) for _ in range(count)]
    texts[0] += " WINNER!! You have won a cash prize. To claim call 09061701461 now"
    texts[1] = HAM + " " + texts[1]
    return texts


def stream_scores(channel, texts: list[str]) -> tuple[list[float], set[str]]:
    request = pb.ClassifyStreamRequest(messages=[pb.Message(id=str(i), text=t) for i, t in enumerate(texts)])
    (response,) = pb_grpc.ClassifierStub(channel).ClassifyStream(iter([request]), timeout=120)
    assert [r.WhichOneof("outcome") for r in response.results] == ["verdict"] * len(texts), response.results
    return [r.verdict.spam_probability for r in response.results], {r.verdict.model_version for r in response.results}


def infer_request(model_name: str, texts: list[str]) -> oip_pb.ModelInferRequest:
    request = oip_pb.ModelInferRequest(model_name=model_name)
    request.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
    request.raw_input_contents.append(encode_raw_bytes([t.encode() for t in texts]))
    return request


def assert_serving(channel) -> None:
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def in_process(running, texts: list[str]) -> list[float]:
    champion = running.watcher.current
    return score_in_chunks(champion.scorer.scores, texts, running.config.max_batch).tolist()


def test_a_heavy_request_gets_the_same_bits_with_workers_on_and_off(model_store):
    registry = model_store.clone("heavy-same", [model_store.good[0]])
    registry.promote("1", "test")
    texts = heavy_texts(1)
    with running_server(model_store, registry.model_name, wait_for="1", heavy_workers=1) as pooled:
        with grpc.insecure_channel(pooled.target) as ch:
            stream_scores(ch, [HAM])  # light: never sent to a worker
            assert pooled.heavy_pool.jobs_scored == 0
            from_worker, versions = stream_scores(ch, texts)
            assert pooled.heavy_pool.jobs_scored == 1
            reference = in_process(pooled, texts)
    with running_server(model_store, registry.model_name, wait_for="1", heavy_workers=0) as alone:
        assert alone.heavy_pool is None
        with grpc.insecure_channel(alone.target) as ch:
            from_process, _ = stream_scores(ch, texts)
    assert versions == {"1"}
    assert from_worker == from_process == reference  # exact floats, not approximately
    assert from_worker[0] >= 0.5 > from_worker[1]


def test_a_hot_swap_between_heavy_requests_is_followed_by_the_worker(model_store):
    registry = model_store.clone("heavy-swap", [model_store.good[0], model_store.good[1]])
    registry.promote("1", "test")
    texts = heavy_texts(2)
    with running_server(model_store, registry.model_name, wait_for="1", heavy_workers=1) as running:
        with grpc.insecure_channel(running.target) as ch:
            first, versions_first = stream_scores(ch, texts)
            assert first == in_process(running, texts)
            registry.promote("2", "test swap")
            assert running.watcher.wait_for("2", timeout=30)
            second, versions_second = stream_scores(ch, texts)
            assert second == in_process(running, texts)
        assert running.heavy_pool.jobs_scored == 2
    assert versions_first == {"1"} and versions_second == {"2"}
    assert first != second  # the two versions are different models: the worker did swap


def _kill_worker_mid_request(running, call):
    """Run `call` in a thread, SIGKILL the worker once it holds the job; the call's outcome."""
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(call())
        except grpc.RpcError as error:
            outcome.append(error)

    sender = threading.Thread(target=run)
    sender.start()
    (pid,) = wait_until(lambda: running.heavy_pool.busy_pids, timeout=60, message="a worker scoring the request")
    os.kill(pid, signal.SIGKILL)
    sender.join(60)
    assert not sender.is_alive()
    return pid, outcome[0]


def test_a_worker_killed_mid_request_answers_unavailable_and_the_next_heavy_request_works(model_store):
    registry = model_store.clone("heavy-kill", [model_store.good[0]])
    registry.promote("1", "test")
    texts = heavy_texts(3, count=8, nbytes=60 * 1024)
    with running_server(model_store, registry.model_name, wait_for="1", heavy_workers=1) as running:
        with grpc.insecure_channel(running.target) as ch:
            infer = oip_grpc.GRPCInferenceServiceStub(ch).ModelInfer
            killed, error = _kill_worker_mid_request(
                running, lambda: infer(infer_request(registry.model_name, texts), timeout=120)
            )
            assert isinstance(error, grpc.RpcError) and error.code() == UNAVAILABLE
            assert f"scoring worker (pid {killed}) was killed by SIGKILL while scoring this request" in error.details()
            assert "retry" in error.details()
            assert_serving(ch)
            assert killed not in running.heavy_pool.pids and len(running.heavy_pool.pids) == 1

            # On a stream: every message of that request gets UNAVAILABLE, and the stream goes on.
            requests = iter([pb.ClassifyStreamRequest(messages=[pb.Message(id=str(i), text=t) for i, t in enumerate(texts)])])
            stream = pb_grpc.ClassifierStub(ch).ClassifyStream
            killed_too, responses = _kill_worker_mid_request(running, lambda: list(stream(requests, timeout=120)))
            assert killed_too != killed
            (response,) = responses
            assert {r.error.code for r in response.results} == {UNAVAILABLE.value[0]}
            assert all(f"pid {killed_too}" in r.error.message for r in response.results)
            assert_serving(ch)

            response = infer(infer_request(registry.model_name, texts), timeout=120)  # the new worker answers
            probabilities = np.frombuffer(response.raw_output_contents[1], dtype="<f4")
            assert probabilities.tolist() == np.asarray(in_process(running, texts), dtype="<f4").tolist()
            assert running.heavy_pool.jobs_scored == 1


def test_no_worker_outlives_a_server_stopped_in_process(model_store):
    registry = model_store.clone("heavy-stop", [model_store.good[0]])
    registry.promote("1", "test")
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    with running_server(model_store, registry.model_name, wait_for="1", heavy_workers=2) as running:
        workers = [psutil.Process(pid) for pid in running.heavy_pool.pids]
        assert len(workers) == 2 and {p.pid for p in me.children(recursive=True)} - before == {w.pid for w in workers}
        if hasattr(os, "SCHED_IDLE"):  # below every normal process, so light calls on a shared core go first
            for worker in workers:
                wait_until(lambda w=worker: os.sched_getscheduler(w.pid) == os.SCHED_IDLE, message="SCHED_IDLE")
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert alive == [] and {p.pid for p in me.children(recursive=True)} - before == set()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_no_worker_outlives_a_spam_serve_process(model_store, tmp_path, signum):
    registry = model_store.clone("heavy-process", [model_store.good[0]])
    registry.promote("1", "test")
    server = subprocess.Popen(
        [PYTHON, "-m", "serving.server", "--port", "0", "--tracking-uri", model_store.uri,
         "--model-name", registry.model_name, "--heavy-workers", "2", "--grace", "1"],
        cwd=PROJECT_ROOT, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "SPAM_HOME": str(tmp_path)},
    )  # fmt: skip
    try:
        for line in server.stderr:
            if "spam-serve listening on" in line:
                break
        workers = psutil.Process(server.pid).children(recursive=True)
        assert len(workers) == 2 and all("serving.heavy_pool" in " ".join(w.cmdline()) for w in workers)
        server.send_signal(signum)
        server.wait(30)
        gone, alive = psutil.wait_procs(workers, timeout=10)
        assert alive == [], f"workers {[p.pid for p in alive]} outlived the server ({signum.name})"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_heavy_workers_is_a_flag_and_an_environment_variable_and_never_negative():
    from serving.config import ServingConfig, from_args

    assert ServingConfig().heavy_workers == 1
    assert from_args(["--heavy-workers", "0"], environ={})[0].heavy_workers == 0
    assert from_args([], environ={"SPAM_SERVING_HEAVY_WORKERS": "3"})[0].heavy_workers == 3
    with pytest.raises(ValueError, match="heavy_workers must be 0"):
        ServingConfig(heavy_workers=-1)


# --- the pool on its own, with real workers and a real verified model --------------------------------


@pytest.fixture()
def champion(model_store):
    from serving.watcher import load_version

    registry = model_store.clone("heavy-pool", [model_store.good[0]])
    return load_version(registry, registry.client.get_model_version(registry.model_name, "1"))


@pytest.fixture()
def lane():
    from serving.classify import HeavyLane
    from serving.heavy_pool import ScoringPool

    pool = ScoringPool(1, checkout_timeout=0.5)
    try:
        yield HeavyLane(pool=pool)
    finally:
        pool.close()


def test_a_worker_that_cannot_verify_its_copy_is_bypassed_and_the_server_scores_in_process(champion, lane, caplog):
    assert champion.folder.path in champion.model_dir.parents  # the server's own copy, not the store's files
    model_file = next(p for p in champion.model_dir.iterdir() if p.suffix == ".skops")
    model_file.write_bytes(model_file.read_bytes() + b"tampered after the server verified it")
    texts = heavy_texts(4)
    scores = lane.scores(champion, texts, 256).tolist()
    assert scores == score_in_chunks(champion.scorer.scores, texts, 256).tolist()
    assert lane.pool.jobs_scored == 0
    assert "scoring worker refused 1" in caplog.text and "checksum mismatch" in caplog.text


def test_a_worker_that_died_while_idle_is_replaced_before_the_request_is_sent(champion, lane):
    (pid,) = lane.pool.pids
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    texts = heavy_texts(5)
    assert lane.scores(champion, texts, 256).tolist() == score_in_chunks(champion.scorer.scores, texts, 256).tolist()
    assert lane.pool.jobs_scored == 1 and pid not in lane.pool.pids


def test_no_free_worker_within_the_checkout_timeout_is_unavailable(champion, lane):
    from serving.classify import RequestError

    taken = lane.pool._idle.get()  # as if a long heavy request held the only worker
    try:
        with pytest.raises(RequestError) as info:
            lane.scores(champion, heavy_texts(6), 256)
    finally:
        lane.pool._idle.put(taken)
    assert info.value.code == UNAVAILABLE
    assert info.value.message == "no heavy-request scoring worker free for 0.5 s; retry later"
