"""Where the platform keeps its state, and the environment variables that move it.

Everything a restart must not lose (Dagster instance, MLflow store, batches,
corpus snapshots) lives under one home folder, so backing up or wiping the
platform is one directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "SPAM_HOME"
SMS_PATH_ENV = "SPAM_SMS_PATH"
SPAMASSASSIN_PATH_ENV = "SPAM_SPAMASSASSIN_PATH"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"

MODEL_NAME = "spam-classifier"
EXPERIMENT_NAME = "spam-classifier"
CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"
PREVIOUS_CHAMPION_ALIAS = "previous-champion"
# Earlier champions a server tries when it cannot load the champion's version
# at start-up (spam_assets.model.last_good); `spam-platform status` assumes the same.
MAX_FALLBACKS = 3
LABELS = ("ham", "spam")
POSITIVE_LABEL = "spam"


def platform_home() -> Path:
    """The home folder: $SPAM_HOME, else ~/.spam-platform."""
    raw = os.environ.get(HOME_ENV)
    home = Path(raw).expanduser() if raw else Path.home() / ".spam-platform"
    return home.resolve()


@dataclass(frozen=True)
class Paths:
    home: Path

    @property
    def batches(self) -> Path:
        return self.home / "batches"

    @property
    def corpus(self) -> Path:
        return self.home / "corpus"

    @property
    def drift(self) -> Path:
        return self.home / "drift"

    @property
    def downloads(self) -> Path:
        return self.home / "downloads"

    @property
    def feeds(self) -> Path:
        return self.home / "feeds"

    @property
    def inbox(self) -> Path:
        return self.home / "inbox"

    @property
    def predictions(self) -> Path:
        """The server's prediction log and feedback (serving/prediction_log.py)."""
        return self.home / "predictions"

    @property
    def traffic(self) -> Path:
        """The prediction log compacted, one Parquet table per hour (spam_assets/traffic_tables.py)."""
        return self.home / "traffic"

    @property
    def rollout(self) -> Path:
        """The staged rollout's reports: live comparisons and stage decisions (spam_assets/rollout.py)."""
        return self.home / "rollout"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def mlflow(self) -> Path:
        return self.home / "mlflow"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.mlflow / "artifacts"


def paths(home: Path | str | None = None) -> Paths:
    return Paths(Path(home).resolve() if home else platform_home())


def tracking_uri(home: Path | str | None = None) -> str:
    """$MLFLOW_TRACKING_URI (a tracking server), else the embedded SQLite store under home."""
    uri = os.environ.get(TRACKING_URI_ENV)
    if uri:
        return uri
    db = paths(home).mlflow / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


def quiet_telemetry() -> None:
    """MLflow telemetry off unless the user set it: it calls home at process exit
    (seconds of delay on a closed network). Dagster's is off in the instance config."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
