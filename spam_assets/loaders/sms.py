"""The SMS Spam Collection format: one `label<TAB>text` per line, no header, no quoting.

Read line by line rather than with a CSV reader: texts contain `"` characters
that any quoting-aware parser would take for field quotes, merging lines.
"""

from __future__ import annotations

import re
from pathlib import Path

from spam_assets.loaders._bytes import iter_lines
from spam_assets.loaders._common import BatchFormatError, Problems, Record, report
from spam_assets.loaders.limits import Limits

# What a first line of this format looks like (used by read_batch to sniff the format).
FIRST_LINE = re.compile(r"^(ham|spam)\t", re.IGNORECASE)


def read_sms(path: Path | str, limits: Limits | None = None, problems: Problems | None = None) -> list[Record]:
    """One record per non-blank line; row is the line number, source `<file name>:<line>`.

    A bad line raises, or goes to `problems` when a list is given.
    """
    path = Path(path)
    records = []
    for number, line in iter_lines(path, limits or Limits.from_env()):
        source = f"{path.name}:{number}"
        if isinstance(line, BatchFormatError):
            report(problems, line, source)
            continue
        if not line.strip():
            continue
        label, tab, text = line.partition("\t")
        if not tab:
            error = BatchFormatError(
                f"line {number} has no TAB: expected `label<TAB>text`, got {line[:60]!r}", row=number, path=str(path)
            )
            report(problems, error, source, line)
            continue
        records.append(Record(text, label, source, number))
    return records
