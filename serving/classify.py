"""Plain functions behind spam.v1.Classifier: validate texts, score batches, build results.

The servicers only move messages between gRPC and these functions, and these
call only the champion's `Scorer`. Every function takes the `LoadedChampion`
to use as an argument: the caller reads `watcher.current` once, so one batch
is always scored by one model version.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc
import numpy as np

from serving.generated.spam.v1 import classifier_pb2 as pb
from serving import verdicts
from serving.heavy_pool import Job, ScoringPool, WorkerFailed, WorkerLost, WorkerRefused, score_in_chunks
from spam_assets.traffic.verdict_ids import new_verdict_id
from serving.wire import InvalidRequest
from spam_assets.settings import POSITIVE_LABEL

if TYPE_CHECKING:
    from serving.watcher import LoadedChampion

# Records one scoring call's verdicts in the prediction log:
# (champion, client ids, texts, P(spam), labels, verdict ids). Servicers make one per call.
VerdictLog = Callable[
    ["LoadedChampion", Sequence[str], Sequence[str], Sequence[float], Sequence[str], Sequence[str]], object
]

log = logging.getLogger(__name__)

THRESHOLD = 0.5  # the label threshold of a version without an operating point (serving.verdicts)
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]
INTERNAL = grpc.StatusCode.INTERNAL.value[0]


class RequestError(Exception):
    """A request that cannot be answered; carries the gRPC status code to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class HeavyLane:
    """Scoring calls over `min_bytes` of text go to the scoring workers (`pool`), or with none take turns in process.

    Why: scoring holds the GIL, so a heavy call in this process slows every
    light call beside it; in a worker process it does not (`serving.heavy_pool`).
    Without workers, heavy calls take turns, `concurrency` at a time, so a
    light call queues behind one heavy call's switch intervals, not many.
    Lighter calls never wait for either.
    """

    def __init__(self, min_bytes: int = 64 * 1024, concurrency: int = 1, pool: ScoringPool | None = None):
        self.min_bytes = min_bytes
        self.pool = pool
        self._turns = threading.BoundedSemaphore(concurrency)

    def is_heavy(self, texts: Sequence[str]) -> bool:
        # Characters, not bytes: a lower bound that costs nothing to compute.
        return sum(map(len, texts)) >= self.min_bytes

    @contextlib.contextmanager
    def turn(self, texts: Sequence[str]):
        if not self.is_heavy(texts):
            yield
            return
        with self._turns:
            yield

    def scores(self, champion: LoadedChampion, texts: Sequence[str], max_batch: int) -> np.ndarray:
        """P(spam) per text: heavy calls in a worker when there are workers, else in process.

        A worker that dies while scoring is RequestError(UNAVAILABLE); the
        model failing in a worker raises as it would in process.
        """
        if self.pool is not None and champion.model_dir is not None and self.is_heavy(texts):
            job = Job(
                champion.version, str(champion.model_dir), champion.model_sha256, champion.scorer.name,
                champion.probes, list(texts), max_batch,
            )  # fmt: skip
            try:
                p = self.pool.scores(job)
                observe = getattr(champion.scorer, "observe", None)  # serving.metrics counts what workers score too
                return observe(p) if observe is not None else p
            except WorkerLost as lost:
                raise RequestError(grpc.StatusCode.UNAVAILABLE, str(lost)) from None
            except WorkerFailed as failed:
                raise RuntimeError(f"model failed in the scoring worker: {failed}") from None
            except WorkerRefused as refused:  # its files changed since this process verified them: answer anyway
                log.error("scoring worker refused %s; scoring in process: %s", champion.version, refused)
        with self.turn(texts):
            return score_in_chunks(champion.scorer.scores, texts, max_batch)


@dataclass(frozen=True)
class Limits:
    max_text_bytes: int = 64 * 1024
    max_batch: int = 256
    # Serialized size of one request (texts, ids, framing): bounds the work one request can ask for.
    max_request_bytes: int = 1024 * 1024
    heavy: HeavyLane = field(default_factory=HeavyLane, compare=False)


def request_bytes(request) -> int:
    """The serialized size of a request (a message, or an InvalidRequest's repaired message)."""
    if isinstance(request, InvalidRequest):
        return request.request.ByteSize() if request.request is not None else 0
    return request.ByteSize()


def budget_problem(request, limits: Limits) -> str | None:
    """Why a request is too big to score, or None.

    INVALID_ARGUMENT, not RESOURCE_EXHAUSTED: sending it again would not help
    (RESOURCE_EXHAUSTED is what clients here retry).
    """
    size = request_bytes(request)
    if size <= limits.max_request_bytes:
        return None
    return (
        f"request is {size} bytes, over the per-request budget of {limits.max_request_bytes} bytes "
        "(--max-request-bytes); send fewer or shorter messages per request"
    )


def text_problem(text: str, max_bytes: int) -> str | None:
    """Why `text` cannot be classified, or None when it can."""
    if not text or text.isspace():
        return "text is empty"
    # Cheap bounds first: UTF-8 needs 1 to 4 bytes per character.
    if len(text) > max_bytes or (len(text) * 4 > max_bytes and len(text.encode("utf-8")) > max_bytes):
        return f"text is {len(text.encode('utf-8'))} bytes, over the limit of {max_bytes}"
    return None


def label_for(probability: float, champion: LoadedChampion | None = None) -> str:
    """The label by `champion`'s operating threshold (0.5 without a champion or an operating point)."""
    if champion is not None:
        return champion.card.tiers.label(probability)
    return POSITIVE_LABEL if probability >= THRESHOLD else "ham"


def spam_probabilities(
    champion: LoadedChampion, texts: Sequence[str], max_batch: int, heavy: HeavyLane | None = None
) -> np.ndarray:
    """P(spam) per text, one scorer call per chunk (`heavy_pool.score_in_chunks`); heavy calls as `heavy` says."""
    if heavy is not None:
        return heavy.scores(champion, texts, max_batch)
    return score_in_chunks(champion.scorer.scores, texts, max_batch)


def classify_one(
    champion: LoadedChampion, request: pb.ClassifyRequest, limits: Limits, log: VerdictLog | None = None
) -> pb.Verdict:
    text = request.text
    problem = budget_problem(request, limits) or text_problem(text, limits.max_text_bytes)
    if problem:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, problem)
    p = float(champion.scorer.scores([text])[0])
    verdict = verdicts.verdict(champion, p, new_verdict_id(), text if request.explain else None)
    if log is not None:
        log(champion, (request.id,), (text,), (p,), (verdict.label,), (verdict.verdict_id,))
    return verdict


def _score_isolating_failures(
    champion: LoadedChampion, texts: list[str], limits: Limits
) -> list[float | str] | RequestError:
    """Scores, or for a text the model fails on, the error message (the rest still get scores).

    A RequestError (the scoring worker died) stands for every text: none was scored.
    """
    try:
        return spam_probabilities(champion, texts, limits.max_batch, limits.heavy).tolist()
    except RequestError as error:
        return error
    except Exception:  # noqa: BLE001 - find the text that broke the batch, answer the others
        log.exception("model failed on a batch of %d texts; scoring one by one", len(texts))
    scores: list[float | str] = []
    for text in texts:
        try:
            scores.append(float(champion.scorer.scores([text])[0]))
        except Exception as error:  # noqa: BLE001
            scores.append(f"model failed on this message: {type(error).__name__}")
    return scores


def results_for(
    champion: LoadedChampion,
    messages: Sequence[pb.Message],
    limits: Limits,
    unreadable: Sequence[str | None] | None = None,
    log: VerdictLog | None = None,
    explain: Sequence[bool] | None = None,
) -> list[pb.Result]:
    """One Result per message, in order: a verdict, or an error status for a bad message.

    `unreadable[i]`, when given, is why message i could not be read (invalid UTF-8);
    `explain[i]` whether message i's verdict carries its explanation.
    The verdicts (not the errors) go to `log` when given.
    """
    unreadable = unreadable or [None] * len(messages)
    explain = explain or [False] * len(messages)
    problems = [
        bad or text_problem(m.text, limits.max_text_bytes) for m, bad in zip(messages, unreadable, strict=True)
    ]
    good = [m.text for m, problem in zip(messages, problems, strict=True) if problem is None]
    scored = _score_isolating_failures(champion, good, limits) if good else []
    lost = scored if isinstance(scored, RequestError) else None
    scored_texts = zip(good, scored if lost is None else ())  # (text, score) of each message without a problem
    results = []
    # The verdicts to log, column by column: appending to five lists allocates nothing the garbage collector
    # tracks, where a tuple per verdict made the collector run (and promote every live message) every batch.
    ids: list[str] = []
    texts: list[str] = []
    probabilities: list[float] = []
    labels: list[str] = []
    verdict_ids: list[str] = []
    for message, problem, explained in zip(messages, problems, explain, strict=True):
        if problem is None and lost is not None:
            status = pb.Status(code=lost.code.value[0], message=lost.message)
            results.append(pb.Result(id=message.id, error=status))
        elif problem is None:
            text, score = next(scored_texts)
            if isinstance(score, str):
                results.append(pb.Result(id=message.id, error=pb.Status(code=INTERNAL, message=score)))
            else:
                verdict = verdicts.verdict(champion, score, new_verdict_id(), text if explained else None)
                client_id, label, verdict_id = message.id, verdict.label, verdict.verdict_id
                results.append(pb.Result(id=client_id, verdict=verdict))
                if log is not None:
                    ids.append(client_id)
                    texts.append(text)
                    probabilities.append(score)
                    labels.append(label)
                    verdict_ids.append(verdict_id)
        else:
            results.append(pb.Result(id=message.id, error=pb.Status(code=INVALID_ARGUMENT, message=problem)))
    if log is not None and verdict_ids:
        log(champion, ids, texts, probabilities, labels, verdict_ids)
    return results


def readable(request: pb.ClassifyStreamRequest | InvalidRequest, limits: Limits) -> tuple[Sequence[pb.Message], list[str | None]]:
    """A stream request's messages and, per message, why it cannot be read or scored (None when it can).

    A request that is not a ClassifyStreamRequest at all reads as one
    unreadable message with an empty id; every message of a request over
    the byte budget gets the budget's error.
    """
    over_budget = budget_problem(request, limits)
    if not isinstance(request, InvalidRequest):
        return request.messages, [over_budget] * len(request.messages)
    if request.request is None:
        return [pb.Message()], [request.describe()]
    messages = request.request.messages
    return messages, [over_budget or request.describe(f"messages[{i}].") for i in range(len(messages))]


# Canary routing of a stream's messages (serving.rollout): the other model, its verdict log, and which
# messages it answers (a list of bools, one per message; None: none of them).
Canary = tuple["LoadedChampion", "VerdictLog | None", Callable[[Sequence[pb.Message]], "list[bool] | None"]]


def responses_for(
    champion: LoadedChampion,
    requests: Sequence[pb.ClassifyStreamRequest | InvalidRequest],
    limits: Limits,
    log: VerdictLog | None = None,
    canary: Canary | None = None,
) -> list[pb.ClassifyStreamResponse]:
    """Score every message of several stream requests together; one response per request.

    With `canary`, the messages it picks are answered by its model (and logged to its log), the rest by
    `champion`: one scorer call per model, results in the order sent.
    """
    parts = [readable(request, limits) for request in requests]
    messages = [m for part, _ in parts for m in part]
    unreadable = [why for _, part in parts for why in part]
    explain = [wants_explanation(request) for request, (part, _) in zip(requests, parts, strict=True) for _ in part]
    picked = canary[2](messages) if canary is not None else None
    if not picked or not any(picked):
        results = results_for(champion, messages, limits, unreadable, log, explain)
    else:
        results = [None] * len(messages)
        for model, model_log, answers in ((champion, log, False), (canary[0], canary[1], True)):
            at = [i for i, chosen in enumerate(picked) if chosen is answers]
            if at:
                some = results_for(
                    model, [messages[i] for i in at], limits, [unreadable[i] for i in at], model_log, [explain[i] for i in at]
                )
                for i, result in zip(at, some, strict=True):
                    results[i] = result
    responses, start = [], 0
    for part, _ in parts:
        end = start + len(part)
        responses.append(pb.ClassifyStreamResponse(results=results[start:end]))
        start = end
    return responses


def wants_explanation(request: pb.ClassifyStreamRequest | InvalidRequest) -> bool:
    if isinstance(request, InvalidRequest):
        return request.request is not None and request.request.explain
    return request.explain


def message_count(request: pb.ClassifyStreamRequest | InvalidRequest) -> int:
    if isinstance(request, InvalidRequest):
        return len(request.request.messages) if request.request is not None else 1
    return len(request.messages)


_END = object()


class StreamIdle(Exception):
    """The client sent nothing for the idle timeout while every request it sent was answered."""


def micro_batches(
    requests: Iterable,
    max_messages: int,
    delay: float,
    is_active: Callable[[], bool] = lambda: True,
    idle_timeout: float | None = None,
    max_bytes: int | None = None,
) -> Iterator[list]:
    """Group stream requests that arrive close together, for one model call per group.

    A reader thread moves requests from gRPC into a bounded queue (a full
    queue stops reading, so HTTP/2 flow control slows the client down). The
    caller's thread blocks for the first request, then takes whatever else is
    queued, waiting up to `delay` seconds for more, while the group stays
    within `max_messages` messages and `max_bytes` serialized bytes (so a
    group costs no more than one maximal request). Order is preserved.
    Waiting longer than `idle_timeout` seconds for a first request (all
    earlier ones answered) raises StreamIdle, so a silent client does not
    hold its stream slot.
    """
    pending: queue.Queue = queue.Queue(maxsize=1024)
    done = threading.Event()
    failure: list[BaseException] = []
    max_bytes = max_bytes or float("inf")

    def read() -> None:
        try:
            for request in requests:
                while not done.is_set():
                    try:
                        pending.put(request, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if done.is_set():
                    return
        except BaseException as error:  # noqa: BLE001 - cancelled or broken stream ends the batches
            failure.append(error)
        finally:
            while not done.is_set():
                try:
                    pending.put(_END, timeout=0.1)
                    break
                except queue.Full:
                    continue

    reader = threading.Thread(target=read, name="stream-reader", daemon=True)
    reader.start()
    held, ended = None, False  # a request that did not fit the last group; the input has ended
    try:
        while True:
            if held is not None:
                first, held = held, None
            elif ended:
                break
            else:
                try:
                    first = pending.get(timeout=idle_timeout or None)
                except queue.Empty:
                    raise StreamIdle(
                        f"no request on this stream for {idle_timeout:g} s (--stream-idle-timeout); "
                        "the stream is closed to free its slot: open a new one when there is more to send"
                    ) from None
                if first is _END:
                    break
            group, count, size = [first], message_count(first), request_bytes(first)
            deadline = time.monotonic() + delay
            while count < max_messages and size < max_bytes:
                try:
                    item = pending.get_nowait()
                except queue.Empty:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        item = pending.get(timeout=remaining)
                    except queue.Empty:
                        break
                if item is _END:
                    ended = True
                    break
                if count + message_count(item) > max_messages or size + request_bytes(item) > max_bytes:
                    held = item
                    break
                group.append(item)
                count += message_count(item)
                size += request_bytes(item)
            yield group
            if not is_active():
                break
    finally:
        done.set()
    if failure and not isinstance(failure[0], grpc.RpcError):
        raise failure[0]
