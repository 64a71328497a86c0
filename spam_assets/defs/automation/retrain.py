"""Retrain triggers: drift or decay in a new drift verdict, and a weekly timer.

Both request the same job (trained_model then champion_decision) with the
reason in the run's tags, and both coalesce the same way:

- while a retrain is queued or running, a new request is held back, not
  dropped: the drift sensor leaves its cursor before the verdict, so the
  verdict is looked at again once that run has finished;
- a retrain is pointless when the latest challenger was already trained on
  the current corpus (same data, same seed, same model), so the held-back
  verdict then resolves to nothing; if more data arrived meanwhile, it retrains.

The `champion_decision` pool (limit 1 in the instance config) is the last
guard: even a manual run beside these can never decide at the same time.
"""

import dataclasses

import dagster as dg

from spam_assets.defs.assets.corpus import cleaned_corpus
from spam_assets.defs.assets.deployment import champion_decision
from spam_assets.defs.assets.monitoring import drift_statistics
from spam_assets.defs.assets.training import trained_model
from spam_assets.defs.automation.settings import RETRAIN_REASON_TAG, TRIGGER_TAG, retrain_cron, sensor_interval

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
RETRAIN_KEYS = {trained_model.key, champion_decision.key}
MAX_REASON = 500  # tags are labels, not reports: the full reasons are on drift_statistics

retrain_job = dg.define_asset_job(
    "retrain",
    selection=dg.AssetSelection.assets(trained_model, champion_decision),
    description="Train a challenger on the current corpus, then promote it only if it beats the champion.",
)


@dataclasses.dataclass(frozen=True)
class Verdict:
    drift: bool
    decay: bool
    reasons: list[str]

    @classmethod
    def of(cls, record: dg.EventLogRecord) -> "Verdict":
        meta = record.asset_materialization.metadata
        value = lambda key, default: meta[key].value if key in meta else default
        text = str(value("reasons", ""))
        reasons = [line.removeprefix("- ").strip() for line in text.splitlines() if line.strip() not in ("", "- none")]
        return cls(bool(value("drift", False)), bool(value("decay", False)), reasons)

    @property
    def wants_retrain(self) -> bool:
        return self.drift or self.decay

    @property
    def trigger(self) -> str:
        return " and ".join(k for k, on in (("drift", self.drift), ("decay", self.decay)) if on)

    def reason(self) -> str:
        return f"{self.trigger}: {'; '.join(self.reasons) or 'no reasons recorded'}"[:MAX_REASON]


def active_retrain(instance: dg.DagsterInstance) -> dg.DagsterRun | None:
    """A queued or running run that trains or decides, whoever launched it."""
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT), limit=200):
        if run.asset_selection and run.asset_selection & RETRAIN_KEYS:
            return run
    return None


def _latest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict | None:
    event = instance.get_latest_materialization_event(key)
    return None if event is None else {k: v.value for k, v in event.asset_materialization.metadata.items()}


def already_trained(instance: dg.DagsterInstance) -> str | None:
    """Why a retrain now would repeat the last one, or None: the current corpus is new to every challenger."""
    corpus = _latest_metadata(instance, cleaned_corpus.key)
    model = _latest_metadata(instance, trained_model.key)
    if corpus and model and corpus.get("data_version") == model.get("corpus_data_version"):
        version = model.get("model_version")
        return f"challenger v{version} was already trained on the current corpus {corpus['data_version']}"
    return None


def held_back(run: dg.DagsterRun) -> str:
    return f"retrain run {run.run_id[:8]} is {run.status.value.lower()}; checked again once it finishes"


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
        dg.AssetRecordsFilter(asset_key=drift_statistics.key, after_storage_id=int(context.cursor or 0)),
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
        "drift, unless a retrain is in flight or nothing arrived since the last challenger."
    ),
)
def periodic_retrain(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    instance = context.instance
    if (run := active_retrain(instance)) is not None:
        return dg.SkipReason(f"timer expired but {held_back(run)}")
    if instance.get_latest_materialization_event(cleaned_corpus.key) is None:
        return dg.SkipReason("no corpus yet: ingest a batch first")
    if (repeat := already_trained(instance)) is not None:
        return dg.SkipReason(f"timer expired, but {repeat}: nothing new to learn from")
    return dg.RunRequest(
        tags={TRIGGER_TAG: "schedule", RETRAIN_REASON_TAG: f"retrain timer ({_cron} {_timezone}) expired"}
    )
