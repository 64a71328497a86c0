"""Where a message came from, at the grain the promotion gates judge: a short source name per row.

Finer than nothing, coarser than the loaders' `source` column (the file or
archive member and line): `sms`, `email`, `feedback`, or whatever name a
batch is ingested under. A batch's name is, in order: the one it was staged
with (`spam-platform ingest --source-name NAME`, stored in its SourceSpec); for
CSV / TSV / JSONL, a row's own `source` column when the file has one; else
the default of its format (DEFAULTS). Names are short and plain
([a-z0-9._-], at most 32 characters), because they become MLflow metric
names (`source.<name>.spam_f1`) and table rows.
"""

from __future__ import annotations

import re

NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")
RULE = "1-32 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
FEEDBACK = "feedback"  # rows that come from user reports (spam_assets.feedback_labels)
# The default per format: what the file is, when nothing names it.
DEFAULTS = {"sms": "sms", "email": "email", "mbox": "email", "csv": "csv", "tsv": "tsv", "jsonl": "jsonl"}
UNKNOWN = "unknown"  # rows handed to corpus.clean without any source (direct callers, tests)


def problem(name: object) -> str | None:
    """Why `name` is not a source name; None when it is."""
    if not isinstance(name, str):
        return f"a source name must be text, not {type(name).__name__}"
    if not NAME.fullmatch(name):
        return f"{name[:60]!r} is not a source name ({RULE})"
    return None


def checked(name: str, where: str) -> str:
    """`name` if it is a source name; else ValueError saying what is wrong, prefixed by `where` (a flag, a field)."""
    if (why := problem(name)) is not None:
        raise ValueError(f"{where}: {why}")
    return name


def default_for(fmt: str) -> str:
    """The source name of a batch of format `fmt` (as detected: never "auto") that names none."""
    return DEFAULTS.get(fmt, UNKNOWN)
