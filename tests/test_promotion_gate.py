"""champion_decision runs the server's own load-and-verify on the challenger before it moves the alias.

Real Dagster instance, real MLflow store, real training on generated data.
A challenger tampered with after training (its model file changed, or its
recorded checksum) would be refused by every server; it is never promoted,
and the decision says why.
"""

from pathlib import Path

import dagster as dg
import pytest

from spam_assets.defs.assets.deployment import OUTCOME_KEY
from spam_assets.defs.resources import PlatformStore, PromotionPolicy
from spam_assets.defs.run_tags import FORCE_RETRAIN_TAG
from spam_assets.intake import register, stage
from spam_assets.model.registry import Registry
from spam_assets.model.tags import TAG_MODEL_SHA256
from spam_assets.runner import graph_assets, materialize_batches
from spam_assets.settings import tracking_uri
from tests.synthetic import sms_messages, write_sms_file

FAST = {"ops": {"trained_model": {"config": {"folds": 3}}}}
# Lenient enough that an untampered retrain on the same data is promoted: only the gate can stop it.
LENIENT = PromotionPolicy(min_spam_f1=0.5, min_spam_precision=0.5, min_improvement=-1.0)


def _run(selection: list[str], instance, resources) -> None:
    run_config = FAST if "trained_model" in selection else None
    result = dg.materialize(
        graph_assets(), selection=selection, instance=instance, resources=resources, run_config=run_config,
        tags={FORCE_RETRAIN_TAG: "true"},  # a second challenger on the same corpus, on purpose
    )
    assert result.success


def _outcome(instance) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey("champion_decision"))
    return event.asset_materialization.metadata[OUTCOME_KEY].value


def _model_file(registry: Registry, version: str) -> Path:
    uri = registry.client.get_model_version_download_uri(registry.model_name, version)
    return Path(uri.removeprefix("file://")) / "model.skops"


@pytest.fixture
def champion_and_challenger(home, instance, resources, tmp_path):
    """Champion v1 from a first batch, then challenger v2 trained (not yet decided on)."""
    batch = stage(write_sms_file(sms_messages(900, seed=1), tmp_path / "first.txt"), PlatformStore().batches())
    register(instance, batch)
    assert all(r.success for r in materialize_batches([batch], instance, resources, FAST))
    _run(["trained_model"], instance, resources)
    registry = Registry(tracking_uri())
    assert (str(registry.champion().version), str(registry.challenger().version)) == ("1", "2")
    return registry


def test_a_tampered_challenger_is_not_promoted_and_the_decision_says_why(champion_and_challenger, instance, resources):
    registry = champion_and_challenger
    lenient = {**resources, "promotion": LENIENT}
    model_file = _model_file(registry, "2")
    original, recorded = model_file.read_bytes(), registry.client.get_model_version(registry.model_name, "2").tags[TAG_MODEL_SHA256]

    def decide_and_expect_refusal(why: str) -> None:
        _run(["champion_decision"], instance, lenient)
        outcome = _outcome(instance)
        assert (outcome["action"], outcome["promoted"], outcome["challenger_version"]) == ("keep", False, "2")
        (reason,) = outcome["reasons"]
        assert reason.startswith("challenger v2 refused by the serving checks: ") and why in reason, reason
        assert str(registry.champion().version) == "1" and registry.version_for("previous-champion") is None
        tags = registry.client.get_model_version(registry.model_name, "2").tags
        assert tags["decision"] == "keep" and why in tags["decision_reason"]

    model_file.write_bytes(original[: len(original) // 2])  # the file changed after registration
    decide_and_expect_refusal("model file checksum mismatch")
    model_file.write_bytes(original)

    registry.client.set_model_version_tag(registry.model_name, "2", TAG_MODEL_SHA256, "0" * 64)  # the record changed
    decide_and_expect_refusal("model file checksum mismatch")
    registry.client.set_model_version_tag(registry.model_name, "2", TAG_MODEL_SHA256, recorded)

    # Untouched again, the same challenger passes the gate and, under this policy, is promoted.
    _run(["champion_decision"], instance, lenient)
    assert _outcome(instance)["action"] == "promote"
    assert str(registry.champion().version) == "2"


def test_a_refused_champion_is_replaced_by_a_challenger_that_passes_the_gates(champion_and_challenger, instance, resources):
    """A champion whose file changed after promotion would strand every new server; it must not block v2."""
    registry = champion_and_challenger
    # Under the default policy v2 (same corpus) is not measurably better than an intact v1 ...
    _run(["champion_decision"], instance, resources)
    assert _outcome(instance)["action"] == "keep" and str(registry.champion().version) == "1"
    model_file = _model_file(registry, "1")
    model_file.write_bytes(model_file.read_bytes()[:100])  # ... but v1 can no longer be loaded by anyone
    _run(["champion_decision"], instance, resources)
    outcome = _outcome(instance)
    assert (outcome["action"], outcome["champion_version_before"], outcome["champion_version_now"]) == ("promote", "1", "2")
    assert outcome["reasons"][0].startswith("champion v1 refused by the serving checks: model file checksum mismatch")
    assert str(registry.champion().version) == "2" and str(registry.version_for("previous-champion").version) == "1"
