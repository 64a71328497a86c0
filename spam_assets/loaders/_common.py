"""Types shared by every loader: the errors they raise and the rows they yield."""

from __future__ import annotations

from typing import NamedTuple


class BatchFormatError(ValueError):
    """A batch that cannot be read as the format it claims (or seems) to be.

    The message says what is wrong; `row` (1-based) and `path` say where, when known,
    and are folded into str(error) so a log line alone is enough to find the problem.
    """

    def __init__(self, message: str, *, row: int | None = None, path: str | None = None):
        self.reason = message
        self.row = row
        self.path = str(path) if path is not None else None
        where = ", ".join(
            part for part in (self.path, f"row {row}" if row is not None else None) if part
        )
        super().__init__(f"{where}: {message}" if where else message)


class RefusedEntryError(BatchFormatError):
    """A symlink, FIFO, device or socket where a regular file or folder was expected: never opened."""


class LimitExceededError(BatchFormatError):
    """More bytes than a configured limit (loaders.limits); found while streaming, so nothing more was read."""


class Record(NamedTuple):
    """One parsed message, before the label is normalised by read_batch."""

    text: str
    label: str
    source: str
    row: int
    source_name: str | None = None  # a row's own source name (a CSV/JSONL `source` column); None: the batch's


class Problem(NamedTuple):
    """A row that could not be read (or is not plausible text): quarantined or fatal, as the policy says."""

    row: int
    source: str
    reason: str  # names the file and the row
    excerpt: str = ""  # the start of the row as read, for a person to look at


Problems = list[Problem]
EXCERPT_CHARS = 200


def report(problems: Problems | None, error: BatchFormatError, source: str, excerpt: str = "") -> None:
    """A bad row: raise it (no collector: the caller wants the first problem) or collect it."""
    if problems is None:
        raise error
    problems.append(Problem(error.row or 0, source, str(error), excerpt[:EXCERPT_CHARS]))
