"""Label requests: when traffic has drifted and too few labels exist to retrain, ask people for the right ones.

The messages whose labels teach the model most are those it is least sure
of (uncertainty sampling: P(spam) nearest 0.5); a message seen many times is
asked once. The request is a CSV the inbox reads back (columns label, text):
a person fills in `spam` or `ham` and drops the file into the inbox, where it
becomes a labelled batch through the same checks as any other. A row left
unlabelled is quarantined there with its reason, never trained on.
"""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

import pandas as pd

from spam_assets.batches import write_text_atomic

COLUMNS = ("label", "text", "spam_probability", "verdict_id")  # the inbox reads label and text; the rest is context


def most_uncertain(traffic: pd.DataFrame, limit: int) -> pd.DataFrame:
    """Up to `limit` distinct texts of `traffic` (columns text, spam_probability, verdict_id), least certain first."""
    rows = traffic[traffic["text"].notna() & (traffic["text"].str.strip() != "")].copy()
    rows["uncertainty"] = (rows["spam_probability"].astype(float) - 0.5).abs()
    rows["key"] = rows["text"].map(lambda t: hashlib.sha256(t.encode("utf-8", "surrogatepass")).hexdigest())
    rows = rows.sort_values(["uncertainty", "verdict_id"], kind="stable").drop_duplicates("key")
    return rows.head(limit)[["text", "spam_probability", "verdict_id"]].reset_index(drop=True)


def write_request(rows: pd.DataFrame, path: Path) -> Path:
    """The CSV to label: an empty label column first, then the text and what the champion thought."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for row in rows.itertuples(index=False):
        writer.writerow(["", row.text, f"{float(row.spam_probability):.4f}", row.verdict_id])
    write_text_atomic(path, buffer.getvalue())  # makes the folder
    return path
