"""Shared fixtures: a throwaway platform home with a real Dagster instance and MLflow store."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest


@pytest.fixture(autouse=True, scope="session")
def _no_default_home(tmp_path_factory: pytest.TempPathFactory):
    """Nothing the suite starts writes to the user's platform home (SPAM_HOME or ~/.spam-platform).

    Servers and commands started as subprocesses inherit SPAM_HOME; a test that
    needs its own home sets it (the `home` fixture), and one that sets none
    gets this throwaway one instead of the user's.
    """
    import os

    previous = os.environ.get("SPAM_HOME")
    os.environ["SPAM_HOME"] = str(tmp_path_factory.mktemp("session-home"))
    yield
    if previous is None:
        os.environ.pop("SPAM_HOME", None)
    else:
        os.environ["SPAM_HOME"] = previous


@pytest.fixture
def home(tmp_path: Path, monkeypatch) -> Path:
    """A fresh platform home; SPAM_HOME points at it and no tracking server is configured."""
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("SPAM_HOME", str(folder))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # The staged rollout (on by default) holds a winning challenger in shadow until servers have compared it
    # on live traffic; tests of the holdout decision expect it promoted at once. Rollout tests turn it on.
    monkeypatch.setenv("SPAM_ROLLOUT", "off")
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


@pytest.fixture(autouse=True, scope="session")
def _parallel_workers_at_lowest_priority():
    """Under pytest-xdist, each test worker runs at nice 19, the shadow scoring worker's priority.

    Shadow workers run at nice 19 on purpose (on a saturated host they must not
    take a request thread's CPU). Parallel test workers saturate this machine,
    and at nice 0 they starved every shadow worker the serving tests wait for.
    """
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.nice(19 - os.nice(0))
    yield
