"""The automation as a whole: it loads, it is on by default, eager really fires, one decision at a time,
and the feed schedule."""

import json

import dagster as dg
import pytest

from spam_assets.definitions import defs as load_defs
from spam_assets.defs.assets.ingestion import raw_sample
from spam_assets.defs.automation.feed import daily_feed, feed_job
from spam_assets.defs.automation.settings import (
    notify_interval,
    rollout_interval,
    sensor_interval,
    settle_seconds,
    traffic_interval,
)
from spam_assets.defs.partitions import batch_partitions
from spam_assets.defs.resources import PlatformStore
from spam_assets.intake import register, stage
from spam_assets.runner import graph_assets
from tests.synthetic import sms_messages, write_jsonl, write_sms_file

defs = load_defs()


def test_definitions_load_and_everything_runs_without_a_click():
    dg.Definitions.validate_loadable(defs)
    sensors = {s.name: s for s in defs.sensors}
    assert set(sensors) == {
        "inbox_sensor", "refresh_on_new_batch", "retrain_on_drift", "notify_champion_decision", "notify_run_failure",
        "release_dead_training", "retry_dead_training", "judge_unjudged_corpus", "traffic_sensor", "retrain_on_traffic",
        "feedback_sensor", "rollout_sensor", "notify_rollout",
    }
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in sensors.values())
    # The drop-to-champion path, a retry on it included.
    loop = {"inbox_sensor", "refresh_on_new_batch", "retrain_on_drift", "retry_dead_training", "judge_unjudged_corpus",
            "retrain_on_traffic"}  # fmt: skip
    assert all(sensors[name].minimum_interval_seconds == sensor_interval() for name in loop)
    assert sensors.pop("traffic_sensor").minimum_interval_seconds == traffic_interval()  # segments close every few minutes
    assert sensors.pop("feedback_sensor").minimum_interval_seconds == 300  # reports wait for a batch anyway
    assert sensors.pop("rollout_sensor").minimum_interval_seconds == rollout_interval()  # evidence comes with segments
    assert all(s.minimum_interval_seconds == notify_interval() for name, s in sensors.items() if name not in loop)
    assert all(s.default_status == dg.DefaultScheduleStatus.RUNNING for s in defs.schedules)
    assert {s.name for s in defs.schedules} == {"daily_feed", "periodic_retrain"}


def test_intervals_come_from_the_environment(monkeypatch):
    for name in ("SPAM_SENSOR_INTERVAL_SECONDS", "SPAM_NOTIFY_INTERVAL_SECONDS", "SPAM_INBOX_SETTLE_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    assert (sensor_interval(), notify_interval(), settle_seconds()) == (4, 15, 3)  # the defaults
    monkeypatch.setenv("SPAM_SENSOR_INTERVAL_SECONDS", "15")
    monkeypatch.setenv("SPAM_INBOX_SETTLE_SECONDS", "0.5")
    assert (sensor_interval(), settle_seconds()) == (15, 0.5)
    monkeypatch.setenv("SPAM_SENSOR_INTERVAL_SECONDS", "soon")
    with pytest.raises(ValueError, match="SPAM_SENSOR_INTERVAL_SECONDS"):
        sensor_interval()


# A batch refreshes corpus and drift; training and the decision ride along in
# the same run and train only if that run's verdict asks (test_graph).
REFRESH = ("cleaned_corpus", "drift_statistics", "trained_model", "champion_decision")


def _evaluate(instance, cursor=None):
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    keys = [dg.AssetKey(k) for k in REFRESH]
    requested = {k.to_user_string() for k in keys if result.get_requested_partitions(k)}
    return requested, result.cursor


def _batch(instance, path) -> str:
    batch_id = stage(path, PlatformStore().batches())
    register(instance, batch_id)
    return batch_id


def test_eager_refreshes_corpus_and_drift_when_a_batch_lands(instance, resources, tmp_path):
    """eager() on an unpartitioned asset over dynamic partitions (AllPartitionMapping): it must fire
    once per landed batch, wait while a batch is registered but not judged, and not fire twice."""
    first = _batch(instance, write_jsonl(sms_messages(60, seed=1), tmp_path / "first.jsonl"))
    dg.materialize([raw_sample], partition_key=first, instance=instance, resources=resources)
    # Conditions read only the event log: stand-ins record "corpus and drift are up to date".
    stand_ins = [dg.asset(name=name)(lambda: None) for name in ("cleaned_corpus", "drift_statistics")]
    assert dg.materialize(stand_ins, instance=instance).success
    requested, cursor = _evaluate(instance)
    assert requested == set()  # nothing new since the first evaluation

    second = _batch(instance, write_jsonl(sms_messages(60, seed=2), tmp_path / "second.jsonl"))
    requested, cursor = _evaluate(instance, cursor)
    assert requested == set()  # registered, not yet judged: wait (any_deps_missing)

    dg.materialize([raw_sample], partition_key=second, instance=instance, resources=resources)
    requested, cursor = _evaluate(instance, cursor)
    assert requested == set(REFRESH)  # all, in one tick
    requested, cursor = _evaluate(instance, cursor)
    assert requested == set()  # handled

    # A partition whose run died before materialising blocks eager; the inbox sensor drops such
    # partitions for exactly this reason (test_automation_inbox), and then the loop moves again.
    stuck = _batch(instance, write_jsonl(sms_messages(60, seed=3), tmp_path / "stuck.jsonl"))
    third = _batch(instance, write_jsonl(sms_messages(60, seed=4), tmp_path / "third.jsonl"))
    dg.materialize([raw_sample], partition_key=third, instance=instance, resources=resources)
    requested, cursor = _evaluate(instance, cursor)
    assert requested == set()
    instance.delete_dynamic_partition(batch_partitions.name, stuck)
    requested, cursor = _evaluate(instance, cursor)
    assert requested == set(REFRESH)


def test_training_does_not_ride_along_beside_a_run_already_training(instance, resources, tmp_path):
    """rides_with: requested with drift_statistics, but never while another run is computing it."""
    first = _batch(instance, write_jsonl(sms_messages(60, seed=1), tmp_path / "first.jsonl"))
    dg.materialize([raw_sample], partition_key=first, instance=instance, resources=resources)
    _, cursor = _evaluate(instance)
    # A retrain in flight: it has planned trained_model and champion_decision, and started.
    retrain = instance.create_run_for_job(defs.resolve_job_def("retrain"))
    instance.report_dagster_event(dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, "retrain"), retrain.run_id)
    assert instance.get_run_by_id(retrain.run_id).status == dg.DagsterRunStatus.STARTED

    second = _batch(instance, write_jsonl(sms_messages(60, seed=2), tmp_path / "second.jsonl"))
    dg.materialize([raw_sample], partition_key=second, instance=instance, resources=resources)
    requested, cursor = _evaluate(instance, cursor)
    assert requested == {"cleaned_corpus", "drift_statistics"}  # the retrain_on_drift sensor takes over from here

    stand_ins = [dg.asset(name=name)(lambda: None) for name in ("cleaned_corpus", "drift_statistics")]
    assert dg.materialize(stand_ins, instance=instance).success  # the refresh run that was requested
    instance.report_run_canceled(retrain)
    requested, cursor = _evaluate(instance, cursor)
    assert requested == set()

    third = _batch(instance, write_jsonl(sms_messages(60, seed=3), tmp_path / "third.jsonl"))
    dg.materialize([raw_sample], partition_key=third, instance=instance, resources=resources)
    requested, _ = _evaluate(instance, cursor)
    assert requested == set(REFRESH)  # nothing in flight: training rides along again


def test_refresh_sensor_targets_monitoring_and_the_assets_that_ride_along():
    sensor = next(s for s in defs.sensors if s.name == "refresh_on_new_batch")
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    keys = sensor.asset_selection.resolve(defs.resolve_asset_graph())
    assert {k.to_user_string() for k in keys} == set(REFRESH)


def test_platform_instance_allows_one_training_and_one_decision_at_a_time(tmp_path, monkeypatch):
    """The dagster.yaml `spam-platform` writes gives the trained_model and champion_decision pools one slot each."""
    from spam_assets.instance import prepare_home

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    dagster_home = prepare_home(tmp_path / "platform")
    pools = {a.key.to_user_string(): a.op.pool for a in graph_assets()}
    assert pools["trained_model"] == "trained_model" and pools["champion_decision"] == "champion_decision"
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        for pool in ("trained_model", "champion_decision"):
            instance.event_log_storage.initialize_concurrency_limit_to_default(pool)  # what the first claim does
            assert instance.event_log_storage.get_concurrency_info(pool).slot_count == 1


def test_feed_schedule_skips_with_instructions_when_unconfigured(instance, monkeypatch):
    monkeypatch.delenv("SPAM_FEED_SOURCE", raising=False)
    result = daily_feed.evaluate_tick(dg.build_schedule_context(instance=instance))
    assert not result.run_requests
    assert "SPAM_FEED_SOURCE=" in result.skip_message and "SPAM_FEED_ROWS" in result.skip_message


def _run_feed(request, instance):
    return feed_job.execute_in_process(run_config=request.run_config, instance=instance, resources={"store": PlatformStore()})


def test_feed_schedule_puts_the_next_unseen_rows_into_the_inbox(instance, home, tmp_path, monkeypatch):
    source = write_sms_file(sms_messages(250, seed=5), tmp_path / "large.txt")
    monkeypatch.setenv("SPAM_FEED_SOURCE", str(source))
    monkeypatch.setenv("SPAM_FEED_ROWS", "100")
    inbox = home / "inbox"
    texts = []
    for expected in (100, 100, 50):
        (request,) = daily_feed.evaluate_tick(dg.build_schedule_context(instance=instance)).run_requests
        assert request.run_config["ops"]["pull_feed_batch"]["config"]["rows"] == 100
        assert _run_feed(request, instance).success
        newest = max(inbox.glob("feed-*.jsonl"), key=lambda p: p.stat().st_mtime_ns)
        lines = newest.read_text(encoding="utf-8").splitlines()
        assert len(lines) == expected
        texts += lines
    assert len(set(texts)) == 250  # never the same row twice
    assert {json.loads(line)["source"] for line in texts} == {"sms"}  # the rows' source name, read back as such
    assert not [p for p in inbox.iterdir() if p.name.startswith(".")]  # no temp files left behind
    # Exhausted: the run succeeds and writes nothing.
    (request,) = daily_feed.evaluate_tick(dg.build_schedule_context(instance=instance)).run_requests
    assert _run_feed(request, instance).success
    assert len(list(inbox.glob("feed-*.jsonl"))) == 3
