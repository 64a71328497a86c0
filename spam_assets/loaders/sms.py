"""The SMS Spam Collection format: one `label<TAB>text` per line, no header, no quoting.

Read line by line rather than with a CSV reader: texts contain `"` characters
that any quoting-aware parser would take for field quotes, merging lines.
"""

from __future__ import annotations

import re
from pathlib import Path

from spam_assets.loaders._bytes import read_text, split_lines
from spam_assets.loaders._common import BatchFormatError, Record

# What a first line of this format looks like (used by read_batch to sniff the format).
FIRST_LINE = re.compile(r"^(ham|spam)\t", re.IGNORECASE)


def read_sms(path: Path | str) -> list[Record]:
    """One record per non-blank line; row is the line number, source `<file name>:<line>`."""
    path = Path(path)
    records = []
    for number, line in enumerate(split_lines(read_text(path, lines_are_rows=True)), start=1):
        if not line.strip():
            continue
        label, tab, text = line.partition("\t")
        if not tab:
            raise BatchFormatError(
                f"line {number} has no TAB: expected `label<TAB>text`, got {line[:60]!r}",
                row=number,
                path=str(path),
            )
        records.append(Record(text, label, f"{path.name}:{number}", number))
    return records
