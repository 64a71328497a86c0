"""The staged rollout (spam_assets/rollout.py) through Dagster, on a real MLflow store and a real instance.

The rollout moves aliases and tags; it never loads a model, so versions
here are registered without training (real runs, real versions in the
registry under a temp home). Live traffic is written as the rollout
contract says servers write it (tests/rollout_log.py), feedback likewise.
Stage times are placed in the past by writing the stage's start as the
graph would have written it earlier, so no test waits for a clock.
"""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import pytest

from spam_assets import cli
from spam_assets.defs.assets.rollout import ROLLED_BACK, ROLLOUT_KEY, live_comparison, rollout_decision
from spam_assets.defs.automation.notifications import notify_rollout, rollout_message
from spam_assets.defs.automation.rollout import rollout_job, rollout_sensor
from spam_assets.defs.resources import RolloutPolicy, Webhook, build_resources
from spam_assets.model.registry import Registry
from spam_assets.model.tags import TAG_ROLLED_BACK, TAG_ROLLOUT_CANARY_SHARE, TAG_ROLLOUT_SINCE, TAG_ROLLOUT_STAGE
from spam_assets.rollout import (
    CANARY,
    PROMOTED,
    RETIRED,
    SHADOW,
    TAG_OVERRIDE,
    TAG_REASON,
    WAIT,
    Rollout,
    RolloutRules,
    next_step,
)
from spam_assets.live_comparison import compare, pair_verdicts
from spam_assets.settings import MODEL_NAME, paths, tracking_uri
from spam_assets.traffic.prediction_files import read_predictions
from tests.rollout_log import Message, record, uuid7_at, write_feedback, write_rollout_segment, write_segment
from tests.test_notifications import recording_server

UTC = dt.UTC
# Small numbers so a test writes a few dozen messages; the logic is the same at the defaults.
RULES = dict(shadow_pairs=30, shadow_min_seconds=600, canary_share=0.25, canary_pairs=30, canary_min_seconds=600,
             alpha=0.05, max_precision_drop=0.02, max_disagreement=0.15, min_labelled_pairs=20, watch_seconds=86400)  # fmt: skip


def spam(i: int) -> str:
    return f"WINNER {i}! claim your prize now, call 0906170{i:04d}"


def ham(i: int) -> str:
    return f"see you at lunch {i}, bring the notes"


@pytest.fixture
def registry(home) -> Registry:
    """spam-classifier v1 (champion) and v2 (challenger), real versions in the home's MLflow store."""
    reg = Registry(tracking_uri())
    reg.client.create_registered_model(MODEL_NAME)
    experiment = reg.client.create_experiment("rollout-test")
    for _ in range(3):
        run = reg.client.create_run(experiment)
        reg.client.create_model_version(MODEL_NAME, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    reg.promote("1", "first champion")
    reg.set_challenger("2")
    return reg


@pytest.fixture
def resources(home, monkeypatch) -> dict:
    monkeypatch.setenv("SPAM_ROLLOUT", "on")
    return {**build_resources(str(home)), "rollout": RolloutPolicy(**RULES)}


def tags(reg: Registry, version: str) -> dict:
    return reg.client.get_model_version(MODEL_NAME, version).tags


def backdate(reg: Registry, version: str, minutes: float) -> dt.datetime:
    """The stage the version is in began `minutes` ago (as if the graph had moved it then)."""
    since = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(minutes=minutes)
    reg.client.set_model_version_tag(MODEL_NAME, version, TAG_ROLLOUT_SINCE, since.isoformat())
    if tags(reg, version)[TAG_ROLLOUT_STAGE] == SHADOW:
        reg.client.set_model_version_tag(MODEL_NAME, version, "rollout_shadow_at", since.isoformat())
    return since


def labelled_traffic(n: int, challenger_wrong_every: int | None = None, champion_wrong_every: int | None = None):
    """n messages, every 3rd spam; each model wrong on every k-th (None: never). Returns messages and their labels."""
    messages, labels = [], {}
    for i in range(n):
        is_spam = i % 3 == 0
        text = spam(i) if is_spam else ham(i)
        labels[text] = "spam" if is_spam else "ham"
        right, wrong = (0.95, 0.05) if is_spam else (0.05, 0.95)
        champ_ok = champion_wrong_every is None or i % champion_wrong_every != 0
        chall_ok = challenger_wrong_every is None or i % challenger_wrong_every != 0
        messages.append(Message(text, right if champ_ok else wrong, right if chall_ok else wrong))
    return messages, labels


def run_rollout(instance, resources) -> dict:
    result = dg.materialize([live_comparison, rollout_decision], instance=instance, resources=resources)
    assert result.success
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("rollout_decision")]
    return event.materialization.metadata[ROLLOUT_KEY].value


# --- the policy alone ---------------------------------------------------------------------------------


def test_shadow_waits_for_both_its_pairs_and_its_minimum_time(tmp_path):
    messages, labels = labelled_traffic(40)
    start = dt.datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    write_rollout_segment(tmp_path, messages, champion="1", challenger="2", start=start)
    paired = pair_verdicts(read_predictions(tmp_path), "1", "2")
    truth = {__import__("hashlib").sha256(t.encode()).hexdigest(): label for t, label in labels.items()}
    whole, rules = compare(paired, truth), RolloutRules(**RULES)
    since = start - dt.timedelta(seconds=1)

    early = next_step(SHADOW, since, since + dt.timedelta(minutes=5), whole, whole, rules)  # 40 pairs, 5 of 10 minutes
    assert early.action == WAIT and early.reasons == ["shadow: 5 of 10 minutes"]
    few = next_step(SHADOW, since, since + dt.timedelta(hours=1), whole, compare(paired.since(start + dt.timedelta(seconds=30)), truth), rules)
    assert few.action == WAIT and few.reasons[0] == "shadow: 10 of 30 paired messages"
    ripe = next_step(SHADOW, since, since + dt.timedelta(minutes=10), whole, whole, rules)
    assert ripe.action == CANARY and ripe.reasons[0].startswith("shadow done: 40 paired messages in 10 minutes")
    # in canary the labels are needed too: 40 labelled here, the bar raised to 50
    strict = RolloutRules(**{**RULES, "min_labelled_pairs": 50})
    assert next_step(CANARY, since, since + dt.timedelta(hours=1), whole, whole, strict).reasons == [
        "40 of 50 labelled pairs (feedback) needed to judge"
    ]
    assert next_step(CANARY, since, since + dt.timedelta(hours=1), whole, whole, rules).action == PROMOTED


# --- through Dagster, real registry -------------------------------------------------------------------


def test_a_better_challenger_goes_shadow_canary_champion_without_a_hand_on_it(registry, instance, resources, home):
    log = paths(home).predictions
    stages = Rollout(registry)
    stages.start_shadow("2", ["holdout decision: beats the champion"], dt.datetime.now(UTC))
    since = backdate(registry, "2", minutes=20)

    # Shadow: 45 messages, the champion wrong on every 9th, the challenger never; users label them all.
    messages, labels = labelled_traffic(45, champion_wrong_every=9)
    write_rollout_segment(log, messages, champion="1", challenger="2", start=since + dt.timedelta(seconds=5))
    write_feedback(log, labels, dt.datetime.now(UTC))
    outcome = run_rollout(instance, resources)
    assert (outcome["action"], outcome["stage_before"], outcome["stage_now"]) == (CANARY, SHADOW, CANARY)
    t = tags(registry, "2")
    assert (t[TAG_ROLLOUT_STAGE], t[TAG_ROLLOUT_CANARY_SHARE]) == (CANARY, "0.25")
    assert t[TAG_REASON.format(stage=CANARY)].startswith("shadow done: 45 paired messages")
    assert str(registry.champion().version) == "1"
    comparison = instance.get_latest_materialization_event(dg.AssetKey("live_comparison")).asset_materialization
    assert comparison.metadata["pairs"].value == 45 and comparison.metadata["labelled_pairs"].value == 45
    assert "| time | text |" in comparison.metadata["disagreements"].value
    assert (paths(home).rollout / "live-comparison-v1-v2.json").exists()

    # Canary: its own pairs counted from its start; its minimum time is respected even with the pairs there.
    canary_since = dt.datetime.fromisoformat(t[TAG_ROLLOUT_SINCE])
    messages, labels = labelled_traffic(36, champion_wrong_every=9)
    for i, m in enumerate(messages):
        m.text, m.answered = m.text + " (canary)", "challenger" if i % 4 == 0 else "champion"
    labels = {text + " (canary)": label for text, label in labels.items()}
    write_rollout_segment(log, messages, champion="1", challenger="2", start=canary_since + dt.timedelta(seconds=1))
    write_feedback(log, labels, dt.datetime.now(UTC), reporter="r2")
    outcome = run_rollout(instance, resources)
    assert outcome["action"] == WAIT and outcome["reasons"][0] == "canary: 0 of 10 minutes", outcome

    backdate(registry, "2", minutes=15)  # the canary's ten minutes have passed
    outcome = run_rollout(instance, resources)
    assert (outcome["action"], outcome["stage_now"], outcome["champion_version_now"]) == (PROMOTED, PROMOTED, "2")
    assert outcome["reasons"][0].startswith("canary done: 36 paired messages")
    assert str(registry.champion().version) == "2" and str(registry.version_for("previous-champion").version) == "1"
    t = tags(registry, "2")
    assert t[TAG_ROLLOUT_STAGE] == PROMOTED and "no significant regression on 81 labelled pairs" in t[TAG_REASON.format(stage=PROMOTED)]
    assert t["promotion_reason"].startswith("canary done")
    text = rollout_message(outcome, "Run: r")
    assert text.startswith("spam-classifier v2 promoted to champion after its staged rollout (previous champion: v1).")
    assert "McNemar" in text
    # nothing under rollout any more: the next run compares nothing and moves nothing
    assert run_rollout(instance, resources)["action"] == WAIT


def test_a_challenger_that_loses_on_labelled_live_traffic_is_retired_with_the_evidence(registry, instance, resources, home):
    log = paths(home).predictions
    Rollout(registry).start_shadow("2", ["holdout decision: beats the champion"], dt.datetime.now(UTC))
    since = backdate(registry, "2", minutes=2)  # well inside the shadow's minimum time
    # Today's traffic: the challenger wrong on every 4th message (won on the holdout, loses here).
    messages, labels = labelled_traffic(40, challenger_wrong_every=4)
    write_rollout_segment(log, messages, champion="1", challenger="2", start=since + dt.timedelta(seconds=5))
    write_feedback(log, labels, dt.datetime.now(UTC))

    outcome = run_rollout(instance, resources)
    assert (outcome["action"], outcome["stage_before"], outcome["stage_now"]) == (RETIRED, SHADOW, RETIRED)
    first = outcome["reasons"][0]
    assert first.startswith("significant regression on 40 labelled messages: only the champion right on 10, only the challenger on 0")
    assert "exact McNemar p=0.00195" in first  # 2 / 2^10
    t = tags(registry, "2")
    assert t[TAG_ROLLOUT_STAGE] == RETIRED and "McNemar" in t[TAG_REASON.format(stage=RETIRED)]
    assert str(registry.champion().version) == "1" and registry.version_for("previous-champion") is None
    assert Rollout(registry).live() is None  # servers unload it: its stage is no longer live
    assert "retired in shadow: champion v1 keeps serving" in rollout_message(outcome, "")
    # the decision is on file under the platform home too
    (report,) = paths(home).rollout.glob("decision-*-v2-retired.json")
    assert json.loads(report.read_text())["reasons"][0] == first


def test_too_much_disagreement_waits_for_labels_then_retires(registry, instance, resources, home):
    log = paths(home).predictions
    Rollout(registry).start_shadow("2", ["holdout"], dt.datetime.now(UTC))
    since = backdate(registry, "2", minutes=30)
    # They disagree on every 3rd message (33%); without labels nobody can say who is right.
    messages = [Message(ham(i), 0.1, 0.9 if i % 3 == 0 else 0.1) for i in range(40)]
    write_rollout_segment(log, messages, champion="1", challenger="2", start=since + dt.timedelta(seconds=5))
    outcome = run_rollout(instance, resources)
    assert outcome["action"] == WAIT
    assert any("disagree on 35.0% of 40 messages > 15%: waiting for labels" in r for r in outcome["reasons"]), outcome
    assert tags(registry, "2")[TAG_ROLLOUT_STAGE] == SHADOW

    # Users label 28 of them: the champion alone right on 2, too few for a significant regression (McNemar
    # p=0.5), but nothing says the challenger is better either, so its disagreement is not excused: retired.
    write_feedback(log, {ham(i): "ham" for i in range(1, 40) if i % 3} | {ham(0): "ham", ham(3): "ham"}, dt.datetime.now(UTC))
    outcome = run_rollout(instance, resources)
    assert outcome["action"] == RETIRED
    assert outcome["reasons"][0] == (
        "the models disagree on 35.0% of 40 messages > 15%, and the labelled pairs do not show the challenger "
        "better (McNemar p=0.5)"
    )


def test_a_newer_challenger_supersedes_one_under_rollout(registry):
    stages, now = Rollout(registry), dt.datetime.now(UTC)
    stages.start_shadow("2", ["holdout"], now)
    registry.set_challenger("3")
    assert stages.retire_superseded("3", now) == ["2"]
    t = tags(registry, "2")
    assert t[TAG_ROLLOUT_STAGE] == RETIRED and t[TAG_REASON.format(stage=RETIRED)] == "superseded by v3, a newer challenger"


def test_manual_override_is_recorded_posted_and_shown_by_status(registry, home, monkeypatch, capsys):
    with recording_server() as (url, received):
        monkeypatch.setenv("SPAM_WEBHOOK_URL", url)
        assert cli.main(["rollout", "retire"]) == 4  # nothing under rollout yet
        assert "no challenger in shadow or canary" in capsys.readouterr().err

        Rollout(registry).start_shadow("2", ["holdout"], dt.datetime.now(UTC))
        assert cli.main(["status"]) == 0
        assert "           rollout: v2 shadow since " in capsys.readouterr().out
        assert cli.main(["rollout", "promote", "--reason", "the live figures look fine to me"]) == 0
        assert "v2 promoted by hand: champion is now v2 (previous-champion v1)" in capsys.readouterr().out

    record_ = json.loads(tags(registry, "2")[TAG_OVERRIDE])
    assert (record_["action"], record_["reason"], record_["stage_was"]) == (PROMOTED, "the live figures look fine to me", SHADOW)
    assert record_["by"] and dt.datetime.fromisoformat(record_["at"]).tzinfo is not None
    assert tags(registry, "2")[TAG_ROLLOUT_STAGE] == PROMOTED and str(registry.champion().version) == "2"
    assert tags(registry, "2")[TAG_REASON.format(stage=PROMOTED)].startswith("manual override by ")
    (posted,) = received
    assert posted["text"].startswith("spam-classifier v2 promoted to champion") and "the live figures look fine" in posted["text"]


def test_a_promoted_champion_that_decays_on_live_traffic_is_rolled_back(registry, instance, resources, home):
    log = paths(home).predictions
    stages = Rollout(registry)
    stages.start_shadow("2", ["holdout"], dt.datetime.now(UTC))
    promoted_at = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(minutes=10)
    stages.promote("2", ["canary done"], promoted_at)
    # Served by the new champion since: every third message a spam, and it lets most spam through.
    records = []
    labels = {}
    for i in range(60):
        when = promoted_at + dt.timedelta(seconds=10 + i)
        is_spam = i % 3 == 0
        text = spam(i) if is_spam else ham(i)
        labels[text] = "spam" if is_spam else "ham"
        p = 0.9 if is_spam and i % 12 == 0 else 0.1  # catches 5 of 20 spams: spam F1 0.4
        records.append(record(uuid7_at(when), when, "2", "champion", True, p, text))
    write_segment(log, records, promoted_at, promoted_at + dt.timedelta(minutes=2))
    write_feedback(log, labels, dt.datetime.now(UTC))

    outcome = run_rollout(instance, resources)
    assert (outcome["action"], outcome["champion_version_now"], outcome["stage_now"]) == (ROLLED_BACK, "1", RETIRED)
    assert outcome["reasons"][0].startswith("live spam F1 0.400 of v2 since promotion < floor 0.85")
    assert str(registry.champion().version) == "1" and str(registry.version_for("previous-champion").version) == "2"
    t = tags(registry, "2")
    assert t[TAG_ROLLED_BACK] == "true" and t[TAG_ROLLOUT_STAGE] == RETIRED
    assert t[TAG_REASON.format(stage=RETIRED)].startswith("rolled back to v1; live spam F1 0.400")
    assert rollout_message(outcome, "").startswith("spam-classifier v2 ROLLED BACK: v1 serves again.")


def test_a_promoted_champion_within_the_floor_stays(registry, instance, resources, home):
    log = paths(home).predictions
    stages = Rollout(registry)
    stages.start_shadow("2", ["holdout"], dt.datetime.now(UTC))
    promoted_at = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(minutes=10)
    stages.promote("2", ["canary done"], promoted_at)
    messages, labels = labelled_traffic(60)
    records = [record(uuid7_at(promoted_at + dt.timedelta(seconds=10 + i)), promoted_at + dt.timedelta(seconds=10 + i),
                      "2", "champion", True, m.champion_p, m.text) for i, m in enumerate(messages)]  # fmt: skip
    write_segment(log, records, promoted_at, promoted_at + dt.timedelta(minutes=2))
    write_feedback(log, labels, dt.datetime.now(UTC))
    outcome = run_rollout(instance, resources)
    assert outcome["action"] == WAIT and "not credibly below 0.85" in outcome["reasons"][0]
    assert str(registry.champion().version) == "2"


# --- the sensors, through Dagster's tick machinery ----------------------------------------------------


def test_the_rollout_sensor_requests_a_run_only_when_there_is_something_new(registry, instance, resources, home):
    defs = dg.Definitions(assets=[live_comparison, rollout_decision], jobs=[rollout_job], sensors=[rollout_sensor],
                          resources=resources)  # fmt: skip

    needed = {k: resources[k] for k in ("store", "registry", "rollout")}  # the sensor's own (no generator resource)

    def tick(cursor=None):
        context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources=needed)
        return rollout_sensor.evaluate_tick(context)

    quiet = tick()
    assert not quiet.run_requests and "no challenger in shadow or canary" in quiet.skip_message

    Rollout(registry).start_shadow("2", ["holdout"], dt.datetime.now(UTC))
    first = tick()
    (request,) = first.run_requests
    assert request.run_key.startswith("rollout:1:2:shadow:") and request.tags["spam/trigger"] == "rollout"
    again = tick(first.cursor)
    assert not again.run_requests and "no new segment, feedback or stage time" in again.skip_message

    messages, _ = labelled_traffic(5)
    write_rollout_segment(paths(home).predictions, messages, champion="1", challenger="2", start=dt.datetime.now(UTC))
    newer = tick(first.cursor)
    assert len(newer.run_requests) == 1 and newer.run_requests[0].run_key != request.run_key

    off = dg.Definitions(jobs=[rollout_job], assets=[live_comparison, rollout_decision], sensors=[rollout_sensor],
                         resources={**resources, "rollout": RolloutPolicy(**{**RULES, "enabled": False})})  # fmt: skip
    skipped = rollout_sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, definitions=off, resources={**needed, "rollout": RolloutPolicy(enabled=False)})
    )
    assert not skipped.run_requests and "staged rollout off" in skipped.skip_message


def test_notify_rollout_posts_each_stage_change(registry, instance, resources, home):
    log = paths(home).predictions
    with recording_server() as (url, received):
        hook = {"webhook": Webhook(url=url, timeout_seconds=2)}
        # The first tick only places the cursor at "now": history is not re-announced.
        cursor = notify_rollout.evaluate_tick(dg.build_sensor_context(instance=instance, resources=hook)).cursor
        Rollout(registry).start_shadow("2", ["holdout"], dt.datetime.now(UTC))
        assert run_rollout(instance, resources)["action"] == WAIT  # no change: nothing to post
        since = backdate(registry, "2", minutes=2)
        messages, labels = labelled_traffic(40, challenger_wrong_every=4)
        write_rollout_segment(log, messages, champion="1", challenger="2", start=since + dt.timedelta(seconds=5))
        write_feedback(log, labels, dt.datetime.now(UTC))
        assert run_rollout(instance, resources)["action"] == RETIRED
        notify_rollout.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor, resources=hook))
    (posted,) = received
    assert posted["text"].startswith("spam-classifier v2 retired in shadow: champion v1 keeps serving.")
    assert "McNemar" in posted["text"] and "Run: " in posted["text"]


# --- champion_decision starts the rollout (real training on generated SMS) -----------------------------


def test_champion_decision_sends_a_winner_to_shadow_and_supersedes_the_older_one(home, instance, tmp_path, monkeypatch):
    from spam_assets.defs.assets.deployment import OUTCOME_KEY
    from spam_assets.defs.automation.notifications import decision_message
    from spam_assets.defs.resources import PlatformStore, PromotionPolicy
    from spam_assets.defs.run_tags import FORCE_RETRAIN_TAG
    from spam_assets.intake import register, stage
    from spam_assets.runner import graph_assets, materialize_batches
    from tests.synthetic import sms_messages, write_sms_file

    monkeypatch.setenv("SPAM_ROLLOUT", "on")
    fast = {"ops": {"trained_model": {"config": {"folds": 3}}}}
    # Lenient enough that a retrain on the same data wins: what follows the win is under test.
    resources = {**build_resources(str(home)), "promotion": PromotionPolicy(min_spam_f1=0.5, min_spam_precision=0.5, min_improvement=-1.0)}
    batch = stage(write_sms_file(sms_messages(900, seed=1), tmp_path / "first.txt"), PlatformStore().batches())
    register(instance, batch)
    assert all(r.success for r in materialize_batches([batch], instance, resources, fast))
    reg = Registry(tracking_uri())
    assert str(reg.champion().version) == "1" and tags(reg, "1")[TAG_ROLLOUT_STAGE] == PROMOTED  # nothing to compare with

    def retrain() -> dict:
        result = dg.materialize(graph_assets(), selection=["trained_model", "champion_decision"], instance=instance,
                                resources=resources, run_config=fast, tags={FORCE_RETRAIN_TAG: "true"})  # fmt: skip
        assert result.success
        outcome = instance.get_latest_materialization_event(dg.AssetKey("champion_decision")).asset_materialization
        return outcome.metadata[OUTCOME_KEY].value, instance.get_run_by_id(result.run_id)

    outcome, run = retrain()
    assert (outcome["action"], outcome["promoted"], outcome["rollout_stage"]) == ("shadow", False, SHADOW)
    assert outcome["champion_version_now"] == "1" and str(reg.champion().version) == "1"
    assert str(reg.challenger().version) == "2" and Rollout(reg).live().stage == SHADOW
    t = tags(reg, "2")
    assert (t[TAG_ROLLOUT_STAGE], t[TAG_ROLLOUT_CANARY_SHARE], t["decision"]) == (SHADOW, "0.0", "shadow")
    assert "staged rollout: shadow until 300 paired messages and 30 minutes, then canary at 10%" in t[TAG_REASON.format(stage=SHADOW)]
    assert decision_message(outcome, run).startswith(
        "spam-classifier v2 passed the holdout and starts its staged rollout in shadow; champion v1 keeps serving."
    )

    outcome, _ = retrain()  # a newer challenger while v2 is in shadow
    assert outcome["action"] == "shadow" and outcome["superseded"] == ["2"]
    assert tags(reg, "2")[TAG_ROLLOUT_STAGE] == RETIRED and Rollout(reg).live().name == "3"


def test_knobs_come_from_the_environment_and_bad_ones_are_named(home, monkeypatch):
    monkeypatch.setenv("SPAM_ROLLOUT", "on")
    monkeypatch.setenv("SPAM_ROLLOUT_CANARY_SHARE", "0.5")
    monkeypatch.setenv("SPAM_ROLLOUT_SHADOW_PAIRS", "1000")
    rules = build_resources(str(home))["rollout"].rules()
    assert (rules.enabled, rules.canary_share, rules.shadow_pairs, rules.alpha) == (True, 0.5, 1000, 0.05)
    monkeypatch.setenv("SPAM_ROLLOUT", "off")
    assert build_resources(str(home))["rollout"].rules().enabled is False
    monkeypatch.setenv("SPAM_ROLLOUT", "maybe")
    with pytest.raises(ValueError, match="SPAM_ROLLOUT='maybe' is not on or off"):
        build_resources(str(home))
    monkeypatch.setenv("SPAM_ROLLOUT", "on")
    monkeypatch.setenv("SPAM_ROLLOUT_CANARY_SHARE", "2")
    with pytest.raises(ValueError, match=r"canary_share 2.0 is not in \(0, 1\] \(from \$SPAM_ROLLOUT_<KNOB>"):
        build_resources(str(home))
    monkeypatch.setenv("SPAM_ROLLOUT_CANARY_SHARE", "ten percent")
    with pytest.raises(ValueError, match="SPAM_ROLLOUT_CANARY_SHARE='ten percent' is not a number"):
        build_resources(str(home))
