"""Prediction-log segments and feedback of a staged rollout, in the contract's format, for the graph's tests.

What a server with a challenger in shadow or canary writes (the rollout
contract): for each message one served record and, unless the shadow was
dropped, an unserved twin of the other model with the same verdict_id,
client_id, api, text_sha256 and text. Files are named and laid out by the
platform's own modules (prediction_files.NAME, feedback_files), so they
read as the server's output does. Times can be set, so a test can place a
stage's traffic before or after its start without waiting.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import random
import uuid
from dataclasses import dataclass
from pathlib import Path

from spam_assets.traffic.feedback_files import FIELDS as REPORT_FIELDS
from spam_assets.traffic.feedback_files import feedback_dir
from spam_assets.traffic.prediction_files import FIELDS, NAME

HOST, PID = "replica-a", 4242
_rng = random.Random(7)


def uuid7_at(moment: dt.datetime) -> str:
    """A UUIDv7 whose time is `moment` (RFC 9562: 48-bit ms, version 7, variant 10, random rest)."""
    millis = int(moment.timestamp() * 1000)
    value = (millis << 80) | (0x7 << 76) | (_rng.getrandbits(12) << 64) | (0b10 << 62) | _rng.getrandbits(62)
    return str(uuid.UUID(int=value))


@dataclass
class Message:
    text: str
    champion_p: float
    challenger_p: float
    answered: str = "champion"  # which role served it (canary: "challenger")
    twin: bool = True  # False: the shadow verdict was dropped (queue full, shadow share below 1)


def record(verdict_id, when, version, role, served, p, text, client_id="c", api="Classify") -> dict:
    values = {
        "verdict_id": verdict_id, "client_id": client_id, "api": api,
        "time": when.astimezone(dt.UTC).isoformat(timespec="milliseconds"),
        "model_name": "spam-classifier", "model_version": str(version), "scorer": "lean",
        "spam_probability": p, "label": "spam" if p >= 0.5 else "ham", "latency_ms": 0.4,
        "text_sha256": sha256(text), "text": text, "role": role, "served": served,
        "tier": "spam" if p >= 0.5 else "ham",
    }  # fmt: skip
    assert tuple(values) == FIELDS, "the fixture follows the log's record schema"
    return values


def write_segment(folder: Path, records: list[dict], opened: dt.datetime, closed: dt.datetime | None = None) -> Path:
    """One published segment of `records`, named for `opened` and last written at `closed`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"predictions-{uuid7_at(opened)}-{HOST}-{PID}.jsonl"
    assert NAME.match(path.name)
    path.write_text("".join(json.dumps(r, ensure_ascii=True, separators=(",", ":")) + "\n" for r in records))
    mtime = (closed or opened).timestamp()
    os.utime(path, (mtime, mtime))
    return path


def write_rollout_segment(
    folder: Path, messages: list[Message], *, champion: str, challenger: str, start: dt.datetime, step_s: float = 1.0
) -> Path:
    """One segment of paired verdicts, one message every `step_s` seconds from `start`."""
    records = []
    for i, m in enumerate(messages):
        when = start + dt.timedelta(seconds=i * step_s)
        vid = uuid7_at(when)
        by_champion = m.answered == "champion"
        served_version, other_version = (champion, challenger) if by_champion else (challenger, champion)
        served_p, other_p = (m.champion_p, m.challenger_p) if by_champion else (m.challenger_p, m.champion_p)
        other_role = "challenger" if by_champion else "champion"
        records.append(record(vid, when, served_version, m.answered, True, served_p, m.text, f"c{i}"))
        if m.twin:
            later = when + dt.timedelta(milliseconds=3)  # the shadow scoring comes after the answer
            records.append(record(vid, later, other_version, other_role, False, other_p, m.text, f"c{i}"))
    end = start + dt.timedelta(seconds=len(messages) * step_s)
    return write_segment(folder, records, start, end)


def write_feedback(folder: Path, labels: dict[str, str], when: dt.datetime, reporter: str = "r1") -> Path:
    """Reports by text (label per message text), as the server stores them, in one feedback file."""
    path = feedback_dir(folder) / f"feedback-{HOST}-{PID}-{uuid7_at(when)}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (text, label) in enumerate(labels.items()):
        report = {
            "report_id": uuid7_at(when + dt.timedelta(milliseconds=i)), "time": when.isoformat(timespec="milliseconds"),
            "label": label, "reporter": reporter, "reason": "", "verdict_id": None, "verdict_found": False,
            "text_sha256": sha256(text), "text": text, "model_version": None, "predicted_label": None,
            "spam_probability": None,
        }  # fmt: skip
        assert tuple(report) == REPORT_FIELDS
        lines.append(json.dumps(report) + "\n")
    with open(path, "a", encoding="utf-8") as file:
        file.write("".join(lines))
    return path


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
