"""The cleaned corpus: every accepted batch, normalised, deduplicated, split.

Rules, stated once:
- Duplicates are texts equal after `text.normalise`; each appears once.
- Conflicting labels for one text: the majority of its occurrences wins; a
  tie goes to the most recently received occurrence (a later batch is taken
  as a correction of an earlier one).
- The split is a hash of the normalised text (and a salt): a message lands
  on the same side in every retrain, so holdout scores of champion and
  challenger are comparable and no message leaks from holdout into training.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from spam_assets.batches import write_json_atomic, write_text_atomic
from spam_assets.model.text import normalise

CLEANING_VERSION = "1"  # bump when the rules above change: it feeds the data version
SPLIT_BUCKETS = 10_000


@dataclass(frozen=True)
class SplitRule:
    holdout_share: float = 0.2
    salt: str = ""


def split_of(normalised_text: str, rule: SplitRule = SplitRule()) -> str:
    digest = hashlib.sha256(f"{rule.salt}\0{normalised_text}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % SPLIT_BUCKETS
    return "holdout" if bucket < rule.holdout_share * SPLIT_BUCKETS else "train"


def data_version(batch_ids: list[str], rule: SplitRule) -> str:
    """Same accepted batches and rules → same version; it tags models trained on it."""
    key = "\n".join([CLEANING_VERSION, repr(rule), *sorted(batch_ids)])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass
class CleaningStats:
    rows_in: int
    empty_dropped: int
    duplicates_collapsed: int
    conflicts_resolved: int
    rows_out: int


def clean(rows: pd.DataFrame, rule: SplitRule = SplitRule()) -> tuple[pd.DataFrame, CleaningStats]:
    """Rows with text, label, batch_id, received_at → one row per distinct text.

    Output columns: text (first occurrence, whitespace-trimmed), normalised,
    label, split, batch_id (first batch that had it), occurrences.
    """
    rows = rows.reset_index(drop=True).copy()
    rows["text"] = rows["text"].fillna("").str.strip()
    rows["normalised"] = rows["text"].map(normalise)
    empty = rows["normalised"] == ""
    rows = rows[~empty]
    rows = rows.assign(order=range(len(rows))).sort_values(["received_at", "order"], kind="stable")

    counts = rows.groupby(["normalised", "label"]).size().unstack(fill_value=0)
    last_label = rows.groupby("normalised")["label"].last()  # most recent occurrence
    majority = counts.idxmax(axis=1)
    tie = counts.eq(counts.max(axis=1), axis=0).sum(axis=1) > 1
    label = majority.where(~tie, last_label)
    conflicts = int((counts.gt(0).sum(axis=1) > 1).sum())

    first = rows.drop_duplicates("normalised", keep="first").set_index("normalised")
    corpus = pd.DataFrame(
        {
            "text": first["text"],
            "normalised": first.index,
            "label": label.reindex(first.index).to_numpy(),
            "batch_id": first["batch_id"],
            "occurrences": rows.groupby("normalised").size().reindex(first.index).to_numpy(),
        }
    ).reset_index(drop=True)
    corpus["split"] = corpus["normalised"].map(lambda t: split_of(t, rule))
    stats = CleaningStats(
        rows_in=int(len(rows) + empty.sum()),
        empty_dropped=int(empty.sum()),
        duplicates_collapsed=int(len(rows) - len(corpus)),
        conflicts_resolved=conflicts,
        rows_out=len(corpus),
    )
    return corpus, stats


class CorpusStore:
    """Corpus snapshots by data version, so the reference a champion was trained on stays readable."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, version: str) -> Path:
        return self.root / f"{version}.parquet"

    def write(self, version: str, corpus: pd.DataFrame, manifest: dict) -> Path:
        """Store a snapshot and its manifest (batch ids, stats), then point CURRENT at it."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(version)
        # One temp file per process: two commands at once may write the same version.
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        corpus.to_parquet(tmp, index=False)
        os.replace(tmp, path)
        write_json_atomic(path.with_suffix(".json"), manifest)
        write_text_atomic(self.root / "CURRENT", version)
        return path

    def current_version(self) -> str | None:
        pointer = self.root / "CURRENT"
        return pointer.read_text().strip() if pointer.exists() else None

    def manifest(self, version: str) -> dict:
        return json.loads(self.path(version).with_suffix(".json").read_text())

    def read(self, version: str | None = None) -> pd.DataFrame:
        version = version or self.current_version()
        if version is None:
            raise FileNotFoundError(f"no corpus in {self.root}: materialise cleaned_corpus first")
        return pd.read_parquet(self.path(version))
