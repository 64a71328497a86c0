"""Resources and the executor: where the platform's files live, MLflow, the policies, the webhook.

`resources` below is the code location's one `@dg.definitions` for them.
Paths resolve when a run starts (not at import), so one code location
serves whichever home folder its process was started with; settings that
come from the environment are read when the definitions load, never at
import.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import urllib.parse
import urllib.request

import dagster as dg
from dagster_mlflow.resources import CONFIG_SCHEMA as MLFLOW_CONFIG_SCHEMA
from dagster_mlflow.resources import MlFlow

from spam_assets.batches import BatchStore
from spam_assets.corpus import CorpusStore
from spam_assets.decision import DecisionRules
from spam_assets.defs.automation.settings import (
    ADVERSARIAL_GATE_ENV,
    F1_FLOOR_ENV,
    SOURCE_GATES_ENV,
    SUSPICIOUS_HAM_FPR_ENV,
    TARGET_HAM_FPR_ENV,
    WEBHOOK_ENV,
    WEBHOOK_TIMEOUT_ENV,
    env_number,
    env_switch,
    rollout_settings,
)
from spam_assets.drift import DriftThresholds
from spam_assets.model import operating_point
from spam_assets.model.registry import Registry, ensure_experiment
from spam_assets.modeling import spam_probability
from spam_assets.robustness import Robustness, adversarial_recall, evaluation_seed
from spam_assets.rollout import RolloutRules
from spam_assets.settings import EXPERIMENT_NAME, POSITIVE_LABEL, Paths, paths, tracking_uri

log = logging.getLogger(__name__)
MAX_TEXT = 3500  # Slack truncates long messages; the UI has the rest


class PlatformStore(dg.ConfigurableResource):
    """The platform's home folder: batches, corpus snapshots, drift reports."""

    home: str | None = None  # None: $SPAM_HOME, else ~/.spam-platform

    @property
    def paths(self) -> Paths:
        return paths(self.home)

    def batches(self) -> BatchStore:
        return BatchStore(self.paths.batches)

    def corpus(self) -> CorpusStore:
        return CorpusStore(self.paths.corpus)


class ModelRegistry(dg.ConfigurableResource):
    """The MLflow model registry (aliases champion / challenger / previous-champion)."""

    home: str | None = None
    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else the embedded store under home

    def uri(self) -> str:
        return self.tracking_uri or tracking_uri(self.home)

    def registry(self) -> Registry:
        return Registry(self.uri())


class PromotionPolicy(dg.ConfigurableResource):
    """When a challenger may serve: the one policy both `challenger_gates` and `champion_decision` apply.

    A resource, not per-asset config, so the check and the decision can never
    read different thresholds (editable in the launchpad under resources).
    """

    min_spam_f1: float = DecisionRules.min_spam_f1
    min_spam_precision: float = DecisionRules.min_spam_precision  # a lost ham costs more than a missed spam
    min_improvement: float = DecisionRules.min_improvement
    compared_metrics: list[str] = list(DecisionRules.compared_metrics)
    # Recall on obfuscated copies of the holdout spam (spam_assets.robustness): the worst
    # family within max_adversarial_drop of clean recall, and losing no more to it than the champion.
    adversarial_gate: bool = DecisionRules.adversarial_gate
    max_adversarial_drop: float = DecisionRules.max_adversarial_drop
    adversarial_tolerance: float = DecisionRules.adversarial_tolerance
    adversarial_seed: int = 0  # with the corpus version, the seed of the obfuscated copies
    # Per source of the holdout (decision.py): the gates above apply to each source with this many
    # holdout messages and spams, and the challenger may not be significantly worse on any of them.
    source_gates: bool = DecisionRules.source_gates
    min_source_holdout: int = DecisionRules.min_source_holdout
    min_source_holdout_spam: int = DecisionRules.min_source_holdout_spam
    source_regression_alpha: float = DecisionRules.source_regression_alpha

    def rules(self) -> DecisionRules:
        # Every rule by name, so a new DecisionRules field cannot be forgotten here (tests/test_promotion_policy.py).
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(DecisionRules)}
        return DecisionRules(**{**fields, "compared_metrics": tuple(self.compared_metrics)})

    def robustness(self, model, holdout, corpus_version: str) -> Robustness | None:
        """The model's spam recall on the holdout spam and on its obfuscated copies; None without holdout spam.

        The same copies for every model judged on a corpus version.
        """
        spam = holdout.loc[holdout["label"] == POSITIVE_LABEL, "text"].tolist()
        if not spam:
            return None
        seed = evaluation_seed(self.adversarial_seed, corpus_version)
        return adversarial_recall(lambda texts: spam_probability(model, texts), spam, seed)


class OperatingPointPolicy(dg.ConfigurableResource):
    """The ham false-positive rates trained_model chooses each version's thresholds for, on the holdout.

    `target_ham_fpr` sets the spam threshold (the label), `suspicious_ham_fpr`
    where the suspicious tier starts (spam_assets.model.operating_point).
    Defaults from $SPAM_TARGET_HAM_FPR and $SPAM_SUSPICIOUS_HAM_FPR.
    """

    target_ham_fpr: float = operating_point.DEFAULT_TARGET_HAM_FPR
    suspicious_ham_fpr: float = operating_point.DEFAULT_SUSPICIOUS_HAM_FPR

    def choose(self, labels, spam_scores) -> operating_point.OperatingPoint:
        return operating_point.choose(labels, spam_scores, self.target_ham_fpr, self.suspicious_ham_fpr)


class DecayPolicy(dg.ConfigurableResource):
    """The champion's realised spam F1 below which drift_statistics says `decay`.

    A resource, not drift_statistics' run config: runs the automation launches
    use default config, and the floor must follow $SPAM_F1_FLOOR there too.
    """

    f1_floor: float = DriftThresholds.f1_floor


class RolloutPolicy(dg.ConfigurableResource):
    """The staged rollout (spam_assets/rollout.py): champion_decision, the rollout sensor and assets apply it.

    A resource like `promotion`, so the decision that starts a rollout and the
    runs that advance it read the same rules; its defaults come from
    $SPAM_ROLLOUT and $SPAM_ROLLOUT_<KNOB> when the definitions load.
    """

    enabled: bool = RolloutRules.enabled  # off: a winning challenger is promoted at once
    shadow_pairs: int = RolloutRules.shadow_pairs
    shadow_min_seconds: float = RolloutRules.shadow_min_seconds
    canary_share: float = RolloutRules.canary_share
    canary_pairs: int = RolloutRules.canary_pairs
    canary_min_seconds: float = RolloutRules.canary_min_seconds
    alpha: float = RolloutRules.alpha
    max_precision_drop: float = RolloutRules.max_precision_drop
    max_disagreement: float = RolloutRules.max_disagreement
    min_labelled_pairs: int = RolloutRules.min_labelled_pairs
    watch_seconds: float = RolloutRules.watch_seconds

    def rules(self) -> RolloutRules:
        return RolloutRules(**{f.name: getattr(self, f.name) for f in dataclasses.fields(RolloutRules)})


class Webhook(dg.ConfigurableResource):
    """Where notifications go. Unset fields fall back to the environment when a message is sent."""

    url: str | None = None  # None: $SPAM_WEBHOOK_URL; neither: notifications are off
    timeout_seconds: float | None = None  # None: $SPAM_WEBHOOK_TIMEOUT_SECONDS, else 5

    def target(self) -> str | None:
        return self.url or (dg.EnvVar(WEBHOOK_ENV).get_value("") or "").strip() or None

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


def artifact_root_for(uri: str, home: str | None):
    """Local stores keep artifacts under home; a tracking server manages its own."""
    return paths(home).mlflow_artifacts if uri.startswith(("sqlite:", "file:")) or "://" not in uri else None


class LazyMlflowRun:
    """dagster-mlflow's MLflow run for this Dagster run, started on first `start()`, not with the Dagster run.

    trained_model rides along in every refresh run and trains only when the
    drift verdict asks (retrain_policy.py); a run started with the resource
    would leave an empty MLflow run behind each refresh.
    """

    def __init__(self, start):
        self._start, self.mlflow = start, None

    def start(self):
        """The MlFlow object (mlflow's module and client API), its run active, tagged with the Dagster run id."""
        if self.mlflow is None:
            self.mlflow = self._start()
        return self.mlflow


def platform_mlflow(uri: str, home: str | None = None) -> dg.ResourceDefinition:
    """dagster-mlflow's `mlflow_tracking`, started lazily, after creating the experiment with its artifacts under home.

    Without the experiment created here, mlflow.set_experiment would create it
    with artifacts in ./mlruns of whatever directory the run process happened
    to start in.
    """

    @dg.resource(config_schema=MLFLOW_CONFIG_SCHEMA)
    def mlflow_with_experiment(context):
        def start():
            ensure_experiment(uri, artifact_root_for(uri, home), context.resource_config["experiment_name"])
            return MlFlow(context)

        lazy = LazyMlflowRun(start)
        yield lazy
        if lazy.mlflow is not None:  # as mlflow_tracking does: a run left active by an error ends FAILED
            lazy.mlflow.cleanup_on_error()

    return mlflow_with_experiment.configured({"experiment_name": EXPERIMENT_NAME, "mlflow_tracking_uri": uri})


def _checked(rollout: RolloutPolicy) -> RolloutPolicy:
    """A bad rollout knob fails when the definitions load, naming where it came from, not in a run hours later."""
    try:
        rollout.rules()
    except ValueError as error:
        raise ValueError(f"{error} (from $SPAM_ROLLOUT_<KNOB> in the environment)") from None
    return rollout


def build_resources(home: str | None = None, mlflow_uri: str | None = None) -> dict:
    """Every resource the graph and the automation use ($SPAM_F1_FLOOR, $SPAM_ADVERSARIAL_GATE,
    $SPAM_SOURCE_GATES and the operating point's targets are read here)."""
    uri = mlflow_uri or tracking_uri(home)
    return {
        "store": PlatformStore(home=home),
        "registry": ModelRegistry(home=home, tracking_uri=uri),
        "mlflow_run": platform_mlflow(uri, home),
        "promotion": PromotionPolicy(
            adversarial_gate=env_switch(ADVERSARIAL_GATE_ENV, DecisionRules.adversarial_gate),
            source_gates=env_switch(SOURCE_GATES_ENV, DecisionRules.source_gates),
        ),
        "rollout": _checked(RolloutPolicy(**rollout_settings())),
        "operating_point": OperatingPointPolicy(
            target_ham_fpr=env_number(TARGET_HAM_FPR_ENV, operating_point.DEFAULT_TARGET_HAM_FPR),
            suspicious_ham_fpr=env_number(SUSPICIOUS_HAM_FPR_ENV, operating_point.DEFAULT_SUSPICIOUS_HAM_FPR),
        ),
        "decay": DecayPolicy(f1_floor=env_number(F1_FLOOR_ENV, DriftThresholds.f1_floor)),
        "webhook": Webhook(),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources=build_resources(),
        # One process per run, not one per step. Measured with the daemon: each step
        # process (sklearn + MLflow imports) took 10-25 s to start on 2 cores, and the
        # trained_model step process lingered minutes after success (idle joblib
        # workers), holding champion_decision back until it exited.
        executor=dg.in_process_executor,
    )
