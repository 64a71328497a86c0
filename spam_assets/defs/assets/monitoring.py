"""drift_statistics: the newest batches against what the champion was trained on."""


import dataclasses
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from spam_assets.batches import write_json_atomic
from spam_assets.defs.keys import CLEANED_CORPUS
from spam_assets.defs.resources import DecayPolicy, ModelRegistry, PlatformStore
from spam_assets.defs.retrain_policy import VERDICT_KEY, Verdict
from spam_assets.drift import DriftReport, DriftThresholds, compute_drift
from spam_assets.model.tags import TAG_CORPUS_VERSION
from spam_assets.modeling import spam_probability
from spam_assets.settings import LABELS
from spam_assets.model.text import normalise


class DriftConfig(dg.Config):
    """Thresholds, defaults from DriftThresholds (PSI 0.1/0.25, α 0.05, AUC 0.55). The decay floor is a resource.

    alpha is the verdict's false-alarm rate per same-distribution batch; OOV and
    score PSI must also pass their own noise quantile at the batch's size.
    """

    psi_moderate: float = DriftThresholds.psi_moderate
    psi_significant: float = DriftThresholds.psi_significant
    alpha: float = DriftThresholds.alpha
    domain_auc: float = DriftThresholds.domain_auc
    oov_rate: float = DriftThresholds.oov_rate
    term_share: float = DriftThresholds.term_share
    min_rows: int = DriftThresholds.min_rows

    def thresholds(self, f1_floor: float) -> DriftThresholds:
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(DriftThresholds) if hasattr(self, f.name)}
        return DriftThresholds(**own, f1_floor=f1_floor)


@dg.asset(
    deps=[CLEANED_CORPUS],
    group_name="monitoring",
    automation_condition=dg.AutomationCondition.eager(),  # refresh when a batch lands (automation.py)
    kinds={"scipy", "scikitlearn"},
    description=(
        "Batches that arrived after the champion's training corpus, compared with that corpus: "
        "KS and PSI on message descriptors, OOV rate, chi-square on top terms (Holm-corrected), "
        "label prior shift, the champion's score PSI and realised spam F1, and a domain-classifier "
        "AUC, each judged against its own sampling noise at the batch's size, so a same-distribution "
        "batch is called drift or decay in at most α = 5% of batches. One verdict, drift true/false "
        "with reasons; decay when the realised F1's upper confidence bound < floor."
    ),
)
def drift_statistics(
    context: dg.AssetExecutionContext, config: DriftConfig, store: PlatformStore, registry: ModelRegistry, decay: DecayPolicy
) -> dg.MaterializeResult:
    ref = champion_reference(store, registry)
    if isinstance(ref, str):  # no champion (the rule trains then: nothing serves, so nothing is kept) or no corpus
        return _no_verdict(store, ref, no_champion=registry.registry().champion() is None)
    champion, reference_version, reference = ref.champion, ref.corpus_version, ref.corpus
    corpora, batches = store.corpus(), store.batches()
    seen = set(corpora.manifest(reference_version)["batch_ids"])
    new_ids = [b for b in batches.accepted_ids() if b not in seen]
    if not new_ids:
        return _no_verdict(store, f"no batch has arrived since champion v{champion.version}'s training data")
    current = pd.concat([batches.read_parsed(b) for b in new_ids], ignore_index=True)
    # Deduplicated like the reference corpus, or the many repeated short hams
    # in raw traffic read as a shift in length and label prior.
    current = current[current["label"].isin(LABELS)]
    current = current[~current["text"].map(normalise).duplicated()]

    report = compute_drift(
        reference[["text", "label"]],
        current[["text", "label"]],
        config.thresholds(decay.f1_floor),
        score_fn=ref.score,
        reference_scores=ref.holdout_scores,
    )
    context.log.info(f"drift={report.drift} decay={report.decay}: {report.reasons}")
    return _result(store, report, champion.version, reference_version, new_ids)


@dataclasses.dataclass(frozen=True)
class ChampionReference:
    """What new data is compared with: the champion, its training corpus, and its scores on its own holdout."""

    champion: Any  # the registry's ModelVersion
    corpus_version: str
    corpus: pd.DataFrame  # the training corpus (columns text, label, split)
    score: Callable[[Sequence[str]], np.ndarray]  # the champion's P(spam)
    holdout_labels: pd.Series
    holdout_scores: np.ndarray  # on rows it was not trained on: scores on training rows are over-confident


def champion_reference(store: PlatformStore, registry: ModelRegistry) -> ChampionReference | str:
    """The champion's reference, or why there is none (one line for the verdict's reasons)."""
    reg = registry.registry()
    champion = reg.champion()
    if champion is None:
        return "no champion yet: nothing to compare against"
    corpora = store.corpus()
    version = champion.tags.get(TAG_CORPUS_VERSION)
    if not version or not corpora.path(version).exists():
        return f"champion v{champion.version}'s training corpus {version!r} is not in this store"
    corpus = corpora.read(version)
    model = reg.load(champion.version)
    score = lambda texts: spam_probability(model, texts)  # noqa: E731
    holdout = corpus[corpus["split"] == "holdout"]
    return ChampionReference(
        champion, version, corpus, score, holdout["label"].reset_index(drop=True), score(holdout["text"].tolist())
    )


def _result(
    store, report: DriftReport, champion_version, reference_version, new_ids, no_champion: bool = False
) -> dg.MaterializeResult:
    summary = {
        **report.to_dict(),
        "champion_version": champion_version,
        "reference_corpus": reference_version,
        "new_batches": new_ids,
        "computed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    path = store.paths.drift / "latest.json"
    write_json_atomic(path, summary)
    write_json_atomic(store.paths.drift / f"{summary['computed_at'].replace(':', '')}.json", summary)
    frame = report.to_frame()
    verdict = Verdict(report.drift, report.decay, list(report.reasons), no_champion, headline_figures(report)).to_json(
        warnings=list(report.warnings),
        champion_version=None if champion_version is None else str(champion_version),
        reference_corpus=reference_version,
        new_batches=new_ids,
        n_reference=report.n_reference,
        n_current=report.n_current,
        # what the verdict was judged by: the whole-verdict alpha, its share per part, and the
        # thresholds at this batch's size (drift_noise.py); absent when nothing was judged
        alpha=summary["thresholds"].get("alpha"),
        thresholds=summary["thresholds"].get("at_size", {}),
    )
    return dg.MaterializeResult(
        metadata={
            # The hand-off: the retrain policy, sensors and notifications read this JSON.
            VERDICT_KEY: dg.MetadataValue.json(verdict),
            # For people: the same verdict as the UI shows it best.
            "drift": report.drift,
            "decay": report.decay,
            "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in report.reasons) or "- none"),
            "statistics": dg.MetadataValue.md(report.to_markdown()) if len(frame) else "—",
            "champion_version": str(champion_version or "—"),
            "reference_corpus": reference_version or "—",
            "new_batches": dg.MetadataValue.json(new_ids),
            "n_reference": report.n_reference,
            "n_current": report.n_current,
            "report_path": dg.MetadataValue.path(str(path)),
        }
    )


def _no_verdict(store: PlatformStore, reason: str, no_champion: bool = False) -> dg.MaterializeResult:
    report = DriftReport(drift=False, decay=False, reasons=[reason], rows=[], n_reference=0, n_current=0)
    return _result(store, report, None, None, [], no_champion)


# The statistics a person asks about first when told "not retrained": how the champion's own
# scores moved, how it did on the new labels, and whether new traffic looks new at all.
HEADLINE = {
    ("score_psi", "champion"): ("champion score PSI", "≤"),
    ("realised_f1", "spam"): ("realised spam F1", "≥"),
    ("domain_auc", "tfidf_logreg"): ("domain AUC", "≤"),
}


def headline_figures(report: DriftReport) -> list[str]:
    """The headline statistics that stayed within their thresholds, e.g. "champion score PSI 0.03 ≤ 0.25"."""
    figures = []
    for row in report.rows:
        label, within = HEADLINE.get((row["statistic"], row["feature"]), (None, None))
        value, threshold = row["value"], row["threshold"]
        if label is None or threshold is None or row["flagged"]:
            continue
        if (value <= threshold) if within == "≤" else (value >= threshold):  # False for NaN: not a figure to quote
            figures.append(f"{label} {value:.2f} {within} {threshold:.2f}")
    return figures
