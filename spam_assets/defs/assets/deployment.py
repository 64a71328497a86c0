"""champion_decision: promote the challenger only when it is measurably better, or start its staged rollout."""

import time
from datetime import UTC, datetime

import dagster as dg

from spam_assets.decision import Decision, decide
from spam_assets.defs.resources import ModelRegistry, PlatformStore, PromotionPolicy, RolloutPolicy
from spam_assets.defs.keys import TRAINED_MODEL
from spam_assets.defs.retrain_policy import rides_with
from spam_assets.defs.upstream import handed_over
from spam_assets.model.artifact import RefusedModel
from spam_assets.model.operating_point import Tiers
from spam_assets.modeling import evaluate, spam_probability
from spam_assets.rollout import PROMOTED, SHADOW, Rollout
from spam_assets.operating_rows import operating_rows
from spam_assets.robustness import Robustness
from spam_assets.source_metrics import compare_sources

# One champion decision at a time, platform-wide: the pool's limit is set in
# the instance config (concurrency: pools: default_limit) by `spam-platform`.
DECISION_POOL = "champion_decision"
OUTCOME_KEY = "outcome"  # the decision as JSON metadata: what notifications read
SHADOW_ACTION = "shadow"  # the decision's action when a winning challenger starts its staged rollout


@dg.asset(
    deps=[TRAINED_MODEL],
    group_name="deployment",
    kinds={"mlflow"},
    pool=DECISION_POOL,
    automation_condition=rides_with(TRAINED_MODEL),  # decides in the refresh run that trains
    description=(
        "Scores the challenger trained_model last materialised and the current champion on the same "
        "holdout (of the corpus that challenger was trained on); promotes the challenger by moving the "
        "MLflow alias `champion` only if the server's own load-and-verify accepts it, it passes the "
        "absolute gates (overall and on each source with enough holdout messages, where it must not be "
        "significantly worse than the champion either) and beats the champion by "
        "`min_improvement` on the compared metrics (resource `promotion`). With the staged rollout on "
        "(resource `rollout`, default) a winner that has a champion to beat goes to shadow instead "
        "(MLflow tag rollout_stage) and rollout_decision promotes or retires it on live traffic. The "
        "previous champion keeps alias `previous-champion` for rollback."
    ),
)
def champion_decision(
    context: dg.AssetExecutionContext,
    promotion: PromotionPolicy,
    store: PlatformStore,
    registry: ModelRegistry,
    rollout: RolloutPolicy,
) -> dg.MaterializeResult:
    # The challenger trained_model recorded, and the corpus it was trained on: not the
    # `challenger` alias nor CURRENT, which another run may have moved since.
    upstream = handed_over(context.instance, TRAINED_MODEL, "champion_decision")
    challenger_version, corpus_version = str(upstream.require("model_version")), upstream.require("corpus_data_version")
    reg = registry.registry()
    challenger = reg.client.get_model_version(reg.model_name, challenger_version)
    champion = reg.champion()
    corpora = store.corpus()
    if not corpora.path(corpus_version).exists():
        raise dg.Failure(f"challenger v{challenger_version} was trained on corpus {corpus_version}, which is not in {corpora.root}")
    corpus = corpora.read(corpus_version)
    holdout = corpus[corpus["split"] == "holdout"]

    scored: dict[str, tuple] = {}  # who -> (P(spam) on the holdout, tiers): for the rows at the operating points

    def score(model, who: str = "challenger", tiers: Tiers | None = None) -> dict[str, float]:
        scores = spam_probability(model, holdout["text"].tolist())
        scored[who] = (scores, tiers or Tiers())
        return evaluate(holdout["label"], scores)

    robustness = champion_robustness = None
    try:  # a blocking gate: the server's own load-and-verify, so no server can refuse what is promoted
        challenger_model = reg.load_verified(challenger).model
        challenger_tiers = Tiers.from_tags(challenger.tags)  # the server refuses a garbled operating point too
    except RefusedModel as error:
        decision = Decision(False, [f"challenger v{challenger.version} refused by the serving checks: {error}"])
    else:
        champion_metrics, refused_champion = None, None
        # Recall on obfuscated copies of the holdout spam, both models on the same copies.
        robustness = promotion.robustness(challenger_model, holdout, corpus_version)
        if champion is not None and champion.version != challenger.version:
            try:  # the same checks: a champion no server can load must not block its replacement
                champion_model = reg.load_verified(champion).model
                champion_metrics = score(champion_model, "champion", Tiers.from_tags(champion.tags))
                champion_robustness = promotion.robustness(champion_model, holdout, corpus_version)
            except RefusedModel as error:
                refused_champion = f"champion v{champion.version} refused by the serving checks: {error}"
                context.log.warning(f"{refused_champion}; the challenger only has to pass the gates")
        challenger_metrics = score(challenger_model, "challenger", challenger_tiers)
        # Each source of the holdout on its own, both models on the same messages (the per-source gates).
        sources = compare_sources(
            holdout["label"], holdout["source"], scored["challenger"][0], scored["champion"][0] if "champion" in scored else None
        )
        decision = decide(
            challenger_metrics,
            champion_metrics,
            promotion.rules(),
            same_version=champion is not None and champion.version == challenger.version,
            refused_champion=refused_champion,
            robustness=(robustness, champion_robustness) if robustness is not None else None,
            sources=sources,
        )
        decision.rows.extend(operating_rows(holdout["label"], scored["challenger"], scored.get("champion")))
        if robustness is not None:
            _log_robustness(reg, challenger.run_id, robustness, champion_robustness)
    reason = "; ".join(decision.reasons)
    rules, now, stages = rollout.rules(), datetime.now(UTC), Rollout(reg)
    superseded = stages.retire_superseded(challenger.version, now)  # this challenger replaces any still under rollout
    # A winner with a champion servers can load proves itself on live traffic first; with none there is
    # nothing to compare against, so it serves at once.
    staged = decision.promote and rules.enabled and champion is not None and champion.version != challenger.version
    staged = staged and not any(r.startswith(f"champion v{champion.version} refused") for r in decision.reasons)
    previous, action = None, SHADOW_ACTION if staged else decision.action
    if staged:
        plan = (
            f"shadow until {rules.shadow_pairs} paired messages and {rules.shadow_min_seconds / 60:.0f} minutes, "
            f"then canary at {rules.canary_share:.0%}"
        )
        decision.reasons.append(f"staged rollout: {plan}; champion v{champion.version} keeps serving meanwhile")
        reason = "; ".join(decision.reasons)
        stages.start_shadow(challenger.version, [f"holdout decision: {reason}"], now)
    elif decision.promote:
        previous = stages.promote(challenger.version, decision.reasons, now)
    serving = challenger.version if decision.promote and not staged else (champion.version if champion else None)

    reg.client.set_model_version_tag(reg.model_name, challenger.version, "decision", action)
    reg.client.set_model_version_tag(reg.model_name, challenger.version, "decision_reason", reason[:5000])
    reg.client.log_text(challenger.run_id, decision.to_markdown() + f"\n\n{action}: {reason}\n", "champion_decision.md")
    context.log.info(f"{action} v{challenger.version}: {reason}")
    outcome = {
        "action": action,
        "promoted": decision.promote and not staged,
        "rollout_stage": SHADOW if staged else PROMOTED if decision.promote else None,
        "superseded": superseded,
        "reasons": list(decision.reasons),
        "challenger_version": str(challenger.version),
        "champion_version_before": str(champion.version) if champion else None,
        "champion_version_now": str(serving) if serving else None,
        "previous_champion": previous,
        "corpus_data_version": corpus_version,
    }
    return dg.MaterializeResult(
        metadata={
            OUTCOME_KEY: dg.MetadataValue.json(outcome),  # the hand-off; the rest is for people
            **_robustness_metadata(robustness, champion_robustness),
            "decision": action,
            "promoted": outcome["promoted"],
            "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons)),
            "comparison": dg.MetadataValue.md(decision.to_markdown()),
            "challenger_version": challenger.version,
            "champion_version_before": champion.version if champion else "—",
            "champion_version_now": serving or "—",
            "previous_champion": previous or "—",
            "holdout_rows": len(holdout),
            "corpus_data_version": corpus_version,
        },
        tags={"spam/decision": action},
    )


def _log_robustness(reg, run_id: str, challenger: Robustness, champion: Robustness | None) -> None:
    """The champion's recall under obfuscation beside the challenger's (trained_model logged those) in its MLflow run."""
    from mlflow.entities import Metric

    if champion is not None:
        now = int(time.time() * 1000)
        metrics = champion.metrics("champion_adversarial_recall")
        reg.client.log_batch(run_id, metrics=[Metric(key, value, now, 0) for key, value in metrics.items()])
    reg.client.log_text(run_id, challenger.to_markdown(champion), "adversarial_recall_vs_champion.md")


def _robustness_metadata(challenger: Robustness | None, champion: Robustness | None) -> dict:
    if challenger is None:
        return {}
    return {
        "adversarial_recall": dg.MetadataValue.json(
            {"challenger": challenger.as_json(), "champion": champion.as_json() if champion else None}
        ),
        "adversarial_recall_table": dg.MetadataValue.md(challenger.to_markdown(champion)),
    }
