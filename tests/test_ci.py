""".ci/run: every stage runs whatever came before, one summary line each, and the right exit status.

The script runs for real (bash) in a copy of the repository's layout, with
stand-ins for what it drives, put first on PATH: `python3.11` makes a
`.venv` whose `pip` and `pytest` exit as each test says and log their
arguments; `docker` does not answer, so the container stage skips.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FAKE_PYTHON = """#!/bin/sh
# python3.11 -m venv .venv: a venv whose pip and pytest exit with $FAKE_PIP / $FAKE_PYTEST[_SLOW]
[ "$1 $2 $3" = "-m venv .venv" ] || { echo "unexpected: python3.11 $*" >&2; exit 2; }
mkdir -p .venv/bin
cat > .venv/bin/pip <<'PIP'
#!/bin/sh
echo "pip $*" >> "$FAKE_LOG"; exit "${FAKE_PIP:-0}"
PIP
cat > .venv/bin/pytest <<'PYTEST'
#!/bin/sh
echo "pytest $*" >> "$FAKE_LOG"
case "$*" in *"-m slow"*) exit "${FAKE_PYTEST_SLOW:-0}" ;; *) exit "${FAKE_PYTEST:-0}" ;; esac
PYTEST
chmod +x .venv/bin/pip .venv/bin/pytest
"""

SUMMARY_LINE = re.compile(r"^(\w+)\s+(PASSED|FAILED|SKIPPED)\s+(\d+) s$")


def run_ci(
    tmp_path: Path, extra_stage: str = "", **fakes: str
) -> tuple[subprocess.CompletedProcess, dict[str, str], list[str]]:
    """Run a copy of .ci/run (plus `extra_stage`, a `stage ...` line, after the others); return the
    process, {stage: status} from its summary, and the logged calls."""
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    script = (ROOT / ".ci" / "run").read_text()
    assert script.count("\nprintf '\\n=== summary") == 1
    script = script.replace("\nprintf '\\n=== summary", f"\n{extra_stage}\nprintf '\\n=== summary")
    (repo / ".ci" / "run").write_text(script)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3.11").write_text(FAKE_PYTHON)
    (bin_dir / "docker").write_text("#!/bin/sh\nexit 1\n")  # an engine that does not answer
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    log = tmp_path / "calls.log"
    log.touch()
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_LOG": str(log), **fakes}
    done = subprocess.run(["bash", ".ci/run"], cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    tail = done.stdout.split("=== summary\n")[-1].splitlines()
    stages = {}
    for line in tail:
        match = SUMMARY_LINE.match(line)
        assert match, f"not a summary line: {line!r}\n{done.stdout}"
        stages[match[1]] = match[2]
    return done, stages, log.read_text().splitlines()


def test_all_stages_pass_and_the_readme_commands_run(tmp_path):
    done, stages, calls = run_ci(tmp_path)
    assert stages == {"install": "PASSED", "tests": "PASSED", "slow": "PASSED", "container": "SKIPPED"}
    assert done.returncode == 0, done.stdout + done.stderr
    # the README's command: pip install -q -e '.[dev]', then pytest with no arguments; then pytest -m slow
    assert calls == ["pip install -q -e .[dev]", "pytest ", "pytest -m slow"]
    assert "SKIPPED: docker does not answer" in done.stdout


def test_a_failed_install_fails_the_test_stages_and_the_rest_still_runs(tmp_path):
    done, stages, calls = run_ci(tmp_path, FAKE_PIP="1")
    assert stages == {"install": "FAILED", "tests": "FAILED", "slow": "FAILED", "container": "SKIPPED"}
    assert done.returncode == 1
    assert calls == ["pip install -q -e .[dev]"]  # no pytest run against a half-made venv
    assert done.stdout.count("not run: stage 'install' FAILED") == 2


def test_a_failed_suite_does_not_stop_the_next(tmp_path):
    done, stages, calls = run_ci(tmp_path, FAKE_PYTEST="1")
    assert stages == {"install": "PASSED", "tests": "FAILED", "slow": "PASSED", "container": "SKIPPED"}
    assert done.returncode == 1
    assert calls[-1] == "pytest -m slow"


@pytest.mark.parametrize("which", ["FAKE_PYTEST", "FAKE_PYTEST_SLOW"])
def test_no_tests_collected_is_a_failure(tmp_path, which):
    done, stages, _ = run_ci(tmp_path, **{which: "5"})
    failed = "tests" if which == "FAKE_PYTEST" else "slow"
    assert stages[failed] == "FAILED"
    assert [s for s, status in stages.items() if status == "FAILED"] == [failed]
    assert "no tests collected (exit status 5)" in done.stdout
    assert done.returncode == 1


def test_a_stage_is_one_line_and_an_empty_selection_can_be_deliberate(tmp_path):
    done, stages, calls = run_ci(tmp_path, "stage lint needs install suite --may-be-empty -m lint", FAKE_PYTEST="5")
    assert list(stages) == ["install", "tests", "slow", "container", "lint"]
    assert stages["lint"] == "SKIPPED" and stages["tests"] == "FAILED"
    assert calls[-1] == "pytest -m lint"
    assert "SKIPPED: pytest -m lint: no tests selected" in done.stdout
