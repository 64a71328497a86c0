"""The process supervisor behind `spam-platform up`, with small real child processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from spam_assets.supervisor import ChildExited, ChildSpec, NotReady, StopRequested, Supervisor, describe_status

PY = sys.executable
ROOT = Path(__file__).resolve().parents[1]


def script(body: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(body)]


def sleeper(ready_file: Path, *, ignore_term: bool = False, grandchild: str = "", new_session: bool = False) -> list[str]:
    """A child that (optionally) ignores SIGTERM, (optionally) starts a grandchild, writes pids, then sleeps."""
    return script(f"""
        import signal, subprocess, sys, time, pathlib
        if {ignore_term}:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        pids = [str(__import__("os").getpid())]
        if {grandchild!r}:
            g = subprocess.Popen([sys.executable, "-c", {grandchild!r}], start_new_session={new_session})
            pids.append(str(g.pid))
        time.sleep(0.3)  # the grandchild has set its own handlers by then
        pathlib.Path({str(ready_file)!r}).write_text(" ".join(pids))
        time.sleep(120)
    """)


GRANDCHILD = "import time; time.sleep(120)"
STUBBORN_GRANDCHILD = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"


def file_exists(path: Path):
    return path.exists


def pids_in(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()]


def gone(pid: int) -> bool:
    """No such process, or only a zombie waiting for its (new) parent to reap it."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_stop_ends_each_child_and_what_it_started(tmp_path):
    with Supervisor(stop_timeout=5) as sup:
        ready = [tmp_path / "a", tmp_path / "b"]
        sup.start(ChildSpec("a", sleeper(ready[0], grandchild=GRANDCHILD), ready=file_exists(ready[0])))
        sup.start(ChildSpec("b", sleeper(ready[1]), ready=file_exists(ready[1])))
        assert sup.wait_ready(timeout=30) is None
        pids = pids_in(ready[0]) + pids_in(ready[1])
        assert len(pids) == 3 and not any(gone(p) for p in pids)
    assert sup.killed == []  # SIGTERM to the groups was enough
    assert all(gone(p) for p in pids)
    assert [c.process.returncode for c in sup.children] == [-signal.SIGTERM, -signal.SIGTERM]


def test_child_ignoring_sigterm_is_killed_at_the_deadline(tmp_path):
    ready = tmp_path / "stubborn"
    with Supervisor(stop_timeout=1) as sup:
        sup.start(ChildSpec("stubborn", sleeper(ready, ignore_term=True), ready=file_exists(ready)))
        sup.start(ChildSpec("polite", script("import time; time.sleep(120)")))
        assert sup.wait_ready(timeout=30) is None
    assert sup.killed == ["stubborn"]
    stubborn, polite = sup.children
    assert stubborn.process.returncode == -signal.SIGKILL
    assert polite.process.returncode == -signal.SIGTERM
    assert gone(pids_in(ready)[0])


def test_a_grandchild_that_left_the_group_is_killed_too(tmp_path):
    """A descendant in a session of its own does not get the group's signals; stop() still ends it."""
    ready = tmp_path / "parent"
    with Supervisor(stop_timeout=1) as sup:
        sup.start(ChildSpec("parent", sleeper(ready, grandchild=STUBBORN_GRANDCHILD, new_session=True), ready=file_exists(ready)))
        assert sup.wait_ready(timeout=30) is None
        child, grandchild = pids_in(ready)
        assert os.getpgid(grandchild) != os.getpgid(child)
    assert gone(child) and gone(grandchild)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ("import sys, time; time.sleep(0.2); sys.exit(3)", 3, "exited with status 3"),
        ("import os, signal, time; time.sleep(0.2); os.kill(os.getpid(), signal.SIGKILL)", -signal.SIGKILL, "was killed by SIGKILL"),
    ],
)
def test_a_child_that_ends_on_its_own_is_reported_by_name(body, status, words):
    with Supervisor(stop_timeout=2) as sup:
        sup.start(ChildSpec("steady", script("import time; time.sleep(120)")))
        quitter = sup.start(ChildSpec("quitter", script(body)))
        outcome = sup.watch(timeout=30)
    assert outcome == ChildExited("quitter", quitter.pid, status)
    assert not outcome.ok
    assert outcome.message == f"quitter (pid {quitter.pid}) {words}"
    assert sup.children[0].process.returncode == -signal.SIGTERM  # the rest was stopped


def test_wait_ready_reports_a_child_that_exits_before_it_is_ready(tmp_path):
    with Supervisor(stop_timeout=2) as sup:
        sup.start(ChildSpec("never-ready", script("import sys; sys.exit(7)"), ready=file_exists(tmp_path / "never")))
        outcome = sup.wait_ready(timeout=30)
    assert isinstance(outcome, ChildExited) and outcome.name == "never-ready" and outcome.returncode == 7


def test_wait_ready_names_the_children_not_ready_in_time(tmp_path):
    ready = tmp_path / "fast"
    with Supervisor(stop_timeout=2) as sup:
        sup.start(ChildSpec("fast", sleeper(ready), ready=file_exists(ready)))
        sup.start(ChildSpec("slow", script("import time; time.sleep(120)"), ready=lambda: False))
        outcome = sup.wait_ready(timeout=3)
    assert outcome == NotReady(("slow",), 3)
    assert "not ready after 3 s: slow" in outcome.message


def test_watch_returns_nothing_while_all_is_well():
    with Supervisor(stop_timeout=2) as sup:
        sup.start(ChildSpec("steady", script("import time; time.sleep(120)")))
        assert sup.watch(timeout=0.5) is None
        assert sup.children[0].process.poll() is None


def test_children_get_sigterm_back_even_when_the_parent_ignores_sigint(tmp_path):
    """A background job of a script starts with SIGINT ignored; Dagster maps SIGTERM to SIGINT's handler.

    Without the supervisor's own handlers, the child would inherit the ignored
    SIGINT, ignore SIGTERM as well, and need SIGKILL.
    """
    ready = tmp_path / "dagster-like"
    dagster_like = script(f"""
        import pathlib, signal, time
        signal.signal(signal.SIGTERM, signal.getsignal(signal.SIGINT))  # what dagster's setup_interrupt_handlers does
        pathlib.Path({str(ready)!r}).write_text("ok")
        time.sleep(120)
    """)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with Supervisor(stop_timeout=3) as sup:
            sup.start(ChildSpec("dagster-like", dagster_like, ready=file_exists(ready)))
            assert sup.wait_ready(timeout=30) is None
    finally:
        signal.signal(signal.SIGINT, previous)
    assert sup.killed == []
    assert sup.children[0].process.returncode != -signal.SIGKILL


def test_handlers_are_restored_on_exit():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    with Supervisor():
        assert signal.getsignal(signal.SIGTERM) != before[signal.SIGTERM]
    assert {s: signal.getsignal(s) for s in before} == before


def test_describe_status():
    assert describe_status(0) == "exited with status 0"
    assert describe_status(-signal.SIGTERM) == "was killed by SIGTERM"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stop_signal_to_the_supervising_process_stops_everything(tmp_path, signum):
    """The real signal path: a process supervising two children gets a signal and exits 0 with none left."""
    pid_file = tmp_path / "pids"
    runner = tmp_path / "runner.py"
    runner.write_text(textwrap.dedent(f"""
        import pathlib, sys
        from spam_assets.supervisor import ChildSpec, Supervisor
        sleep = [sys.executable, "-c", "import time; time.sleep(120)"]
        with Supervisor(stop_timeout=5) as sup:
            kids = [sup.start(ChildSpec(name, sleep)) for name in ("one", "two")]
            pathlib.Path({str(pid_file)!r}).write_text(" ".join(str(k.pid) for k in kids))
            outcome = sup.watch()
            print(outcome.message, flush=True)
        sys.exit(0 if outcome.ok else 1)
    """))
    proc = subprocess.Popen([PY, str(runner)], cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        kids = pids_in(pid_file)
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=30)
    finally:
        for pid in [proc.pid, *(pids_in(pid_file) if pid_file.exists() else [])]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 0
    assert out.strip() == f"received {signal.Signals(signum).name}"
    assert all(gone(k) for k in kids)


def test_run_returns_a_steps_status_and_ends_what_it_left_behind(tmp_path):
    pid_file = tmp_path / "worker"
    step = script(f"""
        import pathlib, subprocess, sys
        worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # a pool that outlives its parent
        pathlib.Path({str(pid_file)!r}).write_text(str(worker.pid))
        sys.exit(5)
    """)
    with Supervisor(stop_timeout=5) as sup:
        assert sup.run(ChildSpec("step", step)) == 5
        assert sup.children == []  # a finished step is not watched: watch() must not report it
        assert sup.watch(timeout=0.3) is None
    assert gone(pids_in(pid_file)[0])


def test_a_stop_signal_during_a_step_ends_it():
    with Supervisor(stop_timeout=5) as sup:
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
        outcome = sup.run(ChildSpec("long-step", script("import time; time.sleep(120)")))
        assert outcome == StopRequested(signal.SIGTERM)
    assert sup.children[0].process.returncode == -signal.SIGTERM


# --- the watchdog: when the supervising process itself is killed ---------------------------------


def test_a_supervisor_killed_by_sigkill_leaves_nothing_behind(tmp_path):
    """SIGKILL gives the supervisor no chance to stop anything: its watchdog stops every group instead,
    a worker in a child's group and a child that ignores SIGTERM included."""
    ready = {name: tmp_path / name for name in ("parent", "stubborn")}
    runner = tmp_path / "runner.py"
    runner.write_text(textwrap.dedent(f"""
        import pathlib, time
        from spam_assets.supervisor import ChildSpec, Supervisor
        with Supervisor(stop_timeout=2) as sup:
            sup.start(ChildSpec("parent", {sleeper(ready["parent"], grandchild=GRANDCHILD)!r}))
            sup.start(ChildSpec("stubborn", {sleeper(ready["stubborn"], ignore_term=True)!r}))
            pathlib.Path({str(tmp_path / "watchdog")!r}).write_text(str(sup._watchdog.pid))
            sup.watch()
    """))
    proc = subprocess.Popen([PY, str(runner)], cwd=ROOT, start_new_session=True)
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not all(p.exists() for p in ready.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = pids_in(ready["parent"]) + pids_in(ready["stubborn"])
        watchdog = int((tmp_path / "watchdog").read_text())
        assert len(pids) == 3 and not any(gone(p) for p in pids)
        proc.kill()
        proc.wait(timeout=10)
        deadline = time.monotonic() + 30  # a liveness bound, far above stop_timeout: the point is "they end"
        while not all(gone(p) for p in [*pids, watchdog]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [p for p in pids if not gone(p)] == []
        assert gone(watchdog)  # its job done, it exits
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_the_watchdog_leaves_alone_what_was_stopped_and_exits_with_the_supervisor(tmp_path):
    ready = tmp_path / "a"
    with Supervisor(stop_timeout=2) as sup:
        sup.start(ChildSpec("a", sleeper(ready), ready=file_exists(ready)))
        assert sup.wait_ready(timeout=30) is None
        watchdog = psutil.Process(sup._watchdog.pid)
        assert "--watchdog" in watchdog.cmdline() and os.getpgid(watchdog.pid) != os.getpgid(0)
    assert gone(watchdog.pid)
    assert sup.children[0].process.returncode == -signal.SIGTERM  # stopped by the supervisor, not killed twice


def test_watchdog_stops_only_the_groups_still_listed(tmp_path):
    from spam_assets.supervisor import watchdog

    kept, released = (subprocess.Popen(script("import time; time.sleep(120)"), start_new_session=True) for _ in range(2))
    reaper = threading.Thread(target=kept.wait)  # what init does for the real watchdog: a zombie is not running
    reaper.start()
    try:
        assert watchdog([f"+{kept.pid}", f"+{released.pid}", f"-{released.pid}"], stop_timeout=5) == []  # none needed SIGKILL
        reaper.join(timeout=10)
        assert kept.returncode == -signal.SIGTERM
        assert released.poll() is None  # taken off the list: not the watchdog's any more
    finally:
        released.kill()
        released.wait()
