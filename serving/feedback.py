"""Feedback: the true label of a message, reported by a user or moderator (spam.v1.Classifier/Report).

A report names a verdict by its id (looked up in the prediction log, any
replica's) or, for a message without one, carries the text. It is kept once
per (verdict, reporter), or (text sha256, reporter) for a report by text:
a repeat gets the first report's id back and stores nothing.

Storage sits beside the prediction log, in `<log folder>/feedback/`: each
server process appends to a file of its own,
`feedback-<host>-<pid>-<time-ordered id>.jsonl`, one JSON line per report,
written and fsynced before the reply, so an answered report survives a
crash right after it. Before storing, a process reads what every file has
gained since it last looked, so a repeat sent to another replica is
recognised too; two replicas that receive the same report at the same
moment may both store it, and `read_feedback` keeps the first (reports are
deduplicated on read as well).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from serving.classify import text_problem
from serving.prediction_log import PredictionLog, host_name
from spam_assets.settings import LABELS
from spam_assets.traffic.feedback_files import feedback_dir, report_key
from spam_assets.traffic.prediction_files import complete_length
from spam_assets.traffic.verdict_ids import new_verdict_id, parse_verdict_id

MAX_REPORTER_CHARS = 256
MAX_REASON_BYTES = 4096


class InvalidReport(ValueError):
    """A report that cannot be stored; the message says why (INVALID_ARGUMENT)."""


@dataclass(frozen=True)
class Stored:
    report_id: str
    created: bool  # False: this reporter had reported this verdict (or text) before; nothing new stored


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class FeedbackStore:
    """Validates reports, finds their verdicts in `predictions`, and appends them durably to this process's file."""

    def __init__(self, predictions: PredictionLog, *, log_text: bool = True, max_text_bytes: int = 64 * 1024):
        self.predictions = predictions
        self.directory = feedback_dir(predictions.directory)
        self.log_text = log_text
        self.max_text_bytes = max_text_bytes
        self._lock = threading.Lock()
        self._known: dict[tuple[str, str, str], str] = {}  # key -> first report id
        self._offsets: dict[Path, int] = {}  # bytes of each feedback file already read
        self._path = self.directory / f"feedback-{host_name()}-{os.getpid()}-{new_verdict_id()}.jsonl"
        self._fd: int | None = None

    def start(self) -> FeedbackStore:
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._catch_up()
        return self

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def report(self, verdict_id: str, text: str, label: str, reporter: str, reason: str = "") -> Stored:
        """Store one report (or recognise a repeat). InvalidReport says what is wrong; OSError: not stored."""
        record = self._validated(verdict_id, text, label, reporter, reason)
        key = report_key(record)
        with self._lock:
            self._catch_up()
            first = self._known.get(key)
            if first is not None:
                return Stored(first, created=False)
            self._append(record)
            self._known[key] = record["report_id"]
        return Stored(record["report_id"], created=True)

    # --- internals ------------------------------------------------------------------------------

    def _validated(self, verdict_id: str, text: str, label: str, reporter: str, reason: str) -> dict:
        if label not in LABELS:
            raise InvalidReport(f"label must be one of {list(LABELS)}, got {label!r}")
        if not reporter.strip():
            raise InvalidReport("reporter is empty: say who reports (a user or moderator id)")
        if len(reporter) > MAX_REPORTER_CHARS:
            raise InvalidReport(f"reporter is {len(reporter)} characters, over the limit of {MAX_REPORTER_CHARS}")
        if len(reason.encode("utf-8", "surrogatepass")) > MAX_REASON_BYTES:
            raise InvalidReport(f"reason is over the limit of {MAX_REASON_BYTES} bytes")
        if not verdict_id and not text:
            raise InvalidReport("give the verdict_id of the verdict being reported, or the text of the message")
        if text:
            problem = text_problem(text, self.max_text_bytes)
            if problem:
                raise InvalidReport(problem)
        found = None
        if verdict_id:
            parsed = parse_verdict_id(verdict_id)
            if parsed is None:
                raise InvalidReport(f"verdict_id {verdict_id!r} is not a verdict id (a UUIDv7 as the server gives)")
            verdict_id = str(parsed)
            found = self.predictions.find(verdict_id)
            if found is None and not text:
                raise InvalidReport(
                    f"unknown verdict_id {verdict_id}: not in the prediction log (older than its retention, "
                    "given while the log was off, or dropped under load); send the message's text instead"
                )
            if found is not None and text and _sha256(text) != found["text_sha256"]:
                raise InvalidReport(f"text is not the message verdict {verdict_id} was given for")
        return {
            "report_id": new_verdict_id(),
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
            "label": label,
            "reporter": reporter,
            "reason": reason,
            "verdict_id": verdict_id or None,
            "verdict_found": found is not None,
            "text_sha256": found["text_sha256"] if found is not None else _sha256(text),
            "text": text if text and self.log_text else None,
            "model_version": found and found["model_version"],
            "predicted_label": found and found["label"],
            "spam_probability": found and found["spam_probability"],
        }

    def _append(self, record: dict) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass")
        if self._fd is None:
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            _fsync_dir(self.directory)  # the new file's name is durable too
        start = os.fstat(self._fd).st_size
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)  # durable before the reply
        except OSError:
            os.ftruncate(self._fd, start)  # no partial line for the next report to run into
            raise

    def _catch_up(self) -> None:
        """Index the reports every process has stored since the last look (complete lines only)."""
        for path in sorted(self.directory.glob("feedback-*.jsonl")):
            offset = self._offsets.get(path, 0)
            try:
                with open(path, "rb") as file:
                    file.seek(offset)
                    data = file.read()
            except FileNotFoundError:
                continue
            end = complete_length(data)
            for line in data[:end].splitlines():
                record = json.loads(line)
                self._known.setdefault(report_key(record), record["report_id"])
            self._offsets[path] = offset + end


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
