"""raw_sample: one immutable, content-hashed batch of labelled messages per partition."""


import dagster as dg
import pandas as pd

from spam_assets.batches import QUARANTINE_FILE
from spam_assets.defs.partitions import batch_partitions
from spam_assets.defs.resources import PlatformStore
from spam_assets.loaders import BatchFormatError, Limits, read_batch_rows
from spam_assets.validation import BatchRules, judge, rejection_reason

POLICY_ENV, CEILING_ENV = "SPAM_BATCH_POLICY", "SPAM_MAX_QUARANTINED_SHARE"

BATCH_CHECKS = {
    "batch_schema": "Parses as a supported format with text and label columns; every label is ham or spam.",
    "batch_min_rows": "Has enough rows to be worth a partition.",
    "batch_empty_texts": "No message is empty after parsing.",
    "batch_duplicate_share": "Not mostly repeated texts (warning: the corpus collapses duplicates).",
}
BLOCKING = {"batch_schema", "batch_min_rows", "batch_empty_texts"}
PARSED_COLUMNS = ["text", "label", "source", "row", "source_name", "batch_id", "received_at"]


class RawSampleConfig(dg.Config):
    """Launchpad-editable BatchRules; the defaults are BatchRules' own, the policy's from the environment."""

    min_rows: int = BatchRules.min_rows
    max_empty_share: float = BatchRules.max_empty_share
    max_duplicate_share: float = BatchRules.max_duplicate_share
    policy: str | None = None  # "quarantine" or "reject"; unset: $SPAM_BATCH_POLICY, else "quarantine"
    max_quarantined_share: float | None = None  # unset: $SPAM_MAX_QUARANTINED_SHARE, else 0.05

    def rules(self) -> BatchRules:
        policy = self.policy or dg.EnvVar(POLICY_ENV).get_value(BatchRules.policy) or BatchRules.policy
        if self.max_quarantined_share is not None:
            ceiling = self.max_quarantined_share
        else:
            raw = dg.EnvVar(CEILING_ENV).get_value("") or ""
            try:
                ceiling = float(raw) if raw.strip() else BatchRules.max_quarantined_share
            except ValueError:
                raise ValueError(f"{CEILING_ENV}={raw!r} is not a share between 0 and 1") from None
        return BatchRules(
            self.min_rows, self.max_empty_share, self.max_duplicate_share, policy.strip().lower(), ceiling
        )


@dg.asset(
    partitions_def=batch_partitions,
    group_name="ingestion",
    kinds={"pandas", "parquet"},
    check_specs=[
        dg.AssetCheckSpec(name, asset="raw_sample", description=text, blocking=name in BLOCKING)
        for name, text in BATCH_CHECKS.items()
    ],
    description=(
        "One batch of labelled messages as received (kept byte for byte under "
        "<home>/batches/<batch id>/received) and parsed into text, label, source, row, "
        "source_name (sms, email, feedback or the name given at ingest: the grain the promotion gates judge), "
        "received_at. The partition key is the batch's sha256 prefix. A batch that fails "
        "a blocking check is kept for inspection and never joins the corpus. Under the quarantine "
        "policy ($SPAM_BATCH_POLICY) bad rows are set aside in quarantined.jsonl and the rest accepted."
    ),
)
def raw_sample(context: dg.AssetExecutionContext, config: RawSampleConfig, store: PlatformStore) -> dg.MaterializeResult:
    batch_id = context.partition_key
    batches = store.batches()
    meta = batches.meta(batch_id)
    received = batches.received_path(batch_id)
    rules = config.rules()
    try:
        read = read_batch_rows(received, batches.spec(batch_id), Limits.from_env())
        table, problems = read.table.assign(batch_id=batch_id, received_at=meta["received_at"]), read.problems
        error = None
    except BatchFormatError as failure:
        table, problems, error = None, [], str(failure)
        context.log.error(f"batch {batch_id} ({meta['original_name']}) could not be read: {error}")

    verdict = judge(table, error, rules, problems)
    ok, reason = verdict.accepted, rejection_reason(verdict.outcomes)
    kept = verdict.kept
    batches.write_parsed(batch_id, kept if kept is not None else pd.DataFrame(columns=PARSED_COLUMNS))
    if verdict.quarantined:
        batches.write_quarantine(batch_id, verdict.quarantined)
        context.log.warning(
            f"batch {batch_id} ({meta['original_name']}): {len(verdict.quarantined)} rows quarantined, "
            f"kept in {batches.folder(batch_id) / QUARANTINE_FILE}"
        )
    batches.write_validation(
        batch_id,
        {
            "accepted": ok,
            "reason": reason,
            "policy": rules.policy,
            "quarantined": len(verdict.quarantined),
            "checks": [o.as_dict() for o in verdict.outcomes],
        },
    )
    labels = kept["label"].value_counts().to_dict() if kept is not None else {}
    sources = kept["source_name"].value_counts().to_dict() if kept is not None else {}
    return dg.MaterializeResult(
        metadata={
            "status": "accepted" if ok else "rejected",
            "original_name": meta["original_name"],
            "received_at": meta["received_at"],
            "received_path": dg.MetadataValue.path(str(received)),
            "format": batches.spec(batch_id).format,
            "dagster/row_count": 0 if kept is None else len(kept),
            "labels": dg.MetadataValue.json({k: int(v) for k, v in labels.items()}),
            "source_names": dg.MetadataValue.json({k: int(v) for k, v in sources.items()}),
            "rejection_reason": reason or "—",
            "policy": rules.policy,
            "quarantined_rows": len(verdict.quarantined),
            "quarantine": dg.MetadataValue.md(_quarantine_table(verdict.quarantined)),
            "preview": dg.MetadataValue.md(_preview(kept)),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=o.name,
                passed=o.passed,
                severity=dg.AssetCheckSeverity.ERROR if o.blocking else dg.AssetCheckSeverity.WARN,
                description=o.description,
                metadata={"rows": dg.MetadataValue.json(o.rows), "batch_id": batch_id},
            )
            for o in verdict.outcomes
        ],
        data_version=dg.DataVersion(batch_id),  # the content hash: a batch never changes
    )


def _quarantine_table(rows: list[dict], shown: int = 20) -> str:
    if not rows:
        return "_no row quarantined_"
    lines = ["| row | source | reason | text |", "|---|---|---|---|"]
    for row in rows[:shown]:
        cells = [str(row["row"]), str(row["source"]), str(row["reason"])[:200], str(row.get("text") or "")[:80]]
        lines.append("| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in cells) + " |")
    if len(rows) > shown:
        lines.append(f"\n_{len(rows) - shown} more in {QUARANTINE_FILE}_")
    return "\n".join(lines)


def _preview(table: pd.DataFrame | None, rows: int = 5) -> str:
    if table is None or table.empty:
        return "_nothing parsed_"
    lines = ["| row | label | text |", "|---|---|---|"]
    for _, r in table.head(rows).iterrows():
        text = str(r["text"])[:120].replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {r['row']} | {r['label']} | {text} |")
    return "\n".join(lines)
