"""The prediction log's files: their names, their record schema, and how to read them.

The server writes the log (serving/prediction_log.py: a bounded queue, one
writer thread per process, segments written then renamed); the graph and
anyone with pandas read it. This module is the part both sides share, so a
change of the format is made in one place.

Layout of a log folder, which replicas may share (names are unique per
process: a time-ordered segment id, the host name and the pid):

    predictions-<segment id>-<host>-<pid>.jsonl          published segments: complete, never written again
    .predictions-<segment id>-<host>-<pid>.jsonl.part    being filled by a live writer
    feedback/                                            reports (feedback_files.py)
"""

from __future__ import annotations

import datetime
import json
import logging
import mmap
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from spam_assets.traffic.verdict_ids import parse_verdict_id, verdict_time

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import pandas as pd

# Columns of a record, in order. `time` is when the verdict was given (UTC,
# ISO 8601, ms); `latency_ms` the server time of the call (unary, ModelInfer)
# or of the stream's micro-batch, scoring included; `text` is null when the
# server runs with --log-text off. `role` is the alias the scoring model held
# (champion or challenger); `served` is true for the verdict the caller got,
# false for a shadow verdict of the other model (same verdict_id and text).
# `tier` is the action tier (ham / suspicious / spam) by the version's operating
# point: records written before it existed read with their label as tier (`with_default_tiers`).
FIELDS = (
    "verdict_id", "client_id", "api", "time", "model_name", "model_version", "scorer",
    "spam_probability", "label", "latency_ms", "text_sha256", "text", "role", "served", "tier",
)  # fmt: skip
# What a record written before the staged rollout stands for: the champion's verdict, served.
DEFAULTS = {"role": "champion", "served": True}

PREFIX = "predictions-"
SUFFIX = ".jsonl"
PART = ".part"
CLAIMED = ".recovering-"
NAME = re.compile(r"^predictions-(?P<segment>[0-9a-f-]{36})-(?P<host>.+)-(?P<pid>\d+)\.jsonl$")
# A reader looks for a verdict in files written to at most this long before the verdict's time (clock skew).
CLOCK_SLACK_S = 5.0


def published_name(part: Path) -> Path:
    """`.predictions-X.jsonl.part` (or `.recovering-...`) -> `predictions-X.jsonl`."""
    name = part.name.removeprefix(".")
    return part.with_name(name[: name.index(SUFFIX) + len(SUFFIX)])


def complete_length(data: bytes) -> int:
    """Bytes of `data` up to the end of its last complete, valid JSON line (a crash can cut the last)."""
    end = 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            json.loads(line)
        except ValueError:
            break
        end += len(line)
    return end


def segments(directory: Path | str) -> list[Path]:
    """Published segments, oldest first (their names start with a time-ordered id)."""
    return sorted(Path(directory).glob(f"{PREFIX}*{SUFFIX}"), key=lambda p: p.name)


def open_segments(directory: Path) -> list[Path]:
    return sorted(directory.glob(f".{PREFIX}*{SUFFIX}*"), key=lambda p: p.name)


def complete_records(path: Path) -> Iterator[dict]:
    """The records of a file's complete lines (a segment being written may end mid-line)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:  # published or recovered meanwhile
        return
    for line in data[: complete_length(data)].splitlines():
        yield json.loads(line)


def read_predictions(
    directory: Path | str, include_open: bool = False, since: datetime.datetime | None = None
) -> pd.DataFrame:
    """Every published record under `directory` as a DataFrame (columns FIELDS, `time` as UTC datetimes).

    `include_open` adds the complete lines of segments still being written
    (by live writers, or left by dead ones and not yet recovered). `since`
    skips segments last written before it (give or take CLOCK_SLACK_S), so
    a reader of recent traffic does not parse the whole log; records older
    than `since` in the segments read are kept. Records written before the
    staged rollout get DEFAULTS for `role` and `served`.
    """
    import pandas as pd

    directory = Path(directory)
    frames = [_read_segment(path) for path in segments(directory) if since is None or _written_since(path, since)]
    frames = [f for f in frames if len(f)]
    if include_open:
        rows = [r for path in open_segments(directory) for r in complete_records(path)]
        if rows:
            frames.append(pd.DataFrame.from_records(rows))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(FIELDS))
    frame = frame.reindex(columns=list(FIELDS))
    for column, default in DEFAULTS.items():
        frame[column] = frame[column].astype(object).where(frame[column].notna(), default)
    frame["served"] = frame["served"].astype(bool)
    frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601")
    for column in ("verdict_id", "client_id", "api", "model_name", "model_version", "scorer", "label", "text_sha256", "role", "tier"):
        frame[column] = frame[column].astype("string")
    frame["tier"] = frame["tier"].fillna(frame["label"])  # old records: two tiers, the label's
    return frame


def _read_segment(path: Path) -> pd.DataFrame:
    """A published segment's records; a line that is not a record (a damaged disk, a foreign writer) is skipped
    and named, so one bad line costs one record, not the segment or every table built from the log."""
    import pandas as pd

    try:
        return pd.read_json(path, lines=True, dtype=False, convert_dates=False)
    except FileNotFoundError:  # expired by the server's retention meanwhile
        return pd.DataFrame()
    except ValueError:
        pass
    rows = []
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            rows.append(record)
        elif line.strip():
            log.warning("prediction log: %s line %d is not a record; skipped", path, number)
    return pd.DataFrame.from_records(rows)


def _written_since(path: Path, since: datetime.datetime) -> bool:
    try:
        return path.stat().st_mtime >= since.timestamp() - CLOCK_SLACK_S
    except FileNotFoundError:  # expired by the server's retention meanwhile
        return False


def find(directory: Path | str, verdict_id: str) -> dict | None:
    """The served record of `verdict_id` in `directory` (published and open segments of every replica), or None.

    A shadow record of the same verdict id (`served` false) is never returned:
    the verdict is what the caller got.

    Only files that can hold it are read, oldest first: opened (the time in
    the file's name) before the verdict's time (the time in its id) and
    written to since, both give or take CLOCK_SLACK_S; usually one file per
    replica however long the log. Files are mapped, not copied.
    """
    value = parse_verdict_id(verdict_id)
    if value is None:
        return None
    directory = Path(directory)
    key = b'{"verdict_id":"' + str(value).encode() + b'"'
    at_time = verdict_time(value).timestamp()
    since, until = at_time - CLOCK_SLACK_S, at_time + CLOCK_SLACK_S
    for _ in range(2):  # a segment published between listing and reading: list again
        # Open segments listed before published ones: one published meanwhile is in the second list.
        candidates, vanished = [], False
        for path in [*open_segments(directory), *segments(directory)]:
            try:
                mtime = path.stat().st_mtime
            except FileNotFoundError:
                vanished = True
                continue
            opened = opened_at(published_name(path).name)
            if mtime >= since and (opened is None or opened.timestamp() <= until):
                candidates.append((mtime, path))
        for _, path in sorted(candidates):
            try:
                record = _find_line(path, key)
            except FileNotFoundError:
                vanished = True
                continue
            if record is not None:
                return record
        if not vanished:
            break
    return None


def opened_at(name: str) -> datetime.datetime | None:
    """When a segment was opened, from the UUIDv7 its name starts with; None for a name that is not a segment's."""
    match = NAME.match(name)
    value = parse_verdict_id(match["segment"]) if match else None
    return verdict_time(value) if value is not None else None


def _find_line(path: Path, key: bytes) -> dict | None:
    """The complete served record of `path` starting with `key`, or None (no newline yet: still being written)."""
    with open(path, "rb") as file:
        if os.fstat(file.fileno()).st_size == 0:
            return None  # mmap refuses an empty file
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            at = data.find(key)
            while at >= 0:
                end = data.find(b"\n", at)
                if end < 0:
                    return None
                record = json.loads(data[at:end])
                if record.get("served", True) is not False:  # older records have no `served`: all were served
                    return record
                at = data.find(key, end)
            return None
