"""The container deployment: its files read as data, and end to end through scripts/compose_smoke.sh.

The first tests read Dockerfile and docker-compose.yml and hold what keeps
each health check aimed at its own service: every role's address lives in
the service's environment, which the service and `spam-healthcheck` both read.

The smoke test builds the image, starts docker-compose.yml, materialises the
graph, classifies through the published gRPC port, checks the restart policy
and the inbox loop, then tears everything down. Slow (minutes) and needs a
container engine, so it runs only when selected: `pytest -m container`. It
skips, saying why, when no engine answers or the SMS corpus is not there.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "compose_smoke.sh"

# What each role's command starts, and the variables its CLI reads its address
# from (the same ones deploy/healthcheck.py reads; serving: serving.config).
ROLE_COMMANDS = {
    "serving": ["spam-serve"],
    "code": ["dagster", "code-server", "start"],
    "webserver": ["dagster-webserver"],
    "daemon": ["dagster-daemon", "run"],
    "mlflow": ["mlflow", "server"],
}
ADDRESS_ENV = {
    "serving": ("SPAM_SERVING_HOST", "SPAM_SERVING_PORT"),
    "code": ("DAGSTER_CODE_SERVER_HOST", "DAGSTER_CODE_SERVER_PORT"),
    "webserver": ("DAGSTER_WEBSERVER_HOST", "DAGSTER_WEBSERVER_PORT"),
    "mlflow": ("MLFLOW_HOST", "MLFLOW_PORT"),
}
ADDRESS_FLAGS = re.compile(r"^(-h|-p|--host|--port)(=.*)?$")


def app_services() -> dict[str, dict]:
    """The services of docker-compose.yml that run the project's image."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    return {name: svc for name, svc in services.items() if svc.get("image", "").startswith("${SPAM_IMAGE")}


def dockerfile_instruction(name: str) -> str:
    """The argument of the last `name` instruction in the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    return [line.split(None, 1)[1] for line in text.splitlines() if line.startswith(name + " ")][-1]


def test_every_app_service_names_its_role_and_checks_it_by_environment_alone():
    services = app_services()
    assert set(services) == {"mlflow", "dagster-code", "dagster-webserver", "dagster-daemon", "serving"}
    for name, service in services.items():
        role = service["environment"].get("SPAM_ROLE")
        assert role in ROLE_COMMANDS, f"{name}: SPAM_ROLE {role!r}"
        command = service["command"]
        assert command[: len(ROLE_COMMANDS[role])] == ROLE_COMMANDS[role], f"{name} runs {command}, not a {role}"
        # The check gets no flags: it reads the same environment as the service.
        assert service["healthcheck"]["test"] == ["CMD-SHELL", "spam-healthcheck"], name
        if role in ADDRESS_ENV:
            flags = [part for part in command if ADDRESS_FLAGS.match(part)]
            assert not flags, f"{name} sets its address by flag ({flags}), where the health check cannot see it"
            host_var, port_var = ADDRESS_ENV[role]
            assert service["environment"][host_var] == "0.0.0.0", f"{name}: {host_var}"
            published = {mapping.rsplit(":", 1)[1] for mapping in service.get("ports", [])}
            # spam-serve also publishes its Prometheus endpoint, set the same way.
            metrics = {service["environment"]["SPAM_SERVING_METRICS_PORT"]} if role == "serving" else set()
            assert not published or published == {service["environment"][port_var]} | metrics, f"{name}: {published}"


def test_every_service_declares_its_health_check_in_compose():
    """Podman builds OCI images by default, which drop the Dockerfile's HEALTHCHECK: compose must carry them."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    missing = [name for name, service in services.items() if not service.get("healthcheck", {}).get("test")]
    assert not missing, f"no healthcheck in docker-compose.yml for {missing}"


def test_services_that_stop_their_process_group_stop_before_the_engine_kills_them():
    """SPAM_STOP_TIMEOUT (deploy/entrypoint.py) must end before the engine's SIGKILL, with an init to reap orphans."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    grouped = {name: s for name, s in services.items() if "SPAM_STOP_TIMEOUT" in s.get("environment", {})}
    assert "dagster-code" in grouped, "the code server's run workers must hear the stop signal"
    assert "dagster-daemon" in grouped, "the daemon's threads may outlast the engine's 10 s"
    for name, service in grouped.items():
        grace = service.get("stop_grace_period", "10s")  # Docker's default; podman-compose always uses 10 s
        assert float(service["environment"]["SPAM_STOP_TIMEOUT"]) + 1 <= min(float(grace.rstrip("s")), 10), name
        assert service.get("init") is True, f"{name}: an init must reap what the process group leaves"
    int(grouped["dagster-code"]["environment"]["DAGSTER_GRPC_SHUTDOWN_GRACE_PERIOD"])  # Dagster parses it with int()


def test_the_serving_check_reads_the_compose_environment_as_spam_serve_does():
    """serving.config.from_args on the serving service's environment: the port it publishes, no flags left over."""
    from serving.config import from_args

    service = app_services()["serving"]
    assert service["command"] == ["spam-serve"], "every serving setting belongs in the environment"
    environment = {k: v for k, v in service["environment"].items() if "${" not in v}  # drop .env secrets
    config, _ = from_args([], environ=environment)
    container_port, metrics_port = (published.rsplit(":", 1)[1] for published in service["ports"])
    assert config.host == "0.0.0.0" and str(config.port) == container_port
    assert config.metrics_address == "0.0.0.0" and str(config.metrics_port) == metrics_port
    spec = importlib.util.spec_from_file_location("spam_healthcheck", ROOT / "deploy" / "healthcheck.py")
    healthcheck = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(healthcheck)
    assert healthcheck.dial_target(config.host, config.port) == f"127.0.0.1:{container_port}"


def test_the_image_checks_the_role_it_runs_by_default():
    assert json.loads(dockerfile_instruction("CMD")) == ["spam-serve"]
    assert dockerfile_instruction("HEALTHCHECK").endswith('CMD ["spam-healthcheck"]')
    env = dockerfile_instruction("ENV")
    assert "SPAM_ROLE=serving" in env.split() and "SPAM_SERVING_HOST=0.0.0.0" in env.split()


def _engine_problem() -> str | None:
    """Why the smoke test cannot run here, or None."""
    if shutil.which("docker") is None:
        return "no `docker` command (on this machine: run ../shared/container/setup.sh as root)"
    try:
        subprocess.run(["docker", "info"], check=True, capture_output=True, timeout=60)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        return f"the container engine does not answer `docker info`: {error}"
    try:
        subprocess.run(["docker", "compose", "version"], check=True, capture_output=True, timeout=60)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        return f"no `docker compose` (Compose v2 or the podman-compose shim): {error}"
    return None


def _datasets() -> Path:
    return Path(os.environ.get("SPAM_DATASETS", ROOT.parent / "shared" / "datasets")).resolve()


@pytest.mark.container
def test_compose_stack_smoke():
    problem = _engine_problem()
    if problem:
        pytest.skip(f"container smoke: {problem}")
    corpus = _datasets() / "SMSSpamCollection"
    if not corpus.is_file():
        pytest.skip(f"container smoke: no SMS corpus at {corpus} (set SPAM_DATASETS)")
    done = subprocess.run(
        ["bash", str(SCRIPT)],
        cwd=ROOT,
        env={**os.environ, "SPAM_DATASETS": str(_datasets())},
        capture_output=True,
        text=True,
        timeout=int(os.environ.get("SMOKE_PYTEST_TIMEOUT", "2400")),
    )
    print(done.stdout[-20000:])
    assert done.returncode == 0, f"compose_smoke.sh failed ({done.returncode}):\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
    assert "container smoke: PASSED" in done.stdout
