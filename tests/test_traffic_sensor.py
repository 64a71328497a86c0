"""The traffic asset and its sensor on a real Dagster instance, against segments the server's own
writer wrote into the test's platform home (tests/traffic_log.py).

`tick` is one sensor evaluation as the daemon would run it; `materialise` runs
one hour of `traffic` the way a requested run would.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from spam_assets.definitions import defs as load_defs
from spam_assets.defs.assets.traffic import traffic
from spam_assets.defs.automation.settings import traffic_start
from spam_assets.defs.automation.traffic import TRAFFIC_TRIGGER, TrafficCursor, traffic_sensor
from spam_assets.defs.partitions import traffic_hours
from spam_assets.defs.resources import PlatformStore
from spam_assets.defs.run_tags import TRIGGER_TAG
from spam_assets.traffic_tables import SLACK, hour_start, table_path
from tests.traffic_log import hour_of, records, write_segment, written_earlier

DEFS = load_defs()


@pytest.fixture
def log_dir(home: Path) -> Path:
    return home / "predictions"


def key_of(hour: dt.datetime) -> str:
    return traffic_hours.get_partition_key_for_timestamp(hour.timestamp())


def materialise(instance, key: str) -> dict:
    result = dg.materialize([traffic], partition_key=key, instance=instance, resources={"store": PlatformStore()})
    assert result.success
    (event,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def tick(instance, cursor: str | None = None):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, definitions=DEFS, resources={"store": PlatformStore()}
    )
    return traffic_sensor.evaluate_tick(context)


def possible_hours(segment_records: list[dict]) -> set[str]:
    """The hours a request may name for these records: their own, or a neighbour within SLACK of one."""
    out = set()
    for record in segment_records:
        moment = dt.datetime.fromisoformat(record["time"])
        out |= {key_of(hour_start(moment + d)) for d in (-SLACK, dt.timedelta(0), SLACK)}
    return out


# --- the asset ---------------------------------------------------------------------------------------


def test_an_hour_materialises_its_table_with_metadata_a_person_can_read(instance, home, log_dir):
    first = write_segment(log_dir, spam=3, ham=5, version="7")
    second = write_segment(log_dir, spam=2, ham=0, version="8", api="ModelInfer")
    hour = hour_of(records(first)[0])
    expected = [r for s in (first, second) for r in records(s) if hour_of(r) == hour]
    meta = materialise(instance, key_of(hour))

    table = pd.read_parquet(table_path(home / "traffic", hour))
    assert sorted(table["verdict_id"]) == sorted(r["verdict_id"] for r in expected)
    assert meta["verdicts"] == meta["dagster/row_count"] == len(expected)
    assert meta["path"] == str(table_path(home / "traffic", hour))
    assert meta["bad_lines"] == 0 and meta["duplicates_dropped"] == 0
    spam = sum(r["label"] == "spam" for r in expected)
    assert meta["spam_share_predicted"] == pytest.approx(spam / len(expected), abs=1e-4)
    assert "| spam-classifier v7 |" in meta["model_versions"]
    assert "| Classify |" in meta["apis"]
    assert meta["latency_p50_ms"] <= meta["latency_p99_ms"]
    histogram = meta["spam_probability_histogram"]
    assert f"| 0.9-1.0 | {spam} |" in histogram and f"| 0.0-0.1 | {len(expected) - spam} |" in histogram
    preview = meta["preview"].splitlines()
    assert len(preview) == 2 + min(5, len(expected))
    # Texts are shortened to one line with their pipes escaped, so the table stays a table.
    assert all(line.count("|") - line.count("\\|") == 7 for line in preview)
    assert "WINNER! \\| You have won" in meta["preview"] and "…" in meta["preview"]
    assert meta["summary"]["verdicts"] == len(expected)


def test_a_later_segment_rematerialises_the_hour_with_both_and_a_rerun_changes_nothing(instance, home, log_dir):
    first = write_segment(log_dir, spam=1, ham=2)
    hour = hour_of(records(first)[0])
    assert materialise(instance, key_of(hour))["verdicts"] == sum(hour_of(r) == hour for r in records(first))
    second = write_segment(log_dir, spam=2, ham=2)
    expected = sorted(r["verdict_id"] for s in (first, second) for r in records(s) if hour_of(r) == hour)
    meta = materialise(instance, key_of(hour))
    path = table_path(home / "traffic", hour)
    assert meta["verdicts"] == len(expected) and sorted(pd.read_parquet(path)["verdict_id"]) == expected
    before = pd.read_parquet(path)
    materialise(instance, key_of(hour))
    pd.testing.assert_frame_equal(pd.read_parquet(path), before)  # idempotent: the same table


def test_an_hour_without_verdicts_materialises_an_empty_table_and_says_so(instance, home, log_dir):
    write_segment(log_dir, spam=1, ham=1)
    quiet = hour_start(dt.datetime.now(dt.UTC)) - dt.timedelta(hours=6)
    meta = materialise(instance, key_of(quiet))
    assert meta["verdicts"] == 0
    assert "no verdicts in this hour" in meta["note"] and str(log_dir) in meta["note"]
    assert len(pd.read_parquet(table_path(home / "traffic", quiet))) == 0


def test_a_corrupt_line_is_skipped_and_counted_in_the_metadata(instance, log_dir):
    segment = write_segment(log_dir, spam=1, ham=1)
    hour = hour_of(records(segment)[0])
    with segment.open("ab") as file:
        file.write(b'{"verdict_id": "broken", "ti\n')
    meta = materialise(instance, key_of(hour))
    assert meta["bad_lines"] == 1 and meta["verdicts"] == 2
    assert f"`{segment.name}` line 3: not JSON" in meta["bad_lines_detail"]


# --- the sensor --------------------------------------------------------------------------------------


def test_without_a_log_folder_the_sensor_says_which_folder_it_watches(instance, log_dir):
    result = tick(instance)
    assert not result.run_requests
    assert str(log_dir) in result.skip_message and "--prediction-log" in result.skip_message


def test_the_sensor_requests_each_hour_once_per_new_set_of_segments(instance, home, log_dir):
    old = written_earlier(write_segment(log_dir, spam=2, ham=2), hours=3)
    now = write_segment(log_dir, spam=1, ham=1)
    first = tick(instance)
    keys = [r.partition_key for r in first.run_requests]
    assert len(keys) == len(set(keys))  # one run per hour
    own = {key_of(hour_of(r)) for s in (old, now) for r in records(s)}
    assert own <= set(keys) <= possible_hours(records(old) + records(now))
    assert all(r.tags[TRIGGER_TAG] == TRAFFIC_TRIGGER for r in first.run_requests)

    again = tick(instance, first.cursor)  # nothing new: nothing requested
    assert not again.run_requests and "no new published segment" in again.skip_message
    assert tick(instance, None).run_requests[0].run_key == first.run_requests[0].run_key  # same segments, same key

    later = write_segment(log_dir, spam=0, ham=3)
    third = tick(instance, again.cursor)
    assert {key_of(hour_of(r)) for r in records(later)} <= {r.partition_key for r in third.run_requests}
    assert set(r.partition_key for r in third.run_requests) <= possible_hours(records(later))
    old_keys = {r.run_key for r in first.run_requests}
    assert not old_keys & {r.run_key for r in third.run_requests}  # the current hour again, under a new key
    assert len(TrafficCursor.load(third.cursor).seen) == 3  # every segment written within the last day

    # The runs the sensor asked for, run: every verdict in the table of its hour.
    for request in first.run_requests + third.run_requests:
        materialise(instance, request.partition_key)
    for segment in (old, now, later):
        for record in records(segment):
            table = pd.read_parquet(table_path(home / "traffic", hour_of(record)))
            assert record["verdict_id"] in set(table["verdict_id"])


def test_a_segment_older_than_the_partitions_is_not_requested(instance, log_dir):
    start = traffic_hours.get_first_partition_window().start
    hours_back = int((dt.datetime.now(dt.UTC) - start) / dt.timedelta(hours=1)) + 2
    segment = written_earlier(write_segment(log_dir, spam=1, ham=0), hours=hours_back)
    # A sensor that last ticked then (a first tick would only look back a day).
    cursor = TrafficCursor(tick=segment.stat().st_mtime + 60).dump()
    result = tick(instance, cursor)
    assert not result.run_requests and "no new published segment" in result.skip_message


@pytest.mark.parametrize("raw, start", [("2026-10-05", "2026-10-05-00:00"), ("2026-10-05-07:30", "2026-10-05-07:00")])
def test_the_first_hour_comes_from_the_environment(monkeypatch, raw, start):
    monkeypatch.setenv("SPAM_TRAFFIC_START", raw)
    assert traffic_start() == start


def test_a_first_hour_that_is_not_a_time_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("SPAM_TRAFFIC_START", "last tuesday")
    with pytest.raises(ValueError, match="SPAM_TRAFFIC_START='last tuesday' is not an hour like"):
        traffic_start()
