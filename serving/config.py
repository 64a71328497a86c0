"""Every serving option in one dataclass, from command-line flags and environment variables.

Precedence: flag, then environment variable, then default. Secrets (the
bearer token) can come from the environment only, so they never have to
appear on a command line or in `ps` output.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields
from pathlib import Path

from spam_assets.settings import CHAMPION_ALIAS, MAX_FALLBACKS, MODEL_NAME

ENV_PREFIX = "SPAM_SERVING_"
TOKEN_ENV = "SPAM_SERVING_TOKEN"

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True)
class ServingConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    # MLflow tracking/registry URI; None means spam_assets.settings.tracking_uri()
    # ($MLFLOW_TRACKING_URI, else the embedded SQLite store under $SPAM_HOME).
    tracking_uri: str | None = None
    model_name: str = MODEL_NAME
    alias: str = CHAMPION_ALIAS
    # Seconds between checks of the alias; a new version is loaded in the background.
    poll_interval: float = 5.0
    # A version that failed to load or verify is not tried again for this long
    # (doubling on each further failure, capped at an hour).
    refuse_backoff: float = 300.0
    # A server with no champion yet that cannot load the alias's version tries
    # this many earlier champions (previous-champion first, then newest first)
    # and serves the first that passes; 0 serves nothing instead.
    max_fallbacks: int = MAX_FALLBACKS
    # Longest accepted text, in UTF-8 bytes.
    max_text_bytes: int = 64 * KIB
    # Largest request, serialized (texts, ids, framing), that is scored: bounds
    # the work one request (a Classify call, a ClassifyStream request, a
    # ModelInfer call) can ask for. A larger one is answered INVALID_ARGUMENT
    # (on a stream: an error result per message, and the stream goes on).
    max_request_bytes: int = 1 * MIB
    # Largest gRPC message accepted or sent; gRPC itself refuses a larger one
    # with RESOURCE_EXHAUSTED (and ends a stream). Room above the budget, so
    # a request just over it gets the budget's clearer answer.
    max_message_bytes: int = 2 * MIB
    # Texts per model call; larger requests are scored in chunks of this size.
    max_batch: int = 256
    # How long a stream waits for more queued messages before scoring a batch
    # (seconds). 0 scores whatever has arrived at once.
    batch_delay: float = 0.001
    # Thread-pool size; every open stream holds one thread (plus a reader
    # thread for ClassifyStream) for its whole life. Idle threads cost little.
    workers: int = 64
    # RPCs beyond this are refused with RESOURCE_EXHAUSTED instead of queueing.
    max_concurrent_rpcs: int = 128
    # Open streams (ClassifyStream and WatchChampion) for all clients together;
    # at most workers - 2, so unary calls and health checks always find a
    # thread. None: three quarters of the workers (48 of 64), leaving the rest
    # for unary calls and probes.
    max_streams: int | None = None
    # Open streams per client (peer IP address), so one client cannot take
    # every slot; 0 for no per-client limit (e.g. behind a proxy).
    max_streams_per_client: int = 8
    # A ClassifyStream that sends no request for this long, with every earlier
    # one answered, is closed with UNAVAILABLE to free its slot (seconds; 0: never).
    stream_idle_timeout: float = 30.0
    # Processes that score heavy requests (over 64 KiB of text), so they do not
    # hold this process's GIL while light calls wait (serving.heavy_pool);
    # 0 scores them in process, taking turns.
    heavy_workers: int = 1
    # Seconds in-flight calls get to finish on SIGTERM.
    grace: float = 10.0
    # The prediction log and feedback (serving/prediction_log.py, serving/feedback.py):
    # a folder, "off", or None for predictions/ under the platform home.
    prediction_log: str | None = None
    # Whether the log (and feedback by text) keeps each message's text; its sha256 is always kept.
    log_text: bool = True
    # Published log segments last written longer ago than this are deleted; 0 keeps them.
    log_retention_days: float = 30.0
    # The segment being written is published when it reaches this size or this age.
    log_segment_bytes: int = 64 * MIB
    log_segment_seconds: float = 300.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Prometheus metrics over HTTP at /metrics: None (unset) serves none, 0 picks a free port.
    metrics_port: int | None = None
    # Address of the metrics endpoint; None: the same as `host`.
    metrics_host: str | None = None
    # Staged rollout (serving/rollout.py): the share of messages the model that did not answer (the
    # challenger in shadow; the champion for messages the challenger answers in canary) also scores,
    # off the caller's path; 0 turns shadow scoring off.
    shadow_share: float = 1.0
    # Whether this server routes the canary share of messages to a challenger in stage canary;
    # off: it only shadows (an operator refusing canary on a replica).
    canary: bool = True
    # Messages waiting for shadow scoring beyond this are dropped (counted), never waited for.
    shadow_queue: int = 10_000
    # Shadow scoring in a worker process at the lowest CPU priority (serving/shadow.py), so it only
    # uses spare CPU; off: in a thread of the server, competing with requests for its GIL and core.
    shadow_worker: bool = True
    token: str | None = None

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both a certificate and a key (--tls-cert and --tls-key)")
        if self.max_fallbacks < 0:
            raise ValueError("max_fallbacks must be 0 or more")
        if self.max_text_bytes < 1 or self.max_batch < 1 or self.workers < 2:
            raise ValueError("max_text_bytes and max_batch must be positive and workers at least 2")
        if not 1 <= self.stream_slots <= self.workers - 2:
            raise ValueError(f"max_streams must be between 1 and workers - 2 ({self.workers - 2})")
        if self.max_concurrent_rpcs <= self.stream_slots:
            raise ValueError("max_concurrent_rpcs must exceed max_streams, or streams leave no room for unary calls")
        if self.max_streams_per_client < 0 or self.stream_idle_timeout < 0:
            raise ValueError("max_streams_per_client and stream_idle_timeout must not be negative (0 turns them off)")
        if self.heavy_workers < 0:
            raise ValueError("heavy_workers must be 0 (score heavy requests in process) or more")
        if self.max_request_bytes < self.max_text_bytes + 1024:
            raise ValueError("max_request_bytes must leave room for at least one text of max_text_bytes")
        if self.max_message_bytes < self.max_request_bytes:
            raise ValueError("max_message_bytes must be at least max_request_bytes")
        if self.log_retention_days < 0 or self.log_segment_bytes < 1 or self.log_segment_seconds <= 0:
            raise ValueError("log_retention_days must not be negative, log_segment_bytes and _seconds must be positive")
        if not 0.0 <= self.shadow_share <= 1.0:  # NaN too
            raise ValueError(f"shadow_share must be between 0 and 1, not {self.shadow_share}")
        if self.shadow_queue < 1:
            raise ValueError("shadow_queue must be at least 1 message")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port must be between 0 and 65535 (0 picks a free port), not {self.metrics_port}")

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"

    @property
    def stream_slots(self) -> int:
        """max_streams, or its default for this many workers."""
        if self.max_streams is not None:
            return self.max_streams
        return max(1, self.workers - max(2, self.workers // 4))

    @property
    def metrics_address(self) -> str:
        """Where /metrics listens (host only; the port is `metrics_port`)."""
        return self.metrics_host or self.host

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def prediction_log_dir(self) -> Path | None:
        """Where the prediction log goes, or None when it is off."""
        if self.prediction_log is not None and self.prediction_log.strip().lower() == "off":
            return None
        if self.prediction_log:
            return Path(self.prediction_log).expanduser()
        from spam_assets.settings import paths

        return paths().predictions

    def resolved_tracking_uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        from spam_assets.settings import tracking_uri

        return tracking_uri()

    def describe(self) -> dict:
        """The configuration for logs, with the token masked."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["token"] = "***" if self.token else None
        values["max_streams"] = self.stream_slots
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in values.items()}


def on_off(text: str) -> bool:
    """on/off (also true/false, yes/no, 1/0), for switches given as flags or environment variables."""
    value = text.strip().lower()
    if value in ("on", "true", "yes", "1"):
        return True
    if value in ("off", "false", "no", "0"):
        return False
    raise ValueError(f"expected on or off, got {text!r}")


# flag name -> (field, type, help)
_OPTIONS = {
    "host": (str, "address to listen on; 0.0.0.0 or :: for every interface"),
    "port": (int, "port to listen on; 0 picks a free one"),
    "tracking_uri": (str, "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the store under $SPAM_HOME)"),
    "model_name": (str, "registered model to serve"),
    "alias": (str, "registry alias to follow"),
    "poll_interval": (float, "seconds between registry checks"),
    "refuse_backoff": (float, "seconds before a refused version is tried again"),
    "max_fallbacks": (int, "earlier champions tried at start-up when the alias's version is refused; 0 for none"),
    "max_text_bytes": (int, "longest accepted text in UTF-8 bytes"),
    "max_request_bytes": (int, "largest request scored, in serialized bytes; larger is INVALID_ARGUMENT"),
    "max_message_bytes": (int, "largest gRPC message received or sent"),
    "max_batch": (int, "texts per model call"),
    "batch_delay": (float, "seconds a stream waits to fill a batch"),
    "workers": (int, "server threads"),
    "max_concurrent_rpcs": (int, "concurrent RPCs before RESOURCE_EXHAUSTED"),
    "max_streams": (int, "open streams for all clients together, at most workers - 2 (default: 3/4 of workers)"),
    "max_streams_per_client": (int, "open streams per client IP address; 0 for no limit"),
    "stream_idle_timeout": (float, "seconds a ClassifyStream may send nothing before it is closed; 0 for never"),
    "heavy_workers": (int, "processes scoring requests over 64 KiB of text; 0 scores them in process"),
    "grace": (float, "seconds in-flight calls get on shutdown"),
    "prediction_log": (str, "folder of the prediction log and feedback, or off (default: predictions/ under $SPAM_HOME)"),
    "log_text": (on_off, "on: the prediction log keeps each message's text; off: only its sha256"),
    "log_retention_days": (float, "days a published log segment is kept; 0 keeps them"),
    "log_segment_bytes": (int, "a log segment is published at this size"),
    "log_segment_seconds": (float, "a log segment is published at this age"),
    "tls_cert": (Path, "PEM certificate chain; enables TLS with --tls-key"),
    "tls_key": (Path, "PEM private key"),
    "metrics_port": (int, "serve Prometheus metrics over HTTP at /metrics on this port; 0 picks a free one; unset: no metrics"),
    "metrics_host": (str, "address of the metrics endpoint (default: the same as --host)"),
    "shadow_share": (float, "share of messages the model that did not answer also scores (staged rollout); 0: no shadow"),
    "canary": (on_off, "on: route a canary challenger's share of messages to it; off: shadow only"),
    "shadow_queue": (int, "messages waiting for shadow scoring before new ones are dropped (counted)"),
    "shadow_worker": (on_off, "on: shadow scoring in a lowest-priority worker process; off: in a server thread"),
}


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spam-serve",
        description="Serve the champion spam classifier over gRPC (spam.v1.Classifier and the "
        "Open Inference Protocol), with health checking and reflection.",
        epilog=f"Every option can also be set with an environment variable {ENV_PREFIX}<OPTION> "
        f"(e.g. {env_name('port')}). The bearer token is read from {TOKEN_ENV} only.",
    )
    for name, (kind, help_text) in _OPTIONS.items():
        default = ServingConfig.__dataclass_fields__[name].default
        p.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=kind,
            default=None,
            help=f"{help_text} [env {env_name(name)}; default {default}]",
        )
    p.add_argument(
        "--log-level",
        default=os.environ.get(ENV_PREFIX + "LOG_LEVEL", "INFO"),
        help=f"DEBUG, INFO, WARNING or ERROR [env {ENV_PREFIX}LOG_LEVEL; default INFO]",
    )
    return p


def from_args(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> tuple[ServingConfig, str]:
    """The config from flags over env vars over defaults, and the log level."""
    environ = os.environ if environ is None else environ
    args = parser().parse_args(argv)
    values = {}
    for name, (kind, _) in _OPTIONS.items():
        value = getattr(args, name)
        if value is None and environ.get(env_name(name)):
            value = kind(environ[env_name(name)])
        if value is not None:
            values[name] = value
    token = environ.get(TOKEN_ENV) or None
    return ServingConfig(**values, token=token), args.log_level
