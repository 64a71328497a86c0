"""The loop nobody has to press a button for: schedules, sensors and declarative automation.

    inbox file / feed tick -> raw_sample partition            (inbox.py, feed.py)
    new raw_sample         -> cleaned_corpus, drift_statistics (automation.py: eager)
                              + trained_model, champion_decision in the same run,
                                trained only on drift, decay or no champion yet
    verdict held back, timer -> trained_model, champion_decision (retrain.py)
    decision / failure     -> webhook                          (notifications.py)

Every sensor and schedule is on by default, so the loop turns without a
click; intervals, crons, the inbox and the webhook come from environment
variables (settings.py).
"""
