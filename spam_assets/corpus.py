"""The cleaned corpus: every accepted batch, normalised, deduplicated, split.

Rules, stated once:
- Duplicates are texts equal after `text.normalise`; each appears once.
- Conflicting labels for one text: the majority of its occurrences wins; a
  tie goes to the most recently received occurrence (a later batch is taken
  as a correction of an earlier one).
- Each text keeps the source name (loaders.source_names) of its first
  occurrence: `source` in the corpus.
- The split is a hash of the normalised text (and a salt): a message lands
  on the same side in every retrain, so holdout scores of champion and
  challenger are comparable and no message leaks from holdout into training.
- Stratified by source and label on top of that hash: every (source, label)
  group of at least `min_group_rows` messages keeps at least half its
  expected holdout, max(1, floor(holdout_share * n / 2)); a group whose hash
  share falls short gets the rest from its train members with the lowest
  hashes. Half, not all, of the expected share: a group of hundreds never
  falls that short by chance (for n = 400 it is 5 standard deviations
  away), so the hash alone decides there and no message of a large source
  moves as batches are added; only a small group, while it is small, can
  see a topped-up message return to train once its hash share catches up
  (or a train one topped up as the need grows). Each source then has
  holdout to be judged on (the per-source gates, decision.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from spam_assets.batches import write_json_atomic, write_text_atomic
from spam_assets.loaders import source_names
from spam_assets.model.text import normalise

CLEANING_VERSION = "2"  # bump when the rules above change: it feeds the data version
SPLIT_BUCKETS = 10_000


@dataclass(frozen=True)
class SplitRule:
    holdout_share: float = 0.2
    salt: str = ""
    min_group_rows: int = 10  # (source, label) groups this large get a minimum holdout (module docstring)

    def minimum_holdout(self, group_rows: int) -> int:
        """The holdout a (source, label) group of `group_rows` messages keeps at least."""
        if group_rows < self.min_group_rows:
            return 0
        return max(1, int(self.holdout_share * group_rows / 2))


def _hash(normalised_text: str, rule: SplitRule) -> int:
    return int.from_bytes(hashlib.sha256(f"{rule.salt}\0{normalised_text}".encode()).digest()[:8], "big")


def split_of(normalised_text: str, rule: SplitRule = SplitRule()) -> str:
    """The hash's side for one text, before the per-group minimum (`split` applies both)."""
    return "holdout" if _hash(normalised_text, rule) % SPLIT_BUCKETS < rule.holdout_share * SPLIT_BUCKETS else "train"


def split(corpus: pd.DataFrame, rule: SplitRule = SplitRule()) -> pd.Series:
    """Side of each row of `corpus` (normalised, source, label): the hash's, topped up per (source, label) group."""
    hashes = corpus["normalised"].map(lambda text: _hash(text, rule))
    buckets = hashes % SPLIT_BUCKETS
    sides = pd.Series("train", index=corpus.index).where(buckets >= rule.holdout_share * SPLIT_BUCKETS, "holdout")
    for _, group in corpus.groupby(["source", "label"], sort=False):
        short = rule.minimum_holdout(len(group)) - int((sides[group.index] == "holdout").sum())
        if short > 0:  # the lowest-hash train members: the ones the hash itself would take next
            train = group.index[sides[group.index] == "train"]
            order = sorted(train, key=lambda i: (buckets[i], hashes[i]))
            sides[order[:short]] = "holdout"
    return sides


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
    """Rows with text, label, batch_id, received_at (and source_name) → one row per distinct text.

    Output columns: text (first occurrence, whitespace-trimmed), normalised,
    label, source (the first occurrence's source_name; `unknown` without
    one), split, batch_id (first batch that had it), occurrences.
    """
    rows = rows.reset_index(drop=True).copy()
    if "source_name" not in rows.columns:
        rows["source_name"] = source_names.UNKNOWN
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
            "source": first["source_name"].fillna(source_names.UNKNOWN).astype(str),
            "batch_id": first["batch_id"],
            "occurrences": rows.groupby("normalised").size().reindex(first.index).to_numpy(),
        }
    ).reset_index(drop=True)
    corpus["split"] = split(corpus, rule)
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
        corpus = pd.read_parquet(self.path(version))
        if "source" not in corpus.columns:  # a snapshot from before source names (CLEANING_VERSION 1)
            corpus["source"] = source_names.UNKNOWN
        return corpus
