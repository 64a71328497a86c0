"""Which model serves: resolve the registry alias, load, verify and hot-swap it.

No gRPC here. `ChampionWatcher` polls the MLflow alias (`champion` of
`spam-classifier` by default) from a background thread. When the alias points
at a version other than the one serving, that version is downloaded, checked
and loaded *in the watcher thread*, then published by replacing a single
reference to an immutable `LoadedChampion`. Request handlers read
`watcher.current` once per request (or per batch) and use that object to the
end, so requests in flight finish on the model they started with, and no
request ever sees half of a swap.

A version that fails any check is refused: logged, remembered with a backoff
(so a broken version is not reloaded every poll), and the current champion
keeps serving.

Checks before a version may serve:

1. Artifact integrity: the MLmodel file must declare the sklearn flavour in
   the skops format (pickle/cloudpickle run code on load and are refused);
   the types it asks skops to trust must all be in *this code's* allow-list
   (`spam_assets.model.pipelines.SKOPS_TRUSTED_TYPES`): the list recorded in the
   artifact is not trusted, because a tampered artifact could widen it; and
   when the model version carries a `model_sha256` tag, the model file's
   SHA-256 must match it. MLflow itself records no checksums.
2. It loads with skops using that allow-list.
3. It predicts: classes exactly {ham, spam}; on probe messages, finite
   probabilities in [0, 1] that sum to 1, and the expected label for each
   unmistakable probe.

Then the pipeline is compiled into a lean scorer (`spam_assets.model.lean_scorer`), the
same numbers at a twentieth of the cost per text, used only when it matches
`predict_proba` on the probes; otherwise the pipeline scores directly.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import sklearn

from spam_assets.model.lean_scorer import LeanScorer, verified_scorer
from spam_assets.model.pipelines import SKOPS_TRUSTED_TYPES
from spam_assets.model.registry import ModelCard, Registry
from spam_assets.model.tags import TAG_MODEL_SHA256
from spam_assets.settings import CHAMPION_ALIAS, LABELS, POSITIVE_LABEL

log = logging.getLogger(__name__)

# Messages no acceptable spam model gets wrong.
DEFAULT_PROBES: tuple[tuple[str, str], ...] = (
    ("WINNER!! You have won a £1000 cash prize. To claim call 09061701461 now", "spam"),
    ("URGENT! Free entry: txt WIN to 87121 to claim your guaranteed award", "spam"),
    ("Are we still on for lunch tomorrow?", "ham"),
    ("Ok, see you at home later. Love you", "ham"),
)


class RefusedModel(Exception):
    """A model version that must not serve, and why."""


@dataclass(frozen=True)
class LoadedChampion:
    """One loaded, verified model and its lineage; never mutated after creation."""

    card: ModelCard
    model: Any  # a fitted scikit-learn pipeline taking a list of str
    spam_column: int  # column of predict_proba holding P(spam)
    model_sha256: str
    loaded_at: datetime
    # The same P(spam) as `model`, computed without scikit-learn's per-call overhead
    # (spam_assets.model.lean_scorer); None when the pipeline is not supported or did not match.
    scorer: LeanScorer | None = None

    @property
    def version(self) -> str:
        return self.card.version

    def spam_probability(self, texts: Sequence[str]) -> np.ndarray:
        if self.scorer is not None:
            return self.scorer.scores(texts)
        return self.predict_proba(texts)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """P(spam) through the pipeline itself."""
        # The model passed verify_model; its inputs are texts, so the features are finite by
        # construction. Skipping scikit-learn's per-call input checks saves ~10-15% per call.
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            return self.model.predict_proba(texts)[:, self.spam_column]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify_model(model: Any, probes: Sequence[tuple[str, str]] = DEFAULT_PROBES) -> int:
    """Check a loaded model behaves like a spam classifier; return the P(spam) column."""
    classes = [str(c) for c in getattr(model, "classes_", [])]
    if sorted(classes) != sorted(LABELS):
        raise RefusedModel(f"model classes are {classes}, expected {list(LABELS)}")
    if not hasattr(model, "predict_proba"):
        raise RefusedModel("model has no predict_proba")
    texts = [text for text, _ in probes]
    try:
        proba = np.asarray(model.predict_proba(texts), dtype=float)
    except Exception as error:  # noqa: BLE001 - any failure to predict refuses the model
        raise RefusedModel(f"predict_proba failed on probe messages: {error!r}") from error
    if proba.shape != (len(texts), len(classes)):
        raise RefusedModel(f"predict_proba returned shape {proba.shape}, expected {(len(texts), len(classes))}")
    if not np.all(np.isfinite(proba)) or proba.min() < 0 or proba.max() > 1:
        raise RefusedModel("predict_proba returned probabilities that are not finite numbers in [0, 1]")
    if not np.allclose(proba.sum(axis=1), 1.0, atol=1e-6):
        raise RefusedModel("predict_proba rows do not sum to 1")
    spam_column = classes.index(POSITIVE_LABEL)
    wrong = [
        f"{text[:40]!r}: expected {expected}, P(spam)={p:.3f}"
        for (text, expected), p in zip(probes, proba[:, spam_column], strict=True)
        if (POSITIVE_LABEL if p >= 0.5 else "ham") != expected
    ]
    if wrong:
        raise RefusedModel(f"wrong labels on {len(wrong)} of {len(probes)} probe messages: " + "; ".join(wrong))
    return spam_column


def _read_artifact(local_dir: Path, expected_sha256: str | None) -> bytes:
    """The model file's bytes, after the integrity checks."""
    from mlflow.models import Model

    try:
        mlmodel = Model.load(str(local_dir / "MLmodel"))
    except Exception as error:  # noqa: BLE001
        raise RefusedModel(f"unreadable MLmodel file: {error!r}") from error
    flavor = mlmodel.flavors.get("sklearn")
    if flavor is None:
        raise RefusedModel(f"not a scikit-learn model (flavors: {sorted(mlmodel.flavors)})")
    fmt = flavor.get("serialization_format")
    if fmt != "skops":
        raise RefusedModel(f"serialization format {fmt!r} refused: only skops loads without running code")
    recorded = list(flavor.get("skops_trusted_types") or [])
    widened = sorted(set(recorded) - set(SKOPS_TRUSTED_TYPES))
    if widened:
        raise RefusedModel(f"artifact asks to trust types outside the serving allow-list: {widened}")
    model_file = local_dir / flavor.get("pickled_model", "model.skops")
    try:
        data = model_file.read_bytes()
    except OSError as error:
        raise RefusedModel(f"model file missing: {error}") from error
    if expected_sha256 and _sha256(data) != expected_sha256.lower():
        raise RefusedModel(
            f"model file checksum mismatch: sha256 {_sha256(data)} != recorded {TAG_MODEL_SHA256} {expected_sha256}"
        )
    return data


def load_version(
    registry: Registry, version: Any, probes: Sequence[tuple[str, str]] = DEFAULT_PROBES
) -> LoadedChampion:
    """Download, check, load and verify one registered version (an MLflow ModelVersion)."""
    import mlflow.artifacts
    import skops.io

    uri = registry.client.get_model_version_download_uri(registry.model_name, str(version.version))
    with tempfile.TemporaryDirectory(prefix="spam-serving-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=tmp, tracking_uri=registry.tracking_uri
            )
        except Exception as error:  # noqa: BLE001
            raise RefusedModel(f"could not download artifacts from {uri}: {error!r}") from error
        data = _read_artifact(Path(local), version.tags.get(TAG_MODEL_SHA256))
    try:
        # This code's allow-list, not the artifact's own.
        model = skops.io.loads(data, trusted=SKOPS_TRUSTED_TYPES)
    except Exception as error:  # noqa: BLE001 - corrupt file, untrusted type, version skew
        raise RefusedModel(f"skops could not load the model: {error!r}") from error
    spam_column = verify_model(model, probes)
    scorer, how = verified_scorer(model, spam_column, [text for text, _ in probes])
    log.info("version %s: %s", version.version, how)
    return LoadedChampion(
        card=registry.card(version),
        model=model,
        spam_column=spam_column,
        model_sha256=_sha256(data),
        loaded_at=datetime.now(UTC),
        scorer=scorer,
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
    probes: Sequence[tuple[str, str]] = DEFAULT_PROBES
    loader: Callable[..., LoadedChampion] = load_version

    _current: LoadedChampion | None = field(default=None, init=False, repr=False)
    refused: dict[str, Refusal] = field(default_factory=dict, init=False)
    _listeners: list[Callable[[LoadedChampion], None]] = field(default_factory=list, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _changed: threading.Condition = field(default_factory=threading.Condition, init=False, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _last_poll_error: str | None = field(default=None, init=False, repr=False)

    @property
    def current(self) -> LoadedChampion | None:
        """The serving champion. Read it once per request and keep the object."""
        return self._current

    def subscribe(self, listener: Callable[[LoadedChampion], None]) -> Callable[[], None]:
        """Call `listener(champion)` after every swap (in the watcher thread); returns an unsubscribe function."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def poll_once(self) -> bool:
        """Resolve the alias once; load, verify and swap if it moved. True when a swap happened."""
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
            return False
        refusal = self.refused.get(version)
        if refusal is not None and time.monotonic() < refusal.retry_at:
            return False
        log.info("loading %s version %s (alias %s)", self.registry.model_name, version, self.alias)
        started = time.perf_counter()
        try:
            champion = self.loader(self.registry, target, self.probes)
        except Exception as error:  # noqa: BLE001 - RefusedModel, or anything unexpected
            self._refuse(version, error)
            return False
        self._swap(champion)
        log.info(
            "now serving %s version %s (loaded and verified in %.2fs, sha256 %s)",
            self.registry.model_name,
            version,
            time.perf_counter() - started,
            champion.model_sha256[:12],
        )
        return True

    def _refuse(self, version: str, error: BaseException) -> None:
        previous = self.refused.get(version)
        attempts = previous.attempts + 1 if previous else 1
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

    def _swap(self, champion: LoadedChampion) -> None:
        with self._changed:
            self._current = champion  # the one reference every request reads
            self.refused.pop(champion.version, None)
            self._changed.notify_all()
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(champion)
            except Exception:  # noqa: BLE001 - a listener must not stop the watcher
                log.exception("champion listener failed")

    def wait_for(self, version: str | None = None, timeout: float = 30.0) -> LoadedChampion | None:
        """Block until a champion (of `version`, if given) serves; None on timeout."""

        def ready() -> bool:
            current = self._current
            return current is not None and (version is None or current.version == str(version))

        with self._changed:
            self._changed.wait_for(ready, timeout)
        return self._current if ready() else None

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
