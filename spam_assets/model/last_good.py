"""Which version serves when the alias names one that cannot: the last good model.

A server that starts while `champion` names a version it refuses (a bad
checksum, a disallowed type, wrong answers to the probe messages) would
otherwise serve nothing until someone moves the alias. `first_servable`
tries the alias's version, then the registry's last good candidates
(`Registry.last_good_candidates`: `previous-champion`, then earlier
champions newest first), at most `max_fallbacks` of them, and returns the
first that passes, with a `Resolution` saying what the alias names, what
serves and why. The server (`serving.watcher`) and `spam-platform status`
both decide through it, so status shows what a server would serve.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from mlflow.entities.model_registry import ModelVersion

from spam_assets.model.artifact import RefusedModel
from spam_assets.model.registry import Registry

T = TypeVar("T")


@dataclass(frozen=True)
class Resolution:
    """What the alias names and what serves: the same version unless the alias's was refused ("" = none)."""

    alias: str = ""
    alias_version: str = ""
    served_version: str = ""
    reason: str = ""  # why served_version is not alias_version; "" when it is

    @property
    def fallback(self) -> bool:
        return self.served_version != self.alias_version


@dataclass(frozen=True)
class Outcome(Generic[T]):
    resolution: Resolution
    version: ModelVersion | None  # the registered version that serves; None when none can
    loaded: T | None  # what `load` returned for it
    refusals: tuple[tuple[str, str], ...]  # (version, why) for each version refused, in the order tried


def refused_reason(alias: str, version: str, why: str) -> str:
    return f"{alias} version {version} refused: {why}"


def first_servable(
    registry: Registry,
    alias: str,
    target: ModelVersion,
    load: Callable[[ModelVersion], T],
    max_fallbacks: int,
) -> Outcome[T]:
    """Load `target` (what `alias` names), else the last good candidates in order; `load` raises RefusedModel."""
    refusals: list[tuple[str, str]] = []
    alias_version = str(target.version)

    def attempt(version: ModelVersion) -> T | None:
        try:
            return load(version)
        except RefusedModel as error:
            refusals.append((str(version.version), str(error)))
            return None

    loaded = attempt(target)
    if loaded is not None:
        return Outcome(Resolution(alias, alias_version, alias_version), target, loaded, ())
    first_refusal = refused_reason(alias, alias_version, refusals[0][1])
    candidates = registry.last_good_candidates(alias_version, max_fallbacks)
    for candidate in candidates:
        loaded = attempt(candidate)
        if loaded is not None:
            served = str(candidate.version)
            skipped = [v for v, _ in refusals[1:]]
            also = f" (also refused: version {', '.join(skipped)})" if skipped else ""
            reason = f"{first_refusal}; serving version {served}, the last good model{also}"
            return Outcome(Resolution(alias, alias_version, served, reason), candidate, loaded, tuple(refusals))
    if candidates:
        tried = ", ".join(str(c.version) for c in candidates)
        reason = f"{first_refusal}; no last good model passed either (tried version {tried})"
    else:
        reason = f"{first_refusal}; no earlier champion to fall back on"
    return Outcome(Resolution(alias, alias_version, "", reason), None, None, tuple(refusals))
