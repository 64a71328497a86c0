"""MLflow conventions of the platform, in one place.

Registered model `spam-classifier`; aliases `challenger` (newest trained),
`champion` (serving) and `previous-champion` (one step of rollback). Stages
are deprecated in MLflow 3, so only aliases are used. Every version carries
tags that lead back to the Dagster run and the corpus it was trained on.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import mlflow.artifacts
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from spam_assets.model.artifact import RefusedModel, load_skops, read_artifact
from spam_assets.model.operating_point import Tiers
from spam_assets.model.tags import (
    TAG_CANDIDATE,
    TAG_CORPUS_VERSION,
    TAG_DAGSTER_RUN,
    TAG_MODEL_SHA256,
    TAG_PROMOTION_REASON,
    TAG_RETIRED_BY,
    TAG_ROLLED_BACK,
)
from spam_assets.model.verify import DEFAULT_PROBES, VerifiedModel, load_verified
from spam_assets.settings import (
    CHALLENGER_ALIAS,
    CHAMPION_ALIAS,
    EXPERIMENT_NAME,
    MODEL_NAME,
    PREVIOUS_CHAMPION_ALIAS,
)


def ensure_experiment(tracking_uri: str, artifact_root: Path | None, name: str = EXPERIMENT_NAME) -> str:
    """Create the experiment with artifacts under the platform home (not ./mlruns of whatever cwd)."""
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = artifact_root.resolve().as_uri() if artifact_root is not None else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # created concurrently
        return client.get_experiment_by_name(name).experiment_id


@dataclass
class ModelCard:
    """What a served verdict can be traced back to."""

    name: str
    version: str
    run_id: str
    dagster_run_id: str = ""
    corpus_data_version: str = ""
    candidate: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    source: str = ""
    # The label threshold and action tiers from the version's operating point (0.5 without one).
    tiers: Tiers = field(default_factory=Tiers)


class Registry:
    def __init__(self, tracking_uri: str, model_name: str = MODEL_NAME):
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def version_for(self, alias: str) -> ModelVersion | None:
        try:
            return self.client.get_model_version_by_alias(self.model_name, alias)
        except MlflowException as error:
            if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                return None
            raise

    def champion(self) -> ModelVersion | None:
        return self.version_for(CHAMPION_ALIAS)

    def challenger(self) -> ModelVersion | None:
        return self.version_for(CHALLENGER_ALIAS)

    def model_uri(self, version: str | int) -> str:
        return f"models:/{self.model_name}/{version}"

    def download(self, version: str | int, dst: Path) -> Path:
        """A registered version's model folder (MLmodel, model.skops, ...), downloaded into `dst`."""
        uri = self.client.get_model_version_download_uri(self.model_name, str(version))
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst), tracking_uri=self.tracking_uri))

    def load(self, version: str | int):
        """The scikit-learn pipeline of a registered version, checked and loaded as the server loads it.

        Through the model contract (`artifact`), not mlflow.sklearn.load_model:
        this code's allow-list rather than the one stored with the model, the
        version's recorded sha256, and models stored under older type names.
        Raises RefusedModel when a check fails.
        """
        expected = self.client.get_model_version(self.model_name, str(version)).tags.get(TAG_MODEL_SHA256)
        with tempfile.TemporaryDirectory(prefix="spam-model-") as folder:
            data = read_artifact(self.download(version, Path(folder)), expected)
        return load_skops(data)

    def load_verified(
        self, version: ModelVersion | str | int, probes: Sequence[tuple[str, str]] = DEFAULT_PROBES
    ) -> VerifiedModel:
        """A registered version through the model contract's gate (`verify.load_verified`), as the server loads it.

        Download, the recorded sha256, the code's allow-list, the probe
        messages, the operating point's tags and the choice of scorer. Raises RefusedModel saying why not,
        a failed download included. The server runs this for every version it
        may serve, `champion_decision` on the challenger before promoting it.
        """
        with tempfile.TemporaryDirectory(prefix="spam-model-") as folder:
            return self.download_verified(version, Path(folder), probes)[1]

    def download_verified(
        self, version: ModelVersion | str | int, dst: Path, probes: Sequence[tuple[str, str]] = DEFAULT_PROBES
    ) -> tuple[Path, VerifiedModel]:
        """`load_verified`, keeping the downloaded model folder in `dst`: its path and the verified model.

        For a server whose scoring worker processes load the same verified
        files (`serving.heavy_pool`) rather than download them again.
        """
        if not isinstance(version, ModelVersion):
            version = self.client.get_model_version(self.model_name, str(version))
        Tiers.from_tags(version.tags)  # a garbled operating point would mislabel every message: refused here too
        try:
            local = self.download(version.version, dst)
        except Exception as error:  # noqa: BLE001 - unreachable store, missing files: refuse, saying so
            raise RefusedModel(f"could not download version {version.version} of {self.model_name}: {error!r}") from error
        return local, load_verified(local, version.tags.get(TAG_MODEL_SHA256), probes)

    def last_good_candidates(self, excluding: str | None, limit: int) -> list[ModelVersion]:
        """Versions that may serve instead when `excluding` (the alias's version) cannot, best first; at most `limit`.

        `previous-champion` first, then every other version that was champion
        once (it carries a promotion reason), newest first. Never a version an
        operator rolled back, nor one never promoted: a challenger that lost
        its decision is no last good model.
        """
        if limit <= 0:
            return []
        previous = self.version_for(PREVIOUS_CHAMPION_ALIAS)
        promoted = [
            v
            for v in self.client.search_model_versions(f"name='{self.model_name}'", order_by=["version_number DESC"])
            if v.tags.get(TAG_PROMOTION_REASON) is not None
        ]
        candidates, seen = [], {str(excluding)}
        for version in ([previous] if previous is not None else []) + promoted:
            if str(version.version) in seen or version.tags.get(TAG_ROLLED_BACK) == "true":
                continue
            seen.add(str(version.version))
            candidates.append(version)
        return candidates[:limit]

    def card(self, version: ModelVersion) -> ModelCard:
        run = self.client.get_run(version.run_id)
        return ModelCard(
            name=self.model_name,
            version=str(version.version),
            run_id=version.run_id,
            dagster_run_id=version.tags.get(TAG_DAGSTER_RUN, run.data.tags.get(TAG_DAGSTER_RUN, "")),
            corpus_data_version=version.tags.get(TAG_CORPUS_VERSION, ""),
            candidate=version.tags.get(TAG_CANDIDATE, ""),
            metrics={k: float(v) for k, v in run.data.metrics.items() if k.startswith("holdout_")},
            source=version.source,
            tiers=Tiers.from_tags(version.tags),  # RefusedModel for a garbled operating point
        )

    def set_challenger(self, version: str | int) -> None:
        self.client.set_registered_model_alias(self.model_name, CHALLENGER_ALIAS, str(version))

    def promote(self, version: str | int, reason: str) -> str | None:
        """Move `champion` to `version`; the old champion keeps `previous-champion`.

        Returns the previous champion's version (None for the first promotion).
        """
        previous = self.champion()
        if previous is not None and str(previous.version) == str(version):
            return str(previous.version)
        if previous is not None:
            self.client.set_registered_model_alias(self.model_name, PREVIOUS_CHAMPION_ALIAS, previous.version)
            self.client.set_model_version_tag(self.model_name, previous.version, TAG_RETIRED_BY, str(version))
        self.client.set_registered_model_alias(self.model_name, CHAMPION_ALIAS, str(version))
        self.client.set_model_version_tag(self.model_name, str(version), TAG_PROMOTION_REASON, reason[:5000])
        self._clear_rolled_back(version)
        return str(previous.version) if previous is not None else None

    def rollback(self) -> str:
        """Make `previous-champion` the champion again; returns the version now serving."""
        previous = self.version_for(PREVIOUS_CHAMPION_ALIAS)
        if previous is None:
            raise LookupError(f"{self.model_name} has no {PREVIOUS_CHAMPION_ALIAS} to roll back to")
        current = self.champion()
        self.client.set_registered_model_alias(self.model_name, CHAMPION_ALIAS, previous.version)
        self._clear_rolled_back(previous.version)  # rolling back a rollback: that version is trusted again
        if current is not None:
            self.client.set_registered_model_alias(self.model_name, PREVIOUS_CHAMPION_ALIAS, current.version)
            self.client.set_model_version_tag(self.model_name, current.version, TAG_ROLLED_BACK, "true")
        return str(previous.version)

    def _clear_rolled_back(self, version: str | int) -> None:
        """A version made champion again is no longer one an operator rolled back."""
        tags = self.client.get_model_version(self.model_name, str(version)).tags
        if TAG_ROLLED_BACK in tags:
            self.client.delete_model_version_tag(self.model_name, str(version), TAG_ROLLED_BACK)
