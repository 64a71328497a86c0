"""Thin gRPC servicers: read the champion once, delegate to `classify` or `oip`, translate errors to statuses."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from serving import classify, oip, verdicts
from serving.admission import StreamAdmission, client_of
from serving.watcher import ChampionWatcher, LoadedChampion
from serving.classify import Limits, RequestError, VerdictLog
from serving.feedback import FeedbackStore, InvalidReport
from serving.generated.inference import grpc_predict_v2_pb2 as oip_pb
from serving.generated.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from serving.generated.spam.v1 import classifier_pb2 as pb
from serving.generated.spam.v1 import classifier_pb2_grpc as pb_grpc
from serving.prediction_log import PredictionLog
from serving.rollout import CHALLENGER, CHAMPION, Models, Policy
from serving.shadow import ShadowScorer
from serving.verdict_sink import VerdictSink

log = logging.getLogger(__name__)


def challenger_message(models: Models, policy: Policy) -> pb.Challenger | None:
    """The challenger in rollout beside the champion, as this server treats it; None when there is none."""
    challenger = models.challenger
    if challenger is None:
        return None
    stage = challenger.stage
    return pb.Challenger(
        version=stage.version,
        stage=stage.stage,
        canary_share=policy.canary_share(models),
        stage_canary_share=stage.canary_share,
        stage_since=stage.since,
        shadow_share=policy.shadow_share,
        loaded=challenger.model is not None,
        refusal=challenger.refusal or stage.problem,
    )


def rollout_parameters(models: Models, policy: Policy) -> dict[str, str | float]:
    """The challenger for OIP ModelMetadata `parameters` (empty without one)."""
    message = challenger_message(models, policy)
    if message is None:
        return {}
    return {
        "challenger_version": message.version,
        "challenger_stage": message.stage,
        "challenger_canary_share": message.canary_share,
        "challenger_shadow_share": message.shadow_share,
        "challenger_loaded": "true" if message.loaded else "false",
        "challenger_refusal": message.refusal,
    }


def champion_message(champion: LoadedChampion, challenger: pb.Challenger | None = None) -> pb.Champion:
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
        challenger=challenger,
        operating_point=verdicts.operating_point(champion),
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
        policy: Policy = Policy(),
        shadow: ShadowScorer | None = None,
    ):
        self.watcher = watcher
        self.model_name = model_name
        self.limits = limits
        self.batch_delay = batch_delay
        self.closing = threading.Event()
        self.admission = admission
        self.feedback = feedback
        self.policy = policy
        self.shadow = shadow
        # Called back from request handling, so a module of its own: servicers -> classify -> sink, never back.
        self.sink = VerdictSink(predictions, policy, shadow)
        self.served = self.sink.served  # verdicts returned to callers, by role (for /metrics)

    @property
    def predictions(self) -> PredictionLog | None:
        return self.sink.predictions

    @predictions.setter
    def predictions(self, log: PredictionLog | None) -> None:  # the server opens the log once the port is bound
        self.sink.predictions = log

    def verdict_log(self, api: str, started: float, models: Models | None = None, role: str = CHAMPION) -> VerdictLog:
        """What happens to one call's served verdicts (`started`: its perf_counter()), given by the `role` model."""
        return self.sink.log(api, started, models, role)

    def canary(self, models: Models, api: str, started: float) -> classify.Canary | None:
        """Canary routing of a stream's messages to the challenger, when this server routes any now."""
        return self.sink.canary(models, api, started)

    @property
    def open_streams(self) -> int:
        return self.admission.open_streams

    def champion_or_abort(self, context: grpc.ServicerContext) -> LoadedChampion:
        return self.models_or_abort(context).champion

    def models_or_abort(self, context: grpc.ServicerContext) -> Models:
        """The champion and challenger, read once for the request; UNAVAILABLE without a champion."""
        models = self.watcher.models
        if models.champion is None:
            context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"no champion model loaded yet: waiting for {self.model_name}@{self.watcher.alias} "
                "to resolve to a version that loads and passes verification",
            )
        return models

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
        models = self.s.models_or_abort(context)
        _check_deadline(context)
        role = self.s.policy.role_for(models, request.id, request.text)
        log = self.s.verdict_log("Classify", started, models, role)
        try:
            verdict = classify.classify_one(models.model(role), request, self.s.limits, log)
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
                    models = self.s.watcher.models  # once per batch: a swap lands between batches
                    log = self.s.verdict_log("ClassifyStream", started, models)
                    canary = self.s.canary(models, "ClassifyStream", started)
                    yield from classify.responses_for(models.champion, group, self.s.limits, log, canary)
            except classify.StreamIdle as idle:
                context.abort(grpc.StatusCode.UNAVAILABLE, str(idle))
        finally:
            self.s.release_stream_slot(client)

    def GetChampion(self, request, context):
        models = self.s.models_or_abort(context)
        return champion_message(models.champion, challenger_message(models, self.s.policy))

    def WatchChampion(self, request, context) -> Iterator[pb.Champion]:
        client = self.s.stream_slot_or_abort(context)
        swaps: queue.Queue = queue.Queue()
        unsubscribe = self.s.watcher.subscribe(swaps.put)
        context.add_callback(lambda: swaps.put(None))  # cancelled or finished: wake up
        policy = self.s.policy
        try:
            last = self.s.watcher.models
            if last.champion is not None:
                yield champion_message(last.champion, challenger_message(last, policy))
            while context.is_active() and not self.s.closing.is_set():
                try:
                    champion = swaps.get(timeout=0.5)
                except queue.Empty:
                    continue
                if champion is None:
                    break
                models = self.s.watcher.models  # a swap, or the challenger beside it changed
                if models is not last and models.champion is not None:
                    last = models
                    yield champion_message(models.champion, challenger_message(models, policy))
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
        models = self.s.watcher.models
        champion = models.champion
        try:
            oip.check_model(request.name, "", self.s.model_name, champion)
        except RequestError as error:
            _abort(context, error)
        loaded = {m.version for m in (champion, models.scoring_challenger) if m is not None}
        ready = champion is not None and (request.version == "" or request.version in loaded)
        return oip_pb.ModelReadyResponse(ready=ready)

    def ServerMetadata(self, request, context):
        return oip_pb.ServerMetadataResponse(name=oip.SERVER_NAME, version=oip.server_version(), extensions=[])

    def ModelMetadata(self, request, context):
        models = self.s.watcher.models
        try:
            oip.check_model(request.name, request.version, self.s.model_name, models.champion, models.scoring_challenger)
        except RequestError as error:
            _abort(context, error)
        return oip.model_metadata(self.s.model_name, models.champion, rollout_parameters(models, self.s.policy))

    def ModelInfer(self, request, context):
        started = time.perf_counter()
        models = self.s.watcher.models
        challenger = models.scoring_challenger
        try:
            oip.check_model(request.model_name, request.model_version, self.s.model_name, models.champion, challenger)
        except RequestError as error:
            _abort(context, error)
        if models.champion is None:
            self.s.models_or_abort(context)
        _check_deadline(context)
        try:
            texts, raw, outputs = oip.parse(request, self.s.limits)
            # The response has one model_version: the request is routed as one message, by its id (else its
            # first text); a request naming a loaded version gets that one.
            if request.model_version:
                role = CHALLENGER if challenger is not None and request.model_version == challenger.version else CHAMPION
            else:
                role = self.s.policy.role_for(models, request.id, texts[0] if texts else "")
            log = self.s.verdict_log("ModelInfer", started, models, role)
            return oip.respond(request, models.model(role), texts, raw, outputs, self.s.limits, log)
        except RequestError as error:
            _abort(context, error)
