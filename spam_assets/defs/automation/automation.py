"""Declarative automation: after each batch, one run refreshes corpus and drift, and retrains on drift.

cleaned_corpus and drift_statistics carry AutomationCondition.eager() (on
their decorators). Eager waits while any raw_sample partition is missing or
in progress, which with one partition per batch means "until the batch in
flight is judged", and then requests both. trained_model and
champion_decision ride along in that same run (retrain_policy.rides_with);
trained_model trains there only when the run's own verdict says drift,
decay or no champion yet, so a drifting batch is retrained on without a second
run to start.
Dagster's own default automation sensor is stopped by default, so this one,
on by default, evaluates them.
"""

import dagster as dg

from spam_assets.defs.automation.settings import sensor_interval
from spam_assets.defs.keys import CHAMPION_DECISION, CLEANED_CORPUS, DRIFT_STATISTICS, TRAINED_MODEL
from spam_assets.defs.run_tags import REFRESH_TRIGGER, TRIGGER_TAG

refresh_on_new_batch = dg.AutomationConditionSensorDefinition(
    "refresh_on_new_batch",
    target=dg.AssetSelection.assets(CLEANED_CORPUS, DRIFT_STATISTICS, TRAINED_MODEL, CHAMPION_DECISION),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=sensor_interval(),
    run_tags={TRIGGER_TAG: REFRESH_TRIGGER},
    description=(
        "Refreshes the corpus and the drift verdict after each new raw_sample partition; in the same run, "
        "trains and decides when that verdict says drift or decay, or when there is no champion yet."
    ),
)
