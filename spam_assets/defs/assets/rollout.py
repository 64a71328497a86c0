"""The staged rollout in the graph: live_comparison judges the pair on live traffic, rollout_decision moves it.

live_comparison pairs the champion's and the challenger's verdicts on the
same messages in the prediction log (spam_assets/live_comparison.py), for
the version the alias `challenger` names while it is in shadow or canary.
rollout_decision takes that comparison (Dagster's record of it, never a
side channel) and applies the policy (spam_assets/rollout.py): stay, go to
canary, promote, or retire with the evidence; after a promotion it watches
the new champion's realised F1 on its served, feedback-labelled traffic and
rolls back to previous-champion when it is credibly below the decay floor.
The rollout sensor (automation/rollout.py) runs both when new evidence
arrives; each transition is posted by notify_rollout (notifications.py).
"""

from datetime import UTC, datetime

import dagster as dg
import pandas as pd

from spam_assets.batches import write_json_atomic, write_text_atomic
from spam_assets.defs.assets.deployment import DECISION_POOL
from spam_assets.defs.keys import LIVE_COMPARISON
from spam_assets.defs.resources import DecayPolicy, ModelRegistry, PlatformStore, RolloutPolicy
from spam_assets.defs.upstream import handed_over
from spam_assets.drift import DriftThresholds
from spam_assets.feedback_labels import voted_labels
from spam_assets.live_comparison import LiveComparison, compare, pair_verdicts
from spam_assets.rollout import CANARY, PROMOTED, RETIRED, TAG_AT, WAIT, Rollout, live_decay, next_step, parse_time
from spam_assets.settings import PREVIOUS_CHAMPION_ALIAS
from spam_assets.model.tags import TAG_ROLLOUT_STAGE
from spam_assets.traffic.prediction_files import read_predictions

COMPARISON_KEY = "comparison"  # the hand-off: live_comparison's figures as JSON
ROLLOUT_KEY = "rollout"  # rollout_decision's outcome as JSON: what notify_rollout reads
ROLLED_BACK = "rolled_back"  # rollout_decision's action when a promoted champion decayed on live traffic
TABLE_ROWS = 20  # disagreements shown in the UI; the JSON report keeps up to 200


@dg.asset(
    group_name="deployment",
    kinds={"scipy", "pandas"},
    description=(
        "Champion and challenger (alias `challenger`, in shadow or canary) on the same live messages: "
        "served and shadow verdicts of the prediction log paired by verdict id. Agreement, the messages they "
        "disagree on, and on messages with feedback labels an exact McNemar test and the difference in spam "
        "precision and recall with 95% paired-bootstrap intervals. Report in rollout/ under the platform home."
    ),
)
def live_comparison(
    context: dg.AssetExecutionContext, store: PlatformStore, registry: ModelRegistry
) -> dg.MaterializeResult:
    reg = registry.registry()
    stages, champion = Rollout(reg), reg.champion()
    live = stages.live()
    if live is None or champion is None:
        note = "no challenger in shadow or canary: nothing to compare"
        context.log.info(note)
        handoff = dg.MetadataValue.json({"live": False, "note": note})
        return dg.MaterializeResult(metadata={COMPARISON_KEY: handoff, "note": note})
    began = stages.began(live.version)
    log_dir = store.paths.predictions
    records = read_predictions(log_dir, since=began)  # no log folder yet: no records
    paired = pair_verdicts(records, str(champion.version), live.name)
    truth = voted_labels(log_dir)
    whole, period = compare(paired, truth), compare(paired.since(live.since), truth)
    handoff = {
        "live": True,
        "champion_version": str(champion.version),
        "challenger_version": live.name,
        "stage": live.stage,
        "stage_since": live.since.isoformat(),
        "rollout_began": began.isoformat(),
        "whole": whole.as_metadata(),
        "stage_period": period.as_metadata(disagreements_kept=0),
        "computed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    folder = store.paths.rollout
    name = f"live-comparison-v{champion.version}-v{live.name}"
    write_json_atomic(folder / f"{name}.json", handoff)
    write_text_atomic(folder / f"{name}.md", _report_md(whole, live.stage))
    for line in whole.headline():
        context.log.info(line)
    return dg.MaterializeResult(
        metadata={
            COMPARISON_KEY: dg.MetadataValue.json(handoff),  # the hand-off; the rest is for people
            "summary": dg.MetadataValue.md("\n".join(f"- {line}" for line in whole.headline())),
            "stage": live.stage,
            "champion_version": str(champion.version),
            "challenger_version": live.name,
            "pairs": whole.pairs,
            "pairs_this_stage": period.pairs,
            "unpaired_served_verdicts": whole.unpaired,
            "labelled_pairs": whole.labelled,
            "agreement": _number(whole.agreement),
            "mcnemar_p": _number(whole.mcnemar_p),
            "spam_precision_delta": str(whole.precision),
            "spam_recall_delta": str(whole.recall),
            "ci_method": whole.ci_method,
            "disagreements": dg.MetadataValue.md(whole.disagreement_markdown(TABLE_ROWS)),
            "report_path": dg.MetadataValue.path(str(folder / f"{name}.json")),
        }
    )


@dg.asset(
    deps=[LIVE_COMPARISON],
    group_name="deployment",
    kinds={"mlflow"},
    pool=DECISION_POOL,  # never at the same time as a champion decision: both move aliases and stages
    description=(
        "Applies the staged rollout to live_comparison's latest figures: the challenger stays, goes from "
        "shadow to canary, is promoted (alias `champion` moves, the old one keeps `previous-champion`) or is "
        "retired with the evidence as reasons (MLflow tags rollout_stage and rollout_<stage>_reason). After "
        "a promotion, rolls back to previous-champion if the champion's live spam F1 on feedback-labelled "
        "served traffic is credibly below the decay floor. Resource `rollout` holds the rules."
    ),
)
def rollout_decision(
    context: dg.AssetExecutionContext,
    store: PlatformStore,
    registry: ModelRegistry,
    rollout: RolloutPolicy,
    decay: DecayPolicy,
) -> dg.MaterializeResult:
    rules, now = rollout.rules(), datetime.now(UTC)
    reg = registry.registry()
    stages, champion = Rollout(reg), reg.champion()
    live = stages.live()
    champion_before = str(champion.version) if champion else None
    outcome = {"action": WAIT, "version": None, "stage_before": None, "stage_now": None, "reasons": [],
               "champion_version_before": champion_before, "champion_version_now": champion_before,
               "previous_champion": None}  # fmt: skip
    if live is not None:
        outcome |= {"version": live.name, "stage_before": live.stage, "stage_now": live.stage}
        handoff = handed_over(context.instance, LIVE_COMPARISON, "rollout_decision").require(COMPARISON_KEY)
        current = (champion_before, live.name, live.stage)
        compared = (handoff.get("champion_version"), handoff.get("challenger_version"), handoff.get("stage"))
        if not handoff.get("live") or compared != current:
            outcome["reasons"] = [
                f"live_comparison is not of champion v{champion_before} and challenger v{live.name} in {live.stage}: "
                "materialise it again (the rollout sensor does)"
            ]
        elif not rules.enabled:
            off = "staged rollout off ($SPAM_ROLLOUT=off): only `spam-platform rollout promote|retire` moves it"
            outcome["reasons"] = [off]
        else:
            whole = LiveComparison.from_metadata(handoff["whole"])
            period = LiveComparison.from_metadata(handoff["stage_period"])
            step = next_step(live.stage, live.since, now, whole, period, rules)
            outcome |= {"action": step.action, "reasons": step.reasons}
            if step.action == CANARY:
                stages.to_canary(live.name, rules.canary_share, step.reasons, now)
            elif step.action == PROMOTED:
                outcome["previous_champion"] = stages.promote(live.name, step.reasons, now)
                outcome["champion_version_now"] = live.name
            elif step.action == RETIRED:
                stages.retire(live.name, step.reasons, now)
            if step.moves:
                outcome["stage_now"] = step.action
                outcome["evidence"] = whole.headline()
    elif champion is not None and rules.enabled:
        outcome |= _watch(store, reg, stages, champion, rules, decay.f1_floor, now)
    reasons = outcome["reasons"] or ["no challenger in shadow or canary, and no champion in its watch after promotion"]
    context.log.info(f"rollout: {outcome['action']} v{outcome['version'] or '—'}: {'; '.join(reasons)}")
    if outcome["action"] != WAIT:
        write_json_atomic(
            store.paths.rollout / f"decision-{now:%Y%m%dT%H%M%S}-v{outcome['version']}-{outcome['action']}.json",
            {**outcome, "at": now.isoformat(timespec="seconds")},
        )
    return dg.MaterializeResult(
        metadata={
            ROLLOUT_KEY: dg.MetadataValue.json(outcome),  # the hand-off: notify_rollout reads it
            "action": outcome["action"],
            "version": outcome["version"] or "—",
            "stage_before": outcome["stage_before"] or "—",
            "stage_now": outcome["stage_now"] or "—",
            "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in reasons)),
            "champion_version_now": outcome["champion_version_now"] or "—",
        },
        tags={"spam/rollout": outcome["action"]},
    )


def _watch(store: PlatformStore, reg, stages: Rollout, champion, rules, f1_floor: float, now: datetime) -> dict:
    """After promotion by the rollout: roll back when the champion's live spam F1 is credibly below the floor."""
    version = str(champion.version)
    promoted_at = parse_time(champion.tags.get(TAG_AT.format(stage=PROMOTED)))
    if champion.tags.get(TAG_ROLLOUT_STAGE) != PROMOTED or reg.version_for(PREVIOUS_CHAMPION_ALIAS) is None:
        return {}
    if (now - promoted_at).total_seconds() > rules.watch_seconds:
        return {"version": version, "reasons": [f"champion v{version} is past its watch after promotion"]}
    log_dir = store.paths.predictions
    if not log_dir.is_dir():
        return {"version": version, "reasons": [f"no prediction log at {log_dir}: live decay not judged"]}
    records = read_predictions(log_dir, since=promoted_at)
    # The level of drift_statistics' realised-F1 part (alpha/4, 0.0125): the watch looks again at each new
    # segment, and a level stricter than 0.05 keeps those repeated looks from rolling back a good champion.
    alpha = DriftThresholds.alpha / 4
    judged = live_decay(
        records, voted_labels(log_dir), version, pd.Timestamp(promoted_at), f1_floor, alpha, rules.min_labelled_pairs
    )
    out = {"version": version, "stage_before": PROMOTED, "stage_now": PROMOTED, "reasons": [judged.reason]}
    if judged.decayed:
        serving = stages.rollback(version, [judged.reason], now)
        out |= {"action": ROLLED_BACK, "stage_now": RETIRED, "champion_version_now": serving}
    return out


def _report_md(whole: LiveComparison, stage: str) -> str:
    lines = [f"# Live comparison ({stage})", "", *[f"- {line}" for line in whole.headline()], ""]
    return "\n".join([*lines, "## Disagreements", "", whole.disagreement_markdown(200), ""])


def _number(value: float) -> float | None:
    return None if value != value else round(float(value), 6)  # NaN: not defined yet
