"""Heavy requests scored in worker processes, outside the serving process's GIL.

Why: scoring runs Python and numpy code that holds the GIL, so in one
process a request of a megabyte of never-seen words made every one-message
call beside it wait for the GIL, several times per call (README, Measured,
row 7). In a worker process the two are scheduled by the operating system,
which preempts; the serving process only waits on a socket (GIL released)
while a worker scores.

A worker is `python -m serving.heavy_pool` (spawned: exec'd, never a fork
of the serving process, whose gRPC threads do not survive a fork). It never
talks to the registry: each job names the version, the local model folder
the serving process already downloaded and verified, and its sha256; the
worker loads it through the same gate (`spam_assets.model.verify.load_verified`:
sha256 again, allow-list, probes, choice of scorer), keeps that scorer
(two versions at most: a champion and a challenger in rollout, whose
shadow jobs alternate) until jobs name others (a hot swap), and scores with the same
chunked loop as the serving process (`score_in_chunks`), so the answer is
bit for bit the one in-process scoring gives.

A worker dies with the server: it holds the read end of a pipe whose write
end only the server holds, and exits when that reaches end-of-file (the
server exited, SIGKILL included). A worker that dies while scoring costs
that request (`WorkerLost`: answered UNAVAILABLE, so the client retries; it
is not retried in the server, since the request may be what killed the
worker) and is replaced at once.

This module imports neither gRPC nor MLflow at import time: the worker stays small.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# Texts per scorer call are also bounded by their total length: the scorer's
# batch path makes one numpy or C call over all the n-grams of a call, which
# holds the GIL throughout (about 20 ms for 15 texts of 64 KiB), while one
# call per 64 KiB keeps each such step to a millisecond or two.
CHUNK_CHARS = 64 * 1024

# Workers run below every normal-priority process: SCHED_IDLE (Linux), else
# nice 10. Where a worker shares a core with the server (a one-CPU container,
# the benchmark), a light call's thread must get the core the moment it wakes.
# At nice 10 a running worker still finished its time slice first (a few ms
# on today's kernels): row 7's p99 stayed near 4 ms while idle calls had
# 1.5 ms. Under SCHED_IDLE a waking normal thread preempts it at once. The
# price: on a host saturated by normal-priority work, heavy requests wait for
# spare CPU (within their deadline) while light ones go on.
WORKER_NICE = 10


# Nice value of a worker that must make progress on a busy host (shadow scoring): the lowest weight the
# ordinary scheduler has, so a waking request thread still preempts it, but other normal-priority
# processes cannot starve it as they starve SCHED_IDLE.
LOWEST_NICE = 19


def _lower_priority(idle: bool = True) -> None:
    if not idle:
        os.nice(LOWEST_NICE - os.nice(0))
        return
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or refused: the portable second best
        os.nice(WORKER_NICE)


# Versions a worker keeps loaded: a champion and a staged rollout's challenger (serving/shadow.py
# alternates between them during a canary); a third evicts the one used least recently.
KEEP_VERSIONS = 2

# How long a heavy request waits for a free worker (one that is starting
# included) before it is answered UNAVAILABLE.
CHECKOUT_TIMEOUT_S = 60.0


def _chunks(texts: Sequence[str], max_batch: int) -> Iterator[Sequence[str]]:
    start, size = 0, 0
    for end, text in enumerate(texts):
        if end > start and (end - start >= max_batch or size + len(text) > CHUNK_CHARS):
            yield texts[start:end]
            start, size = end, 0
        size += len(text)
    if start < len(texts):
        yield texts[start:]


def score_in_chunks(scores: Callable[[Sequence[str]], np.ndarray], texts: Sequence[str], max_batch: int) -> np.ndarray:
    """P(spam) per text, one scorer call per chunk (`max_batch` texts, `CHUNK_CHARS`): in process and in workers alike."""
    parts = [scores(chunk) for chunk in _chunks(texts, max_batch)]
    return parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.empty(0)


@dataclass(frozen=True)
class Job:
    """What a worker needs to score `texts` with one verified model version."""

    version: str
    model_dir: str  # the downloaded MLflow model folder the serving process verified
    sha256: str  # of the model file, as the serving process loaded it
    scorer_name: str  # the scorer the serving process chose: the worker must choose the same
    probes: tuple[tuple[str, str], ...]
    texts: Sequence[str]
    max_batch: int


class WorkerLost(Exception):
    """The worker scoring a request died before answering; the request was not scored."""


class WorkerRefused(Exception):
    """A worker could not load the version a job named (the serving process can still score it)."""


class WorkerFailed(Exception):
    """The model raised while a worker scored a batch (as it would have in process)."""


# --- the worker process -----------------------------------------------------------------------------


def _exit_with_parent(lifeline_fd: int) -> None:
    """Block until the server's end of the lifeline closes (the server is gone), then exit at once."""
    while os.read(lifeline_fd, 1):
        pass
    os._exit(0)


def _load(job: Job):
    from spam_assets.model.verify import load_verified

    verified = load_verified(Path(job.model_dir), job.sha256, job.probes)
    if verified.scorer.name != job.scorer_name:  # another scorer could differ in the last bits
        raise RuntimeError(f"chose scorer {verified.scorer.name!r}, the server serves with {job.scorer_name!r}")
    return verified.scorer


def worker_main(sock_fd: int, lifeline_fd: int, idle: bool = True) -> None:
    # Ctrl-C reaches the whole process group: the server handles it and stops its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _lower_priority(idle)
    threading.Thread(target=_exit_with_parent, args=(lifeline_fd,), name="lifeline", daemon=True).start()
    conn = Connection(sock_fd)
    loaded: dict[tuple[str, str], object] = {}  # (version, sha256) -> scorer, least recently used first
    while True:
        try:
            job: Job = conn.recv()
        except EOFError:
            return
        key = (job.version, job.sha256)
        scorer = loaded.pop(key, None)
        if scorer is None:
            try:
                scorer = _load(job)
            except Exception as error:  # noqa: BLE001 - RefusedModel or anything else: say why, keep running
                conn.send(("refused", f"version {job.version}: {error}"))
                continue
            while len(loaded) >= KEEP_VERSIONS:
                loaded.pop(next(iter(loaded)))
        loaded[key] = scorer  # most recently used last
        try:
            reply = ("scores", score_in_chunks(scorer.scores, job.texts, job.max_batch))
        except Exception as error:  # noqa: BLE001 - the model failed on this batch; the serving process decides
            reply = ("failed", f"{type(error).__name__}: {error}")
        conn.send(reply)


# --- the serving process's side ---------------------------------------------------------------------


def _ended(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            pass
    return f"exited with status {returncode}"


class _Worker:
    def __init__(self, lifeline_fd: int, idle: bool = True):
        ours, theirs = socket.socketpair()
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "serving.heavy_pool", str(theirs.fileno()), str(lifeline_fd),
                 "idle" if idle else "nice"],
                pass_fds=(theirs.fileno(), lifeline_fd),
                stdin=subprocess.DEVNULL,
            )
        self.conn = Connection(ours.detach())
        self.busy = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 2.0) -> None:
        self.conn.close()  # end-of-file: an idle worker returns from recv and exits
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class ScoringPool:
    """`size` worker processes; `scores` runs a job on a free one, waiting for one if all are busy."""

    def __init__(
        self, size: int, checkout_timeout: float = CHECKOUT_TIMEOUT_S, purpose: str = "heavy-request", idle: bool = True
    ):
        if size < 1:
            raise ValueError("a scoring pool needs at least one worker")
        self.size = size
        self.purpose = purpose  # for log lines and errors: "heavy-request", "shadow"
        self.idle = idle  # workers under SCHED_IDLE; False: nice LOWEST_NICE
        self.checkout_timeout = checkout_timeout
        # Only this process holds the write end (os.pipe fds are not inherited): when
        # this process ends, however it ends, every worker reads end-of-file and exits.
        self._lifeline_read, self._lifeline_write = os.pipe()
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._workers: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False
        self.jobs_scored = 0  # answered with scores by a worker (tests and logs)
        for _ in range(size):
            self._idle.put(self._spawn())

    def _spawn(self) -> _Worker:
        worker = _Worker(self._lifeline_read, self.idle)
        with self._lock:
            self._workers.add(worker)
        log.info("%s scoring worker started (pid %d)", self.purpose, worker.pid)
        return worker

    @property
    def pids(self) -> list[int]:
        with self._lock:
            return sorted(w.pid for w in self._workers)

    @property
    def busy_pids(self) -> list[int]:
        with self._lock:
            return sorted(w.pid for w in self._workers if w.busy)

    def _checkout(self) -> _Worker:
        try:
            worker = self._idle.get(timeout=self.checkout_timeout)
        except queue.Empty:
            free_for = f"{self.checkout_timeout:g} s"
            raise WorkerLost(f"no {self.purpose} scoring worker free for {free_for}; retry later") from None
        if worker.process.poll() is not None:  # died while idle: nothing was lost yet, replace it
            ended = _ended(worker.process.returncode)
            log.warning("%s scoring worker %d %s while idle; starting another", self.purpose, worker.pid, ended)
            self._forget(worker)
            worker = self._spawn()
        return worker

    def _forget(self, worker: _Worker) -> None:
        with self._lock:
            self._workers.discard(worker)
        worker.conn.close()

    def scores(self, job: Job) -> np.ndarray:
        """P(spam) per text of `job`, from a worker. Raises WorkerLost, WorkerRefused or WorkerFailed."""
        if self._closed:
            raise WorkerLost("the server is shutting down")
        worker = self._checkout()
        worker.busy = True
        try:
            worker.conn.send(job)
            kind, value = worker.conn.recv()
        except (EOFError, OSError):
            worker.busy = False
            self._lost(worker)
            raise WorkerLost(
                f"the {self.purpose} scoring worker (pid {worker.pid}) {_ended(worker.process.returncode)} "
                "while scoring this request; a new worker is starting: retry"
            ) from None
        worker.busy = False
        self._idle.put(worker)
        if kind == "scores":
            with self._lock:
                self.jobs_scored += 1
            return value
        raise (WorkerRefused if kind == "refused" else WorkerFailed)(value)

    def _lost(self, worker: _Worker) -> None:
        try:
            worker.process.wait(5)
        except subprocess.TimeoutExpired:  # the socket broke but the process lives on: do not keep it
            worker.process.kill()
            worker.process.wait()
        self._forget(worker)
        log.error("%s scoring worker %d %s while scoring", self.purpose, worker.pid, _ended(worker.process.returncode))
        if not self._closed:
            self._idle.put(self._spawn())

    def close(self) -> None:
        """Stop every worker (idle ones at once; a busy one's request is answered WorkerLost)."""
        if self._closed:
            return
        self._closed = True
        os.close(self._lifeline_write)  # every worker, busy or not, exits on this
        with self._lock:
            workers = list(self._workers)
            self._workers.clear()
        for worker in workers:
            worker.stop()
        os.close(self._lifeline_read)


if __name__ == "__main__":
    worker_main(int(sys.argv[1]), int(sys.argv[2]), idle=len(sys.argv) < 4 or sys.argv[3] == "idle")
