"""What an upstream asset handed over: Dagster's own record of its latest materialisation.

Downstream assets take what they work on (the corpus version, the
challenger version) from here, not from side channels such as the corpus
store's CURRENT pointer or an MLflow alias, which anything may have moved
since the upstream ran. It is the same record Dagster uses for the
downstream's provenance (the latest materialisation of each dependency).
"""

from __future__ import annotations

import dataclasses

import dagster as dg

DATA_VERSION_TAG = "dagster/data_version"  # where Dagster keeps a materialisation's data version


@dataclasses.dataclass(frozen=True)
class Handover:
    key: dg.AssetKey
    run_id: str
    storage_id: int
    data_version: str | None
    metadata: dict

    def require(self, name: str):
        """A metadata value the upstream must have recorded."""
        if name not in self.metadata:
            raise dg.Failure(
                f"{self.key.to_user_string()} (run {self.run_id}) recorded no {name!r} metadata: "
                "materialise it again with this code"
            )
        return self.metadata[name]


def latest(instance: dg.DagsterInstance, key: dg.AssetKey) -> Handover | None:
    record = next(iter(instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=1).records), None)
    if record is None:
        return None
    materialization = record.asset_materialization
    return Handover(
        key=key,
        run_id=record.run_id,
        storage_id=record.storage_id,
        data_version=materialization.tags.get(DATA_VERSION_TAG) if materialization.tags else None,
        metadata={k: v.value for k, v in materialization.metadata.items()},
    )


def handed_over(instance: dg.DagsterInstance, key: dg.AssetKey, needed_by: str) -> Handover:
    """The upstream's latest materialisation; a clear failure if it has none."""
    found = latest(instance, key)
    if found is None:
        raise dg.Failure(
            f"{needed_by} needs {key.to_user_string()}, which has never been materialised: materialise it first"
        )
    return found
