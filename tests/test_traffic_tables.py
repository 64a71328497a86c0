"""Compacting the prediction log into hourly tables (spam_assets/traffic_tables.py), on segments the
server's own writer wrote (tests/traffic_log.py); no Dagster here."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from spam_assets.traffic_tables import (
    SLACK,
    Segment,
    compact_hour,
    hour_start,
    published_segments,
    summary,
    table_path,
    write_table,
)
from tests.traffic_log import hour_of, records, write_segment, written_earlier

UTC = dt.UTC


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "predictions"


def test_each_record_lands_in_the_table_of_its_own_hour_typed(log_dir):
    old = written_earlier(write_segment(log_dir, spam=2, ham=3), hours=2)
    recent = write_segment(log_dir, spam=1, ham=4, version="8", api="ModelInfer")
    by_hour: dict[dt.datetime, list[dict]] = {}
    for segment in (old, recent):
        for record in records(segment):
            by_hour.setdefault(hour_of(record), []).append(record)
    assert len(by_hour) >= 2  # two hours apart, whatever the clock says

    for hour, expected in by_hour.items():
        result = compact_hour(log_dir, hour)
        frame = result.table.to_pandas()
        assert sorted(frame["verdict_id"]) == sorted(r["verdict_id"] for r in expected)
        assert (frame["time"].dt.floor("h") == pd.Timestamp(hour)).all()
        assert result.bad_lines == [] and result.duplicates == 0
    hour = hour_of(records(old)[0])
    assert compact_hour(log_dir, hour).segments_read == [old.name]  # the newer segment cannot hold it: not read

    frame = compact_hour(log_dir, hour_of(records(recent)[0])).table.to_pandas()
    assert str(frame["time"].dtype) == "datetime64[ms, UTC]"
    assert str(frame["spam_probability"].dtype) == "float64" and str(frame["latency_ms"].dtype) == "float64"
    assert set(frame["model_version"]) == {"8"} and set(frame["api"]) == {"ModelInfer"}
    assert list(frame["time"]) == sorted(frame["time"])
    assert set(frame["segment"]) == {recent.name}


def test_a_broken_line_is_skipped_counted_and_named_with_its_line(log_dir):
    segment = write_segment(log_dir, spam=1, ham=2)
    good = records(segment)
    time_now = good[0]["time"]
    with segment.open("ab") as file:  # what a corrupt or hostile file could hold
        file.write(b'{"verdict_id": "x1", "time": "' + time_now.encode() + b'", "label": "sp\n')  # cut mid-record
        file.write(b"[1, 2, 3]\n")
        file.write(b"\n")
        file.write(b'{"verdict_id": "x2", "time": "' + time_now.encode() + b'", "spam_probability": "high"}\n')
        file.write(b'{"verdict_id": "x3", "time": "yesterday"}\n')
    result = compact_hour(log_dir, hour_of(good[0]))
    assert sorted(result.table.column("verdict_id").to_pylist()) == sorted(r["verdict_id"] for r in good)
    lines = {(b.file, b.line) for b in result.bad_lines}
    assert {line for _, line in lines} == {4, 5, 6, 7, 8}
    assert {file for file, _ in lines} == {segment.name}
    reasons = " ".join(b.reason for b in result.bad_lines)
    assert "not JSON" in reasons and "a JSON list" in reasons and "empty line" in reasons
    assert "spam_probability 'high' is not a finite number" in reasons and "'yesterday' is not an ISO 8601 time" in reasons


def test_a_verdict_in_two_segments_is_kept_once(log_dir):
    segment = write_segment(log_dir, spam=2, ham=2)
    copy = write_segment(log_dir, spam=0, ham=1)  # another segment name, same hour
    copy.write_bytes(segment.read_bytes())  # a copied file repeats every verdict
    result = compact_hour(log_dir, hour_of(records(segment)[0]))
    assert result.table.num_rows == 4 and result.duplicates == 4


def test_the_table_is_replaced_whole_and_readable_as_a_folder(log_dir, tmp_path):
    write_segment(log_dir, spam=1, ham=1)
    hour = hour_of(records(published_segments(log_dir)[0].path)[0])
    path = write_table(compact_hour(log_dir, hour).table, table_path(tmp_path / "traffic", hour))
    assert pq.read_table(path).num_rows == 2
    write_segment(log_dir, spam=2, ham=0)
    write_table(compact_hour(log_dir, hour).table, path)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left beside it
    assert len(pd.read_parquet(path.parent)) == 4  # the folder reads as one table: a roll-up of hours
    assert path.name == f"{hour:%Y-%m-%d-%H}.parquet"


def test_an_hour_no_segment_can_hold_is_an_empty_typed_table(log_dir):
    write_segment(log_dir, spam=1, ham=0)
    result = compact_hour(log_dir, hour_start(dt.datetime.now(UTC)) - dt.timedelta(hours=5))
    assert result.table.num_rows == 0 and result.segments_read == []
    assert result.table.schema.field("time").type.tz == "UTC"
    assert summary(result.table) == {"verdicts": 0}


def test_a_segment_can_hold_the_hours_between_its_opening_and_its_last_write():
    at = lambda h, m, s=0: dt.datetime(2026, 11, 27, h, m, s, tzinfo=UTC)  # noqa: E731
    inside = Segment(Path("x"), at(10, 5), at(10, 10))
    assert inside.hours() == [at(10, 0)]
    across = Segment(Path("x"), at(10, 58), at(11, 3))
    assert across.hours() == [at(10, 0), at(11, 0)]
    # Within SLACK of a turn of the hour, the neighbour is included: records are stamped before the
    # segment opens (the writer's queue), and mtimes come from the file system's clock.
    early = Segment(Path("x"), at(11, 0) + SLACK / 2, at(11, 20))
    assert early.hours() == [at(10, 0), at(11, 0)]
    assert early.can_hold(at(10, 0), at(11, 0)) and not early.can_hold(at(9, 0), at(10, 0))


def test_summary_counts_versions_apis_latency_and_scores(log_dir):
    write_segment(log_dir, spam=3, ham=1, version="7")
    write_segment(log_dir, spam=0, ham=4, version="8", api="ClassifyStream")
    hour = hour_of(records(published_segments(log_dir)[0].path)[0])
    stats = summary(compact_hour(log_dir, hour).table)
    if stats["verdicts"] != 8:
        pytest.skip("the two segments fell either side of a turn of the hour")
    assert stats["spam_share"] == pytest.approx(3 / 8)
    assert stats["model_versions"] == {"spam-classifier v8": 4, "spam-classifier v7": 4}
    assert stats["apis"] == {"ClassifyStream": 4, "Classify": 4}
    histogram = {b["from"]: b["verdicts"] for b in stats["spam_probability_histogram"]}
    assert histogram[0.0] == 5 and histogram[0.9] == 3 and sum(histogram.values()) == 8
    assert 0 <= stats["latency_p50_ms"] <= stats["latency_p99_ms"]


def test_a_segment_read_line_by_line_gives_the_same_table_as_one_read_whole(log_dir):
    """Clean segments are parsed by Arrow, one with a bad line line by line: the rows and types agree."""
    segment = write_segment(log_dir, spam=2, ham=3)
    hour = hour_of(records(segment)[0])
    whole = compact_hour(log_dir, hour).table
    with segment.open("ab") as file:
        file.write(b"not a record\n")
    by_line = compact_hour(log_dir, hour)
    assert len(by_line.bad_lines) == 1 and by_line.table.equals(whole)
    assert whole.num_rows == 5


def test_verdicts_logged_without_their_text_keep_a_null_text_and_the_sha256(log_dir):
    segment = write_segment(log_dir, spam=1, ham=1, log_text=False)
    frame = compact_hour(log_dir, hour_of(records(segment)[0])).table.to_pandas()
    assert frame["text"].isna().all() and frame["text_sha256"].str.len().eq(64).all()
