"""Tag keys on MLflow runs and model versions: written by training, read by serving and the graph."""

TAG_DAGSTER_RUN = "dagster_run_id"
TAG_CORPUS_VERSION = "corpus_data_version"
TAG_CANDIDATE = "candidate"
TAG_MODEL_SHA256 = "model_sha256"  # of model.skops; the server refuses a file that does not match
