"""A training that dies (kill -9, out of memory, a full disk) releases what it held, and is retried once.

What the instance does (dagster.yaml, run monitoring): a dead run's pool
slot is freed and a run stuck STARTING fails. What these sensors add:

- `release_dead_training`: the MLflow run the training left RUNNING is
  ended FAILED, with the reason, so the MLflow UI never shows a ghost.
- `retry_dead_training`: the corpus it was training on (run tag
  spam/corpus_version, set when training starts) is trained again after a
  backoff, exactly once per corpus version (the cursor, and the run key),
  unless a challenger for it (or for a newer corpus) exists by then.

retrain_on_drift leaves a verdict whose own run died while training to the
retry here, so one death never gets two retries. The notification saying
what died and why is notify_run_failure's (notifications.py).
"""

from __future__ import annotations

import json
import time

import dagster as dg

from spam_assets.defs.automation.retrain import retrain_job
from spam_assets.defs.automation.settings import notify_interval, retry_backoff_seconds, sensor_interval
from spam_assets.defs.keys import CLEANED_CORPUS
from spam_assets.defs.resources import ModelRegistry
from spam_assets.defs.retrain_policy import active_retrain, challenger_for, died_training, held_back
from spam_assets.defs.run_tags import CORPUS_VERSION_TAG, RETRAIN_REASON_TAG, RETRY_TRIGGER, TRIGGER_TAG
from spam_assets.defs.upstream import latest
from spam_assets.training_runs import fail_running_runs

PROCESS_DIED = "Run execution process for"  # how Dagster's code server reports a run process that exited
REMEMBERED = 200  # corpus versions kept in the retry cursor: far more than ever die between two trainings
RECENT_FAILURES = 50


def death_reason(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str:
    """Why a run ended FAILURE, in its own words: the step's error, else what the process monitor saw."""
    errors = []
    for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        error = getattr(entry.dagster_event.event_specific_data, "error", None)
        while error is not None and error.cause is not None:  # Dagster wraps user errors: the cause helps
            error = error.cause
        if error is not None:
            errors.append(f"{entry.dagster_event.step_key}: {error.message.strip()}")
    if errors:
        return "; ".join(errors)
    for entry in reversed(instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)):
        message = entry.dagster_event.message or ""
        if (at := message.find(PROCESS_DIED)) >= 0:  # the code server saw the process die ("[DagsterApiServer] ...")
            return message[at:].strip()
    failure = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    return (failure[-1].dagster_event.message or "").strip() if failure else "no reason recorded"


def plain_words(reason: str) -> str:
    """The reason, with what to do about the usual causes in front of it."""
    lowered = reason.lower()
    if "no space left on device" in lowered or "errno 28" in lowered:
        return f"out of disk space: free space under the platform home ({reason})"
    if "signal 9" in lowered or "sigkill" in lowered:
        return f"its process was killed (out of memory, or by hand) ({reason})"
    if "out of memory" in lowered or "memoryerror" in lowered:
        return f"out of memory ({reason})"
    return reason


@dg.run_failure_sensor(
    name="release_dead_training",
    minimum_interval_seconds=notify_interval(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "When a run that was training fails (its process killed, out of memory, a full disk), ends the MLflow "
        "run it left RUNNING as FAILED, with the reason in the tag spam/failure_reason."
    ),
)
def release_dead_training(context: dg.RunFailureSensorContext, registry: ModelRegistry) -> None:
    run = context.dagster_run
    if CORPUS_VERSION_TAG not in run.tags:
        return  # it never started training: nothing was opened in MLflow
    reason = death_reason(context.instance, run)
    ended = fail_running_runs(registry.uri(), run.run_id, reason)
    if ended:
        context.log.info(f"run {run.run_id[:8]} died training: ended MLflow run(s) {ended} as FAILED ({reason})")


@dg.sensor(
    name="retry_dead_training",
    target=retrain_job,
    minimum_interval_seconds=sensor_interval(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Retrains, once per corpus version and $SPAM_RETRY_BACKOFF_SECONDS (60) after the failure, the corpus a "
        "training was on when its run died, unless that corpus or a newer one got its challenger meanwhile."
    ),
)
def retry_dead_training(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    instance, backoff = context.instance, retry_backoff_seconds()
    retried: list[str] = json.loads(context.cursor) if context.cursor else []
    pending = [
        (record, version)
        for record, version in died_training(instance, RECENT_FAILURES)
        if version not in retried and challenger_for(instance, version) is None
    ]
    if not pending:
        return dg.SkipReason("no training died on a corpus that is still untrained")
    record, version = pending[0]  # the newest; retraining the current corpus covers the older ones too
    due = (record.end_time or record.update_timestamp.timestamp()) + backoff
    if (wait := due - time.time()) > 0:
        return dg.SkipReason(f"training of corpus {version} died; retrying in {wait:.0f} s")
    if (run := active_retrain(instance)) is not None:
        return dg.SkipReason(f"training of corpus {version} died; retry waits: {held_back(run)}")  # cursor kept
    retried = (retried + [v for _, v in pending if v not in retried])[-REMEMBERED:]
    current = latest(instance, CLEANED_CORPUS)
    if current is not None and (existing := challenger_for(instance, current.data_version or "")):
        skip = f"training of corpus {version} died, but challenger v{existing} covers the current corpus"
        return dg.SensorResult(cursor=json.dumps(retried), skip_reason=skip)
    reason = f"retry: training of corpus {version} died: {plain_words(death_reason(instance, record.dagster_run))}"
    context.log.info(f"requesting a retrain: {reason}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"retry-{version}",  # Dagster drops a second request with the same key
                tags={TRIGGER_TAG: RETRY_TRIGGER, RETRAIN_REASON_TAG: reason[:500], "spam/died_run": record.dagster_run.run_id},
            )
        ],
        cursor=json.dumps(retried),
    )
