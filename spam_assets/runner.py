"""Run the asset graph in-process for given batches (CLI, tests, benchmarks), and say what happened.

Two runs, as automation does it: the batch partitions, then, if any batch
was accepted, everything downstream on the whole corpus.

`summarize` reads a run's event log back into a few lines a person reads
(what the assets logged, checks that did not pass, steps that failed, one
line each): the CLI prints those and silences Dagster's console logger,
whose DEBUG events and stack traces are for `--verbose`/`--debug`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence

import dagster as dg

from spam_assets.cli_errors import one_line
from spam_assets.definitions import defs
from spam_assets.defs.assets.deployment import OUTCOME_KEY
from spam_assets.defs.assets.ingestion import raw_sample
from spam_assets.defs.keys import CHAMPION_DECISION, TRAINED_MODEL
from spam_assets.defs.run_tags import (
    FORCE_RETRAIN_TAG,
    NOT_TRAINED_TAG,
    REFRESH_TRIGGER,
    RETRAIN_REASON_TAG,
    TRIGGER_TAG,
)
from spam_assets.model.registry import Registry
from spam_assets.settings import tracking_uri

# Dagster's error class names, as step failures record them.
CHECKS_FAILED_ERROR = "DagsterAssetCheckFailedError"  # a step failed only because blocking checks did
INTERRUPTED_ERROR = "DagsterExecutionInterruptedError"  # Ctrl-C during a step

# Dagster's own notices when trained_model decides not to train (its check, then champion_decision,
# are skipped): trained_model's "not retraining: ..." line says why, and these add nothing to it.
SKIP_NOTICES = ("Skipping step ", "op 'trained_model' did not yield or return expected outputs")

DOWNSTREAM = ["cleaned_corpus", "drift_statistics", "trained_model", "champion_decision"]


def materialize_batches(
    batch_ids: Sequence[str],
    instance: dg.DagsterInstance,
    resources: dict,
    run_config: dict | None = None,
    downstream: Sequence[str] = DOWNSTREAM,
    log_level: str | None = None,
    stop: Callable[[], bool] = lambda: False,
    downstream_tags: dict[str, str] | None = None,
) -> list[dg.ExecuteInProcessResult]:
    """One run per batch, then one downstream run if any batch was accepted.

    `log_level` sets Dagster's console logger (None: Dagster's default, DEBUG;
    CRITICAL silences it). `stop()` is asked before each run: once it says
    so, no further run starts (the CLI's Ctrl-C between runs).
    `downstream_tags` go on the downstream run: REFRESH_TAGS make it follow
    the drift/decay rule as the inbox's refresh run does (`ingest`), FORCED_TAGS
    make it train (`ingest --retrain`); without tags it trains unless the
    corpus has its challenger already (tests, benchmarks).
    """
    results = []
    for batch_id in batch_ids:
        if stop():
            return results
        results.append(
            dg.materialize(
                [raw_sample],
                partition_key=batch_id,
                instance=instance,
                resources=resources,
                run_config=_with_console_level(None, log_level),
                raise_on_error=False,
            )
        )
    if downstream and any(r.success for r in results) and not stop():
        results.append(
            dg.materialize(
                graph_assets(),
                selection=list(downstream),
                instance=instance,
                resources=resources,
                run_config=_with_console_level(_only(run_config, downstream), log_level),
                raise_on_error=False,
                tags=downstream_tags,
            )
        )
    return results


# The downstream run of `ingest`: the inbox's refresh run (automation.py), trained only by the rule.
REFRESH_TAGS = {TRIGGER_TAG: REFRESH_TRIGGER}
# `ingest --retrain`: trains whatever the verdict, even a corpus that has its challenger.
FORCED_TAGS = {
    TRIGGER_TAG: "ingest --retrain",
    RETRAIN_REASON_TAG: "asked for by spam-platform ingest --retrain",
    FORCE_RETRAIN_TAG: "true",
}


@dataclasses.dataclass(frozen=True)
class TrainingOutcome:
    trained: bool
    line: str


def training_outcome(result: dg.ExecuteInProcessResult, instance: dg.DagsterInstance) -> TrainingOutcome | None:
    """Whether a downstream run trained, and why, in one line; None if it stopped before deciding.

    Read from what the run recorded: trained_model's materialisation and the
    reason tag, or the reason trained_model gave for not training
    (NOT_TRAINED_TAG); champion_decision's outcome; the champion now.
    """
    tags = instance.get_run_by_id(result.run_id).tags
    materialised = {e.asset_key: e for e in result.get_asset_materialization_events()}
    if (trained := materialised.get(TRAINED_MODEL)) is not None:
        meta = trained.materialization.metadata
        # The full reason is trained_model's "retraining:" line above; this one says what came of it.
        line = f"trained challenger v{meta['model_version'].value}: {one_line(meta['retrain_reason'].value, 160)}"
        if (decided := materialised.get(CHAMPION_DECISION)) is not None:
            outcome = decided.materialization.metadata[OUTCOME_KEY].value
            now = outcome.get("champion_version_now")
            done = "promoted" if outcome["promoted"] else "not promoted"
            if outcome.get("rollout_stage") == "shadow":
                done = "in shadow (staged rollout: shadow, canary, then champion on live traffic)"
            line += f"; {done}, champion " + (f"v{now}" if now else "none")
        return TrainingOutcome(True, line)
    if (why := tags.get(NOT_TRAINED_TAG)) is None:
        return None
    champion = Registry(tracking_uri()).champion()
    kept = f"champion v{champion.version} kept" if champion is not None else "no champion yet"
    return TrainingOutcome(False, f"not trained: {why}: {kept}")


def graph_assets() -> list:
    """Every asset of the code location, as its defs folder declares them (without its resources)."""
    return list(defs().assets or [])


def _only(run_config: dict | None, keys) -> dict | None:
    """Dagster rejects config for assets outside the selection; keep what applies."""
    if not run_config or "ops" not in run_config:
        return run_config
    return {**run_config, "ops": {k: v for k, v in run_config["ops"].items() if k in keys}}


def _with_console_level(run_config: dict | None, log_level: str | None) -> dict | None:
    if log_level is None:
        return run_config
    return {**(run_config or {}), "loggers": {"console": {"config": {"log_level": log_level}}}}


def blocked_by_checks(result: dg.ExecuteInProcessResult) -> bool:
    """A blocking (ERROR-severity) check failed in this run: for a batch, it was rejected."""
    return any(not c.passed and c.severity == dg.AssetCheckSeverity.ERROR for c in result.get_asset_check_evaluations())


def interrupted(result: dg.ExecuteInProcessResult) -> bool:
    """A step of this run was stopped by Ctrl-C (Dagster turns SIGINT into a failed step)."""
    return any(
        (error := _innermost(event.step_failure_data.error)) is not None and error.cls_name == INTERRUPTED_ERROR
        for event in result.get_step_failure_events()
    )


def summarize(result: dg.ExecuteInProcessResult, instance: dg.DagsterInstance) -> Iterator[str]:
    """One line per thing a person should see from a run, in the order it happened.

    Asset log messages (INFO and up), checks that did not pass (a failure as
    "check failed", a WARN-severity check as "warning"), and steps that failed
    with the innermost error. A step failed only because blocking checks
    failed says nothing more than those checks, so it is left out.
    """
    named_a_failure = False
    for entry in instance.all_logs(result.run_id):
        event = entry.dagster_event
        if event is None:
            if entry.level >= logging.INFO and not (entry.user_message or "").startswith(SKIP_NOTICES):
                yield _log_line(entry)
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            check = event.asset_check_evaluation_data
            if not check.passed:
                failed = check.severity == dg.AssetCheckSeverity.ERROR
                named_a_failure |= failed
                kind = "check failed" if failed else "warning"
                yield f"{kind}: {check.asset_key.to_user_string()}.{check.check_name}: {one_line(check.description)}"
        elif event.is_step_failure:
            error = _innermost(event.step_failure_data.error)
            named_a_failure = True
            if error is None or error.cls_name == CHECKS_FAILED_ERROR:
                continue  # the failed checks said it
            if error.cls_name == INTERRUPTED_ERROR:
                yield f"{entry.step_key} interrupted"
            else:
                yield f"{entry.step_key} failed: {error.cls_name}: {one_line(error.message.split(': ', 1)[-1])}"
        elif event.is_run_failure and not named_a_failure:
            yield f"run failed: {one_line(event.message)}"


def _log_line(entry) -> str:
    where = f"{entry.step_key}: " if entry.step_key else ""
    level = "" if entry.level < logging.WARNING else f"{logging.getLevelName(entry.level).lower()}: "
    return f"{level}{where}{one_line(entry.user_message)}"


def _innermost(error):
    """Dagster wraps user code's exception (step execution error -> cause); the cause is the news."""
    while error is not None and error.cause is not None:
        error = error.cause
    return error
