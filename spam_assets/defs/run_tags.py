"""Tags put on the runs the automation requests: searchable and shown in the UI's run list."""

TRIGGER_TAG = "spam/trigger"  # what started the run: inbox, feed, new batch, drift, decay, schedule
REFRESH_TRIGGER = "new batch"  # TRIGGER_TAG of the runs that refresh corpus and drift after a batch
TIMER_TRIGGER = "schedule"  # TRIGGER_TAG of the runs the retrain timer requests
RETRY_TRIGGER = "retry"  # TRIGGER_TAG of the runs that retry a training that died
RETRAIN_REASON_TAG = "spam/retrain_reason"
INBOX_FILE_TAG = "spam/inbox_file"
# "true" on a run that must train even though the corpus already has its challenger (same data,
# same seed: only for a changed training config or code). Anything else never trains a corpus twice.
FORCE_RETRAIN_TAG = "spam/force_retrain"
# Set by trained_model when it starts training: which corpus a run that died was training on.
CORPUS_VERSION_TAG = "spam/corpus_version"
# Set by trained_model when it decides not to train, with why: what `ingest` says, and the UI shows.
NOT_TRAINED_TAG = "spam/not_trained"
