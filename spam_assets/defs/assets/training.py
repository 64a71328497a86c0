"""trained_model: the challenger, selected by cross-validation and logged to MLflow."""


from typing import Any

import dagster as dg

from spam_assets.challenger import log_challenger
from spam_assets import source_metrics
from spam_assets.decision import gate_failures, robustness_failures, source_failures
from spam_assets.defs.resources import LazyMlflowRun, ModelRegistry, OperatingPointPolicy, PlatformStore, PromotionPolicy
from spam_assets.defs.keys import CLEANED_CORPUS, DRIFT_STATISTICS, TRAINED_MODEL
from spam_assets.defs.retrain_policy import MAX_REASON, challenger_for, rides_with, verdict_of_run
from spam_assets.defs.upstream import Handover, handed_over
from spam_assets.defs.run_tags import (
    CORPUS_VERSION_TAG,
    FORCE_RETRAIN_TAG,
    NOT_TRAINED_TAG,
    REFRESH_TRIGGER,
    RETRAIN_REASON_TAG,
    TRIGGER_TAG,
)
from spam_assets.model.pipelines import candidate_pipelines
from spam_assets.modeling import METRIC_NAMES, select_and_fit, spam_probability
from spam_assets.robustness import Robustness
from spam_assets.training_runs import end_failed


class TrainingConfig(dg.Config):
    seed: int = 0
    # The folds only choose between candidates; the holdout judges promotion. On
    # SMS + e-mail, 3 folds pick the same winner as 5 at half the time (7.8 s
    # against 15.9 s), and training is most of a drift-triggered retrain.
    folds: int = 3
    candidates: list[str] = list(candidate_pipelines())
    n_jobs: int = 2  # cross-validation folds in parallel; 2 cores is the design target


# One training at a time, platform-wide (the pool's limit is 1, as champion_decision's): a
# run that wants to train while another trains waits for it, then sees its challenger.
TRAINING_POOL = "trained_model"


@dg.multi_asset(
    pool=TRAINING_POOL,
    specs=[
        dg.AssetSpec(
            "trained_model",
            deps=[CLEANED_CORPUS, DRIFT_STATISTICS],
            group_name="training",
            kinds={"scikitlearn", "mlflow"},
            # In a refresh run the gate below may decide not to train: nothing
            # is materialised then, and champion_decision is skipped.
            skippable=True,
            automation_condition=rides_with(DRIFT_STATISTICS),
            description=(
                "The challenger: every candidate pipeline (TF-IDF + MultinomialNB; linear SVM on word and "
                "character n-grams, calibrated) cross-validated on the train split, the best refit and scored "
                "on the holdout, on each source of it (sms, email, feedback, ...: precision, recall, F1 and ham "
                "false-positive rate with 95% intervals) and on obfuscated copies of its spam (recall per "
                "perturbation family), logged "
                "to MLflow (params, metrics, confusion matrix, model with signature) "
                "and registered as a new version of `spam-classifier` with alias `challenger`, with its operating "
                "point (the P(spam) thresholds of the spam and suspicious tiers for the target ham false-positive "
                "rates of resource `operating_point`, chosen on the holdout) as version tags. Rides along in "
                "each refresh run and trains there only when that run's drift verdict says drift or decay, "
                "or no champion exists yet; "
                "requested any other way (retrain job, timer, drift sensor, `ingest`, UI), only when the corpus has "
                "no challenger yet, unless the run is tagged spam/force_retrain=true. One training at a time "
                "(pool trained_model)."
            ),
        )
    ],
    check_specs=[
        dg.AssetCheckSpec(
            "challenger_gates",
            asset="trained_model",
            description=(
                "The challenger reaches the absolute gates (spam F1, spam precision, on the whole holdout and "
                "on each source with enough holdout messages; spam recall under its "
                "worst perturbation family near its clean recall) of the promotion policy "
                "(resource `promotion`, the one champion_decision applies) on the holdout."
            ),
        )
    ],
    can_subset=True,  # with skippable: neither the asset nor its check has to be yielded
)
def trained_model(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    store: PlatformStore,
    registry: ModelRegistry,
    promotion: PromotionPolicy,
    operating_point: OperatingPointPolicy,
    mlflow_run: dg.ResourceParam[Any],
):
    if TRAINED_MODEL not in context.selected_asset_keys:
        raise dg.Failure("challenger_gates is checked while training: materialise trained_model with it")
    reason = context.run.tags.get(RETRAIN_REASON_TAG) or f"requested by {context.run.tags.get(TRIGGER_TAG, 'hand')}"
    if context.run.tags.get(TRIGGER_TAG) == REFRESH_TRIGGER:
        verdict, reason = verdict_of_run(context.instance, context.run.run_id)
        if verdict is None:
            _not_training(context, reason)
            return
        # The reason on the run, as on runs the retrain triggers launch.
        context.instance.add_run_tags(context.run.run_id, {TRIGGER_TAG: verdict.trigger, RETRAIN_REASON_TAG: reason})
        context.log.info(f"retraining: {reason}")
    # The corpus cleaned_corpus last materialised (its data version), whatever CURRENT says now.
    upstream = handed_over(context.instance, CLEANED_CORPUS, "trained_model")
    version = upstream.data_version or upstream.require("data_version")
    # At most one training per corpus version, whatever started this run (the timer, two
    # `ingest` commands at once, the UI): this step waited for the training pool, and the
    # run that held it may have trained this very corpus. Same data, same seed, same model.
    if (existing := challenger_for(context.instance, version)) and context.run.tags.get(FORCE_RETRAIN_TAG) != "true":
        _not_training(
            context,
            f"challenger v{existing} was already trained on corpus {version}",
            f" (tag the run {FORCE_RETRAIN_TAG}=true to train it again)",
        )
        return
    # Which corpus this run trains: if its process dies, the retry sensor reads it here.
    context.instance.add_run_tags(context.run.run_id, {CORPUS_VERSION_TAG: version})
    yield _train(context, config, store, registry, promotion, operating_point, mlflow_run, reason, upstream, version)


def _not_training(context: dg.AssetExecutionContext, reason: str, hint: str = "") -> None:
    """Say why not, in the log and on the run (NOT_TRAINED_TAG), where `ingest` and the UI read it."""
    context.log.info(f"not retraining: {reason}{hint}")
    context.instance.add_run_tags(context.run.run_id, {NOT_TRAINED_TAG: reason[:MAX_REASON]})


def _train(
    context,
    config: TrainingConfig,
    store: PlatformStore,
    registry: ModelRegistry,
    promotion: PromotionPolicy,
    operating: OperatingPointPolicy,
    mlflow_run: LazyMlflowRun,
    reason: str,
    upstream: Handover,
    version: str,
) -> dg.MaterializeResult:
    corpora = store.corpus()
    if not corpora.path(version).exists():
        raise dg.Failure(
            f"cleaned_corpus (run {upstream.run_id}) recorded corpus {version}, but {corpora.path(version)} "
            "is missing: materialise cleaned_corpus again"
        )
    corpus = corpora.read(version)
    train, holdout = corpus[corpus["split"] == "train"], corpus[corpus["split"] == "holdout"]
    all_candidates = candidate_pipelines(config.seed)
    unknown = set(config.candidates) - set(all_candidates)
    if unknown:
        raise dg.Failure(f"unknown candidates {sorted(unknown)}; known: {sorted(all_candidates)}")

    result = select_and_fit(
        train,
        holdout,
        seed=config.seed,
        folds=config.folds,
        candidates={name: all_candidates[name] for name in config.candidates},
        n_jobs=config.n_jobs,
        log=context.log.info,
    )
    scores = spam_probability(result.model, holdout["text"].tolist())
    # The threshold serving labels spam from, chosen on the holdout for the target ham false-positive rate.
    point = operating.choose(holdout["label"], scores)
    # Each source of the holdout on its own: a small one is invisible in the merged figures.
    by_source = source_metrics.compare_sources(holdout["label"], holdout["source"], scores, seed=config.seed)
    context.log.info(f"operating point: threshold {point.threshold:.4f}; {point.basis}")
    # Spam recall on obfuscated copies of the holdout spam: how much disguise the model sees through.
    robustness = promotion.robustness(result.model, holdout, version)
    reg = registry.registry()
    # Started only now, so a step that fails before this leaves no MLflow run behind:
    # dagster-mlflow's MlFlow starts (or resumes) the MLflow run tagged with this Dagster run's id.
    mlflow = mlflow_run.start()
    try:
        model_version = log_challenger(
            result,
            reg,
            corpus_version=version,
            dagster_run_id=context.run.run_id,
            params={"seed": config.seed, "folds": config.folds, "candidates": ",".join(config.candidates)},
            n_train=len(train),
            n_holdout=len(holdout),
            operating_point=point,
            source_metrics=[s.challenger for s in by_source],
        )
    except BaseException as error:
        # End the MLflow run FAILED with the reason now: dagster-mlflow's cleanup cannot see the
        # error from the resource's teardown, and mlflow's exit hook would then end it FINISHED
        # before release_dead_training got to it (a race a full disk lost in CI).
        end_failed(mlflow, error)
        raise
    if robustness is not None:
        mlflow.log_metrics(robustness.metrics())
        mlflow.log_text(robustness.to_markdown(), "adversarial_recall.md")
    run = mlflow.active_run().info
    # Its end_mlflow_on_run_finished hook only ends the MLflow run after the
    # job's last node (dagster issue 21872), which this asset rarely is.
    mlflow.end_run()

    failures = gate_failures(result.holdout_metrics, promotion.rules()) + source_failures(by_source, promotion.rules())
    if robustness is not None:
        failures += robustness_failures(robustness, None, promotion.rules())
    return dg.MaterializeResult(
        asset_key=TRAINED_MODEL,
        metadata={
            "model_version": model_version.version,
            "candidate": result.name,
            "mlflow_run_id": run.run_id,
            # The MLflow UI's address of the run, when MLflow is a server.
            "mlflow_run": dg.MetadataValue.url(
                f"{reg.tracking_uri.rstrip('/')}/#/experiments/{run.experiment_id}/runs/{run.run_id}"
            )
            if reg.tracking_uri.startswith("http")
            else f"experiment {run.experiment_id}, run {run.run_id}",
            "corpus_data_version": version,
            "retrain_reason": reason,
            "cv_spam_f1": dg.MetadataValue.md(
                "| candidate | mean | std |\n|---|---|---|\n"
                + "\n".join(f"| {n} | {m:.4f} | {s:.4f} |" for n, (m, s) in result.cv_scores.items())
            ),
            "confusion_matrix": dg.MetadataValue.md(_confusion_md(result.holdout_confusion)),
            **{f"holdout_{k}": float(result.holdout_metrics[k]) for k in METRIC_NAMES},
            **point.metrics(),
            "operating_point": point.basis,
            **_robustness_metadata(robustness),
            "holdout_by_source": dg.MetadataValue.md(source_metrics.to_markdown([s.challenger for s in by_source])),
            "holdout_by_source_json": dg.MetadataValue.json(source_metrics.as_json([s.challenger for s in by_source])),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="challenger_gates",
                passed=not failures,
                # Not blocking: champion_decision must still run to record "keep, and why".
                severity=dg.AssetCheckSeverity.WARN,
                description="; ".join(failures)
                or "spam F1 and precision (overall and per gated source) and recall under obfuscation reach the gates",
                metadata={k: float(result.holdout_metrics[k]) for k in ("spam_f1", "spam_precision")},
            )
        ],
        data_version=dg.DataVersion(f"v{model_version.version}"),
    )


def _robustness_metadata(robustness: Robustness | None) -> dict:
    if robustness is None:
        return {"adversarial_recall": "not measured: the holdout has no spam"}
    return {
        # Per family, at its worst strength; the table has every strength.
        **{f"adversarial_recall_{family}": recall for family, recall in robustness.by_family.items()},
        "adversarial_worst_family": robustness.worst_family()[0],
        "adversarial_recall": dg.MetadataValue.json(robustness.as_json()),
        "adversarial_recall_table": dg.MetadataValue.md(robustness.to_markdown()),
    }


def _confusion_md(frame) -> str:
    header = "| | " + " | ".join(frame.columns) + " |\n|---|" + "---|" * len(frame.columns)
    return header + "\n" + "\n".join(f"| {i} | " + " | ".join(str(v) for v in row) + " |" for i, row in frame.iterrows())
