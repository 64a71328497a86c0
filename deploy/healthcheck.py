#!/usr/bin/env python3
"""`spam-healthcheck ROLE [FLAGS]`: is this container's service really answering? Exit 0 if so.

The target is always given, never guessed: the role comes from the first
argument (else $SPAM_ROLE, which the image sets to `serving`, its default
command), and the address from the settings the service itself reads. Give
the check the same flags and environment as the service, and it dials what
the service listens on. Each role asks the service itself, not just whether
a port is open:

    serving    grpc.health.v1 Check("") on spam-serve: SERVING only once a champion
               is loaded (NOT_SERVING before). FLAGS are spam-serve's own flags;
               with the SPAM_SERVING_* environment they are read exactly as
               spam-serve reads them (serving.config.from_args): port, TLS
               (trusting the server's certificate), bearer token (though health
               is exempt).
    code       grpc.health.v1 Check("DagsterApi") on $DAGSTER_CODE_SERVER_HOST/_PORT
    webserver  GET /server_info on $DAGSTER_WEBSERVER_HOST/_PORT
    mlflow     GET /health on $MLFLOW_HOST/_PORT
    daemon     `dagster-daemon liveness-check` (recent heartbeats in the instance)

Those variables are the ones `dagster code-server start`, `dagster-webserver`
and `mlflow server` read for --host and --port, so a service configured
through its environment needs no flags here. A service listening on every
interface (0.0.0.0, ::) is dialled on 127.0.0.1.

Prints the status it saw (e.g. NOT_SERVING) so `docker inspect` and the smoke
test can tell "up but no champion" from "down".
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request

ROLES = ("serving", "code", "webserver", "mlflow", "daemon")
# Where the other services read their address, with their CLIs' defaults
# (the code server needs a port; 4000 is the one deploy/workspace.yaml dials).
ADDRESS_ENV = {
    "code": ("DAGSTER_CODE_SERVER_HOST", "localhost", "DAGSTER_CODE_SERVER_PORT", "4000"),
    "webserver": ("DAGSTER_WEBSERVER_HOST", "127.0.0.1", "DAGSTER_WEBSERVER_PORT", "3000"),
    "mlflow": ("MLFLOW_HOST", "127.0.0.1", "MLFLOW_PORT", "5000"),
}


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


def serving_health(argv: list[str]) -> tuple[bool, str]:
    """The serving role, configured like `spam-serve` itself: same flags, env vars, TLS and token."""
    from serving.config import from_args

    try:
        config, _ = from_args(argv)
    except ValueError as error:
        return False, f"bad serving configuration: {error}"
    except SystemExit:  # argparse has said why on stderr
        return False, f"spam-serve flags not understood: {' '.join(argv)}"
    tls_root = tls_name = None
    if config.tls:
        try:
            tls_root = config.tls_cert.read_bytes()
        except OSError as error:
            return False, f"cannot read TLS certificate: {error}"
        tls_name = tls_target_name(tls_root)
    return grpc_health(dial_target(config.host, config.port), "", tls_root=tls_root, tls_name=tls_name, token=config.token)


def dial_target(host: str, port: int | str) -> str:
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


def check(role: str, flags: list[str]) -> tuple[bool, str]:
    if role == "serving":
        return serving_health(flags)
    if flags:  # the other services take their port from the environment, as their CLIs do
        return False, f"flags are for the serving role only; set the {role} service's port in its environment"
    if role == "daemon":
        return daemon_live()
    host_var, default_host, port_var, default_port = ADDRESS_ENV[role]
    target = dial_target(os.environ.get(host_var, default_host), os.environ.get(port_var, default_port))
    if role == "code":
        return grpc_health(target, "DagsterApi")
    return http_ok(f"http://{target}/server_info" if role == "webserver" else f"http://{target}/health")


def main(argv: list[str]) -> int:
    role, flags = (argv[0], argv[1:]) if argv else (os.environ.get("SPAM_ROLE", ""), [])
    if role not in ROLES:
        said = f"unknown role {role!r}" if role else "no role given"
        print(f"spam-healthcheck: {said}: use spam-healthcheck ROLE or set SPAM_ROLE; roles: {', '.join(ROLES)}", file=sys.stderr)
        return 1  # not 2: Docker reserves that exit status of a HEALTHCHECK
    ok, status = check(role, flags)
    print(f"{role}: {status}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
