"""Traffic tables: the prediction log compacted into one Parquet table per hour of verdicts.

The server appends verdicts to JSONL segments (spam_assets/traffic/prediction_files.py)
that rotate every few minutes per replica; analysing them means reading
hundreds of small files of every replica. Here the records of one hour (by
each record's own `time`, UTC) become one typed table,
`<home>/traffic/<YYYY-MM-DD-HH>.parquet`, written beside and renamed into
place, so a reader sees the old table or the new one, never half of one.

Why hours (the Dagster asset `traffic` is partitioned the same way):
- a switch in traffic is seen within the hour it happens, where a daily
  partition would hold it until the day closes;
- the work of one run is bounded by an hour of traffic however busy the
  server is (1,000 verdicts/s is 3.6 M rows an hour), and the current hour
  can be re-compacted as its segments close without rereading a day;
- a quiet hour of a few dozen verdicts is still safe to judge: the drift
  statistics are judged against their own sampling noise at the batch's
  size (spam_assets/drift_noise.py), so a small hour raises no more false
  alarms than a big one;
- a daily view is a roll-up: `pd.read_parquet` of a day's 24 files.

Which segments can hold an hour is known without opening them: a segment's
name starts with a UUIDv7 of when it was opened and its mtime is when it was
last written, so its records lie between the two (give or take SLACK_S).

Served verdicts only: with a challenger in shadow or canary the log holds a
second, unserved record of some messages under the same verdict_id (the
other model's opinion, spam_assets/live_comparison.py pairs them). A table
counts what callers were answered, so those records are left out (and
counted); records written before the rollout fields existed are served
champion verdicts (prediction_files.DEFAULTS).

Bad input: a line that is not a JSON record of the log's schema (a corrupt
or hostile file; the server never writes one) is skipped and reported with
its file and line number, never fatal. A line too broken to have a time is
reported by every hour that reads its file.

Plain Python (pyarrow, pandas); no Dagster.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq

from spam_assets.traffic.prediction_files import DEFAULTS, FIELDS, opened_at, segments

HOUR = dt.timedelta(hours=1)
# Records are stamped when the server queues them, up to the writer's latency before their segment is
# opened; mtimes come from the file system's clock, which on a shared volume is another machine's.
# Reading a segment more than needed costs little; missing one loses verdicts.
SLACK = dt.timedelta(seconds=60)
# One more column than the log's FIELDS: the segment each row came from, to trace a row back.
SEGMENT = "segment"
SCHEMA = pa.schema(
    [
        ("verdict_id", pa.string()),
        ("client_id", pa.string()),
        ("api", pa.string()),
        ("time", pa.timestamp("ms", tz="UTC")),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("scorer", pa.string()),
        ("spam_probability", pa.float64()),
        ("label", pa.string()),
        ("latency_ms", pa.float64()),
        ("text_sha256", pa.string()),
        ("text", pa.string()),
        ("role", pa.string()),  # which alias answered: "challenger" for a canary verdict
        ("served", pa.bool_()),  # always true in a table: unserved (shadow) records are left out
        ("tier", pa.string()),
        (SEGMENT, pa.string()),
    ]
)
assert tuple(SCHEMA.names[:-1]) == FIELDS, "the table's columns follow the log's record schema"
_RECORD = pa.schema(list(SCHEMA)[:-1])
_TIME = SCHEMA.field("time").type
# Arrow parses in blocks and fails on a line longer than one; the server takes texts up to its
# message limit (4 MiB by default), so blocks are larger than that.
_ARROW_BLOCKS = pj.ReadOptions(block_size=16 << 20)
# What Arrow reads a line as: `time` as text (cast after, so a bad one sends the file line by line),
# fields the record schema does not know ignored.
_ARROW_JSON = pj.ParseOptions(
    explicit_schema=pa.schema([f.with_type(pa.string()) if f.name == "time" else f for f in _RECORD]),
    unexpected_field_behavior="ignore",
)
_NUMBERS = {"spam_probability", "latency_ms"}
_STRINGS = [name for name in FIELDS if name not in _NUMBERS and name not in ("time", "served")]


def hour_start(moment: dt.datetime) -> dt.datetime:
    """The UTC hour `moment` falls in (naive datetimes are taken as UTC)."""
    moment = moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


def table_path(root: Path | str, start: dt.datetime) -> Path:
    """Where the table of the hour starting at `start` lives (no ':' in the name, for every file system)."""
    return Path(root) / f"{hour_start(start):%Y-%m-%d-%H}.parquet"


# --- which segments can hold an hour -------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """A published segment and the span its records can lie in: opened (its name) .. last written (mtime)."""

    path: Path
    opened: dt.datetime
    modified: dt.datetime

    @property
    def name(self) -> str:
        return self.path.name

    def can_hold(self, start: dt.datetime, end: dt.datetime) -> bool:
        return self.opened - SLACK < end and self.modified + SLACK >= start

    def hours(self) -> list[dt.datetime]:
        """Every hour some record of this segment may fall in, oldest first."""
        first, last = hour_start(self.opened - SLACK), hour_start(max(self.modified, self.opened) + SLACK)
        return [first + i * HOUR for i in range(int((last - first) / HOUR) + 1)]


def published_segments(directory: Path | str) -> list[Segment]:
    """The published segments in `directory`, oldest first (a file deleted while listing is left out)."""
    found = []
    for path in segments(directory):
        opened = opened_at(path.name)
        if opened is None:
            continue
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:  # expired by the server's retention meanwhile
            continue
        found.append(Segment(path, opened, dt.datetime.fromtimestamp(mtime, tz=dt.UTC)))
    return found


# --- compaction ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BadLine:
    file: str
    line: int  # 1-based
    reason: str

    def __str__(self) -> str:
        return f"{self.file} line {self.line}: {self.reason}"


@dataclass
class Compaction:
    """One hour compacted: the typed table and what was read, skipped or dropped to make it."""

    start: dt.datetime
    table: pa.Table
    segments_read: list[str] = field(default_factory=list)
    bad_lines: list[BadLine] = field(default_factory=list)
    duplicates: int = 0  # records whose verdict_id was already in the table
    unserved: int = 0  # shadow records (served false) of the hour, left out


def compact_hour(directory: Path | str, start: dt.datetime, candidates: Iterable[Segment] | None = None) -> Compaction:
    """The records of the hour starting at `start` from the published segments in `directory`.

    Only segments that can hold the hour are read. Rows are deduplicated by
    verdict_id (the first kept, in segment order: a recovered segment should
    repeat nothing, but a copied file could) and sorted by time, then verdict id.
    """
    start = hour_start(start)
    end = start + HOUR
    pool = published_segments(directory) if candidates is None else candidates
    result = Compaction(start, SCHEMA.empty_table())
    tables = []
    for segment in (s for s in pool if s.can_hold(start, end)):
        try:
            data = segment.path.read_bytes()
        except FileNotFoundError:  # expired by retention between listing and reading
            continue
        result.segments_read.append(segment.name)
        table = _read_clean(data)
        if table is None:  # some line is not a valid record: line by line, to name it
            table = _read_line_by_line(data, segment.name, start, end, result.bad_lines)
        else:
            in_hour = pc.and_(
                pc.greater_equal(table["time"], pa.scalar(start, _TIME)), pc.less(table["time"], pa.scalar(end, _TIME))
            )
            table = table.filter(in_hour)
        table = _with_defaults(table)
        shadow = pc.invert(table["served"])
        result.unserved += pc.sum(shadow.cast(pa.int64())).as_py() or 0
        table = table.filter(table["served"])
        tables.append(table.append_column(SEGMENT, pa.array([segment.name] * table.num_rows, pa.string())))
    if not tables:
        return result
    table = pa.concat_tables(tables)
    # Records written before tiers existed have none: they were given with two tiers, the label's.
    table = table.set_column(table.schema.get_field_index("tier"), "tier", pc.coalesce(table["tier"], table["label"]))
    repeated = table.column("verdict_id").to_pandas().duplicated(keep="first").to_numpy()
    result.duplicates = int(repeated.sum())
    if result.duplicates:
        table = table.filter(pa.array(~repeated))
    result.table = table.sort_by([("time", "ascending"), ("verdict_id", "ascending")]).select(SCHEMA.names)
    return result


def _with_defaults(table: pa.Table) -> pa.Table:
    """Records written before the rollout fields existed: DEFAULTS (the champion's verdict, served)."""
    for name, default in DEFAULTS.items():
        index = table.schema.get_field_index(name)
        column = pc.fill_null(table[name], pa.scalar(default, table.schema.field(name).type))
        table = table.set_column(index, name, column)
    return table


def _read_clean(data: bytes) -> pa.Table | None:
    """A segment whose every line is a valid record, parsed by Arrow (columnar, about 10x faster than
    line by line); None when any line is not, or when Arrow skipped one (it passes over blank lines)."""
    lines = data.count(b"\n") + (0 if not data or data.endswith(b"\n") else 1)
    try:
        raw = pj.read_json(pa.BufferReader(data), read_options=_ARROW_BLOCKS, parse_options=_ARROW_JSON)
        times = pc.cast(raw["time"], _TIME)
    except (pa.ArrowInvalid, pa.ArrowTypeError, KeyError):
        return None
    ids = raw["verdict_id"]
    if raw.num_rows != lines or ids.null_count or times.null_count or pc.any(pc.equal(ids, "")).as_py():
        return None
    for name in _NUMBERS:
        if pc.any(pc.invert(pc.is_finite(raw[name]))).as_py():  # NaN or infinity (null is fine)
            return None
    return raw.set_column(raw.schema.get_field_index("time"), "time", times).select(list(FIELDS))


def _read_line_by_line(data: bytes, file: str, start: dt.datetime, end: dt.datetime, bad: list[BadLine]) -> pa.Table:
    """The valid records of the hour in `data`, each invalid line added to `bad` with its number and why."""
    rows = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line and number > data.count(b"\n"):  # after the last newline: not a line
            break
        record, reason = _parse(line)
        if record is None:
            bad.append(BadLine(file, number, reason))
            continue
        if not start <= record["time"] < end:
            continue
        if (reason := _type_problem(record)) is not None:
            bad.append(BadLine(file, number, reason))
            continue
        rows.append({name: record.get(name) for name in FIELDS})
    return pa.Table.from_pylist(rows, schema=_RECORD)


def _parse(line: bytes) -> tuple[dict | None, str]:
    """(record with `time` as a UTC datetime, "") or (None, why the line is not a record)."""
    try:
        record = json.loads(line)
    except ValueError as error:
        return None, f"not JSON ({error})" if line.strip() else "empty line"
    if not isinstance(record, dict):
        return None, f"a JSON {type(record).__name__}, not a record"
    if not isinstance(record.get("verdict_id"), str) or not record["verdict_id"]:
        return None, "no verdict_id"
    when = record.get("time")
    try:
        moment = dt.datetime.fromisoformat(when)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None, f"time {when!r} is not an ISO 8601 time"
    record["time"] = moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
    return record, ""


def _type_problem(record: dict) -> str | None:
    for name in _STRINGS:
        if not isinstance(record.get(name), str | None):
            return f"{name} is a {type(record[name]).__name__}, not text"
    for name in _NUMBERS:
        value = record.get(name)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if value is not None and not (number and math.isfinite(value)):
            return f"{name} {value!r} is not a finite number"
    if not isinstance(record.get("served"), bool | None):
        return f"served {record['served']!r} is not true or false"
    return None


def write_table(table: pa.Table, path: Path) -> Path:
    """Write `table` to `path` atomically: beside it under a hidden name (readers of the folder skip
    names starting with '.'), then renamed over the old table. A failed write leaves the old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; people and other services read these
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# --- what a person wants to know about an hour ------------------------------------------------------


def summary(table: pa.Table, bins: int = 10) -> dict:
    """Counts and shares of one hour's table: plain numbers, for metadata and reports."""
    frame = table.to_pandas()
    out: dict = {"verdicts": len(frame)}
    if frame.empty:
        return out
    labels = frame["label"].value_counts()
    out["spam_share"] = float(labels.get("spam", 0) / len(frame))
    versions = frame.groupby(["model_name", "model_version"], dropna=False).size().sort_values(ascending=False)
    out["model_versions"] = {f"{name} v{version}": int(n) for (name, version), n in versions.items()}
    out["apis"] = {str(k): int(v) for k, v in frame["api"].value_counts(dropna=False).items()}
    latency = frame["latency_ms"].dropna()
    if len(latency):
        out["latency_p50_ms"] = float(latency.quantile(0.5))
        out["latency_p99_ms"] = float(latency.quantile(0.99))
    scores = frame["spam_probability"].dropna().clip(0.0, 1.0)
    edges = [i / bins for i in range(bins + 1)]
    counts = [0] * bins
    for value in scores:
        counts[min(int(value * bins), bins - 1)] += 1
    out["spam_probability_histogram"] = [
        {"from": edges[i], "to": edges[i + 1], "verdicts": counts[i]} for i in range(bins)
    ]
    out["first"], out["last"] = frame["time"].min().isoformat(), frame["time"].max().isoformat()
    return out
