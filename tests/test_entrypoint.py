"""deploy/entrypoint.py: how a container's command hears the stop signal.

`dagster code-server start` shuts down on SIGTERM only once the runs it
launched have finished, and its run workers (its children) never see the
signal. The command here does the same with small real processes: a parent
that, on SIGTERM, waits for its worker, and a worker that stops when told.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ENTRYPOINT = Path(__file__).resolve().parents[1] / "deploy" / "entrypoint.py"

WORKER = """
import pathlib, signal, sys, time
folder = pathlib.Path(sys.argv[1])
def stop(signum, _frame):
    (folder / "worker-stopped").write_text(signal.Signals(signum).name)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
(folder / "worker-ready").write_text("")
while True:
    time.sleep(0.05)
"""

# Like the code server: SIGTERM means "stop once the work I started is done".
PARENT = """
import signal, subprocess, sys
signal.signal(signal.SIGTERM, lambda *_: None)
worker = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]])
sys.exit(worker.wait())
"""

IGNORES_SIGTERM = """
import os, pathlib, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pathlib.Path(sys.argv[1], "worker-ready").write_text(str(os.getpid()))
while True:
    time.sleep(0.05)
"""


def start(tmp_path: Path, command: list[str], stop_timeout: str | None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("SPAM_WAIT_FOR", "SPAM_STOP_TIMEOUT")}
    if stop_timeout is not None:
        env["SPAM_STOP_TIMEOUT"] = stop_timeout
    process = subprocess.Popen(
        [sys.executable, str(ENTRYPOINT), *command],
        env=env, stderr=subprocess.PIPE, text=True, start_new_session=True,  # a group of its own: cleanup below
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not (tmp_path / "worker-ready").exists():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "the worker never started"
        time.sleep(0.05)
    return process


def finish(process: subprocess.Popen) -> None:
    """Whatever the test left running (it started all of it, in one session of its own)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


def code_server_like(tmp_path: Path) -> list[str]:
    return [sys.executable, "-c", PARENT, WORKER, str(tmp_path)]


def test_with_a_stop_timeout_the_whole_group_hears_sigterm_and_the_command_exits_cleanly(tmp_path):
    process = start(tmp_path, code_server_like(tmp_path), stop_timeout="20")
    try:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0  # the parent's own status: its worker finished
        assert (tmp_path / "worker-stopped").read_text() == "SIGTERM"
        assert "SIGTERM: stopping" in process.stderr.read()
    finally:
        finish(process)


def test_exec_alone_leaves_the_worker_running_and_the_command_waiting(tmp_path):
    """Why SPAM_STOP_TIMEOUT exists: exec'd, only the command gets SIGTERM, and it waits for its worker."""
    process = start(tmp_path, code_server_like(tmp_path), stop_timeout=None)
    try:
        process.send_signal(signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=3)
        assert not (tmp_path / "worker-stopped").exists()
    finally:
        finish(process)


def test_what_ignores_sigterm_is_killed_after_the_stop_timeout_and_the_status_says_so(tmp_path):
    process = start(tmp_path, [sys.executable, "-c", IGNORES_SIGTERM, str(tmp_path)], stop_timeout="1")
    try:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 128 + signal.SIGKILL
        stderr = process.stderr.read()
        pid = (tmp_path / "worker-ready").read_text()
        # Names the process by pid (its command line is cut to a length, whatever the venv's path).
        assert f"still running 1 s after SIGTERM, killed: {pid} " in stderr, stderr
    finally:
        finish(process)


def test_a_command_that_exits_on_its_own_passes_its_status_on(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ENTRYPOINT), sys.executable, "-c", "import sys; sys.exit(3)"],
        env={**os.environ, "SPAM_STOP_TIMEOUT": "5"}, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 3
    assert "exited with status 3" in result.stderr


def test_a_bad_stop_timeout_is_refused_naming_the_variable():
    result = subprocess.run(
        [sys.executable, str(ENTRYPOINT), "true"],
        env={**os.environ, "SPAM_STOP_TIMEOUT": "soon"}, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2 and "SPAM_STOP_TIMEOUT must be a number of seconds, not 'soon'" in result.stderr


def test_a_missing_command_is_named(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ENTRYPOINT), str(tmp_path / "no-such-command")],
        env={**os.environ, "SPAM_STOP_TIMEOUT": "5"}, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 127 and "no-such-command" in result.stderr
