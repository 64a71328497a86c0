"""Notifications: a Slack-compatible webhook ({"text": ...}) when a champion is promoted, kept, or a run fails.

The URL is $SPAM_WEBHOOK_URL; without it nothing is sent. Posting is
best effort: stdlib urllib, a short timeout, and any failure is logged and
swallowed, so a broken chat integration never fails or stalls the platform.
"""

import json
import logging
import os
import urllib.parse
import urllib.request

import dagster as dg

from spam_assets.defs.assets.deployment import champion_decision
from spam_assets.defs.automation.settings import WEBHOOK_ENV, WEBHOOK_TIMEOUT_ENV, env_number, notify_interval
from spam_assets.defs.run_tags import INBOX_FILE_TAG, RETRAIN_REASON_TAG, TRIGGER_TAG
from spam_assets.defs.resources import PlatformStore

log = logging.getLogger(__name__)
MAX_TEXT = 3500  # Slack truncates long messages; the UI has the rest


class Webhook(dg.ConfigurableResource):
    """Where notifications go. Unset fields fall back to the environment when a message is sent."""

    url: str | None = None  # None: $SPAM_WEBHOOK_URL; neither: notifications are off
    timeout_seconds: float | None = None  # None: $SPAM_WEBHOOK_TIMEOUT_SECONDS, else 5

    def target(self) -> str | None:
        return self.url or os.environ.get(WEBHOOK_ENV, "").strip() or None

    def post(self, text: str, logger: logging.Logger | None = None) -> bool:
        """POST {"text": text}; True if the server accepted it. Never raises."""
        url, logger = self.target(), logger or log
        if url is None:
            return False
        timeout = self.timeout_seconds or env_number(WEBHOOK_TIMEOUT_ENV, 5)
        body = json.dumps({"text": text[:MAX_TEXT]}).encode()
        try:
            headers = {"Content-Type": "application/json"}
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read()
            return True
        except Exception as error:  # noqa: BLE001 - refused, HTTP errors, timeouts, bad URLs: all only logged
            logger.warning(f"webhook {_redacted(url)}: notification not delivered ({type(error).__name__}: {error})")
            return False


def _redacted(url: str) -> str:
    """Webhook URLs carry their secret in the path: log only where they point."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/…" if parts.netloc else "<invalid URL>"


def _bullets(markdown: object) -> str:
    return "; ".join(line.removeprefix("- ").strip() for line in str(markdown or "").splitlines() if line.strip())


def decision_message(meta: dict, run: dg.DagsterRun) -> str:
    """The text for one champion_decision materialisation's metadata."""
    challenger, before = meta.get("challenger_version"), meta.get("champion_version_before")
    why = run.tags.get(RETRAIN_REASON_TAG) or f"requested by {run.tags.get(TRIGGER_TAG, 'hand or bootstrap')}"
    if meta.get("decision") == "promote":
        previous = f"previous champion: v{before}" if before not in (None, "—") else "first champion"
        head = f"spam-classifier v{challenger} promoted to champion ({previous})."
    else:
        head = f"Retrain rejected by the gates: champion v{before} kept, challenger v{challenger} not promoted."
    return f"{head}\nDecision: {_bullets(meta.get('reasons'))}\nRetrain reason: {why}\nRun: {run.run_id}"


def failure_message(run: dg.DagsterRun, step_errors: list[str], batch_reason: str | None) -> str:
    partition = run.tags.get("dagster/partition")
    lines = [f"Platform run failed: {run.job_name}{f' (batch {partition})' if partition else ''}, run {run.run_id}"]
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


def decision_metadata(instance: dg.DagsterInstance, run_id: str) -> dict | None:
    """champion_decision's metadata if this run materialised it, else None."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        materialization = entry.asset_materialization
        if materialization is not None and materialization.asset_key == champion_decision.key:
            return {k: v.value for k, v in materialization.metadata.items()}
    return None


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    name="notify_champion_decision",
    minimum_interval_seconds=notify_interval(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts to $SPAM_WEBHOOK_URL when champion_decision promoted a challenger or kept the champion.",
)
def notify_champion_decision(context: dg.RunStatusSensorContext, webhook: Webhook) -> None:
    meta = decision_metadata(context.instance, context.dagster_run.run_id)
    if meta is not None:
        webhook.post(decision_message(meta, context.dagster_run), context.log)
    # Returning None lets the sensor go on to the next finished run in the same tick.


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
    webhook.post(failure_message(run, errors, verdict.get("reason") if verdict else None), context.log)
