"""The traffic contract: the files the server writes about the traffic it serves, which the graph reads.

- `verdict_ids`       the UUIDv7 every verdict carries (time-ordered, unique across replicas).
- `prediction_files`  the prediction log: segment names, record schema, readers.
- `feedback_files`    users' reports stored beside the log: schema, readers.

Like `spam_assets.model`, it imports no Dagster and no serving code, so both
sides can depend on it and neither on the other.
"""
