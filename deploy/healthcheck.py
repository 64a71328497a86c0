#!/usr/bin/env python3
"""`spam-healthcheck [ROLE]`: is this container's service really answering? Exit 0 if so.

One image runs every role, so the image's HEALTHCHECK calls this without a
role and it finds the role from the container's processes; compose passes it
explicitly. Each role asks the service itself, not just whether a port is open:

    serving    grpc.health.v1 Check("") on the server's port: SERVING only once a
               champion is loaded (NOT_SERVING before). Configured exactly as the
               running spam-serve is: its flags and SPAM_SERVING_* environment,
               read from /proc (port, TLS trusting its certificate, bearer token,
               though health is exempt). With no spam-serve process in sight,
               this process's own SPAM_SERVING_* variables are used.
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


def grpc_health(
    target: str,
    service: str,
    *,
    tls_root: bytes | None = None,
    tls_name: str | None = None,
    token: str | None = None,
) -> tuple[bool, str]:
    """Check(service) on target; TLS trusting tls_root (verified against tls_name) when given."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    if tls_root is None:
        channel = grpc.insecure_channel(target)
    else:
        options = [("grpc.ssl_target_name_override", tls_name)] if tls_name else []
        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=tls_root), options)
    metadata = [("authorization", f"Bearer {token}")] if token else None
    with channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=5, metadata=metadata
            )
        except grpc.RpcError as error:
            return False, f"{error.code().name}: {error.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return response.status == health_pb2.HealthCheckResponse.SERVING, status


def tls_target_name(cert_pem: bytes) -> str | None:
    """A name in the server's certificate to verify it by, since the check dials 127.0.0.1.

    None (verify the address itself) when the certificate cannot be read or
    names none. "localhost" when listed, then 127.0.0.1 as such, then the
    first DNS name (a wildcard *.x as healthcheck.x), then the subject CN.
    """
    try:
        from cryptography import x509  # an MLflow dependency, so in the image
        from cryptography.x509.oid import NameOID

        cert = x509.load_pem_x509_certificate(cert_pem)  # the first one: the server's own
    except Exception:  # noqa: BLE001 - no override is the safe fallback
        return None
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = sans.get_values_for_type(x509.DNSName)
        ips = [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        dns, ips = [], []
    if "localhost" in dns:
        return "localhost"
    if "127.0.0.1" in ips:
        return None
    if dns:
        return "healthcheck." + dns[0][2:] if dns[0].startswith("*.") else dns[0]
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else None


def serve_args(cmdline: list[str]) -> list[str] | None:
    """The flags of a `spam-serve` (or `python -m serving.server`) command line; None for other commands."""
    for i, part in enumerate(cmdline):
        if Path(part).name == "spam-serve":
            return cmdline[i + 1 :]
        if part == "-m" and cmdline[i + 1 : i + 2] == ["serving.server"]:
            return cmdline[i + 2 :]
    return None


def serving_process() -> tuple[list[str], dict[str, str]] | None:
    """The flags and environment of the spam-serve process in this container, if there is one."""
    for proc in sorted(Path("/proc").glob("[0-9]*"), key=lambda p: int(p.name)):
        try:
            args = serve_args([part.decode(errors="replace") for part in (proc / "cmdline").read_bytes().split(b"\0")[:-1]])
            if args is None or int(proc.name) == os.getpid():
                continue
            raw = (proc / "environ").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        entries = (entry.decode(errors="replace").partition("=") for entry in raw.split(b"\0") if b"=" in entry)
        return args, {name: value for name, _, value in entries}
    return None


def serving_health(environ: dict[str, str] | None = None, argv: list[str] | None = None) -> tuple[bool, str]:
    """The serving role, configured like `spam-serve` itself: same flags, env vars, TLS and token.

    Without arguments, those of the running spam-serve process (else this process's environment).
    """
    from serving.config import from_args

    if environ is None and argv is None and (found := serving_process()) is not None:
        argv, environ = found
    try:
        config, _ = from_args(argv or [], environ=os.environ if environ is None else environ)
    except ValueError as error:
        return False, f"bad serving configuration: {error}"
    except SystemExit:  # argparse has said why on stderr
        return False, f"spam-serve flags not understood: {' '.join(argv or [])}"
    tls_root = tls_name = None
    if config.tls:
        try:
            tls_root = config.tls_cert.read_bytes()
        except OSError as error:
            return False, f"cannot read TLS certificate: {error}"
        tls_name = tls_target_name(tls_root)
    return grpc_health(serving_target(config.host, config.port), "", tls_root=tls_root, tls_name=tls_name, token=config.token)


def serving_target(host: str, port: int) -> str:
    """Where to dial a server listening on host:port from inside its container."""
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"  # every interface: loopback is one of them
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


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
        return serving_health()
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
