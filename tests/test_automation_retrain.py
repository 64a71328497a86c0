"""Retrain triggers on a real instance: drift/decay verdicts, coalescing, the weekly timer.

Stand-in assets named like the platform's write the metadata the triggers
read (drift, decay, reasons, data versions), so no model is trained here;
the real assets are covered by test_graph and the end-to-end loop test.
"""

import dagster as dg
import pytest

from spam_assets.defs.automation.retrain import periodic_retrain, retrain_on_drift
from spam_assets.defs.retrain_policy import VERDICT_KEY, Verdict


def verdict(instance, drift=False, decay=False, reasons=()):
    @dg.asset(name="drift_statistics")
    def stand_in() -> dg.MaterializeResult:
        recorded = Verdict(drift, decay, list(reasons)).to_json()
        return dg.MaterializeResult(metadata={VERDICT_KEY: dg.MetadataValue.json(recorded)})

    assert dg.materialize([stand_in], instance=instance).success


def corpus(instance, version: str):
    @dg.asset(name="cleaned_corpus")
    def stand_in() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"data_version": version}, data_version=dg.DataVersion(version))

    assert dg.materialize([stand_in], instance=instance).success


def challenger(instance, corpus_version: str, model_version: str = "2"):
    @dg.asset(name="trained_model")
    def stand_in() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"corpus_data_version": corpus_version, "model_version": model_version})

    assert dg.materialize([stand_in], instance=instance).success


def tick(instance, cursor=None):
    return retrain_on_drift.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor))


def in_flight_retrain(instance) -> dg.DagsterRun:
    return instance.add_run(
        dg.DagsterRun(
            job_name="retrain",
            status=dg.DagsterRunStatus.STARTED,
            asset_selection=frozenset({dg.AssetKey("trained_model"), dg.AssetKey("champion_decision")}),
        )
    )


def test_no_drift_no_retrain_and_the_cursor_moves_on(instance):
    corpus(instance, "c1")
    verdict(instance, drift=False)
    result = tick(instance)
    assert not result.run_requests
    assert "no drift or decay" in result.skip_message
    assert not tick(instance, result.cursor).run_requests
    assert tick(instance, result.cursor).skip_message == "no new drift verdict"


@pytest.mark.parametrize(
    ("drift", "decay", "trigger"), [(True, False, "drift"), (False, True, "decay"), (True, True, "drift and decay")]
)
def test_drift_or_decay_requests_a_retrain_with_its_reason(instance, drift, decay, trigger):
    corpus(instance, "c2")
    challenger(instance, "c1")
    verdict(instance, drift=drift, decay=decay, reasons=["OOV rate 0.24 > 0.2", "champion spam F1 0.70 < 0.85"])
    result = tick(instance)
    (request,) = result.run_requests
    assert request.tags["spam/trigger"] == trigger
    assert request.tags["spam/retrain_reason"] == f"{trigger}: OOV rate 0.24 > 0.2; champion spam F1 0.70 < 0.85"
    assert request.run_key.startswith("drift-")
    assert not tick(instance, result.cursor).run_requests  # one verdict, one retrain


def test_several_verdicts_between_ticks_are_all_seen(instance):
    corpus(instance, "c2")
    verdict(instance, drift=True, reasons=["PSI 3.5 > 0.25"])
    verdict(instance, drift=False)  # the latest says nothing; an asset sensor would miss the first
    (request,) = tick(instance).run_requests
    assert request.tags["spam/retrain_reason"] == "drift: PSI 3.5 > 0.25"


def test_retrain_in_flight_holds_the_request_back_without_losing_it(instance):
    corpus(instance, "c2")
    challenger(instance, "c1")
    before = tick(instance).cursor
    verdict(instance, drift=True, reasons=["PSI 3.5 > 0.25"])
    run = in_flight_retrain(instance)

    held = tick(instance, before)
    assert not held.run_requests
    assert f"retrain run {run.run_id[:8]} is started" in held.skip_message
    assert held.cursor == before  # the verdict stays pending

    # The running retrain finishes on an older corpus: the pending verdict now launches one.
    instance.report_run_failed(run)
    (request,) = tick(instance, held.cursor).run_requests
    assert request.tags["spam/trigger"] == "drift"


def test_no_second_retrain_on_a_corpus_already_trained_on(instance):
    corpus(instance, "c2")
    verdict(instance, drift=True, reasons=["PSI 3.5 > 0.25"])
    run = in_flight_retrain(instance)
    held = tick(instance)
    assert not held.run_requests

    challenger(instance, "c2", "3")  # what the in-flight run produced
    instance.report_run_canceled(run)  # stands in for "finished"
    after = tick(instance, held.cursor)
    assert not after.run_requests
    assert "challenger v3 was already trained on the current corpus c2" in after.skip_message
    assert not tick(instance, after.cursor).run_requests

    corpus(instance, "c3")  # new data arrives, and drift is still there: retrain again
    verdict(instance, drift=True, reasons=["PSI 3.1 > 0.25"])
    assert len(tick(instance, after.cursor).run_requests) == 1


def schedule_tick(instance):
    return periodic_retrain.evaluate_tick(dg.build_schedule_context(instance=instance))


def test_weekly_timer_retrains_without_drift(instance):
    assert "no corpus yet" in schedule_tick(instance).skip_message
    corpus(instance, "c2")
    challenger(instance, "c1")
    (request,) = schedule_tick(instance).run_requests
    assert request.tags["spam/trigger"] == "schedule"
    assert request.tags["spam/retrain_reason"].startswith("retrain timer (0 3 * * 1 UTC) expired")

    # A run that may train is in flight: the timer fires once, so it still requests (its
    # training step waits for the pool, then checks the corpus again: test_graph).
    run = in_flight_retrain(instance)
    (request,) = schedule_tick(instance).run_requests
    assert f"run {run.run_id[:8]} may train first" in request.tags["spam/retrain_reason"]
    instance.report_run_canceled(run)
    challenger(instance, "c2")
    assert "nothing new to learn from" in schedule_tick(instance).skip_message


def test_retrain_job_trains_then_decides():
    from spam_assets.definitions import defs

    job = defs().resolve_job_def("retrain")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == {"trained_model", "champion_decision"}
    assert periodic_retrain.cron_schedule == "0 3 * * 1"
