"""Intake: a received file becomes a staged batch and a `raw_sample` partition.

The one path every source takes (CLI, inbox sensor, feed schedule, tests),
so "received" always means the same thing. What must hold before anything
is staged is checked here too: the registry answers (`require_registry`: a
batch accepted while it is down would sit in the corpus, never judged), and
the disk has room for the batch and a model (`require_disk_space`: a full
disk found in training wastes the run and leaves partial files).
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import dagster as dg

from spam_assets import disk
from spam_assets.batches import BatchStore
from spam_assets.loaders import SourceSpec
from spam_assets.settings import paths

# The dynamic partitions of raw_sample (defs/partitions.py defines them from this name).
BATCH_PARTITIONS = "batches"
REGISTRY_TIMEOUT_ENV = "SPAM_REGISTRY_TIMEOUT_SECONDS"


class PreconditionFailed(RuntimeError):
    """Something intake needs is missing; nothing was staged."""


def registry_problem(uri: str, timeout: float | None = None) -> str | None:
    """Why the MLflow registry at `uri` cannot be used right now, in one line; None when it can.

    Only a tracking server is asked (its /health, with a short timeout); a
    local store is a file the platform opens itself.
    """
    if not uri.startswith(("http://", "https://")):
        return None
    timeout = timeout if timeout is not None else float(os.environ.get(REGISTRY_TIMEOUT_ENV) or 3)
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
            response.read()
        return None
    except urllib.error.HTTPError as error:
        return f"the MLflow registry at {uri} answered HTTP {error.code} to /health"
    except (OSError, ValueError) as error:  # refused, timed out, unknown host, malformed URI
        reason = getattr(error, "reason", None) or error
        return f"the MLflow registry at {uri} is unreachable ({reason}, {timeout:g} s timeout)"


def require_registry(uri: str, timeout: float | None = None) -> None:
    """Raise PreconditionFailed, saying what to do, when the registry cannot be reached."""
    if (problem := registry_problem(uri, timeout)) is not None:
        raise PreconditionFailed(f"{problem}; nothing was staged: start it (or fix MLFLOW_TRACKING_URI) and try again")


def disk_problem(home: Path | str | None, source_size: int, model_bytes: int | None) -> str | None:
    """Why the platform home's disk cannot take a batch of `source_size` bytes and a model, in one line; None when it can.

    `model_bytes`: disk.stored_model_bytes(tracking URI), asked once by a caller that checks many files.
    """
    where = paths(home)
    need = disk.estimate(source_size, disk.corpus_snapshot_bytes(where.corpus), model_bytes)
    return disk.space_problem(where.home, need)


def require_disk_space(source: Path | str, uri: str, home: Path | str | None = None) -> None:
    """Raise PreconditionFailed, saying what to do, when the disk has no room for `source` and a model."""
    if (problem := disk_problem(home, disk.source_bytes(source), disk.stored_model_bytes(uri))) is not None:
        raise PreconditionFailed(
            f"{problem}; nothing was staged: free some space (or lower {disk.MIN_FREE_ENV}) and try again"
        )


def stage(source: Path | str, store: BatchStore, spec: SourceSpec = SourceSpec(), name: str | None = None) -> str:
    """Copy `source` into the batch store; returns the batch id (idempotent)."""
    return store.stage(Path(source), spec, name)


def register(instance: dg.DagsterInstance, batch_id: str) -> bool:
    """Add the batch's partition; False if it was already there."""
    if instance.has_dynamic_partition(BATCH_PARTITIONS, batch_id):
        return False
    instance.add_dynamic_partitions(BATCH_PARTITIONS, [batch_id])
    return True
