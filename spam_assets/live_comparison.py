"""Champion and challenger on the same live messages: pairing, agreement, and a paired test on feedback labels.

With a challenger in shadow or canary (spam_assets/rollout.py) the server
logs two verdicts of a message: the one the caller got (`served` true) and
the other model's opinion (`served` false), under one verdict_id. Pairing
them gives what a holdout cannot: both models on today's traffic, message
by message.

- agreement: the share of paired messages both label alike, and the
  messages they disagree on, for a person to read;
- on pairs whose message users labelled (feedback, by the same vote as the
  feedback batches), an exact McNemar test: of the pairs exactly one model
  got right, is the split away from 50/50? (scipy's exact binomial test on
  the discordant pairs, two-sided);
- spam precision and recall of each model on those pairs, the difference
  (challenger minus champion) and its 95% interval by a paired percentile
  bootstrap over the labelled messages (seeded, so the same log gives the
  same interval): resampling messages keeps each message's two verdicts
  together, which is what makes the comparison paired.

A served verdict without its twin (the shadow queue was full, a shadow
share below 1, a replica that refuses canary) is counted, not paired.
Records written before the rollout fields existed read as served champion
verdicts (prediction_files.DEFAULTS), so an old log pairs nothing.

Pure pandas/numpy/scipy; no Dagster, no MLflow.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from spam_assets.settings import POSITIVE_LABEL

CHAMPION, CHALLENGER = "champion", "challenger"
CI_METHOD = "paired percentile bootstrap over labelled messages"
RESAMPLES = 2000
TEXT_SHOWN = 80  # characters of a message in the disagreement table
PAIR_COLUMNS = (
    "verdict_id", "time", "text", "text_sha256", "answered",
    "champion_p", "challenger_p", "champion_label", "challenger_label",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class PairedVerdicts:
    """The messages both versions scored, one row each (PAIR_COLUMNS), and the served verdicts left without a twin."""

    champion_version: str
    challenger_version: str
    pairs: pd.DataFrame
    unpaired: int

    def since(self, moment) -> PairedVerdicts:
        """The pairs given at or after `moment` (a stage's start); unpaired verdicts are not dated, so 0."""
        return dataclasses.replace(self, pairs=self.pairs[self.pairs["time"] >= pd.Timestamp(moment)], unpaired=0)


def pair_verdicts(records: pd.DataFrame, champion_version: str, challenger_version: str) -> PairedVerdicts:
    """Pair each served verdict of one version with the unserved verdict of the other under the same verdict_id.

    `records`: prediction-log records (prediction_files.read_predictions).
    Only the two versions count: verdicts of any other version (a champion
    before this rollout, an older challenger) are left out. A repeated
    record (a copied segment) counts once.
    """
    champion_version, challenger_version = str(champion_version), str(challenger_version)
    if champion_version == challenger_version:
        raise ValueError(f"champion and challenger are the same version ({champion_version}): nothing to compare")
    missing = {"verdict_id", "time", "model_version", "served", "label", "spam_probability"} - set(records.columns)
    if missing:
        raise ValueError(f"prediction records lack {sorted(missing)}")
    ours = records[records["model_version"].astype(str).isin([champion_version, challenger_version])]
    ours = ours.drop_duplicates(["verdict_id", "model_version", "served"])
    served, shadow = ours[ours["served"].astype(bool)], ours[~ours["served"].astype(bool)]
    twins = served.merge(shadow, on="verdict_id", suffixes=("", "_twin"))
    twins = twins[twins["model_version"].astype(str) != twins["model_version_twin"].astype(str)]
    twins = twins.drop_duplicates("verdict_id")
    by_champion = twins["model_version"].astype(str) == champion_version
    pick = lambda a, b: np.where(by_champion, twins[a], twins[b])  # noqa: E731 - column of the champion's side
    pairs = pd.DataFrame(
        {
            "verdict_id": twins["verdict_id"].astype(str).to_numpy(),
            "time": pd.to_datetime(twins["time"], utc=True).to_numpy(),
            "text": twins["text"].to_numpy() if "text" in twins else None,
            "text_sha256": twins["text_sha256"].to_numpy() if "text_sha256" in twins else None,
            "answered": np.where(by_champion, CHAMPION, CHALLENGER),
            "champion_p": pick("spam_probability", "spam_probability_twin").astype(float),
            "challenger_p": pick("spam_probability_twin", "spam_probability").astype(float),
            "champion_label": pick("label", "label_twin"),
            "challenger_label": pick("label_twin", "label"),
        },
        columns=list(PAIR_COLUMNS),
    )
    pairs["time"] = pd.to_datetime(pairs["time"], utc=True)
    pairs = pairs.sort_values(["time", "verdict_id"]).reset_index(drop=True)
    return PairedVerdicts(champion_version, challenger_version, pairs, int(len(served) - len(twins)))


@dataclasses.dataclass(frozen=True)
class Delta:
    """A metric of each model on the labelled pairs, challenger minus champion, and the difference's interval."""

    champion: float
    challenger: float
    difference: float
    low: float
    high: float

    def __str__(self) -> str:
        if math.isnan(self.difference):
            return f"{_f(self.champion)} → {_f(self.challenger)} (difference undefined)"
        interval = f"95% [{_f(self.low, '+.3f')}, {_f(self.high, '+.3f')}]"
        return f"{self.champion:.3f} → {self.challenger:.3f} ({self.difference:+.3f}, {interval})"


@dataclasses.dataclass(frozen=True)
class LiveComparison:
    champion_version: str
    challenger_version: str
    pairs: int
    unpaired: int
    agreement: float  # NaN without pairs
    answered: dict[str, int]  # pairs answered by each role (canary shows the challenger's share)
    labelled: int
    champion_only_right: int  # McNemar's discordant pairs, on labelled pairs
    challenger_only_right: int
    mcnemar_p: float  # exact, two-sided; 1.0 with no discordant pair, NaN with no labelled pair
    precision: Delta
    recall: Delta
    accuracy: Delta
    disagreements: list[dict]  # one per disagreeing pair, newest first (time, text, both P(spam) and labels, answered)
    first: str | None = None  # ISO time of the first and last pair
    last: str | None = None
    ci_method: str = CI_METHOD

    @property
    def disagreement(self) -> float:
        return 1.0 - self.agreement

    def regression(self, alpha: float) -> bool:
        """The labelled pairs say, at `alpha`, that the challenger is wrong more often than the champion."""
        return regressed(self.champion_only_right, self.challenger_only_right, self.mcnemar_p, alpha)

    def improvement(self, alpha: float) -> bool:
        """The labelled pairs say, at `alpha`, that the challenger is right more often than the champion."""
        return self.mcnemar_p < alpha and self.challenger_only_right > self.champion_only_right

    def headline(self) -> list[str]:
        """One line per figure, for a person (a notification, the UI)."""
        v = f"v{self.champion_version} → v{self.challenger_version}"
        lines = [
            f"{v}: {self.pairs} paired messages, agreement {_f(self.agreement, '.1%')} "
            f"({len(self.disagreements)} disagreements), {self.unpaired} served verdicts without a twin"
        ]
        if self.labelled:
            lines += [
                f"{self.labelled} labelled pairs: only the champion right on {self.champion_only_right}, only the "
                f"challenger on {self.challenger_only_right}, exact McNemar p={_f(self.mcnemar_p, '.3g')}",
                f"spam precision {self.precision}",
                f"spam recall {self.recall}",
            ]
        else:
            lines.append("no labelled pairs yet (feedback on the paired messages)")
        return lines

    def as_metadata(self, disagreements_kept: int = 200) -> dict:
        """Plain JSON types (NaN as None), the disagreements capped at `disagreements_kept`."""
        out = dataclasses.asdict(self)
        out["disagreements"] = out["disagreements"][:disagreements_kept]
        out["disagreement_count"] = len(self.disagreements)
        return _jsonable(out)

    @classmethod
    def from_metadata(cls, data: Mapping) -> LiveComparison:
        """The inverse of as_metadata (disagreements as far as they were kept)."""
        data = dict(data)
        data.pop("disagreement_count", None)
        for name in ("precision", "recall", "accuracy"):
            data[name] = Delta(**{k: _nan(v) for k, v in data[name].items()})
        for name in ("agreement", "mcnemar_p"):
            data[name] = _nan(data[name])
        return cls(**data)

    def disagreement_markdown(self, limit: int = 20) -> str:
        """The disagreements as a Markdown table, newest first, at most `limit` rows."""
        if not self.disagreements:
            return "no disagreements" if self.pairs else "no paired messages"
        rows = [
            f"| time | text | champion v{self.champion_version} | challenger v{self.challenger_version} | answered | feedback |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for d in self.disagreements[:limit]:
            rows.append(
                f"| {d['time'][11:19]} | {_cell(d['text'])} | {d['champion_label']} ({_f(d['champion_p'], '.3f')}) "
                f"| {d['challenger_label']} ({_f(d['challenger_p'], '.3f')}) | {d['answered']} | {d['truth'] or ''} |"
            )
        if len(self.disagreements) > limit:
            rows.append(f"| … | {len(self.disagreements) - limit} more | | | | |")
        return "\n".join(rows)


def compare(
    paired: PairedVerdicts,
    truth: Mapping[str, str],
    *,
    confidence: float = 0.95,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> LiveComparison:
    """The live comparison of a pairing; `truth` maps text_sha256 to the label users gave (feedback_labels.voted_labels)."""
    pairs = paired.pairs
    agree = (pairs["champion_label"] == pairs["challenger_label"]).to_numpy(dtype=bool)
    truths = pairs["text_sha256"].map(lambda sha: truth.get(sha) if isinstance(sha, str) else None)
    labelled = pairs[truths.notna().to_numpy()]
    y = (truths[truths.notna()] == POSITIVE_LABEL).to_numpy(dtype=bool)
    a = (labelled["champion_label"] == POSITIVE_LABEL).to_numpy(dtype=bool)
    b = (labelled["challenger_label"] == POSITIVE_LABEL).to_numpy(dtype=bool)
    champion_only = int(((a == y) & (b != y)).sum())
    challenger_only = int(((b == y) & (a != y)).sum())
    p_value = mcnemar_exact(champion_only, challenger_only) if len(labelled) else float("nan")
    precision, recall, accuracy = _deltas(y, a, b, confidence, resamples, seed)

    disagree = pairs[~agree].assign(truth=truths[~agree]).sort_values("time", ascending=False)
    rows = [
        {
            "verdict_id": r.verdict_id,
            "time": r.time.isoformat(),
            "text": _short(r.text),
            "champion_p": float(r.champion_p),
            "challenger_p": float(r.challenger_p),
            "champion_label": r.champion_label,
            "challenger_label": r.challenger_label,
            "answered": r.answered,
            "truth": r.truth if isinstance(r.truth, str) else None,
        }
        for r in disagree.itertuples(index=False)
    ]
    answered = pairs["answered"].value_counts()
    return LiveComparison(
        champion_version=paired.champion_version,
        challenger_version=paired.challenger_version,
        pairs=len(pairs),
        unpaired=paired.unpaired,
        agreement=float(agree.mean()) if len(pairs) else float("nan"),
        answered={role: int(answered.get(role, 0)) for role in (CHAMPION, CHALLENGER)},
        labelled=len(labelled),
        champion_only_right=champion_only,
        challenger_only_right=challenger_only,
        mcnemar_p=p_value,
        precision=precision,
        recall=recall,
        accuracy=accuracy,
        disagreements=rows,
        first=pairs["time"].min().isoformat() if len(pairs) else None,
        last=pairs["time"].max().isoformat() if len(pairs) else None,
    )


def mcnemar_exact(champion_only_right: int, challenger_only_right: int) -> float:
    """Exact two-sided McNemar p: is the split of the discordant pairs away from 50/50? 1.0 with none.

    The one paired test of the platform: live pairs here, each source's holdout in source_metrics.
    """
    discordant = champion_only_right + challenger_only_right
    return float(binomtest(champion_only_right, discordant, 0.5).pvalue) if discordant else 1.0


def regressed(champion_only_right: int, challenger_only_right: int, p_value: float, alpha: float) -> bool:
    """The pairs say, at `alpha`, that the challenger is wrong more often than the champion."""
    return p_value < alpha and champion_only_right > challenger_only_right


def _deltas(y, a, b, confidence: float, resamples: int, seed: int) -> tuple[Delta, Delta, Delta]:
    """Precision, recall and accuracy of a (champion) and b (challenger) against y, with paired-bootstrap intervals."""
    n = len(y)
    point = [(_metric(k, y, a), _metric(k, y, b)) for k in ("precision", "recall", "accuracy")]
    if n == 0:
        return tuple(Delta(c, h, float("nan"), float("nan"), float("nan")) for c, h in point)  # type: ignore[return-value]
    rng = np.random.default_rng([seed, n])
    idx = rng.integers(0, n, size=(resamples, n))
    yy, aa, bb = y[idx], a[idx], b[idx]
    tail = (1 - confidence) / 2
    out = []
    for kind, (c, h) in zip(("precision", "recall", "accuracy"), point, strict=True):
        diffs = _metric(kind, yy, bb, axis=1) - _metric(kind, yy, aa, axis=1)
        diffs = diffs[np.isfinite(diffs)]
        # An interval needs most replicates defined (precision is undefined where a model calls nothing spam).
        low, high = (
            (float(np.quantile(diffs, tail)), float(np.quantile(diffs, 1 - tail)))
            if diffs.size >= resamples / 2
            else (float("nan"), float("nan"))
        )
        out.append(Delta(c, h, h - c, low, high))
    return tuple(out)  # type: ignore[return-value]


def _metric(kind: str, y, predicted, axis=None):
    """Spam precision, recall or accuracy; NaN where undefined (no predicted spam, no true spam)."""
    tp = (y & predicted).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        if kind == "precision":
            value = tp / predicted.sum(axis=axis)
        elif kind == "recall":
            value = tp / y.sum(axis=axis)
        else:
            value = (y == predicted).sum(axis=axis) / (y.shape[-1] if y.size else np.nan)
    return float(value) if axis is None else np.asarray(value, dtype=float)


def _short(text) -> str:
    if not isinstance(text, str):
        return "(text not logged)"
    return text if len(text) <= TEXT_SHOWN else text[: TEXT_SHOWN - 1] + "…"


def _cell(text) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _f(value, spec: str = ".3f") -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _nan(value):
    return float("nan") if value is None else value


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    return value
