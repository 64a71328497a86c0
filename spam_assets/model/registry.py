"""MLflow conventions of the platform, in one place.

Registered model `spam-classifier`; aliases `challenger` (newest trained),
`champion` (serving) and `previous-champion` (one step of rollback). Stages
are deprecated in MLflow 3, so only aliases are used. Every version carries
tags that lead back to the Dagster run and the corpus it was trained on.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mlflow.artifacts
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from spam_assets.model.artifact import load_skops, read_artifact
from spam_assets.model.tags import TAG_CANDIDATE, TAG_CORPUS_VERSION, TAG_DAGSTER_RUN, TAG_MODEL_SHA256
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
            self.client.set_model_version_tag(self.model_name, previous.version, "retired_by", str(version))
        self.client.set_registered_model_alias(self.model_name, CHAMPION_ALIAS, str(version))
        self.client.set_model_version_tag(self.model_name, str(version), "promotion_reason", reason[:5000])
        return str(previous.version) if previous is not None else None

    def rollback(self) -> str:
        """Make `previous-champion` the champion again; returns the version now serving."""
        previous = self.version_for(PREVIOUS_CHAMPION_ALIAS)
        if previous is None:
            raise LookupError(f"{self.model_name} has no {PREVIOUS_CHAMPION_ALIAS} to roll back to")
        current = self.champion()
        self.client.set_registered_model_alias(self.model_name, CHAMPION_ALIAS, previous.version)
        if current is not None:
            self.client.set_registered_model_alias(self.model_name, PREVIOUS_CHAMPION_ALIAS, current.version)
            self.client.set_model_version_tag(self.model_name, current.version, "rolled_back", "true")
        return str(previous.version)

