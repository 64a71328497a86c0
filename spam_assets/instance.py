"""The Dagster instance under the platform home: SQLite storage, run queue, pools."""

from __future__ import annotations

import os
from pathlib import Path

from spam_assets.settings import HOME_ENV, TRACKING_URI_ENV, paths

DAGSTER_YAML = """\
# Written once by spam-platform; edit freely, it is not overwritten.
# Storage defaults to SQLite under this folder (DAGSTER_HOME).
concurrency:
  runs:
    max_concurrent_runs: 4  # 2 cores: more queue than run
  pools:
    # One slot per pool: trained_model (never two trainings at once) and
    # champion_decision (never two decisions at once).
    default_limit: 1
run_queue:
  # Look for queued runs every second, not every 5 s: each hop of the
  # inbox -> corpus -> retrain loop is a queued run.
  dequeue_interval_seconds: 1
telemetry:
  enabled: false
"""


def prepare_home(home: str | Path | None = None) -> Path:
    """Create the home folder and a Dagster instance config; export SPAM_HOME and DAGSTER_HOME.

    A DAGSTER_HOME already set (a deployment's Postgres instance, a test's
    temp folder) wins; the config above is written only where none exists,
    so a deployment's own dagster.yaml is never replaced.
    """
    p = paths(home)
    p.inbox.mkdir(parents=True, exist_ok=True)
    if not os.environ.get(TRACKING_URI_ENV):  # the embedded MLflow store keeps its artifacts here
        p.mlflow_artifacts.mkdir(parents=True, exist_ok=True)
    dagster_home = Path(os.environ.get("DAGSTER_HOME") or p.dagster_home)
    dagster_home.mkdir(parents=True, exist_ok=True)
    config = dagster_home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    os.environ[HOME_ENV] = str(p.home)
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    return dagster_home
