"""The loop nobody has to press a button for: schedules, sensors and declarative automation.

    inbox file / feed tick -> raw_sample partition            (inbox.py, feed.py)
    new raw_sample         -> cleaned_corpus, drift_statistics (automation.py: eager)
                              + trained_model, champion_decision in the same run,
                                trained only if that verdict says drift or decay
    verdict held back, timer -> trained_model, champion_decision (retrain.py)
    decision / failure     -> webhook                          (notifications.py)

Every sensor and schedule is on by default, so the loop turns without a
click; intervals, crons, the inbox and the webhook come from environment
variables (settings.py).
"""

from spam_assets.defs.automation.automation import refresh_on_new_batch
from spam_assets.defs.automation.feed import daily_feed, feed_job
from spam_assets.defs.automation.inbox import inbox_sensor, ingest_batch_job
from spam_assets.defs.automation.notifications import Webhook, notify_champion_decision, notify_run_failure
from spam_assets.defs.automation.retrain import periodic_retrain, retrain_job, retrain_on_drift

JOBS = [ingest_batch_job, retrain_job, feed_job]
SCHEDULES = [daily_feed, periodic_retrain]
SENSORS = [inbox_sensor, refresh_on_new_batch, retrain_on_drift, notify_champion_decision, notify_run_failure]
RESOURCES = {"webhook": Webhook()}
