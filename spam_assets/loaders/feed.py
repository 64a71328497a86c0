"""Feed mode: draw a few never-seen rows at a time from a large labelled source.

A daily ingestion job does `Feed(corpus, state_dir).next(100)` and stages the
result as an ordinary batch (write_jsonl). What has been emitted is kept in a
small JSON file in `state_dir`, so a restarted job never repeats a row.

Rows are identified by a hash of (text, label), not by position, so the state
survives the source being re-sorted or extended; exact duplicates in the
source are one row and are emitted once. The order is a seeded shuffle
(each row's rank is a hash of seed and row id): fixed for a seed, random
with respect to the source order, and unchanged when rows are added.
Delivery is at most once: the state is saved before the rows are returned.
Run one consumer per state folder at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import pandas as pd

from spam_assets.loaders import SourceSpec, read_batch

STATE_FILE = "feed-state.json"
_ID_HEX = 16  # 64 bits: no collision among any realistic number of rows, and the state stays small


def row_id(text: str, label: str) -> str:
    """Stable identity of a row, independent of where it sits in the source."""
    return hashlib.sha256(json.dumps([text, label], ensure_ascii=False).encode()).hexdigest()[:_ID_HEX]


class Feed:
    """Never-repeating random samples of `source` (any format read_batch reads)."""

    def __init__(
        self, source: Path | str, state_dir: Path | str, spec: SourceSpec = SourceSpec(), *, seed: int = 0
    ) -> None:
        self.source = Path(source)
        self.state_path = Path(state_dir) / STATE_FILE
        self.spec = spec
        self.seed = seed
        self._rows: pd.DataFrame | None = None  # the source, read once per Feed

    def next(self, n: int) -> pd.DataFrame | None:
        """Up to `n` rows never returned before (columns as read_batch), or None when exhausted."""
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        emitted = self.emitted()
        rows = self._ordered_rows()
        fresh = rows[~rows["id"].isin(emitted)].head(n)
        if fresh.empty:
            return None
        self._save([*emitted, *fresh["id"]])
        return fresh.drop(columns="id").reset_index(drop=True)

    def remaining(self) -> int:
        """How many distinct rows of the source have not been emitted yet."""
        return int((~self._ordered_rows()["id"].isin(self.emitted())).sum())

    def emitted(self) -> list[str]:
        """Ids of every row returned so far, oldest first."""
        if not self.state_path.exists():
            return []
        try:
            return list(json.loads(self.state_path.read_text(encoding="utf-8"))["emitted"])
        except (ValueError, KeyError, TypeError) as error:
            # Starting afresh would silently repeat rows; make a person decide.
            raise ValueError(f"{self.state_path}: unreadable feed state ({error}); fix or delete it") from None

    def _ordered_rows(self) -> pd.DataFrame:
        if self._rows is None:
            rows = read_batch(self.source, self.spec)
            rows["id"] = [row_id(text, label) for text, label in zip(rows["text"], rows["label"])]
            rows = rows.drop_duplicates("id")
            rank = [hashlib.sha256(f"{self.seed}:{id_}".encode()).digest() for id_ in rows["id"]]
            self._rows = rows.iloc[sorted(range(len(rows)), key=rank.__getitem__)].reset_index(drop=True)
        return self._rows

    def _save(self, emitted: list[str]) -> None:
        state = {"source": self.source.name, "seed": self.seed, "count": len(emitted), "emitted": emitted}
        write_atomically(self.state_path, json.dumps(state) + "\n")


def write_jsonl(frame: pd.DataFrame, path: Path | str) -> Path:
    """Write a batch as UTF-8 JSONL (one object per row, all columns), readable by read_batch.

    As read_batch reads it back: the JSONL `source` column is the rows' source name, so
    `source_name` is written there and where each row sat (`source`) as `origin`.
    """
    path = Path(path)
    if "source_name" in frame.columns:
        frame = frame.rename(columns={"source": "origin"}).rename(columns={"source_name": "source"})
    lines = (json.dumps(record, ensure_ascii=False, default=_plain) + "\n" for record in frame.to_dict("records"))
    write_atomically(path, "".join(lines))
    return path


def write_atomically(path: Path, text: str) -> None:
    """Write via a temp file + os.replace, so readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A dot-name, so a half-written file in a watched folder is skipped as hidden.
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, 0o644)  # mkstemp makes it 0600; other services read these files
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _plain(value: object) -> object:
    """numpy scalars (e.g. an int64 row) as plain Python values for json."""
    return value.item() if hasattr(value, "item") else str(value)
