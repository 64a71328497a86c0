"""Types shared by every loader: the error they raise and the row they yield."""

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


class Record(NamedTuple):
    """One parsed message, before the label is normalised by read_batch."""

    text: str
    label: str
    source: str
    row: int
