"""Shadow scoring: the model that did not answer a message scores it too, off the caller's path.

The request thread hands the verdicts it just gave to `ShadowScorer.submit`,
which only appends them to a bounded queue and never blocks: when the queue
holds `max_messages` messages (or `max_bytes` of text) the new ones are
dropped and counted (reason `queue_full`). One thread takes everything queued, keeps the
`--shadow-share` of messages (by `rollout.shadow_bucket`, so a message is
always shadowed or never), has them scored by the other model in batches,
and records each shadow verdict in the prediction log with the served
verdict's id (`served` false) and counts whether the two labels agree.

Where the scoring runs (`--shadow-worker`): by default in a worker process
(`serving.heavy_pool`, started at the first shadow batch) at nice 19, the
lowest weight of the ordinary scheduler: a request's thread that wakes takes
the core from it, and the server process only pays for handing the batch
over (the thread waits on a socket, GIL released). Scored in a thread of the
server instead, the same work competes for the server's GIL and core:
measured, it put 31% on the unary p50 and halved batch throughput on one
core (README, Measured). Not SCHED_IDLE as the heavy-request workers: on a
busy host that starved the worker completely (0 messages shadowed in a
benchmark run at load average 5-10), where nice 19 still makes progress. The
price: on a saturated core the worker gets little CPU, the queue fills and
shadow messages are dropped (counted) - shadow is best effort, served
traffic comes first.

Requests over the heavy-request threshold (64 KiB of text) are not shadowed
(counted, reason `heavy`): handing megabytes to the worker costs the
server a copy of them, and scored in the server they would hold the GIL the
light calls need. A model that fails on a shadow batch loses only that batch
(reason `failed`); the callers already have their verdicts.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from serving.classify import label_for
from serving.heavy_pool import Job, ScoringPool, score_in_chunks
from serving.rollout import Policy

if TYPE_CHECKING:
    from serving.classify import HeavyLane
    from serving.prediction_log import PredictionLog
    from serving.watcher import LoadedChampion

log = logging.getLogger(__name__)

DROP_REASONS = ("queue_full", "heavy", "failed")
# Messages scored together by the worker: more is cheaper per message, and the scorer chunks by max_batch anyway.
TAKE_MESSAGES = 1024
# The shadow thread takes what is queued this often, or sooner when the queue is half full (or someone
# waits for it): waking it on every call cost each call a GIL hand-over and a socket round trip of its own.
TAKE_INTERVAL_S = 0.05


class ShadowJob(NamedTuple):
    """One call's served verdicts, for the other model to score. Built on the request thread: a NamedTuple."""

    model: LoadedChampion  # the model that did not answer
    role: str  # its role
    api: str
    client_ids: Sequence[str]
    texts: Sequence[str]
    labels: Sequence[str]  # what the caller got
    verdict_ids: Sequence[str]


class ShadowScorer:
    """A bounded queue and one worker thread scoring queued messages with the model that did not answer.

    `delay` (seconds slept before each take) exists for tests that need a
    slow worker to fill the queue; the server never sets it.
    """

    def __init__(
        self,
        policy: Policy = Policy(),
        *,
        max_messages: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        max_batch: int = 256,
        heavy: HeavyLane | None = None,
        predictions: PredictionLog | None = None,
        worker_process: bool = True,
        delay: float = 0.0,
    ):
        self.policy = policy
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.max_batch = max_batch
        self.heavy = heavy
        self.predictions = predictions
        self.delay = delay
        self.worker_process = worker_process
        self._pool: ScoringPool | None = None  # started by the first batch that needs it
        self._jobs: collections.deque[ShadowJob] = collections.deque()
        self._queued = 0  # messages in _jobs
        self._queued_chars = 0  # their text, in characters (at most 4 bytes each; SMS and mail are mostly 1)
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._busy = False
        self._stop = False
        self._thread: threading.Thread | None = None
        # Counts for /metrics, each written by one side only (the worker, or request threads under the lock).
        self.agreement = {"agree": 0, "disagree": 0}
        self.scored = {"champion": 0, "challenger": 0}  # shadow verdicts, by the role of the model that gave them
        self.dropped = dict.fromkeys(DROP_REASONS, 0)

    # --- the request threads' side -------------------------------------------------------------

    def submit(self, job: ShadowJob) -> bool:
        """Queue one call's verdicts for shadow scoring; False (counted) when the queue is full. Never blocks."""
        count = len(job.verdict_ids)
        if not count:
            return True
        chars = sum(map(len, job.texts))
        if self.heavy is not None and chars >= self.heavy.min_bytes:  # HeavyLane.is_heavy, already summed
            with self._lock:
                self.dropped["heavy"] += count
            return False
        with self._lock:
            if self._queued + count > self.max_messages or self._queued_chars + chars > self.max_bytes or self._stop:
                self.dropped["queue_full"] += count
                return False
            self._jobs.append(job)
            self._queued += count
            self._queued_chars += chars
            if self._queued * 2 > self.max_messages or self._queued_chars * 2 > self.max_bytes:
                self._ready.notify()
        return True

    def depth(self) -> int:
        """Messages queued for shadow scoring."""
        return self._queued

    # --- life cycle --------------------------------------------------------------------------------

    def start(self) -> ShadowScorer:
        self._thread = threading.Thread(target=self._run, name="shadow-scorer", daemon=True)
        self._thread.start()
        return self

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued before this call is scored and recorded; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._ready.notify()
            while self._jobs or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def close(self, timeout: float = 1.0) -> None:
        """Score what is queued (for at most `timeout` seconds) and stop the worker."""
        with self._lock:
            self._stop = True
            self._ready.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._pool is not None:
            self._pool.close()

    @property
    def worker_pid(self) -> int | None:
        """The shadow scoring worker process, once started."""
        pool = self._pool
        return pool.pids[0] if pool is not None and pool.pids else None

    # --- the worker thread ------------------------------------------------------------------------

    def _take(self) -> list[ShadowJob] | None:
        """Queued jobs, up to about TAKE_MESSAGES messages; None once stopped with nothing left."""
        with self._lock:
            if not self._stop and self._queued * 2 <= self.max_messages:
                self._ready.wait(TAKE_INTERVAL_S)  # let calls queue up: one hand-over for all of them
            while not self._jobs:
                self._busy = False
                self._idle.notify_all()
                if self._stop:
                    return None
                self._ready.wait(TAKE_INTERVAL_S)
            jobs, count, chars = [], 0, 0
            while self._jobs and count < TAKE_MESSAGES:
                job = self._jobs.popleft()
                jobs.append(job)
                count += len(job.verdict_ids)
                chars += sum(map(len, job.texts))
            self._queued -= count
            self._queued_chars -= chars
            self._busy = True
            return jobs

    def _run(self) -> None:
        while True:
            if self.delay:
                time.sleep(self.delay)
            jobs = self._take()
            if jobs is None:
                return
            # One scorer call per model (a swap may put two versions in one take).
            by_model: dict[int, list[ShadowJob]] = {}
            for job in jobs:
                by_model.setdefault(id(job.model), []).append(job)
            for group in by_model.values():
                try:
                    self._score(group)
                except Exception:  # noqa: BLE001 - the worker must survive anything; callers are unaffected
                    lost = sum(len(job.verdict_ids) for job in group)
                    with self._lock:
                        self.dropped["failed"] += lost
                    log.exception("shadow scoring of %d messages failed; they have no shadow verdict", lost)

    def _score(self, jobs: list[ShadowJob]) -> None:
        model, role = jobs[0].model, jobs[0].role
        picked = []
        for job in jobs:
            keep = self.policy.shadowed(job.client_ids, job.texts)
            if keep:
                picked.append((job, keep))
        texts = [job.texts[i] for job, keep in picked for i in keep]
        if not texts:
            return
        started = time.perf_counter()
        probabilities = self._probabilities(model, texts).tolist()
        agree = at = 0
        for job, keep in picked:
            p = probabilities[at : at + len(keep)]
            at += len(keep)
            labels = [label_for(x, model) for x in p]
            agree += sum(label == job.labels[i] for label, i in zip(labels, keep, strict=True))
            if self.predictions is not None:
                self.predictions.record(
                    job.api, started, model,
                    [job.client_ids[i] for i in keep], [job.texts[i] for i in keep], p, labels,
                    [job.verdict_ids[i] for i in keep], role=role, served=False,
                )  # fmt: skip
        self.agreement["agree"] += agree
        self.agreement["disagree"] += len(texts) - agree
        self.scored[role] += len(texts)

    def _probabilities(self, model: LoadedChampion, texts: list[str]):
        """P(spam) per text from `model`: in the worker process (the verified folder), else in this thread."""
        if not self.worker_process or model.model_dir is None:
            # serving.metrics counts shadow verdicts apart from served ones
            score = getattr(model.scorer, "shadow_scores", model.scorer.scores)
            return score_in_chunks(score, texts, self.max_batch)
        if self._pool is None:
            self._pool = ScoringPool(1, purpose="shadow", idle=False)
        job = Job(
            model.version, str(model.model_dir), model.model_sha256, model.scorer.name, model.probes, texts,
            self.max_batch,
        )  # fmt: skip
        p = self._pool.scores(job)
        observe = getattr(model.scorer, "observe", None)  # serving.metrics counts what the worker scored too
        return observe(p, served=False) if observe is not None else p
