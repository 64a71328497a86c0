"""`spam-serve`'s main(): bounded MLflow HTTP retries unless the user chose otherwise."""

from __future__ import annotations

import os

import pytest

from serving import server

NAMES = tuple(server.MLFLOW_HTTP_DEFAULTS)


def test_defaults_fill_only_what_is_unset():
    environ = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}
    server.bounded_mlflow_http_defaults(environ)
    assert environ == {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
    }


def test_defaults_parse_as_mlflow_reads_them():
    from mlflow.environment_variables import (
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES,
        MLFLOW_HTTP_REQUEST_TIMEOUT,
    )

    for variable in (MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR, MLFLOW_HTTP_REQUEST_TIMEOUT):
        value = variable.type(server.MLFLOW_HTTP_DEFAULTS[variable.name])
        assert 0 < value < variable.default, variable.name


@pytest.mark.parametrize("preset", [{}, {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5"}])
def test_main_sets_them_before_anything_else(monkeypatch, preset):
    for name in NAMES:  # setenv first so monkeypatch removes what main() adds
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)
    for name, value in preset.items():
        monkeypatch.setenv(name, value)
    assert server.main(["--tls-cert", "cert.pem"]) == 2  # a config error: returns before starting
    assert {name: os.environ.get(name) for name in NAMES} == {**server.MLFLOW_HTTP_DEFAULTS, **preset}
