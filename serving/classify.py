"""Plain functions behind spam.v1.Classifier: validate texts, score batches, build results.

The servicers only move messages between gRPC and these functions, and these
call only the champion's `Scorer`. Every function takes the `LoadedChampion`
to use as an argument: the caller reads `watcher.current` once, so one batch
is always scored by one model version.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import numpy as np

from serving.generated.spam.v1 import classifier_pb2 as pb
from serving.wire import InvalidRequest
from spam_assets.settings import POSITIVE_LABEL

if TYPE_CHECKING:
    from serving.watcher import LoadedChampion

log = logging.getLogger(__name__)

THRESHOLD = 0.5
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]
INTERNAL = grpc.StatusCode.INTERNAL.value[0]


class RequestError(Exception):
    """A request that cannot be answered; carries the gRPC status code to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Limits:
    max_text_bytes: int = 64 * 1024
    max_batch: int = 256


def text_problem(text: str, max_bytes: int) -> str | None:
    """Why `text` cannot be classified, or None when it can."""
    if not text or text.isspace():
        return "text is empty"
    # Cheap bounds first: UTF-8 needs 1 to 4 bytes per character.
    if len(text) > max_bytes or (len(text) * 4 > max_bytes and len(text.encode("utf-8")) > max_bytes):
        return f"text is {len(text.encode('utf-8'))} bytes, over the limit of {max_bytes}"
    return None


def label_for(probability: float) -> str:
    return POSITIVE_LABEL if probability >= THRESHOLD else "ham"


def spam_probabilities(champion: LoadedChampion, texts: Sequence[str], max_batch: int) -> np.ndarray:
    """P(spam) per text, one scorer call per `max_batch` texts."""
    scores = champion.scorer.scores
    if len(texts) <= max_batch:
        return scores(texts)
    return np.concatenate([scores(texts[i : i + max_batch]) for i in range(0, len(texts), max_batch)])


def classify_one(champion: LoadedChampion, text: str, limits: Limits) -> pb.Verdict:
    problem = text_problem(text, limits.max_text_bytes)
    if problem:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, problem)
    p = float(champion.scorer.scores([text])[0])
    return pb.Verdict(label=label_for(p), spam_probability=p, model_version=champion.version)


def _score_isolating_failures(champion: LoadedChampion, texts: list[str], limits: Limits) -> list[float | str]:
    """Scores, or for a text the model fails on, the error message (the rest still get scores)."""
    try:
        return spam_probabilities(champion, texts, limits.max_batch).tolist()
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
) -> list[pb.Result]:
    """One Result per message, in order: a verdict, or an error status for a bad message.

    `unreadable[i]`, when given, is why message i could not be read (invalid UTF-8).
    """
    unreadable = unreadable or [None] * len(messages)
    problems = [
        bad or text_problem(m.text, limits.max_text_bytes) for m, bad in zip(messages, unreadable, strict=True)
    ]
    good = [m.text for m, problem in zip(messages, problems, strict=True) if problem is None]
    scores = iter(_score_isolating_failures(champion, good, limits) if good else ())
    version = champion.version
    results = []
    for message, problem in zip(messages, problems, strict=True):
        if problem is None:
            score = next(scores)
            if isinstance(score, str):
                results.append(pb.Result(id=message.id, error=pb.Status(code=INTERNAL, message=score)))
            else:
                verdict = pb.Verdict(label=label_for(score), spam_probability=score, model_version=version)
                results.append(pb.Result(id=message.id, verdict=verdict))
        else:
            results.append(pb.Result(id=message.id, error=pb.Status(code=INVALID_ARGUMENT, message=problem)))
    return results


def readable(request: pb.ClassifyStreamRequest | InvalidRequest) -> tuple[Sequence[pb.Message], list[str | None]]:
    """A stream request's messages and, per message, why it cannot be read (None when it can).

    A request that is not a ClassifyStreamRequest at all reads as one
    unreadable message with an empty id.
    """
    if not isinstance(request, InvalidRequest):
        return request.messages, [None] * len(request.messages)
    if request.request is None:
        return [pb.Message()], [request.describe()]
    messages = request.request.messages
    return messages, [request.describe(f"messages[{i}].") for i in range(len(messages))]


def responses_for(
    champion: LoadedChampion, requests: Sequence[pb.ClassifyStreamRequest | InvalidRequest], limits: Limits
) -> list[pb.ClassifyStreamResponse]:
    """Score every message of several stream requests together; one response per request."""
    parts = [readable(request) for request in requests]
    messages = [m for part, _ in parts for m in part]
    unreadable = [why for _, part in parts for why in part]
    results = results_for(champion, messages, limits, unreadable)
    responses, start = [], 0
    for part, _ in parts:
        end = start + len(part)
        responses.append(pb.ClassifyStreamResponse(results=results[start:end]))
        start = end
    return responses


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
) -> Iterator[list]:
    """Group stream requests that arrive close together, for one model call per group.

    A reader thread moves requests from gRPC into a bounded queue (a full
    queue stops reading, so HTTP/2 flow control slows the client down). The
    caller's thread blocks for the first request, then takes whatever else is
    queued, waiting up to `delay` seconds for more, until the group holds
    `max_messages` messages. Order is preserved. Waiting longer than
    `idle_timeout` seconds for a first request (all earlier ones answered)
    raises StreamIdle, so a silent client does not hold its stream slot.
    """
    pending: queue.Queue = queue.Queue(maxsize=1024)
    done = threading.Event()
    failure: list[BaseException] = []

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
    try:
        while True:
            try:
                first = pending.get(timeout=idle_timeout or None)
            except queue.Empty:
                raise StreamIdle(
                    f"no request on this stream for {idle_timeout:g} s (--stream-idle-timeout); "
                    "the stream is closed to free its slot: open a new one when there is more to send"
                ) from None
            if first is _END:
                break
            group, count = [first], message_count(first)
            deadline = time.monotonic() + delay
            ended = False
            while count < max_messages:
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
                group.append(item)
                count += message_count(item)
            yield group
            if ended or not is_active():
                break
    finally:
        done.set()
    if failure and not isinstance(failure[0], grpc.RpcError):
        raise failure[0]
