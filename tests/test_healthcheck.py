"""deploy/healthcheck.py's serving check against a real server: plaintext, TLS and bearer token.

The script runs as the container runs it, in its own interpreter. It reads
the running spam-serve's flags and environment from /proc; with none in
sight, its own SPAM_SERVING_* variables (most tests here: their servers run
inside the test process).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess

import pytest
from serving_fixtures import PROJECT_ROOT, PYTHON, free_port, model_store, running_server, self_signed_cert, wait_until  # noqa: F401

import serving.auth

SCRIPT = PROJECT_ROOT / "deploy" / "healthcheck.py"


def healthcheck(**env: str) -> subprocess.CompletedProcess:
    """`spam-healthcheck serving` with only `env` for SPAM_SERVING_* settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPAM_SERVING_")}
    return subprocess.run(
        [PYTHON, str(SCRIPT), "serving"],
        capture_output=True, text=True, timeout=30, cwd=PROJECT_ROOT, env={**clean, **env},
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
    result = healthcheck(SPAM_SERVING_PORT=str(plain_server.port))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "serving: SERVING"


def test_server_without_a_champion_is_not_serving(model_store):
    registry = model_store.clone("healthcheck-empty", [model_store.good[0]])  # no alias set
    with running_server(model_store, registry.model_name) as running:
        result = healthcheck(SPAM_SERVING_PORT=str(running.port))
    assert result.returncode == 1
    assert result.stdout.strip() == "serving: NOT_SERVING"


def test_tls_server_is_serving_with_the_servers_tls_settings(tls_server):
    running, cert, key = tls_server
    result = healthcheck(
        SPAM_SERVING_PORT=str(running.port), SPAM_SERVING_TLS_CERT=str(cert), SPAM_SERVING_TLS_KEY=str(key)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "serving: SERVING"


def test_tls_server_fails_a_plaintext_check(tls_server):
    running, _, _ = tls_server
    result = healthcheck(SPAM_SERVING_PORT=str(running.port))
    assert result.returncode == 1
    assert result.stdout.startswith("serving: UNAVAILABLE")


def test_tls_check_verifies_the_certificate(tls_server, tmp_path):
    """Trusting some other certificate must fail: the check really verifies the server."""
    running, _, _ = tls_server
    other_cert, other_key = self_signed_cert(tmp_path)
    result = healthcheck(
        SPAM_SERVING_PORT=str(running.port), SPAM_SERVING_TLS_CERT=str(other_cert), SPAM_SERVING_TLS_KEY=str(other_key)
    )
    assert result.returncode == 1
    assert result.stdout.startswith("serving: UNAVAILABLE")


def test_token_server_is_serving_and_the_token_is_sent(plain_server, monkeypatch):
    # Health is exempt from the token, so `exit 0` alone would not show the token
    # goes out; without the exemption only a check that sends it passes.
    monkeypatch.setattr(serving.auth, "EXEMPT_PREFIXES", ())
    port = str(plain_server.port)
    ok = healthcheck(SPAM_SERVING_PORT=port, SPAM_SERVING_TOKEN="hc-token")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.strip() == "serving: SERVING"
    wrong = healthcheck(SPAM_SERVING_PORT=port, SPAM_SERVING_TOKEN="not-the-token")
    assert (wrong.returncode, wrong.stdout.split(":")[1].strip()) == (1, "UNAUTHENTICATED")
    missing = healthcheck(SPAM_SERVING_PORT=port)
    assert missing.returncode == 1 and "UNAUTHENTICATED" in missing.stdout


def test_token_server_is_serving_with_health_exempt(plain_server):
    result = healthcheck(SPAM_SERVING_PORT=str(plain_server.port), SPAM_SERVING_TOKEN="hc-token")
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
    result = healthcheck(SPAM_SERVING_PORT="1", SPAM_SERVING_TLS_CERT="/nonexistent/cert.pem")
    assert result.returncode == 1
    assert result.stdout.startswith("serving: bad serving configuration")
    result = healthcheck(
        SPAM_SERVING_PORT="1", SPAM_SERVING_TLS_CERT="/nonexistent/cert.pem", SPAM_SERVING_TLS_KEY="/nonexistent/k.pem"
    )
    assert result.returncode == 1
    assert result.stdout.startswith("serving: cannot read TLS certificate")


def test_serve_args_finds_spam_serve_command_lines():
    hc = load_script()
    assert hc.serve_args(["/usr/local/bin/python", "/usr/local/bin/spam-serve", "--port", "1"]) == ["--port", "1"]
    assert hc.serve_args(["python3", "-m", "serving.server", "--host", "0.0.0.0"]) == ["--host", "0.0.0.0"]
    assert hc.serve_args(["python3", "/usr/local/bin/spam-healthcheck", "serving"]) is None
    assert hc.serve_args(["python3", "-m"]) is None
    assert hc.serving_target("0.0.0.0", 5) == "127.0.0.1:5" and hc.serving_target("::1", 5) == "[::1]:5"


def test_a_server_configured_by_flags_alone_is_checked_with_its_flags(model_store, champion_model, tmp_path):
    """The healthcheck reads the port, TLS certificate and token off the spam-serve process itself."""
    cert, key = self_signed_cert(tmp_path)
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPAM_SERVING_")}
    flags = ["--port", str(port), "--tracking-uri", model_store.uri, "--model-name", champion_model,
             "--tls-cert", str(cert), "--tls-key", str(key), "--poll-interval", "0.2"]  # fmt: skip
    server = subprocess.Popen(
        [PYTHON, "-m", "serving.server", *flags],
        cwd=PROJECT_ROOT, env={**clean, "SPAM_SERVING_TOKEN": "flags-token", "MLFLOW_DISABLE_TELEMETRY": "true"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        # Its own environment points elsewhere (a wrong port, no TLS): the server's settings win.
        result = wait_until(
            lambda: (r := healthcheck(SPAM_SERVING_PORT="1")).returncode == 0 and r,
            timeout=90, interval=0.5, message="the flag-configured server to be SERVING",
        )  # fmt: skip
        assert result.stdout.strip() == "serving: SERVING"
    finally:
        server.terminate()
        server.wait(timeout=30)
    result = healthcheck(SPAM_SERVING_PORT=str(port))  # gone: falls back to its own env, and finds nothing there
    assert result.returncode == 1 and "UNAVAILABLE" in result.stdout
