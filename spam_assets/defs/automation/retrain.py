"""Retrain triggers: drift or decay in a new drift verdict, and a weekly timer.

Usually the refresh run that finds drift has already trained and decided
(automation.py); then retrain_on_drift sees that the corpus has its
challenger and does nothing. It is the path for a verdict whose run could
not train because another retrain was in flight. Both triggers request the
same job (trained_model then champion_decision) with the reason in the run's
tags. Neither loses a request, and neither retrains a corpus twice:

- a retrain is pointless when the latest challenger was already trained on
  the current corpus (same data, same seed, same model);
- the drift sensor holds a verdict back while a retrain is queued or
  running: its cursor stays before the verdict, which is looked at again
  once that run has finished (and then resolves to nothing if that run
  trained on the same corpus);
- the timer fires once, so it requests even while another run trains. Its
  trained_model step waits for the training pool (one slot), then trains
  only if the corpus still has no challenger.

The pools (trained_model and champion_decision, one slot each in the
instance config) are the last guard: even a manual run beside these never
trains or decides at the same time as another.
"""

import dagster as dg

from spam_assets.defs.automation.settings import retrain_cron, sensor_interval
from spam_assets.defs.keys import CHAMPION_DECISION, CLEANED_CORPUS, DRIFT_STATISTICS, TRAINED_MODEL
from spam_assets.defs.run_tags import RETRAIN_REASON_TAG, TIMER_TRIGGER, TRIGGER_TAG
from spam_assets.defs.retrain_policy import Verdict, active_retrain, already_trained, died_while_training, held_back

retrain_job = dg.define_asset_job(
    "retrain",
    selection=dg.AssetSelection.assets(TRAINED_MODEL, CHAMPION_DECISION),
    description="Train a challenger on the current corpus, then promote it only if it beats the champion.",
)


@dg.sensor(
    name="retrain_on_drift",
    target=retrain_job,
    minimum_interval_seconds=sensor_interval(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Requests a retrain when a new drift_statistics verdict says drift or decay (realised F1 below "
        "the floor), with the reasons in the run tag spam/retrain_reason. Coalesces: never a second "
        "retrain while one is queued or running, and never twice on the same corpus."
    ),
)
def retrain_on_drift(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    instance = context.instance
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=DRIFT_STATISTICS, after_storage_id=int(context.cursor or 0)),
        limit=100,
        ascending=True,  # every verdict, not only the latest (an @asset_sensor would see one)
    ).records
    if not records:
        return dg.SkipReason("no new drift verdict")
    last_seen = str(records[-1].storage_id)
    wanting = [(r, v) for r in records if (v := Verdict.of(r)).wants_retrain]
    if not wanting:
        return dg.SensorResult(cursor=last_seen, skip_reason=f"{len(records)} new verdict(s), no drift or decay")
    record, verdict = wanting[-1]
    if died_while_training(instance, record.run_id):
        # Its run found the drift and died training on it: retry_dead_training retries that, once, after a backoff.
        return dg.SensorResult(cursor=last_seen, skip_reason=f"{verdict.trigger} seen; its run died training: left to retry_dead_training")
    if (run := active_retrain(instance)) is not None:
        return dg.SkipReason(f"retrain wanted ({verdict.reason()[:120]}) but {held_back(run)}")  # cursor kept
    if (repeat := already_trained(instance)) is not None:
        return dg.SensorResult(cursor=last_seen, skip_reason=f"{verdict.trigger} seen, but {repeat}")
    context.log.info(f"requesting a retrain: {verdict.reason()}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"drift-{record.storage_id}",
                tags={
                    TRIGGER_TAG: verdict.trigger,
                    RETRAIN_REASON_TAG: verdict.reason(),
                    "spam/drift_run": record.run_id,  # the run that computed the verdict
                },
            )
        ],
        cursor=last_seen,
    )


_cron, _timezone = retrain_cron()


@dg.schedule(
    name="periodic_retrain",
    cron_schedule=_cron,
    execution_timezone=_timezone,
    target=retrain_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        f"Retrain timer ({_cron} {_timezone}; $SPAM_RETRAIN_CRON, $SPAM_RETRAIN_TIMEZONE): retrains without "
        "drift, unless nothing arrived since the last challenger. Requests even while another run trains: "
        "its training step waits for that run, then trains only if the corpus still has no challenger."
    ),
)
def periodic_retrain(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    instance = context.instance
    if instance.get_latest_materialization_event(CLEANED_CORPUS) is None:
        return dg.SkipReason("no corpus yet: ingest a batch first")
    if (repeat := already_trained(instance)) is not None:
        return dg.SkipReason(f"timer expired, but {repeat}: nothing new to learn from")
    reason = f"retrain timer ({_cron} {_timezone}) expired"
    if (run := active_retrain(instance)) is not None:
        reason += f"; run {run.run_id[:8]} may train first, and this one then only if the corpus is still new"
    return dg.RunRequest(tags={TRIGGER_TAG: TIMER_TRIGGER, RETRAIN_REASON_TAG: reason})
