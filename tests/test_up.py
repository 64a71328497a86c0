"""`spam-platform up`: the whole platform from one command, and nothing left when it stops.

The slow tests run the real `spam-platform up` on a temp home with the SMS corpus
and free ports for the Dagster UI, the MLflow UI and gRPC, waits until
spam-serve answers health SERVING (the graph ran and a champion exists), and
reads the process tree of that one `up` (psutil, from the PID the test
started). Run with: pytest -m slow tests/test_up.py
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.datasets import sms_or_skip

BIN = Path(sys.executable).parent
START_TIMEOUT = 600  # seconds: graph + five servers on a loaded 2-core machine
STOP_BOUND = 10  # seconds: what `up` promises after Ctrl-C or SIGTERM
ROLES = {  # a piece of each server's command line -> the name `up` gives it
    "dagster._daemon": "dagster-daemon",
    "dagster_webserver": "dagster-webserver",
    "code-server start": "dagster-code-server",
    "mlflow server": "mlflow-ui",
    "serving.server": "spam-serve",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    """Nothing listens there: a server-style bind (SO_REUSEADDR) succeeds."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def health(port: int) -> int | None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
        except grpc.RpcError:
            return None


def alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def describe(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return "(gone)"


class Up:
    """One `spam-platform up` on a temp home, started and read by PID."""

    def __init__(self, root: Path):
        self.home = root / "home"
        self.log = root / "up.log"
        self.ports = {"--port": free_port(), "--mlflow-port": free_port(), "--grpc-port": free_port()}
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SPAM_", "MLFLOW_", "DAGSTER_"))}
        env.update(SPAM_HOME=str(self.home), SPAM_SMS_PATH=str(sms_or_skip()))
        argv = [str(BIN / "spam-platform"), "up", *(str(x) for kv in self.ports.items() for x in kv)]
        self.process = subprocess.Popen(
            argv, env=env, cwd=root, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
            start_new_session=True,  # the test's own Ctrl-C does not reach it; the test signals it
        )  # fmt: skip
        self.me = psutil.Process(self.process.pid)
        self.seen: list[psutil.Process] = []

    def tree(self) -> list[psutil.Process]:
        procs = self.me.children(recursive=True) if alive(self.me) else []
        self.seen.extend(p for p in procs if p not in self.seen)
        return procs

    def role(self, name: str) -> psutil.Process:
        found = [p for p in self.tree() if any(k in describe(p) and v == name for k, v in ROLES.items())]
        assert len(found) == 1, f"expected one {name} in the tree of up, found {[describe(p) for p in found]}"
        return found[0]

    def started(self) -> bool:
        """`up` said every server answers, and spam-serve says SERVING (a champion is loaded)."""
        return (
            f"platform up (pid {self.me.pid})" in self.log.read_text(errors="replace")
            and health(self.ports["--grpc-port"]) == health_pb2.HealthCheckResponse.SERVING
        )

    def wait_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not self.started():
            assert self.process.poll() is None, f"up exited with {self.process.returncode}:\n{self.tail()}"
            assert time.monotonic() < deadline, f"no SERVING after {START_TIMEOUT} s:\n{self.tail()}"
            time.sleep(1)
        self.tree()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def left(self) -> list[str]:
        """Processes seen in the tree of this `up` that still run."""
        return [f"{p.pid} {describe(p)[:120]}" for p in self.seen if alive(p)]

    def cleanup(self) -> None:
        for p in [self.me, *self.tree(), *self.seen]:
            with contextlib.suppress(psutil.Error):
                p.kill()
        self.process.wait()


@pytest.fixture
def up(tmp_path):
    running = Up(tmp_path)
    yield running
    running.cleanup()


@pytest.mark.slow
@pytest.mark.datasets
def test_up_serves_everything_and_sigterm_leaves_nothing(up):
    up.wait_serving()
    # Every server is running, in a process group of its own, and the MLflow UI is lean.
    tree = up.tree()
    names = {ROLES[k] for p in tree for k in ROLES if k in describe(p)}
    assert names == set(ROLES.values())
    direct = up.me.children()
    assert len({os.getpgid(p.pid) for p in direct}) == len(direct) and os.getpgid(up.me.pid) not in {os.getpgid(p.pid) for p in direct}
    assert not [p for p in tree if "huey" in describe(p)], "the MLflow job runner should be off"
    log = up.log.read_text()
    for flag, port in up.ports.items():
        assert f"127.0.0.1:{port}" in log, f"address for {flag} not printed"
    for path_port in (up.ports["--port"], up.ports["--mlflow-port"]):
        with urllib.request.urlopen(f"http://127.0.0.1:{path_port}/", timeout=10) as response:
            assert response.status == 200

    os.kill(up.me.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_BOUND
    while time.monotonic() < deadline and (up.process.poll() is None or up.left()):
        time.sleep(0.1)
    assert up.process.poll() == 0, up.tail()
    assert up.left() == []
    assert all(port_free(port) for port in up.ports.values()), up.ports
    assert "received SIGTERM, stopping" in up.log.read_text()


@pytest.mark.slow
@pytest.mark.datasets
@pytest.mark.parametrize(
    ("victim", "signum", "how"),
    [
        ("dagster-daemon", signal.SIGKILL, "was killed by SIGKILL"),
        # spam-serve stops cleanly on SIGTERM (status 0): still not something `up` asked for.
        ("spam-serve", signal.SIGTERM, "exited with status 0"),
    ],
)
def test_a_server_that_dies_brings_up_down_naming_it(up, victim, signum, how):
    up.wait_serving()
    target = up.role(victim)
    target.send_signal(signum)
    up.process.wait(timeout=STOP_BOUND + 10)  # noticed within a poll, then the usual stop
    assert up.process.returncode == 1, up.tail()
    assert f"{victim} (pid {target.pid}) {how}; stopping the rest" in up.log.read_text()
    deadline = time.monotonic() + 2
    while up.left() and time.monotonic() < deadline:  # SIGKILLed strays may take a moment to end
        time.sleep(0.1)
    assert up.left() == []
    assert all(port_free(port) for port in up.ports.values()), up.ports


@pytest.mark.slow
@pytest.mark.datasets
def test_up_killed_by_sigkill_leaves_nothing(up):
    """SIGKILL (the OOM killer, `kill -9`) gives `up` no chance to stop its servers: its watchdog does,
    so no server, worker or port outlives it and a restart of `up` finds its ports free."""
    up.wait_serving()
    tree = up.tree()
    assert any("--watchdog" in describe(p) for p in tree)
    up.me.kill()
    up.process.wait(timeout=10)
    deadline = time.monotonic() + STOP_BOUND + 5  # the watchdog's SIGTERM-then-SIGKILL, plus reading EOF
    while up.left() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert up.left() == []
    assert all(port_free(port) for port in up.ports.values()), up.ports


# --- fast: what `up` refuses or reports before any server starts ---------------------------------


def test_up_refuses_a_port_in_use_before_doing_anything(home, capsys):
    from spam_assets.cli import main

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        status = main(["up", "--port", str(free_port()), "--mlflow-port", str(free_port()), "--grpc-port", str(taken)])
    assert status == 2
    assert f"already in use on 127.0.0.1: --grpc-port {taken}" in capsys.readouterr().err
    assert not (home / "batches").exists()  # nothing staged, no graph run


def test_up_stops_when_the_first_graph_run_fails(tmp_path):
    """The graph runs in a child first; when it fails, `up` exits with its status and starts no server.

    The child says why in one line (here: no such source, status 2); `up` adds which step ended.
    """
    ports = [free_port(), free_port(), free_port()]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPAM_", "MLFLOW_", "DAGSTER_"))}
    env["SPAM_HOME"] = str(tmp_path / "home")
    out = subprocess.run(
        [str(BIN / "spam-platform"), "up", "--source", str(tmp_path / "no-such-file.csv"),
         "--port", str(ports[0]), "--mlflow-port", str(ports[1]), "--grpc-port", str(ports[2])],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.splitlines() == [
        f"spam-platform up: {tmp_path / 'no-such-file.csv'}: no such file or folder",
        "spam-platform up: the first graph run exited with status 2; nothing else started",
    ]
    assert "platform up" not in out.stdout
    assert all(port_free(p) for p in ports)


def test_the_mlflow_job_runner_switch_is_the_one_mlflow_reads(monkeypatch, tmp_path):
    """If an MLflow upgrade renames the variable, the UI would quietly start 7 job consumers again."""
    from mlflow.environment_variables import MLFLOW_SERVER_ENABLE_JOB_EXECUTION

    from spam_assets import services

    monkeypatch.delenv(MLFLOW_SERVER_ENABLE_JOB_EXECUTION.name, raising=False)
    assert MLFLOW_SERVER_ENABLE_JOB_EXECUTION.get() is True  # on unless told otherwise
    for name, value in services.MLFLOW_LEAN_ENV.items():
        monkeypatch.setenv(name, value)
    assert MLFLOW_SERVER_ENABLE_JOB_EXECUTION.get() is False
    spec = services.mlflow_ui("127.0.0.1", 5000, "sqlite:///x.db", tmp_path / "artifacts")
    assert spec.argv[spec.argv.index("--workers") + 1] == "1"


def test_the_workspace_points_webserver_and_daemon_at_one_code_server():
    import yaml

    from spam_assets import services

    (entry,) = yaml.safe_load(services.workspace_yaml(4321))["load_from"]
    assert entry == {"grpc_server": {"host": "127.0.0.1", "port": 4321, "location_name": "spam_assets"}}
