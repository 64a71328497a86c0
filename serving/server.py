"""Start-up, options and shutdown of the gRPC server; `spam-serve`.

    spam-serve                           # 127.0.0.1:50051, champion from the embedded store
    spam-serve --host 0.0.0.0 --port 50051 --tls-cert cert.pem --tls-key key.pem
    SPAM_SERVING_TOKEN=... spam-serve    # require `authorization: Bearer ...`
    spam-serve --metrics-port 9464       # Prometheus metrics at http://127.0.0.1:9464/metrics

Services: spam.v1.Classifier, inference.GRPCInferenceService (Open Inference
Protocol), grpc.health.v1.Health (NOT_SERVING until a champion is loaded) and
server reflection.

Bounded MLflow HTTP retries by default; override MLFLOW_HTTP_REQUEST_{MAX_RETRIES,BACKOFF_FACTOR,TIMEOUT}.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from serving import wire
from serving.admission import StreamAdmission
from serving.auth import BearerTokenInterceptor
from serving.classify import HeavyLane, Limits
from serving.config import ServingConfig, from_args
from serving.generated.inference import grpc_predict_v2_pb2 as oip_pb
from serving.feedback import FeedbackStore
from serving.generated.spam.v1 import classifier_pb2 as pb
from serving.heavy_pool import ScoringPool
from serving.metrics import Metrics
from serving.prediction_log import PredictionLog
from serving.rollout import Policy
from serving.servicers import ClassifierServicer, InferenceServicer, Serving
from serving.shadow import ShadowScorer
from serving.watcher import ChampionWatcher
from spam_assets.model.registry import Registry
from spam_assets.settings import quiet_telemetry

log = logging.getLogger("serving")

CLASSIFIER_SERVICE = pb.DESCRIPTOR.services_by_name["Classifier"].full_name
INFERENCE_SERVICE = oip_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
# "" is the server as a whole, what Kubernetes probes ask about by default.
HEALTH_SERVICES = ("", CLASSIFIER_SERVICE, INFERENCE_SERVICE)


# Longest wait for the champion watcher's thread on shutdown, in seconds.
WATCHER_JOIN_S = 1.0
# Longest wait for the prediction log's last write on shutdown; what is left is recovered at the next start.
LOG_CLOSE_S = 1.0
# Longest wait for shadow scoring of what is queued on shutdown; the rest gets no shadow verdict.
SHADOW_CLOSE_S = 0.5


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    config: ServingConfig
    watcher: ChampionWatcher
    health: health.HealthServicer
    serving: Serving
    predictions: PredictionLog | None = None
    shadow: ShadowScorer | None = None
    heavy_pool: ScoringPool | None = None
    # The Prometheus endpoint and its port, or None when --metrics-port is not set.
    metrics: Metrics | None = None
    metrics_port: int | None = None

    @property
    def target(self) -> str:
        host = "localhost" if self.config.host in ("0.0.0.0", "::") else self.config.host
        return f"{host}:{self.port}"

    def shutdown(self, grace: float | None = None) -> None:
        """Health to NOT_SERVING, refuse new calls, give in-flight calls `grace` seconds, stop polling, close the log."""
        grace = self.config.grace if grace is None else grace
        log.info("shutting down: health NOT_SERVING, finishing in-flight calls (grace %.1fs)", grace)
        self.health.enter_graceful_shutdown()
        self.serving.closing.set()  # WatchChampion streams end cleanly instead of holding the grace period
        self.server.stop(grace).wait()
        if self.heavy_pool is not None:
            self.heavy_pool.close()
        # The watcher's thread may be inside a registry request to a server that never
        # answers (up to MLFLOW_HTTP_REQUEST_TIMEOUT); it is a daemon thread, so do not
        # wait for it longer than a moment: shutdown stays within grace + WATCHER_JOIN_S + LOG_CLOSE_S.
        self.watcher.stop(timeout=WATCHER_JOIN_S)
        if self.shadow is not None:  # shadow verdicts still queued go to the log if they can in time
            self.shadow.close(timeout=SHADOW_CLOSE_S)
        if self.predictions is not None:  # after the last call: every verdict given is written
            self.predictions.close(timeout=LOG_CLOSE_S)
        if self.serving.feedback is not None:
            self.serving.feedback.close()
        if self.metrics is not None:  # last, so a scrape during the grace period still answers
            self.metrics.stop()
        log.info("stopped")


def open_prediction_log(config: ServingConfig) -> PredictionLog | None:
    """The started prediction log the config asks for, or None when it is off."""
    directory = config.prediction_log_dir()
    if directory is None:
        return None
    return PredictionLog(
        directory,
        log_text=config.log_text,
        segment_bytes=config.log_segment_bytes,
        segment_seconds=config.log_segment_seconds,
        retention_days=config.log_retention_days,
    ).start()


def start(
    config: ServingConfig,
    watcher: ChampionWatcher | None = None,
    predictions: PredictionLog | None = None,
    shadow: ShadowScorer | None = None,
) -> RunningServer:
    """Build and start the server; the champion loads in the background (health says when).

    `predictions`: a started PredictionLog to use instead of the one the config asks for;
    `shadow`: a ShadowScorer (not started) instead of the one the config asks for.
    """
    if watcher is None:
        registry = Registry(config.resolved_tracking_uri(), config.model_name)
        watcher = ChampionWatcher(
            registry,
            alias=config.alias,
            poll_interval=config.poll_interval,
            refuse_backoff=config.refuse_backoff,
            max_fallbacks=config.max_fallbacks,
        )
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        # Linux gRPC sets SO_REUSEPORT by default, so a second server on a busy port would
        # silently share it; fail loudly instead.
        ("grpc.so_reuseport", 0),
    ]
    metrics = Metrics() if config.metrics_port is not None else None
    interceptors = [BearerTokenInterceptor(config.token)] if config.token else []
    if metrics is not None:
        interceptors.insert(0, metrics.interceptor)  # outermost: calls the token check refuses are counted too
        watcher.loader = metrics.observing(watcher.loader)  # every version loaded from now on counts its verdicts
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="grpc-worker"),
        options=options,
        interceptors=interceptors,
        maximum_concurrent_rpcs=config.max_concurrent_rpcs,
    )
    if metrics is not None:
        metrics.watch_limit(server)
    heavy = HeavyLane(concurrency=max(1, config.heavy_workers))
    policy = Policy(shadow_share=config.shadow_share, canary=config.canary)
    if shadow is None:
        shadow = ShadowScorer(
            policy, max_messages=config.shadow_queue, max_batch=config.max_batch, worker_process=config.shadow_worker
        )
    shadow.heavy = heavy
    serving = Serving(
        watcher,
        config.model_name,
        Limits(config.max_text_bytes, config.max_batch, config.max_request_bytes, heavy),
        batch_delay=config.batch_delay,
        admission=StreamAdmission(config.stream_slots, config.max_streams_per_client, config.stream_idle_timeout),
        policy=shadow.policy,
        shadow=shadow,
    )
    # Not the generated add_*_to_server: these parsers answer invalid UTF-8 with INVALID_ARGUMENT.
    wire.add_service(server, ClassifierServicer(serving), pb.DESCRIPTOR.services_by_name["Classifier"])
    wire.add_service(server, InferenceServicer(serving), oip_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"])
    health_servicer = health.HealthServicer(
        experimental_non_blocking=True,
        experimental_thread_pool=futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="health"),
    )
    for service in HEALTH_SERVICES:
        health_servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (CLASSIFIER_SERVICE, INFERENCE_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    metrics_port = None
    if metrics is not None:
        metrics.watch_server(watcher, serving.admission)
        metrics.watch_rollout(serving)
        # Before the gRPC port: a gRPC server that never started keeps its port bound even after stop().
        metrics_port = metrics.serve(config.metrics_address, config.metrics_port)
    try:
        if config.tls:
            credentials = grpc.ssl_server_credentials([(config.tls_key.read_bytes(), config.tls_cert.read_bytes())])
            port = server.add_secure_port(config.address, credentials)
        else:
            port = server.add_insecure_port(config.address)
    except BaseException:
        if metrics is not None:
            metrics.stop()
        raise

    # Opened once the port is bound (a failed start leaves no writer thread behind); an unwritable
    # folder fails the start here, before any call is accepted.
    try:
        serving.predictions = predictions if predictions is not None else open_prediction_log(config)
    except BaseException:
        if metrics is not None:
            metrics.stop()
        raise
    if serving.predictions is not None and metrics is not None:
        log_ = serving.predictions
        metrics.watch_prediction_log(log_.depth, lambda: log_.dropped)
    shadow.predictions = serving.predictions
    if serving.predictions is not None:  # feedback is kept beside the log, and finds verdicts in it
        serving.feedback = FeedbackStore(
            serving.predictions, log_text=config.log_text, max_text_bytes=config.max_text_bytes
        ).start()

    def on_swap(champion) -> None:
        for service in HEALTH_SERVICES:
            health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)

    watcher.subscribe(on_swap)
    if config.heavy_workers:  # after the port is bound: a server that cannot start leaves no workers
        heavy.pool = ScoringPool(config.heavy_workers)
    shadow.start()
    server.start()
    watcher.start()
    if watcher.current is not None:  # a watcher handed in already loaded
        on_swap(watcher.current)
    running = RunningServer(
        server, port, config, watcher, health_servicer, serving,
        predictions=serving.predictions, shadow=shadow, heavy_pool=heavy.pool, metrics=metrics,
        metrics_port=metrics_port,
    )
    log.info(
        "listening on %s:%d (%s%s)%s",
        config.host,
        port,
        "TLS" if config.tls else "plaintext",
        ", bearer token required" if config.token else "",
        f"; metrics at http://{config.metrics_address}:{metrics_port}/metrics" if metrics is not None else "",
    )
    return running


# MLflow's own defaults (7 retries, backoff factor 2, 120 s timeout) let one
# registry request to an unreachable tracking server retry for about 4 minutes
# (sleeps 0+4+8+16+32+64+120 s, plus up to 8 x 120 s of timeouts), stalling the
# champion poll and a SIGTERM shutdown. Bounded instead: with 2 retries and
# factor 1 a refused connection gives up after ~3 s of backoff (0 s, then 2 s
# plus up to 1 s of jitter), a silent host after at most 3 x 10 s + 3 s. 10 s
# still leaves a slow server or a streamed artifact download room between
# bytes, and the watcher polls again every poll_interval anyway, so retrying
# harder inside one poll buys little. The backoff factor must be an integer:
# MLflow parses it with int().
MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def bounded_mlflow_http_defaults(environ=None) -> None:
    """Set MLFLOW_HTTP_DEFAULTS in environ (os.environ) where the user has not set them."""
    environ = os.environ if environ is None else environ
    for name, value in MLFLOW_HTTP_DEFAULTS.items():
        environ.setdefault(name, value)


# How long a thread may hold the GIL while others wait for it (CPython's default is 5 ms).
# A request scoring megabytes of text runs mostly Python code; with the default a
# one-message call waits up to 5 ms each time it needs the GIL, several times per call.
# 1 ms roughly halved the unary p99 while a maximal request was scored (README, Measured).
SWITCH_INTERVAL_S = 0.001


def main(argv: list[str] | None = None) -> int:
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    quiet_telemetry()
    bounded_mlflow_http_defaults()
    try:
        config, log_level = from_args(argv)
    except ValueError as error:
        print(f"spam-serve: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    log.info("config %s", json.dumps(config.describe()))
    if config.host not in ("127.0.0.1", "localhost", "::1") and not (config.tls and config.token):
        log.warning("listening on %s without both TLS and a bearer token", config.host)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        running = start(config)
    except (RuntimeError, OSError) as error:  # the port is taken, a TLS file is missing
        log.error("cannot start: %s", error)
        return 1
    metrics = f", metrics on {config.metrics_address}:{running.metrics_port}" if running.metrics is not None else ""
    print(f"spam-serve listening on {config.host}:{running.port}{metrics}", file=sys.stderr, flush=True)
    while not stop.wait(1.0):
        pass
    running.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
