"""The staged rollout: a challenger that won on the holdout proves itself on live traffic before it serves alone.

    holdout decision ──▶ shadow ──▶ canary (p%) ──▶ promoted (alias champion moves)
                            │           │
                            └───────────┴──▶ retired (with the evidence as reasons)

- **shadow**: servers score every message with the challenger too, off the
  hot path; callers get the champion's verdict. Ends after `shadow_pairs`
  paired messages AND `shadow_min_seconds`.
- **canary**: a share `canary_share` of messages (by a hash of the client's
  message id) is answered by the challenger, the champion scoring them in
  shadow. Ends after `canary_pairs` more pairs AND `canary_min_seconds`.
- **promoted** only if the labelled pairs (feedback) show no significant
  regression (exact McNemar at `alpha`, and spam precision not lower by
  more than `max_precision_drop`), there are at least `min_labelled_pairs`
  of them, and the models disagree on at most `max_disagreement` of the
  messages (unless the labels show the challenger significantly better:
  a challenger trained to fix drift disagrees with a stale champion, and
  the labels say who is right).
- **retired** otherwise, at the first moment the evidence is conclusive: a
  significant regression ends the rollout in shadow already.

The state lives in the MLflow registry, where servers follow it (the
contract: alias `challenger`, version tags rollout_stage,
rollout_canary_share, rollout_stage_since; spam_assets/model/tags.py).
Beside those, each transition leaves tags only the platform reads:
`rollout_<stage>_at` and `rollout_<stage>_reason`, and an operator's
override its who, when and why. `next_step` is pure; `Rollout` applies a
step to the registry. No Dagster here (defs/assets/rollout.py drives it).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import json
import math
from collections.abc import Mapping

import pandas as pd
from mlflow.entities.model_registry import ModelVersion

from spam_assets.drift_noise import f1_upper_bound
from spam_assets.live_comparison import LiveComparison
from spam_assets.model.registry import Registry
from spam_assets.model.tags import ROLLOUT_LIVE_STAGES, TAG_ROLLOUT_CANARY_SHARE, TAG_ROLLOUT_SINCE, TAG_ROLLOUT_STAGE
from spam_assets.settings import POSITIVE_LABEL

SHADOW, CANARY, PROMOTED, RETIRED = "shadow", "canary", "promoted", "retired"
WAIT = "wait"
# Tags of the platform's own record of a rollout (servers read only the contract's three).
TAG_AT = "rollout_{stage}_at"  # when the version entered a stage
TAG_REASON = "rollout_{stage}_reason"  # why, with the evidence
TAG_OVERRIDE = "rollout_override"  # JSON: action, by, at, reason of an operator's promote or retire
TAG_ROLLED_BACK_REASON = "rollout_rollback_reason"
MAX_TAG = 5000  # MLflow's limit on a tag value


@dataclasses.dataclass(frozen=True)
class RolloutRules:
    """The knobs (env-backed in defs/resources.py: SPAM_ROLLOUT_*). Why these defaults: README, "Staged rollout"."""

    enabled: bool = True
    shadow_pairs: int = 300
    shadow_min_seconds: float = 1800.0
    canary_share: float = 0.10
    canary_pairs: int = 300
    canary_min_seconds: float = 1800.0
    alpha: float = 0.05
    max_precision_drop: float = 0.02
    max_disagreement: float = 0.15
    min_labelled_pairs: int = 30
    watch_seconds: float = 86400.0  # after promotion, how long live decay rolls back (then retraining's job)

    def __post_init__(self) -> None:
        problems = []
        if not 0.0 < self.canary_share <= 1.0:
            problems.append(f"canary_share {self.canary_share} is not in (0, 1]")
        if not 0.0 < self.alpha < 1.0:
            problems.append(f"alpha {self.alpha} is not in (0, 1)")
        if not 0.0 <= self.max_disagreement <= 1.0 or not 0.0 <= self.max_precision_drop <= 1.0:
            problems.append(
                f"max_disagreement {self.max_disagreement} and max_precision_drop {self.max_precision_drop} "
                "must be in [0, 1]"
            )
        if min(self.shadow_pairs, self.canary_pairs, self.min_labelled_pairs) < 0:
            problems.append("pair counts must not be negative")
        if min(self.shadow_min_seconds, self.canary_min_seconds, self.watch_seconds) < 0:
            problems.append("times must not be negative")
        if problems:
            raise ValueError("rollout rules: " + "; ".join(problems))


@dataclasses.dataclass(frozen=True)
class Step:
    action: str  # WAIT, CANARY, PROMOTED or RETIRED: the stage to move to, or stay
    reasons: list[str]

    @property
    def moves(self) -> bool:
        return self.action != WAIT


def judge(whole: LiveComparison, rules: RolloutRules) -> tuple[list[str], list[str]]:
    """(reasons to retire, reasons to wait for more evidence) from every pair of the rollout so far."""
    failed, pending = [], []
    if whole.regression(rules.alpha):
        failed.append(
            f"significant regression on {whole.labelled} labelled messages: only the champion right on "
            f"{whole.champion_only_right}, only the challenger on {whole.challenger_only_right} "
            f"(exact McNemar p={whole.mcnemar_p:.3g} < {rules.alpha})"
        )
    drop = whole.precision.difference
    if whole.labelled >= rules.min_labelled_pairs and not math.isnan(drop) and drop < -rules.max_precision_drop:
        failed.append(f"spam precision {whole.precision} is lower by more than {rules.max_precision_drop}")
    if whole.labelled < rules.min_labelled_pairs:
        pending.append(f"{whole.labelled} of {rules.min_labelled_pairs} labelled pairs (feedback) needed to judge")
    if whole.pairs and whole.disagreement > rules.max_disagreement and not whole.improvement(rules.alpha):
        text = f"the models disagree on {whole.disagreement:.1%} of {whole.pairs} messages > {rules.max_disagreement:.0%}"
        if whole.labelled >= rules.min_labelled_pairs:
            failed.append(f"{text}, and the labelled pairs do not show the challenger better (McNemar p={_p(whole.mcnemar_p)})")
        else:
            pending.append(f"{text}: waiting for labels to say which is right")
    return failed, pending


def next_step(
    stage: str, since: dt.datetime, now: dt.datetime, whole: LiveComparison, period: LiveComparison, rules: RolloutRules
) -> Step:
    """Where a challenger in `stage` (since `since`) goes now. `whole`: every pair since shadow began;
    `period`: the pairs of the current stage."""
    if stage not in ROLLOUT_LIVE_STAGES:
        return Step(WAIT, [f"stage {stage!r} is not live: nothing to advance"])
    failed, pending = judge(whole, rules)
    evidence = whole.headline()
    if failed:
        return Step(RETIRED, [*failed, *evidence])
    needed_pairs, needed_s = (
        (rules.shadow_pairs, rules.shadow_min_seconds) if stage == SHADOW else (rules.canary_pairs, rules.canary_min_seconds)
    )
    elapsed = (now - since).total_seconds()
    waiting = []
    if period.pairs < needed_pairs:
        waiting.append(f"{stage}: {period.pairs} of {needed_pairs} paired messages")
    if elapsed < needed_s:
        waiting.append(f"{stage}: {elapsed / 60:.0f} of {needed_s / 60:.0f} minutes")
    if waiting:
        return Step(WAIT, [*waiting, *pending])
    if stage == SHADOW:
        if any("waiting for labels" in p for p in pending):  # too different to expose callers to, until labels say
            return Step(WAIT, pending)
        done = f"shadow done: {period.pairs} paired messages in {elapsed / 60:.0f} minutes, no regression"
        return Step(CANARY, [done, *evidence])
    if pending:
        return Step(WAIT, pending)
    done = (
        f"canary done: {period.pairs} paired messages in {elapsed / 60:.0f} minutes; no significant regression on "
        f"{whole.labelled} labelled pairs, disagreement {whole.disagreement:.1%} within bounds"
    )
    return Step(PROMOTED, [done, *evidence])


@dataclasses.dataclass(frozen=True)
class LiveDecay:
    """The champion's realised spam F1 on its own served, feedback-labelled verdicts since a moment."""

    labelled: int
    f1: float
    upper: float  # one-sided (1 - alpha) percentile-bootstrap upper bound (drift_noise.f1_upper_bound)
    decayed: bool
    reason: str


def live_decay(
    records: pd.DataFrame,
    truth: Mapping[str, str],
    version: str,
    since: dt.datetime,
    f1_floor: float,
    alpha: float,
    min_labelled: int,
) -> LiveDecay:
    """Has `version` decayed on live traffic since `since`? Judged as drift_statistics judges a batch:
    decay when the upper end of the realised spam F1's one-sided bootstrap interval is below the floor,
    on at least `min_labelled` served verdicts with feedback labels."""
    mine = records[
        records["served"].astype(bool)
        & (records["model_version"].astype(str) == str(version))
        & (records["time"] >= pd.Timestamp(since))
    ].drop_duplicates("verdict_id")
    labels = mine["text_sha256"].map(lambda sha: truth.get(sha) if isinstance(sha, str) else None)
    known = mine[labels.notna().to_numpy()]
    y = (labels[labels.notna()] == POSITIVE_LABEL).to_numpy(dtype=bool)
    predicted = (known["label"] == POSITIVE_LABEL).to_numpy(dtype=bool)
    n = len(known)
    tp, wrong = int((y & predicted).sum()), int((y ^ predicted).sum())
    f1 = 2 * tp / (2 * tp + wrong) if (2 * tp + wrong) else float("nan")
    if n < min_labelled:
        return LiveDecay(n, f1, float("nan"), False, f"{n} of {min_labelled} labelled served verdicts: not judged")
    upper = f1_upper_bound(y, predicted, alpha)
    decayed = bool(upper < f1_floor)  # False for NaN (no spam among the labelled)
    bound = f"its p{100 * (1 - alpha):g} bootstrap upper bound {upper:.3f} at n={n}"
    if decayed:
        why = f"live spam F1 {f1:.3f} of v{version} since promotion < floor {f1_floor}; {bound}"
        return LiveDecay(n, f1, upper, True, why)
    return LiveDecay(n, f1, upper, False, f"live spam F1 {f1:.3f} of v{version}: not credibly below {f1_floor} ({bound})")


@dataclasses.dataclass(frozen=True)
class Live:
    """The version under rollout and its stage, as the registry says."""

    version: ModelVersion
    stage: str
    since: dt.datetime

    @property
    def name(self) -> str:
        return str(self.version.version)


class Rollout:
    """Applies stages to the registry. Writes the tags servers follow last, after everything they imply."""

    def __init__(self, registry: Registry):
        self.registry, self.client, self.model = registry, registry.client, registry.model_name

    def live(self) -> Live | None:
        """The challenger in shadow or canary, if any (the alias, a stage in ROLLOUT_LIVE_STAGES, not the champion)."""
        challenger, champion = self.registry.challenger(), self.registry.champion()
        if challenger is None or (champion is not None and champion.version == challenger.version):
            return None
        stage = challenger.tags.get(TAG_ROLLOUT_STAGE)
        if stage not in ROLLOUT_LIVE_STAGES:
            return None
        return Live(challenger, stage, parse_time(challenger.tags.get(TAG_ROLLOUT_SINCE)))

    def began(self, version: ModelVersion) -> dt.datetime:
        """When the version's rollout began (it entered shadow)."""
        return parse_time(version.tags.get(TAG_AT.format(stage=SHADOW)) or version.tags.get(TAG_ROLLOUT_SINCE))

    def start_shadow(self, version: str, reasons: list[str], now: dt.datetime) -> None:
        self._enter(version, SHADOW, reasons, now, share=0.0)

    def to_canary(self, version: str, share: float, reasons: list[str], now: dt.datetime) -> None:
        self._enter(version, CANARY, reasons, now, share=share)

    def promote(self, version: str, reasons: list[str], now: dt.datetime) -> str | None:
        """Move `champion` (the old one keeps previous-champion), then mark the stage; the previous champion."""
        previous = self.registry.promote(version, "; ".join(reasons))
        self._enter(version, PROMOTED, reasons, now, share=0.0)
        return previous

    def retire(self, version: str, reasons: list[str], now: dt.datetime) -> None:
        self._enter(version, RETIRED, reasons, now, share=0.0)

    def retire_superseded(self, current: str, now: dt.datetime) -> list[str]:
        """Retire every other version still in shadow or canary: a newer challenger supersedes it. Their versions."""
        retired = []
        for version in self.client.search_model_versions(f"name='{self.model}'"):
            if str(version.version) != str(current) and version.tags.get(TAG_ROLLOUT_STAGE) in ROLLOUT_LIVE_STAGES:
                self.retire(version.version, [f"superseded by v{current}, a newer challenger"], now)
                retired.append(str(version.version))
        return retired

    def override(self, action: str, reason: str, now: dt.datetime, by: str | None = None) -> tuple[str, str, str | None]:
        """An operator's promote or retire of the version under rollout, recorded.

        Returns its version, the stage it was in, and the previous champion (after a promote)."""
        if action not in (PROMOTED, RETIRED):
            raise ValueError(f"override action must be {PROMOTED!r} or {RETIRED!r}, not {action!r}")
        live = self.live()
        if live is None:
            stages = " or ".join(ROLLOUT_LIVE_STAGES)
            raise LookupError(f"{self.model} has no challenger in {stages}: nothing to {action[:-1]}")
        by = by or _who()
        at = now.isoformat(timespec="seconds")
        record = {"action": action, "by": by, "at": at, "reason": reason, "stage_was": live.stage}
        self.client.set_model_version_tag(self.model, live.name, TAG_OVERRIDE, json.dumps(record)[:MAX_TAG])
        reasons = [f"manual override by {by} in {live.stage}: {reason or 'no reason given'}"]
        previous = None
        if action == PROMOTED:
            previous = self.promote(live.name, reasons, now)
        else:
            self.retire(live.name, reasons, now)
        return live.name, live.stage, previous

    def rollback(self, champion: str, reasons: list[str], now: dt.datetime) -> str:
        """previous-champion serves again (Registry.rollback) and `champion` is retired; the version now serving."""
        serving = self.registry.rollback()
        self.client.set_model_version_tag(self.model, champion, TAG_ROLLED_BACK_REASON, "; ".join(reasons)[:MAX_TAG])
        self._enter(champion, RETIRED, [f"rolled back to v{serving}", *reasons], now, share=0.0)
        return serving

    def _enter(self, version: str | int, stage: str, reasons: list[str], now: dt.datetime, share: float) -> None:
        version, at = str(version), now.astimezone(dt.UTC).isoformat(timespec="seconds")
        tag = lambda key, value: self.client.set_model_version_tag(self.model, version, key, value)  # noqa: E731
        tag(TAG_AT.format(stage=stage), at)
        tag(TAG_REASON.format(stage=stage), "; ".join(reasons)[:MAX_TAG])
        tag(TAG_ROLLOUT_SINCE, at)
        tag(TAG_ROLLOUT_CANARY_SHARE, repr(float(share)))
        tag(TAG_ROLLOUT_STAGE, stage)  # last: what servers act on


def parse_time(text: str | None) -> dt.datetime:
    """A tag's ISO time (UTC); the epoch when absent or unreadable, so a missing time never holds a stage back."""
    try:
        moment = dt.datetime.fromisoformat(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return dt.datetime.fromtimestamp(0, dt.UTC)
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _who() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in a bare container
        return "unknown"


def _p(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.3g}"
