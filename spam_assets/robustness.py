"""Recall on obfuscated spam: how much of the holdout's spam a model still catches when it is disguised.

Every holdout spam is disguised by each of the platform's perturbation
families at each of its strengths (`spam_assets.perturb`), and the model's
spam recall is measured on each set of copies next to its recall on the
originals. A family's recall is its recall at its worst strength. Plain
numpy, no Dagster or MLflow: trained_model reports it for the challenger,
champion_decision for both models, and the promotion gate
(`spam_assets.decision`) judges it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from spam_assets.perturb import STRENGTHS, perturb_all


@dataclass(frozen=True)
class Robustness:
    """Spam recall on the originals (`clean`) and on each family's copies at each strength."""

    n_spam: int
    seed: int
    clean: float
    recall: dict[str, dict[float, float]]  # family -> strength -> recall

    @property
    def by_family(self) -> dict[str, float]:
        """Each family's recall at its worst strength."""
        return {family: min(by_strength.values()) for family, by_strength in self.recall.items()}

    def worst_family(self) -> tuple[str, float]:
        family = min(self.by_family, key=lambda f: (self.by_family[f], f))
        return family, self.by_family[family]

    def metrics(self, prefix: str = "adversarial_recall") -> dict[str, float]:
        """Flat metric names for MLflow: `<prefix>_clean`, `<prefix>_<family>`, `<prefix>_<family>_<strength>`."""
        out = {f"{prefix}_clean": self.clean}
        for family, by_strength in self.recall.items():
            out[f"{prefix}_{family}"] = self.by_family[family]
            out.update({f"{prefix}_{family}_{strength:g}": value for strength, value in by_strength.items()})
        return out

    def as_json(self) -> dict:
        return {
            "n_spam": self.n_spam,
            "seed": self.seed,
            "clean": self.clean,
            "by_family": self.by_family,
            "recall": {family: {f"{s:g}": r for s, r in by_strength.items()} for family, by_strength in self.recall.items()},
        }

    def to_markdown(self, other: "Robustness | None" = None, names: tuple[str, str] = ("challenger", "champion")) -> str:
        """One row per family and strength; `other` (the champion) in a second column when given."""
        header = f"| family | strength | {names[0]} |" + (f" {names[1]} |" if other else "")
        lines = [header, "|---|---|---|" + ("---|" if other else "")]
        rows = [("clean", "", self.clean, other.clean if other else None)]
        for family, by_strength in self.recall.items():
            for strength, value in by_strength.items():
                theirs = other.recall.get(family, {}).get(strength) if other else None
                rows.append((family, f"{strength:g}", value, theirs))
        for family, strength, mine, theirs in rows:
            line = f"| {family} | {strength} | {mine:.3f} |"
            lines.append(line + (f" {'—' if theirs is None else f'{theirs:.3f}'} |" if other else ""))
        return "\n".join(lines)


def evaluation_seed(seed: int, corpus_version: str) -> int:
    """The perturbation seed for one corpus: champion and challenger see the same copies, each corpus other ones."""
    return int.from_bytes(hashlib.sha256(f"{seed}\0{corpus_version}".encode()).digest()[:4], "big")


def adversarial_recall(
    spam_scores: Callable[[list[str]], np.ndarray],
    spam_texts: Sequence[str],
    seed: int,
    threshold: float = 0.5,
    strengths: dict[str, tuple[float, ...]] = STRENGTHS,
) -> Robustness:
    """Recall of `spam_scores` (texts -> P(spam)) on `spam_texts` and on their obfuscated copies.

    All copies are scored in one call (a batch is far cheaper than many calls).
    """
    texts = list(spam_texts)
    if not texts:
        raise ValueError("adversarial_recall needs at least one spam text (the holdout has none)")
    cells = [(family, strength) for family, levels in strengths.items() for strength in levels]
    batch = texts + [copy for family, strength in cells for copy in perturb_all(texts, family, strength, seed)]
    caught = np.asarray(spam_scores(batch), dtype=float) >= threshold
    if caught.shape != (len(batch),):
        raise ValueError(f"spam_scores returned shape {caught.shape} for {len(batch)} texts")
    parts = caught.reshape(len(cells) + 1, len(texts)).mean(axis=1)
    recall: dict[str, dict[float, float]] = {}
    for (family, strength), value in zip(cells, parts[1:], strict=True):
        recall.setdefault(family, {})[strength] = float(value)
    return Robustness(n_spam=len(texts), seed=seed, clean=float(parts[0]), recall=recall)
