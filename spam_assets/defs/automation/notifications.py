"""Notifications: a Slack-compatible webhook ({"text": ...}) when a champion is promoted, kept, or a run fails.

The URL is $SPAM_WEBHOOK_URL; without it nothing is sent. Posting is
best effort: stdlib urllib, a short timeout, and any failure is logged and
swallowed, so a broken chat integration never fails or stalls the platform.
"""

import dagster as dg

from spam_assets.defs.assets.deployment import OUTCOME_KEY
from spam_assets.defs.assets.rollout import ROLLED_BACK, ROLLOUT_KEY
from spam_assets.defs.automation.recovery import death_reason, plain_words
from spam_assets.defs.automation.settings import notify_interval, retry_backoff_seconds
from spam_assets.defs.keys import CHAMPION_DECISION, ROLLOUT_DECISION
from spam_assets.defs.resources import PlatformStore, Webhook
from spam_assets.defs.run_tags import (
    CORPUS_VERSION_TAG,
    INBOX_FILE_TAG,
    RETRAIN_REASON_TAG,
    RETRY_TRIGGER,
    TRIGGER_TAG,
)


def decision_message(outcome: dict, run: dg.DagsterRun) -> str:
    """The text for one champion_decision outcome (its JSON metadata)."""
    challenger, before = outcome["challenger_version"], outcome["champion_version_before"]
    why = run.tags.get(RETRAIN_REASON_TAG) or f"requested by {run.tags.get(TRIGGER_TAG, 'hand or bootstrap')}"
    if outcome.get("rollout_stage") == "shadow":
        head = (
            f"spam-classifier v{challenger} passed the holdout and starts its staged rollout in shadow; "
            f"champion v{before} keeps serving."
        )
    elif outcome["promoted"]:
        previous = f"previous champion: v{before}" if before is not None else "first champion"
        head = f"spam-classifier v{challenger} promoted to champion ({previous})."
    else:
        head = f"Retrain rejected by the gates: champion v{before} kept, challenger v{challenger} not promoted."
    return f"{head}\nDecision: {'; '.join(outcome['reasons'])}\nRetrain reason: {why}\nRun: {run.run_id}"


def rollout_message(outcome: dict, where: str) -> str | None:
    """The text for a rollout transition (rollout_decision's outcome, or an operator's override); None for no change."""
    action, version = outcome["action"], outcome["version"]
    if action == "wait" or outcome.get("stage_before") == outcome.get("stage_now"):
        return None
    if action == ROLLED_BACK:
        head = f"spam-classifier v{version} ROLLED BACK: v{outcome['champion_version_now']} serves again."
    elif action == "promoted":
        previous = outcome["previous_champion"]
        head = f"spam-classifier v{version} promoted to champion after its staged rollout (previous champion: v{previous})."
    elif action == "retired":
        serving = outcome["champion_version_now"]
        head = f"spam-classifier v{version} retired in {outcome['stage_before']}: champion v{serving} keeps serving."
    else:
        head = f"spam-classifier v{version}: {outcome['stage_before']} → {outcome['stage_now']}."
    return "\n".join([head, *[f"- {r}" for r in outcome["reasons"][:8]], where])


def failure_message(
    run: dg.DagsterRun, step_errors: list[str], batch_reason: str | None, death: str | None = None
) -> str:
    """The text for a failed run; `death`: why it died, when it died while training."""
    partition = run.tags.get("dagster/partition")
    lines = []
    if death is not None:
        corpus = run.tags[CORPUS_VERSION_TAG]
        lines.append(f"Training of corpus {corpus} died: {plain_words(death)}")
        if run.tags.get(TRIGGER_TAG) == RETRY_TRIGGER:
            lines.append(
                "This was its retry, so it is not retried again: fix the cause, then launch the retrain job "
                f"(or wait for the next batch). Retry of run {run.tags.get('spam/died_run', '?')}."
            )
        else:
            lines.append(
                f"The loop retrains it once by itself, {retry_backoff_seconds():.0f} s after the failure "
                "(sensor retry_dead_training), unless a newer challenger covers it by then."
            )
    lines.append(f"Platform run failed: {run.job_name}{f' (batch {partition})' if partition else ''}, run {run.run_id}")
    if run.tags.get(INBOX_FILE_TAG):
        lines.append(f"Inbox file: {run.tags[INBOX_FILE_TAG]}")
    if batch_reason:
        lines.append(f"Batch rejected: {batch_reason}")
    lines += [f"Error: {error}" for error in step_errors[:3]]
    return "\n".join(lines)


def _root_cause(error) -> str:
    """Dagster wraps user errors ("Error occurred while executing op ..."): the cause is what helps."""
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def materialised_json(instance: dg.DagsterInstance, run_id: str, key: dg.AssetKey, name: str) -> dict | None:
    """The JSON metadata `name` of the asset `key` if this run materialised it, else None."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        materialization = entry.asset_materialization
        if materialization is not None and materialization.asset_key == key and name in materialization.metadata:
            return materialization.metadata[name].value
    return None


def decision_outcome(instance: dg.DagsterInstance, run_id: str) -> dict | None:
    """champion_decision's outcome (JSON metadata) if this run materialised it, else None."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        materialization = entry.asset_materialization
        if materialization is not None and materialization.asset_key == CHAMPION_DECISION:
            if OUTCOME_KEY in materialization.metadata:
                return materialization.metadata[OUTCOME_KEY].value
    return None


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    name="notify_champion_decision",
    minimum_interval_seconds=notify_interval(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts to $SPAM_WEBHOOK_URL when champion_decision promoted a challenger or kept the champion.",
)
def notify_champion_decision(context: dg.RunStatusSensorContext, webhook: Webhook) -> None:
    outcome = decision_outcome(context.instance, context.dagster_run.run_id)
    if outcome is not None:
        webhook.post(decision_message(outcome, context.dagster_run), context.log)
    # Returning None lets the sensor go on to the next finished run in the same tick.


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    name="notify_rollout",
    minimum_interval_seconds=notify_interval(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts to $SPAM_WEBHOOK_URL each stage a challenger's staged rollout enters (canary, promoted, "
    "retired) and each rollback of a champion that decayed on live traffic, with the evidence.",
)
def notify_rollout(context: dg.RunStatusSensorContext, webhook: Webhook) -> None:
    outcome = materialised_json(context.instance, context.dagster_run.run_id, ROLLOUT_DECISION, ROLLOUT_KEY)
    if outcome is not None and (text := rollout_message(outcome, f"Run: {context.dagster_run.run_id}")):
        webhook.post(text, context.log)


@dg.run_failure_sensor(
    name="notify_run_failure",
    minimum_interval_seconds=notify_interval(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts to $SPAM_WEBHOOK_URL when any run of this code location fails (a rejected batch included).",
)
def notify_run_failure(context: dg.RunFailureSensorContext, webhook: Webhook, store: PlatformStore) -> None:
    run = context.dagster_run
    errors = [
        f"{e.step_key}: {_root_cause(e.event_specific_data.error)}"
        for e in context.get_step_failure_events()
        if getattr(e.event_specific_data, "error", None) is not None
    ] or [context.failure_event.message]
    partition = run.tags.get("dagster/partition")
    verdict = store.batches().validation(partition) if partition else None
    death = death_reason(context.instance, run) if CORPUS_VERSION_TAG in run.tags else None
    webhook.post(failure_message(run, errors, verdict.get("reason") if verdict else None, death), context.log)
