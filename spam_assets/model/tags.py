"""Tag keys on MLflow runs and model versions: written by training, read by serving and the graph."""

TAG_DAGSTER_RUN = "dagster_run_id"
TAG_CORPUS_VERSION = "corpus_data_version"
TAG_CANDIDATE = "candidate"
TAG_MODEL_SHA256 = "model_sha256"  # of model.skops; the server refuses a file that does not match
TAG_PROMOTION_REASON = "promotion_reason"  # set when a version becomes champion: it passed the decision once
TAG_RETIRED_BY = "retired_by"  # the version that replaced it as champion
TAG_ROLLED_BACK = "rolled_back"  # "true" once an operator rolled it back: never a last good model

# Staged rollout of the version the `challenger` alias names (the graph writes these, servers follow them).
TAG_ROLLOUT_STAGE = "rollout_stage"  # "shadow" | "canary" | "promoted" | "retired"
TAG_ROLLOUT_CANARY_SHARE = "rollout_canary_share"  # share of traffic in [0, 1] the challenger answers in canary
TAG_ROLLOUT_SINCE = "rollout_stage_since"  # ISO 8601 UTC time the stage began
ROLLOUT_LIVE_STAGES = ("shadow", "canary")  # stages in which servers load and score the challenger

# The operating point (spam_assets.model.operating_point): serving labels spam from the threshold on.
TAG_OPERATING_THRESHOLD = "operating_threshold"  # P(spam) from which the label is spam; absent: 0.5
TAG_SUSPICIOUS_THRESHOLD = "suspicious_threshold"  # P(spam) from which the tier is "suspicious"
TAG_OPERATING_POINT = "operating_point"  # JSON: target, holdout ham count, false positives, 95% CI, basis
