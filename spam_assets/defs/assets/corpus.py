"""cleaned_corpus: every accepted batch, normalised, deduplicated, with a stable split."""


import dataclasses
import math

import dagster as dg
import pandas as pd

from spam_assets.corpus import SplitRule, clean, data_version
from spam_assets.defs.keys import RAW_SAMPLE
from spam_assets.defs.resources import PlatformStore


class CorpusConfig(dg.Config):
    # The SplitRule (defaults are its own). Changing it moves messages: the champion is re-judged on a new holdout.
    holdout_share: float = SplitRule.holdout_share
    split_salt: str = SplitRule.salt
    # (source, label) groups this large keep a minimum holdout (corpus.py's docstring states the rule).
    min_group_rows: int = SplitRule.min_group_rows
    min_holdout_rows: int = 50
    min_holdout_spam: int = 10
    # Holdout vs train spam share may differ by this much, or by 3 standard
    # errors of the holdout share when that is larger: the check is for a
    # broken split, not for sampling noise in a small holdout.
    max_spam_share_gap: float = 0.05


@dg.asset(
    deps=[RAW_SAMPLE],
    group_name="corpus",
    automation_condition=dg.AutomationCondition.eager(),  # refresh when a batch lands (automation.py)
    kinds={"pandas", "parquet"},
    check_specs=[
        dg.AssetCheckSpec(
            "holdout_size", asset="cleaned_corpus", blocking=True,
            description="The holdout has enough messages, and enough spam, to judge a model.",
        ),
        dg.AssetCheckSpec(
            "holdout_class_balance", asset="cleaned_corpus", blocking=True,
            description="Holdout and train have similar spam shares and both classes are present.",
        ),
    ],
    description=(
        "Every accepted batch, Unicode/whitespace/case-normalised with URLs, phone numbers, "
        "money and numbers kept as marker tokens; exact duplicates collapsed; conflicting "
        "labels resolved by majority, ties to the most recent batch; each text keeps the source name "
        "(sms, email, feedback, ...) of its first occurrence; split into train/holdout by a hash of the "
        "normalised text, so a message never changes side, with a minimum holdout per (source, label) "
        "group. Snapshots live "
        "under <home>/corpus/<data version>.parquet."
    ),
)
def cleaned_corpus(context: dg.AssetExecutionContext, config: CorpusConfig, store: PlatformStore) -> dg.MaterializeResult:
    batches = store.batches()
    ids = batches.accepted_ids()
    if not ids:
        raise dg.Failure(
            "no accepted batch yet: stage one (spam-platform ingest PATH) and materialise raw_sample",
            metadata={"rejected_batches": dg.MetadataValue.json(batches.rejected_ids())},
        )
    rows = pd.concat([batches.read_parsed(b) for b in ids], ignore_index=True)
    rule = SplitRule(config.holdout_share, config.split_salt, config.min_group_rows)
    corpus, stats = clean(rows, rule)
    version = data_version(ids, rule)
    path = store.corpus().write(version, corpus, {"batch_ids": ids, "stats": dataclasses.asdict(stats)})

    train, holdout = corpus[corpus["split"] == "train"], corpus[corpus["split"] == "holdout"]
    spam_share = lambda frame: float((frame["label"] == "spam").mean()) if len(frame) else 0.0
    holdout_spam = int((holdout["label"] == "spam").sum())
    gap = abs(spam_share(holdout) - spam_share(train))
    p = spam_share(corpus)
    allowed_gap = max(config.max_spam_share_gap, 3 * math.sqrt(p * (1 - p) / max(len(holdout), 1)))
    context.log.info(f"corpus {version}: {stats}")
    return dg.MaterializeResult(
        metadata={
            "data_version": version,
            "path": dg.MetadataValue.path(str(path)),
            "dagster/row_count": len(corpus),
            "batches": len(ids),
            "rows_in": stats.rows_in,
            "duplicates_collapsed": stats.duplicates_collapsed,
            "conflicting_labels_resolved": stats.conflicts_resolved,
            "empty_dropped": stats.empty_dropped,
            "train_rows": len(train),
            "holdout_rows": len(holdout),
            "spam_share_train": spam_share(train),
            "spam_share_holdout": spam_share(holdout),
            "sources": dg.MetadataValue.md(_sources_table(corpus)),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="holdout_size",
                passed=len(holdout) >= config.min_holdout_rows and holdout_spam >= config.min_holdout_spam,
                description=(
                    f"holdout has {len(holdout)} messages (minimum {config.min_holdout_rows}) and "
                    f"{holdout_spam} spam (minimum {config.min_holdout_spam})"
                ),
                metadata={"holdout_rows": len(holdout), "holdout_spam": holdout_spam},
            ),
            dg.AssetCheckResult(
                check_name="holdout_class_balance",
                passed=gap <= allowed_gap and 0 < spam_share(train) < 1 and 0 < spam_share(holdout) < 1,
                description=(
                    f"spam share train {spam_share(train):.3f}, holdout {spam_share(holdout):.3f}, "
                    f"gap {gap:.3f} (at most {allowed_gap:.3f})"
                ),
                metadata={"gap": gap},
            ),
        ],
        data_version=dg.DataVersion(version),
    )


def _sources_table(corpus: pd.DataFrame) -> str:
    """Messages per source and side, spam among them: how much each source's holdout can say."""
    lines = ["| source | train | holdout | holdout spam |", "|---|---|---|---|"]
    for source, rows in sorted(corpus.groupby("source"), key=lambda item: -len(item[1])):
        holdout = rows[rows["split"] == "holdout"]
        train, spam = int((rows["split"] == "train").sum()), int((holdout["label"] == "spam").sum())
        lines.append(f"| {source} | {train} | {len(holdout)} | {spam} |")
    return "\n".join(lines)
