"""champion_decision: promote the challenger only when it is measurably better."""


import dagster as dg

from spam_assets.decision import DecisionRules, decide
from spam_assets.defs.assets.training import trained_model
from spam_assets.defs.resources import ModelRegistry, PlatformStore
from spam_assets.defs.retrain_policy import TRAINED_MODEL, rides_with
from spam_assets.modeling import evaluate, spam_probability

# One champion decision at a time, platform-wide: the pool's limit is set in
# the instance config (concurrency: pools: default_limit) by `spam-platform`.
DECISION_POOL = "champion_decision"


class DecisionConfig(dg.Config):
    min_spam_f1: float = 0.90
    min_spam_precision: float = 0.95  # a ham marked spam costs more than a spam let through
    min_improvement: float = 0.005
    compared_metrics: list[str] = ["spam_f1"]

    def rules(self) -> DecisionRules:
        return DecisionRules(self.min_spam_f1, self.min_spam_precision, self.min_improvement, tuple(self.compared_metrics))


@dg.asset(
    deps=[trained_model],
    group_name="deployment",
    kinds={"mlflow"},
    pool=DECISION_POOL,
    automation_condition=rides_with(TRAINED_MODEL),  # decides in the refresh run that trains
    description=(
        "Scores the challenger and the current champion on the same (current) holdout; promotes "
        "the challenger by moving the MLflow alias `champion` only if it passes the absolute gates "
        "and beats the champion by `min_improvement` on the compared metrics. The previous "
        "champion keeps alias `previous-champion` for rollback."
    ),
)
def champion_decision(
    context: dg.AssetExecutionContext, config: DecisionConfig, store: PlatformStore, registry: ModelRegistry
) -> dg.MaterializeResult:
    reg = registry.registry()
    challenger = reg.challenger()
    if challenger is None:
        raise dg.Failure("no challenger registered: materialise trained_model first")
    champion = reg.champion()
    corpus = store.corpus().read()
    holdout = corpus[corpus["split"] == "holdout"]

    def score(version: str) -> dict[str, float]:
        return evaluate(holdout["label"], spam_probability(reg.load(version), holdout["text"].tolist()))

    challenger_metrics = score(challenger.version)
    champion_metrics = score(champion.version) if champion is not None else None
    decision = decide(
        challenger_metrics,
        champion_metrics,
        config.rules(),
        same_version=champion is not None and champion.version == challenger.version,
    )
    reason = "; ".join(decision.reasons)
    previous = reg.promote(challenger.version, reason) if decision.promote else None
    serving = challenger.version if decision.promote else (champion.version if champion else None)

    reg.client.set_model_version_tag(reg.model_name, challenger.version, "decision", decision.action)
    reg.client.set_model_version_tag(reg.model_name, challenger.version, "decision_reason", reason[:5000])
    reg.client.log_text(challenger.run_id, decision.to_markdown() + f"\n\n{decision.action}: {reason}\n", "champion_decision.md")
    context.log.info(f"{decision.action} v{challenger.version}: {reason}")
    return dg.MaterializeResult(
        metadata={
            "decision": decision.action,
            "promoted": decision.promote,
            "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons)),
            "comparison": dg.MetadataValue.md(decision.to_markdown()),
            "challenger_version": challenger.version,
            "champion_version_before": champion.version if champion else "—",
            "champion_version_now": serving or "—",
            "previous_champion": previous or "—",
            "holdout_rows": len(holdout),
            "corpus_data_version": store.corpus().current_version(),
        },
        tags={"spam/decision": decision.action},
    )
