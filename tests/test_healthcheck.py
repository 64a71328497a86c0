"""deploy/healthcheck.py against real servers: its explicit target, plaintext, TLS and bearer token.

The script runs as the container runs it, in its own interpreter, configured
only by what it is given: spam-serve's flags and SPAM_SERVING_* variables.
Two real spam-serve processes run beside every test here as decoys, started
first so they are the first spam-serve a scan of the process table would
find: one SERVING, one NOT_SERVING. A check that looked anywhere but at its
own target would give some test here the decoy's answer instead of its own.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
from pathlib import Path

import pytest
from serving_fixtures import PROJECT_ROOT, PYTHON, free_port, model_store, running_server, self_signed_cert, wait_until  # noqa: F401

import serving.auth

SCRIPT = PROJECT_ROOT / "deploy" / "healthcheck.py"
SPAM_SERVE = Path(PYTHON).with_name("spam-serve")  # the console script, as a user starts it


def clean_environ() -> dict[str, str]:
    """This process's environment without any serving or role settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SPAM_SERVING_") and k != "SPAM_ROLE"}


def healthcheck(*args: str, **env: str) -> subprocess.CompletedProcess:
    """`spam-healthcheck ARGS` (role, then flags) with only `env` for its settings."""
    return subprocess.run(
        [PYTHON, str(SCRIPT), *args],
        capture_output=True, text=True, timeout=30, cwd=PROJECT_ROOT, env={**clean_environ(), **env},
    )  # fmt: skip


@contextlib.contextmanager
def spam_serve(command: list[str], **env: str):
    """A real spam-serve process (`command` is how it is started); stopped on exit."""
    process = subprocess.Popen(
        command, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**clean_environ(), "MLFLOW_DISABLE_TELEMETRY": "true", **env},
    )  # fmt: skip
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_status(expected: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """Run the check until it prints `serving: expected` (a subprocess server takes seconds to start)."""
    return wait_until(
        lambda: (r := healthcheck("serving", *args, **env)).stdout.strip() == f"serving: {expected}" and r,
        timeout=90, interval=0.5, message=f"spam-serve {' '.join(args)} {env} to be {expected}",
    )  # fmt: skip


def load_script():
    spec = importlib.util.spec_from_file_location("spam_healthcheck", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dns_only_cert(folder, dns_names: list[str], ips: list[str] = ()) -> tuple:
    """A self-signed (cert.pem, key.pem) naming only `dns_names` and `ips` (no CN tricks)."""
    return self_signed_cert(folder, dns_names, ips, common_name="spam test server")


@pytest.fixture(scope="module")
def champion_model(model_store):
    registry = model_store.clone("healthcheck", [model_store.good[0]])
    registry.promote("1", "healthcheck test")
    return registry.model_name


@pytest.fixture(scope="module", autouse=True)
def decoys(model_store, champion_model):
    """Two spam-serve processes that are not the tests' targets, started before any other server.

    `serving`: the `spam-serve` command with flags, following a champion
    (SERVING). `not_serving`: `python -m serving.server` set up by
    environment alone, following a model with no champion (NOT_SERVING).
    Yields their ports.
    """
    empty = model_store.clone("healthcheck-decoy", [model_store.good[0]]).model_name  # no alias set
    ports = {"serving": free_port(), "not_serving": free_port()}
    command = [str(SPAM_SERVE)] if SPAM_SERVE.exists() else [PYTHON, "-m", "serving.server"]
    flags = ["--port", str(ports["serving"]), "--tracking-uri", model_store.uri, "--model-name", champion_model,
             "--poll-interval", "0.2"]  # fmt: skip
    not_serving_env = {"SPAM_SERVING_PORT": str(ports["not_serving"]), "SPAM_SERVING_TRACKING_URI": model_store.uri,
                       "SPAM_SERVING_MODEL_NAME": empty, "SPAM_SERVING_POLL_INTERVAL": "0.2"}  # fmt: skip
    with (
        spam_serve([*command, *flags]),
        spam_serve([PYTHON, "-m", "serving.server"], **not_serving_env),
    ):
        wait_for_status("SERVING", SPAM_SERVING_PORT=str(ports["serving"]))
        wait_for_status("NOT_SERVING", SPAM_SERVING_PORT=str(ports["not_serving"]))
        yield ports


@pytest.fixture(scope="module")
def plain_server(model_store, champion_model):
    with running_server(model_store, champion_model, wait_for="1", token="hc-token") as running:
        yield running


@pytest.fixture(scope="module", params=["localhost-and-ip", "dns-name-only"])
def tls_server(request, model_store, champion_model, tmp_path_factory):
    """TLS with the suite's usual certificate, and with one that names neither localhost nor 127.0.0.1."""
    folder = tmp_path_factory.mktemp("healthcheck-tls")
    if request.param == "localhost-and-ip":
        cert, key = self_signed_cert(folder)
    else:
        cert, key = dns_only_cert(folder, ["spam-serving.internal"])
    with running_server(model_store, champion_model, wait_for="1", tls_cert=cert, tls_key=key) as running:
        yield running, cert, key


def test_plaintext_server_is_serving(plain_server):
    result = healthcheck("serving", SPAM_SERVING_PORT=str(plain_server.port))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "serving: SERVING"


def test_server_without_a_champion_is_not_serving(model_store):
    registry = model_store.clone("healthcheck-empty", [model_store.good[0]])  # no alias set
    with running_server(model_store, registry.model_name) as running:
        result = healthcheck("serving", SPAM_SERVING_PORT=str(running.port))
    assert result.returncode == 1
    assert result.stdout.strip() == "serving: NOT_SERVING"


def test_tls_server_is_serving_with_the_servers_tls_settings(tls_server):
    running, cert, key = tls_server
    result = healthcheck(
        "serving", SPAM_SERVING_PORT=str(running.port), SPAM_SERVING_TLS_CERT=str(cert), SPAM_SERVING_TLS_KEY=str(key)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "serving: SERVING"


def test_tls_server_fails_a_plaintext_check(tls_server):
    running, _, _ = tls_server
    result = healthcheck("serving", SPAM_SERVING_PORT=str(running.port))
    assert result.returncode == 1
    assert result.stdout.startswith("serving: UNAVAILABLE")


def test_tls_check_verifies_the_certificate(tls_server, tmp_path):
    """Trusting some other certificate must fail: the check really verifies the server."""
    running, _, _ = tls_server
    other_cert, other_key = self_signed_cert(tmp_path)
    result = healthcheck(
        "serving",
        SPAM_SERVING_PORT=str(running.port),
        SPAM_SERVING_TLS_CERT=str(other_cert),
        SPAM_SERVING_TLS_KEY=str(other_key),
    )
    assert result.returncode == 1
    assert result.stdout.startswith("serving: UNAVAILABLE")


def test_token_server_is_serving_and_the_token_is_sent(plain_server, monkeypatch):
    # Health is exempt from the token, so `exit 0` alone would not show the token
    # goes out; without the exemption only a check that sends it passes.
    monkeypatch.setattr(serving.auth, "EXEMPT_PREFIXES", ())
    port = str(plain_server.port)
    ok = healthcheck("serving", SPAM_SERVING_PORT=port, SPAM_SERVING_TOKEN="hc-token")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.strip() == "serving: SERVING"
    wrong = healthcheck("serving", SPAM_SERVING_PORT=port, SPAM_SERVING_TOKEN="not-the-token")
    assert (wrong.returncode, wrong.stdout.split(":")[1].strip()) == (1, "UNAUTHENTICATED")
    missing = healthcheck("serving", SPAM_SERVING_PORT=port)
    assert missing.returncode == 1 and "UNAUTHENTICATED" in missing.stdout


def test_token_server_is_serving_with_health_exempt(plain_server):
    result = healthcheck("serving", SPAM_SERVING_PORT=str(plain_server.port), SPAM_SERVING_TOKEN="hc-token")
    assert result.returncode == 0, result.stdout + result.stderr


def test_tls_target_name_picks_a_name_the_certificate_holds(tmp_path):
    hc = load_script()
    (tmp_path / "a").mkdir()
    cert, _ = self_signed_cert(tmp_path / "a")
    assert hc.tls_target_name(cert.read_bytes()) == "localhost"
    cert, _ = dns_only_cert(tmp_path / "b", [], ["127.0.0.1"])
    assert hc.tls_target_name(cert.read_bytes()) is None
    cert, _ = dns_only_cert(tmp_path / "c", ["spam.example.com", "other.example.com"])
    assert hc.tls_target_name(cert.read_bytes()) == "spam.example.com"
    cert, _ = dns_only_cert(tmp_path / "d", ["*.example.com"])
    assert hc.tls_target_name(cert.read_bytes()) == "healthcheck.example.com"
    assert hc.tls_target_name(b"not a certificate") is None


def test_bad_serving_configuration_is_reported_not_raised():
    result = healthcheck("serving", SPAM_SERVING_PORT="1", SPAM_SERVING_TLS_CERT="/nonexistent/cert.pem")
    assert result.returncode == 1
    assert result.stdout.startswith("serving: bad serving configuration")
    result = healthcheck(
        "serving",
        SPAM_SERVING_PORT="1",
        SPAM_SERVING_TLS_CERT="/nonexistent/cert.pem",
        SPAM_SERVING_TLS_KEY="/nonexistent/k.pem",
    )
    assert result.returncode == 1
    assert result.stdout.startswith("serving: cannot read TLS certificate")


def test_dial_target_dials_loopback_for_every_interface():
    hc = load_script()
    assert hc.dial_target("0.0.0.0", 5) == "127.0.0.1:5" and hc.dial_target("::", 5) == "127.0.0.1:5"
    assert hc.dial_target("::1", 5) == "[::1]:5" and hc.dial_target("10.1.2.3", "5") == "10.1.2.3:5"


def test_the_decoys_answer_on_their_own_ports(decoys):
    """The decoys are alive and distinguishable, so the other tests here really ran beside them."""
    assert wait_for_status("SERVING", "--port", str(decoys["serving"])).returncode == 0
    assert wait_for_status("NOT_SERVING", "--port", str(decoys["not_serving"])).returncode == 1


def test_a_server_configured_by_flags_is_checked_with_the_same_flags(model_store, champion_model, tmp_path):
    """Given spam-serve's own flags (port, TLS) and environment (token), the check dials that server."""
    cert, key = self_signed_cert(tmp_path)
    port = str(free_port())
    flags = ["--port", port, "--tracking-uri", model_store.uri, "--model-name", champion_model,
             "--tls-cert", str(cert), "--tls-key", str(key), "--poll-interval", "0.2"]  # fmt: skip
    with spam_serve([PYTHON, "-m", "serving.server", *flags], SPAM_SERVING_TOKEN="flags-token"):
        result = wait_for_status("SERVING", *flags, SPAM_SERVING_TOKEN="flags-token")
        assert result.returncode == 0, result.stdout + result.stderr
        # Flags win over the environment, as in spam-serve: a wrong port in it changes nothing.
        assert healthcheck("serving", *flags, SPAM_SERVING_PORT="1").returncode == 0
        # Without the TLS flags the same port answers nothing a plaintext check accepts.
        plain = healthcheck("serving", "--port", port)
        assert plain.returncode == 1 and plain.stdout.startswith("serving: UNAVAILABLE"), plain.stdout
    gone = healthcheck("serving", *flags)
    assert gone.returncode == 1 and "UNAVAILABLE" in gone.stdout


def test_flags_spam_serve_does_not_know_are_reported():
    result = healthcheck("serving", "--no-such-flag")
    assert result.returncode == 1
    assert result.stdout.strip() == "serving: spam-serve flags not understood: --no-such-flag"
    assert "--no-such-flag" in result.stderr  # argparse says which


def test_the_role_is_required_and_checked():
    for args, said in (((), "no role given"), (("nonsense",), "unknown role 'nonsense'")):
        result = healthcheck(*args)
        assert result.returncode == 1 and result.stdout == ""
        assert f"spam-healthcheck: {said}: use spam-healthcheck ROLE or set SPAM_ROLE" in result.stderr


def test_the_role_can_come_from_spam_role(decoys):
    # The image's HEALTHCHECK runs `spam-healthcheck` with SPAM_ROLE=serving and the server's environment.
    result = healthcheck(SPAM_ROLE="serving", SPAM_SERVING_PORT=str(decoys["serving"]))
    assert result.returncode == 0 and result.stdout.strip() == "serving: SERVING"


def test_other_roles_refuse_flags_instead_of_ignoring_them():
    result = healthcheck("mlflow", "--port", "5001")
    assert result.returncode == 1
    assert result.stdout.strip() == "mlflow: flags are for the serving role only; set the mlflow service's port in its environment"


def test_other_roles_dial_the_address_their_service_reads_from_the_environment(tmp_path):
    """mlflow and webserver checks use MLFLOW_HOST/_PORT and DAGSTER_WEBSERVER_HOST/_PORT, as `mlflow
    server` and `dagster-webserver` do: shown with a real HTTP server on 127.0.0.1 and a free port,
    answering 200 on both paths."""
    (tmp_path / "health").write_text("OK")
    (tmp_path / "server_info").write_text("{}")
    port = free_port()
    server = subprocess.Popen(
        [PYTHON, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(lambda: healthcheck("mlflow", MLFLOW_PORT=str(port)).returncode == 0, timeout=30, interval=0.2,
                   message="the HTTP server")  # fmt: skip
        assert healthcheck("mlflow", MLFLOW_PORT=str(port)).stdout.strip() == "mlflow: HTTP 200"
        assert healthcheck("webserver", DAGSTER_WEBSERVER_PORT=str(port)).stdout.strip() == "webserver: HTTP 200"
        everywhere = healthcheck("mlflow", MLFLOW_HOST="0.0.0.0", MLFLOW_PORT=str(port))
        assert everywhere.stdout.strip() == "mlflow: HTTP 200"
        # 127.0.0.2 is loopback too, but the server listens on 127.0.0.1 only: the host is honoured.
        elsewhere = healthcheck("webserver", DAGSTER_WEBSERVER_HOST="127.0.0.2", DAGSTER_WEBSERVER_PORT=str(port))
        assert elsewhere.returncode == 1 and "refused" in elsewhere.stdout.lower()
    finally:
        server.terminate()
        server.wait(timeout=30)
    down = healthcheck("mlflow", MLFLOW_PORT=str(port))
    assert down.returncode == 1 and "refused" in down.stdout.lower()


def test_the_code_role_asks_for_the_dagster_api_where_its_environment_says(decoys):
    # A spam-serve answers health checks but has no "DagsterApi" service: NOT_FOUND, not
    # UNAVAILABLE, shows the check reached the port in DAGSTER_CODE_SERVER_PORT and asked for it.
    port = str(decoys["serving"])
    result = healthcheck("code", DAGSTER_CODE_SERVER_HOST="0.0.0.0", DAGSTER_CODE_SERVER_PORT=port)
    assert result.returncode == 1 and result.stdout.startswith("code: NOT_FOUND"), result.stdout
