"""traffic_drift: one hour of served traffic judged against the champion's reference, without waiting for labels.

What the server answered in an hour (the `traffic` table) is compared with
what the champion was trained on, the same way batch drift is
(`compute_drift`: descriptors, OOV, top terms, domain classifier, the
champion's score distribution, each against its own noise at the hour's
size), with the label parts judged on the messages users gave feedback on.
Beside the verdict: the predicted spam share, the true spam share corrected
for the champion's errors (BBSE, EM) and a label-free estimate of its spam
precision, recall and F1 (CBPE), with intervals (traffic_estimates.py), and
the realised figures where feedback labels exist.

The champion rescores the hour's texts, so a message answered by an older
version is judged as the champion sees it now. With `--log-text off` there
are no texts: only the logged scores of the champion's own verdicts are
judged (the estimates), and the verdict says why the rest was not.
"""

from datetime import UTC, datetime

import dagster as dg
import numpy as np
import pandas as pd

from spam_assets.batches import write_json_atomic
from spam_assets.defs.assets.monitoring import DriftConfig, champion_reference
from spam_assets.defs.keys import TRAFFIC
from spam_assets.defs.partitions import traffic_hours
from spam_assets.defs.resources import DecayPolicy, ModelRegistry, PlatformStore
from spam_assets.defs.retrain_policy import VERDICT_KEY, Verdict
from spam_assets.drift import compute_drift
from spam_assets.feedback_labels import voted_labels
from spam_assets.traffic_estimates import estimate_traffic
from spam_assets.traffic_tables import table_path

# The hour's messages judged at most: the statistics' noise thresholds are per size, so a sample
# judges as fairly as the whole, and a busy hour costs a bounded run.
MAX_ROWS = 5000
ESTIMATES_KEY = "estimates"  # the label-free estimates as JSON (traffic_estimates.TrafficEstimates.as_metadata)


@dg.asset(
    deps=[TRAFFIC],
    partitions_def=traffic_hours,
    group_name="monitoring",
    kinds={"scipy", "scikitlearn"},
    description=(
        "One hour of served traffic (the traffic table) judged against the champion's training corpus "
        "without waiting for labels: the batch-drift statistics, each against its own noise at the hour's "
        "size (label parts on the messages with feedback), the predicted spam share, the true spam share "
        "corrected for the champion's errors (BBSE, EM) and a label-free estimate of spam F1 (CBPE), with "
        "95% intervals; realised figures where feedback labels exist."
    ),
)
def traffic_drift(
    context: dg.AssetExecutionContext,
    config: DriftConfig,
    store: PlatformStore,
    registry: ModelRegistry,
    decay: DecayPolicy,
) -> dg.MaterializeResult:
    window = context.partition_time_window
    hour = f"{window.start:%Y-%m-%d %H:%M}-{window.end:%H:%M} UTC"
    path = table_path(store.paths.traffic, window.start)
    if not path.exists():
        return _not_judged(f"no traffic table for {hour}: materialise traffic for this hour first", hour)
    frame = pd.read_parquet(path)
    if frame.empty:
        return _not_judged(f"no verdicts in {hour}: nothing to judge", hour)
    ref = champion_reference(store, registry)
    if isinstance(ref, str):
        return _not_judged(ref, hour)
    version = str(ref.champion.version)

    frame["label_fed_back"] = _feedback_labels(store, frame["text_sha256"])
    texts = frame[frame["text"].notna()]
    if len(texts) > MAX_ROWS:
        texts = texts.sample(MAX_ROWS, random_state=0)
    notes = []
    if len(texts):
        current = pd.DataFrame({"text": texts["text"].to_numpy(), "label": texts["label_fed_back"].to_numpy()})
        report = compute_drift(
            ref.corpus[["text", "label"]], current, config.thresholds(decay.f1_floor),
            score_fn=ref.score, reference_scores=ref.holdout_scores,
        )  # fmt: skip
        scored, scores = texts, ref.score(texts["text"].tolist())
    else:  # --log-text off: the champion's own logged scores are all there is
        scored = frame[frame["model_version"] == version]
        scores, report = scored["spam_probability"].to_numpy(dtype=float), None
        notes.append("the log holds no texts (--log-text off): text statistics not judged")
    if len(scored) < len(frame):
        notes.append(f"{len(scored)} of {len(frame)} verdicts judged")

    labels = scored["label_fed_back"].tolist()
    estimates = estimate_traffic(ref.holdout_scores, ref.holdout_labels, np.asarray(scores), labels)
    drift = bool(report and report.drift)
    reasons = list(report.reasons) if report else ["not judged: no texts in the log"]
    verdict = Verdict(drift, bool(report and report.decay), reasons, False, estimates.headline()[:3]).to_json(
        warnings=[*(report.warnings if report else []), *notes],
        champion_version=version,
        reference_corpus=ref.corpus_version,
        hour=context.partition_key,
        n_verdicts=len(frame),
        n_judged=len(scored),
        n_labelled=estimates.n_labelled,
    )
    summary = {"verdict": verdict, "estimates": estimates.as_metadata(), "computed_at": datetime.now(UTC).isoformat()}
    if report:
        summary["drift_report"] = report.to_dict()
    report_path = store.paths.drift / "traffic" / f"{context.partition_key.replace(':', '')}.json"
    write_json_atomic(report_path, summary)
    context.log.info(f"traffic {hour}: drift={drift}: {reasons}")
    return dg.MaterializeResult(
        metadata={
            VERDICT_KEY: dg.MetadataValue.json(verdict),
            ESTIMATES_KEY: dg.MetadataValue.json(estimates.as_metadata()),
            "drift": drift,
            "decay": verdict["decay"],
            "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in reasons) or "- none"),
            "estimates_summary": dg.MetadataValue.md("\n".join(f"- {line}" for line in estimates.headline())),
            "statistics": dg.MetadataValue.md(report.to_markdown()) if report and report.rows else "—",
            "hour": hour,
            "champion_version": version,
            "verdicts": len(frame),
            "judged": len(scored),
            "labelled_by_feedback": estimates.n_labelled,
            "report_path": dg.MetadataValue.path(str(report_path)),
        }
    )


def _feedback_labels(store: PlatformStore, text_sha256: pd.Series) -> list[str | None]:
    """The label users gave each message, by the feedback batches' own vote (feedback_labels.vote: a strict
    majority of distinct reporters); None where nobody reported it or the reporters tie."""
    voted = voted_labels(store.paths.predictions)
    return [voted.get(sha) for sha in text_sha256]


def _not_judged(reason: str, hour: str) -> dg.MaterializeResult:
    verdict = Verdict(False, False, [reason], False, []).to_json(hour=hour)
    return dg.MaterializeResult(
        metadata={
            VERDICT_KEY: dg.MetadataValue.json(verdict), "drift": False, "decay": False, "reasons": f"- {reason}", "hour": hour
        }  # fmt: skip
    )
