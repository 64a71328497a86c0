"""Hand-offs between assets are data Dagster recorded, not side channels; one promotion policy.

- trained_model trains on the corpus version cleaned_corpus materialised,
  whatever the corpus store's CURRENT pointer says afterwards;
- champion_decision judges the challenger trained_model materialised, on
  the holdout of the corpus it was trained on, whatever the MLflow
  `challenger` alias says;
- the drift verdict and the decision's outcome are JSON metadata;
- one PromotionPolicy resource decides both challenger_gates and
  champion_decision.

Real instance, MLflow store and training on generated data (test_graph's fixtures).
"""

import dagster as dg
import pytest

from spam_assets.defs.assets.deployment import OUTCOME_KEY
from spam_assets.defs.resources import PlatformStore, PromotionPolicy, build_resources
from spam_assets.defs.retrain_policy import VERDICT_KEY, Verdict
from spam_assets.defs.run_tags import FORCE_RETRAIN_TAG
from spam_assets.model.registry import Registry
from spam_assets.runner import graph_assets, materialize_batches
from spam_assets.settings import tracking_uri
from tests.synthetic import email_messages, sms_messages, write_jsonl
from tests.test_graph import FAST, bootstrapped, ingest, latest  # noqa: F401 - bootstrapped is a fixture

RETRAIN = ["trained_model", "champion_decision"]


def _run(selection, instance, resources, raise_on_error=True) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        graph_assets(), selection=selection, instance=instance, resources=resources,
        run_config=FAST if "trained_model" in selection else None, raise_on_error=raise_on_error,
        tags={FORCE_RETRAIN_TAG: "true"},  # these retrain the bootstrap corpus on purpose
    )


def _point_current_at(version: str) -> None:
    """What another writer of the corpus store could do after cleaned_corpus materialised."""
    (PlatformStore().corpus().root / "CURRENT").write_text(version)


def test_training_and_decision_use_the_corpus_cleaned_corpus_recorded(bootstrapped, instance, resources, tmp_path):
    first_corpus = latest(instance, "cleaned_corpus")["data_version"]
    mail = ingest(write_jsonl(email_messages(300, seed=3), tmp_path / "mail.jsonl"), instance)
    materialize_batches([mail], instance, resources, FAST, downstream=["cleaned_corpus"])
    recorded = latest(instance, "cleaned_corpus")["data_version"]
    assert recorded != first_corpus

    _point_current_at(first_corpus)  # CURRENT now names the old corpus
    result = _run(RETRAIN, instance, resources)

    model = latest(instance, "trained_model")
    assert model["corpus_data_version"] == recorded
    # Dagster's own provenance of that materialisation names the same input version.
    event = instance.get_latest_materialization_event(dg.AssetKey("trained_model"))
    provenance = dg.DataProvenance.from_tags(event.asset_materialization.tags)
    assert provenance.input_data_versions[dg.AssetKey("cleaned_corpus")] == dg.DataVersion(recorded)
    card = Registry(tracking_uri()).card(Registry(tracking_uri()).client.get_model_version("spam-classifier", model["model_version"]))
    assert card.corpus_data_version == recorded
    decision = latest(instance, "champion_decision")
    assert decision["corpus_data_version"] == recorded
    assert decision[OUTCOME_KEY]["corpus_data_version"] == recorded
    assert result.success


def test_decision_judges_the_challenger_trained_model_recorded_not_the_alias(bootstrapped, instance, resources):
    _run(["trained_model"], instance, resources)
    registry = Registry(tracking_uri())
    trained = str(latest(instance, "trained_model")["model_version"])
    assert trained == "2" and str(registry.challenger().version) == "2"

    registry.set_challenger("1")  # the alias moved elsewhere (by hand, or another run)
    _point_current_at("no-such-corpus")
    _run(["champion_decision"], instance, resources)

    outcome = latest(instance, "champion_decision")[OUTCOME_KEY]
    assert outcome["challenger_version"] == trained  # not "1", which the alias names now
    assert "challenger is the current champion version" not in outcome["reasons"]
    assert outcome["corpus_data_version"] == latest(instance, "trained_model")["corpus_data_version"]


@pytest.mark.parametrize(
    ("selection", "missing"),
    [(["trained_model"], "cleaned_corpus"), (["champion_decision"], "trained_model")],
)
def test_a_step_whose_upstream_never_materialised_fails_naming_it(selection, missing, instance, resources):
    result = _run(selection, instance, resources, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.event_specific_data.error.message
    assert f"needs {missing}, which has never been materialised" in message, message


def test_one_promotion_policy_moves_the_check_and_the_decision_together(bootstrapped, instance, resources):
    champion_f1 = latest(instance, "trained_model")["holdout_spam_f1"]

    strict = {**resources, "promotion": PromotionPolicy(min_spam_f1=1.01, min_improvement=-1.0)}  # unreachable gate
    _run(RETRAIN, instance, strict)
    gates = _check(instance, "challenger_gates")
    outcome = latest(instance, "champion_decision")[OUTCOME_KEY]
    assert not gates.passed and "spam_f1" in gates.description and "< gate 1.01" in gates.description
    assert outcome["action"] == "keep" and any("< gate 1.01" in r for r in outcome["reasons"])

    # The same policy, relaxed: an equal challenger now counts as better, and both agree again.
    lenient = {**resources, "promotion": PromotionPolicy(min_spam_f1=0.5, min_spam_precision=0.5, min_improvement=-1.0)}
    _run(RETRAIN, instance, lenient)
    gates = _check(instance, "challenger_gates")
    outcome = latest(instance, "champion_decision")[OUTCOME_KEY]
    assert gates.passed
    assert outcome["action"] == "promote", outcome["reasons"]
    assert latest(instance, "trained_model")["holdout_spam_f1"] == pytest.approx(champion_f1)


def _check(instance, name: str):
    key = dg.AssetCheckKey(dg.AssetKey("trained_model"), name)
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
    return record.event.dagster_event.event_specific_data


def test_drift_verdict_is_recorded_and_read_as_json(bootstrapped, instance, resources, tmp_path):
    mail = ingest(write_jsonl(email_messages(300, seed=3), tmp_path / "mail.jsonl"), instance)
    materialize_batches([mail], instance, resources, FAST, downstream=["cleaned_corpus", "drift_statistics"])
    meta = latest(instance, "drift_statistics")
    recorded = meta[VERDICT_KEY]
    assert recorded["drift"] is True and recorded["trigger"].startswith("drift")
    assert recorded["new_batches"] == [mail] and recorded["reasons"] and all(isinstance(r, str) for r in recorded["reasons"])
    record = instance.fetch_materializations(dg.AssetKey("drift_statistics"), limit=1).records[0]
    assert Verdict.of(record).reasons == recorded["reasons"]  # read back as data, reasons intact


def test_decay_floor_comes_from_the_environment_when_definitions_load(monkeypatch, home):
    from spam_assets.definitions import defs

    monkeypatch.delenv("SPAM_F1_FLOOR", raising=False)
    assert build_resources()["decay"].f1_floor == 0.85
    monkeypatch.setenv("SPAM_F1_FLOOR", "0.93")
    assert defs().resources["decay"].f1_floor == 0.93  # read at load, no re-import needed
    monkeypatch.setenv("SPAM_F1_FLOOR", "high")
    with pytest.raises(ValueError, match="SPAM_F1_FLOOR='high' is not a number"):
        build_resources()


def test_the_adversarial_and_source_gates_are_switched_by_the_environment_when_definitions_load(monkeypatch, home):
    from spam_assets.definitions import defs

    monkeypatch.delenv("SPAM_ADVERSARIAL_GATE", raising=False)
    assert build_resources()["promotion"].rules().adversarial_gate is True
    monkeypatch.setenv("SPAM_ADVERSARIAL_GATE", "off")
    assert defs().resources["promotion"].rules().adversarial_gate is False
    monkeypatch.delenv("SPAM_SOURCE_GATES", raising=False)
    assert build_resources()["promotion"].rules().source_gates is True
    monkeypatch.setenv("SPAM_SOURCE_GATES", "off")
    assert defs().resources["promotion"].rules().source_gates is False
    monkeypatch.setenv("SPAM_ADVERSARIAL_GATE", "sometimes")
    with pytest.raises(ValueError, match="SPAM_ADVERSARIAL_GATE='sometimes' is not on or off"):
        build_resources()
