"""The code location: `dagster dev -m spam_assets.definitions` or via workspace.yaml."""

import dagster as dg

from spam_assets.defs.assets.corpus import cleaned_corpus
from spam_assets.defs.assets.deployment import champion_decision
from spam_assets.defs.assets.ingestion import raw_sample
from spam_assets.defs.assets.monitoring import drift_statistics
from spam_assets.defs.assets.training import trained_model
from spam_assets.defs.resources import build_resources

ASSETS = [raw_sample, cleaned_corpus, drift_statistics, trained_model, champion_decision]

defs = dg.Definitions(assets=ASSETS, resources=build_resources())
