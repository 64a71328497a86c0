"""Tag keys on MLflow runs and model versions: written by training, read by serving and the graph."""

TAG_DAGSTER_RUN = "dagster_run_id"
TAG_CORPUS_VERSION = "corpus_data_version"
TAG_CANDIDATE = "candidate"
TAG_MODEL_SHA256 = "model_sha256"  # of model.skops; the server refuses a file that does not match
TAG_PROMOTION_REASON = "promotion_reason"  # set when a version becomes champion: it passed the decision once
TAG_RETIRED_BY = "retired_by"  # the version that replaced it as champion
TAG_ROLLED_BACK = "rolled_back"  # "true" once an operator rolled it back: never a last good model
