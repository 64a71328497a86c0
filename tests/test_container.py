"""The container deployment end to end: scripts/compose_smoke.sh under pytest.

Builds the image, starts docker-compose.yml, materialises the graph, classifies
through the published gRPC port, checks the restart policy and the inbox loop,
then tears everything down. Slow (minutes) and needs a container engine, so it
runs only when selected: `pytest -m container`. It skips, saying why, when no
engine answers or the SMS corpus is not there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "compose_smoke.sh"


def _engine_problem() -> str | None:
    """Why the smoke test cannot run here, or None."""
    if shutil.which("docker") is None:
        return "no `docker` command (on this machine: run ../shared/container/setup.sh as root)"
    try:
        subprocess.run(["docker", "info"], check=True, capture_output=True, timeout=60)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        return f"the container engine does not answer `docker info`: {error}"
    try:
        subprocess.run(["docker", "compose", "version"], check=True, capture_output=True, timeout=60)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        return f"no `docker compose` (Compose v2 or the podman-compose shim): {error}"
    return None


def _datasets() -> Path:
    return Path(os.environ.get("SPAM_DATASETS", ROOT.parent / "shared" / "datasets")).resolve()


def test_compose_stack_smoke():
    problem = _engine_problem()
    if problem:
        pytest.skip(f"container smoke: {problem}")
    corpus = _datasets() / "SMSSpamCollection"
    if not corpus.is_file():
        pytest.skip(f"container smoke: no SMS corpus at {corpus} (set SPAM_DATASETS)")
    done = subprocess.run(
        ["bash", str(SCRIPT)],
        cwd=ROOT,
        env={**os.environ, "SPAM_DATASETS": str(_datasets())},
        capture_output=True,
        text=True,
        timeout=int(os.environ.get("SMOKE_PYTEST_TIMEOUT", "2400")),
    )
    print(done.stdout[-20000:])
    assert done.returncode == 0, f"compose_smoke.sh failed ({done.returncode}):\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
    assert "container smoke: PASSED" in done.stdout
