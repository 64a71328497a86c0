"""CSV, TSV and JSONL batches: a text column and a label column, other columns ignored.

CSV/TSV use the standard quoting that pandas, Excel and the csv module write.
Parsing is done with the csv module rather than pandas so that every cell stays
a string (pandas turns a message reading "NA" or "null" into NaN) and errors
can name the line.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable
from pathlib import Path

from spam_assets.loaders._bytes import read_text, split_lines, without_surrogates
from spam_assets.loaders._common import BatchFormatError, Record


def read_delimited(path: Path | str, delimiter: str, text_column: str, label_column: str) -> list[Record]:
    """CSV (delimiter ",") or TSV ("\\t") with a header row; row is the data row number (header excluded)."""
    path = Path(path)
    # The default limit (128 KiB per field) is smaller than real e-mail bodies.
    csv.field_size_limit(max(csv.field_size_limit(), min(sys.maxsize, 2**31 - 1)))
    reader = csv.reader(io.StringIO(read_text(path), newline=""), delimiter=delimiter, strict=True)
    records: list[Record] = []
    try:
        header = next(reader, None)
        if header is None:  # unreachable after read_text's blank check, kept for safety
            raise BatchFormatError("file has no header row", path=str(path))
        header = [name.strip() for name in header]
        text_at, label_at = _column_indexes(header, text_column, label_column, path)
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue  # blank line
            row = len(records) + 1
            if len(cells) > len(header):
                raise BatchFormatError(
                    f"line {reader.line_num} has {len(cells)} fields but the header has {len(header)} "
                    "(an unquoted delimiter inside a text?)",
                    row=row,
                    path=str(path),
                )
            records.append(Record(_cell(cells, text_at), _cell(cells, label_at), f"{path.name}:{row}", row))
    except csv.Error as error:
        raise BatchFormatError(
            f"malformed CSV near line {reader.line_num}: {error}", row=len(records) + 1, path=str(path)
        ) from None
    return records


def read_jsonl(path: Path | str, text_column: str, label_column: str) -> list[Record]:
    """One JSON object per line (blank lines skipped); row is the line number."""
    path = Path(path)
    objects: list[tuple[int, dict]] = []
    for number, line in enumerate(split_lines(read_text(path, lines_are_rows=True)), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise BatchFormatError(f"line {number} is not valid JSON: {error}", row=number, path=str(path)) from None
        if not isinstance(value, dict):
            raise BatchFormatError(
                f"line {number} is a JSON {type(value).__name__}, expected an object with "
                f"{text_column!r} and {label_column!r}",
                row=number,
                path=str(path),
            )
        objects.append((number, value))
    found = list(dict.fromkeys(key for _, value in objects for key in value))  # first-seen order
    _column_indexes(found, text_column, label_column, path)
    return [
        Record(_as_text(value.get(text_column)), _as_text(value.get(label_column)), f"{path.name}:{number}", number)
        for number, value in objects
    ]


def _column_indexes(found: list[str], text_column: str, label_column: str, path: Path) -> tuple[int, int]:
    missing = [name for name in (text_column, label_column) if name not in found]
    if missing:
        raise BatchFormatError(
            f"missing column{'s' if len(missing) > 1 else ''} {_names(missing)}; columns found: {_names(found)}"
            " (set SourceSpec.text_column / label_column to use other names)",
            path=str(path),
        )
    return found.index(text_column), found.index(label_column)


def _names(names: Iterable[str]) -> str:
    return ", ".join(repr(name) for name in names) or "none"


def _cell(cells: list[str], index: int) -> str:
    """A short row's missing trailing cells count as empty."""
    return cells[index] if index < len(cells) else ""


def _as_text(value: object) -> str:
    if value is None:
        return ""
    return without_surrogates(value) if isinstance(value, str) else str(value)
