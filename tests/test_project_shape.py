"""The code location as a Dagster 1.13 project: `dg check defs` passes, and its shape is the committed one.

The snapshot (tests/snapshots/graph_shape.json) lists every asset spec
(group, kinds, deps, checks and whether they block, automation condition,
pool, partitions), job, sensor, schedule and resource. A change to any of
them fails here until the snapshot is updated, so it shows as a diff in
review. To accept a change on purpose:

    SPAM_UPDATE_SNAPSHOT=1 pytest tests/test_project_shape.py

Both run in a subprocess with the platform's environment knobs removed, so
the shape compared is the default one, whatever this shell has set.
"""

import difflib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT / "tests" / "snapshots" / "graph_shape.json"
UPDATE_ENV = "SPAM_UPDATE_SNAPSHOT"


def _clean_env(tmp_path: Path) -> dict:
    """No SPAM_* knob and no tracking server from the calling shell; a throwaway home and instance."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPAM_", "DAGSTER_", "MLFLOW_"))}
    (tmp_path / "dagster").mkdir(exist_ok=True)
    env.update(SPAM_HOME=str(tmp_path / "home"), DAGSTER_HOME=str(tmp_path / "dagster"), VIRTUAL_ENV=sys.prefix)
    return env


def test_dg_check_defs_passes(tmp_path):
    dg_cli = Path(sys.executable).with_name("dg")
    if not dg_cli.exists():
        pytest.fail(f"dg not found next to {sys.executable}: install the dev extras (pip install -e '.[dev]')")
    result = subprocess.run(
        [str(dg_cli), "check", "defs", "--use-active-venv"],
        cwd=ROOT,
        env=_clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"dg check defs failed (exit {result.returncode}):\n{output}"
    assert "All definitions loaded successfully" in output, output


def test_graph_shape_matches_the_committed_snapshot(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tests.graph_shape"],
        cwd=ROOT,
        env=_clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    current = result.stdout
    if os.environ.get(UPDATE_ENV) == "1":
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(current)
    expected = SNAPSHOT.read_text() if SNAPSHOT.exists() else ""
    diff = "".join(
        difflib.unified_diff(expected.splitlines(True), current.splitlines(True), str(SNAPSHOT.name), "definitions now")
    )
    assert not diff, f"the graph's shape changed; if on purpose, rerun with {UPDATE_ENV}=1 and commit the snapshot:\n{diff}"


def test_the_code_location_loads_from_an_installed_copy_without_pyproject(tmp_path):
    """As in the container image: the package installed from a wheel, no pyproject.toml above it."""
    site = tmp_path / "site"
    for package in ("spam_assets", "serving"):
        shutil.copytree(ROOT / package, site / package, ignore=shutil.ignore_patterns("__pycache__"))
    probe = (
        "import dagster as dg, spam_assets\n"
        "from spam_assets.definitions import defs\n"
        "loaded = defs()\n"
        "dg.Definitions.validate_loadable(loaded)\n"
        "print(spam_assets.__file__, len(list(loaded.resolve_all_asset_keys())))\n"
    )
    env = {**_clean_env(tmp_path), "PYTHONPATH": str(site)}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    location, assets = result.stdout.split()
    assert Path(location).is_relative_to(site)
    assert int(assets) == len(json.loads(SNAPSHOT.read_text())["assets"])  # every asset of the graph, none lost
