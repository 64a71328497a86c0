"""Run the asset graph in-process for given batches (CLI, tests, benchmarks).

Two runs, as automation does it: the batch partitions, then, if any batch
was accepted, everything downstream on the whole corpus.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from spam_assets.definitions import defs
from spam_assets.defs.assets.ingestion import raw_sample

DOWNSTREAM = ["cleaned_corpus", "drift_statistics", "trained_model", "champion_decision"]


def materialize_batches(
    batch_ids: Sequence[str],
    instance: dg.DagsterInstance,
    resources: dict,
    run_config: dict | None = None,
    downstream: Sequence[str] = DOWNSTREAM,
) -> list[dg.ExecuteInProcessResult]:
    results = [
        dg.materialize([raw_sample], partition_key=b, instance=instance, resources=resources, raise_on_error=False)
        for b in batch_ids
    ]
    if downstream and any(r.success for r in results):
        results.append(
            dg.materialize(
                graph_assets(),
                selection=list(downstream),
                instance=instance,
                resources=resources,
                run_config=_only(run_config, downstream),
                raise_on_error=False,
            )
        )
    return results


def graph_assets() -> list:
    """Every asset of the code location, as its defs folder declares them (without its resources)."""
    return list(defs().assets or [])


def _only(run_config: dict | None, keys) -> dict | None:
    """Dagster rejects config for assets outside the selection; keep what applies."""
    if not run_config or "ops" not in run_config:
        return run_config
    return {**run_config, "ops": {k: v for k, v in run_config["ops"].items() if k in keys}}
