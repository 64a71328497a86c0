"""The graph's asset keys, named once.

Modules refer to other assets by key, not by importing their definitions:
the defs folder loads every Dagster object a module holds, so each asset
is held by the one module that defines it.
"""

import dagster as dg

RAW_SAMPLE = dg.AssetKey("raw_sample")
CLEANED_CORPUS = dg.AssetKey("cleaned_corpus")
DRIFT_STATISTICS = dg.AssetKey("drift_statistics")
TRAINED_MODEL = dg.AssetKey("trained_model")
CHAMPION_DECISION = dg.AssetKey("champion_decision")
TRAFFIC = dg.AssetKey("traffic")
TRAFFIC_DRIFT = dg.AssetKey("traffic_drift")
FEEDBACK_REVIEW = dg.AssetKey("feedback_review")
LIVE_COMPARISON = dg.AssetKey("live_comparison")
ROLLOUT_DECISION = dg.AssetKey("rollout_decision")
