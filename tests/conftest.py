"""Shared fixtures: a throwaway platform home with a real Dagster instance and MLflow store."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest


@pytest.fixture
def home(tmp_path: Path, monkeypatch) -> Path:
    """A fresh platform home; SPAM_HOME points at it and no tracking server is configured."""
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("SPAM_HOME", str(folder))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return folder


@pytest.fixture
def instance(home: Path):
    (home / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(home / "dagster")) as instance:
        yield instance


@pytest.fixture
def resources(home: Path) -> dict:
    from spam_assets.defs.resources import build_resources

    return build_resources(str(home))
