"""Resources: where the platform's files live, and MLflow.

Paths resolve when a run starts (not at import), so one code location
serves whichever home folder its process was started with.
"""

from __future__ import annotations

import dagster as dg
from dagster_mlflow.resources import CONFIG_SCHEMA as MLFLOW_CONFIG_SCHEMA
from dagster_mlflow.resources import MlFlow

from spam_assets.batches import BatchStore
from spam_assets.corpus import CorpusStore
from spam_assets.model.registry import Registry, ensure_experiment
from spam_assets.settings import EXPERIMENT_NAME, Paths, paths, tracking_uri


class PlatformStore(dg.ConfigurableResource):
    """The platform's home folder: batches, corpus snapshots, drift reports."""

    home: str | None = None  # None: $SPAM_HOME, else ~/.spam-platform

    @property
    def paths(self) -> Paths:
        return paths(self.home)

    def batches(self) -> BatchStore:
        return BatchStore(self.paths.batches)

    def corpus(self) -> CorpusStore:
        return CorpusStore(self.paths.corpus)


class ModelRegistry(dg.ConfigurableResource):
    """The MLflow model registry (aliases champion / challenger / previous-champion)."""

    home: str | None = None
    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else the embedded store under home

    def uri(self) -> str:
        return self.tracking_uri or tracking_uri(self.home)

    def registry(self) -> Registry:
        return Registry(self.uri())


def artifact_root_for(uri: str, home: str | None):
    """Local stores keep artifacts under home; a tracking server manages its own."""
    return paths(home).mlflow_artifacts if uri.startswith(("sqlite:", "file:")) or "://" not in uri else None


class LazyMlflowRun:
    """dagster-mlflow's MLflow run for this Dagster run, started on first `start()`, not with the Dagster run.

    trained_model rides along in every refresh run and trains only when the
    drift verdict asks (retrain_policy.py); a run started with the resource
    would leave an empty MLflow run behind each refresh.
    """

    def __init__(self, start):
        self._start, self.mlflow = start, None

    def start(self):
        """The MlFlow object (mlflow's module and client API), its run active, tagged with the Dagster run id."""
        if self.mlflow is None:
            self.mlflow = self._start()
        return self.mlflow


def platform_mlflow(uri: str, home: str | None = None) -> dg.ResourceDefinition:
    """dagster-mlflow's `mlflow_tracking`, started lazily, after creating the experiment with its artifacts under home.

    Without the experiment created here, mlflow.set_experiment would create it
    with artifacts in ./mlruns of whatever directory the run process happened
    to start in.
    """

    @dg.resource(config_schema=MLFLOW_CONFIG_SCHEMA)
    def mlflow_with_experiment(context):
        def start():
            ensure_experiment(uri, artifact_root_for(uri, home), context.resource_config["experiment_name"])
            return MlFlow(context)

        lazy = LazyMlflowRun(start)
        yield lazy
        if lazy.mlflow is not None:  # as mlflow_tracking does: a run left active by an error ends FAILED
            lazy.mlflow.cleanup_on_error()

    return mlflow_with_experiment.configured({"experiment_name": EXPERIMENT_NAME, "mlflow_tracking_uri": uri})


def build_resources(home: str | None = None, mlflow_uri: str | None = None) -> dict:
    uri = mlflow_uri or tracking_uri(home)
    return {
        "store": PlatformStore(home=home),
        "registry": ModelRegistry(home=home, tracking_uri=uri),
        "mlflow_run": platform_mlflow(uri, home),
    }
