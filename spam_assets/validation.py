"""Batch validation: what makes a batch fit to join the corpus.

One function computes every verdict; the `raw_sample` asset stores it and
reports it as asset checks, and the corpus only takes accepted batches. A
problem names the rows and the reason so the sender can fix the file.

The batch policy says what bad rows (unreadable lines, empty texts, labels
outside ham/spam, implausible text) do: "quarantine" (the default) sets them
aside with their reasons and accepts the rest while they are at most
max_quarantined_share of the file; "reject" rejects the batch for any of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import pandas as pd

from spam_assets.loaders import Problem
from spam_assets.settings import LABELS
from spam_assets.model.text import normalise

EXCERPT_CHARS = 200  # of a quarantined row's text: enough to recognise it, not a copy of a 1 MiB message

MAX_LISTED_ROWS = 20  # enough to find the pattern without flooding the UI


POLICIES = ("quarantine", "reject")


@dataclass(frozen=True)
class BatchRules:
    min_rows: int = 10  # rows kept (after any quarantine)
    max_empty_share: float = 0.0  # policy "reject": any empty message means the parser or sender is broken
    max_duplicate_share: float = 0.5
    # "quarantine": set bad rows aside with their reasons and accept the rest, unless more than
    # max_quarantined_share of the rows are bad (then the file itself is broken: reject it whole).
    # "reject": any bad row rejects the batch.
    policy: str = "quarantine"
    max_quarantined_share: float = 0.05

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown batch policy {self.policy!r}; expected one of {', '.join(POLICIES)}")
        for name in ("max_empty_share", "max_duplicate_share", "max_quarantined_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a share between 0 and 1, got {getattr(self, name)}")


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


def _sources(table: pd.DataFrame, mask: pd.Series, shown: int = 5) -> str:
    """' in a.csv:3, spam/7.eml': which file (and row) to open, not only a row number."""
    sources = table.loc[mask, "source"].astype(str).tolist()
    if not sources:
        return ""
    return " in " + ", ".join(sources[:shown]) + (f" and {len(sources) - shown} more" if len(sources) > shown else "")


@dataclass
class Verdict:
    outcomes: list[CheckOutcome]
    kept: pd.DataFrame | None  # the rows that may join the corpus (all of them under "reject")
    quarantined: list[dict]  # {row, source, reason, label, text}: set aside, kept for inspection

    @property
    def accepted(self) -> bool:
        return accepted(self.outcomes)


def validate(
    table: pd.DataFrame | None, parse_error: str | None, rules: BatchRules = BatchRules(),
    problems: Sequence[Problem] = (),
) -> list[CheckOutcome]:
    """Every batch check, in the order a reader should see them."""
    return judge(table, parse_error, rules, problems).outcomes


def judge(
    table: pd.DataFrame | None, parse_error: str | None, rules: BatchRules = BatchRules(),
    problems: Sequence[Problem] = (),
) -> Verdict:
    """The checks, and which rows are kept or quarantined under rules.policy.

    `problems` are rows the loader could not read (or found implausible); with empty
    texts and labels outside LABELS they are the batch's bad rows.
    """
    if parse_error is not None or table is None:
        reason = parse_error or "nothing was parsed"
        failed = lambda name: CheckOutcome(name, False, True, f"not evaluated: the batch could not be read: {reason}")
        outcomes = [
            CheckOutcome("batch_schema", False, True, reason),
            failed("batch_min_rows"),
            failed("batch_empty_texts"),
            CheckOutcome("batch_duplicate_share", False, False, f"not evaluated: {reason}"),
        ]
        return Verdict(outcomes, None, [])

    quarantine = rules.policy == "quarantine"
    seen = len(table) + len(problems)  # every row the file had, read or not
    bad_label = ~table["label"].isin(LABELS)
    empty = table["text"].fillna("").str.strip() == ""
    bad = bad_label | empty
    share = (int(bad.sum()) + len(problems)) / seen if seen else 0.0
    within = share <= rules.max_quarantined_share
    ceiling = f"{share:.1%} of {seen} rows bad; at most {rules.max_quarantined_share:.0%} may be quarantined"

    unreadable = [f"{p.reason}" for p in problems[:3]]
    found = sorted(table.loc[bad_label, "label"].unique().tolist())[:10]
    parts = [f"{len(problems)} of {seen} rows could not be read or are not plausible text: " + "; ".join(unreadable)
             + (" ..." if len(problems) > 3 else "")] if problems else []
    parts += [f"{int(bad_label.sum())} of {seen} rows have labels outside {list(LABELS)}: {found}"] if bad_label.any() else []
    schema_rows = sorted([p.row for p in problems] + table.loc[bad_label, "row"].astype(int).tolist())[:MAX_LISTED_ROWS]
    if not parts:
        schema = CheckOutcome("batch_schema", True, True, f"{len(table)} rows, columns text/label, labels within {list(LABELS)}")
    elif quarantine:
        schema = CheckOutcome("batch_schema", within, True, f"quarantined: {'; '.join(parts)} ({ceiling})", schema_rows)
    else:
        schema = CheckOutcome("batch_schema", False, True, "; ".join(parts), schema_rows)

    empty_share = float(empty.mean()) if len(table) else 0.0
    if quarantine:
        empty_texts = CheckOutcome(
            "batch_empty_texts", within or not empty.any(), True,
            f"{int(empty.sum())} empty texts{_sources(table, empty)}" + (f" quarantined ({ceiling})" if empty.any() else ""),
            _rows(table, empty),
        )
    else:
        empty_texts = CheckOutcome(
            "batch_empty_texts",
            empty_share <= rules.max_empty_share,
            True,
            f"{int(empty.sum())} empty texts{_sources(table, empty)} "
            f"({empty_share:.1%}; at most {rules.max_empty_share:.1%} allowed)",
            _rows(table, empty),
        )

    kept = table[~bad].reset_index(drop=True) if quarantine else table
    min_rows = CheckOutcome(
        "batch_min_rows", len(kept) >= rules.min_rows, True,
        f"{len(kept)} rows{' kept' if quarantine and len(kept) < len(table) else ''} (minimum {rules.min_rows})",
    )

    normalised = kept["text"].fillna("").map(normalise)
    duplicated = normalised.duplicated()
    duplicate_share = float(duplicated.mean()) if len(kept) else 0.0
    duplicates = CheckOutcome(
        "batch_duplicate_share",
        duplicate_share <= rules.max_duplicate_share,
        False,  # duplicates are collapsed by the corpus; many of them is a warning, not a rejection
        f"{int(duplicated.sum())} repeated texts ({duplicate_share:.1%}; warn above {rules.max_duplicate_share:.0%})",
        _rows(kept, duplicated),
    )
    quarantined = [
        {"row": p.row, "source": p.source, "reason": p.reason, "label": None, "text": p.excerpt} for p in problems
    ] + [
        {"row": int(r["row"]), "source": r["source"], "label": r["label"], "text": str(r["text"])[:EXCERPT_CHARS],
         "reason": "empty text" if not str(r["text"]).strip() else f"label {r['label']!r} is not one of {list(LABELS)}"}
        for _, r in table[bad].iterrows()
    ] if quarantine else []
    return Verdict([schema, min_rows, empty_texts, duplicates], kept, sorted(quarantined, key=lambda q: q["row"]))


def accepted(outcomes: list[CheckOutcome]) -> bool:
    return all(o.passed for o in outcomes if o.blocking)


def rejection_reason(outcomes: list[CheckOutcome]) -> str:
    return "; ".join(
        f"{o.name}: {o.description}" + (f" (rows {o.rows})" if o.rows else "")
        for o in outcomes
        if o.blocking and not o.passed and not o.description.startswith("not evaluated")
    )
