"""Promote or keep: absolute gates first, then a measurable win over the champion.

Gates guard users from a bad model even when no champion exists: precision
gate is stricter than recall because a ham marked spam (a lost message)
costs more than a spam let through. The win must be at least
`min_improvement` on every compared metric, both models scored on the same
holdout, so noise does not churn the champion. A challenger must also keep
catching spam in disguise (`spam_assets.robustness`): its recall under its
worst perturbation family within `max_adversarial_drop` of its clean recall,
and losing no more recall to that family than the champion does, within
`adversarial_tolerance`.

Judged per source too (spam_assets.source_metrics): the absolute gates
apply to every source whose holdout has at least `min_source_holdout`
messages and `min_source_holdout_spam` spams, and on each such source the
challenger may not be significantly worse than the champion (exact McNemar
on that source's holdout messages, p < `source_regression_alpha`). Smaller
sources are shown, not gated: a handful of messages cannot tell a worse
model from bad luck.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from spam_assets.robustness import Robustness
from spam_assets.source_metrics import SourceComparison

GATE_METRICS = {"spam_f1": "min_spam_f1", "spam_precision": "min_spam_precision"}


@dataclass(frozen=True)
class DecisionRules:
    min_spam_f1: float = 0.90
    min_spam_precision: float = 0.95
    min_improvement: float = 0.005
    compared_metrics: tuple[str, ...] = ("spam_f1",)
    adversarial_gate: bool = True
    max_adversarial_drop: float = 0.05
    # One message of the SMS holdout's ~110 spams is 0.009: two may differ by chance.
    adversarial_tolerance: float = 0.02
    # Per-source gates. 50 holdout messages is a source of ~250 (at the 20% holdout share), the size
    # of the smallest e-mail source that has misled the merged gate (200+200 Enron messages); 10 spams,
    # cleaned_corpus's own minimum for the whole holdout: with fewer, one message moves precision by
    # more than the distance between any two gates.
    source_gates: bool = True
    min_source_holdout: int = 50
    min_source_holdout_spam: int = 10
    source_regression_alpha: float = 0.05


@dataclass
class Decision:
    promote: bool
    reasons: list[str]
    rows: list[dict] = field(default_factory=list)  # metric, champion, challenger, gate, verdict

    @property
    def action(self) -> str:
        return "promote" if self.promote else "keep"

    def to_markdown(self) -> str:
        fmt = lambda v: "—" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)
        lines = ["| metric | champion | challenger | gate | verdict |", "|---|---|---|---|---|"]
        for row in self.rows:
            lines.append(
                f"| {row['metric']} | {fmt(row['champion'])} | {fmt(row['challenger'])} | {row['gate']} | {row['verdict']} |"
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class GateFailure:
    """One gate the challenger failed: what it judged and the reason given for it.

    The decision's reasons and its table's verdicts are both read from these, so
    rewording a reason cannot turn a failed gate into a passed row.
    """

    metric: str  # a GATE_METRICS key, or REGRESSION for the paired test against the champion
    message: str
    source: str | None = None  # None: the merged holdout


REGRESSION = "regression"  # GateFailure.metric of a significant per-source regression


def merged_gate_failures(metrics: dict[str, float], rules: DecisionRules) -> list[GateFailure]:
    """The absolute gates on the whole holdout; empty: they pass."""
    failures = []
    for metric, attribute in GATE_METRICS.items():
        floor = getattr(rules, attribute)
        if not metrics.get(metric, float("nan")) >= floor:  # NaN fails too
            message = f"challenger {metric} {metrics.get(metric, float('nan')):.4f} < gate {floor:.2f}"
            failures.append(GateFailure(metric, message))
    return failures


def gate_failures(metrics: dict[str, float], rules: DecisionRules) -> list[str]:
    return [f.message for f in merged_gate_failures(metrics, rules)]


def source_gated(source: SourceComparison, rules: DecisionRules) -> bool:
    """The per-source gates are on, and this source has enough holdout messages, and spams, for them to judge it."""
    return rules.source_gates and source.n >= rules.min_source_holdout and source.spams >= rules.min_source_holdout_spam


def source_gate_failures(sources: list[SourceComparison], rules: DecisionRules) -> list[GateFailure]:
    """Which (source, metric) gates the challenger fails, each with a reason naming the source; empty: all pass.

    A lone source is the whole holdout: its absolute gates are the merged ones (gate_failures), not repeated.
    """
    failures = []
    for source in (s for s in sources if source_gated(s, rules)):
        for metric, attribute in GATE_METRICS.items() if len(sources) > 1 else ():
            value, floor = source.challenger.value(metric), getattr(rules, attribute)
            if not value >= floor:
                message = (
                    f"source {source.source}: challenger {metric} {value:.4f} < gate {floor:.2f} "
                    f"({source.n} holdout messages, {source.spams} spam)"
                )
                failures.append(GateFailure(metric, message, source.source))
        if source.regression(rules.source_regression_alpha):
            message = (
                f"source {source.source}: challenger significantly worse than the champion: wrong on "
                f"{source.champion_only_right} holdout messages the champion labels right, right on "
                f"{source.challenger_only_right} it labels wrong (exact McNemar p={source.mcnemar_p:.3g} "
                f"< {rules.source_regression_alpha:g})"
            )
            failures.append(GateFailure(REGRESSION, message, source.source))
    return failures


def source_failures(sources: list[SourceComparison], rules: DecisionRules) -> list[str]:
    """Why the challenger fails on a source (each reason names it); empty: every gated source passes."""
    return [f.message for f in source_gate_failures(sources, rules)]


def _source_rows(sources: list[SourceComparison], rules: DecisionRules, failures: list[GateFailure]) -> list[dict]:
    """Per source, largest first: the gated metrics (`spam_f1 [email]`) and the paired test against the champion."""
    failed = {(f.source, f.metric) for f in failures}
    rows = []
    for source in sources:
        name, gated = source.source, source_gated(source, rules)
        size = f"{source.n} holdout messages, {source.spams} spam"
        for metric, attribute in GATE_METRICS.items():
            mine = getattr(source.challenger, metric)
            interval = "" if mine.low != mine.low else f", 95% CI {mine.low:.3f}–{mine.high:.3f}"
            if len(sources) == 1:
                verdict = f"{size}{interval}; the whole holdout, gated above"
            elif gated:
                verdict = f"{size}{interval}; " + ("gate failed" if (name, metric) in failed else "gate passed")
            else:
                verdict = (
                    f"not gated: {size} (gated from {rules.min_source_holdout} and {rules.min_source_holdout_spam})"
                    if rules.source_gates
                    else f"not gated: {size}; per-source gates off"
                )
            rows.append(
                {
                    "metric": f"{metric} [{name}]",
                    "champion": source.champion.value(metric) if source.champion else None,
                    "challenger": mine.value,
                    "gate": f"≥ {getattr(rules, attribute):.2f}" if gated and len(sources) > 1 else "",
                    "verdict": verdict,
                }
            )
        if source.champion is not None:
            verdict = f"exact McNemar p={source.mcnemar_p:.3g}"
            if gated:
                verdict += "; significantly worse" if (name, REGRESSION) in failed else "; no significant regression"
            else:
                verdict += "; not gated"
            rows.append(
                {
                    "metric": f"only this one right [{name}]",
                    "champion": source.champion_only_right,
                    "challenger": source.challenger_only_right,
                    "gate": f"not significantly worse (p < {rules.source_regression_alpha:g})" if gated else "",
                    "verdict": verdict,
                }
            )
    return rows


def robustness_failures(challenger: Robustness, champion: Robustness | None, rules: DecisionRules) -> list[str]:
    """Why the challenger's recall under its worst perturbation family fails the gate (empty: it passes)."""
    if not rules.adversarial_gate:
        return []
    family, worst = challenger.worst_family()
    failures = []
    if not worst >= challenger.clean - rules.max_adversarial_drop:
        failures.append(
            f"challenger spam recall under {family} {worst:.3f} is more than {rules.max_adversarial_drop:g} "
            f"below its clean recall {challenger.clean:.3f}"
        )
    # Against the champion, what the disguise costs each model, not recall itself: a champion that calls
    # most of a new domain spam has high recall bought with false positives, and a better challenger
    # would be held to it.
    theirs = champion.by_family.get(family) if champion else None
    if theirs is not None:
        mine_lost, theirs_lost = challenger.clean - worst, champion.clean - theirs
        if not mine_lost <= theirs_lost + rules.adversarial_tolerance:
            failures.append(
                f"challenger loses more spam recall under {family} than the champion: "
                f"{mine_lost:.3f} ({challenger.clean:.3f} → {worst:.3f}) against {theirs_lost:.3f} "
                f"({champion.clean:.3f} → {theirs:.3f}; tolerance {rules.adversarial_tolerance:g})"
            )
    return failures


def _robustness_rows(challenger: Robustness, champion: Robustness | None, rules: DecisionRules, failures: list[str]) -> list[dict]:
    """One row per perturbation family: spam recall at its worst strength (clean recall is the spam_recall row)."""
    family, _ = challenger.worst_family()
    gate = f"≥ spam_recall − {rules.max_adversarial_drop:g}; loss ≤ champion's + {rules.adversarial_tolerance:g}"
    rows = []
    for name, value in challenger.by_family.items():
        verdict = ""
        if name == family:
            verdict = "worst family, " + (
                "not gated" if not rules.adversarial_gate else "gate failed" if failures else "gate passed"
            )
        rows.append(
            {
                "metric": f"spam_recall under {name}",
                "champion": champion.by_family.get(name) if champion else None,
                "challenger": value,
                "gate": gate if name == family else "",
                "verdict": verdict,
            }
        )
    return rows


def decide(
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    rules: DecisionRules = DecisionRules(),
    same_version: bool = False,
    refused_champion: str | None = None,
    robustness: tuple[Robustness, Robustness | None] | None = None,
    sources: list[SourceComparison] | None = None,
) -> Decision:
    """Both metric dicts come from scoring on the same holdout.

    `refused_champion` says why a champion exists but could not be scored (no
    server would load it): the challenger is then judged as if there were none.
    `robustness` is (challenger's, champion's or None) recall under obfuscation,
    on the same copies of the holdout spam; without it that gate is not applied.
    `sources` is both models per source of the same holdout (source_metrics.compare_sources);
    without it the per-source gates are not applied.
    """
    rows, reasons = [], [refused_champion] if refused_champion else []
    robust_failures = robustness_failures(*robustness, rules) if robustness is not None else []
    merged_failures = merged_gate_failures(challenger, rules)
    per_source_failures = source_gate_failures(sources, rules) if sources is not None else []
    failures = [f.message for f in merged_failures] + robust_failures + [f.message for f in per_source_failures]
    reasons.extend(failures)
    failed_gates = {f.metric for f in merged_failures}
    metrics = list(dict.fromkeys([*GATE_METRICS, *rules.compared_metrics, "spam_recall", "accuracy", "mcc", "roc_auc"]))
    for metric in metrics:
        new = challenger.get(metric)
        old = champion.get(metric) if champion else None
        gate = f"≥ {getattr(rules, GATE_METRICS[metric]):.2f}" if metric in GATE_METRICS else ""
        verdicts = []
        if metric in GATE_METRICS:
            verdicts.append("gate failed" if metric in failed_gates else "gate passed")
        if metric in rules.compared_metrics:
            gate = (gate + f"; +{rules.min_improvement:g} over champion").lstrip("; ")
            if old is not None and new is not None:
                delta = new - old
                verdicts.append(f"{delta:+.4f} {'wins' if delta >= rules.min_improvement else 'not enough'}")
        rows.append({"metric": metric, "champion": old, "challenger": new, "gate": gate, "verdict": ", ".join(verdicts)})
    if robustness is not None:
        rows += _robustness_rows(*robustness, rules, robust_failures)
    if sources is not None:
        rows += _source_rows(sources, rules, per_source_failures)

    if same_version:
        return Decision(False, ["challenger is the current champion version"], rows)
    if failures:
        return Decision(False, reasons, rows)
    if champion is None and refused_champion:
        return Decision(True, [refused_champion, "the challenger passes every gate and replaces it"], rows)
    if champion is None:
        return Decision(True, ["no champion yet and the challenger passes every gate"], rows)
    losing = [
        f"{m}: {challenger[m]:.4f} vs champion {champion[m]:.4f} (needs +{rules.min_improvement:g})"
        for m in rules.compared_metrics
        if challenger[m] - champion[m] < rules.min_improvement
    ]
    if losing:
        return Decision(False, ["challenger is not measurably better: " + "; ".join(losing)], rows)
    wins = ", ".join(f"{m} {champion[m]:.4f} → {challenger[m]:.4f}" for m in rules.compared_metrics)
    return Decision(True, [f"challenger passes every gate and beats the champion: {wins}"], rows)
