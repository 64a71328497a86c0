#!/usr/bin/env python3
"""`spam-healthcheck [ROLE]`: is this container's service really answering? Exit 0 if so.

One image runs every role, so the image's HEALTHCHECK calls this without a
role and it finds the role from the container's processes; compose passes it
explicitly. Each role asks the service itself, not just whether a port is open:

    serving    grpc.health.v1 Check("") on 127.0.0.1:$SPAM_SERVING_PORT (50051):
               SERVING only once a champion is loaded (NOT_SERVING before)
    code       grpc.health.v1 Check("DagsterApi") on 127.0.0.1:4000 (Dagster code server)
    webserver  GET http://127.0.0.1:3000/server_info
    mlflow     GET http://127.0.0.1:5000/health
    daemon     `dagster-daemon liveness-check` (recent heartbeats in the instance)

Prints the status it saw (e.g. NOT_SERVING) so `docker inspect` and the smoke
test can tell "up but no champion" from "down".
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

# Markers in a process's command line, most specific first.
ROLE_MARKERS = (
    ("serving", ("spam-serve",)),
    ("webserver", ("dagster-webserver",)),
    ("daemon", ("dagster-daemon",)),
    ("code", ("code-server", "api grpc")),
    ("mlflow", ("mlflow server", "mlflow.server")),
)


def detect_role() -> str | None:
    for proc in sorted(Path("/proc").glob("[0-9]*"), key=lambda p: int(p.name)):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        for role, markers in ROLE_MARKERS:
            if any(m in cmdline for m in markers):
                return role
    return None


def grpc_health(target: str, service: str) -> tuple[bool, str]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=5
            )
        except grpc.RpcError as error:
            return False, f"{error.code().name}: {error.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return response.status == health_pb2.HealthCheckResponse.SERVING, status


def http_ok(url: str) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return 200 <= response.status < 300, f"HTTP {response.status}"
    except OSError as error:
        return False, str(error)


def daemon_live() -> tuple[bool, str]:
    done = subprocess.run(["dagster-daemon", "liveness-check"], capture_output=True, text=True, timeout=60)
    lines = (done.stdout + done.stderr).strip().splitlines()
    return done.returncode == 0, lines[-1] if lines else f"exit status {done.returncode}"


def check(role: str) -> tuple[bool, str]:
    if role == "serving":
        return grpc_health(f"127.0.0.1:{os.environ.get('SPAM_SERVING_PORT', '50051')}", "")
    if role == "code":
        return grpc_health(f"127.0.0.1:{os.environ.get('DAGSTER_CODE_SERVER_PORT', '4000')}", "DagsterApi")
    if role == "webserver":
        return http_ok(f"http://127.0.0.1:{os.environ.get('DAGSTER_WEBSERVER_PORT', '3000')}/server_info")
    if role == "mlflow":
        return http_ok(f"http://127.0.0.1:{os.environ.get('MLFLOW_PORT', '5000')}/health")
    if role == "daemon":
        return daemon_live()
    raise SystemExit(f"spam-healthcheck: unknown role {role!r}")


def main(argv: list[str]) -> int:
    role = argv[0] if argv else os.environ.get("SPAM_ROLE") or detect_role()
    if role is None:
        print("spam-healthcheck: no known service runs in this container", file=sys.stderr)
        return 1
    ok, status = check(role)
    print(f"{role}: {status}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
