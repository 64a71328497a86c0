"""The Dagster instance under the platform home: SQLite storage, run queue, pools."""

from __future__ import annotations

import os
from pathlib import Path

from spam_assets.settings import HOME_ENV, paths

DAGSTER_YAML = """\
# Written once by spam-platform; edit freely, it is not overwritten.
# Storage defaults to SQLite under this folder (DAGSTER_HOME).
concurrency:
  runs:
    max_concurrent_runs: 4  # 2 cores: more queue than run
  pools:
    # champion_decision is the only pooled asset: never two decisions at once.
    default_limit: 1
telemetry:
  enabled: false
"""


def prepare_home(home: str | Path | None = None) -> Path:
    """Create the home folder and its Dagster instance config; export SPAM_HOME and DAGSTER_HOME."""
    p = paths(home)
    for folder in (p.home, p.inbox):
        folder.mkdir(parents=True, exist_ok=True)
    os.environ[HOME_ENV] = str(p.home)
    if os.environ.get("DAGSTER_HOME"):  # a deployment's own instance (e.g. Postgres): leave it be
        return Path(os.environ["DAGSTER_HOME"])
    for folder in (p.dagster_home, p.mlflow_artifacts):
        folder.mkdir(parents=True, exist_ok=True)
    config = p.dagster_home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(p.dagster_home)
    return p.dagster_home
