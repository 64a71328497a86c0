"""feedback_review: the reports the feedback sensor held back from training, for a person to judge.

The sensor (defs/automation/feedback.py) appends each held report, with why,
to <home>/review/held.jsonl and requests this asset. It shows them as a table
with the share of all reports held, and writes <home>/review/feedback-review.csv:
the inbox's CSV format (`text`, `label`, other columns ignored) with `label`
left empty. Fill it with ham or spam, delete the rows you cannot judge, and
drop the file into the inbox: it becomes an ordinary batch.
"""

from collections import Counter

import dagster as dg

from spam_assets import feedback_labels as fl
from spam_assets.batches import write_text_atomic
from spam_assets.defs.keys import FEEDBACK_REVIEW
from spam_assets.defs.resources import PlatformStore

SHOWN = 50  # held rows in the UI's table; the file has them all


@dg.asset(
    key=FEEDBACK_REVIEW,
    group_name="feedback",
    kinds={"csv"},
    description=(
        "Feedback reports held back from training (over a reporter's daily cap, contradicting a confident "
        "verdict, or a tie between reporters), with the share of all reports held, and "
        "<home>/review/feedback-review.csv to relabel and drop into the inbox."
    ),
)
def feedback_review(context: dg.AssetExecutionContext, store: PlatformStore) -> dg.MaterializeResult:
    folder = fl.review_folder(store.paths.home)
    held = fl.read_held(folder / fl.HELD_LEDGER)
    everything = fl.read_reports(store.paths.predictions)  # every report, to say what share is held
    reports = len(everything.reports)
    review = folder / fl.REVIEW_FILE
    write_text_atomic(review, fl.review_csv(held))
    with_text = sum(r.get("text") is not None for r in held)
    context.log.info(f"{len(held)} held of {reports} reports; {with_text} with a text written to {review}")
    for bad in everything.bad[:20]:
        context.log.warning(f"feedback file line skipped: {bad}")
    return dg.MaterializeResult(
        metadata={
            "held": len(held),
            "reports": reports,
            "share_held": dg.MetadataValue.float(round(len(held) / reports, 4) if reports else 0.0),
            "held_by_rule": dg.MetadataValue.json(dict(sorted(Counter(r.get("held_rule") or "?" for r in held).items()))),
            "held_table": dg.MetadataValue.md(_table(held)),
            "review_file": dg.MetadataValue.path(str(review)),
            "review_rows": with_text,
            "bad_lines": len(everything.bad),
            "bad_lines_table": dg.MetadataValue.md(_bad_table(everything.bad)),
        }
    )


def _cell(value: object, width: int) -> str:
    return str("" if value is None else value)[:width].replace("|", "\\|").replace("\n", " ")


def _table(held: list[dict]) -> str:
    if not held:
        return "_no report held_"
    lines = ["| reported | P(spam) | reporter | why | text |", "|---|---|---|---|---|"]
    for r in held[-SHOWN:][::-1]:  # newest first
        p = r.get("spam_probability")
        text = r.get("text") if r.get("text") is not None else "_(text unknown)_"
        cells = [r.get("label"), "" if p is None else f"{p:.3f}", _cell(r.get("reporter"), 40), _cell(r.get("held_because"), 120), _cell(text, 80)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if len(held) > SHOWN:
        lines.append(f"\n_{len(held) - SHOWN} older in {fl.HELD_LEDGER}_")
    return "\n".join(lines)


def _bad_table(bad: list[fl.BadLine]) -> str:
    if not bad:
        return "_every line is a report_"
    lines = ["| file | line | problem |", "|---|---|---|"]
    lines += [f"| {_cell(b.file, 100)} | {b.line} | {_cell(b.reason, 160)} |" for b in bad[:20]]
    if len(bad) > 20:
        lines.append(f"\n_{len(bad) - 20} more_")
    return "\n".join(lines)
