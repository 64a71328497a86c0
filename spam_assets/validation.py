"""Batch validation: what makes a batch fit to join the corpus.

One function computes every verdict; the `raw_sample` asset stores it and
reports it as asset checks, and the corpus only takes accepted batches. A
problem names the rows and the reason so the sender can fix the file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import pandas as pd

from spam_assets.settings import LABELS
from spam_assets.model.text import normalise

MAX_LISTED_ROWS = 20  # enough to find the pattern without flooding the UI


@dataclass(frozen=True)
class BatchRules:
    min_rows: int = 10
    max_empty_share: float = 0.0  # any empty message means the parser or sender is broken
    max_duplicate_share: float = 0.5


@dataclass
class CheckOutcome:
    name: str
    passed: bool
    blocking: bool
    description: str
    rows: list[int] = field(default_factory=list)  # 1-based rows in the received file

    def as_dict(self) -> dict:
        return asdict(self)


def _rows(table: pd.DataFrame, mask: pd.Series) -> list[int]:
    return table.loc[mask, "row"].head(MAX_LISTED_ROWS).astype(int).tolist()


def validate(table: pd.DataFrame | None, parse_error: str | None, rules: BatchRules = BatchRules()) -> list[CheckOutcome]:
    """Every batch check, in the order a reader should see them."""
    if parse_error is not None or table is None:
        reason = parse_error or "nothing was parsed"
        failed = lambda name: CheckOutcome(name, False, True, f"not evaluated: the batch could not be read: {reason}")
        return [
            CheckOutcome("batch_schema", False, True, reason),
            failed("batch_min_rows"),
            failed("batch_empty_texts"),
            CheckOutcome("batch_duplicate_share", False, False, f"not evaluated: {reason}"),
        ]

    n = len(table)
    bad_label = ~table["label"].isin(LABELS)
    if bad_label.any():
        found = sorted(table.loc[bad_label, "label"].unique().tolist())[:10]
        schema = CheckOutcome(
            "batch_schema",
            False,
            True,
            f"{int(bad_label.sum())} of {n} rows have labels outside {list(LABELS)}: {found}",
            _rows(table, bad_label),
        )
    else:
        schema = CheckOutcome("batch_schema", True, True, f"{n} rows, columns text/label, labels within {list(LABELS)}")

    min_rows = CheckOutcome(
        "batch_min_rows", n >= rules.min_rows, True, f"{n} rows (minimum {rules.min_rows})"
    )

    empty = table["text"].fillna("").str.strip() == ""
    empty_share = float(empty.mean()) if n else 0.0
    empty_texts = CheckOutcome(
        "batch_empty_texts",
        empty_share <= rules.max_empty_share,
        True,
        f"{int(empty.sum())} empty texts ({empty_share:.1%}; at most {rules.max_empty_share:.1%} allowed)",
        _rows(table, empty),
    )

    normalised = table["text"].fillna("").map(normalise)
    duplicated = normalised.duplicated()
    duplicate_share = float(duplicated.mean()) if n else 0.0
    duplicates = CheckOutcome(
        "batch_duplicate_share",
        duplicate_share <= rules.max_duplicate_share,
        False,  # duplicates are collapsed by the corpus; many of them is a warning, not a rejection
        f"{int(duplicated.sum())} repeated texts ({duplicate_share:.1%}; warn above {rules.max_duplicate_share:.0%})",
        _rows(table, duplicated),
    )
    return [schema, min_rows, empty_texts, duplicates]


def accepted(outcomes: list[CheckOutcome]) -> bool:
    return all(o.passed for o in outcomes if o.blocking)


def rejection_reason(outcomes: list[CheckOutcome]) -> str:
    return "; ".join(
        f"{o.name}: {o.description}" + (f" (rows {o.rows})" if o.rows else "")
        for o in outcomes
        if o.blocking and not o.passed and not o.description.startswith("not evaluated")
    )
