import math

from spam_assets.decision import DecisionRules, decide

GOOD = {"spam_f1": 0.96, "spam_precision": 0.98, "spam_recall": 0.94, "accuracy": 0.99, "mcc": 0.95, "roc_auc": 0.99}


def test_first_challenger_promoted_when_it_passes_gates():
    decision = decide(GOOD, None)
    assert decision.promote
    assert "no champion yet" in decision.reasons[0]


def test_first_challenger_kept_out_when_precision_gate_fails():
    decision = decide({**GOOD, "spam_precision": 0.90}, None)
    assert not decision.promote
    assert any("spam_precision 0.9000 < gate 0.95" in r for r in decision.reasons)


def test_nan_metric_fails_its_gate():
    assert not decide({**GOOD, "spam_f1": math.nan}, None).promote


def test_needs_min_improvement_over_champion():
    rules = DecisionRules(min_improvement=0.01)
    assert not decide({**GOOD, "spam_f1": 0.965}, GOOD, rules).promote
    decision = decide({**GOOD, "spam_f1": 0.975}, GOOD, rules)
    assert decision.promote
    assert "0.9600 → 0.9750" in decision.reasons[0]


def test_same_version_is_never_promoted():
    decision = decide(GOOD, GOOD, same_version=True)
    assert not decision.promote


def test_markdown_table_lists_metric_champion_challenger_gate_verdict():
    table = decide({**GOOD, "spam_f1": 0.97}, GOOD).to_markdown()
    assert table.splitlines()[0] == "| metric | champion | challenger | gate | verdict |"
    assert "| spam_f1 | 0.9600 | 0.9700 |" in table
    assert "+0.0100 wins" in table


def test_a_champion_no_server_can_load_does_not_block_a_challenger_that_passes_the_gates():
    refused = "champion v3 refused by the serving checks: model file checksum mismatch"
    d = decide(GOOD, None, refused_champion=refused)
    assert d.promote and d.reasons == [refused, "the challenger passes every gate and replaces it"]
    bad = decide({**GOOD, "spam_precision": 0.5}, None, refused_champion=refused)
    assert not bad.promote and bad.reasons[0] == refused and "spam_precision" in bad.reasons[1]
