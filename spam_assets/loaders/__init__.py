"""Batch loaders: one received file, folder or archive of labelled messages -> a DataFrame.

    read_batch(path, SourceSpec(format="auto")) -> DataFrame[text, label, source, row, source_name]

Formats: the SMS Spam Collection (`sms`), `csv`, `tsv`, `jsonl`, raw e-mail as a
folder tree or tar archive (`email`), and `mbox`. Anything unreadable raises
BatchFormatError saying what is wrong and where. Labels are only normalised
(stripped, lower-cased); checking their values is validation's job, not ours.

Hostile input is refused early and cheaply: only regular files and real
folders are opened (loaders.files), and every size limit (loaders.limits)
is enforced while streaming. read_batch_rows collects bad rows (with file
and row) instead of raising, for the batch policy to quarantine them.
Each row also gets a source name (loaders.source_names): the batch's, a
row's own `source` column in CSV / TSV / JSONL, or the format's default.
Feed mode (sampling new rows from a large source) is in spam_assets.loaders.feed.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from spam_assets.loaders._bytes import check_text_bytes, split_lines
from spam_assets.loaders._common import (
    BatchFormatError,
    LimitExceededError,
    Problem,
    Record,
    RefusedEntryError,
    report,
)
from spam_assets.loaders.files import check_entry, open_regular
from spam_assets.loaders.limits import Limits
from spam_assets.loaders import source_names
from spam_assets.loaders.plausible import implausible
from spam_assets.loaders.email import ARCHIVE_SUFFIXES, read_email_archive, read_email_tree, read_mbox
from spam_assets.loaders.sms import FIRST_LINE as SMS_FIRST_LINE
from spam_assets.loaders.sms import read_sms
from spam_assets.loaders.tabular import read_delimited, read_jsonl

__all__ = [
    "COLUMNS", "FORMATS", "BatchFormatError", "BatchRead", "LimitExceededError", "Limits", "Problem",
    "RefusedEntryError", "SourceSpec", "detect_format", "read_batch", "read_batch_rows",
]

FORMATS = ("auto", "sms", "csv", "tsv", "jsonl", "email", "mbox")
COLUMNS = ("text", "label", "source", "row", "source_name")
_SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".mbox": "mbox"}
_SNIFF_BYTES = 64 * 1024


@dataclass(frozen=True)
class SourceSpec:
    """How to read a batch. Stored with each batch, so keep it plain data."""

    format: str = "auto"  # one of FORMATS
    text_column: str = "text"  # csv / tsv / jsonl only
    label_column: str = "label"  # csv / tsv / jsonl only
    default_label: str | None = None  # for mbox files whose name says nothing
    # The source name of every row (loaders.source_names); None: a row's `source_column`, else the format's.
    source: str | None = None
    source_column: str = "source"  # csv / tsv / jsonl only; ignored when `source` is set

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"unknown format {self.format!r}; expected one of {', '.join(FORMATS)}")
        if self.source is not None:
            source_names.checked(self.source, "source")

    def default_source(self, fmt: str) -> str:
        """The source name of a row that names none, in a batch of (detected) format `fmt`."""
        return self.source or source_names.default_for(fmt)


class BatchRead(NamedTuple):
    """A batch as read: the rows that parsed, and the rows that did not (or are not plausible text)."""

    table: pd.DataFrame  # columns COLUMNS
    problems: list[Problem]  # in row order; each names the file and the row


def read_batch(path: Path | str, spec: SourceSpec = SourceSpec(), limits: Limits | None = None) -> pd.DataFrame:
    """Parse a batch into columns text, label, source (where each row came from) and row (1-based).

    The first bad row raises BatchFormatError; read_batch_rows collects them instead.
    """
    return _read_batch(Path(path), spec, limits or Limits.from_env(), None).table


def read_batch_rows(path: Path | str, spec: SourceSpec = SourceSpec(), limits: Limits | None = None) -> BatchRead:
    """Like read_batch, but a bad row is collected rather than raised: the caller's policy decides.

    Faults of the whole file (refused entry, over a limit, binary, no such columns) still raise.
    """
    problems: list[Problem] = []
    return _read_batch(Path(path), spec, limits or Limits.from_env(), problems)


def _read_batch(path: Path, spec: SourceSpec, limits: Limits, problems: list[Problem] | None) -> BatchRead:
    try:
        check_entry(path)  # lstat: a link or a FIFO is refused here, before anything is opened
    except FileNotFoundError:
        raise FileNotFoundError(f"no such batch: {path}") from None
    fmt = detect_format(path) if spec.format == "auto" else spec.format
    records = _read(path, fmt, spec, limits, problems)
    kept = []
    for record in records:
        if doubt := implausible(record.text):
            report(problems, BatchFormatError(doubt, row=record.row, path=str(path)), record.source, record.text)
        else:
            kept.append(record)
    if not kept and not problems:
        raise BatchFormatError("contains no rows", path=str(path))
    frame = pd.DataFrame.from_records(kept, columns=list(COLUMNS))
    frame["label"] = frame["label"].str.strip().str.lower()
    frame["row"] = frame["row"].astype("int64")
    frame["source_name"] = frame["source_name"].fillna(spec.default_source(fmt)).astype(str)
    return BatchRead(frame, sorted(problems or [], key=lambda problem: problem.row))


def detect_format(path: Path | str) -> str:
    """The format "auto" means for `path`: by what it is, by its suffix, else by its first line."""
    path = Path(path)
    name = path.name.lower()
    if stat.S_ISDIR(check_entry(path).st_mode) or name.endswith(ARCHIVE_SUFFIXES):
        return "email"
    if path.suffix.lower() in _SUFFIX_FORMATS:
        return _SUFFIX_FORMATS[path.suffix.lower()]
    with open_regular(path) as file:
        sample = file.read(_SNIFF_BYTES)
    check_text_bytes(sample, path)  # empty or binary: say so, rather than "unknown format"
    lines = split_lines(sample.decode("utf-8-sig", "replace"))
    first = next((line for line in lines if line.strip()), "")
    if SMS_FIRST_LINE.match(first):
        return "sms"
    if first.startswith("From "):
        return "mbox"
    if first.lstrip().startswith("{"):
        return "jsonl"  # even if the line is broken: the JSONL reader then names the problem
    raise BatchFormatError(
        "cannot tell the format: tried sms (first line `ham<TAB>...` or `spam<TAB>...`), "
        "mbox (first line `From ...`) and jsonl (first line a JSON object); "
        f"the first line is {first[:80]!r}. Give the file a .csv/.tsv/.jsonl/.mbox name "
        "or set SourceSpec.format",
        path=str(path),
    )


def _read(path: Path, fmt: str, spec: SourceSpec, limits: Limits, problems: list[Problem] | None) -> list[Record]:
    if stat.S_ISDIR(os.lstat(path).st_mode) and fmt != "email":
        raise BatchFormatError(f"is a folder; only format 'email' reads folders, not {fmt!r}", path=str(path))
    source_column = None if spec.source else spec.source_column  # a batch named at staging: rows do not rename it
    match fmt:
        case "sms":
            return read_sms(path, limits, problems)
        case "csv" | "tsv":
            delimiter = "," if fmt == "csv" else "\t"
            return read_delimited(path, delimiter, spec.text_column, spec.label_column, limits, problems, source_column)
        case "jsonl":
            return read_jsonl(path, spec.text_column, spec.label_column, limits, problems, source_column)
        case "mbox":
            return read_mbox(path, spec.default_label, limits, problems)
        case "email":
            if stat.S_ISDIR(os.lstat(path).st_mode):
                return read_email_tree(path, limits, problems)
            return read_email_archive(path, limits, problems)
    raise ValueError(f"unknown format {fmt!r}")  # SourceSpec already checked; kept for direct callers
