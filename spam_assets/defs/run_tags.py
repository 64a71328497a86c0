"""Tags put on the runs the automation requests: searchable and shown in the UI's run list."""

TRIGGER_TAG = "spam/trigger"  # what started the run: inbox, feed, new batch, drift, decay, schedule
REFRESH_TRIGGER = "new batch"  # TRIGGER_TAG of the runs that refresh corpus and drift after a batch
TIMER_TRIGGER = "schedule"  # TRIGGER_TAG of the runs the retrain timer requests
RETRAIN_REASON_TAG = "spam/retrain_reason"
INBOX_FILE_TAG = "spam/inbox_file"
