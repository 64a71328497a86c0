"""Decisions from traffic: an hour that drifted, or whose estimated F1 fell, retrains or asks for labels.

traffic_drift judges each hour of served traffic. When an hour says drift,
decay, or that the champion's label-free spam F1 (CBPE) is below the floor
even at the top of its interval, the platform needs labels of today's
traffic to learn from it:

- when at least SPAM_MIN_NEW_LABELS labelled messages (default 100) have
  arrived since the champion's training corpus (feedback batches or the
  inbox), it requests a retrain, with the same guards as retrain_on_drift
  (one retrain at a time, never twice on one corpus);
- otherwise it writes a label request, the hour's most uncertain messages
  in a CSV the inbox reads back ($SPAM_HOME/review/needs-labels-<hour>.csv,
  label_requests.py), and says so on the webhook: once per alarming hour.
"""

import dagster as dg
import pandas as pd

from spam_assets.defs.automation.retrain import retrain_job
from spam_assets.defs.automation.settings import env_number, sensor_interval
from spam_assets.defs.keys import TRAFFIC_DRIFT
from spam_assets.defs.partitions import traffic_hours
from spam_assets.defs.resources import DecayPolicy, ModelRegistry, PlatformStore, Webhook
from spam_assets.defs.retrain_policy import VERDICT_KEY, active_retrain, already_trained, held_back
from spam_assets.defs.run_tags import RETRAIN_REASON_TAG, TRIGGER_TAG
from spam_assets.label_requests import most_uncertain, write_request
from spam_assets.model.tags import TAG_CORPUS_VERSION
from spam_assets.settings import LABELS
from spam_assets.traffic_tables import table_path

MIN_NEW_LABELS_ENV = "SPAM_MIN_NEW_LABELS"
LABEL_REQUEST_ROWS = 200
TRAFFIC_DRIFT_TRIGGER = "traffic drift"  # TRIGGER_TAG of the retrains this sensor requests


def alarm(meta: dict, f1_floor: float) -> str | None:
    """Why a traffic_drift verdict calls for action, or None: drift, decay, or estimated F1 surely below the floor."""
    verdict = meta[VERDICT_KEY].value
    if verdict.get("drift") or verdict.get("decay"):
        return f"traffic of {verdict.get('hour')}: {verdict.get('trigger')}: {'; '.join(verdict.get('reasons', []))}"
    f1 = ((meta["estimates"].value if "estimates" in meta else {}).get("cbpe") or {}).get("f1") or {}
    if f1.get("high") is not None and f1["high"] < f1_floor:
        return (
            f"traffic of {verdict.get('hour')}: estimated spam F1 {f1['value']:.3f} "
            f"(95% up to {f1['high']:.3f}) < floor {f1_floor} (CBPE, no labels)"
        )
    return None


def new_labels(store: PlatformStore, registry: ModelRegistry) -> int:
    """Labelled messages in accepted batches the champion was not trained on (all of them with no champion)."""
    champion = registry.registry().champion()
    corpora, batches = store.corpus(), store.batches()
    version = champion.tags.get(TAG_CORPUS_VERSION) if champion else None
    seen = set(corpora.manifest(version)["batch_ids"]) if version and corpora.path(version).exists() else set()
    return sum(int(batches.read_parsed(b)["label"].isin(LABELS).sum()) for b in batches.accepted_ids() if b not in seen)


@dg.sensor(
    name="retrain_on_traffic",
    target=retrain_job,
    minimum_interval_seconds=sensor_interval(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "When an hour of traffic drifts or its estimated spam F1 falls below the floor: a retrain if "
        f"${MIN_NEW_LABELS_ENV} (default 100) new labelled messages exist, else a label request of the hour's "
        "most uncertain messages (review/needs-labels-<hour>.csv, for the inbox) and a webhook message."
    ),
)
def retrain_on_traffic(
    context: dg.SensorEvaluationContext,
    store: PlatformStore,
    registry: ModelRegistry,
    decay: DecayPolicy,
    webhook: Webhook,
) -> dg.SensorResult | dg.SkipReason:
    instance = context.instance
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=TRAFFIC_DRIFT, after_storage_id=int(context.cursor or 0)),
        limit=100,
        ascending=True,
    ).records
    if not records:
        return dg.SkipReason("no new traffic verdict")
    last_seen = str(records[-1].storage_id)
    alarms = [
        (r, why)
        for r in records
        if VERDICT_KEY in (meta := r.asset_materialization.metadata) and (why := alarm(meta, decay.f1_floor))
    ]
    if not alarms:
        calm = f"{len(records)} new traffic verdict(s), no drift or decay"
        return dg.SensorResult(cursor=last_seen, skip_reason=calm)
    record, why = alarms[-1]
    minimum = int(env_number(MIN_NEW_LABELS_ENV, 100))
    labels = new_labels(store, registry)
    if labels >= minimum:
        if (run := active_retrain(instance)) is not None:
            return dg.SkipReason(f"retrain wanted ({why[:120]}) but {held_back(run)}")  # cursor kept: looked at again
        if (repeat := already_trained(instance)) is not None:
            return dg.SensorResult(cursor=last_seen, skip_reason=f"{why[:120]}; but {repeat}")
        reason = f"{why} ({labels} new labelled messages)"
        context.log.info(f"requesting a retrain: {reason}")
        tags = {TRIGGER_TAG: TRAFFIC_DRIFT_TRIGGER, RETRAIN_REASON_TAG: reason[:1000], "spam/traffic_run": record.run_id}
        request = dg.RunRequest(run_key=f"traffic-{record.storage_id}", tags=tags)
        return dg.SensorResult(run_requests=[request], cursor=last_seen)

    hour = record.partition_key or "unpartitioned"
    start = traffic_hours.time_window_for_partition_key(hour).start if record.partition_key else None
    table = table_path(store.paths.traffic, start) if start else None
    if table is None or not table.exists():
        return dg.SensorResult(cursor=last_seen, skip_reason=f"{why[:200]}; needs labels, but the hour's table is gone")
    rows = most_uncertain(pd.read_parquet(table), LABEL_REQUEST_ROWS)
    path = write_request(rows, store.paths.home / "review" / f"needs-labels-{hour.replace(':', '')}.csv")
    text = (
        f"Needs labels: {why}. Only {labels} labelled messages arrived since the champion's training data "
        f"(a retrain needs {minimum}, ${MIN_NEW_LABELS_ENV}). Label the {len(rows)} messages the champion is least "
        f"sure of in {path} (fill the label column with spam or ham) and drop the file into the inbox."
    )
    context.log.warning(text)
    webhook.post(text, context.log)
    return dg.SensorResult(cursor=last_seen, skip_reason=text[:1000])

