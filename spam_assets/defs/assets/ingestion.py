"""raw_sample: one immutable, content-hashed batch of labelled messages per partition."""


import dagster as dg
import pandas as pd

from spam_assets.defs.partitions import batch_partitions
from spam_assets.defs.resources import PlatformStore
from spam_assets.loaders import BatchFormatError, read_batch
from spam_assets.validation import BatchRules, accepted, rejection_reason, validate

BATCH_CHECKS = {
    "batch_schema": "Parses as a supported format with text and label columns; every label is ham or spam.",
    "batch_min_rows": "Has enough rows to be worth a partition.",
    "batch_empty_texts": "No message is empty after parsing.",
    "batch_duplicate_share": "Not mostly repeated texts (warning: the corpus collapses duplicates).",
}
BLOCKING = {"batch_schema", "batch_min_rows", "batch_empty_texts"}
PARSED_COLUMNS = ["text", "label", "source", "row", "batch_id", "received_at"]


class RawSampleConfig(dg.Config):
    """Launchpad-editable BatchRules; the defaults are BatchRules' own."""

    min_rows: int = BatchRules.min_rows
    max_empty_share: float = BatchRules.max_empty_share
    max_duplicate_share: float = BatchRules.max_duplicate_share


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
        "received_at. The partition key is the batch's sha256 prefix. A batch that fails "
        "a blocking check is kept for inspection and never joins the corpus."
    ),
)
def raw_sample(context: dg.AssetExecutionContext, config: RawSampleConfig, store: PlatformStore) -> dg.MaterializeResult:
    batch_id = context.partition_key
    batches = store.batches()
    meta = batches.meta(batch_id)
    received = batches.received_path(batch_id)
    try:
        table = read_batch(received, batches.spec(batch_id))
        table = table.assign(batch_id=batch_id, received_at=meta["received_at"])
        error = None
    except BatchFormatError as failure:
        table, error = None, str(failure)
        context.log.error(f"batch {batch_id} ({meta['original_name']}) could not be read: {error}")

    outcomes = validate(table, error, BatchRules(config.min_rows, config.max_empty_share, config.max_duplicate_share))
    ok = accepted(outcomes)
    batches.write_parsed(batch_id, table if table is not None else pd.DataFrame(columns=PARSED_COLUMNS))
    batches.write_validation(
        batch_id,
        {"accepted": ok, "reason": rejection_reason(outcomes), "checks": [o.as_dict() for o in outcomes]},
    )
    labels = table["label"].value_counts().to_dict() if table is not None else {}
    return dg.MaterializeResult(
        metadata={
            "status": "accepted" if ok else "rejected",
            "original_name": meta["original_name"],
            "received_at": meta["received_at"],
            "received_path": dg.MetadataValue.path(str(received)),
            "format": batches.spec(batch_id).format,
            "dagster/row_count": 0 if table is None else len(table),
            "labels": dg.MetadataValue.json({k: int(v) for k, v in labels.items()}),
            "rejection_reason": rejection_reason(outcomes) or "—",
            "preview": dg.MetadataValue.md(_preview(table)),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=o.name,
                passed=o.passed,
                severity=dg.AssetCheckSeverity.ERROR if o.blocking else dg.AssetCheckSeverity.WARN,
                description=o.description,
                metadata={"rows": dg.MetadataValue.json(o.rows), "batch_id": batch_id},
            )
            for o in outcomes
        ],
        data_version=dg.DataVersion(batch_id),  # the content hash: a batch never changes
    )


def _preview(table: pd.DataFrame | None, rows: int = 5) -> str:
    if table is None or table.empty:
        return "_nothing parsed_"
    lines = ["| row | label | text |", "|---|---|---|"]
    for _, r in table.head(rows).iterrows():
        text = str(r["text"])[:120].replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {r['row']} | {r['label']} | {text} |")
    return "\n".join(lines)
