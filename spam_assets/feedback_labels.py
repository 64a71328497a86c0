"""Feedback becomes training data: users' reports -> labelled rows, behind guards against label noise.

Users press "report spam" to unsubscribe, flood the button, or disagree with
each other; trained on blindly, such reports teach the filter the noise. The
rules, in the order they apply (each report is judged once, when first read;
the conflict rule waits until a batch is made, so late reports still vote):

1. Unreadable: a line that is not a report (broken JSON, a label outside
   ham/spam, no reporter, no id...) is skipped and counted, named by file and line.
2. Cap: at most `cap_per_day` reports per reporter per UTC day (the day of
   the report id); the ones beyond are held, not dropped.
3. Text unknown: a report whose text is neither in the report nor in the
   prediction log (--log-text off, or past the log's retention) is skipped.
4. Confident contradiction: "ham" on a verdict with P(spam) >= confident_spam,
   or "spam" with P(spam) <= confident_ham, is held for a person to judge.
5. Conflicts: the reports on one message (one text sha256, which a verdict id
   implies) give one training row: the label a strict majority of distinct
   reporters chose (each reporter's first report counts); the outvoted
   reports are skipped; a tie holds them all.

Held reports carry their reason and end up in a review file a person can
relabel and drop into the inbox. Everything is deterministic: the same
reports, read in the same order, give the same rows in the same order, and
so the same batch bytes and the same batch id.

No Dagster here: the feedback sensor (defs/automation/feedback.py) and the
review asset (defs/assets/feedback.py) drive these functions.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import hashlib
import io
import json
import math
import re
from collections import Counter, defaultdict
from pathlib import Path

from spam_assets.settings import LABELS
from spam_assets.traffic.feedback_files import feedback_dir, read_feedback
from spam_assets.traffic.prediction_files import CLOCK_SLACK_S, open_segments, segments
from spam_assets.traffic.verdict_ids import parse_verdict_id, verdict_time

FEEDBACK_GLOB = "feedback-*.jsonl"
# Fields of a report kept while it waits for a batch (the cursor holds them) and in the held ledger.
KEPT = (
    "report_id", "label", "reporter", "reason", "verdict_id", "text_sha256", "text",
    "predicted_label", "spam_probability", "where",
)  # fmt: skip
# Where held reports go, under the platform home: the ledger the sensor appends to, the file a person relabels.
REVIEW_FOLDER, HELD_LEDGER, REVIEW_FILE = "review", "held.jsonl", "feedback-review.csv"
# Name of a staged feedback batch: the sensor recognises its own batches in the batch store by it.
BATCH_NAME = re.compile(r"^feedback-labels-[0-9a-f]{16}\.jsonl$")
# A report by text names no verdict: its message is looked for in the log this long before the report.
TEXT_LOOKBACK_S = 24 * 3600.0
_SHA = re.compile(r"[0-9a-f]{64}")
_LOG_ID = re.compile(rb'^\{"verdict_id":"([0-9a-f-]{36})"')
_LOG_SHA = re.compile(rb'"text_sha256":"([0-9a-f]{64})"')
# The columns of the review file: `text` and `label` are what the inbox reads (loaders.tabular); the rest is context.
REVIEW_COLUMNS = (
    "text", "label", "reported_label", "reason", "predicted_label", "spam_probability",
    "reporter", "report_id", "verdict_id",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class FeedbackRules:
    min_batch: int = 50  # training rows (messages) that make one labelled batch
    cap_per_day: int = 100  # reports per reporter per UTC day; beyond it they are held
    confident_spam: float = 0.95  # a "ham" report on a verdict at least this sure of spam is held
    confident_ham: float = 0.05  # a "spam" report on a verdict at most this P(spam) is held

    def __post_init__(self) -> None:
        if self.min_batch < 1 or self.cap_per_day < 1:
            raise ValueError(f"min_batch and cap_per_day must be at least 1, got {self.min_batch}, {self.cap_per_day}")
        if not 0.0 <= self.confident_ham < self.confident_spam <= 1.0:
            raise ValueError(
                f"need 0 <= confident_ham < confident_spam <= 1, got {self.confident_ham}, {self.confident_spam}"
            )


@dataclasses.dataclass(frozen=True)
class BadLine:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclasses.dataclass
class Read:
    reports: list[dict]  # well-formed reports, in file order then line order
    bad: list[BadLine]
    offsets: dict[str, list[int]]  # file name -> [bytes read, lines read]: complete lines only


def read_reports(log_dir: Path | str, offsets: dict[str, list[int]] | None = None) -> Read:
    """The reports appended to every feedback file since `offsets` (all of them without).

    Per-file byte offsets rather than "ids above the newest taken": each
    server process appends to its own file, and report ids are made by the
    process that takes the report, so a report can land in one replica's
    file with an id older than one already read from another's (a slow
    write, a skewed clock). An offset needs no clock and misses nothing:
    whatever a file gains after its offset is new. A line without its
    newline yet is being written and waits for the next read.
    """
    offsets = {name: list(value) for name, value in (offsets or {}).items()}
    reports, bad, now = [], [], {}
    for path in sorted(feedback_dir(log_dir).glob(FEEDBACK_GLOB)):
        start, lines = offsets.get(path.name, [0, 0])
        try:
            with open(path, "rb") as file:
                if file.seek(0, 2) < start:  # shorter than what was read: not the file read before
                    start, lines = 0, 0
                file.seek(start)
                data = file.read()
        except FileNotFoundError:
            continue
        end = data.rfind(b"\n") + 1
        for raw in data[:end].splitlines():
            lines += 1
            report = parse_report(raw)
            if isinstance(report, str):
                bad.append(BadLine(path.name, lines, report))
            elif report is not None:
                reports.append({**report, "where": f"{path.name}:{lines}"})
        now[path.name] = [start + end, lines]
    return Read(reports, bad, now)


def parse_report(raw: bytes) -> dict | str | None:
    """A well-formed report's kept fields; a string saying what is wrong; None for a blank line."""
    if not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except ValueError as error:
        return f"not valid JSON ({error})"
    if not isinstance(value, dict):
        return f"a JSON {type(value).__name__}, not a report object"
    if not isinstance(value.get("report_id"), str) or parse_verdict_id(value["report_id"]) is None:
        return f"report_id {value.get('report_id')!r} is not a UUIDv7"
    if value.get("label") not in LABELS:
        return f"label {value.get('label')!r} is not one of {', '.join(LABELS)}"
    if not isinstance(value.get("reporter"), str) or not value["reporter"].strip():
        return "no reporter"
    if not isinstance(value.get("text_sha256"), str) or not _SHA.fullmatch(value["text_sha256"]):
        return f"text_sha256 {str(value.get('text_sha256'))[:80]!r} is not a sha256"
    if value.get("text") is not None:
        if not isinstance(value["text"], str):
            return "text is not a string"
        if hashlib.sha256(value["text"].encode("utf-8", "surrogatepass")).hexdigest() != value["text_sha256"]:
            return "text_sha256 is not the sha256 of its text"
    for name in ("verdict_id", "predicted_label"):
        if value.get(name) is not None and not isinstance(value[name], str):
            return f"{name} is not a string"
    p = value.get("spam_probability")
    if p is not None and (isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p <= 1.0):
        return f"spam_probability {p!r} is not a probability"
    report = {name: value.get(name) for name in KEPT if name != "where"}
    report["reason"] = report["reason"] if isinstance(report["reason"], str) else ""
    return report


def day_of(report: dict) -> str:
    """The UTC day a report was taken, from its id (the id, unlike the `time` field, cannot disagree with it)."""
    return verdict_time(report["report_id"]).date().isoformat()


def fill_texts(reports: list[dict], log_dir: Path | str) -> int:
    """Give each report without a text the text of its message from the prediction log; returns how many.

    Reports by verdict id never carry the text (the log has it); reports by
    text carry none with --log-text off. Only log files written to since a
    little before the oldest wanted message are read, and only lines that
    name a wanted verdict id (or text sha256) are parsed.
    """
    wanted = [r for r in reports if r.get("text") is None]
    if not wanted:
        return 0
    by_id = {r["verdict_id"]: r for r in wanted if r.get("verdict_id")}
    by_sha = defaultdict(list)
    for r in wanted:
        by_sha[r["text_sha256"]].append(r)
    since = min(
        verdict_time(r["verdict_id"]).timestamp() if r.get("verdict_id") and parse_verdict_id(r["verdict_id"])
        else verdict_time(r["report_id"]).timestamp() - TEXT_LOOKBACK_S
        for r in wanted
    ) - CLOCK_SLACK_S  # fmt: skip
    texts: dict[str, str] = {}  # sha256 -> text
    directory = Path(log_dir)
    for path in [*segments(directory), *open_segments(directory)]:
        try:
            if path.stat().st_mtime < since:
                continue
            data = path.read_bytes()
        except FileNotFoundError:  # published or expired meanwhile
            continue
        for line in data.splitlines():
            sha = _LOG_SHA.search(line)
            if sha is None or sha[1].decode() in texts:
                continue
            vid = _LOG_ID.match(line)
            if not ((vid and vid[1].decode() in by_id) or sha[1].decode() in by_sha):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record.get("text"), str):
                texts[sha[1].decode()] = record["text"]
    found = 0
    for r in wanted:
        if (text := texts.get(r["text_sha256"])) is not None:
            r["text"], found = text, found + 1
    return found


@dataclasses.dataclass
class Screened:
    passed: list[dict]  # may be trained on, once the conflict rule has seen every report on their message
    held: list[dict]  # each with "held_because"
    skipped: list[dict]  # each with "skipped_because"


def screen(reports: list[dict], counts: dict[str, dict[str, int]], rules: FeedbackRules) -> Screened:
    """Rules 2-4, once per report, in the order given. `counts` (day -> reporter -> reports) is updated."""
    out = Screened([], [], [])
    for report in reports:
        day = counts.setdefault(day_of(report), {})
        seen = day.get(report["reporter"], 0)
        day[report["reporter"]] = seen + 1
        p = report.get("spam_probability")
        if seen >= rules.cap_per_day:
            out.held.append(_held(report, "cap", f"over the cap of {rules.cap_per_day} reports a day for {report['reporter']!r} ({day_of(report)})"))
        elif report.get("text") is None:
            out.skipped.append(_why(report, "skipped_because", "text unknown: not in the report, not in the prediction log"))
        elif p is not None and report["label"] == "ham" and p >= rules.confident_spam:
            out.held.append(_held(report, "confident", f"reported ham, the model said spam with P(spam) {p:.3f} >= {rules.confident_spam}"))
        elif p is not None and report["label"] == "spam" and p <= rules.confident_ham:
            out.held.append(_held(report, "confident", f"reported spam, the model said ham with P(spam) {p:.3f} <= {rules.confident_ham}"))
        else:
            out.passed.append(report)
    return out


def prune_counts(counts: dict[str, dict[str, int]], today: datetime.date) -> dict[str, dict[str, int]]:
    """Only yesterday's, today's and tomorrow's counts (clock skew); a report for another day starts its count again.

    Relative to the clock, not to the newest report: a report dated years ahead must not clear today's counts.
    """
    keep = {(today + datetime.timedelta(days=d)).isoformat() for d in (-1, 0, 1)}
    return {day: counts[day] for day in sorted(counts) if day in keep}


@dataclasses.dataclass
class Resolved:
    rows: list[dict]  # text, label, report_ids: one per message, ordered by its first report
    held: list[dict]  # ties
    skipped: list[dict]  # outvoted


def resolve(reports: list[dict]) -> Resolved:
    """Rule 5 over the reports that passed screening: one row per message with a strict majority."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for report in sorted(reports, key=lambda r: r["report_id"]):
        groups[report["text_sha256"]].append(report)
    out = Resolved([], [], [])
    for group in sorted(groups.values(), key=lambda g: g[0]["report_id"]):
        winner, firsts, tally = vote(group)
        score = " to ".join(f"{tally[label]} {label}" for label in LABELS)
        if winner is None:  # no strict majority
            out.held += [_held(r, "tie", f"reporters disagree, {score}: a tie") for r in group]
            continue
        counted = [r for r in group if firsts[r["reporter"]] is r and r["label"] == winner]
        out.rows.append({"text": group[0]["text"], "label": winner, "report_ids": [r["report_id"] for r in counted]})
        for r in group:
            if firsts[r["reporter"]] is not r:
                out.skipped.append(_why(r, "skipped_because", "a repeat: the reporter's first report on the message counts"))
            elif r["label"] != winner:
                out.skipped.append(_why(r, "skipped_because", f"outvoted, {score}"))
    return out


def vote(reports: list[dict]) -> tuple[str | None, dict[str, dict], Counter]:
    """The label a strict majority of distinct reporters gave one message (None on a tie), each reporter's
    first report (by report id) counting; with those first reports by reporter and the tally."""
    firsts: dict[str, dict] = {}
    for report in sorted(reports, key=lambda r: r["report_id"]):
        firsts.setdefault(report["reporter"], report)
    tally = Counter(r["label"] for r in firsts.values())
    winner, top = max(sorted(tally.items()), key=lambda kv: kv[1])
    return (winner if top * 2 > len(firsts) else None), firsts, tally


def voted_labels(log_dir: Path | str) -> dict[str, str]:
    """The label users gave each reported message (text sha256 -> ham or spam), by `vote`; a tie gives none.

    What the graph judges served traffic by (traffic_drift, the live comparison).
    """
    reports = read_feedback(log_dir)
    reports = reports[reports["label"].isin(LABELS) & reports["text_sha256"].notna()]
    voted = {sha: vote(group.to_dict("records"))[0] for sha, group in reports.groupby("text_sha256")}
    return {sha: label for sha, label in voted.items() if label is not None}


def _why(report: dict, field: str, reason: str) -> dict:
    return {**report, field: reason}


def _held(report: dict, rule: str, reason: str) -> dict:
    return {**report, "held_rule": rule, "held_because": reason}


def batch_name(data: bytes) -> str:
    return f"feedback-labels-{hashlib.sha256(data).hexdigest()[:16]}.jsonl"


def review_folder(home: Path | str) -> Path:
    return Path(home) / REVIEW_FOLDER


def batch_bytes(rows: list[dict]) -> bytes:
    """The labelled batch as the loaders read it (JSONL, text and label; report_ids ride along for the record).

    Same rows, same bytes: the batch id is their hash, so staging them twice is one batch.
    """
    return "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows).encode("utf-8")


def report_ids_in(batch_file: Path | str) -> set[str]:
    """The report ids a staged feedback batch was made from."""
    ids: set[str] = set()
    for line in Path(batch_file).read_text(encoding="utf-8").splitlines():
        if line.strip():
            ids.update(json.loads(line).get("report_ids") or [])
    return ids


def held_line(report: dict) -> str:
    return json.dumps({k: report.get(k) for k in (*KEPT, "held_rule", "held_because")}, ensure_ascii=False, sort_keys=True) + "\n"


def read_held(ledger: Path | str) -> list[dict]:
    """The held ledger, one entry per report (the first: a tick repeated after a crash writes them again)."""
    path, seen, out = Path(ledger), set(), []
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a line cut by a crash
            continue
        if isinstance(row, dict) and row.get("report_id") not in seen:
            seen.add(row.get("report_id"))
            out.append(row)
    return out


def review_csv(held: list[dict]) -> str:
    """Held reports with a text, as a CSV the inbox reads back once a person has filled `label` (ham or spam)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(REVIEW_COLUMNS)
    for r in held:
        if r.get("text") is None:
            continue
        p = r.get("spam_probability")
        writer.writerow([
            r["text"], "", r["label"], r["held_because"], r.get("predicted_label") or "",
            "" if p is None or not math.isfinite(p) else f"{p:.4f}", r["reporter"], r["report_id"], r.get("verdict_id") or "",
        ])  # fmt: skip
    return buffer.getvalue()

