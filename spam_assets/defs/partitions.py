"""Partitions: one per received batch (raw_sample), one per hour of served traffic (traffic).

Batches: dynamic partitions keyed by the batch's content hash rather than daily
partitions: batches arrive when they arrive (an inbox drop, a feed tick, a
backfill of history), several a day or none for a week, and a content key
makes a batch immutable and re-delivery idempotent. Dates live in metadata.
"""

import dagster as dg

from spam_assets.defs.automation.settings import traffic_start
from spam_assets.intake import BATCH_PARTITIONS

batch_partitions = dg.DynamicPartitionsDefinition(name=BATCH_PARTITIONS)

# Hourly, UTC, from a fixed recent hour (SPAM_TRAFFIC_START) to the current hour: end_offset=1 lists the
# hour still filling, so it is compacted as its segments close. Why hours: spam_assets/traffic_tables.py.
traffic_hours = dg.HourlyPartitionsDefinition(start_date=traffic_start(), end_offset=1)
