"""The rollout sensor: runs the live comparison and the rollout decision when there is something new to judge.

While a challenger is in shadow or canary (or a champion the rollout
promoted is in its watch), each tick fingerprints the evidence: the pair of
versions and the stage, the log segments published since the rollout began,
the feedback files' sizes, and whether the stage's minimum time has passed.
A new fingerprint requests one run of the `rollout` job (live_comparison,
then rollout_decision) with the fingerprint in its run key, so a tick
evaluated twice launches nothing twice and an idle minute launches nothing.
"""

import datetime as dt
import hashlib

import dagster as dg

from spam_assets.defs.automation.settings import ROLLOUT_ENV, rollout_interval
from spam_assets.defs.keys import LIVE_COMPARISON, ROLLOUT_DECISION
from spam_assets.defs.resources import ModelRegistry, PlatformStore, RolloutPolicy
from spam_assets.defs.run_tags import TRIGGER_TAG
from spam_assets.model.tags import TAG_ROLLOUT_STAGE
from spam_assets.rollout import PROMOTED, SHADOW, TAG_AT, Rollout, parse_time
from spam_assets.settings import PREVIOUS_CHAMPION_ALIAS
from spam_assets.traffic.feedback_files import feedback_dir
from spam_assets.traffic_tables import published_segments

ROLLOUT_TRIGGER = "rollout"

rollout_job = dg.define_asset_job(
    "rollout",
    selection=dg.AssetSelection.assets(LIVE_COMPARISON, ROLLOUT_DECISION),
    description="Compare champion and challenger on live traffic, then advance, promote, retire or roll back.",
)


def subject(reg, rules, now: dt.datetime) -> tuple[str, dt.datetime, bool] | str:
    """(what is under watch, since when its evidence counts, whether its stage's minimum time has passed),
    or why nothing is."""
    stages = Rollout(reg)
    champion = reg.champion()
    live = stages.live()
    if live is not None:
        needed = rules.shadow_min_seconds if live.stage == SHADOW else rules.canary_min_seconds
        ripe = (now - live.since).total_seconds() >= needed
        return f"{champion.version if champion else '-'}:{live.name}:{live.stage}", stages.began(live.version), ripe
    if champion is not None and champion.tags.get(TAG_ROLLOUT_STAGE) == PROMOTED:
        promoted_at = parse_time(champion.tags.get(TAG_AT.format(stage=PROMOTED)))
        watched = (now - promoted_at).total_seconds() <= rules.watch_seconds
        if watched and reg.version_for(PREVIOUS_CHAMPION_ALIAS) is not None:
            return f"watch:{champion.version}", promoted_at, True
    return "no challenger in shadow or canary, and no champion in its watch after promotion"


def fingerprint(store: PlatformStore, what: str, since: dt.datetime, ripe: bool) -> str:
    log_dir = store.paths.predictions
    names = sorted(s.name for s in published_segments(log_dir) if s.modified >= since - dt.timedelta(seconds=60))
    sizes = []
    for path in sorted(feedback_dir(log_dir).glob("feedback-*.jsonl")):
        try:
            sizes.append(f"{path.name}={path.stat().st_size}")
        except FileNotFoundError:
            continue
    text = "\n".join([what, str(ripe), *names, *sizes])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dg.sensor(
    name="rollout_sensor",
    target=rollout_job,
    minimum_interval_seconds=rollout_interval(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "While a challenger is in shadow or canary (or a champion the rollout promoted is in its watch): "
        "runs live_comparison and rollout_decision whenever a log segment is published, feedback arrives "
        f"or a stage's minimum time passes. Off with ${ROLLOUT_ENV}=off."
    ),
)
def rollout_sensor(
    context: dg.SensorEvaluationContext, store: PlatformStore, registry: ModelRegistry, rollout: RolloutPolicy
) -> dg.SensorResult | dg.SkipReason:
    rules = rollout.rules()
    if not rules.enabled:
        return dg.SkipReason(f"staged rollout off (${ROLLOUT_ENV}=off)")
    found = subject(registry.registry(), rules, dt.datetime.now(dt.UTC))
    if isinstance(found, str):
        return dg.SkipReason(found)
    what, since, ripe = found
    digest = fingerprint(store, what, since, ripe)
    if digest == context.cursor:
        return dg.SkipReason(f"{what}: no new segment, feedback or stage time since the last run")
    tags = {TRIGGER_TAG: ROLLOUT_TRIGGER, "spam/rollout_subject": what}
    request = dg.RunRequest(run_key=f"rollout:{what}:{digest}", tags=tags)
    return dg.SensorResult(run_requests=[request], cursor=digest)
