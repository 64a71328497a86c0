"""Batch loaders: one received file, folder or archive of labelled messages -> a DataFrame.

    read_batch(path, SourceSpec(format="auto")) -> DataFrame[text, label, source, row]

Formats: the SMS Spam Collection (`sms`), `csv`, `tsv`, `jsonl`, raw e-mail as a
folder tree or tar archive (`email`), and `mbox`. Anything unreadable raises
BatchFormatError saying what is wrong and where. Labels are only normalised
(stripped, lower-cased); checking their values is validation's job, not ours.
Feed mode (sampling new rows from a large source) is in spam_assets.loaders.feed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from spam_assets.loaders._bytes import check_text_bytes, split_lines
from spam_assets.loaders._common import BatchFormatError, Record
from spam_assets.loaders.email import ARCHIVE_SUFFIXES, read_email_archive, read_email_tree, read_mbox
from spam_assets.loaders.sms import FIRST_LINE as SMS_FIRST_LINE
from spam_assets.loaders.sms import read_sms
from spam_assets.loaders.tabular import read_delimited, read_jsonl

__all__ = ["COLUMNS", "FORMATS", "BatchFormatError", "SourceSpec", "detect_format", "read_batch"]

FORMATS = ("auto", "sms", "csv", "tsv", "jsonl", "email", "mbox")
COLUMNS = ("text", "label", "source", "row")
_SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".mbox": "mbox"}
_SNIFF_BYTES = 64 * 1024


@dataclass(frozen=True)
class SourceSpec:
    """How to read a batch. Stored with each batch, so keep it plain data."""

    format: str = "auto"  # one of FORMATS
    text_column: str = "text"  # csv / tsv / jsonl only
    label_column: str = "label"  # csv / tsv / jsonl only
    default_label: str | None = None  # for mbox files whose name says nothing

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"unknown format {self.format!r}; expected one of {', '.join(FORMATS)}")


def read_batch(path: Path | str, spec: SourceSpec = SourceSpec()) -> pd.DataFrame:
    """Parse a batch into columns text, label, source (where each row came from) and row (1-based)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such batch: {path}")
    records = _read(path, detect_format(path) if spec.format == "auto" else spec.format, spec)
    if not records:
        raise BatchFormatError("contains no rows", path=str(path))
    frame = pd.DataFrame.from_records(records, columns=list(COLUMNS))
    frame["label"] = frame["label"].str.strip().str.lower()
    frame["row"] = frame["row"].astype("int64")
    return frame


def detect_format(path: Path | str) -> str:
    """The format "auto" means for `path`: by what it is, by its suffix, else by its first line."""
    path = Path(path)
    name = path.name.lower()
    if path.is_dir() or name.endswith(ARCHIVE_SUFFIXES):
        return "email"
    if path.suffix.lower() in _SUFFIX_FORMATS:
        return _SUFFIX_FORMATS[path.suffix.lower()]
    with path.open("rb") as file:
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


def _read(path: Path, fmt: str, spec: SourceSpec) -> list[Record]:
    if path.is_dir() and fmt != "email":
        raise BatchFormatError(f"is a folder; only format 'email' reads folders, not {fmt!r}", path=str(path))
    match fmt:
        case "sms":
            return read_sms(path)
        case "csv" | "tsv":
            return read_delimited(path, "," if fmt == "csv" else "\t", spec.text_column, spec.label_column)
        case "jsonl":
            return read_jsonl(path, spec.text_column, spec.label_column)
        case "mbox":
            return read_mbox(path, spec.default_label)
        case "email":
            return read_email_tree(path) if path.is_dir() else read_email_archive(path)
    raise ValueError(f"unknown format {fmt!r}")  # SourceSpec already checked; kept for direct callers
