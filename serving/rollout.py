"""Staged rollout in the server: which model answers a message, and which one scores it in shadow.

The graph moves a challenger through stages by tagging the version the
`challenger` alias names (spam_assets/model/tags.py); the server only reads
them. `ChampionWatcher` loads a challenger in a live stage (`shadow`,
`canary`) through the same gate as a champion and publishes it beside the
champion as one immutable `Models`: a request reads `watcher.models` once,
so it never sees a champion of one moment with a challenger of another.

Canary routing is a pure function of the message: its bucket, the first 8
bytes of sha256(client id) as a fraction of 2**64 (the client id being the
message's `id`, or for a message without one the hex sha256 of its text),
below the canary share means the challenger answers. No salt and no
process state, so every replica and every restart routes a message the
same way. Shadow sampling uses the next 8 bytes of the same digest, so the
shadowed share is independent of the canary share.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spam_assets.model.tags import (
    ROLLOUT_LIVE_STAGES,
    TAG_ROLLOUT_CANARY_SHARE,
    TAG_ROLLOUT_SINCE,
    TAG_ROLLOUT_STAGE,
)

if TYPE_CHECKING:
    from serving.watcher import LoadedChampion

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
CANARY = "canary"
_SCALE = float(2**64)


@dataclass(frozen=True)
class Stage:
    """A challenger's rollout stage as its version's tags say: only live stages make one."""

    version: str
    stage: str  # "shadow" | "canary"
    canary_share: float  # the tag's share; 0 in shadow
    since: str = ""
    problem: str = ""  # why the tags could not be read as they stand (then shadow only)


def live_stage(version: Any, champion_version: str | None) -> Stage | None:
    """The live stage of a registered version (an MLflow ModelVersion) the challenger alias names, or None.

    None (no challenger to score) for: no alias, the champion's own version,
    a stage that is not live (promoted, retired) or no stage tag at all. A
    canary share that is not a number in [0, 1] routes nothing (shadow only),
    and says why in `problem`.
    """
    if version is None or str(version.version) == str(champion_version):
        return None
    tags = version.tags or {}
    stage = tags.get(TAG_ROLLOUT_STAGE, "")
    if stage not in ROLLOUT_LIVE_STAGES:
        return None
    share, problem = 0.0, ""
    if stage == CANARY:
        raw = tags.get(TAG_ROLLOUT_CANARY_SHARE, "")
        try:
            share = float(raw)
        except ValueError:
            share = math.nan
        if not 0.0 <= share <= 1.0:  # NaN too
            problem = f"tag {TAG_ROLLOUT_CANARY_SHARE}={raw!r} is not a share in [0, 1]; no message is routed to it"
            share = 0.0
    return Stage(str(version.version), stage, share, tags.get(TAG_ROLLOUT_SINCE, ""), problem)


@dataclass(frozen=True)
class Challenger:
    """The challenger this server follows: its stage and, unless the serving checks refused it, its model."""

    stage: Stage
    model: LoadedChampion | None = None
    refusal: str = ""  # why `model` is None

    @property
    def version(self) -> str:
        return self.stage.version


@dataclass(frozen=True)
class Models:
    """What serves, published as one reference: the champion and the challenger beside it (if any)."""

    champion: LoadedChampion | None = None
    challenger: Challenger | None = None

    @property
    def scoring_challenger(self) -> LoadedChampion | None:
        """The challenger's model when one is loaded and live."""
        return self.challenger.model if self.challenger is not None else None

    def other(self, role: str) -> tuple[LoadedChampion | None, str]:
        """The model that did not answer a message answered by `role`, and its role."""
        if role == CHAMPION:
            return self.scoring_challenger, CHALLENGER
        return self.champion, CHAMPION

    def model(self, role: str) -> LoadedChampion | None:
        return self.champion if role == CHAMPION else self.scoring_challenger


def digest(client_id: str, text: str) -> bytes:
    """sha256 of the message's routing key: its client id, or the hex sha256 of its text when it has none."""
    key = client_id or hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def canary_bucket(client_id: str, text: str) -> float:
    """Where a message falls in [0, 1) for canary routing: below the canary share, the challenger answers."""
    return int.from_bytes(digest(client_id, text)[:8], "big") / _SCALE


def shadow_bucket(client_id: str, text: str) -> float:
    """Where a message falls in [0, 1) for shadow sampling: below the shadow share, the other model scores it too."""
    return int.from_bytes(digest(client_id, text)[8:16], "big") / _SCALE


@dataclass(frozen=True)
class Policy:
    """This server's rollout switches: `--shadow-share` and `--canary`."""

    shadow_share: float = 1.0
    canary: bool = True

    def canary_share(self, models: Models) -> float:
        """The share of messages the challenger answers on this server now (0: the champion answers all)."""
        challenger = models.challenger
        if not self.canary or challenger is None or challenger.model is None or challenger.stage.stage != CANARY:
            return 0.0
        return challenger.stage.canary_share

    def role_for(self, models: Models, client_id: str, text: str) -> str:
        """Who answers one message (a unary call, an OIP request by its id)."""
        share = self.canary_share(models)
        if share > 0.0 and canary_bucket(client_id, text) < share:
            return CHALLENGER
        return CHAMPION

    def roles_for(self, models: Models, client_ids: Sequence[str], texts: Sequence[str]) -> list[str] | None:
        """Who answers each of several messages; None when the champion answers all (no hashing done)."""
        share = self.canary_share(models)
        if share <= 0.0:
            return None
        return [
            CHALLENGER if canary_bucket(client_id, text) < share else CHAMPION
            for client_id, text in zip(client_ids, texts, strict=True)
        ]

    def shadowed(self, client_ids: Sequence[str], texts: Sequence[str]) -> list[int]:
        """Indexes of the messages to score in shadow (all of them at share 1, none at 0)."""
        share = self.shadow_share
        if share >= 1.0:
            return list(range(len(texts)))
        if share <= 0.0:
            return []
        return [i for i, (c, t) in enumerate(zip(client_ids, texts, strict=True)) if shadow_bucket(c, t) < share]
