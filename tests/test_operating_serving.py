"""Serving by the operating point, the action tiers, and explanations: real servers, a real MLflow store.

The shared store's versions (serving_fixtures) carry no operating point, so
they serve at 0.5. Versions here get one two ways: a linear SVM on word and
character n-grams (the SMS champion's shape) logged by the platform's own
`log_challenger` with the operating point chosen on its holdout, and clones
of a stored version with operating-point tags set by hand (thresholds placed
around the model's own scores, so the test knows which tier to expect).
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from types import SimpleNamespace

import grpc
import numpy as np
import pandas as pd
import pytest
from test_serving_metrics import Scrape
from serving_fixtures import model_store, running_server, served, synthetic_messages, wait_until  # noqa: F401

from serving import client as spam_classify
from serving.generated.inference import grpc_predict_v2_pb2 as oip_pb
from serving.generated.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from serving.generated.spam.v1 import classifier_pb2 as pb
from serving.generated.spam.v1 import classifier_pb2_grpc as pb_grpc
from serving.oip import decode_raw_bytes, encode_raw_bytes
from serving.verdicts import explanation
from spam_assets.model.artifact import RefusedModel
from spam_assets.model.evasion import normalise_folded, normalise_skeleton, normalise_word_pairs
from spam_assets.model.explain import explain
from spam_assets.model.operating_point import Tiers
from spam_assets.model.scorer import PipelineScorer
from spam_assets.model.tags import TAG_OPERATING_POINT, TAG_OPERATING_THRESHOLD, TAG_SUSPICIOUS_THRESHOLD
from spam_assets.traffic.prediction_files import read_predictions
from spam_assets.traffic_tables import compact_hour, hour_start

SPAM = "WINNER! You have won a cash prize, claim now: call 09061701461"
HAM = "are we still on for lunch tomorrow? see you at home"


@pytest.fixture(scope="module")
def svm_version(model_store):
    """A word + char SVM, logged with the operating point chosen on its holdout (as trained_model does)."""
    import mlflow
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    from spam_assets.challenger import log_challenger
    from spam_assets.model.operating_point import choose
    from spam_assets.model.pipelines import candidate_pipelines
    from spam_assets.model.registry import Registry, ensure_experiment
    from spam_assets.modeling import select_and_fit, spam_probability

    frame = pd.DataFrame(synthetic_messages(600, seed=11), columns=["text", "label"])
    train, test = frame.iloc[:400], frame.iloc[400:]
    result = select_and_fit(
        train, test, seed=0, folds=2, candidates={"word_char_svm": candidate_pipelines(0)["word_char_svm"]}, n_jobs=1
    )
    point = choose(test["label"], spam_probability(result.model, test["text"]), target_ham_fpr=0.01)
    registry = Registry(model_store.uri, model_store.unique_name("operating"))
    with _use_tracking_uri(model_store.uri):
        experiment = ensure_experiment(model_store.uri, model_store.root / "artifacts")
        with mlflow.start_run(experiment_id=experiment):
            version = log_challenger(
                result, registry, corpus_version="synthetic-op", dagster_run_id="dagster-run-op",
                params={"seed": 0}, n_train=400, n_holdout=200, operating_point=point,
            )  # fmt: skip
    registry.promote(version.version, "operating point test")
    return SimpleNamespace(registry=registry, version=version, point=point)


@pytest.fixture(scope="module")
def svm_server(model_store, svm_version):
    with running_server(model_store, svm_version.registry.model_name, wait_for=str(svm_version.version.version)) as srv:
        yield srv


def test_log_challenger_stores_the_operating_point_as_tags_and_metrics(svm_version):
    registry, version, point = svm_version.registry, svm_version.version, svm_version.point
    assert float(version.tags[TAG_OPERATING_THRESHOLD]) == point.threshold
    assert float(version.tags[TAG_SUSPICIOUS_THRESHOLD]) == point.suspicious_from <= point.threshold
    stored = json.loads(version.tags[TAG_OPERATING_POINT])
    assert (stored["n_ham"], stored["target_ham_fpr"], stored["basis"]) == (point.n_ham, 0.01, point.basis)
    metrics = registry.client.get_run(version.run_id).data.metrics
    assert metrics["holdout_operating_threshold"] == pytest.approx(point.threshold)
    assert metrics["holdout_ham_fpr_upper_at_operating_point"] == pytest.approx(point.ham_fpr_high)
    card = registry.card(version)
    assert card.tiers == Tiers.from_tags(version.tags) and card.tiers.source == "tags"


def test_get_champion_and_oip_metadata_show_the_operating_point(svm_server, svm_version):
    point = svm_version.point
    with grpc.insecure_channel(svm_server.target) as ch:
        champion = pb_grpc.ClassifierStub(ch).GetChampion(pb.GetChampionRequest(), timeout=5)
        meta = oip_grpc.GRPCInferenceServiceStub(ch).ModelMetadata(
            oip_pb.ModelMetadataRequest(name=svm_version.registry.model_name), timeout=5
        )
    op = champion.operating_point
    assert (op.threshold, op.suspicious_from, op.source, op.basis) == (point.threshold, point.suspicious_from, "tags", point.basis)
    assert champion.metrics["holdout_operating_threshold"] == pytest.approx(point.threshold)  # from MLflow
    assert meta.parameters["operating_threshold"].double_param == point.threshold
    assert meta.parameters["suspicious_threshold"].double_param == point.suspicious_from
    assert meta.parameters["operating_point_source"].string_param == "tags"


def test_a_version_without_an_operating_point_serves_at_half_with_two_tiers(served):
    with grpc.insecure_channel(served.target) as ch:
        stub = pb_grpc.ClassifierStub(ch)
        op = stub.GetChampion(pb.GetChampionRequest(), timeout=5).operating_point
        verdicts = [stub.Classify(pb.ClassifyRequest(text=t), timeout=5).verdict for t in (SPAM, HAM)]
    assert (op.threshold, op.suspicious_from, op.source) == (0.5, 0.5, "default")
    assert [(v.label, v.tier) for v in verdicts] == [("spam", "spam"), ("ham", "ham")]
    assert verdicts[0].spam_probability >= 0.5 > verdicts[1].spam_probability


def _scores(registry, version: str, texts: list[str]) -> np.ndarray:
    return registry.load_verified(version).scorer.scores(texts)


def test_label_and_tier_follow_the_versions_thresholds_on_every_api(model_store):
    """Thresholds placed around the model's own scores: one spam above, one in the suspicious band, one ham below."""
    base = model_store.clone("tiers-base", [model_store.good[0]])
    texts = [SPAM, "free prize txt now, see you at lunch", HAM]
    p = _scores(base, "1", texts)
    assert p[0] > p[1] > p[2], p
    threshold, suspicious = float(p[0] + p[1]) / 2, float(p[1] + p[2]) / 2
    tags = {TAG_OPERATING_THRESHOLD: repr(threshold), TAG_SUSPICIOUS_THRESHOLD: repr(suspicious)}
    registry = model_store.clone("tiers", [model_store.good[0]], tags=[tags])
    registry.promote("1", "tiers test")
    expected = [("spam", "spam"), ("ham", "suspicious"), ("ham", "ham")]
    server = running_server(model_store, registry.model_name, wait_for="1", metrics_port=0)
    with server as srv, grpc.insecure_channel(srv.target) as ch:
        stub = pb_grpc.ClassifierStub(ch)
        unary = [stub.Classify(pb.ClassifyRequest(text=t), timeout=5).verdict for t in texts]
        request = pb.ClassifyStreamRequest(messages=[pb.Message(id=str(i), text=t) for i, t in enumerate(texts)])
        (response,) = list(stub.ClassifyStream(iter([request]), timeout=10))
        oip_request = oip_pb.ModelInferRequest(model_name=registry.model_name)
        oip_request.inputs.add(name="text", datatype="BYTES", shape=[3])
        oip_request.raw_input_contents.append(encode_raw_bytes([t.encode() for t in texts]))
        oip = oip_grpc.GRPCInferenceServiceStub(ch).ModelInfer(oip_request, timeout=10)
        assert srv.predictions.flush()
        logged = read_predictions(srv.predictions.directory, include_open=True)
        scrape = Scrape(srv.metrics_port)
    # Prometheus counts verdicts as they were given: by the version's threshold (3 APIs x 1 spam, 2 ham).
    counted = {label: scrape.value("spam_serving_verdicts_total", label=label, model_version="1") for label in ("spam", "ham")}
    assert counted == {"spam": 3, "ham": 6}, (counted, p)
    assert [(v.label, v.tier) for v in unary] == expected
    assert [(r.verdict.label, r.verdict.tier) for r in response.results] == expected
    outputs = {o.name: i for i, o in enumerate(oip.outputs)}
    labels = [b.decode() for b in decode_raw_bytes(oip.raw_output_contents[outputs["label"]], 3)]
    tiers = [b.decode() for b in decode_raw_bytes(oip.raw_output_contents[outputs["tier"]], 3)]
    assert list(zip(labels, tiers, strict=True)) == expected
    # The second text scores above 0.5 or not: either way the version's threshold, not 0.5, made it ham.
    assert [v.spam_probability for v in unary] == pytest.approx(list(p), abs=1e-9)
    by_text = logged.groupby("text")[["label", "tier"]].agg(set)
    for text, (label, tier) in zip(texts, expected, strict=True):
        assert by_text.loc[text, "label"] == {label} and by_text.loc[text, "tier"] == {tier}


def test_a_garbled_operating_point_is_refused_and_the_champion_keeps_serving(model_store):
    registry = model_store.clone(
        "garbled", [model_store.good[0], model_store.good[1]], tags=[{}, {TAG_OPERATING_THRESHOLD: "strict"}]
    )
    registry.promote("1", "good")
    with running_server(model_store, registry.model_name, wait_for="1") as srv, grpc.insecure_channel(srv.target) as ch:
        registry.promote("2", "garbled operating point")
        refusal = wait_until(lambda: srv.watcher.refused.get("2"), message="version 2 refused")
        champion = pb_grpc.ClassifierStub(ch).GetChampion(pb.GetChampionRequest(), timeout=5)
    assert f"tag {TAG_OPERATING_THRESHOLD}='strict' is not a probability" in refusal.reason
    # The same gate everywhere: champion_decision and `spam-platform status` load through it too.
    with pytest.raises(RefusedModel, match=f"tag {TAG_OPERATING_THRESHOLD}='strict'"):
        registry.load_verified("2")
    assert (champion.version, champion.alias_version) == ("1", "2")
    assert TAG_OPERATING_THRESHOLD in champion.fallback_reason


def _spam_texts(seed: int, n: int) -> list[str]:
    return [text for text, label in synthetic_messages(60, seed) if label == "spam"][:n]


def _found_in(text: str, kind: str) -> str:
    """Where a feature of `kind` is read: the text as each block of the model sees it, padded as char_wb pads words."""
    if kind == "word":
        return normalise_skeleton(text)
    return f" {' '.join((normalise_word_pairs if kind == 'pair' else normalise_folded)(text).split())} ".replace(" ", "  ")


def _without(text: str, features) -> str:
    """`text` less every word that holds one of `features` (a word term's words, a char n-gram's word, a pair's two)."""
    raw = text.split()
    drop: set[int] = set()
    for f in features:
        for i, word in enumerate(raw):
            if f.kind == "word":
                if set(re.findall(r"[\w£$€]+", normalise_skeleton(word))) & set(f.ngram.split()):
                    drop.add(i)
            elif f.kind == "char":
                if f.ngram in _found_in(word, "char"):
                    drop.add(i)
            elif i + 1 < len(raw) and f.ngram in _found_in(f"{word} {raw[i + 1]}", "pair"):
                drop.update((i, i + 1))
    return " ".join(word for i, word in enumerate(raw) if i not in drop)


# New texts every run. Drawn here, not in the test ids: parallel test workers must collect the same ids.
SEEDS = random.Random().sample(range(1000, 9999), 3)


@pytest.mark.parametrize("draw", range(len(SEEDS)))
def test_the_listed_features_are_what_moves_the_score(svm_server, svm_version, draw):
    seed = SEEDS[draw]
    try:
        _check_listed_features(svm_server, _spam_texts(seed, 4))
    except AssertionError as failed:
        failed.add_note(f"texts of synthetic_messages(60, seed={seed})")
        raise


def _check_listed_features(svm_server, texts: list[str]) -> None:
    with grpc.insecure_channel(svm_server.target) as ch:
        stub = pb_grpc.ClassifierStub(ch)
        for text in texts:
            verdict = stub.Classify(pb.ClassifyRequest(text=text, explain=True), timeout=5).verdict
            features = list(verdict.explanation.features)
            assert features and not verdict.explanation.note
            weights = [f.weight for f in features]
            assert weights == sorted(weights, key=abs, reverse=True)
            assert {f.kind for f in features} <= {"word", "char", "pair"}
            assert all(f.ngram in _found_in(text, f.kind) for f in features), (text, [(f.kind, f.ngram) for f in features])
            pushing = [f for f in features if f.weight > 0][:3]
            assert pushing, "a spam verdict has features pushing it towards spam"
            shorter = _without(text, pushing)
            assert shorter and shorter != text
            after = stub.Classify(pb.ClassifyRequest(text=shorter), timeout=5).verdict
            assert after.spam_probability < verdict.spam_probability, (text, shorter, [f.ngram for f in pushing])


@pytest.mark.parametrize("seed", [0, 1])
def test_all_feature_weights_add_up_to_the_scorers_logit(svm_version, seed):
    """The weights are the model's own arithmetic: offset plus every feature's weight is logit P(spam)."""
    scorer = svm_version.registry.load_verified(svm_version.version).scorer
    for text, _ in synthetic_messages(20, seed):
        found = explain(scorer, text, top=None)
        p = scorer.scores([text])[0]
        assert found.logit == pytest.approx(math.log(p / (1 - p)), abs=1e-9)
        assert found.offset + sum(f.weight for f in found.features) == pytest.approx(found.logit, abs=1e-9)
        assert {"word", "char"} <= {f.kind for f in found.features}
        listed = explain(scorer, text)  # the top ten: the logit is still that of every feature
        assert listed.logit == pytest.approx(found.logit, abs=1e-9)
        assert [(f.ngram, f.kind) for f in listed.features] == [(f.ngram, f.kind) for f in found.features[:10]]


def test_explanations_only_when_asked_per_request_on_a_stream(svm_server):
    with grpc.insecure_channel(svm_server.target) as ch:
        stub = pb_grpc.ClassifierStub(ch)
        plain = stub.Classify(pb.ClassifyRequest(text=SPAM), timeout=5).verdict
        requests = [
            pb.ClassifyStreamRequest(messages=[pb.Message(id="a", text=SPAM), pb.Message(id="b", text=HAM)], explain=True),
            pb.ClassifyStreamRequest(messages=[pb.Message(id="c", text=SPAM), pb.Message(id="d", text="")]),
        ]
        responses = list(stub.ClassifyStream(iter(requests), timeout=10))
    assert not plain.HasField("explanation")
    results = [r for response in responses for r in response.results]
    assert [r.id for r in results] == ["a", "b", "c", "d"]
    assert results[0].verdict.explanation.features and results[1].verdict.explanation.features
    assert not results[2].verdict.HasField("explanation")
    assert results[3].WhichOneof("outcome") == "error"  # a bad message is still an error, explained or not


def test_oip_explanation_is_an_optional_output(svm_server, svm_version):
    name = svm_version.registry.model_name
    with grpc.insecure_channel(svm_server.target) as ch:
        oip = oip_grpc.GRPCInferenceServiceStub(ch)
        request = oip_pb.ModelInferRequest(model_name=name)
        request.inputs.add(name="text", datatype="BYTES", shape=[2]).contents.bytes_contents.extend([SPAM.encode(), HAM.encode()])
        default = oip.ModelInfer(request, timeout=10)
        request.outputs.add(name="tier")
        request.outputs.add(name="explanation")
        asked = oip.ModelInfer(request, timeout=10)
    assert "explanation" not in [o.name for o in default.outputs]
    assert [o.name for o in asked.outputs] == ["tier", "explanation"]
    spam, ham = (json.loads(b) for b in asked.outputs[1].contents.bytes_contents)
    assert spam["features"] and set(spam["features"][0]) == {"ngram", "kind", "weight"}
    assert sum(f["weight"] for f in spam["features"]) > sum(f["weight"] for f in ham["features"])


def test_a_model_served_through_its_pipeline_says_it_cannot_explain(svm_version):
    verified = svm_version.registry.load_verified(svm_version.version)
    champion = SimpleNamespace(scorer=PipelineScorer(verified.model, verified.spam_column, reason="test"))
    found = explanation(champion, SPAM)
    assert not found.features and "pipeline" in found.note


def test_spam_classify_explain_prints_tier_and_features(svm_server, capsys):
    assert spam_classify.main(["--target", svm_server.target, "--quiet", "--explain", SPAM]) == 0
    assert spam_classify.main(["--target", svm_server.target, "--quiet", HAM]) == 0
    explained, plain = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert explained["tier"] in ("ham", "suspicious", "spam") and explained["explanation"]
    assert {"ngram", "kind", "weight"} == set(explained["explanation"][0])
    assert "explanation" not in plain and plain["tier"] == "ham"


def test_old_log_records_without_a_tier_read_with_their_label(tmp_path):
    """Segments written before tiers existed: readers fill the tier from the label (two tiers then)."""
    from serving.prediction_log import PredictionLog
    from spam_assets.traffic.verdict_ids import new_verdict_ids
    from tests.traffic_log import champion

    log = PredictionLog(tmp_path, retention_days=0).start()
    ids = new_verdict_ids(2)
    log.record("Classify", time.perf_counter(), champion(), ["a", "b"], [SPAM, HAM], [0.9, 0.1], ["spam", "ham"], ids)
    log.close()
    (segment,) = tmp_path.glob("predictions-*.jsonl")
    records = [json.loads(line) for line in segment.read_text().splitlines()]
    assert [r["tier"] for r in records] == ["spam", "ham"]
    segment.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "tier"}) + "\n" for r in records))
    frame = read_predictions(tmp_path)
    assert list(frame["tier"]) == ["spam", "ham"]
    table = compact_hour(tmp_path, hour_start(frame["time"].min().to_pydatetime())).table
    assert table.column("tier").to_pylist() == ["spam", "ham"]  # sorted by time, then verdict id: as written
