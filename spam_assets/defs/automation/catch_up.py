"""A corpus version that was never judged for drift is judged once the registry is back.

drift_statistics reads the champion from the MLflow registry. If the
registry is down during the refresh run, the corpus is accepted but its
verdict fails; eager automation does not request it again (it handled that
update), so the new batches would never be judged, and never trained on.
This sensor notices a cleaned_corpus newer than the latest verdict, waits
while a run is judging it or the registry is unreachable, then requests a
refresh of the verdict: the same run as after a batch (trained_model and
champion_decision ride along, and train only on drift or decay).
"""

from __future__ import annotations

import time

import dagster as dg

from spam_assets.defs.automation.settings import retry_backoff_seconds, sensor_interval
from spam_assets.defs.keys import CHAMPION_DECISION, CLEANED_CORPUS, DRIFT_STATISTICS, TRAINED_MODEL
from spam_assets.defs.resources import ModelRegistry
from spam_assets.defs.retrain_policy import IN_FLIGHT, assets_of
from spam_assets.defs.run_tags import REFRESH_TRIGGER, TRIGGER_TAG
from spam_assets.defs.upstream import latest
from spam_assets.intake import registry_problem

JUDGE_TAG = "spam/judge_corpus"  # the corpus version a catch-up run judges
MAX_ATTEMPTS = 3  # per corpus version: a verdict that keeps failing needs a person, not a loop
JUDGED = [DRIFT_STATISTICS, TRAINED_MODEL, CHAMPION_DECISION]


@dg.sensor(
    name="judge_unjudged_corpus",
    target=dg.AssetSelection.assets(*JUDGED),
    minimum_interval_seconds=sensor_interval(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Requests the drift verdict (training and the decision riding along) for a corpus version whose "
        "verdict never materialised, e.g. because the registry was down: once the registry answers, "
        f"at most {MAX_ATTEMPTS} times per corpus version, $SPAM_RETRY_BACKOFF_SECONDS apart."
    ),
)
def judge_unjudged_corpus(context: dg.SensorEvaluationContext, registry: ModelRegistry) -> dg.SensorResult | dg.SkipReason:
    instance = context.instance
    corpus, verdict = latest(instance, CLEANED_CORPUS), latest(instance, DRIFT_STATISTICS)
    if corpus is None or (verdict is not None and verdict.storage_id > corpus.storage_id):
        return dg.SkipReason("every corpus version has its drift verdict")
    version = corpus.data_version or "?"
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT), limit=200):
        if DRIFT_STATISTICS in assets_of(instance, run):
            return dg.SkipReason(f"corpus {version} is being judged by run {run.run_id[:8]}")
    attempts = instance.get_run_records(filters=dg.RunsFilter(tags={JUDGE_TAG: version}), limit=MAX_ATTEMPTS)
    if len(attempts) >= MAX_ATTEMPTS:
        return dg.SkipReason(
            f"corpus {version} is still unjudged after {MAX_ATTEMPTS} catch-up runs; see run "
            f"{attempts[0].dagster_run.run_id}, fix the cause, then materialise drift_statistics"
        )
    if attempts and (wait := (attempts[0].end_time or time.time()) + retry_backoff_seconds() - time.time()) > 0:
        return dg.SkipReason(f"corpus {version} unjudged; next attempt in {wait:.0f} s")
    if (problem := registry_problem(registry.uri())) is not None:
        return dg.SkipReason(f"corpus {version} waits for its drift verdict: {problem}")
    context.log.info(f"judging corpus {version}, accepted without a drift verdict")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"judge-{version}-{len(attempts)}",
                asset_selection=JUDGED,
                tags={TRIGGER_TAG: REFRESH_TRIGGER, JUDGE_TAG: version},
            )
        ]
    )
