"""When a retrain is wanted, and when it would be pointless or must wait.

Shared by the retrain triggers (automation/retrain.py) and by trained_model
itself when it rides along in the run that computed a drift verdict.
"""

import dataclasses

import dagster as dg

from spam_assets.defs.keys import CHAMPION_DECISION, CLEANED_CORPUS, DRIFT_STATISTICS, TRAINED_MODEL
from spam_assets.defs.run_tags import CORPUS_VERSION_TAG
from spam_assets.defs.upstream import latest

RETRAIN_KEYS = {TRAINED_MODEL, CHAMPION_DECISION}
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
MAX_REASON = 500  # tags are labels, not reports: the full reasons are on drift_statistics


VERDICT_KEY = "verdict"  # drift_statistics' metadata entry holding the verdict as JSON


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The drift verdict as drift_statistics records it (JSON metadata) and everything downstream reads it.

    The rule every path follows (the inbox's refresh run, `spam-platform ingest`,
    the retrain sensor): train on drift or decay, or when there is no champion
    yet (nothing serves, so nothing is kept by not training). `figures` are the
    headline statistics of a calm verdict ("champion score PSI 0.03 <= 0.25"),
    so "not retrained" can say why in numbers.
    """

    drift: bool
    decay: bool
    reasons: list[str]
    no_champion: bool = False
    figures: list[str] = dataclasses.field(default_factory=list)

    def to_json(self, **context) -> dict:
        """The JSON recorded under VERDICT_KEY: the verdict, its trigger, plus whatever context the asset adds."""
        return {
            "drift": self.drift, "decay": self.decay, "no_champion": self.no_champion, "trigger": self.trigger,
            "reasons": list(self.reasons), "figures": list(self.figures), **context,
        }  # fmt: skip

    @classmethod
    def of(cls, record: dg.EventLogRecord) -> "Verdict":
        meta = record.asset_materialization.metadata
        if VERDICT_KEY not in meta:  # a materialisation recorded before verdicts were data
            return cls(False, False, [f"no {VERDICT_KEY} recorded in drift_statistics run {record.run_id}"])
        data = meta[VERDICT_KEY].value
        return cls(
            bool(data["drift"]), bool(data["decay"]), [str(r) for r in data["reasons"]],
            bool(data.get("no_champion")), [str(f) for f in data.get("figures", [])],
        )  # fmt: skip

    @property
    def wants_retrain(self) -> bool:
        return self.drift or self.decay or self.no_champion

    @property
    def trigger(self) -> str:
        on = [k for k, flag in (("drift", self.drift), ("decay", self.decay), ("no champion", self.no_champion)) if flag]
        return " and ".join(on)

    def reason(self) -> str:
        return f"{self.trigger}: {'; '.join(self.reasons) or 'no reasons recorded'}"[:MAX_REASON]

    def calm(self) -> str:
        """Why this verdict asks for no training, with its numbers where it has them."""
        details = "; ".join(self.figures or self.reasons)
        return f"no drift or decay ({details})" if details else "no drift or decay"


def assets_of(instance: dg.DagsterInstance, run: dg.DagsterRun) -> frozenset[dg.AssetKey]:
    """The assets a run materialises, however it was launched.

    `asset_selection` is set for asset runs (automation, the UI's
    "Materialize") but is None for runs of an asset job such as `retrain`:
    those are read from the run's execution plan (its steps' outputs).
    """
    if run.asset_selection:
        return frozenset(run.asset_selection)
    if not run.execution_plan_snapshot_id:
        return frozenset()
    plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    executed = set(run.step_keys_to_execute) if run.step_keys_to_execute else None
    return frozenset(
        output.properties.asset_key
        for step in plan.steps
        if executed is None or step.key in executed
        for output in step.outputs
        if output.properties is not None and output.properties.asset_key is not None
    )


def active_retrain(instance: dg.DagsterInstance) -> dg.DagsterRun | None:
    """A queued or running run that trains or decides, whoever launched it."""
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT), limit=200):
        if assets_of(instance, run) & RETRAIN_KEYS:
            return run
    return None


def died_training(instance: dg.DagsterInstance, limit: int = 50) -> list[tuple[dg.RunRecord, str]]:
    """Failed runs that had started training (trained_model tags the corpus first), newest first, with that corpus."""
    records = instance.get_run_records(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]), limit=limit)
    return [(r, r.dagster_run.tags[CORPUS_VERSION_TAG]) for r in records if CORPUS_VERSION_TAG in r.dagster_run.tags]


def died_while_training(instance: dg.DagsterInstance, run_id: str) -> bool:
    run = instance.get_run_by_id(run_id)
    return run is not None and run.status == dg.DagsterRunStatus.FAILURE and CORPUS_VERSION_TAG in run.tags


def challenger_for(instance: dg.DagsterInstance, corpus_version: str, limit: int = 100) -> str | None:
    """The model version trained_model recorded for `corpus_version`, if any (among its latest `limit`)."""
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=TRAINED_MODEL), limit=limit).records
    for record in records:
        meta = record.asset_materialization.metadata
        if "corpus_data_version" in meta and meta["corpus_data_version"].value == corpus_version:
            return str(meta["model_version"].value) if "model_version" in meta else "?"
    return None


def already_trained(instance: dg.DagsterInstance) -> str | None:
    """Why a retrain now would repeat the last one, or None: the current corpus is new to every challenger."""
    corpus, model = latest(instance, CLEANED_CORPUS), latest(instance, TRAINED_MODEL)
    if corpus and model and corpus.data_version == model.metadata.get("corpus_data_version"):
        version = model.metadata.get("model_version")
        return f"challenger v{version} was already trained on the current corpus {corpus.data_version}"
    return None


def held_back(run: dg.DagsterRun) -> str:
    return f"retrain run {run.run_id[:8]} is {run.status.value.lower()}; checked again once it finishes"


def verdict_of_run(instance: dg.DagsterInstance, run_id: str) -> tuple[Verdict | None, str]:
    """The drift verdict `run_id` recorded, if it asks for a retrain that is not a repeat; else None and why not."""
    record = next(
        iter(instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=DRIFT_STATISTICS), limit=1).records), None
    )
    if record is None or record.run_id != run_id:
        return None, "this run recorded no drift verdict"
    verdict = Verdict.of(record)
    if not verdict.wants_retrain:
        return None, verdict.calm()
    if (repeat := already_trained(instance)) is not None:
        return None, f"{verdict.trigger} seen, but {repeat}"
    return verdict, verdict.reason()


def rides_with(upstream: dg.AssetKey) -> dg.AutomationCondition:
    """Requested in the same evaluation, so in the same run, as `upstream`; never beside a run already computing it.

    A retrain that is in flight elsewhere is left to the retrain_on_drift
    sensor, which holds the verdict until that run is over.
    """
    return (
        dg.AutomationCondition.any_deps_match(dg.AutomationCondition.will_be_requested()).allow(
            dg.AssetSelection.assets(upstream)
        )
        & ~dg.AutomationCondition.in_progress()
    ).with_label(f"requested with {upstream.to_user_string()}")
