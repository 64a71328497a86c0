"""The feedback files: where reports are stored beside the prediction log, their schema, and how to read them.

The server stores reports (serving/feedback.py: validated, deduplicated per
(verdict or text, reporter), appended and fsynced before the reply); the
graph reads them. This is the part both share.

    <log folder>/feedback/feedback-<host>-<pid>-<time-ordered id>.jsonl   one JSON line per report, appended
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from spam_assets.traffic.prediction_files import complete_length

if TYPE_CHECKING:
    import pandas as pd

FOLDER = "feedback"
FIELDS = (
    "report_id", "time", "label", "reporter", "reason", "verdict_id", "verdict_found", "text_sha256", "text",
    "model_version", "predicted_label", "spam_probability",
)  # fmt: skip



def feedback_dir(log_dir: Path | str) -> Path:
    return Path(log_dir) / FOLDER


def report_key(record: dict) -> tuple[str, str, str]:
    """What a report is about, and who sent it: one report is kept per key."""
    if record.get("verdict_found"):
        return ("verdict", record["verdict_id"], record["reporter"])
    return ("text", record["text_sha256"], record["reporter"])


def read_feedback(log_dir: Path | str) -> pd.DataFrame:
    """Every stored report under a prediction log folder, one per (verdict or text, reporter): the first."""
    import pandas as pd

    rows = []
    for path in sorted(feedback_dir(log_dir).glob("feedback-*.jsonl")):
        data = path.read_bytes()
        rows += [json.loads(line) for line in data[: complete_length(data)].splitlines()]
    frame = pd.DataFrame.from_records(rows, columns=list(FIELDS)) if rows else pd.DataFrame(columns=list(FIELDS))
    if len(frame):
        frame["_key"] = [report_key(r) for r in frame.to_dict("records")]
        frame = frame.sort_values("report_id").drop_duplicates("_key").drop(columns="_key").reset_index(drop=True)
    frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601")
    return frame
