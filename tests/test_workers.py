"""Training's worker processes end with their run: after it returns, and when it is killed.

Only the test's own children are inspected (psutil, from the pid the test
started), recorded before the kill; nothing scans the machine's processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import psutil
import pytest

from spam_assets.instance import first_use_lock
from spam_assets.workers import process_pool
from tests.synthetic import sms_messages, write_sms_file

GONE_WITHIN = 10.0  # seconds from the kill until no descendant runs (measured: under 1 s)
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent / "spam-platform"


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running; a zombie has ended (only its exit status waits for a reaper)."""
    alive = []
    for p in processes:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return alive


def _wait_gone(processes: list[psutil.Process], within: float) -> list[psutil.Process]:
    deadline = time.monotonic() + within
    while (alive := _alive(processes)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


def _kill_and_check(parent: subprocess.Popen, descendants: list[psutil.Process]) -> None:
    try:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        left = _wait_gone(descendants, GONE_WITHIN)
        assert not left, [(p.pid, p.cmdline()) for p in left]
    finally:
        for p in _alive(descendants):  # a failed test leaves nothing running either
            p.kill()


def _workers(parent: psutil.Process, count: int, timeout: float) -> list[psutil.Process]:
    """The parent's descendants once there are at least `count` (whatever pool made them)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(found := parent.children(recursive=True)) >= count:
            return found
        time.sleep(0.2)
    pytest.fail(f"no {count} worker processes under pid {parent.pid} within {timeout:.0f} s")


def test_a_finished_pool_leaves_no_worker():
    with process_pool(2) as pool:
        pids = set(pool.map(_pid, range(8)))
    assert pids and os.getpid() not in pids  # the work ran in other processes
    assert not [pid for pid in pids if psutil.pid_exists(pid) and _alive([psutil.Process(pid)])]


def _pid(_: int) -> int:
    time.sleep(0.05)  # long enough that both workers take tasks
    return os.getpid()


def test_workers_die_with_a_parent_killed_mid_task():
    script = "from spam_assets.workers import process_pool\nimport time\nwith process_pool(2) as pool: list(pool.map(time.sleep, [300, 300]))\n"
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        _workers(psutil.Process(parent.pid), 2, timeout=120)
        time.sleep(2)  # every worker started
        descendants = psutil.Process(parent.pid).children(recursive=True)
    except BaseException:
        parent.kill()
        raise
    _kill_and_check(parent, descendants)


def _training_started(instance: dg.DagsterInstance) -> bool:
    """trained_model has logged that it trains (cross-validation starts right after)."""
    return any(
        "retraining:" in (entry.user_message or "")
        for run in instance.get_runs(limit=5)
        for entry in instance.all_logs(run.run_id)
    )


@pytest.mark.slow
def test_training_workers_die_with_a_run_worker_killed_mid_training(tmp_path, monkeypatch):
    """kill -9 of the process executing a training run (`ingest` runs the graph in-process, as a
    run worker does under the daemon) while its cross-validation workers are busy."""
    write_sms_file(sms_messages(6000, seed=1, spam_share=0.3), tmp_path / "big.txt")  # seconds of CV per fold
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPAM_", "MLFLOW_", "DAGSTER_"))}
    env["SPAM_HOME"] = str(tmp_path / "home")
    parent = subprocess.Popen([str(BIN), "ingest", "big.txt"], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL)
    try:
        config = tmp_path / "home" / "dagster" / "dagster.yaml"
        _wait(lambda: config.exists(), "the home's instance config", 300)
        monkeypatch.setenv("DAGSTER_HOME", str(config.parent))
        # `ingest` may be creating the home's SQLite stores right now: opening them at the same time raced
        # two alembic stamps ("table alembic_version already exists", seen in CI). The CLI's own lock
        # makes the test wait until they exist.
        with first_use_lock(tmp_path / "home"):
            instance = dg.DagsterInstance.get()
        with instance:
            _wait(lambda: _training_started(instance), "trained_model to start training", 600)
        _workers(psutil.Process(parent.pid), 2, timeout=120)
        time.sleep(2)  # every worker started and fitting a fold
        descendants = psutil.Process(parent.pid).children(recursive=True)
        assert parent.poll() is None, "the run ended before the kill: make the batch bigger"
    except BaseException:
        parent.kill()
        raise
    _kill_and_check(parent, descendants)


def _wait(condition, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.5)
