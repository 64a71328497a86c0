"""The generated instance config turns run monitoring on, and reaches homes made by older releases."""

from pathlib import Path

import dagster as dg
import pytest
import yaml

from spam_assets.instance import DAGSTER_YAML, PREVIOUS_DAGSTER_YAMLS, prepare_home

DEPLOY_YAML = Path(__file__).parents[1] / "deploy" / "dagster.yaml"


@pytest.fixture
def fresh_env(monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_generated_instance_monitors_runs_and_frees_the_slots_of_dead_ones(tmp_path, fresh_env):
    dagster_home = prepare_home(tmp_path / "platform")
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_max_resume_run_attempts == 0  # nothing to resume in-process
        assert 0 < instance.run_monitoring_start_timeout_seconds <= 300
        assert 0 < instance.run_monitoring_cancel_timeout_seconds <= 300
        assert 0 < instance.run_monitoring_poll_interval_seconds <= 30
        assert 0 < instance.run_monitoring_max_runtime_seconds
        freed_after = instance.run_monitoring_settings["free_slots_after_run_end_seconds"]
        assert 0 < freed_after <= 60
        assert instance.event_log_storage.supports_global_concurrency_limits  # what frees them


def test_deployment_instance_has_the_same_run_monitoring(tmp_path):
    generated = yaml.safe_load(DAGSTER_YAML)
    deployed = yaml.safe_load(DEPLOY_YAML.read_text())
    assert deployed["run_monitoring"] == generated["run_monitoring"]
    assert deployed["concurrency"] == generated["concurrency"]


@pytest.mark.parametrize("older", PREVIOUS_DAGSTER_YAMLS)
def test_an_unedited_older_generated_config_is_upgraded(tmp_path, fresh_env, older):
    dagster_home = tmp_path / "platform" / "dagster"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text(older)
    assert "run_monitoring" not in older
    prepare_home(tmp_path / "platform")
    assert (dagster_home / "dagster.yaml").read_text() == DAGSTER_YAML
    assert not list(dagster_home.glob(".*.tmp"))


def test_an_edited_config_is_never_replaced(tmp_path, fresh_env):
    dagster_home = tmp_path / "platform" / "dagster"
    dagster_home.mkdir(parents=True)
    edited = PREVIOUS_DAGSTER_YAMLS[0].replace("max_concurrent_runs: 4", "max_concurrent_runs: 8")
    (dagster_home / "dagster.yaml").write_text(edited)
    prepare_home(tmp_path / "platform")
    assert (dagster_home / "dagster.yaml").read_text() == edited


def test_a_current_config_is_left_alone(tmp_path, fresh_env):
    dagster_home = prepare_home(tmp_path / "platform")
    config = dagster_home / "dagster.yaml"
    before = config.stat().st_mtime_ns
    prepare_home(tmp_path / "platform")
    assert config.stat().st_mtime_ns == before
