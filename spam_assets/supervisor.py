"""A small process supervisor: start children, watch them, stop them all within a bound.

`spam-platform up` runs several long-lived servers. The rules it needs:

- Each child runs in its own session (so its own process group): a Ctrl-C in
  the terminal reaches `up` alone, and `up` decides how everything stops; a
  signal sent to a child's group also reaches what that child started
  (MLflow's web worker, Dagster's code server and run workers), even after
  the child itself died.
- Stopping sends SIGTERM to every group, waits up to `stop_timeout`, then
  SIGKILLs every group still there and every process that was in the tree
  when stopping began, so nothing is left holding a port.
- A child that exits on its own is a failure of the whole: `watch()` returns
  which child and how it ended, and the caller stops the rest and exits
  non-zero. We do not restart children here: one restart policy belongs to
  whatever runs `up` (systemd `Restart=on-failure`, a container's restart
  policy), which sees the non-zero exit, and a crash loop stays visible.
- If the supervising process itself dies without stopping them (SIGKILL,
  the OOM killer), a watchdog does it: a small process of its own, started
  with the first child, that reads each child's pid from a pipe and, when
  the pipe reaches end-of-file with children still listed (the kernel
  closes a dead process's pipes, however it died), stops their groups the
  same way. This covers what the parent-death signal (Linux
  PR_SET_PDEATHSIG) would not: it reaches each child only, not the workers
  in its group, and a child that ignores it lives on.
- While the supervisor is open it handles SIGINT, SIGTERM and SIGHUP itself
  (a flag, read by the loops). That also gives every child default signal
  dispositions after exec: a SIGINT that was ignored in `up` (a background
  job of a script) would otherwise be inherited, and Dagster maps SIGTERM to
  SIGINT's handler, so it would ignore SIGTERM too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import psutil

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
POLL_SECONDS = 0.2


@dataclass(frozen=True)
class ChildSpec:
    """One long-lived child: a name people recognise, its command, and how to tell it is ready."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)  # added to (or overriding) this process's environment
    ready: Callable[[], bool] | None = None  # None: ready once started


@dataclass
class Child:
    spec: ChildSpec
    process: subprocess.Popen
    ready: bool = False

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass(frozen=True)
class StopRequested:
    signum: int
    ok = True

    @property
    def message(self) -> str:
        return f"received {signal.Signals(self.signum).name}"


@dataclass(frozen=True)
class ChildExited:
    name: str
    pid: int
    returncode: int
    ok = False

    @property
    def message(self) -> str:
        return f"{self.name} (pid {self.pid}) {describe_status(self.returncode)}"


@dataclass(frozen=True)
class NotReady:
    names: tuple[str, ...]
    timeout: float
    ok = False

    @property
    def message(self) -> str:
        return f"not ready after {self.timeout:g} s: {', '.join(self.names)}"


Outcome = StopRequested | ChildExited | NotReady


def describe_status(returncode: int) -> str:
    """'exited with status 1' or 'was killed by SIGKILL', from a Popen returncode."""
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


class Supervisor:
    """Start children, wait until they are ready, watch them, stop them all.

        with Supervisor(stop_timeout=7) as supervisor:
            supervisor.start(ChildSpec("web", [...], ready=...))
            outcome = supervisor.wait_ready(timeout=120) or supervisor.watch()
        # leaving the block stopped every child; outcome says why it ended
    """

    def __init__(self, stop_timeout: float = 7.0):
        self.stop_timeout = stop_timeout
        self.children: list[Child] = []
        self.stop_signal: int | None = None
        self.killed: list[str] = []  # children whose group needed SIGKILL at the last stop
        self._previous_handlers: dict[int, object] = {}
        self._watchdog: subprocess.Popen | None = None

    # --- lifecycle -------------------------------------------------------
    def __enter__(self) -> Supervisor:
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
            for signum in STOP_SIGNALS:
                self._previous_handlers[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            self._close_watchdog()
            for signum, handler in self._previous_handlers.items():
                signal.signal(signum, handler)
            self._previous_handlers.clear()

    def _on_signal(self, signum, _frame) -> None:
        if self.stop_signal is None:  # the first one counts; more while stopping change nothing
            self.stop_signal = signum

    def start(self, spec: ChildSpec) -> Child:
        if self._watchdog is None:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-m", __name__, "--watchdog", str(self.stop_timeout)],
                stdin=subprocess.PIPE,
                text=True,
                start_new_session=True,  # a Ctrl-C or a signal to our group leaves it to do its job
            )
        process = subprocess.Popen(
            list(spec.argv),
            env={**os.environ, **spec.env},
            start_new_session=True,  # own session and process group, leader pid == group id
        )  # close_fds (the default): no child holds the watchdog's pipe open
        child = Child(spec, process, ready=spec.ready is None)
        self.children.append(child)
        self._tell_watchdog(f"+{child.pid}")
        return child

    def _tell_watchdog(self, line: str) -> None:
        if self._watchdog is None:
            return
        with contextlib.suppress(BrokenPipeError, ValueError):  # it died, or its pipe is closed: nothing to tell
            self._watchdog.stdin.write(line + "\n")
            self._watchdog.stdin.flush()

    def _close_watchdog(self) -> None:
        """End-of-file with nothing listed: the watchdog exits without touching anything."""
        if self._watchdog is None:
            return
        with contextlib.suppress(BrokenPipeError):
            self._watchdog.stdin.close()
        try:
            self._watchdog.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._watchdog.kill()
            self._watchdog.wait()
        self._watchdog = None

    # --- waiting ---------------------------------------------------------
    def _exited(self) -> ChildExited | None:
        for child in self.children:
            returncode = child.process.poll()
            if returncode is not None:
                return ChildExited(child.name, child.pid, returncode)
        return None

    def _interrupted(self) -> Outcome | None:
        if self.stop_signal is not None:
            return StopRequested(self.stop_signal)
        return self._exited()

    def wait_ready(self, timeout: float) -> Outcome | None:
        """None once every child is ready; else why not (a stop signal, a child that exited, the timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            if outcome := self._interrupted():
                return outcome
            for child in self.children:
                if not child.ready and child.spec.ready is not None:
                    child.ready = child.spec.ready()
            waiting = tuple(c.name for c in self.children if not c.ready)
            if not waiting:
                return None
            if time.monotonic() >= deadline:
                return NotReady(waiting, timeout)
            time.sleep(POLL_SECONDS)

    def watch(self, timeout: float | None = None) -> Outcome | None:
        """Block until a stop signal arrives or a child exits (None if `timeout` passes first)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (outcome := self._interrupted()):
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(POLL_SECONDS)
        return outcome

    def run(self, spec: ChildSpec) -> int | StopRequested:
        """Run a one-off step to its end: its exit status, or StopRequested if a stop signal came first.

        Whatever the step left in its process group (worker pools that outlive
        their parent) is stopped as well, so the step leaves nothing behind.
        """
        child = self.start(spec)
        try:
            while (returncode := child.process.poll()) is None:
                if self.stop_signal is not None:
                    return StopRequested(self.stop_signal)
                time.sleep(POLL_SECONDS)
            return returncode
        finally:
            if child.process.poll() is not None:  # else the caller's stop() ends it with the rest
                self._stop([child])
                self.children.remove(child)

    # --- stopping --------------------------------------------------------
    def stop(self) -> list[str]:
        """SIGTERM every child's group, SIGKILL what is left after `stop_timeout`; returns the names killed."""
        self.killed = self._stop(self.children)
        return self.killed

    def _stop(self, children: list[Child]) -> list[str]:
        by_pid = {c.pid: c for c in children}
        # poll() reaps our own children, so a leader that ended is not mistaken for a running zombie.
        left = end_groups(by_pid, self.stop_timeout, lambda pid: by_pid[pid].process.poll() is None or _group_exists(pid))
        for child in children:
            self._tell_watchdog(f"-{child.pid}")
        return [by_pid[pid].name for pid in left]


def end_groups(leaders: Iterable[int], timeout: float, running: Callable[[int], bool] | None = None) -> list[int]:
    """SIGTERM each leader's process group; SIGKILL those still there after `timeout`, and every process
    that was below a leader when this began (one in a session of its own escapes its group's signals).

    Returns the leaders whose group needed SIGKILL. `running(leader)`: the leader or its group still
    exists (default: the group has a member).
    """
    leaders = list(leaders)
    running = running or _group_exists
    tree = {pid: _start_time(pid) for leader in leaders for pid in descendants(leader)}
    for leader in leaders:
        _signal_group(leader, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(running(p) for p in leaders):
        time.sleep(0.05)
    left = [p for p in leaders if running(p)]
    for leader in left:
        _signal_group(leader, signal.SIGKILL)
    strays = {pid: started for pid, started in tree.items() if _alive(pid, started)}
    for pid in strays:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    settle = time.monotonic() + 1.0  # SIGKILL is delivered asynchronously: see them end
    while time.monotonic() < settle and (
        any(running(p) for p in left) or any(_alive(pid, started) for pid, started in strays.items())
    ):
        time.sleep(0.02)
    return left


def watchdog(lines: Iterable[str], stop_timeout: float) -> list[int]:
    """Follow `+pid` / `-pid` lines; at their end, stop the groups of the pids still listed.

    The pipe ends cleanly once the supervisor stopped everything (nothing listed), or when the
    supervising process died (the children it left). A group is only signalled while its leader
    is the process that was listed (same start time), or no process has that pid any more (the
    leader died, its workers may remain): never a later process given the same number.
    """
    listed: dict[int, float | None] = {}
    for line in lines:
        sign, pid = line[:1], int(line[1:])
        if sign == "+":
            listed[pid] = _start_time(pid)
        else:
            listed.pop(pid, None)
    leaders = [p for p, started in listed.items() if _alive(p, started) or (_process(p) is None and _group_exists(p))]
    return end_groups(leaders, stop_timeout) if leaders else []


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def _start_time(pid: int) -> float | None:
    """When `pid` started: tells a process from a later one given the same pid."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _alive(pid: int, started: float | None) -> bool:
    """The process that had this start time still runs (a zombie has ended: only its parent's wait is missing)."""
    try:
        process = psutil.Process(pid)
        return started is not None and process.create_time() == started and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (its children, theirs, ...); [] when `pid` is gone."""
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


if __name__ == "__main__" and sys.argv[1:2] == ["--watchdog"]:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the supervisor, not for us
    watchdog(sys.stdin, float(sys.argv[2]))
