"""traffic: the prediction log, one Parquet table per hour of served verdicts.

Partitioned by hour (defs/partitions.py: `traffic_hours`), because a switch
in traffic must show within the hour, one run's work must stay bounded at
high volume, and a small hour is still safe to judge with size-aware drift
thresholds; a daily view is a roll-up of 24 tables (spam_assets/traffic_tables.py
argues it in full). The traffic sensor (automation/traffic.py) materialises
an hour each time a segment that can hold it closes; a run rewrites the
hour's whole table, so re-materialising is idempotent.
"""

import dagster as dg

from spam_assets.defs.partitions import traffic_hours
from spam_assets.defs.resources import PlatformStore
from spam_assets.traffic_tables import SCHEMA, compact_hour, summary, table_path, write_table

PREVIEW_ROWS = 5
PREVIEW_TEXT = 60  # characters of a text shown in the preview
BAD_LINES_SHOWN = 20


@dg.asset(
    partitions_def=traffic_hours,
    group_name="monitoring",
    # One compaction at a time (pools default to one slot, spam_assets/instance.py): two runs of the
    # same hour never race, so the later one, which read more segments, leaves the table.
    pool="traffic",
    kinds={"parquet", "pandas"},
    metadata={"dagster/column_schema": dg.TableSchema([dg.TableColumn(f.name, str(f.type)) for f in SCHEMA])},
    description=(
        "Every verdict the server gave in one UTC hour (its prediction log, $SPAM_HOME/predictions), "
        "compacted from the log's segments into one typed table, traffic/<YYYY-MM-DD-HH>.parquet, "
        "deduplicated by verdict_id; served verdicts only (shadow verdicts of a challenger under rollout are "
        "left out and counted). Materialised by traffic_sensor as segments close; "
        "re-materialising an hour replaces its table."
    ),
)
def traffic(context: dg.AssetExecutionContext, store: PlatformStore) -> dg.MaterializeResult:
    window = context.partition_time_window
    log_dir = store.paths.predictions
    result = compact_hour(log_dir, window.start)
    path = write_table(result.table, table_path(store.paths.traffic, window.start))
    stats = summary(result.table)
    for bad in result.bad_lines[:BAD_LINES_SHOWN]:
        context.log.warning(f"traffic: skipped {bad}")

    metadata: dict = {
        "dagster/row_count": stats["verdicts"],
        "verdicts": stats["verdicts"],
        "hour": f"{window.start:%Y-%m-%d %H:%M}-{window.end:%H:%M} UTC",
        "segments_read": len(result.segments_read),
        "bad_lines": len(result.bad_lines),
        "duplicates_dropped": result.duplicates,
        "shadow_verdicts_left_out": result.unserved,  # a challenger's (or the champion's) unserved opinion
        "path": dg.MetadataValue.path(str(path)),
        "summary": dg.MetadataValue.json(stats),
    }
    if result.bad_lines:
        shown = "\n".join(f"- `{b.file}` line {b.line}: {b.reason}" for b in result.bad_lines[:BAD_LINES_SHOWN])
        more = len(result.bad_lines) - BAD_LINES_SHOWN
        metadata["bad_lines_detail"] = dg.MetadataValue.md(shown + (f"\n- … and {more} more" if more > 0 else ""))
    if not stats["verdicts"]:
        read = len(result.segments_read)
        where = f"{read} segments read" if read else "no published segment can hold it"
        metadata["note"] = f"no verdicts in this hour ({where}, log {log_dir}): the table is empty"
        return dg.MaterializeResult(metadata=metadata)

    frame = result.table.to_pandas()
    metadata |= {
        "spam_share_predicted": round(stats["spam_share"], 4),
        "model_versions": dg.MetadataValue.md(_counts_md("model version", stats["model_versions"])),
        "apis": dg.MetadataValue.md(_counts_md("API", stats["apis"])),
        "spam_probability_histogram": dg.MetadataValue.md(_histogram_md(stats["spam_probability_histogram"])),
        "preview": dg.MetadataValue.md(_preview_md(frame.head(PREVIEW_ROWS))),
    }
    for name in ("latency_p50_ms", "latency_p99_ms"):
        if name in stats:  # absent when no record carries a latency
            metadata[name] = round(stats[name], 3)
    return dg.MaterializeResult(metadata=metadata)


def _cell(value) -> str:
    """A value safe inside a Markdown table cell: one line, pipes escaped."""
    text = "" if value is None else str(value)
    return " ".join(text.split()).replace("|", "\\|")


def _counts_md(what: str, counts: dict[str, int]) -> str:
    total = sum(counts.values()) or 1
    rows = [f"| {what} | verdicts | share |", "| --- | ---: | ---: |"]
    rows += [f"| {_cell(k)} | {n:,} | {n / total:.1%} |" for k, n in counts.items()]
    return "\n".join(rows)


def _histogram_md(bins: list[dict]) -> str:
    peak = max((b["verdicts"] for b in bins), default=0) or 1
    rows = ["| P(spam) | verdicts | |", "| --- | ---: | --- |"]
    for b in bins:
        bar = "█" * round(20 * b["verdicts"] / peak)
        rows.append(f"| {b['from']:.1f}-{b['to']:.1f} | {b['verdicts']:,} | {bar} |")
    return "\n".join(rows)


def _preview_md(frame) -> str:
    rows = ["| time | api | model | label | P(spam) | text |", "| --- | --- | --- | --- | ---: | --- |"]
    for r in frame.itertuples(index=False):
        text = r.text if isinstance(r.text, str) else "(not logged)"
        short = text if len(text) <= PREVIEW_TEXT else text[: PREVIEW_TEXT - 1] + "…"
        p = "" if r.spam_probability != r.spam_probability else f"{r.spam_probability:.3f}"  # NaN: not scored
        rows.append(
            f"| {r.time:%H:%M:%S} | {_cell(r.api)} | v{_cell(r.model_version)} | {_cell(r.label)} | {p} "
            f"| {_cell(short)} |"
        )
    return "\n".join(rows)
