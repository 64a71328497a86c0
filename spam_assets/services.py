"""The long-lived processes `spam-platform up` runs, as commands for the supervisor.

The same split as the container deployment (docker-compose.yml): one Dagster
code server that the webserver and the daemon both talk to, the MLflow UI on
the embedded store, and `spam-serve` following the champion. Each is its own
child, so when one dies `up` can say which.

Everything is started through this interpreter (`sys.executable -m ...`):
the virtualenv's bin/ need not be on PATH. `serving` is started by module
name only; spam_assets never imports it.
"""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from spam_assets.supervisor import ChildSpec

CODE_LOCATION = "spam_assets"  # as in workspace.yaml and [tool.dagster]
DEFINITIONS_MODULE = "spam_assets.definitions"

# MLflow 3.17's `mlflow server` starts 4 uvicorn workers and a huey job runner
# (7 consumers, ~1.35 GiB idle) for server-side jobs this platform never
# submits. One worker serves one person's UI; the variable below is read by
# mlflow.server._run_server before it launches the runner.
MLFLOW_WORKERS = 1
MLFLOW_LEAN_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def accepts_connections(host: str, port: int) -> Callable[[], bool]:
    """A readiness probe: something accepts TCP connections on host:port."""
    target = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host

    def probe() -> bool:
        try:
            with socket.create_connection((target, port), timeout=1):
                return True
        except OSError:
            return False

    return probe


def port_in_use(host: str, port: int) -> bool:
    """Something already listens on host:port (bound the way servers bind: SO_REUSEADDR).

    Any other reason a server could not listen there (a host name that does not resolve, an
    address not on this machine, a privileged port) is raised as the OSError it is.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def free_local_port() -> int:
    """A port for a server only the platform's own processes talk to (the code server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def workspace_yaml(code_server_port: int) -> str:
    """A Dagster workspace pointing the webserver and the daemon at the one code server."""
    return (
        "load_from:\n"
        "  - grpc_server:\n"
        "      host: 127.0.0.1\n"
        f"      port: {code_server_port}\n"
        f"      location_name: {CODE_LOCATION}\n"
    )


def mlflow_ui(host: str, port: int, tracking_uri: str, artifacts: Path) -> ChildSpec:
    return ChildSpec(
        "mlflow-ui",
        [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", tracking_uri,
            "--default-artifact-root", artifacts.as_uri(),
            "--host", host, "--port", str(port),
            "--workers", str(MLFLOW_WORKERS),
        ],
        env=MLFLOW_LEAN_ENV,
        ready=accepts_connections(host, port),
    )  # fmt: skip


def dagster_code_server(port: int) -> ChildSpec:
    return ChildSpec(
        "dagster-code-server",
        [
            sys.executable, "-m", "dagster", "code-server", "start",
            "-m", DEFINITIONS_MODULE, "--location-name", CODE_LOCATION,
            "-h", "127.0.0.1", "-p", str(port),
            # Runs it launches start as `<this python> -m dagster`, not a `dagster` found on PATH.
            "--use-python-environment-entry-point",
        ],
        ready=accepts_connections("127.0.0.1", port),
    )  # fmt: skip


def dagster_webserver(host: str, port: int, workspace: Path) -> ChildSpec:
    return ChildSpec(
        "dagster-webserver",
        [sys.executable, "-m", "dagster_webserver", "-h", host, "-p", str(port), "-w", str(workspace)],
        ready=accepts_connections(host, port),
    )


def dagster_daemon(workspace: Path) -> ChildSpec:
    # `python -m dagster._daemon` is how `dagster dev` itself starts the daemon.
    return ChildSpec("dagster-daemon", [sys.executable, "-m", "dagster._daemon", "run", "-w", str(workspace)])


def spam_serve(host: str, port: int, tracking_uri: str, grace: float) -> ChildSpec:
    return ChildSpec(
        "spam-serve",
        [
            sys.executable, "-m", "serving.server",
            "--host", host, "--port", str(port),
            "--tracking-uri", tracking_uri,
            "--grace", str(grace),
        ],
        ready=accepts_connections(host, port),
    )  # fmt: skip
