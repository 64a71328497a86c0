"""One partition per received batch.

Dynamic partitions keyed by the batch's content hash rather than daily
partitions: batches arrive when they arrive (an inbox drop, a feed tick, a
backfill of history), several a day or none for a week, and a content key
makes a batch immutable and re-delivery idempotent. Dates live in metadata.
"""

import dagster as dg

from spam_assets.intake import BATCH_PARTITIONS

batch_partitions = dg.DynamicPartitionsDefinition(name=BATCH_PARTITIONS)
