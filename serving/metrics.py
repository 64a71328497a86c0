"""Prometheus metrics of one server, served over HTTP at `/metrics` (`--metrics-port`).

Three sources, each measured where it costs least:

- every RPC, by `MetricsInterceptor` (a grpc.ServerInterceptor, outermost, so
  a call the token check refuses is counted too, and so is one gRPC itself
  refuses at `--max-concurrent-rpcs`): handled by status code, handling
  time, for streams each message received and sent, and each stream message
  answered with an error result instead of a verdict;
- every scorer call, by `ObservedScorer`, which wraps the scorer of each
  version as it loads (`Metrics.observing(loader)`): texts per call, verdicts
  by label, version and whether the caller got them (shadow scoring counts
  apart), P(spam). One numpy pass per batch, no per-text loop;
- the server's state, read only when scraped (`_StateCollector`): the model
  serving (an info metric), swaps and refusals, stream slots, the
  prediction log's queue (`Metrics.watch_prediction_log`), and a staged
  rollout (`Metrics.watch_rollout`): the challenger (an info metric),
  verdicts by role, shadow agreement and shadow drops.

Each server has its own CollectorRegistry, so several servers in one process
(tests) keep separate counts. Label children are resolved once per method,
code or version and kept; nothing here allocates per text. Histograms are
`BulkHistogram`s (one lock per observation, or per batch of them) and a
stream's messages are tallied per stream and added every FLUSH_MESSAGES
messages, every FLUSH_SECONDS and at its end: a message then costs a few
local additions instead of several locked updates.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.utils import floatToGoString

from serving.classify import THRESHOLD, message_count
from serving.wire import InvalidRequest

if TYPE_CHECKING:
    from serving.admission import StreamAdmission
    from serving.servicers import Serving
    from serving.watcher import ChampionWatcher, LoadedChampion

log = logging.getLogger(__name__)

PREFIX = "spam_serving"
# Handling time: a one-text unary call takes about 1 ms, a 256-text batch 15-30 ms,
# a maximal request about a second; streams last as long as their client keeps them.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# Texts per request and per scorer call: powers of two up to past --max-batch (256).
COUNT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
# P(spam) is bimodal for a good model: finer at both ends, where most verdicts fall.
PROBABILITY_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0)
# A stream's tallies reach /metrics at least this often (messages, seconds of traffic) and at its end.
FLUSH_MESSAGES = 64
FLUSH_SECONDS = 1.0
# Up to about this many values a Python loop observes them faster than numpy's fixed cost per call (10-20 us).
SMALL_BATCH = 32


def _parsed(request: Any) -> Any:
    """The request message (an InvalidRequest's repaired one), or None when nothing parsed."""
    return request.request if isinstance(request, InvalidRequest) else request


def _infer_texts(request: Any) -> int:
    """Texts a ModelInfer request carries, by its input's declared shape (0 when it has none)."""
    request = _parsed(request)
    if request is None or len(request.inputs) != 1 or not request.inputs[0].shape:
        return 0
    return max(0, request.inputs[0].shape[0])


# Texts per request, for the methods that score texts (full method name -> count).
TEXTS_PER_REQUEST: dict[str, Callable[[Any], int]] = {
    "/spam.v1.Classifier/Classify": lambda request: 1,
    "/spam.v1.Classifier/ClassifyStream": message_count,
    "/inference.GRPCInferenceService/ModelInfer": _infer_texts,
}


def _error_results(response: Any) -> list[int]:
    """The status codes of a ClassifyStream response's error results (messages answered without a verdict).

    About 0.2 µs a message: under 0.5% of what scoring it costs.
    """
    return [result.error.code for result in response.results if result.HasField("error")]


# Per-message errors inside an OK stream, for the methods that answer a message with an error result.
ERRORS_PER_RESPONSE: dict[str, Callable[[Any], list[int]]] = {"/spam.v1.Classifier/ClassifyStream": _error_results}
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def _rpc_type(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming:
        return "bidi_stream" if handler.response_streaming else "client_stream"
    return "server_stream" if handler.response_streaming else "unary"


def _failed_code(context: grpc.ServicerContext) -> grpc.StatusCode:
    """The status of a call whose handler raised: what it aborted with, else UNKNOWN (what gRPC answers)."""
    return context.code() or grpc.StatusCode.UNKNOWN


def _returned_code(context: grpc.ServicerContext) -> grpc.StatusCode:
    """The status of a call whose handler returned: the code it set, else OK, or CANCELLED if the client left.

    A deadline that passed also reads as CANCELLED here: the server's side of the call cannot tell them apart.
    """
    code = context.code()
    if code is not None:
        return code
    return grpc.StatusCode.OK if context.is_active() else grpc.StatusCode.CANCELLED


def _ended_code(context: grpc.ServicerContext) -> grpc.StatusCode:
    """At a call's end (its callbacks run): CANCELLED if the client cancelled it, else OK.

    gRPC keeps this only in the context's private state, so it is read defensively;
    test_a_cancelled_stream_is_counted_cancelled_and_frees_its_slot fails if that changes.
    """
    cancelled = getattr(getattr(context, "_state", None), "client", None) == "cancelled"
    return grpc.StatusCode.CANCELLED if cancelled else grpc.StatusCode.OK


class _MethodMetrics:
    """One method's children of the RPC metrics, resolved once."""

    def __init__(self, metrics: Metrics, full_method: str, handler: grpc.RpcMethodHandler):
        service, _, method = full_method.lstrip("/").rpartition("/")
        self._labels = (service, method, _rpc_type(handler))
        self.cached: tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler] | None = None  # (handler, wrapped)
        self.duration = metrics.rpc_duration.labels(*self._labels)
        self._handled = metrics.rpcs_handled
        self._by_code: dict[grpc.StatusCode, Any] = {}
        self.received = metrics.stream_received.labels(service, method) if handler.request_streaming else None
        self.sent = metrics.stream_sent.labels(service, method) if handler.response_streaming else None
        count = TEXTS_PER_REQUEST.get(full_method)
        self.count_texts = count
        self.texts = metrics.request_texts.labels(method) if count else None
        self.error_results = ERRORS_PER_RESPONSE.get(full_method) if handler.response_streaming else None
        self._message_errors = metrics.message_errors
        self._errors_by_code: dict[int, Any] = {}

    def finish(self, started: float, code: grpc.StatusCode) -> None:
        self.duration.observe(time.perf_counter() - started)
        self._count(code)

    def refused(self) -> None:
        """Count a call gRPC refuses at its concurrent-RPC limit: it answers RESOURCE_EXHAUSTED, no handler runs."""
        self._count(grpc.StatusCode.RESOURCE_EXHAUSTED)

    def _count(self, code: grpc.StatusCode) -> None:
        child = self._by_code.get(code)
        if child is None:  # a race here resolves the same child twice: harmless
            child = self._by_code[code] = self._handled.labels(*self._labels, code.name)
        child.inc()

    def count_error_results(self, codes: list[int]) -> None:
        for code in codes:
            child = self._errors_by_code.get(code)
            if child is None:  # a race here resolves the same child twice: harmless
                name = _CODE_NAMES.get(code, str(code))
                child = self._errors_by_code[code] = self._message_errors.labels(*self._labels[:2], name)
            child.inc()

    def finish_returned(self, started: float, context: grpc.ServicerContext, request_streaming: bool) -> None:
        """Count a call whose handler returned.

        When the client's input ended while the call still looks alive, that was
        either its half-close or its cancel: a cancel ends gRPC's request
        iterator before gRPC has processed the cancel itself, so the handler
        returns as if the input had ended. The call's end tells them apart.
        """
        if request_streaming and context.code() is None and context.is_active():
            if context.add_callback(lambda: self.finish(started, _ended_code(context))):
                return
            self.finish(started, _ended_code(context))  # it ended meanwhile
            return
        self.finish(started, _returned_code(context))

    def requests(self, requests: Iterator) -> Iterator:
        received, count, texts = self.received, self.count_texts, self.texts
        sizes: list[int] = []  # texts per message not yet added; its length is the messages not yet counted
        due = time.monotonic() + FLUSH_SECONDS

        def flush() -> None:
            if sizes:
                received.inc(len(sizes))
                if count is not None:
                    texts.observe_list(sizes)
                sizes.clear()

        try:
            for request in requests:
                sizes.append(count(request) if count is not None else 0)
                if len(sizes) >= FLUSH_MESSAGES or time.monotonic() >= due:
                    flush()
                    due = time.monotonic() + FLUSH_SECONDS
                yield request
        finally:
            flush()

    def responses(
        self, responses: Iterator, context: grpc.ServicerContext, started: float, request_streaming: bool
    ) -> Iterator:
        sent, code, unsent = self.sent, None, 0  # `unsent`: sent, not yet added to `sent`
        error_results = self.error_results
        due = time.monotonic() + FLUSH_SECONDS
        try:
            for response in responses:
                unsent += 1
                if error_results is not None:
                    codes = error_results(response)
                    if codes:
                        self.count_error_results(codes)
                if unsent >= FLUSH_MESSAGES or time.monotonic() >= due:
                    sent.inc(unsent)
                    unsent, due = 0, time.monotonic() + FLUSH_SECONDS
                yield response
        except GeneratorExit:  # gRPC dropped the stream (the client went away): end the handler's generator too
            code = grpc.StatusCode.CANCELLED
            close = getattr(responses, "close", None)
            if close is not None:
                close()
            raise
        except BaseException:
            code = _failed_code(context)
            raise
        finally:
            if unsent:
                sent.inc(unsent)
            if code is not None:
                self.finish(started, code)
            else:
                self.finish_returned(started, context, request_streaming)


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts and times every RPC a service handles; methods no service knows (UNIMPLEMENTED) are not counted,
    so a client cannot add label values at will."""

    def __init__(self, metrics: Metrics):
        self._metrics = metrics
        self._methods: dict[str, _MethodMetrics] = {}
        self._limit: Any = None  # gRPC's server state, for its concurrent-RPC limit (`watch_limit`)

    def watch_limit(self, server: grpc.Server) -> bool:
        """Count the calls `server` refuses at its `maximum_concurrent_rpcs`; False (and a warning) if unseeable.

        gRPC refuses those itself, after the interceptors have run and before
        any handler does, so a wrapped handler never sees them. It decides
        under its server lock, in the very call that runs `intercept_service`,
        from two fields of its private state: read here, defensively.
        test_calls_refused_at_the_concurrent_rpc_limit_are_counted fails if gRPC changes them.
        """
        state = getattr(server, "_state", None)
        if not all(hasattr(state, name) for name in ("active_rpc_count", "maximum_concurrent_rpcs")):
            log.warning("gRPC %s keeps its concurrent-RPC count elsewhere: calls it refuses are not counted", grpc.__version__)
            return False
        self._limit = state
        return True

    def _at_limit(self) -> bool:
        state = self._limit
        if state is None:
            return False
        limit = state.maximum_concurrent_rpcs
        return limit is not None and state.active_rpc_count >= limit

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        m = self._methods.get(method)
        if m is None:
            m = self._methods[method] = _MethodMetrics(self._metrics, method, handler)
        if self._at_limit():  # gRPC will answer RESOURCE_EXHAUSTED without calling the handler returned here
            m.refused()
        cached = m.cached
        if cached is not None and cached[0] is handler:  # a registered method's handler is the same every call
            return cached[1]
        streaming = (handler.request_streaming, handler.response_streaming)
        make, behaviour = _HANDLERS[streaming]
        wrapped = make(
            _observed(getattr(handler, behaviour), m, *streaming),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        m.cached = (handler, wrapped)  # one slot: the token check's refusals, new each call, only replace it
        return wrapped


# (request streaming, response streaming) -> how to make a handler, and which of its attributes is the behaviour.
_HANDLERS = {
    (False, False): (grpc.unary_unary_rpc_method_handler, "unary_unary"),
    (False, True): (grpc.unary_stream_rpc_method_handler, "unary_stream"),
    (True, False): (grpc.stream_unary_rpc_method_handler, "stream_unary"),
    (True, True): (grpc.stream_stream_rpc_method_handler, "stream_stream"),
}


def _observed(behaviour: Callable, m: _MethodMetrics, request_streaming: bool, response_streaming: bool) -> Callable:
    def handle(request, context):
        if request_streaming:
            request = m.requests(request)
        elif m.count_texts is not None:
            m.texts.observe(m.count_texts(request))
        started = time.perf_counter()
        try:
            result = behaviour(request, context)
        except BaseException:
            m.finish(started, _failed_code(context))
            raise
        if response_streaming:
            return m.responses(result, context, started, request_streaming)
        m.finish_returned(started, context, request_streaming)
        return result

    return handle


class BulkHistogram:
    """A histogram that observes one value, a list of a few, or a numpy array, under one lock each time.

    prometheus_client's Histogram observes one value at a time, a Python loop
    over the buckets under two locks: per text of a 256-text batch that costs
    about as much as scoring it. Here a batch is one searchsorted and one
    bincount. Exposed as an ordinary Prometheus histogram.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        labelnames: Sequence[str],
        registry: CollectorRegistry | None = None,
    ):
        self.name, self.documentation = name, documentation
        self._bounds = [float(b) for b in buckets]
        self._edges = np.asarray(self._bounds)
        self._labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], _BulkChild] = {}
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> _BulkChild:
        with self._lock:
            child = self._children.get(values)
            if child is None:
                child = self._children[values] = _BulkChild(self._bounds, self._edges)
            return child

    def collect(self):
        family = HistogramMetricFamily(self.name, self.documentation, labels=self._labelnames)
        with self._lock:
            children = list(self._children.items())
        les = [floatToGoString(b) for b in self._bounds] + ["+Inf"]
        for values, child in children:
            counts, total = child.snapshot()
            family.add_metric(list(values), list(zip(les, np.cumsum(counts).tolist(), strict=True)), total)
        yield family


class _BulkChild:
    def __init__(self, bounds: list[float], edges: np.ndarray):
        self._bounds, self._edges = bounds, edges
        self._counts = [0] * (len(bounds) + 1)  # per bucket, not cumulative; the last is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self._bounds, value)  # the first bucket whose `le` is >= value
        with self._lock:
            self._counts[index] += 1
            self._sum += value

    def observe_list(self, values: list[float]) -> None:
        """Observe a few values (up to about SMALL_BATCH: beyond, observe_array is cheaper)."""
        bounds = self._bounds
        indexes = [bisect.bisect_left(bounds, value) for value in values]
        total = sum(values)
        with self._lock:
            counts = self._counts
            for index in indexes:
                counts[index] += 1
            self._sum += total

    def observe_array(self, values: np.ndarray) -> None:
        """Observe many values: one searchsorted and one bincount."""
        add = np.bincount(np.searchsorted(self._edges, values, side="left"), minlength=len(self._counts))
        nonzero = [(index, int(add[index])) for index in np.flatnonzero(add).tolist()]
        total = float(values.sum())
        with self._lock:
            for index, count in nonzero:
                self._counts[index] += count
            self._sum += total

    def snapshot(self) -> tuple[list[int], float]:
        with self._lock:
            return list(self._counts), self._sum


class _VerdictChildren:
    """The verdict counters and P(spam) histogram of one version, served or shadow."""

    def __init__(self, metrics: Metrics, version: str, served: str):
        self.spam = metrics.verdicts.labels("spam", version, served)
        self.ham = metrics.verdicts.labels("ham", version, served)
        self.probability = metrics.probability.labels(version, served)


class ObservedScorer:
    """A version's scorer, counting what it scores; everything else (`name`, `reason`, ...) is the scorer's own.

    `scores` counts verdicts returned to callers; `shadow_scores` (and `observe(p, served=False)`) those a
    staged rollout scores in shadow, which no caller gets: counted apart, so a spam rate is the callers'.
    """

    def __init__(self, scorer: Any, metrics: Metrics, version: str, threshold: float = THRESHOLD):
        self._scorer = scorer
        self._threshold = threshold  # the version's operating point: spam as the verdicts say spam
        self._score = scorer.scores
        self._batch = metrics.scored_batch
        self._metrics, self._version = metrics, version
        self._served = _VerdictChildren(metrics, version, "true")
        self._shadow: _VerdictChildren | None = None  # at the first shadow batch: no zero series for every version

    def __getattr__(self, name: str) -> Any:
        return getattr(self._scorer, name)

    @property
    def name(self) -> str:
        return self._scorer.name

    @property
    def reason(self) -> str:
        return self._scorer.reason

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        return self.observe(self._score(texts))

    def shadow_scores(self, texts: Sequence[str]) -> np.ndarray:
        return self.observe(self._score(texts), served=False)

    def _shadow_children(self) -> _VerdictChildren:
        self._shadow = _VerdictChildren(self._metrics, self._version, "false")  # a race resolves the same children
        return self._shadow

    def observe(self, p: np.ndarray, served: bool = True) -> np.ndarray:
        """Count one scored batch (also what a scoring worker scored for this version: `HeavyLane`, shadow)."""
        n, threshold = len(p), self._threshold
        if n == 0:
            return p
        children = self._served if served else self._shadow or self._shadow_children()
        if served:  # what batching scored together for callers; shadow takes are batched their own way
            self._batch.observe(n)
        if n == 1:  # a unary call
            value = float(p[0])
            children.probability.observe(value)
            (children.spam if value >= threshold else children.ham).inc()
            return p
        if n <= SMALL_BATCH:  # a stream's micro-batch: plain Python is cheaper than numpy's fixed cost
            values = p.tolist()
            spam = sum(value >= threshold for value in values)
            children.probability.observe_list(values)
        else:
            spam = int(np.count_nonzero(p >= threshold))
            children.probability.observe_array(p)
        if spam:
            children.spam.inc(spam)
        if n - spam:
            children.ham.inc(n - spam)
        return p


class _StateCollector:
    """What the server is doing right now, read at scrape time: no cost between scrapes."""

    def __init__(self):
        self.watcher: ChampionWatcher | None = None
        self.admission: StreamAdmission | None = None
        self.prediction_log: tuple[Callable[[], int], Callable[[], int]] | None = None
        self.rollout: Serving | None = None

    def collect(self):
        if self.watcher is not None:
            yield from self._champion(self.watcher)
        if self.rollout is not None:
            yield from self._rollout(self.rollout)
        if self.admission is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_stream_slots_in_use",
                "Open ClassifyStream and WatchChampion streams, all clients together",
                value=self.admission.open_streams,
            )
            yield GaugeMetricFamily(
                f"{PREFIX}_stream_slots", "Stream slots of this server (--max-streams)", value=self.admission.max_streams
            )
        if self.prediction_log is not None:
            yield from self._prediction_log(*self.prediction_log)

    @staticmethod
    def _champion(watcher: ChampionWatcher):
        champion = watcher.current
        info = InfoMetricFamily(
            f"{PREFIX}_model",
            "The model serving: registered name, version, scorer, and the version the alias names "
            "(different when a last good model serves)",
        )
        loaded = GaugeMetricFamily(
            f"{PREFIX}_model_loaded_timestamp_seconds", "When the serving version was loaded (Unix time)"
        )
        if champion is not None:
            info.add_metric(
                [],
                {
                    "model_name": champion.card.name,
                    "version": champion.version,
                    "scorer": champion.scorer.name,
                    "alias_version": champion.resolution.alias_version or champion.version,
                },
            )
            loaded.add_metric([], champion.loaded_at.timestamp())
        yield info
        yield loaded
        yield CounterMetricFamily(
            f"{PREFIX}_model_swaps", "Versions swapped in, the first load of this server included", value=watcher.swaps
        )
        yield CounterMetricFamily(
            f"{PREFIX}_model_refusals", "Failed attempts to load and verify a version", value=watcher.refusals
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_model_refused_versions",
            "Versions refused and not to be tried again before their backoff ends",
            value=len(watcher.refused),
        )

    @staticmethod
    def _rollout(serving: Serving):
        models, policy, shadow = serving.watcher.models, serving.policy, serving.shadow
        info = InfoMetricFamily(
            f"{PREFIX}_challenger",
            "The challenger in a staged rollout beside the champion: version, stage, the canary share this server "
            "routes to it, the shadow share, and state (loaded, or refused by this server's checks)",
        )
        challenger = models.challenger
        if challenger is not None:
            info.add_metric(
                [],
                {
                    "version": challenger.version,
                    "stage": challenger.stage.stage,
                    "canary_share": floatToGoString(policy.canary_share(models)),
                    "shadow_share": floatToGoString(policy.shadow_share),
                    "state": "loaded" if challenger.model is not None else "refused",
                },
            )
        yield info
        roles = CounterMetricFamily(
            f"{PREFIX}_role_verdicts",
            "Verdicts by the role of the model that gave them (champion, challenger); served: returned to the "
            "caller (true) or scored in shadow (false)",
            labels=("role", "served"),
        )
        for role, count in serving.served.items():
            roles.add_metric([role, "true"], count)
        if shadow is not None:
            for role, count in shadow.scored.items():
                roles.add_metric([role, "false"], count)
        yield roles
        if shadow is None:
            return
        agreement = CounterMetricFamily(
            f"{PREFIX}_shadow_verdicts",
            "Shadow verdicts, by whether their label agrees with the served verdict's",
            labels=("agreement",),
        )
        for key, count in shadow.agreement.items():
            agreement.add_metric([key], count)
        yield agreement
        dropped = CounterMetricFamily(
            f"{PREFIX}_shadow_dropped",
            "Messages not scored in shadow: queue_full (the shadow queue was full), heavy (a request over "
            "64 KiB of text), failed (the model failed on the batch)",
            labels=("reason",),
        )
        for reason, count in shadow.dropped.items():
            dropped.add_metric([reason], count)
        yield dropped
        yield GaugeMetricFamily(f"{PREFIX}_shadow_queue_depth", "Messages waiting for shadow scoring", value=shadow.depth())

    @staticmethod
    def _prediction_log(depth: Callable[[], int], dropped: Callable[[], int]):
        # A broken callback must not break the scrape: leave its metric out and say why in the log.
        for make, name, documentation, read in (
            (GaugeMetricFamily, "prediction_log_queue_depth", "Prediction-log records waiting to be written", depth),
            (CounterMetricFamily, "prediction_log_dropped", "Prediction-log records dropped (queue full)", dropped),
        ):
            try:
                value = read()
            except Exception:  # noqa: BLE001
                log.exception("reading %s_%s for /metrics failed", PREFIX, name)
                continue
            yield make(f"{PREFIX}_{name}", documentation, value=value)


class Metrics:
    """Every metric of one server, in its own registry; `interceptor` and `observing` attach it to the server."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        rpc = ("grpc_service", "grpc_method", "grpc_type")
        self.rpcs_handled = Counter(
            f"{PREFIX}_rpcs_handled", "RPCs finished, by gRPC status code", (*rpc, "grpc_code"), registry=r
        )
        self.rpc_duration = BulkHistogram(
            f"{PREFIX}_rpc_duration_seconds",
            "Time in the RPC's handler, from the request (or stream) received to the response (or stream's end)",
            LATENCY_BUCKETS,
            rpc,
            registry=r,
        )
        stream = ("grpc_service", "grpc_method")
        self.stream_received = Counter(
            f"{PREFIX}_stream_messages_received", "Messages received on request streams", stream, registry=r
        )
        self.stream_sent = Counter(f"{PREFIX}_stream_messages_sent", "Messages sent on response streams", stream, registry=r)
        self.request_texts = BulkHistogram(
            f"{PREFIX}_request_texts", "Texts per request (a stream: per stream message)", COUNT_BUCKETS, ("grpc_method",), r
        )
        self.scored_batch = BulkHistogram(
            f"{PREFIX}_scored_batch_texts", "Texts per scorer call (what was scored together)", COUNT_BUCKETS, (), r
        ).labels()
        self.verdicts = Counter(
            f"{PREFIX}_verdicts",
            "Texts scored, by label; served: returned to the caller (true) or scored in shadow (false)",
            ("label", "model_version", "served"),
            registry=r,
        )
        self.probability = BulkHistogram(
            f"{PREFIX}_spam_probability",
            "P(spam) of every text scored; served as for spam_serving_verdicts_total",
            PROBABILITY_BUCKETS,
            ("model_version", "served"),
            r,
        )
        self.message_errors = Counter(
            f"{PREFIX}_stream_message_errors",
            "Stream messages answered with an error result instead of a verdict (the stream itself goes on), "
            "by the result's status code",
            ("grpc_service", "grpc_method", "grpc_code"),
            registry=r,
        )
        self._state = _StateCollector()
        r.register(self._state)
        # The process itself (CPU, memory, open files, GC): what the global registry would have had.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.interceptor = MetricsInterceptor(self)
        self._http: tuple[Any, threading.Thread] | None = None

    def observing(self, loader: Callable[..., LoadedChampion]) -> Callable[..., LoadedChampion]:
        """A champion loader (`ChampionWatcher.loader`) whose versions count what they score."""

        def load(*args, **kwargs) -> LoadedChampion:
            champion = loader(*args, **kwargs)
            scorer = ObservedScorer(champion.verified.scorer, self, champion.version, champion.card.tiers.threshold)
            return replace(champion, verified=replace(champion.verified, scorer=scorer))

        return load

    def watch_server(self, watcher: ChampionWatcher, admission: StreamAdmission) -> None:
        """Report the serving model, swaps, refusals and stream slots at every scrape."""
        self._state.watcher, self._state.admission = watcher, admission

    def watch_rollout(self, serving: Serving) -> None:
        """Report the challenger, verdicts by role and shadow scoring at every scrape."""
        self._state.rollout = serving

    def watch_limit(self, server: grpc.Server) -> None:
        """Count the calls `server` refuses at its --max-concurrent-rpcs (see MetricsInterceptor.watch_limit)."""
        self.interceptor.watch_limit(server)

    def watch_prediction_log(self, depth: Callable[[], int], dropped: Callable[[], int]) -> None:
        """Report the prediction log's queue depth and its count of dropped records at every scrape."""
        self._state.prediction_log = (depth, dropped)

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics on host:port (0: a free port) in a daemon thread; the port bound."""
        try:
            server, thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as error:
            raise OSError(error.errno, f"cannot serve metrics on {host}:{port} (--metrics-port): {error.strerror}") from error
        self._http = (server, thread)
        return server.server_port

    def stop(self) -> None:
        if self._http is not None:
            server, thread = self._http
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            self._http = None
