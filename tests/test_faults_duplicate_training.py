"""At most one training per corpus version, whatever starts it (job, timer, `ingest`, the UI)."""

import dagster as dg

from spam_assets.definitions import defs
from spam_assets.defs.automation.retrain import retrain_on_drift
from spam_assets.defs.retrain_policy import active_retrain, assets_of
from spam_assets.defs.run_tags import CORPUS_VERSION_TAG, FORCE_RETRAIN_TAG
from spam_assets.model.registry import Registry
from spam_assets.runner import graph_assets
from spam_assets.settings import tracking_uri
from tests.test_automation_retrain import corpus, tick, verdict
from tests.test_graph import FAST, bootstrapped, latest  # noqa: F401 - bootstrapped is a fixture

RETRAIN = ["trained_model", "champion_decision"]


def job_run(instance, job_name: str, status=dg.DagsterRunStatus.NOT_STARTED) -> dg.DagsterRun:
    """A run record exactly as launching the job makes it: asset_selection None, an execution plan."""
    run = instance.create_run_for_job(defs().resolve_job_def(job_name), run_config={}, status=status)
    assert run.asset_selection is None  # what the old guard read, and missed
    return run


def test_a_queued_run_of_the_retrain_job_counts_as_a_retrain_in_flight(instance):
    assert active_retrain(instance) is None
    run = job_run(instance, "retrain")
    assert {k.to_user_string() for k in assets_of(instance, run)} == set(RETRAIN)
    assert active_retrain(instance).run_id == run.run_id
    instance.report_run_failed(run)
    assert active_retrain(instance) is None


def test_a_run_of_another_job_is_not_a_retrain(instance):
    run = job_run(instance, "ingest_batch")
    assert {k.to_user_string() for k in assets_of(instance, run)} == {"raw_sample"}
    assert active_retrain(instance) is None


def test_the_drift_sensor_holds_back_while_a_retrain_job_run_is_queued(instance):
    corpus(instance, "c2")
    verdict(instance, drift=True, reasons=["PSI 3.5 > 0.25"])
    run = job_run(instance, "retrain")
    held = tick(instance)
    assert not held.run_requests
    assert f"retrain run {run.run_id[:8]}" in held.skip_message
    instance.report_run_failed(run)
    assert len(tick(instance, held.cursor).run_requests) == 1


def _retrain(instance, resources, tags=None) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        graph_assets(), selection=RETRAIN, instance=instance, resources=resources, run_config=FAST, tags=tags
    )
    assert result.success
    return result


def test_training_refuses_a_corpus_that_has_its_challenger_unless_forced(bootstrapped, instance, resources):
    trained = latest(instance, "trained_model")
    version = latest(instance, "cleaned_corpus")["data_version"]
    assert trained["corpus_data_version"] == version

    # A second `ingest` of the same data, a hand-launched retrain: nothing trains, and the log says why.
    again = _retrain(instance, resources)
    assert not again.get_asset_materialization_events()
    messages = [e.user_message for e in instance.all_logs(again.run_id)]
    assert any(
        f"not retraining: challenger v{trained['model_version']} was already trained on corpus {version}" in m
        and FORCE_RETRAIN_TAG in m
        for m in messages
    ), messages
    registry = Registry(tracking_uri())
    assert [str(v.version) for v in registry.client.search_model_versions("name='spam-classifier'")] == ["1"]

    forced = _retrain(instance, resources, {FORCE_RETRAIN_TAG: "true"})
    assert {e.asset_key.to_user_string() for e in forced.get_asset_materialization_events()} == set(RETRAIN)
    assert instance.get_run_by_id(forced.run_id).tags[CORPUS_VERSION_TAG] == version
    assert sorted(str(v.version) for v in registry.client.search_model_versions("name='spam-classifier'")) == ["1", "2"]
