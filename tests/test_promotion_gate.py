"""champion_decision runs the server's own load-and-verify on the challenger before it moves the alias.

Real Dagster instance, real MLflow store, real training on generated data.
A challenger tampered with after training (its model file changed, or its
recorded checksum) would be refused by every server; it is never promoted,
and the decision says why.
"""

from pathlib import Path

import dagster as dg
import pytest
from sklearn.naive_bayes import MultinomialNB
from sklearn.pipeline import Pipeline

from spam_assets.defs.assets import training

from spam_assets.defs.assets.deployment import OUTCOME_KEY
from spam_assets.defs.resources import PlatformStore, PromotionPolicy
from spam_assets.defs.run_tags import FORCE_RETRAIN_TAG
from spam_assets.intake import register, stage
from spam_assets.model.pipelines import CompactTfidfVectorizer, TextColumn
from spam_assets.model.registry import Registry
from spam_assets.model.text import normalise
from spam_assets.model.tags import TAG_MODEL_SHA256
from spam_assets.runner import graph_assets, materialize_batches
from spam_assets.settings import tracking_uri
from tests.synthetic import sms_messages, write_sms_file

FAST = {"ops": {"trained_model": {"config": {"folds": 3}}}}
# Lenient enough that an untampered retrain on the same data is promoted: only the gate can stop it.
LENIENT_SETTINGS = {"min_spam_f1": 0.5, "min_spam_precision": 0.5, "min_improvement": -1.0}
LENIENT = PromotionPolicy(**LENIENT_SETTINGS)


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


def words_as_typed(seed: int = 0) -> Pipeline:
    """The previous release's baseline: word n-grams of `normalise`, blind to a spaced-out "f r e e"."""
    vectorizer = CompactTfidfVectorizer(preprocessor=normalise, ngram_range=(1, 2), sublinear_tf=True)
    return Pipeline([("text", TextColumn()), ("tfidf", vectorizer), ("clf", MultinomialNB(alpha=0.05))])


def test_a_challenger_blind_to_disguised_spam_is_not_promoted_and_the_reason_names_the_family(
    home, instance, resources, tmp_path, monkeypatch
):
    # Words only: without the generated phone numbers and amounts, which no disguise touches.
    messages = sms_messages(900, seed=1)
    messages["text"] = messages["text"].str.replace(r"!? £\d+ call \d+$| \d+$", "", regex=True)
    assert not messages["text"].str.contains(r"\d").any()
    batch = stage(write_sms_file(messages, tmp_path / "words.txt"), PlatformStore().batches())
    register(instance, batch)
    assert all(r.success for r in materialize_batches([batch], instance, resources, FAST))
    first = instance.get_latest_materialization_event(dg.AssetKey("trained_model")).asset_materialization.metadata
    assert first["adversarial_recall_spacing"].value >= first["holdout_spam_recall"].value - 0.05
    registry = Registry(tracking_uri())
    assert str(registry.champion().version) == "1"

    # A weaker candidate offered to the real training step: the platform's own before the evasion folds.
    candidates = training.candidate_pipelines
    monkeypatch.setattr(training, "candidate_pipelines", lambda seed=0: {**candidates(seed), "words_as_typed": words_as_typed(seed)})
    result = dg.materialize(
        graph_assets(), selection=["trained_model"], instance=instance, resources=resources,
        run_config={"ops": {"trained_model": {"config": {"folds": 3, "candidates": ["words_as_typed"]}}}},
        tags={FORCE_RETRAIN_TAG: "true"},
    )  # fmt: skip
    assert result.success
    # The check says it before any decision: spaced out, in look-alike letters or with zero-width
    # characters, "free" is no word the model knows; the worst family is named.
    model = instance.get_latest_materialization_event(dg.AssetKey("trained_model")).asset_materialization.metadata
    by_family, family = model["adversarial_recall"].value["by_family"], model["adversarial_worst_family"].value
    assert max(by_family[f] for f in ("spacing", "homoglyph", "zero_width")) < 0.5, by_family
    assert by_family[family] == min(by_family.values())
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and f"under {family} " in check.description, check.description
    run_id = registry.client.get_model_version(registry.model_name, "2").run_id
    assert registry.client.get_run(run_id).data.metrics[f"adversarial_recall_{family}"] == by_family[family]

    _run(["champion_decision"], instance, {**resources, "promotion": LENIENT})
    outcome = _outcome(instance)
    assert (outcome["action"], outcome["champion_version_now"]) == ("keep", "1")
    assert any(f"under {family} " in r and "below its clean recall" in r for r in outcome["reasons"]), outcome["reasons"]
    assert any(f"under {family} than the champion" in r for r in outcome["reasons"]), outcome["reasons"]
    decision = instance.get_latest_materialization_event(dg.AssetKey("champion_decision")).asset_materialization.metadata
    assert f"| spam_recall under {family} |" in decision["comparison"].value
    both = decision["adversarial_recall"].value
    assert both["champion"]["by_family"][family] >= both["champion"]["clean"] - 0.05 > both["challenger"]["by_family"][family]
    metrics = registry.client.get_run(run_id).data.metrics
    assert metrics[f"champion_adversarial_recall_{family}"] == both["champion"]["by_family"][family]

    # The gate is the policy's: switched off, the same challenger is promoted under the lenient policy.
    _run(["champion_decision"], instance, {**resources, "promotion": PromotionPolicy(**{**LENIENT_SETTINGS, "adversarial_gate": False})})
    assert _outcome(instance)["action"] == "promote", _outcome(instance)["reasons"]
    assert str(registry.champion().version) == "2"
