"""Declarative automation: cleaned_corpus and drift_statistics refresh whenever a batch lands.

Both assets carry AutomationCondition.eager() (on their decorators). Eager
waits while any raw_sample partition is missing or in progress, which with
one partition per batch means "until the batch in flight is judged", and
then requests both assets in one run. Dagster's own default automation
sensor is stopped by default, so this one, on by default, evaluates them.
"""

import dagster as dg

from spam_assets.defs.assets.corpus import cleaned_corpus
from spam_assets.defs.assets.monitoring import drift_statistics
from spam_assets.defs.automation.settings import TRIGGER_TAG, sensor_interval

refresh_on_new_batch = dg.AutomationConditionSensorDefinition(
    "refresh_on_new_batch",
    target=dg.AssetSelection.assets(cleaned_corpus, drift_statistics),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=sensor_interval(),
    run_tags={TRIGGER_TAG: "new batch"},
    description="Refreshes the corpus and the drift verdict after each new raw_sample partition.",
)
