"""Thin gRPC servicers: read the champion once, delegate to `classify` or `oip`, translate errors to statuses."""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Iterator

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from serving import classify, oip
from serving.admission import StreamAdmission, client_of
from serving.watcher import ChampionWatcher, LoadedChampion
from serving.classify import Limits, RequestError, VerdictLog
from serving.feedback import FeedbackStore, InvalidReport
from serving.generated.inference import grpc_predict_v2_pb2 as oip_pb
from serving.generated.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from serving.generated.spam.v1 import classifier_pb2 as pb
from serving.generated.spam.v1 import classifier_pb2_grpc as pb_grpc
from serving.prediction_log import PredictionLog

log = logging.getLogger(__name__)


def champion_message(champion: LoadedChampion) -> pb.Champion:
    card = champion.card
    loaded_at = Timestamp()
    loaded_at.FromDatetime(champion.loaded_at)
    return pb.Champion(
        model_name=card.name,
        version=card.version,
        run_id=card.run_id,
        dagster_run_id=card.dagster_run_id,
        corpus_data_version=card.corpus_data_version,
        metrics=card.metrics,
        loaded_at=loaded_at,
        candidate=card.candidate,
        model_sha256=champion.model_sha256,
        scorer=pb.Scorer(name=champion.scorer.name, reason=champion.scorer.reason),
        alias=champion.resolution.alias,
        alias_version=champion.resolution.alias_version,
        fallback_reason=champion.resolution.reason,
    )


class Serving:
    """What both servicers share: the champion, the limits, and the shutdown signal."""

    def __init__(
        self,
        watcher: ChampionWatcher,
        model_name: str,
        limits: Limits,
        batch_delay: float,
        admission: StreamAdmission,
        predictions: PredictionLog | None = None,
        feedback: FeedbackStore | None = None,
    ):
        self.watcher = watcher
        self.model_name = model_name
        self.limits = limits
        self.batch_delay = batch_delay
        self.closing = threading.Event()
        self.admission = admission
        self.predictions = predictions
        self.feedback = feedback

    def verdict_log(self, api: str, started: float) -> VerdictLog | None:
        """Records one call's verdicts in the prediction log (None when it is off); `started` is its perf_counter()."""
        if self.predictions is None:
            return None
        return functools.partial(self.predictions.record, api, started)

    @property
    def open_streams(self) -> int:
        return self.admission.open_streams

    def champion_or_abort(self, context: grpc.ServicerContext) -> LoadedChampion:
        champion = self.watcher.current
        if champion is None:
            context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"no champion model loaded yet: waiting for {self.model_name}@{self.watcher.alias} "
                "to resolve to a version that loads and passes verification",
            )
        return champion

    def stream_slot_or_abort(self, context: grpc.ServicerContext) -> str:
        """Take a stream slot for the calling client (returned, for `release_stream_slot`) or refuse the call."""
        client = client_of(context.peer())
        refusal = self.admission.admit(client)
        if refusal is not None:
            context.set_trailing_metadata(refusal.trailers)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal.message)
        return client

    def release_stream_slot(self, client: str) -> None:
        self.admission.release(client)


def _abort(context: grpc.ServicerContext, error: RequestError):
    context.abort(error.code, error.message)


def _check_deadline(context: grpc.ServicerContext) -> None:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before the request was scored")


class ClassifierServicer(pb_grpc.ClassifierServicer):
    def __init__(self, serving: Serving):
        self.s = serving

    def Classify(self, request, context):
        started = time.perf_counter()
        champion = self.s.champion_or_abort(context)
        _check_deadline(context)
        try:
            verdict = classify.classify_one(champion, request, self.s.limits, self.s.verdict_log("Classify", started))
        except RequestError as error:
            _abort(context, error)
        return pb.ClassifyResponse(id=request.id, verdict=verdict)

    def ClassifyStream(self, request_iterator, context) -> Iterator[pb.ClassifyStreamResponse]:
        self.s.champion_or_abort(context)
        client = self.s.stream_slot_or_abort(context)
        try:
            groups = classify.micro_batches(
                request_iterator,
                self.s.limits.max_batch,
                self.s.batch_delay,
                context.is_active,
                idle_timeout=self.s.admission.idle_timeout,
                max_bytes=self.s.limits.max_request_bytes,
            )
            try:
                for group in groups:
                    started = time.perf_counter()
                    champion = self.s.watcher.current  # once per batch: a swap lands between batches
                    log = self.s.verdict_log("ClassifyStream", started)
                    yield from classify.responses_for(champion, group, self.s.limits, log)
            except classify.StreamIdle as idle:
                context.abort(grpc.StatusCode.UNAVAILABLE, str(idle))
        finally:
            self.s.release_stream_slot(client)

    def GetChampion(self, request, context):
        return champion_message(self.s.champion_or_abort(context))

    def WatchChampion(self, request, context) -> Iterator[pb.Champion]:
        client = self.s.stream_slot_or_abort(context)
        swaps: queue.Queue = queue.Queue()
        unsubscribe = self.s.watcher.subscribe(swaps.put)
        context.add_callback(lambda: swaps.put(None))  # cancelled or finished: wake up
        try:
            last = self.s.watcher.current
            if last is not None:
                yield champion_message(last)
            while context.is_active() and not self.s.closing.is_set():
                try:
                    champion = swaps.get(timeout=0.5)
                except queue.Empty:
                    continue
                if champion is None:
                    break
                if champion is not last:
                    last = champion
                    yield champion_message(champion)
        finally:
            unsubscribe()
            self.s.release_stream_slot(client)


    def Report(self, request, context):
        if self.s.feedback is None:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this server keeps no feedback: it runs with the prediction log off (--prediction-log off)",
            )
        try:
            r = request
            stored = self.s.feedback.report(r.verdict_id, r.text, r.label, r.reporter, r.reason)
        except InvalidReport as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except OSError as error:  # a full or read-only disk: not stored, the client may retry elsewhere or later
            log.exception("could not store a report")
            context.abort(grpc.StatusCode.UNAVAILABLE, f"could not store the report: {error.strerror or error}")
        return pb.ReportResponse(report_id=stored.report_id, created=stored.created)


class InferenceServicer(oip_grpc.GRPCInferenceServiceServicer):
    """Open Inference Protocol: the same champion, under the registered model's name."""

    def __init__(self, serving: Serving):
        self.s = serving

    def ServerLive(self, request, context):
        return oip_pb.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):
        return oip_pb.ServerReadyResponse(ready=self.s.watcher.current is not None)

    def ModelReady(self, request, context):
        champion = self.s.watcher.current
        try:
            oip.check_model(request.name, "", self.s.model_name, champion)
        except RequestError as error:
            _abort(context, error)
        ready = champion is not None and request.version in ("", champion.version)
        return oip_pb.ModelReadyResponse(ready=ready)

    def ServerMetadata(self, request, context):
        return oip_pb.ServerMetadataResponse(name=oip.SERVER_NAME, version=oip.server_version(), extensions=[])

    def ModelMetadata(self, request, context):
        champion = self.s.watcher.current
        try:
            oip.check_model(request.name, request.version, self.s.model_name, champion)
        except RequestError as error:
            _abort(context, error)
        return oip.model_metadata(self.s.model_name, champion)

    def ModelInfer(self, request, context):
        started = time.perf_counter()
        champion = self.s.watcher.current
        try:
            oip.check_model(request.model_name, request.model_version, self.s.model_name, champion)
        except RequestError as error:
            _abort(context, error)
        champion = self.s.champion_or_abort(context) if champion is None else champion
        _check_deadline(context)
        try:
            return oip.infer(request, champion, self.s.limits, self.s.verdict_log("ModelInfer", started))
        except RequestError as error:
            _abort(context, error)
