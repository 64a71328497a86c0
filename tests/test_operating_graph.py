"""The graph chooses and records the operating point: trained_model, champion_decision, MLflow.

Real Dagster instance and MLflow store under a temp home, trained on generated SMS-like messages
(test_graph's fixtures).
"""

import json

import dagster as dg

from spam_assets.defs.resources import OperatingPointPolicy
from spam_assets.defs.run_tags import FORCE_RETRAIN_TAG
from spam_assets.model.operating_point import Tiers
from spam_assets.model.registry import Registry
from spam_assets.model.tags import TAG_OPERATING_POINT
from spam_assets.runner import graph_assets
from spam_assets.settings import tracking_uri
from tests.test_graph import FAST, bootstrapped, latest  # noqa: F401 - bootstrapped is a fixture


def test_trained_model_stores_the_operating_point_and_the_decision_shows_it(bootstrapped, instance, resources):
    model = latest(instance, "trained_model")
    registry = Registry(tracking_uri())
    version = registry.client.get_model_version("spam-classifier", str(model["model_version"]))
    tiers = Tiers.from_tags(version.tags)
    assert tiers.source == "tags" and 0 < tiers.suspicious_from <= tiers.threshold <= 1
    assert model["holdout_operating_threshold"] == tiers.threshold
    point = json.loads(version.tags[TAG_OPERATING_POINT])
    assert point["target_ham_fpr"] == 0.001 and point["basis"] == model["operating_point"]
    assert point["false_positives"] <= int(0.001 * point["n_ham"])
    run = registry.client.get_run(version.run_id).data
    assert run.metrics["holdout_spam_recall_at_operating_point"] == point["spam_recall"]
    comparison = latest(instance, "champion_decision")["comparison"]
    assert "| operating threshold (label spam from) | — | " in comparison
    assert f"{tiers.threshold:.4f}" in comparison and "ham false-positive rate @ operating point" in comparison
    decision_md = registry.client.download_artifacts(version.run_id, "champion_decision.md")
    assert "spam_recall @ operating point" in open(decision_md).read()


def test_a_looser_target_from_the_resource_lowers_the_threshold(bootstrapped, instance, resources):
    strict = latest(instance, "trained_model")["holdout_operating_threshold"]
    loose = {**resources, "operating_point": OperatingPointPolicy(target_ham_fpr=0.2, suspicious_ham_fpr=0.3)}
    result = dg.materialize(
        graph_assets(), selection=["trained_model"], instance=instance, resources=loose, run_config=FAST,
        tags={FORCE_RETRAIN_TAG: "true"},
    )  # fmt: skip
    assert result.success
    model = latest(instance, "trained_model")
    assert model["holdout_operating_threshold"] < strict
    assert model["holdout_ham_fpr_at_operating_point"] <= 0.2
