"""A verdict from a P(spam): its label and tier by the version's operating point, and, when asked, why.

One place for what a score becomes, so Classify, ClassifyStream and
ModelInfer label alike: the label is spam iff P(spam) >= the version's
operating threshold (`ModelCard.tiers`, from its tags; 0.5 for a version
without one), and the tier is ham / suspicious / spam
(`spam_assets.model.operating_point`). Explanations come from the lean
scorer's weights (`spam_assets.model.explain`), computed in the request's
thread only for the verdicts that asked.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from serving.generated.spam.v1 import classifier_pb2 as pb
from spam_assets.model.explain import DEFAULT_TOP, can_explain, explain
from spam_assets.model.operating_point import Tiers

if TYPE_CHECKING:
    from serving.watcher import LoadedChampion

NO_EXPLANATION = "this version serves through its pipeline (scorer {scorer}), whose weights are not read: no explanation"


def tiers_of(champion: LoadedChampion) -> Tiers:
    return champion.card.tiers


def verdict(champion: LoadedChampion, probability: float, verdict_id: str, explain_text: str | None = None) -> pb.Verdict:
    """The Verdict for one score; `explain_text` (the message's text) when the request asked for an explanation."""
    tiers = champion.card.tiers
    message = pb.Verdict(
        label=tiers.label(probability),
        spam_probability=probability,
        model_version=champion.version,
        verdict_id=verdict_id,
        tier=tiers.tier(probability),
    )
    if explain_text is not None:
        _fill(message.explanation, champion, explain_text)
    return message


def explanation(champion: LoadedChampion, text: str, top: int = DEFAULT_TOP) -> pb.Explanation:
    return _fill(pb.Explanation(), champion, text, top)


def _fill(target: pb.Explanation, champion: LoadedChampion, text: str, top: int = DEFAULT_TOP) -> pb.Explanation:
    """Write the explanation into `target` (in place: no copy of a built message)."""
    scorer = champion.scorer
    if not can_explain(scorer):
        target.note = NO_EXPLANATION.format(scorer=scorer.name)
        return target
    add = target.features.add
    for f in explain(scorer, text, top).features:
        add(ngram=f.ngram, kind=f.kind, weight=f.weight)
    return target


def explanation_json(champion: LoadedChampion, text: str, top: int = DEFAULT_TOP) -> str:
    """The explanation as one JSON object (OIP's `explanation` output): {"features": [...], "note": ...}."""
    found = explanation(champion, text, top)
    features = [{"ngram": f.ngram, "kind": f.kind, "weight": round(f.weight, 6)} for f in found.features]
    return json.dumps({"features": features, **({"note": found.note} if found.note else {})}, ensure_ascii=False)


def operating_point(champion: LoadedChampion) -> pb.OperatingPoint:
    tiers = champion.card.tiers
    return pb.OperatingPoint(
        threshold=tiers.threshold, suspicious_from=tiers.suspicious_from, source=tiers.source, basis=tiers.basis
    )
