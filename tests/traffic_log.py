"""Prediction-log segments for the traffic tests, written by the server's own writer.

`write_segment` runs a real `serving.prediction_log.PredictionLog` (only the
tests import serving; the platform reads the files). Its records carry the
time they were written, so `written_earlier` moves a segment back by whole
hours the way the writer would have left it then: every record's time, the
UUIDv7 its name starts with, and its mtime, all by the same shift.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

from serving.prediction_log import PredictionLog
from spam_assets.model.operating_point import Tiers
from spam_assets.traffic.prediction_files import NAME, segments
from spam_assets.traffic.verdict_ids import new_verdict_ids

SPAM = "WINNER! | You have won a guaranteed £1000 cash prize. Call 09061701461 now to claim"
HAM = "are we still on for lunch tomorrow?\nsee you at home later"


def champion(version: str = "7") -> SimpleNamespace:
    """What a record needs of a loaded champion: its name, tiers (0.5, none stored), version and scorer name."""
    card = SimpleNamespace(name="spam-classifier", tiers=Tiers())
    return SimpleNamespace(card=card, version=version, scorer=SimpleNamespace(name="lean"))


def write_segment(
    folder: Path, spam: int, ham: int, *, version: str = "7", api: str = "Classify", log_text: bool = True
) -> Path:
    """One published segment holding `spam` verdicts of P(spam) 0.97 then `ham` of 0.03."""
    before = set(segments(folder)) if folder.is_dir() else set()
    log = PredictionLog(folder, log_text=log_text, retention_days=0).start()
    n = spam + ham
    texts, probabilities = [SPAM] * spam + [HAM] * ham, [0.97] * spam + [0.03] * ham
    labels = ["spam"] * spam + ["ham"] * ham
    log.record(api, time.perf_counter(), champion(version), [f"c{i}" for i in range(n)], texts, probabilities, labels,
               new_verdict_ids(n))  # fmt: skip
    log.close()
    (new,) = set(segments(folder)) - before
    return new


def records(segment: Path) -> list[dict]:
    return [json.loads(line) for line in segment.read_bytes().splitlines()]


def written_earlier(segment: Path, hours: int) -> Path:
    """`segment` as if written `hours` earlier: record times, name and mtime moved back; the original is gone."""
    shift = dt.timedelta(hours=hours)
    lines = []
    for record in records(segment):
        record["time"] = (dt.datetime.fromisoformat(record["time"]) - shift).isoformat(timespec="milliseconds")
        lines.append(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
    match = NAME.match(segment.name)
    old = uuid.UUID(match["segment"])
    millis = (old.int >> 80) - hours * 3_600_000
    moved = uuid.UUID(int=(millis << 80) | (old.int & ((1 << 80) - 1)))
    target = segment.with_name(f"predictions-{moved}-{match['host']}-{match['pid']}.jsonl")
    target.write_text("".join(lines), encoding="utf-8")
    mtime = segment.stat().st_mtime - shift.total_seconds()
    os.utime(target, (mtime, mtime))
    segment.unlink()
    return target


def hour_of(record: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(record["time"]).astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
