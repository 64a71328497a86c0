"""`spam-platform status` shows what a server would serve: the champion through the server's own checks, else the last good model."""

from __future__ import annotations

import grpc
import pytest
from serving_fixtures import _build_store, running_server, wait_until

from serving.generated.spam.v1 import classifier_pb2 as pb
from serving.generated.spam.v1 import classifier_pb2_grpc as pb_grpc
from spam_assets import cli
from spam_assets.model.registry import Registry
from spam_assets.model.tags import TAG_MODEL_SHA256
from spam_assets.settings import MODEL_NAME

BAD_CHECKSUM = "0" * 64


@pytest.fixture(scope="module")
def platform_store(tmp_path_factory):
    """A store of its own: status reads the platform's model name, which other tests' stores share."""
    return _build_store(tmp_path_factory.mktemp("status-mlflow"))


@pytest.fixture
def status(platform_store, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPAM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", platform_store.uri)

    def run() -> dict[str, str]:
        assert cli.main(["status"]) == 0
        lines = capsys.readouterr().out.splitlines()
        return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in lines)}

    return run


def test_status_names_the_last_good_model_when_the_champion_is_refused(platform_store, status):
    registry = Registry(platform_store.uri, MODEL_NAME)
    good_sha = registry.client.get_model_version(MODEL_NAME, "2").tags[TAG_MODEL_SHA256]
    registry.promote("1", "first")
    assert status()["serves"].startswith("v1 tfidf_nb spam_f1=")
    assert status()["serves"].endswith("scorer lean (passes the server's checks)")

    registry.promote("2", "second")
    registry.client.set_model_version_tag(MODEL_NAME, "2", TAG_MODEL_SHA256, BAD_CHECKSUM)
    shown = status()
    assert shown["champion"].startswith("v2 ") and shown["champion"].endswith("REFUSED by the server's checks")
    assert "nan" not in shown["champion"]
    assert shown["serves"].startswith("v1 tfidf_nb spam_f1=")
    assert "champion version 2 refused: model file checksum mismatch" in shown["serves"]
    assert "serving version 1, the last good model" in shown["serves"]
    # ... and it is what a server starting now does serve.
    with running_server(platform_store, MODEL_NAME) as srv, grpc.insecure_channel(srv.target) as channel:
        wait_until(lambda: srv.watcher.current is not None, timeout=30, message="a model to serve")
        assert pb_grpc.ClassifierStub(channel).GetChampion(pb.GetChampionRequest(), timeout=5).version == "1"

    registry.client.set_model_version_tag(MODEL_NAME, "1", TAG_MODEL_SHA256, BAD_CHECKSUM)
    shown = status()
    assert shown["serves"].startswith("NOTHING, a server starting now stays NOT_SERVING")
    assert "no last good model passed either (tried version 1)" in shown["serves"]

    registry.client.set_model_version_tag(MODEL_NAME, "2", TAG_MODEL_SHA256, good_sha)
    shown = status()
    assert not shown["champion"].endswith("REFUSED by the server's checks")
    assert shown["serves"].startswith("v2 ") and shown["serves"].endswith("(passes the server's checks)")


def test_status_says_a_champion_with_a_garbled_operating_point_is_refused(platform_store, status):
    from spam_assets.model.tags import TAG_OPERATING_THRESHOLD

    registry = Registry(platform_store.uri, MODEL_NAME)
    for version in ("1", "2", "3"):  # whatever the test before left: good files, no operating point
        registry.client.delete_model_version_tag(MODEL_NAME, version, TAG_MODEL_SHA256)
    registry.promote("1", "good")
    registry.promote("2", "garbled operating point")
    registry.client.set_model_version_tag(MODEL_NAME, "2", TAG_OPERATING_THRESHOLD, "1.5")
    shown = status()
    assert shown["champion"].startswith("v2 REFUSED: tag operating_threshold='1.5' is not a probability")
    assert shown["serves"].startswith("v1 tfidf_nb spam_f1=")
    assert "champion version 2 refused: tag operating_threshold='1.5'" in shown["serves"]
