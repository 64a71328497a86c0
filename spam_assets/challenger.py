"""Log a trained challenger to MLflow and register it.

Called inside an active MLflow run (the dagster-mlflow resource starts one
per Dagster run, tagged with the Dagster run id). The model is registered
only once its files are stored and hashed: a write that fails (a full disk)
registers nothing, and the half-written model is marked FAILED in MLflow
with its files deleted, so neither a version nor stray bytes are left.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path

import mlflow
import mlflow.sklearn
import pandas as pd
from mlflow.entities import LoggedModelStatus
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import infer_signature
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from spam_assets import faults
from spam_assets.model.operating_point import OperatingPoint
from spam_assets.model.pipelines import SKOPS_TRUSTED_TYPES
from spam_assets.model.registry import Registry
from spam_assets.model.tags import TAG_CANDIDATE, TAG_CORPUS_VERSION, TAG_DAGSTER_RUN, TAG_MODEL_SHA256
from spam_assets.modeling import METRIC_NAMES, TrainingResult
from spam_assets.source_metrics import SourceMetrics
from spam_assets.source_metrics import to_markdown as source_markdown

log = logging.getLogger(__name__)


def pip_requirements() -> list[str]:
    """Stated, not inferred: inference imports the model in a subprocess (~5 s per log)."""
    return [f"{dist}=={version(dist)}" for dist in ("scikit-learn", "skops", "pandas", "spam-platform")]


SKOPS_FILE = "model.skops"  # where mlflow.sklearn stores a skops-serialised model

INPUT_EXAMPLE = ["WINNER!! Claim your £1000 prize now, call 09061701461", "Are we still on for lunch tomorrow?"]


def log_challenger(
    result: TrainingResult,
    registry: Registry,
    *,
    corpus_version: str,
    dagster_run_id: str,
    params: dict,
    n_train: int,
    n_holdout: int,
    operating_point: OperatingPoint | None = None,
    source_metrics: list[SourceMetrics] | None = None,
) -> ModelVersion:
    """`operating_point`, when given, is logged as metrics and stored as the version's tags (serving labels by it).

    `source_metrics`, the holdout per source, as metrics `source.<name>.spam_f1` (with `_low` /
    `_high` for the 95% interval) and the table holdout_by_source.md.
    """
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_challenger needs an active MLflow run")
    mlflow.set_tags(
        {
            TAG_DAGSTER_RUN: dagster_run_id,
            TAG_CORPUS_VERSION: corpus_version,
            TAG_CANDIDATE: result.name,
            "mlflow.runName": f"challenger-{dagster_run_id[:8]}",
        }
    )
    mlflow.log_params({**params, "candidate": result.name, "n_train": n_train, "n_holdout": n_holdout})
    for name, (mean, std) in result.cv_scores.items():
        mlflow.log_metric(f"cv_spam_f1_{name}", mean)
        mlflow.log_metric(f"cv_spam_f1_std_{name}", std)
    mlflow.log_metrics({f"holdout_{k}": result.holdout_metrics[k] for k in METRIC_NAMES})
    # The unprefixed names are the headline metrics shown in run lists.
    mlflow.log_metrics({k: result.holdout_metrics[k] for k in METRIC_NAMES})
    if operating_point is not None:
        mlflow.log_metrics(operating_point.metrics())
        mlflow.log_dict(asdict(operating_point), "operating_point.json")
    if source_metrics:
        for metrics in source_metrics:
            mlflow.log_metrics(metrics.metrics())
        mlflow.log_text(source_markdown(source_metrics), "holdout_by_source.md")
    mlflow.log_table(result.holdout_confusion.reset_index(names="actual"), "holdout_confusion_matrix.json")
    mlflow.log_text(result.holdout_confusion.to_csv(), "holdout_confusion_matrix.csv")

    example = pd.DataFrame({"text": INPUT_EXAMPLE})
    signature = infer_signature(example, result.model.predict(example))
    before = _logged_models(run.info.run_id)
    try:
        info = mlflow.sklearn.log_model(
            result.model,
            name="model",
            signature=signature,
            input_example=example,
            pyfunc_predict_fn="predict",
            serialization_format="skops",
            pip_requirements=pip_requirements(),
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
        )
        artifacts = mlflow.get_logged_model(info.model_id).artifact_location
        faults.model_written(_local_file(f"{artifacts}/{SKOPS_FILE}"))  # test-only: a full disk, when armed
        sha256 = _stored_model_sha256(artifacts)
    except OSError:
        for model_id in _logged_models(run.info.run_id) - before:
            _discard_partial_model(model_id)
        raise
    registered = mlflow.register_model(info.model_uri, registry.model_name)
    version = registry.client.get_model_version(registry.model_name, str(registered.version))
    for key, value in {
        TAG_DAGSTER_RUN: dagster_run_id,
        TAG_CORPUS_VERSION: corpus_version,
        TAG_CANDIDATE: result.name,
        TAG_MODEL_SHA256: sha256,
        **(operating_point.to_tags() if operating_point is not None else {}),
    }.items():
        registry.client.set_model_version_tag(registry.model_name, version.version, key, value)
    registry.set_challenger(version.version)
    return registry.client.get_model_version(registry.model_name, version.version)


def _stored_model_sha256(artifact_location: str) -> str:
    """sha256 of the model file as stored, so a server can tell it was not altered since."""
    with tempfile.TemporaryDirectory() as folder:
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"{artifact_location}/{SKOPS_FILE}", dst_path=folder)
        return hashlib.sha256(Path(local).read_bytes()).hexdigest()


def _local_file(uri: str) -> Path | None:
    """The path of a file:// artifact URI (the embedded store); None for a tracking server's."""
    return Path(uri.removeprefix("file://")) if uri.startswith("file://") else None


def _logged_models(run_id: str) -> set[str]:
    """Ids of the models logged in an MLflow run (MLflow records each as an output of the run as it creates it)."""
    outputs = mlflow.MlflowClient().get_run(run_id).outputs
    return {output.model_id for output in (outputs.model_outputs if outputs else [])}


def _discard_partial_model(model_id: str) -> None:
    """A model a failed write left half-stored: its files deleted, its MLflow entry marked FAILED.

    Best effort: the write's own error is what the run reports, whatever happens here.
    """
    client = mlflow.MlflowClient()
    try:
        get_artifact_repository(client.get_logged_model(model_id).artifact_location).delete_artifacts()
        client.finalize_logged_model(model_id, LoggedModelStatus.FAILED)
        log.warning(f"model {model_id}: the write failed; its partial files were deleted and it is marked FAILED")
    except Exception as error:  # noqa: BLE001 - e.g. no room even to update the store
        log.warning(f"model {model_id}: the write failed and its partial files could not be removed: {error}")
