"""Dagster definitions, split by concern and loaded as a folder (spam_assets/definitions.py).

    assets/       one module per stage: ingestion, corpus, monitoring, training, deployment
    automation/   sensors, schedules, jobs and declarative automation: the loop
    resources.py  resources and the executor (the folder's one @dg.definitions)
    partitions.py, retrain_policy.py, upstream.py, run_tags.py: shared by the above

Every Dagster object at module level in here is part of the code location.
"""
