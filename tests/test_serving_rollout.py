"""Staged rollout in the server: a challenger in shadow and canary, followed from the registry's tags.

Real servers on a real MLflow store (serving_fixtures); the stage is set as
the graph sets it, by tagging the version the `challenger` alias names.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import subprocess
import threading
import time
import urllib.request

import grpc
import psutil
import pytest
from mlflow.entities.model_registry import ModelVersion, ModelVersionTag
from prometheus_client.parser import text_string_to_metric_families
import numpy as np
from serving_fixtures import (  # noqa: F401
    PROJECT_ROOT,
    PYTHON,
    free_port,
    model_store,
    random_words,
    running_server,
    wait_until,
)

from serving.config import ServingConfig, from_args

from serving.generated.inference import grpc_predict_v2_pb2 as oip_pb
from serving.generated.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from serving.generated.spam.v1 import classifier_pb2 as pb
from serving.generated.spam.v1 import classifier_pb2_grpc as pb_grpc
from serving.rollout import Policy, canary_bucket, live_stage, shadow_bucket
from serving.shadow import ShadowScorer
from serving.watcher import load_version
from spam_assets.model.tags import TAG_ROLLOUT_CANARY_SHARE, TAG_ROLLOUT_SINCE, TAG_ROLLOUT_STAGE
from spam_assets.traffic.prediction_files import find, read_predictions
from tests.test_serving_swap import paced_stream

SPAM = "WINNER! You have won a cash prize, claim now: call 09061701461"
HAM = "are we still on for lunch tomorrow? see you at home"
TEXTS = [SPAM, HAM, "free entry txt win cash now", "see you at dinner tonight love mum", "call me when you get back"]


def set_stage(registry, version: str, stage: str, share: float | str | None = None) -> None:
    """What the graph does: tag the version with its stage (and canary share), and name it with the alias."""
    name, client = registry.model_name, registry.client
    client.set_model_version_tag(name, version, TAG_ROLLOUT_STAGE, stage)
    client.set_model_version_tag(name, version, TAG_ROLLOUT_SINCE, datetime.datetime.now(datetime.UTC).isoformat())
    if share is not None:
        client.set_model_version_tag(name, version, TAG_ROLLOUT_CANARY_SHARE, str(share))
    registry.set_challenger(version)


def wait_challenger(srv, version: str | None, stage: str | None = None, loaded: bool = True):
    def ready(models) -> bool:
        c = models.challenger
        if version is None:
            return c is None
        return c is not None and c.version == version and (stage is None or c.stage.stage == stage) and (
            (c.model is not None) == loaded
        )

    models = srv.watcher.wait_for_models(ready, timeout=30)
    assert models is not None, f"challenger never became {version} {stage} (loaded={loaded}): {srv.watcher.models}"
    return models


def infer_request(model_name: str, texts: list[str], request_id: str = "") -> oip_pb.ModelInferRequest:
    request = oip_pb.ModelInferRequest(model_name=model_name, id=request_id)
    request.inputs.add(name="text", datatype="BYTES", shape=[len(texts)]).contents.bytes_contents.extend(
        t.encode() for t in texts
    )
    return request


def oip_verdicts(response) -> tuple[list[str], list[str]]:
    outputs = {o.name: o for o in response.outputs}
    return [v.decode() for v in outputs["verdict_id"].contents.bytes_contents], [
        v.decode() for v in outputs["label"].contents.bytes_contents
    ]


def scrape(port: int) -> list:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def sample(samples, name: str, **labels) -> float:
    found = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def logged(srv):
    """Every record the server wrote, once its shadow queue and log queue are empty."""
    assert srv.shadow.drain(timeout=30)
    assert srv.predictions.flush(timeout=30)
    return read_predictions(srv.predictions.directory, include_open=True)


def probabilities(registry, version: str, texts: list[str]) -> dict[str, float]:
    """What `version` gives each text, loaded here on its own through the serving gate."""
    model = load_version(registry, registry.client.get_model_version(registry.model_name, version))
    return dict(zip(texts, model.scorer.scores(texts).tolist(), strict=True))


# --- the routing rule ------------------------------------------------------------------------------


def test_buckets_are_sha256_of_the_id_or_of_the_texts_sha256():
    digest = hashlib.sha256(b"msg-42").digest()
    assert canary_bucket("msg-42", "whatever text") == int.from_bytes(digest[:8], "big") / 2**64
    assert shadow_bucket("msg-42", "other text") == int.from_bytes(digest[8:16], "big") / 2**64
    text_key = hashlib.sha256(HAM.encode()).hexdigest().encode()
    assert canary_bucket("", HAM) == int.from_bytes(hashlib.sha256(text_key).digest()[:8], "big") / 2**64
    buckets = [canary_bucket(f"m{i}", "") for i in range(2000)]
    assert all(0 <= b < 1 for b in buckets)
    assert 0.27 < sum(b < 0.3 for b in buckets) / len(buckets) < 0.33


def _version(version: str, **tags) -> ModelVersion:
    return ModelVersion("spam-classifier", version, 0, tags=[ModelVersionTag(k, v) for k, v in tags.items()])


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({}, None),
        ({TAG_ROLLOUT_STAGE: "retired"}, None),
        ({TAG_ROLLOUT_STAGE: "promoted"}, None),
        ({TAG_ROLLOUT_STAGE: "shadow", TAG_ROLLOUT_CANARY_SHARE: "0.4"}, ("shadow", 0.0, "")),
        ({TAG_ROLLOUT_STAGE: "canary", TAG_ROLLOUT_CANARY_SHARE: "0.25"}, ("canary", 0.25, "")),
        ({TAG_ROLLOUT_STAGE: "canary", TAG_ROLLOUT_CANARY_SHARE: "1.5"}, ("canary", 0.0, "not a share")),
        ({TAG_ROLLOUT_STAGE: "canary", TAG_ROLLOUT_CANARY_SHARE: "nan"}, ("canary", 0.0, "not a share")),
        ({TAG_ROLLOUT_STAGE: "canary"}, ("canary", 0.0, "not a share")),
    ],
)
def test_live_stage_reads_the_contracts_tags(tags, expected):
    stage = live_stage(_version("3", **tags), champion_version="2")
    if expected is None:
        assert stage is None
    else:
        assert (stage.stage, stage.canary_share) == expected[:2]
        assert expected[2] in stage.problem and bool(stage.problem) == bool(expected[2])
    # The champion's own version is never a challenger, whatever its tags.
    assert live_stage(_version("2", **{TAG_ROLLOUT_STAGE: "shadow"}), champion_version="2") is None
    assert live_stage(None, champion_version="2") is None


def test_rollout_switches_come_from_flags_and_environment():
    config, _ = from_args(["--shadow-share", "0.25", "--canary", "off"], environ={})
    assert (config.shadow_share, config.canary, config.shadow_queue) == (0.25, False, 10_000)
    config, _ = from_args([], environ={"SPAM_SERVING_SHADOW_SHARE": "0", "SPAM_SERVING_CANARY": "on",
                                       "SPAM_SERVING_SHADOW_QUEUE": "7"})  # fmt: skip
    assert (config.shadow_share, config.canary, config.shadow_queue) == (0.0, True, 7)
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="shadow_share must be between 0 and 1"):
            ServingConfig(shadow_share=bad)
    with pytest.raises(ValueError, match="expected on or off"):
        from_args([], environ={"SPAM_SERVING_CANARY": "maybe"})


def test_shadow_share_picks_the_same_messages_every_time():
    policy = Policy(shadow_share=0.4)
    ids, texts = [f"m{i}" for i in range(500)], [HAM] * 500
    picked = policy.shadowed(ids, texts)
    assert picked == policy.shadowed(ids, texts) == [i for i in range(500) if shadow_bucket(ids[i], HAM) < 0.4]
    assert 0.33 < len(picked) / 500 < 0.47
    assert Policy(shadow_share=1.0).shadowed(ids, texts) == list(range(500))
    assert Policy(shadow_share=0.0).shadowed(ids, texts) == []


def test_older_segments_read_as_served_by_the_champion(tmp_path):
    old = {
        "verdict_id": "019ac6f0-5b1e-7c3a-9f2e-4d1b8a6c0e21", "client_id": "1", "api": "Classify",
        "time": "2026-01-01T00:00:00.000+00:00", "model_name": "m", "model_version": "1", "scorer": "lean",
        "spam_probability": 0.9, "label": "spam", "latency_ms": 1.0, "text_sha256": "0" * 64, "text": "x",
    }  # fmt: skip
    (tmp_path / "predictions-019ac6f0-0000-7000-8000-000000000000-host-1.jsonl").write_text(json.dumps(old) + "\n")
    frame = read_predictions(tmp_path)
    assert frame["role"].tolist() == ["champion"] and frame["served"].tolist() == [True]


# --- shadow ----------------------------------------------------------------------------------------


def test_shadow_through_every_api_logs_pairs_and_callers_see_the_champion(model_store):
    registry = model_store.clone("shadow", [model_store.good[0], model_store.good[1]])
    registry.promote("1", "champion")
    set_stage(registry, "2", "shadow")
    n = 12
    texts = [TEXTS[i % len(TEXTS)] for i in range(n)]
    with running_server(model_store, registry.model_name, wait_for="1", metrics_port=0) as srv:
        wait_challenger(srv, "2", "shadow")
        with grpc.insecure_channel(srv.target) as channel:
            stub = pb_grpc.ClassifierStub(channel)
            given = {}  # verdict id -> (api, client id, label) the caller got
            for i, text in enumerate(texts):
                v = stub.Classify(pb.ClassifyRequest(id=f"u{i}", text=text), timeout=10).verdict
                assert v.model_version == "1"
                given[v.verdict_id] = ("Classify", f"u{i}", v.label)
            stream = [pb.ClassifyStreamRequest(messages=[pb.Message(id=f"s{i}", text=t)]) for i, t in enumerate(texts)]
            for response in stub.ClassifyStream(iter(stream), timeout=30):
                (result,) = response.results
                assert result.verdict.model_version == "1"
                given[result.verdict.verdict_id] = ("ClassifyStream", result.id, result.verdict.label)
            oip = oip_grpc.GRPCInferenceServiceStub(channel)
            response = oip.ModelInfer(infer_request(registry.model_name, texts, "batch-1"), timeout=10)
            assert response.model_version == "1"
            for verdict_id, label in zip(*oip_verdicts(response), strict=True):
                given[verdict_id] = ("ModelInfer", "batch-1", label)

            champion = stub.GetChampion(pb.GetChampionRequest(), timeout=5)
            assert champion.version == "1" and champion.HasField("challenger")
            c = champion.challenger
            assert (c.version, c.stage, c.canary_share, c.shadow_share, c.loaded) == ("2", "shadow", 0.0, 1.0, True)
            metadata = oip.ModelMetadata(oip_pb.ModelMetadataRequest(name=registry.model_name), timeout=5)
            assert metadata.parameters["challenger_version"].string_param == "2"
            assert metadata.parameters["challenger_stage"].string_param == "shadow"
            assert metadata.parameters["challenger_canary_share"].double_param == 0.0
            assert list(metadata.versions) == ["1", "2"]

        frame = logged(srv)
        samples = scrape(srv.metrics_port)
        assert len(given) == 3 * n
        served, shadow = frame[frame["served"]], frame[~frame["served"]]
        assert len(served) == len(shadow) == 3 * n
        assert set(served["verdict_id"]) == set(shadow["verdict_id"]) == set(given)
        assert set(served["role"]) == {"champion"} and set(served["model_version"]) == {"1"}
        assert set(shadow["role"]) == {"challenger"} and set(shadow["model_version"]) == {"2"}
        pairs = served.set_index("verdict_id").join(shadow.set_index("verdict_id"), rsuffix="_shadow")
        for column in ("client_id", "api", "text_sha256", "text"):
            assert (pairs[column] == pairs[column + "_shadow"]).all(), column
        for verdict_id, (api, client_id, label) in given.items():
            row = pairs.loc[verdict_id]
            assert (row["api"], row["client_id"], row["label"]) == (api, client_id, label)
        # The shadow verdicts are version 2's own numbers, the served ones version 1's.
        expected = {v: probabilities(registry, v, TEXTS) for v in ("1", "2")}
        for _, row in pairs.iterrows():
            assert row["spam_probability"] == pytest.approx(expected["1"][row["text"]], abs=1e-9)
            assert row["spam_probability_shadow"] == pytest.approx(expected["2"][row["text"]], abs=1e-9)
        agree = int((pairs["label"] == pairs["label_shadow"]).sum())
        # A lookup by verdict id (feedback's) finds the served record, never its shadow twin.
        some = next(iter(given))
        assert find(srv.predictions.directory, some)["served"] is True

        assert sample(samples, "spam_serving_shadow_verdicts_total", agreement="agree") == agree
        assert sample(samples, "spam_serving_shadow_verdicts_total", agreement="disagree") == 3 * n - agree
        assert sample(samples, "spam_serving_role_verdicts_total", role="champion", served="true") == 3 * n
        assert sample(samples, "spam_serving_role_verdicts_total", role="challenger", served="false") == 3 * n
        assert sample(samples, "spam_serving_role_verdicts_total", role="challenger", served="true") == 0
        # Per version, shadow verdicts are counted apart from served ones: a spam rate is what callers got.
        verdicts = "spam_serving_verdicts_total"
        for served_, version, count in (("true", "1", 3 * n), ("false", "2", 3 * n)):
            assert sum(s.value for s in samples if s.name == verdicts and s.labels["served"] == served_
                       and s.labels["model_version"] == version) == count, (served_, version)  # fmt: skip
        assert not [s for s in samples if s.name == verdicts and (s.labels["served"], s.labels["model_version"])
                    in {("false", "1"), ("true", "2")} and s.value]  # fmt: skip
        assert sample(samples, "spam_serving_spam_probability_count", model_version="2", served="false") == 3 * n
        info = [s for s in samples if s.name == "spam_serving_challenger_info"]
        assert len(info) == 1 and info[0].labels["version"] == "2" and info[0].labels["stage"] == "shadow"
        assert info[0].labels["state"] == "loaded"
        assert sample(samples, "spam_serving_shadow_dropped_total", reason="queue_full") == 0
        # Scored in a worker process at the lowest priority the ordinary scheduler has.
        worker = srv.shadow.worker_pid
        assert worker is not None and worker != os.getpid()
        assert psutil.Process(worker).nice() == 19
    assert wait_until(lambda: not psutil.pid_exists(worker) or psutil.Process(worker).status() == psutil.STATUS_ZOMBIE,
                      timeout=10, message="the shadow worker to exit with the server")  # fmt: skip


def test_a_full_shadow_queue_drops_and_counts_and_the_caller_never_fails(model_store):
    registry = model_store.clone("shadow-full", [model_store.good[0], model_store.good[1]])
    registry.promote("1", "champion")
    set_stage(registry, "2", "shadow")
    # A shadow thread that takes twice a second, scoring in the server's own thread (--shadow-worker off).
    slow = ShadowScorer(Policy(), max_messages=3, delay=0.5, worker_process=False)
    with running_server(model_store, registry.model_name, wait_for="1", shadow=slow, metrics_port=0) as srv:
        wait_challenger(srv, "2", "shadow")
        with grpc.insecure_channel(srv.target) as channel:
            stub = pb_grpc.ClassifierStub(channel)
            versions = [stub.Classify(pb.ClassifyRequest(text=TEXTS[i % 5]), timeout=10).verdict.model_version for i in range(40)]
            # A request of 64 KiB of text is heavy: not scored in shadow (in this process it would hold the GIL).
            heavy = random_words(np.random.default_rng(0), 64 * 1024)
            versions.append(stub.Classify(pb.ClassifyRequest(text=heavy), timeout=30).verdict.model_version)
        assert versions == ["1"] * 41
        frame = logged(srv)
        dropped = slow.dropped["queue_full"]
        assert dropped >= 30, slow.dropped
        assert slow.dropped["heavy"] == 1
        assert int(frame["served"].sum()) == 41
        assert int((~frame["served"]).sum()) == 40 - dropped
        assert sample(scrape(srv.metrics_port), "spam_serving_shadow_dropped_total", reason="queue_full") == dropped


# --- canary ----------------------------------------------------------------------------------------


def _serve_subprocess(store, model_name: str, folder) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "SPAM_SERVING_PREDICTION_LOG": str(folder)}
    process = subprocess.Popen(
        [PYTHON, "-m", "serving.server", "--port", str(port), "--tracking-uri", store.uri, "--model-name", model_name,
         "--poll-interval", "0.2", "--grace", "1"],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return process, f"127.0.0.1:{port}"


def test_a_killed_shadow_worker_costs_its_batch_only_and_a_new_one_takes_over(model_store):
    """The idle shadow worker process SIGKILLed: callers never notice, and the next batch finds a new worker."""
    import signal

    registry = model_store.clone("shadow-kill", [model_store.good[0], model_store.good[1]])
    registry.promote("1", "champion")
    set_stage(registry, "2", "shadow")
    with running_server(model_store, registry.model_name, wait_for="1") as srv:
        wait_challenger(srv, "2", "shadow")
        with grpc.insecure_channel(srv.target) as channel:
            stub = pb_grpc.ClassifierStub(channel)

            def send(prefix: str) -> list[str]:
                verdicts = [stub.Classify(pb.ClassifyRequest(id=f"{prefix}{i}", text=t), timeout=10).verdict
                            for i, t in enumerate(TEXTS)]  # fmt: skip
                assert {v.model_version for v in verdicts} == {"1"}
                return [v.verdict_id for v in verdicts]

            send("a")
            assert srv.shadow.drain(timeout=30)
            (worker,) = srv.shadow._pool._workers
            os.kill(worker.pid, signal.SIGKILL)
            worker.process.wait(10)
            after = send("b") + send("c")
            frame = logged(srv)
            (replacement,) = srv.shadow._pool._workers
    assert replacement.pid != worker.pid
    assert set(after) <= set(frame[~frame["served"]]["verdict_id"])  # shadowed by the new worker
    assert srv.shadow.dropped["failed"] == 0
    assert len(frame[frame["served"]]) == 3 * len(TEXTS)  # every caller's verdict logged


def test_canary_routing_is_deterministic_across_calls_and_processes(model_store, tmp_path):
    registry = model_store.clone("canary", [model_store.good[0], model_store.good[1]])
    registry.promote("1", "champion")
    share = 0.3
    set_stage(registry, "2", "canary", share)
    ids = [f"m{i}" for i in range(150)]
    expected = {i: "2" if canary_bucket(i, "") < share else "1" for i in ids}
    process, other_target = _serve_subprocess(model_store, registry.model_name, tmp_path / "other")
    try:
        with running_server(model_store, registry.model_name, wait_for="1") as srv, running_server(
            model_store, registry.model_name, wait_for="1", canary=False
        ) as refusing:
            wait_challenger(srv, "2", "canary")
            wait_challenger(refusing, "2", "canary")
            with grpc.insecure_channel(srv.target) as a, grpc.insecure_channel(other_target) as b:
                sa, sb = pb_grpc.ClassifierStub(a), pb_grpc.ClassifierStub(b)

                def b_ready():
                    try:
                        c = sb.GetChampion(pb.GetChampionRequest(), timeout=2).challenger
                        return c.loaded and c.stage == "canary"
                    except grpc.RpcError:
                        return False

                wait_until(b_ready, timeout=90, interval=0.3, message="the second process to load the canary")
                assert sb.GetChampion(pb.GetChampionRequest(), timeout=5).challenger.canary_share == share

                def versions(stub) -> dict[str, str]:
                    return {
                        i: stub.Classify(pb.ClassifyRequest(id=i, text=TEXTS[n % 5]), timeout=10).verdict.model_version
                        for n, i in enumerate(ids)
                    }

                first, again, other = versions(sa), versions(sa), versions(sb)
                assert first == again == other == expected
                assert 0.2 < sum(v == "2" for v in first.values()) / len(ids) < 0.4
                # A stream routes each message by its own id, as unary calls do.
                stream = [pb.ClassifyStreamRequest(messages=[pb.Message(id=i, text=HAM) for i in ids[k : k + 16]])
                          for k in range(0, len(ids), 16)]  # fmt: skip
                streamed = {r.id: r.verdict.model_version for resp in sa.ClassifyStream(iter(stream), timeout=30)
                            for r in resp.results}  # fmt: skip
                assert streamed == expected
                # No id: the text's sha256 decides, the same on every call and process.
                texts = [f"{HAM} #{k}" for k in range(40)]
                by_text = {t: "2" if canary_bucket("", t) < share else "1" for t in texts}
                for stub in (sa, sb):
                    assert {t: stub.Classify(pb.ClassifyRequest(text=t), timeout=10).verdict.model_version
                            for t in texts} == by_text  # fmt: skip
                # OIP routes a request as one message, by its id.
                oip = oip_grpc.GRPCInferenceServiceStub(a)
                for i in ids[:20]:
                    response = oip.ModelInfer(infer_request(registry.model_name, [SPAM, HAM], i), timeout=10)
                    assert response.model_version == expected[i]
            with grpc.insecure_channel(refusing.target) as c:
                stub = pb_grpc.ClassifierStub(c)
                assert {stub.Classify(pb.ClassifyRequest(id=i, text=HAM), timeout=10).verdict.model_version
                        for i in ids} == {"1"}  # fmt: skip
                assert stub.GetChampion(pb.GetChampionRequest(), timeout=5).challenger.canary_share == 0.0
            frame = logged(srv)
    finally:
        process.terminate()
        process.wait(timeout=30)
    served, shadow = frame[frame["served"]], frame[~frame["served"]]
    # Messages the challenger answered are served by it and shadowed by the champion, and the other way round.
    assert set(zip(served["role"], served["model_version"])) == {("champion", "1"), ("challenger", "2")}
    assert set(zip(shadow["role"], shadow["model_version"])) == {("champion", "1"), ("challenger", "2")}
    pairs = served.set_index("verdict_id").join(shadow.set_index("verdict_id"), rsuffix="_shadow", how="inner")
    assert len(pairs) == len(served) == len(shadow)
    assert (pairs["model_version"] != pairs["model_version_shadow"]).all()
    unary = served[(served["api"] == "Classify") & served["client_id"].isin(ids)]
    assert {r.client_id: r.model_version for r in unary.itertuples()} == expected


def test_stage_changes_are_followed_without_restart(model_store, caplog):
    caplog.set_level(logging.INFO, logger="serving.watcher")
    registry = model_store.clone("stages", [model_store.good[0], model_store.good[1]])
    registry.promote("1", "champion")
    set_stage(registry, "2", "shadow")
    ids = [f"x{i}" for i in range(40)]
    with running_server(model_store, registry.model_name, wait_for="1") as srv, grpc.insecure_channel(srv.target) as ch:
        stub = pb_grpc.ClassifierStub(ch)

        def answered() -> set[str]:
            return {stub.Classify(pb.ClassifyRequest(id=i, text=HAM), timeout=10).verdict.model_version for i in ids}

        wait_challenger(srv, "2", "shadow")
        watch = stub.WatchChampion(pb.WatchChampionRequest(), timeout=60)
        assert answered() == {"1"}
        set_stage(registry, "2", "canary", 1.0)
        wait_challenger(srv, "2", "canary")
        assert answered() == {"2"}
        set_stage(registry, "2", "canary", 0.0)
        wait_until(lambda: srv.watcher.models.challenger.stage.canary_share == 0.0, message="share 0")
        assert answered() == {"1"}
        set_stage(registry, "2", "retired")
        wait_challenger(srv, None)
        assert answered() == {"1"}
        assert not stub.GetChampion(pb.GetChampionRequest(), timeout=5).HasField("challenger")
        assert any("challenger version 2 unloaded" in r.getMessage() for r in caplog.records)
        # WatchChampion told each change of the challenger, not only swaps.
        stages = []
        while True:
            message = next(watch)
            stages.append(message.challenger.stage if message.HasField("challenger") else "")
            if stages[-1] == "":
                break
        watch.cancel()
        assert stages[0] == "shadow" and "canary" in stages

        # A challenger promoted to champion swaps in without loading again: it passed the same gate.
        set_stage(registry, "2", "canary", 0.5)
        loaded = wait_challenger(srv, "2", "canary").challenger.model
        registry.promote("2", "won its rollout")
        registry.client.set_model_version_tag(registry.model_name, "2", TAG_ROLLOUT_STAGE, "promoted")
        champion = srv.watcher.wait_for("2", timeout=30)
        assert champion is not None and champion.verified is loaded.verified, "the challenger's verified model serves"
        assert srv.watcher.models.challenger is None
        assert answered() == {"2"}


def test_a_challenger_the_checks_refuse_leaves_the_champion_serving(model_store, caplog):
    registry = model_store.clone("refused-challenger", [model_store.good[0], model_store.inverted])
    registry.promote("1", "champion")
    set_stage(registry, "2", "canary", 1.0)
    with running_server(model_store, registry.model_name, wait_for="1", metrics_port=0) as srv:
        models = wait_challenger(srv, "2", "canary", loaded=False)
        assert "wrong labels" in models.challenger.refusal
        with grpc.insecure_channel(srv.target) as ch:
            stub = pb_grpc.ClassifierStub(ch)
            assert {stub.Classify(pb.ClassifyRequest(id=f"r{i}", text=SPAM), timeout=10).verdict.model_version
                    for i in range(30)} == {"1"}  # fmt: skip
            c = stub.GetChampion(pb.GetChampionRequest(), timeout=5).challenger
            assert (c.version, c.stage, c.loaded, c.canary_share) == ("2", "canary", False, 0.0)
            assert "wrong labels" in c.refusal
        time.sleep(1.0)  # five polls: remembered, not reloaded
        assert srv.watcher.refused["2"].attempts == 1
        samples = scrape(srv.metrics_port)
        frame = logged(srv)
    assert any("REFUSED" in r.getMessage() and " version 2 " in r.getMessage() for r in caplog.records)
    info = [s for s in samples if s.name == "spam_serving_challenger_info"]
    assert len(info) == 1 and info[0].labels["state"] == "refused" and info[0].labels["canary_share"] == "0.0"
    assert sample(samples, "spam_serving_model_refusals_total") == 1
    assert len(frame) == 30 and frame["served"].all() and set(frame["model_version"]) == {"1"}


# --- hot swap under load, shadow and canary on -----------------------------------------------------


def test_hot_swap_under_load_with_shadow_and_canary_drops_nothing(model_store):
    """Champion 1 with challenger 2 in canary; 2 is promoted and 3 becomes the canary, all under load."""
    registry = model_store.clone("swap-rollout", [model_store.good[0], model_store.good[1], model_store.good[0]])
    registry.promote("1", "before")
    share = 0.5
    set_stage(registry, "2", "canary", share)
    expected_p = {v: probabilities(registry, v, [SPAM, HAM]) for v in ("1", "2", "3")}
    with running_server(model_store, registry.model_name, wait_for="1", poll_interval=0.1) as srv:
        wait_challenger(srv, "2", "canary")
        channel = grpc.insecure_channel(srv.target)
        stub = pb_grpc.ClassifierStub(channel)
        oip = oip_grpc.GRPCInferenceServiceStub(channel)
        stop = threading.Event()
        sent: list[str] = []

        def requests():
            return paced_stream(stop, sent)

        received: list[pb.Result] = []
        failures: list[BaseException] = []
        unary: list[tuple[str, pb.Verdict]] = []
        inferred: list[tuple[str, str, float]] = []

        def consume():
            try:
                for response in stub.ClassifyStream(requests(), timeout=120):
                    received.extend(response.results)
            except BaseException as error:  # noqa: BLE001
                failures.append(error)

        def unary_caller():
            k = 0
            while not stop.is_set():
                k += 1
                text = (SPAM, HAM)[k % 2]
                try:
                    unary.append((text, stub.Classify(pb.ClassifyRequest(id=f"u{k}", text=text), timeout=10).verdict))
                    r = oip.ModelInfer(infer_request(registry.model_name, [text], f"o{k}"), timeout=10)
                    p = {o.name: o for o in r.outputs}["probability"].contents.fp32_contents[0]
                    inferred.append((text, r.model_version, p))
                except grpc.RpcError as error:
                    failures.append(error)
                time.sleep(0.005)

        threads = [threading.Thread(target=consume), threading.Thread(target=unary_caller)]
        for t in threads:
            t.start()
        wait_until(lambda: len(received) >= 1000, timeout=60, message="1000 results before the promotion")
        registry.promote("2", "won its canary")
        registry.client.set_model_version_tag(registry.model_name, "2", TAG_ROLLOUT_STAGE, "promoted")
        set_stage(registry, "3", "canary", share)
        assert srv.watcher.wait_for("2", timeout=30)
        wait_challenger(srv, "3", "canary")
        swapped_at = len(received)
        wait_until(lambda: len(received) >= swapped_at + 1000, timeout=60, message="1000 results after")
        stop.set()
        for t in threads:
            t.join(60)
        channel.close()
        frame = logged(srv)

    assert not failures, failures
    assert [r.id for r in received] == sent, "every message answered once, in order"
    assert all(r.WhichOneof("outcome") == "verdict" for r in received)
    # Each verdict is the named version's own number for its text: tagged with the version that produced it.
    text_of = {str(i): (SPAM, HAM)[i % 2] for i in range(len(sent))}
    for r in received:
        assert r.verdict.spam_probability == pytest.approx(expected_p[r.verdict.model_version][text_of[r.id]], abs=1e-9)
    for text, verdict in unary:
        assert verdict.spam_probability == pytest.approx(expected_p[verdict.model_version][text], abs=1e-9)
    for text, version, p in inferred:
        assert p == pytest.approx(expected_p[version][text], abs=1e-6)  # FP32
    # Before the promotion the canary split 1 and 2 by bucket; after it, 2 and 3 by the same buckets.
    versions = [r.verdict.model_version for r in received]
    assert {"1", "2", "3"} <= set(versions)
    first_3 = versions.index("3")
    last_1 = len(versions) - 1 - versions[::-1].index("1")
    assert last_1 < first_3, "version 1 never answers once 3 has"
    for r in received[:last_1 + 1]:
        assert r.verdict.model_version == ("2" if canary_bucket(r.id, "") < share else "1")
    for r in received[first_3:]:
        assert r.verdict.model_version == ("3" if canary_bucket(r.id, "") < share else "2")
    # The log agrees with what callers got, and every served verdict of the stream has its shadow twin.
    served = frame[frame["served"]].set_index("verdict_id")
    shadow = frame[~frame["served"]].set_index("verdict_id")
    for r in received:
        assert served.loc[r.verdict.verdict_id, "model_version"] == r.verdict.model_version
    # Answered by 1 (challenger 2 beside it) or by 3 (champion 2 beside it): scored by the other in shadow too.
    # Answers of 2 between its promotion and 3's loading had no other model to shadow them.
    paired = [r.verdict.verdict_id for r in received if r.verdict.model_version in ("1", "3")]
    assert set(paired) <= set(shadow.index), "a message lost its shadow verdict"
    assert (shadow.loc[paired, "model_version"] == "2").all()
