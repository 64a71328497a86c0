"""The code location: `dagster dev -m spam_assets.definitions` or via workspace.yaml."""

import dagster as dg

from spam_assets.defs.assets.corpus import cleaned_corpus
from spam_assets.defs.assets.deployment import champion_decision
from spam_assets.defs.assets.ingestion import raw_sample
from spam_assets.defs.assets.monitoring import drift_statistics
from spam_assets.defs.assets.training import trained_model
from spam_assets.defs.automation import JOBS, RESOURCES, SCHEDULES, SENSORS
from spam_assets.defs.resources import build_resources

ASSETS = [raw_sample, cleaned_corpus, drift_statistics, trained_model, champion_decision]

defs = dg.Definitions(
    assets=ASSETS,
    jobs=JOBS,
    schedules=SCHEDULES,
    sensors=SENSORS,
    resources={**build_resources(), **RESOURCES},
    # One process per run, not one per step. Measured with the daemon: each step
    # process (sklearn + MLflow imports) took 10-25 s to start on 2 cores, and the
    # trained_model step process lingered minutes after success (idle joblib
    # workers), holding champion_decision back until it exited.
    executor=dg.in_process_executor,
)
