"""The whole asset graph, materialised for real on generated data.

Real Dagster instance, real MLflow SQLite store and artifacts in a temp
home, real training: what a user's first `spam-platform up` does.
"""

from pathlib import Path

import dagster as dg
import pytest
from mlflow import MlflowClient

from spam_assets.definitions import defs as load_defs
from spam_assets.defs.resources import PlatformStore
from spam_assets.defs.run_tags import FORCE_RETRAIN_TAG, REFRESH_TRIGGER, RETRAIN_REASON_TAG, TIMER_TRIGGER, TRIGGER_TAG
from spam_assets.intake import register, stage
from spam_assets.model.registry import Registry
from spam_assets.runner import graph_assets, materialize_batches
from spam_assets.settings import tracking_uri
from tests.synthetic import email_messages, sms_messages, write_jsonl, write_sms_file

FAST = {"ops": {"trained_model": {"config": {"folds": 3}}}}


def ingest(path: Path, instance) -> str:
    batch_id = stage(path, PlatformStore().batches())
    register(instance, batch_id)
    return batch_id


def latest(instance, key: str) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey(key))
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


@pytest.fixture
def bootstrapped(home, instance, resources, tmp_path):
    """A champion trained on a generated SMS-like batch."""
    first = ingest(write_sms_file(sms_messages(900, seed=1), tmp_path / "first.txt"), instance)
    results = materialize_batches([first], instance, resources, FAST)
    assert all(r.success for r in results)
    return first


def test_definitions_load():
    defs = load_defs()
    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert keys == {
        "raw_sample", "cleaned_corpus", "drift_statistics", "trained_model", "champion_decision", "traffic", "traffic_drift",
        "feedback_review", "live_comparison", "rollout_decision",
    }  # fmt: skip
    assert len(graph_assets()) == len(keys)  # each asset held by the one module that defines it (defs/keys.py)


def test_first_batch_produces_a_champion_with_lineage(bootstrapped, instance, home):
    corpus = latest(instance, "cleaned_corpus")
    assert corpus["batches"] == 1 and corpus["holdout_rows"] >= 50
    model = latest(instance, "trained_model")
    decision = latest(instance, "champion_decision")
    assert decision["decision"] == "promote"
    assert "no champion yet" in decision["reasons"]
    assert "| metric | champion | challenger | gate | verdict |" in decision["comparison"]

    registry = Registry(tracking_uri())
    champion = registry.champion()
    assert str(champion.version) == str(model["model_version"]) == "1"
    card = registry.card(champion)
    assert card.corpus_data_version == corpus["data_version"]
    assert len(champion.tags["model_sha256"]) == 64  # the server verifies the stored file against it
    assert card.metrics["holdout_spam_f1"] > 0.9  # generated data is easy; the real corpus is tested elsewhere
    run = MlflowClient(tracking_uri()).get_run(champion.run_id)
    assert run.info.status == "FINISHED"  # the run is ended, not left RUNNING
    assert run.data.tags["dagster_run_id"] == card.dagster_run_id != ""
    assert {"accuracy", "spam_precision", "spam_recall", "spam_f1", "mcc", "roc_auc"} <= set(run.data.metrics)
    artifacts = {a.path for a in MlflowClient(tracking_uri()).list_artifacts(champion.run_id)}
    assert {"holdout_confusion_matrix.csv", "champion_decision.md"} <= artifacts
    # Artifacts live under the platform home, not in ./mlruns of the test's cwd.
    assert (home / "mlflow" / "artifacts").exists() and not Path("mlruns").exists()


def test_every_check_recorded_and_passing(bootstrapped, instance):
    for key, names in {
        "raw_sample": {"batch_schema", "batch_min_rows", "batch_empty_texts", "batch_duplicate_share"},
        "cleaned_corpus": {"holdout_size", "holdout_class_balance"},
        "trained_model": {"challenger_gates"},
    }.items():
        for name in names:
            record = instance.event_log_storage.get_latest_asset_check_execution_by_key(
                [dg.AssetCheckKey(dg.AssetKey(key), name)]
            )[dg.AssetCheckKey(dg.AssetKey(key), name)]
            assert record.status.value == "SUCCEEDED", (key, name)


def test_same_distribution_batch_no_drift_and_email_batch_drifts(bootstrapped, instance, resources, tmp_path):
    second = ingest(write_jsonl(sms_messages(300, seed=7), tmp_path / "second.jsonl"), instance)
    materialize_batches([second], instance, resources, FAST, downstream=["cleaned_corpus", "drift_statistics"])
    drift = latest(instance, "drift_statistics")
    assert drift["drift"] is False, drift["reasons"]
    assert drift["new_batches"] == [second]

    mail = ingest(write_jsonl(email_messages(300, seed=3), tmp_path / "mail.jsonl"), instance)
    materialize_batches([mail], instance, resources, FAST, downstream=["cleaned_corpus", "drift_statistics"])
    drift = latest(instance, "drift_statistics")
    assert drift["drift"] is True
    assert "domain" in drift["reasons"].lower() or "psi" in drift["reasons"].lower()
    assert drift["new_batches"] == [second, mail]


def test_retrain_without_improvement_keeps_champion(bootstrapped, instance, resources):
    results = materialize_batches([], instance, resources, FAST)
    assert results == []  # nothing to do without a batch
    _graph_run(instance, resources, RETRAIN, {FORCE_RETRAIN_TAG: "true"})  # the same corpus, on purpose
    decision = latest(instance, "champion_decision")
    assert decision["decision"] == "keep"  # same data, same seed: not measurably better
    assert "not measurably better" in decision["reasons"]
    registry = Registry(tracking_uri())
    assert (str(registry.champion().version), str(registry.challenger().version)) == ("1", "2")


RETRAIN = ["trained_model", "champion_decision"]  # the retrain job's selection


def _graph_run(instance, resources, selection: list[str], tags: dict[str, str] | None = None) -> dg.ExecuteInProcessResult:
    result = dg.materialize(graph_assets(), selection=selection, instance=instance, resources=resources, run_config=FAST, tags=tags)
    assert result.success
    return result


def _refresh_run(instance, resources) -> dg.ExecuteInProcessResult:
    """What refresh_on_new_batch launches after a batch: all four assets, one run, its trigger tag."""
    return _graph_run(instance, resources, ["cleaned_corpus", "drift_statistics", *RETRAIN], {TRIGGER_TAG: REFRESH_TRIGGER})


def _materialized(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def test_a_refresh_run_trains_and_decides_only_on_its_own_drift_verdict(bootstrapped, instance, resources, tmp_path):
    client = MlflowClient(tracking_uri())
    mlflow_runs = lambda: len(client.search_runs(experiment_ids=[r.experiment_id for r in client.search_experiments()]))  # noqa: E731
    before = mlflow_runs()

    sms = ingest(write_jsonl(sms_messages(300, seed=7), tmp_path / "sms.jsonl"), instance)
    materialize_batches([sms], instance, resources, downstream=[])
    quiet = _refresh_run(instance, resources)
    assert _materialized(quiet) == {"cleaned_corpus", "drift_statistics"}  # no drift: no challenger, no decision
    assert [e.step_key for e in quiet.all_events if e.event_type_value == "STEP_SKIPPED"] == ["champion_decision"]
    assert RETRAIN_REASON_TAG not in instance.get_run_by_id(quiet.run_id).tags
    assert mlflow_runs() == before  # the lazy MLflow run was never started

    mail = ingest(write_jsonl(email_messages(300, seed=3), tmp_path / "mail.jsonl"), instance)
    materialize_batches([mail], instance, resources, downstream=[])
    drifted = _refresh_run(instance, resources)
    assert _materialized(drifted) == {"cleaned_corpus", "drift_statistics", "trained_model", "champion_decision"}
    tags = instance.get_run_by_id(drifted.run_id).tags
    assert tags[TRIGGER_TAG].startswith("drift") and tags[RETRAIN_REASON_TAG].startswith(tags[TRIGGER_TAG] + ": ")
    assert latest(instance, "trained_model")["retrain_reason"] == tags[RETRAIN_REASON_TAG]
    assert latest(instance, "trained_model")["corpus_data_version"] == latest(instance, "cleaned_corpus")["data_version"]
    assert mlflow_runs() == before + 1

    # The same corpus again: the verdict still says drift, but that challenger exists already.
    again = _refresh_run(instance, resources)
    assert _materialized(again) == {"cleaned_corpus", "drift_statistics"}


def test_a_timer_run_skips_training_when_the_corpus_got_its_challenger_meanwhile(bootstrapped, instance, resources):
    """The timer requests even while another run trains; its run must not train the same corpus again."""
    trained_on = latest(instance, "trained_model")["corpus_data_version"]
    assert trained_on == latest(instance, "cleaned_corpus")["data_version"]
    timer_run = _graph_run(
        instance, resources, RETRAIN, {TRIGGER_TAG: TIMER_TRIGGER, RETRAIN_REASON_TAG: "retrain timer expired"}
    )
    assert _materialized(timer_run) == set()
    assert [e.step_key for e in timer_run.all_events if e.event_type_value == "STEP_SKIPPED"] == ["champion_decision"]
    assert any("not retraining: challenger v" in e.user_message for e in instance.all_logs(timer_run.run_id))


BAD_BATCHES = {
    "missing_label_column.csv": b"text,category\n" + b"hello,ham\n" * 20,
    "labels_outside.txt": "".join(f"ham\thello {i}\nmaybe\tbuy now {i}\n" for i in range(10)).encode(),
    "binary_junk.bin": bytes(range(256)) * 40,
    "empty.jsonl": b"",
    "latin1.txt": "".join(f"ham\tcaf\xe9 tonight {i}\n" for i in range(20)).encode("latin-1"),
}


@pytest.mark.parametrize("name", BAD_BATCHES)
def test_bad_batch_rejected_and_nothing_lost(name, bootstrapped, instance, resources, tmp_path):
    payload = BAD_BATCHES[name]
    content = payload
    corpus_before = latest(instance, "cleaned_corpus")["data_version"]
    bad = tmp_path / name
    bad.write_bytes(content)
    batch_id = ingest(bad, instance)
    results = materialize_batches([batch_id], instance, resources, FAST)

    assert len(results) == 1 and not results[0].success  # the blocking check stopped the run
    failed = [
        e for e in results[0].get_asset_check_evaluations()
        if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR
    ]
    assert failed, "a blocking batch check must fail"
    messages = " ".join(e.description for e in failed).lower()
    expected = {
        "missing_label_column.csv": "label",
        "labels_outside.txt": "maybe",
        "binary_junk.bin": "binary",
        "empty.jsonl": "empty",
        "latin1.txt": "utf-8",
    }[name]
    assert expected in messages, messages

    batches = PlatformStore().batches()
    assert batch_id in batches.rejected_ids()
    assert batches.received_path(batch_id).read_bytes() == content  # kept for inspection
    assert latest(instance, "cleaned_corpus")["data_version"] == corpus_before
    assert str(Registry(tracking_uri()).champion().version) == "1"

    # The next good batch builds a corpus without the rejected one.
    good = ingest(write_sms_file(sms_messages(200, seed=11), tmp_path / "good.txt"), instance)
    materialize_batches([good], instance, resources, FAST, downstream=["cleaned_corpus"])
    assert batch_id not in PlatformStore().corpus().manifest(latest(instance, "cleaned_corpus")["data_version"])["batch_ids"]
