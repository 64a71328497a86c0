"""Which model serves: follow the registry alias and hot-swap the version it points at.

No gRPC here. `ChampionWatcher` polls the MLflow alias (`champion` of
`spam-classifier` by default) from a background thread. When the alias points
at a version other than the one serving, that version is downloaded and
passed through the model contract's gate (`Registry.load_verified`:
artifact integrity, loading with the code's allow-list, probe verification,
the choice of scorer) *in the watcher thread*, then published by replacing a
single reference to an immutable `LoadedChampion`. Request handlers read
`watcher.current` once per request (or per batch) and use that object to the
end, so requests in flight finish on the model they started with, and no
request ever sees half of a swap.

A version that fails any check is refused: logged, remembered with a backoff
(so a broken version is not reloaded every poll), and the current champion
keeps serving. A server with no champion yet (just started) falls back to
the last good model instead (`spam_assets.model.last_good`: previous-champion,
then earlier champions, newest first). Either way the champion's
`resolution` says what the alias names, what serves, and why.

The same poll follows the `challenger` alias for a staged rollout
(`serving.rollout`): a version in a live stage (shadow, canary) is loaded
through the same gate and published beside the champion in one `Models`
reference (`watcher.models`), so a request reads one consistent pair; it is
unloaded when its stage ends or the alias moves, and a stage or canary share
changed on the version's tags takes effect at the next poll. A challenger
the gate refuses is remembered with the same backoff, and the champion
serves every message meanwhile.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spam_assets.model.artifact import RefusedModel
from spam_assets.model.last_good import Resolution, first_servable, refused_reason
from spam_assets.model.registry import ModelCard, Registry
from spam_assets.model.scorer import Scorer
from spam_assets.model.verify import DEFAULT_PROBES, VerifiedModel
from spam_assets.settings import CHALLENGER_ALIAS, CHAMPION_ALIAS, MAX_FALLBACKS

from serving.rollout import Challenger, Models, live_stage

log = logging.getLogger(__name__)


class ModelFolder:
    """A temporary folder holding a downloaded, verified model, removed once nothing refers to it.

    Kept (not removed right after loading) so heavy-request scoring workers
    (`serving.heavy_pool`) load the very files the server verified; every
    `LoadedChampion` of the version refers to it, so a request in flight on
    a version swapped out still finds its files.
    """

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="spam-serving-model-"))
        self._remove = weakref.finalize(self, shutil.rmtree, self.path, True)

    def remove(self) -> None:
        self._remove()


@dataclass(frozen=True)
class LoadedChampion:
    """One verified model version, its lineage and when it loaded; never mutated after creation."""

    card: ModelCard
    verified: VerifiedModel
    loaded_at: datetime
    # What the alias names and why this version serves; the watcher sets it when it publishes.
    resolution: Resolution = Resolution()
    # The verified model folder on disk (MLmodel, model file), for scoring workers; None: in process only.
    model_dir: Path | None = None
    folder: ModelFolder | None = field(default=None, compare=False, repr=False)
    # The probe messages it passed; a scoring worker verifies its copy with the same ones.
    probes: tuple[tuple[str, str], ...] = DEFAULT_PROBES

    @property
    def version(self) -> str:
        return self.card.version

    @property
    def scorer(self) -> Scorer:
        """What scores every request for this version."""
        return self.verified.scorer

    @property
    def model_sha256(self) -> str:
        return self.verified.sha256


def load_version(
    registry: Registry, version: Any, probes: Sequence[tuple[str, str]] = DEFAULT_PROBES
) -> LoadedChampion:
    """One registered version (an MLflow ModelVersion) through the contract's gate; raises RefusedModel.

    The verified folder stays on disk while the champion is referred to, for the scoring workers.
    """
    folder = ModelFolder()
    try:
        model_dir, verified = registry.download_verified(version, folder.path, probes)
        card = registry.card(version)
    except BaseException:
        folder.remove()
        raise
    return LoadedChampion(
        card=card, verified=verified, loaded_at=datetime.now(UTC), model_dir=model_dir, folder=folder,
        probes=tuple(probes),
    )


@dataclass
class Refusal:
    reason: str
    attempts: int
    retry_at: float  # time.monotonic()


@dataclass
class ChampionWatcher:
    """Follows a registry alias and publishes the verified model it points at."""

    registry: Registry
    alias: str = CHAMPION_ALIAS
    poll_interval: float = 5.0
    refuse_backoff: float = 300.0
    # Earlier champions a server with no champion yet tries when it cannot load the alias's version.
    max_fallbacks: int = MAX_FALLBACKS
    probes: Sequence[tuple[str, str]] = DEFAULT_PROBES
    loader: Callable[..., LoadedChampion] = load_version
    # The alias of a staged rollout's challenger (serving.rollout); None: this server never scores one.
    challenger_alias: str | None = CHALLENGER_ALIAS

    _models: Models = field(default_factory=Models, init=False, repr=False)
    _settled: LoadedChampion | None = field(default=None, init=False, repr=False)  # published and announced
    refused: dict[str, Refusal] = field(default_factory=dict, init=False)
    # Versions swapped in (the first load included) and failed loads, for serving.metrics.
    swaps: int = field(default=0, init=False)
    refusals: int = field(default=0, init=False)
    _listeners: list[Callable[[LoadedChampion], None]] = field(default_factory=list, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _changed: threading.Condition = field(default_factory=threading.Condition, init=False, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _last_poll_error: str | None = field(default=None, init=False, repr=False)
    _last_no_champion: str | None = field(default=None, init=False, repr=False)
    _last_challenger_error: str | None = field(default=None, init=False, repr=False)

    @property
    def current(self) -> LoadedChampion | None:
        """The serving champion. Read it once per request and keep the object."""
        return self._models.champion

    @property
    def models(self) -> Models:
        """The champion and the challenger beside it, as one object. Read it once per request and keep it."""
        return self._models

    @property
    def _current(self) -> LoadedChampion | None:
        return self._models.champion

    def subscribe(self, listener: Callable[[LoadedChampion], None]) -> Callable[[], None]:
        """Call `listener(champion)` after every swap or change of its `resolution` (in the watcher thread).

        Returns an unsubscribe function.
        """
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def poll_once(self) -> bool:
        """Resolve the aliases once; load, verify and swap if they moved. True when the champion swapped."""
        swapped = self._poll_champion()
        if self.challenger_alias is not None:
            self._poll_challenger()
        return swapped

    def _poll_champion(self) -> bool:
        try:
            target = self.registry.version_for(self.alias)
        except Exception as error:  # noqa: BLE001 - registry down: keep serving, say so once
            message = f"cannot resolve {self.registry.model_name}@{self.alias}: {error!r}"
            if message != self._last_poll_error:
                log.warning("%s; the current champion keeps serving", message)
            self._last_poll_error = message
            return False
        self._last_poll_error = None
        current = self._current
        if target is None:
            if current is not None:
                log.debug("alias %s is gone; version %s keeps serving", self.alias, current.version)
            return False
        version = str(target.version)
        if current is not None and current.version == version:
            if current.resolution.fallback:  # the alias came back to what serves (a rollback): say so
                self._publish(replace(current, resolution=Resolution(self.alias, version, version)))
            return False
        if current is not None:
            return self._follow(target, current)
        return self._start_from(target)

    def _follow(self, target: Any, current: LoadedChampion) -> bool:
        """A server already serving: swap to the alias's new version, or keep the current one if it is refused."""
        version = str(target.version)
        started = time.perf_counter()
        try:
            champion = self._load(target)
        except RefusedModel as error:
            if current.resolution.alias_version != version:  # say once that the alias names what cannot serve
                reason = f"{refused_reason(self.alias, version, str(error))}; version {current.version} keeps serving"
                self._publish(replace(current, resolution=Resolution(self.alias, version, current.version, reason)))
            return False
        self._swap(replace(champion, resolution=Resolution(self.alias, version, version)), started)
        return True

    def _start_from(self, target: Any) -> bool:
        """No champion yet: the alias's version, else the last good model, so a new replica serves."""
        started = time.perf_counter()
        try:
            outcome = first_servable(self.registry, self.alias, target, self._load, self.max_fallbacks)
        except Exception as error:  # noqa: BLE001 - the registry failed while listing fallbacks: next poll
            log.warning("cannot look for a last good model of %s: %r", self.registry.model_name, error)
            return False
        resolution = outcome.resolution
        if outcome.loaded is None:
            if resolution.reason != self._last_no_champion:  # once per new state, not every poll
                log.error("NO CHAMPION CAN SERVE: %s. Health stays NOT_SERVING.", resolution.reason)
            self._last_no_champion = resolution.reason
            return False
        self._last_no_champion = None
        if resolution.fallback:
            log.warning("SERVING THE LAST GOOD MODEL: %s", resolution.reason)
        self._swap(replace(outcome.loaded, resolution=resolution), started)
        return True

    def _in_backoff(self, version: str) -> bool:
        refusal = self.refused.get(version)
        return refusal is not None and time.monotonic() < refusal.retry_at

    def _poll_challenger(self) -> None:
        """Follow the challenger alias: load a live one, update its stage, or unload it."""
        try:
            target = self.registry.version_for(self.challenger_alias)
        except Exception as error:  # noqa: BLE001 - registry down: keep what is loaded, say so once
            message = f"cannot resolve {self.registry.model_name}@{self.challenger_alias}: {error!r}"
            if message != self._last_challenger_error:
                log.warning("%s; the challenger stays as it was", message)
            self._last_challenger_error = message
            return
        self._last_challenger_error = None
        models = self._models
        current = models.challenger
        stage = live_stage(target, models.champion.version if models.champion is not None else None)
        if stage is None:
            if current is not None:
                reason = "its stage ended" if target is not None and str(target.version) == current.version else (
                    "the alias moved" if target is not None else "the alias is gone")
                log.info("challenger version %s unloaded: %s", current.version, reason)
                self._publish_challenger(None)
            return
        if current is not None and current.version == stage.version and current.model is not None:
            if current.stage != stage:
                log.info("challenger version %s: stage %s, canary share %g", stage.version, stage.stage, stage.canary_share)
                self._publish_challenger(replace(current, stage=stage))
            return
        if stage.problem and (current is None or current.stage != stage):
            log.error("challenger version %s: %s", stage.version, stage.problem)
        started = time.perf_counter()
        try:
            model = self._load(target, self.challenger_alias)
        except RefusedModel as error:
            refused = Challenger(stage, None, str(error))
            if current != refused:  # once per new state, not every poll
                self._publish_challenger(refused)
            return
        self._publish_challenger(Challenger(stage, model))
        log.info(
            "challenger version %s loaded and verified in %.2fs (stage %s, canary share %g); scorer %s",
            stage.version, time.perf_counter() - started, stage.stage, stage.canary_share, model.scorer.name,
        )  # fmt: skip

    def _load(self, target: Any, alias: str | None = None) -> LoadedChampion:
        """Load and verify one version; a refusal is remembered and raised as RefusedModel (also while in backoff).

        A version already loaded as the challenger (promoted) is reused: it passed the same gate.
        """
        version = str(target.version)
        loaded = self._models.scoring_challenger
        if loaded is not None and loaded.version == version:
            return loaded
        if self._in_backoff(version):
            raise RefusedModel(self.refused[version].reason)  # remembered, not reloaded before its backoff ends
        log.info("loading %s version %s (alias %s)", self.registry.model_name, version, alias or self.alias)
        try:
            return self.loader(self.registry, target, self.probes)
        except Exception as error:  # noqa: BLE001 - RefusedModel, or anything unexpected
            raise RefusedModel(self._refuse(version, error)) from error

    def _refuse(self, version: str, error: BaseException) -> str:
        previous = self.refused.get(version)
        attempts = previous.attempts + 1 if previous else 1
        self.refusals += 1
        delay = min(self.refuse_backoff * 2 ** (attempts - 1), max(self.refuse_backoff, 3600.0))
        reason = str(error) if isinstance(error, RefusedModel) else f"unexpected error: {error!r}"
        self.refused[version] = Refusal(reason, attempts, time.monotonic() + delay)
        current = self._current
        log.error(
            "REFUSED %s version %s (attempt %d, next try in %.0fs): %s. %s",
            self.registry.model_name,
            version,
            attempts,
            delay,
            reason,
            f"Version {current.version} keeps serving." if current else "No champion is serving.",
        )
        return reason

    def _swap(self, champion: LoadedChampion, started: float) -> None:
        self.swaps += 1  # before publishing: whoever sees the new version sees it counted
        scorer = champion.scorer
        # A model the lean compiler does not know serves through its pipeline, several times slower: say so loudly.
        self._publish(
            champion,
            lambda: log.log(
                logging.INFO if scorer.name == "lean" else logging.WARNING,
                "now serving %s version %s (loaded and verified in %.2fs, sha256 %s); scorer %s: %s",
                self.registry.model_name,
                champion.version,
                time.perf_counter() - started,
                champion.model_sha256[:12],
                scorer.name,
                scorer.reason,
            ),
        )

    def _publish(self, champion: LoadedChampion, announce: Callable[[], None] | None = None) -> None:
        """Replace the one reference every request reads, tell the listeners (a swap, or news of the alias),
        say so, and only then wake `wait_for`: whoever waited sees the swap whole (health, log, metrics)."""
        with self._changed:
            challenger = self._models.challenger
            if challenger is not None and challenger.version == champion.version:
                challenger = None  # promoted: one model is never both
            self._models = Models(champion, challenger)
            self.refused.pop(champion.version, None)
        self._tell_listeners(champion)
        if announce is not None:
            announce()
        with self._changed:
            self._settled = champion
            self._changed.notify_all()

    def _publish_challenger(self, challenger: Challenger | None) -> None:
        """Replace the one reference with the same champion and this challenger; tell the listeners."""
        with self._changed:
            self._models = Models(self._models.champion, challenger)
        if self._models.champion is not None:
            self._tell_listeners(self._models.champion)
        with self._changed:
            self._changed.notify_all()

    def _tell_listeners(self, champion: LoadedChampion) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(champion)
            except Exception:  # noqa: BLE001 - a listener must not stop the watcher
                log.exception("champion listener failed")

    def wait_for_models(self, ready: Callable[[Models], bool], timeout: float = 30.0) -> Models | None:
        """Block until `ready(watcher.models)`; those models, or None on timeout."""
        with self._changed:
            self._changed.wait_for(lambda: ready(self._models), timeout)
            return self._models if ready(self._models) else None

    def wait_for(self, version: str | None = None, timeout: float = 30.0) -> LoadedChampion | None:
        """Block until a champion (of `version`, if given) serves; None on timeout."""

        def ready() -> bool:
            settled = self._settled
            return settled is not None and (version is None or settled.version == str(version))

        with self._changed:
            self._changed.wait_for(ready, timeout)
        return self._settled if ready() else None

    def start(self) -> None:
        """Poll now and then every poll_interval seconds, in a daemon thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="champion-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - the loop must survive anything
                log.exception("champion poll failed")
            if self._stop.wait(self.poll_interval):
                return

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
