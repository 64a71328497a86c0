"""MLflow runs a dead training left behind: ended FAILED, with the reason, so none stays RUNNING.

A training whose process is killed (kill -9, out of memory) never reaches
dagster-mlflow's cleanup, which ends the run FAILED only on an exception;
and that cleanup (a full disk, any error) records no reason. Both get it here.
"""

from __future__ import annotations

from typing import Any

from mlflow import MlflowClient
from mlflow.entities import RunStatus

from spam_assets.model.tags import TAG_DAGSTER_RUN
from spam_assets.settings import EXPERIMENT_NAME

FAILURE_REASON_TAG = "spam/failure_reason"
MAX_REASON = 4000  # MLflow keeps tag values up to 8,000 characters


def fail_running_runs(tracking_uri: str, dagster_run_id: str, reason: str, experiment: str = EXPERIMENT_NAME) -> list[str]:
    """End FAILED, with the reason, every MLflow run of `experiment` tagged with `dagster_run_id` that is
    still RUNNING, and give the reason to those already ended FAILED without one; their ids."""
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:  # nothing was ever logged
        return []
    runs = client.search_runs([found.experiment_id], filter_string=f"tags.{TAG_DAGSTER_RUN} = '{dagster_run_id}'")
    runs = [
        run
        for run in runs
        if run.info.status == "RUNNING" or (run.info.status == "FAILED" and FAILURE_REASON_TAG not in run.data.tags)
    ]
    for run in runs:
        client.set_tag(run.info.run_id, FAILURE_REASON_TAG, reason[:MAX_REASON])
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, status=RunStatus.to_string(RunStatus.FAILED))
    return [run.info.run_id for run in runs]


def end_failed(mlflow: Any, error: BaseException) -> None:
    """End the active MLflow run (of `mlflow`, the module or dagster-mlflow's MlFlow) FAILED, or KILLED
    for an interrupt, with the error as the reason."""
    if mlflow.active_run() is None:
        return
    mlflow.set_tag(FAILURE_REASON_TAG, f"{type(error).__name__}: {error}"[:MAX_REASON])
    status = RunStatus.KILLED if isinstance(error, KeyboardInterrupt) else RunStatus.FAILED
    mlflow.end_run(status=RunStatus.to_string(status))
