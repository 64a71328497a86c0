"""CSV, TSV and JSONL batches: a text column, a label column, an optional source column; others ignored.

The source column (`source` unless SourceSpec.source_column says otherwise)
names each row's source (loaders.source_names), case-folded; an empty cell
leaves the row to the batch's default, and a value that is no source name is
a bad row.

CSV/TSV use the standard quoting that pandas, Excel and the csv module write.
Parsing is done with the csv module rather than pandas so that every cell stays
a string (pandas turns a message reading "NA" or "null" into NaN) and errors
can name the line.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from spam_assets.loaders._bytes import iter_lines, without_surrogates
from spam_assets.loaders import source_names
from spam_assets.loaders._common import BatchFormatError, LimitExceededError, Problems, Record, report
from spam_assets.loaders.limits import Limits, over


def read_delimited(
    path: Path | str, delimiter: str, text_column: str, label_column: str,
    limits: Limits | None = None, problems: Problems | None = None, source_column: str | None = None,
) -> list[Record]:
    """CSV (delimiter ",") or TSV ("\\t") with a header row; row is the data row number (header excluded).

    A bad row (unreadable line, too many fields, too long) raises, or goes to `problems` when a list is given.
    """
    path, limits = Path(path), limits or Limits.from_env()
    # Python's default (128 KiB) is below real e-mail bodies; a field may be as long as a message.
    # The limit is the process's, not the reader's: put back what it was, for every other csv user.
    previous = csv.field_size_limit(limits.message_bytes)
    records: list[Record] = []
    rows, line = 0, 0  # data rows so far (read or quarantined); the last line handed to the reader

    def good_lines() -> Iterator[str]:
        nonlocal rows, line
        for line, text in iter_lines(path, limits, keepends=True):
            if isinstance(text, BatchFormatError):
                if line == 1:
                    raise text  # no header, no rows to speak of
                rows += 1
                report(problems, BatchFormatError(text.reason, row=rows or None, path=str(path)), f"{path.name}:{rows}")
                continue
            yield text

    reader = csv.reader(good_lines(), delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise BatchFormatError("file has no header row", path=str(path))
        header = [name.strip() for name in header]
        text_at, label_at = _column_indexes(header, text_column, label_column, path)
        source_at = header.index(source_column) if source_column in header else None
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue  # blank line
            rows += 1
            source = f"{path.name}:{rows}"
            if len(cells) > len(header):
                error = BatchFormatError(
                    f"line {line} has {len(cells)} fields but the header has {len(header)} "
                    "(an unquoted delimiter inside a text?)",
                    row=rows,
                    path=str(path),
                )
                report(problems, error, source, delimiter.join(cells))
                continue
            name = _source_name(_cell(cells, source_at) if source_at is not None else None, source_column, rows, path)
            if isinstance(name, BatchFormatError):
                report(problems, name, source, delimiter.join(cells))
                continue
            records.append(Record(_cell(cells, text_at), _cell(cells, label_at), source, rows, name))
    except csv.Error as error:
        if "field larger than field limit" in str(error):
            reason = over(f"a field of the row ending at line {line}", "larger", limits.message_bytes, "message_bytes")
            raise LimitExceededError(reason, row=rows + 1, path=str(path)) from None
        # The reader cannot resynchronise after a quoting error: the rest of the file is not rows we can trust.
        raise BatchFormatError(f"malformed CSV near line {line}: {error}", row=rows + 1, path=str(path)) from None
    finally:
        csv.field_size_limit(previous)
    return records


def read_jsonl(
    path: Path | str, text_column: str, label_column: str,
    limits: Limits | None = None, problems: Problems | None = None, source_column: str | None = None,
) -> list[Record]:
    """One JSON object per line (blank lines skipped); row is the line number.

    A bad line raises, or goes to `problems` when a list is given.
    """
    path = Path(path)
    objects: list[tuple[int, dict]] = []
    for number, line in iter_lines(path, limits or Limits.from_env()):
        source = f"{path.name}:{number}"
        if isinstance(line, BatchFormatError):
            report(problems, line, source)
            continue
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            report(problems, BatchFormatError(f"line {number} is not valid JSON: {error}", row=number, path=str(path)), source, line)
            continue
        if not isinstance(value, dict):
            error = BatchFormatError(
                f"line {number} is a JSON {type(value).__name__}, expected an object with "
                f"{text_column!r} and {label_column!r}",
                row=number,
                path=str(path),
            )
            report(problems, error, source, line)
            continue
        objects.append((number, value))
    found = list(dict.fromkeys(key for _, value in objects for key in value))  # first-seen order
    if objects:
        _column_indexes(found, text_column, label_column, path)
    records = []
    for number, value in objects:
        source = f"{path.name}:{number}"
        raw = _as_text(value.get(source_column)) if source_column and source_column in value else None
        name = _source_name(raw, source_column, number, path)
        if isinstance(name, BatchFormatError):
            report(problems, name, source, json.dumps(value, ensure_ascii=False))
            continue
        records.append(Record(_as_text(value.get(text_column)), _as_text(value.get(label_column)), source, number, name))
    return records


def _source_name(cell: str | None, column: str | None, row: int, path: Path) -> str | BatchFormatError | None:
    """A row's source name from its source cell: None (no column, empty cell), the name, or why it is none."""
    if cell is None or not cell.strip():
        return None
    name = cell.strip().lower()
    if (why := source_names.problem(name)) is not None:
        return BatchFormatError(
            f"column {column!r}: {why}; fix the cell, or name the whole batch (spam-platform ingest --source-name NAME)",
            row=row,
            path=str(path),
        )
    return name


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
