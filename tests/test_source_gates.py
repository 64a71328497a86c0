"""Judged per source: holdout metrics per source with intervals, and the per-source promotion gates.

Hand-made holdouts (labels, sources, P(spam) of each model), so each gate
can be pushed exactly to its edge; the real two-source training is in
tests/test_two_sources.py.
"""

import dataclasses
import math

import numpy as np
import pytest

from spam_assets.decision import REGRESSION, DecisionRules, GateFailure, _source_rows, decide, source_gate_failures, source_gated
from spam_assets.live_comparison import mcnemar_exact
from spam_assets.source_metrics import compare_sources, per_source, to_markdown

GOOD = {"spam_f1": 0.96, "spam_precision": 0.98, "spam_recall": 0.94, "accuracy": 0.99, "mcc": 0.95, "roc_auc": 0.99}


def holdout(sizes: dict[str, tuple[int, int]]):
    """Labels and sources: {source: (ham, spam)}; every message labelled right by a 'perfect' model."""
    labels, sources = [], []
    for source, (ham, spam) in sizes.items():
        labels += ["ham"] * ham + ["spam"] * spam
        sources += [source] * (ham + spam)
    labels, sources = np.array(labels), np.array(sources)
    return labels, sources, np.where(labels == "spam", 0.99, 0.01)


def wrong(scores, labels, sources, source: str, label: str, count: int) -> np.ndarray:
    """`scores` with the first `count` messages of (source, label) labelled wrong."""
    out = scores.copy()
    where = np.flatnonzero((sources == source) & (labels == label))[:count]
    out[where] = 1 - out[where]
    return out


# --- metrics per source ------------------------------------------------------------------------------


def test_metrics_are_per_source_largest_first_with_wilson_intervals():
    labels, sources, perfect = holdout({"email": (30, 20), "sms": (900, 100)})
    scores = wrong(wrong(perfect, labels, sources, "email", "ham", 3), labels, sources, "email", "spam", 5)
    sms, email = per_source(labels, sources, scores)
    assert (sms.source, sms.n, sms.spams, email.source, email.n, email.spams) == ("sms", 1000, 100, "email", 50, 20)
    assert sms.spam_f1.value == 1.0 and sms.ham_fpr.value == 0.0
    # email: TP 15, FP 3, FN 5 -> precision 15/18, recall 15/20, ham FPR 3/30.
    assert email.spam_precision.value == pytest.approx(15 / 18)
    assert email.spam_recall.value == pytest.approx(0.75) and email.ham_fpr.value == pytest.approx(0.1)
    assert email.spam_f1.value == pytest.approx(30 / 38)
    # Wilson for 15/20 at 95%: [0.531, 0.888] (computed by hand from the score formula).
    assert (round(email.spam_recall.low, 3), round(email.spam_recall.high, 3)) == (0.531, 0.888)
    # The bootstrap interval of F1 is around its value, wider for the small source, and seeded.
    assert email.spam_f1.low < email.spam_f1.value < email.spam_f1.high
    assert email.spam_f1.high - email.spam_f1.low > 0.1
    again = per_source(labels, sources, scores)[1].spam_f1
    assert (again.low, again.high) == (email.spam_f1.low, email.spam_f1.high)
    assert per_source(labels, sources, scores, seed=1)[1].spam_f1.low != email.spam_f1.low


def test_mlflow_metric_names_and_the_markdown_table():
    labels, sources, perfect = holdout({"sms": (90, 10), "feedback": (5, 0)})
    sms, feedback = per_source(labels, sources, perfect)
    metrics = sms.metrics()
    assert metrics["source.sms.spam_f1"] == 1.0 and metrics["source.sms.n"] == 100.0
    assert {"source.sms.spam_f1_low", "source.sms.spam_f1_high", "source.sms.ham_fpr_high"} <= set(metrics)
    # No spam in feedback: recall has no interval, and no NaN is logged for it.
    assert "source.feedback.spam_recall_low" not in feedback.metrics()
    assert not any(math.isnan(v) for v in feedback.metrics().values())
    table = to_markdown([sms, feedback])
    assert "| sms | 100 | 10 | 1.000 [0.722, 1.000] |" in table
    assert "| feedback | 5 | 0 |" in table


def test_scores_must_match_the_holdout():
    with pytest.raises(ValueError, match="3 labels, 3 sources and 2 scores"):
        per_source(["ham", "spam", "ham"], ["a", "a", "b"], [0.1, 0.9])


# --- the gates ---------------------------------------------------------------------------------------


# The merged holdout's win is not the subject here: any challenger beats the champion overall.
RULES = DecisionRules(min_source_holdout=50, min_source_holdout_spam=10, min_improvement=-1.0)


def decide_on(labels, sources, challenger, champion=None, rules=RULES):
    both = compare_sources(labels, sources, challenger, champion)
    overall = GOOD  # the merged holdout passes: only the per-source gates can refuse
    return decide(overall, GOOD if champion is not None else None, rules, sources=both)


def test_a_small_source_below_its_gate_refuses_the_challenger_and_the_reason_names_it():
    labels, sources, perfect = holdout({"sms": (900, 100), "email": (40, 20)})
    challenger = wrong(perfect, labels, sources, "email", "ham", 3)  # email: precision 20/23, F1 40/43 (passes)
    decision = decide_on(labels, sources, challenger)
    assert not decision.promote
    assert decision.reasons == [
        "source email: challenger spam_precision 0.8696 < gate 0.95 (60 holdout messages, 20 spam)"
    ], decision.reasons
    rows = {row["metric"]: row for row in decision.rows}
    assert rows["spam_precision [email]"]["verdict"].endswith("gate failed")
    assert rows["spam_precision [sms]"]["verdict"].endswith("gate passed")
    assert rows["spam_f1 [email]"]["gate"] == "≥ 0.90"
    assert rows["spam_f1 [email]"]["verdict"].endswith("gate passed")
    assert "| spam_precision [email] | — | 0.8696 | ≥ 0.95 |" in decision.to_markdown()


def test_the_table_says_gate_failed_for_exactly_the_failed_source_and_metric():
    labels, sources, perfect = holdout({"sms": (900, 100), "email": (300, 100), "chat": (80, 20)})
    champion = perfect
    challenger = wrong(perfect, labels, sources, "chat", "ham", 2)  # chat: precision 20/22 only; F1 0.95 passes
    both = compare_sources(labels, sources, challenger, champion)
    failures = source_gate_failures(both, RULES)
    assert [(f.source, f.metric) for f in failures] == [("chat", "spam_precision")]
    decision = decide(GOOD, GOOD, RULES, sources=both)
    assert not decision.promote and decision.reasons == [failures[0].message]
    rows = {row["metric"]: row["verdict"] for row in decision.rows}

    def verdicts(table: dict[str, str]) -> dict[tuple[str, str], str]:
        """(source, gate) -> the verdict's last words, for every gated row of every source."""
        out = {}
        for name in ("sms", "email", "chat"):
            for metric in ("spam_f1", "spam_precision"):
                out[name, metric] = table[f"{metric} [{name}]"].rsplit("; ", 1)[1]
            out[name, REGRESSION] = table[f"only this one right [{name}]"].rsplit("; ", 1)[1]
        return out

    expected = {key: "gate passed" for key in verdicts(rows)} | {
        (name, REGRESSION): "no significant regression" for name in ("sms", "email", "chat")
    }
    expected["chat", "spam_precision"] = "gate failed"
    assert verdicts(rows) == expected
    # The rows follow the structured failures, not the wording of their reasons.
    reworded = [GateFailure(f.metric, "precision too low on chat", f.source) for f in failures]
    table = {row["metric"]: row["verdict"] for row in _source_rows(both, RULES, reworded)}
    assert verdicts(table) == expected
    regressed = _source_rows(both, RULES, [GateFailure(REGRESSION, "worse on email", "email")])
    assert verdicts({row["metric"]: row["verdict"] for row in regressed}) == {
        **expected, ("chat", "spam_precision"): "gate passed", ("email", REGRESSION): "significantly worse"
    }


def test_a_source_below_the_minimum_is_shown_but_not_gated():
    labels, sources, perfect = holdout({"sms": (900, 100), "email": (30, 19)})  # 49 messages: one short
    challenger = wrong(perfect, labels, sources, "email", "spam", 19)  # nothing caught there
    decision = decide_on(labels, sources, challenger)
    assert decision.promote, decision.reasons
    row = next(r for r in decision.rows if r["metric"] == "spam_f1 [email]")
    assert (row["challenger"], row["gate"]) == (0.0, "")
    assert row["verdict"] == "not gated: 49 holdout messages, 19 spam (gated from 50 and 10)"
    # Enough messages but too few spams is not gated either; at the minimum it is.
    assert not source_gated(compare_sources(*holdout({"e": (60, 9)}))[0], RULES)
    assert source_gated(compare_sources(*holdout({"e": (40, 10)}))[0], RULES)
    assert not decide_on(labels, sources, challenger, rules=DecisionRules(min_source_holdout=49, min_improvement=-1.0)).promote


def test_the_per_source_gates_switched_off_judge_no_source_and_say_so():
    labels, sources, perfect = holdout({"sms": (900, 100), "email": (40, 20)})
    challenger = wrong(perfect, labels, sources, "email", "ham", 3)  # fails the email gate when it is on
    rules = dataclasses.replace(RULES, source_gates=False)
    decision = decide_on(labels, sources, challenger, rules=rules)
    assert decision.promote, decision.reasons
    row = next(r for r in decision.rows if r["metric"] == "spam_precision [email]")
    assert (row["gate"], row["verdict"]) == ("", "not gated: 60 holdout messages, 20 spam; per-source gates off")


def test_a_significant_regression_on_one_source_refuses_even_above_the_gates():
    labels, sources, perfect = holdout({"sms": (900, 100), "email": (300, 100)})
    champion = perfect
    challenger = wrong(perfect, labels, sources, "email", "spam", 9)  # recall 0.91, F1 0.95: above every gate
    decision = decide_on(labels, sources, challenger, champion)
    (reason,) = decision.reasons
    p = mcnemar_exact(9, 0)
    assert p < 0.05
    assert reason == (
        "source email: challenger significantly worse than the champion: wrong on 9 holdout messages the "
        f"champion labels right, right on 0 it labels wrong (exact McNemar p={p:.3g} < 0.05)"
    )
    row = next(r for r in decision.rows if r["metric"] == "only this one right [email]")
    assert (row["champion"], row["challenger"]) == (9, 0) and row["verdict"].endswith("significantly worse")
    # Worse on 5 but better on 2 elsewhere in the source: not significant (p = 0.45), promoted.
    mixed = wrong(wrong(perfect, labels, sources, "email", "spam", 5), labels, sources, "email", "ham", 0)
    better_champion = wrong(perfect, labels, sources, "email", "ham", 2)
    assert mcnemar_exact(5, 2) > 0.05
    assert decide_on(labels, sources, mixed, better_champion).promote


def test_a_regression_on_a_source_too_small_to_gate_is_shown_not_gated():
    labels, sources, perfect = holdout({"sms": (900, 100), "email": (20, 10)})
    challenger = wrong(perfect, labels, sources, "email", "spam", 10)
    decision = decide_on(labels, sources, challenger, perfect)
    assert decision.promote, decision.reasons
    row = next(r for r in decision.rows if r["metric"] == "only this one right [email]")
    assert row["verdict"] == f"exact McNemar p={mcnemar_exact(10, 0):.3g}; not gated" and row["gate"] == ""


def test_a_lone_source_is_the_whole_holdout_its_gates_are_not_repeated_but_its_regression_is_judged():
    labels, sources, perfect = holdout({"sms": (900, 100)})
    low = wrong(perfect, labels, sources, "sms", "spam", 30)  # F1 0.82: below the gate, merged and per source alike
    overall = {**GOOD, "spam_f1": 0.8235}
    decision = decide(overall, GOOD, RULES, sources=compare_sources(labels, sources, low, perfect))
    assert decision.reasons[0] == "challenger spam_f1 0.8235 < gate 0.90"  # once, merged
    assert not any(r.startswith("source sms: challenger spam_f1") for r in decision.reasons)
    assert decision.reasons[1].startswith("source sms: challenger significantly worse than the champion: wrong on 30 ")
    row = next(r for r in decision.rows if r["metric"] == "spam_f1 [sms]")
    assert row["gate"] == "" and row["verdict"].endswith("the whole holdout, gated above")
