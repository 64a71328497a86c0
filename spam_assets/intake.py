"""Intake: a received file becomes a staged batch and a `raw_sample` partition.

The one path every source takes (CLI, inbox sensor, feed schedule, tests),
so "received" always means the same thing.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from spam_assets.batches import BatchStore
from spam_assets.loaders import SourceSpec

# The dynamic partitions of raw_sample (defs/partitions.py defines them from this name).
BATCH_PARTITIONS = "batches"


def stage(source: Path | str, store: BatchStore, spec: SourceSpec = SourceSpec(), name: str | None = None) -> str:
    """Copy `source` into the batch store; returns the batch id (idempotent)."""
    return store.stage(Path(source), spec, name)


def register(instance: dg.DagsterInstance, batch_id: str) -> bool:
    """Add the batch's partition; False if it was already there."""
    if instance.has_dynamic_partition(BATCH_PARTITIONS, batch_id):
        return False
    instance.add_dynamic_partitions(BATCH_PARTITIONS, [batch_id])
    return True
