"""Serving throughput and latency on the real SMS corpus, server and client in separate processes.

    .venv/bin/python benchmarks/serving.py            # ~2-3 minutes on 2 cores

Trains the default candidates on the SMS Spam Collection ($SPAM_SMS_PATH, else
../shared/datasets/SMSSpamCollection), registers the winner in a throw-away
MLflow store, promotes it and starts the real `spam-serve` on it. Then, on
the same messages:

  1. in-process predict_proba, batches of 256        the model's ceiling
  1b. in-process predict_proba, one text per call    ceiling for unary calls
  1c. in-process lean scorer, one text per call      what the server runs for one text (spam_assets.model.lean_scorer)
  1d. in-process lean scorer, batches of 256         what the server runs for texts that arrive together
  2. echo servicer, one message per stream request   gRPC framework ceiling
  2b. echo servicer, unary calls                     gRPC's share of unary latency
  3. ClassifyStream, one message per request         goal >= 0.5 x (2)
  4. ClassifyStream, 256 messages per request        goal >= 0.5 x (1)
  5. unary Classify, sequential                      goal p99 <= 3 ms
  5b. the same, each text with a word never seen before (a reference number: as real traffic has)
  5e. the same as (5), each call asking for an explanation (`explain`): its cost
  4e. the same as (4), every request asking for explanations
  6. ModelInfer (Open Inference Protocol), 256 texts per request, sequential
  7. unary Classify, sequential, while another client keeps the server busy with
     maximal requests (the per-request byte budget of 64 KiB texts of random,
     never-seen words)                               goal: p99 within a few ms of (5)
     The server scores those in its heavy-request worker process (`--heavy-workers`,
     default 1; pass --server-arg=--heavy-workers=0 to score them in process).

With 2+ cores the server process is pinned to CPU 0 and this client to CPU 1
(--no-pin to disable), so neither steals the other's core. In-process
ceilings are measured in this process, on one core, like the server.

    .venv/bin/python benchmarks/serving.py --compare-observability

measures rows (3)-(6) on two servers of the same model, one with everything
`observability_flags()` turns on (Prometheus metrics, scraped every
SCRAPE_INTERVAL_S, and the prediction log with texts) and one without (`--prediction-log off`), alternating rounds between them, and
reports on/off: the goal is at most 5% less throughput and at most 0.2 ms
more unary p50. Each row also reports the server process's CPU seconds on/off
for the same work, which a busy machine disturbs less than wall time. Each
round starts a new pair of servers: two processes of one configuration
differ by a few per cent, as much as the cost measured. `--aa` turns
observability off on both sides: the noise floor.

    .venv/bin/python benchmarks/serving.py --compare-shadow

measures the same rows on two servers of one champion with a challenger in
stage `shadow` beside it (a second registered version of the same model
files, loaded and verified separately): one with `--shadow-share 1` (the
challenger scores every message off the caller's path), one with
`--shadow-share 0`, rounds alternating; the goal is a unary p50 at most 5%
higher with shadow on, and the throughput cost is reported.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name would shadow the
# `serving` package; the package is installed (pip install -e .), so drop the folder.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402

from serving.generated.inference import grpc_predict_v2_pb2 as oip_pb  # noqa: E402
from serving.generated.inference import grpc_predict_v2_pb2_grpc as oip_grpc  # noqa: E402
from serving.generated.spam.v1 import classifier_pb2 as pb  # noqa: E402
from serving.generated.spam.v1 import classifier_pb2_grpc as pb_grpc  # noqa: E402
from spam_assets.model.scorer import PipelineScorer  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SMS = PROJECT_ROOT.parent / "shared" / "datasets" / "SMSSpamCollection"
SERVER_CPU, CLIENT_CPU = 0, 1


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the echo servicer: gRPC's ceiling with our message shapes and no model -------------------------


class EchoClassifier(pb_grpc.ClassifierServicer):
    VERDICT = pb.Verdict(label="ham", spam_probability=0.0, model_version="echo")

    def Classify(self, request, context):
        return pb.ClassifyResponse(id=request.id, verdict=self.VERDICT)

    def ClassifyStream(self, request_iterator, context):
        for request in request_iterator:
            yield pb.ClassifyStreamResponse(results=[pb.Result(id=m.id, verdict=self.VERDICT) for m in request.messages])


def run_echo_server(port: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_ClassifierServicer_to_server(EchoClassifier(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
    print("echo server ready", flush=True)
    server.wait_for_termination()


# --- setup ------------------------------------------------------------------------------------------


def load_sms(path: Path):
    import pandas as pd

    from spam_assets.loaders.sms import read_sms

    records = read_sms(path)
    frame = pd.DataFrame({"text": [r.text for r in records], "label": [r.label for r in records]})
    return frame[frame["text"].str.strip() != ""].reset_index(drop=True)


def train_and_register(frame, root: Path, candidate: str | None = None) -> str:
    """Train the default candidates, log and promote the winner; return the tracking URI."""
    import mlflow
    from sklearn.model_selection import train_test_split

    from spam_assets.challenger import log_challenger
    from spam_assets.model.pipelines import candidate_pipelines
    from spam_assets.modeling import select_and_fit
    from spam_assets.model.registry import Registry, ensure_experiment

    train, holdout = train_test_split(frame, test_size=0.2, stratify=frame["label"], random_state=0)
    started = time.perf_counter()
    candidates = {candidate: candidate_pipelines(0)[candidate]} if candidate else None
    result = select_and_fit(train, holdout, seed=0, n_jobs=2, candidates=candidates, log=log)
    log(f"trained {result.name} in {time.perf_counter() - started:.0f}s: holdout spam F1 {result.holdout_metrics['spam_f1']:.4f}")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    registry = Registry(uri)
    with mlflow.start_run(experiment_id=ensure_experiment(uri, root / "artifacts")):
        version = log_challenger(
            result, registry, corpus_version="sms-benchmark", dagster_run_id="benchmark", params={},
            n_train=len(train), n_holdout=len(holdout),
        )  # fmt: skip
    registry.promote(version.version, "benchmark")
    return uri


def pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def start_process(args: list[str], cpu: int | None, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, **(env or {})},
        preexec_fn=(lambda: pin(cpu)) if cpu is not None else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def start_server(uri: str, port: int, cpu: int | None, extra: list[str]) -> subprocess.Popen:
    """spam-serve as configured by default, except that its prediction log (on by default) goes to a
    temporary folder instead of the platform home, unless `extra` says where (or off)."""
    env = {"SPAM_SERVING_LOG_LEVEL": "WARNING"}
    if not any(arg.startswith("--prediction-log") for arg in extra):
        env["SPAM_SERVING_PREDICTION_LOG"] = scratch_folder("spam-bench-predictions-")
    return start_process(["-m", "serving.server", "--port", str(port), "--tracking-uri", uri, *extra], cpu, env=env)


def scratch_folder(prefix: str) -> str:
    """A temporary folder removed when the benchmark exits."""
    import atexit
    import shutil

    folder = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def stop_process(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_ready(target: str, timeout: float = 120.0) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise TimeoutError(f"server at {target} never became SERVING")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- measurements -----------------------------------------------------------------------------------


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = np.array(samples_s) * 1000
    return {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)), "p99": float(np.percentile(ms, 99))}


def in_process(score, texts: list[str], batch: int, rounds: int) -> dict:
    score(texts[:batch])  # warm up
    latencies, n = [], 0
    started = time.perf_counter()
    for _ in range(rounds):
        for i in range(0, len(texts) - batch + 1, batch):
            t = time.perf_counter()
            score(texts[i : i + batch])
            latencies.append(time.perf_counter() - t)
            n += batch
    return {"msgs_per_s": n / (time.perf_counter() - started), **percentiles(latencies)}


def stream_throughput(target: str, texts: list[str], per_request: int, total: int, explain: bool = False) -> dict:
    requests, n = [], 0
    while n < total:
        batch = [pb.Message(id=str(n + j), text=texts[(n + j) % len(texts)]) for j in range(per_request)]
        requests.append(pb.ClassifyStreamRequest(messages=batch, explain=explain))
        n += per_request
    with grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20)]) as channel:
        stub = pb_grpc.ClassifierStub(channel)
        warm = [pb.ClassifyStreamRequest(messages=[pb.Message(id="w", text=texts[0])])] * 50
        list(stub.ClassifyStream(iter(warm), timeout=60))
        started = time.perf_counter()
        received = errors = 0
        for response in stub.ClassifyStream(iter(requests), timeout=600):
            received += len(response.results)
            errors += sum(1 for r in response.results if r.WhichOneof("outcome") != "verdict")
        elapsed = time.perf_counter() - started
    assert received == n, f"sent {n}, received {received}"
    return {"msgs_per_s": n / elapsed, "errors": errors}


def unary_latency(target: str, texts: list[str], calls: int, unseen_word: bool = False, explain: bool = False) -> dict:
    """Sequential Classify calls; with unseen_word, each text ends in a word no earlier call had; with explain, explained."""
    salt = os.urandom(4).hex()
    requests = [
        pb.ClassifyRequest(
            text=f"{texts[i % len(texts)]} ref{salt}{i}" if unseen_word else texts[i % len(texts)], explain=explain
        )
        for i in range(calls)
    ]
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.ClassifierStub(channel)
        for text in texts[:200]:
            stub.Classify(pb.ClassifyRequest(text=text), timeout=10)
        latencies = []
        started = time.perf_counter()
        for request in requests:
            t = time.perf_counter()
            stub.Classify(request, timeout=10)
            latencies.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - started
    return {"msgs_per_s": calls / elapsed, **percentiles(latencies)}


def random_words_text(rng: np.random.Generator, nbytes: int) -> str:
    """About `nbytes` of random lower-case words of 3-10 letters and digits: every word new to the server."""
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789", dtype=np.uint8)
    chars = letters[rng.integers(0, len(letters), nbytes)]
    gaps = np.cumsum(rng.integers(4, 12, nbytes // 4))
    chars[gaps[gaps < nbytes]] = ord(" ")
    return chars.tobytes().decode().strip()


def maximal_request(rng: np.random.Generator, budget: int, text_bytes: int) -> pb.ClassifyStreamRequest:
    """A ClassifyStream request as big as the server's budget allows, of the longest texts it accepts."""
    request = pb.ClassifyStreamRequest()
    while True:
        message = pb.Message(id=str(len(request.messages)), text=random_words_text(rng, text_bytes))
        if request.ByteSize() + message.ByteSize() + 8 > budget:
            return request
        request.messages.append(message)


def unary_under_heavy_load(target: str, texts: list[str], calls: int, budget: int, text_bytes: int) -> dict:
    """(5) while a second client sends maximal requests back to back, each of words never seen before."""
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    heavy = [maximal_request(rng, budget, text_bytes) for _ in range(8)]
    stop, started_heavy = threading.Event(), threading.Event()
    heavy_times: list[float] = []

    def keep_busy() -> None:
        with grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
            stub = pb_grpc.ClassifierStub(channel)
            i = 0
            while not stop.is_set():
                request = heavy[i % len(heavy)]
                i += 1
                if i > len(heavy):  # fresh words again: the server remembers words it has seen
                    request = heavy[(i - 1) % len(heavy)] = maximal_request(rng, budget, text_bytes)
                started_heavy.set()
                t = time.perf_counter()
                (response,) = stub.ClassifyStream(iter([request]), timeout=120)
                heavy_times.append(time.perf_counter() - t)
                assert all(r.WhichOneof("outcome") == "verdict" for r in response.results), response.results[0]

    worker = threading.Thread(target=keep_busy, daemon=True)
    worker.start()
    started_heavy.wait(60)
    time.sleep(0.2)  # the first maximal request is being scored
    try:
        row = unary_latency(target, texts, calls)
    finally:
        stop.set()
        worker.join(120)
    row["heavy_requests"] = len(heavy_times)
    row["heavy_s"] = statistics.median(heavy_times) if heavy_times else float("nan")
    row["heavy_bytes"] = heavy[0].ByteSize()
    row["heavy_texts"] = len(heavy[0].messages)
    return row


def model_infer(target: str, model_name: str, texts: list[str], batch: int, total: int) -> dict:
    from serving.oip import encode_raw_bytes

    requests = []
    for start in range(0, total, batch):
        chunk = [texts[(start + j) % len(texts)].encode() for j in range(batch)]
        request = oip_pb.ModelInferRequest(model_name=model_name)
        request.inputs.add(name="text", datatype="BYTES", shape=[batch])
        request.raw_input_contents.append(encode_raw_bytes(chunk))
        requests.append(request)
    with grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20)]) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        for request in requests[:5]:
            stub.ModelInfer(request, timeout=30)
        latencies = []
        started = time.perf_counter()
        for request in requests:
            t = time.perf_counter()
            stub.ModelInfer(request, timeout=30)
            latencies.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - started
    return {"msgs_per_s": len(requests) * batch / elapsed, **percentiles(latencies)}


# --- metrics and logs on against off ---------------------------------------------------------------

COMPARED_ROWS = ("3", "4", "5", "6")
# Prometheus scrapes every 15-60 s by default; more often here, so the scrapes' own cost shows.
SCRAPE_INTERVAL_S = 5.0


def observability_flags(metrics_port: int) -> list[str]:
    """spam-serve flags that turn on everything whose cost --compare-observability measures:
    metrics, and the prediction log (with texts) in a temporary folder."""
    return ["--metrics-port", str(metrics_port), "--prediction-log", scratch_folder("spam-bench-predictions-"), "--log-text", "on"]


# The "off" server of --compare-observability: no metrics (the default) and no prediction log.
OBSERVABILITY_OFF = ["--prediction-log", "off"]


def scrape(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


class Scraper:
    """Scrapes /metrics of each server every SCRAPE_INTERVAL_S in a thread, as Prometheus would."""

    def __init__(self, ports: int | list[int]):
        self.ports = [ports] if isinstance(ports, int) else list(ports)
        self.scrapes, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(SCRAPE_INTERVAL_S):
            for port in self.ports:
                scrape(port)
                self.scrapes += 1

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)


def server_cpu_s(process: subprocess.Popen) -> float:
    """CPU seconds the server process has used: steadier than wall time on a busy machine."""
    import psutil

    times = psutil.Process(process.pid).cpu_times()
    return times.user + times.system


def counted_verdicts(port: int) -> float:
    """Verdicts the server's /metrics counted: proof that the "on" server measured what it served."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        s.value
        for family in text_string_to_metric_families(scrape(port))
        for s in family.samples
        if s.name == "spam_serving_verdicts_total"
    )


def paired_ratio(rounds: dict[str, list[dict]], key: str, metric: str) -> tuple[float, float, float]:
    """Median and quartiles of on/off `metric` over rounds, each round's on against the same round's off.

    A round's two servers run seconds apart, so a slow spell of the machine touches both: the ratio
    of each pair varies far less than either side's own throughput from round to round.
    """
    ratios = [on[key][metric] / off[key][metric] for off, on in zip(rounds["off"], rounds["on"], strict=True)]
    q1, median, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios[0],) * 3
    return median, q1, q3


def comparison_table(off: dict[str, dict], on: dict[str, dict], unary_goal=None, rounds=None) -> str:
    """Rows off against on; `unary_goal(off_p50, on_p50)` -> (text, met) replaces row 5's default goal.

    With `rounds` ({"off": [...], "on": [...]}, paired by index), on/off is the median of the rounds'
    own ratios (quartiles beside it), not the ratio of the two medians.
    """
    lines = [
        "| # | measurement | off msgs/s | on msgs/s | on/off | server CPU on/off | off p50 ms | on p50 ms | Δ p50 ms "
        "| off p99 ms | on p99 ms | goal |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key in COMPARED_ROWS:
        if key not in off:
            continue
        a, b = off[key], on[key]
        if rounds is not None:
            ratio, q1, q3 = paired_ratio(rounds, key, "msgs_per_s")
            ratio_text = f"{ratio:.3f} ({q1:.3f}–{q3:.3f})"
            cpu_text = f"{paired_ratio(rounds, key, 'server_cpu_s')[0]:.3f}"
        else:
            ratio = b["msgs_per_s"] / a["msgs_per_s"]
            ratio_text, cpu_text = f"{ratio:.3f}", f"{b['server_cpu_s'] / a['server_cpu_s']:.3f}"
        goals = [f"≥ 0.95: {'met' if ratio >= 0.95 else 'MISSED'}"]
        p50 = p99 = ["", "", ""]
        if "p50" in a:
            delta = b["p50"] - a["p50"]
            p50 = [f"{a['p50']:.2f}", f"{b['p50']:.2f}", f"{delta:+.2f}"]
            p99 = [f"{a['p99']:.2f}", f"{b['p99']:.2f}"]
            if key == "5" and unary_goal is not None:
                text, met = unary_goal(a["p50"], b["p50"])
                goals = [f"{text}: {'met' if met else 'MISSED'}"]
            elif key == "5":
                goals.append(f"Δ p50 ≤ 0.2 ms: {'met' if delta <= 0.2 else 'MISSED'}")
        else:
            p99 = ["", ""]
        lines.append(
            f"| {key} | {NAMES[key]} | {a['msgs_per_s']:,.0f} | {b['msgs_per_s']:,.0f} | {ratio_text} | {cpu_text} | "
            f"{' | '.join(p50)} | {' | '.join(p99)} | {'; '.join(goals)} |"
        )
    return "\n".join(lines)


def compare_observability(args, frame, texts, sizes, server_cpu, client_cpu, pinned) -> int:
    """Rows (3)-(6) against servers with observability off and on, rounds alternating between them.

    Every round starts a new pair of servers: two processes of one configuration differ persistently
    by a few per cent in CPU per message (memory layout, hash seeds), as much as the cost measured
    here, so one process a side would measure its luck. `--aa` runs the "on" side with observability
    off too: the noise floor of the comparison.
    """
    only = set(COMPARED_ROWS) if args.rows is None else set(args.rows.split(",")) & set(COMPARED_ROWS)
    load_before = os.getloadavg()
    scrapes = verdicts = 0.0
    with tempfile.TemporaryDirectory(prefix="spam-bench-") as tmp:
        uri = train_and_register(frame, Path(tmp), args.candidate)
        from serving.watcher import load_version
        from spam_assets.model.registry import Registry

        registry = Registry(uri)
        champion = load_version(registry, registry.champion())
        rounds: dict[str, list] = {"off": [], "on": []}
        pin(client_cpu)  # the servers, started by this process, are pinned to their own CPU
        for i in range(args.rounds):
            metrics_port = free_port()
            flags = {"off": OBSERVABILITY_OFF, "on": OBSERVABILITY_OFF if args.aa else observability_flags(metrics_port)}
            ports = {which: free_port() for which in flags}
            servers = {which: start_server(uri, ports[which], server_cpu, [*args.server_arg, *flags[which]]) for which in flags}
            try:
                for port in ports.values():
                    wait_ready(f"127.0.0.1:{port}")
                with Scraper([] if args.aa else [metrics_port]) as scraper:
                    for which in ("off", "on") if i % 2 == 0 else ("on", "off"):  # neither always goes first
                        row = {}
                        for key in sorted(only):  # one row at a time, to charge each its server CPU
                            cpu = server_cpu_s(servers[which])
                            target = f"127.0.0.1:{ports[which]}"
                            row[key] = measure_round(champion, texts, None, target, registry.model_name, sizes, {key})[key]
                            row[key]["server_cpu_s"] = server_cpu_s(servers[which]) - cpu
                        rounds[which].append(row)
                scrapes += scraper.scrapes
                if not args.aa:
                    verdicts += counted_verdicts(metrics_port)
            finally:
                for server in servers.values():
                    stop_process(server)
            summary = "; ".join(
                f"({k}) {rounds['on'][-1][k]['msgs_per_s'] / rounds['off'][-1][k]['msgs_per_s']:.3f}" for k in sorted(only)
            )
            log(f"round {i + 1}: on/off {summary}")
    off, on = median_rows(rounds["off"]), median_rows(rounds["on"])
    load_after = os.getloadavg()
    on_text = (
        "the same as off (--aa: an A/A run)"
        if args.aa
        else f"{' '.join(f for f in observability_flags(0) if f.startswith('--'))} "
        f"(scraped {scrapes:.0f} times, every {SCRAPE_INTERVAL_S:g} s; it counted {verdicts:,.0f} verdicts)"
    )
    print()
    print(
        f"model: {champion.card.candidate} (version {champion.version}); {len(texts)} SMS messages; "
        f"{'servers on CPU 0, client on CPU 1' if pinned else 'not pinned'} of {os.cpu_count()}; "
        f"median of {args.rounds} rounds, alternating, a new pair of servers each round; on = {on_text}; "
        f"per-message errors: {sum(r['errors'] for r in (*off.values(), *on.values()))}; "
        f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after"
    )
    print(comparison_table(off, on, rounds=rounds))
    print("on/off: the median of the rounds' own ratios (each round's on against its off), quartiles in brackets")
    return 0


def add_shadow_challenger(uri: str) -> str:
    """A second version of the champion's model files as challenger in stage `shadow`; its version."""
    from datetime import UTC, datetime

    from spam_assets.model.registry import Registry
    from spam_assets.model.tags import TAG_ROLLOUT_SINCE, TAG_ROLLOUT_STAGE

    registry = Registry(uri)
    champion = registry.champion()
    tags = {**champion.tags, TAG_ROLLOUT_STAGE: "shadow", TAG_ROLLOUT_SINCE: datetime.now(UTC).isoformat()}
    version = registry.client.create_model_version(registry.model_name, champion.source, champion.run_id, tags=tags)
    registry.set_challenger(version.version)
    return str(version.version)


def wait_challenger_loaded(target: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.ClassifierStub(channel)
        while time.monotonic() < deadline:
            try:
                if stub.GetChampion(pb.GetChampionRequest(), timeout=2).challenger.loaded:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise TimeoutError(f"server at {target} never loaded the challenger")


# Shadow on against off: the caller's unary p50 with shadow at 100% at most this much higher.
SHADOW_P50_GOAL = 1.05
# Longest wait after a row for the shadow queue to be worked off before counting what was scored and dropped.
SHADOW_SETTLE_S = 5.0


def compare_shadow(args, frame, texts, sizes, server_cpu, client_cpu, pinned) -> int:
    """Rows (3)-(6) against two servers with a challenger in shadow: --shadow-share 0 and 1, alternating."""
    only = set(COMPARED_ROWS) if args.rows is None else set(args.rows.split(",")) & set(COMPARED_ROWS)
    load_before = os.getloadavg()
    metrics_port = free_port()
    with tempfile.TemporaryDirectory(prefix="spam-bench-") as tmp:
        uri = train_and_register(frame, Path(tmp), args.candidate)
        challenger = add_shadow_challenger(uri)
        from serving.watcher import load_version
        from spam_assets.model.registry import Registry

        registry = Registry(uri)
        champion = load_version(registry, registry.champion())
        ports = {"off": free_port(), "on": free_port()}
        flags = {"off": ["--shadow-share", "0"], "on": ["--shadow-share", "1", "--metrics-port", str(metrics_port)]}
        servers = {k: start_server(uri, ports[k], server_cpu, [*args.server_arg, *flags[k]]) for k in ports}
        targets = {k: f"127.0.0.1:{port}" for k, port in ports.items()}
        rounds: dict[str, list] = {"off": [], "on": []}
        shadowed = {key: {"scored": 0.0, "dropped": 0.0} for key in only}
        try:
            for target in targets.values():
                wait_ready(target)
                wait_challenger_loaded(target)
            pin(client_cpu)
            for i in range(args.rounds):
                order = ("off", "on") if i % 2 == 0 else ("on", "off")
                for which in order:
                    row = {}
                    for key in sorted(only):
                        cpu = server_cpu_s(servers[which])
                        before = shadow_counts(metrics_port) if which == "on" else None
                        row[key] = measure_round(champion, texts, None, targets[which], registry.model_name, sizes, {key})[key]
                        row[key]["server_cpu_s"] = server_cpu_s(servers[which]) - cpu
                        if before is not None:  # what the shadow worker managed while this row ran (and just after)
                            settle = time.monotonic() + SHADOW_SETTLE_S
                            while shadow_counts(metrics_port)["queued"] and time.monotonic() < settle:
                                time.sleep(0.1)
                            after = shadow_counts(metrics_port)
                            for count in ("scored", "dropped"):
                                shadowed[key][count] += after[count] - before[count]
                    rounds[which].append(row)
                summary = "; ".join(
                    f"({k}) {rounds['on'][-1][k]['msgs_per_s'] / rounds['off'][-1][k]['msgs_per_s']:.3f}" for k in sorted(only)
                )
                log(f"round {i + 1}: shadow on/off {summary}")
            shadow = shadow_counts(metrics_port)
        finally:
            for server in servers.values():
                stop_process(server)
    off, on = median_rows(rounds["off"]), median_rows(rounds["on"])
    load_after = os.getloadavg()
    print()
    print(
        f"model: {champion.card.candidate} (champion version {champion.version}, challenger {challenger} in shadow: "
        f"the same files, loaded separately); {len(texts)} SMS messages; "
        f"{'servers on CPU 0, client on CPU 1' if pinned else 'not pinned'} of {os.cpu_count()}; "
        f"median of {args.rounds} rounds, alternating; on = --shadow-share 1, off = --shadow-share 0; "
        f"the on server scored {shadow['scored']:,.0f} messages in shadow and dropped {shadow['dropped']:,.0f}; "
        f"per-message errors: {sum(r['errors'] for r in (*off.values(), *on.values()))}; "
        f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after"
    )

    def unary_goal(off_p50: float, on_p50: float) -> tuple[str, bool]:
        ratio = on_p50 / off_p50
        return f"p50 on/off {ratio:.3f} ≤ {SHADOW_P50_GOAL}", ratio <= SHADOW_P50_GOAL

    print(comparison_table(off, on, unary_goal, rounds=rounds))
    print()
    for key in sorted(shadowed):
        counts = shadowed[key]
        total = counts["scored"] + counts["dropped"]
        share = counts["scored"] / total if total else float("nan")
        print(f"({key}) {NAMES[key]}: shadow scored {share:.1%} of the messages it could ({counts['scored']:,.0f} scored, "
              f"{counts['dropped']:,.0f} dropped with the queue full)")
    return 0


def shadow_counts(port: int) -> dict[str, float]:
    """Messages the server scored in shadow and dropped, from its /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    samples = [s for family in text_string_to_metric_families(scrape(port)) for s in family.samples]
    return {
        "scored": sum(s.value for s in samples if s.name == "spam_serving_shadow_verdicts_total"),
        "dropped": sum(s.value for s in samples if s.name == "spam_serving_shadow_dropped_total"),
        "queued": sum(s.value for s in samples if s.name == "spam_serving_shadow_queue_depth"),
    }


def table(rows: list[dict]) -> str:
    header = "| # | measurement | msgs/s | min-max over rounds | ceiling | ratio | p50 ms | p90 ms | p99 ms | goal |"
    lines = [header, "|---|---|---:|---:|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lat = [f"{r[k]:.2f}" if k in r else "" for k in ("p50", "p90", "p99")]
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else ""
        lines.append(
            f"| {r['id']} | {r['name']} | {r['msgs_per_s']:,.0f} | {r['spread'][0]:,.0f}-{r['spread'][1]:,.0f} | "
            f"{r.get('ceiling', '')} | {ratio} | "
            f"{' | '.join(lat)} | {r.get('goal', '')} |"
        )
    return "\n".join(lines)


def measure_round(champion, texts, echo_target, target, model_name, sizes, only=None) -> dict[str, dict]:
    """One pass over every measurement (or those in `only`), ceilings next to what they bound."""
    pipeline = PipelineScorer(champion.verified.model, champion.verified.spam_column, reason="benchmark").scores
    lean = champion.scorer.scores if champion.scorer.name == "lean" else None
    unary = sizes["unary"]
    measurements = {
        "1": lambda: in_process(pipeline, texts, 256, sizes["ceiling_passes"]),
        "1b": lambda: in_process(pipeline, texts[: sizes["single_texts"]], 1, 1),
        "1c": lambda: in_process(lean, texts[: sizes["single_texts"]], 1, 1),
        "1d": lambda: in_process(lean, texts, 256, sizes["ceiling_passes"]),
        "2": lambda: stream_throughput(echo_target, texts, 1, sizes["stream"]),
        "3": lambda: stream_throughput(target, texts, 1, sizes["stream"]),
        "4": lambda: stream_throughput(target, texts, 256, sizes["batch"]),
        "4e": lambda: stream_throughput(target, texts, 256, sizes["batch"] // 4, explain=True),
        "2b": lambda: unary_latency(echo_target, texts, unary),
        "5": lambda: unary_latency(target, texts, unary),
        "5b": lambda: unary_latency(target, texts, unary, unseen_word=True),
        "5e": lambda: unary_latency(target, texts, unary, explain=True),
        "6": lambda: model_infer(target, model_name, texts, 256, sizes["batch"] // 2),
        "7": lambda: unary_under_heavy_load(target, texts, unary, sizes["request_bytes"], sizes["text_bytes"]),
    }
    return {
        key: measure()
        for key, measure in measurements.items()
        if (only is None or key in only) and (lean is not None or key not in ("1c", "1d"))
    }


NAMES = {
    "1": "in-process predict_proba, batch 256",
    "1b": "in-process predict_proba, 1 text/call",
    "1c": "in-process lean scorer (what serves), 1 text/call",
    "1d": "in-process lean scorer (what serves), batch 256",
    "2": "echo servicer, 1 msg/request",
    "2b": "echo servicer, unary, sequential",
    "3": "ClassifyStream, 1 msg/request",
    "4": "ClassifyStream, 256 msgs/request",
    "4e": "ClassifyStream, 256 msgs/request, explain on",
    "5": "unary Classify, sequential",
    "5b": "unary Classify, each text with an unseen word",
    "5e": "unary Classify, sequential, explain on",
    "6": "ModelInfer, 256 texts/request",
    "7": "unary Classify while a maximal request is scored",
}
CEILINGS = {
    "1": "1", "1b": "1b", "1c": "1b", "1d": "1", "2": "2", "2b": "2b", "3": "2", "4": "1", "4e": "4", "5": "1b", "5b": "1b",
    "5e": "5", "6": "1", "7": "5",
}  # fmt: skip


def median_rows(rounds: list[dict[str, dict]]) -> dict[str, dict]:
    merged = {}
    for key in rounds[0]:
        merged[key] = {
            metric: statistics.median(r[key][metric] for r in rounds) for metric in rounds[0][key] if metric != "errors"
        }
        merged[key]["errors"] = sum(r[key].get("errors", 0) for r in rounds)
        merged[key]["spread"] = (
            min(r[key]["msgs_per_s"] for r in rounds),
            max(r[key]["msgs_per_s"] for r in rounds),
        )
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sms", type=Path, default=Path(os.environ.get("SPAM_SMS_PATH", DEFAULT_SMS)))
    parser.add_argument(
        "--candidate", default=None, help="train only this candidate (default: model selection over all, as in production)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="repeat every measurement; medians are reported")
    parser.add_argument("--stream-messages", type=int, default=10_000, help="messages per round for (2) and (3)")
    parser.add_argument("--batch-messages", type=int, default=25_600, help="messages per round for (4); half for (6)")
    parser.add_argument("--unary-calls", type=int, default=1_000, help="calls per round for (5)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and client to separate cores")
    parser.add_argument("--server-arg", action="append", default=[], help="extra spam-serve flag (repeatable)")
    parser.add_argument("--rows", default=None, help="measure only these rows, e.g. 5,7 (default: all)")
    parser.add_argument(
        "--compare-observability",
        action="store_true",
        help="measure rows 3-6 with metrics (and every other observability switch) on and off, and report the ratio",
    )
    parser.add_argument(
        "--compare-shadow",
        action="store_true",
        help="measure rows 3-6 with a challenger in shadow, --shadow-share 1 against 0, and report the ratio",
    )
    parser.add_argument("--aa", action="store_true", help="--compare-observability: both sides off (an A/A run)")
    parser.add_argument("--echo-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    only = None if args.rows is None else set(args.rows.split(","))
    if args.echo_server:
        run_echo_server(args.echo_server)
        return 0

    pinned = not args.no_pin and len(os.sched_getaffinity(0)) >= 2
    server_cpu, client_cpu = (SERVER_CPU, CLIENT_CPU) if pinned else (None, None)
    frame = load_sms(args.sms)
    texts = frame["text"].tolist()
    log(f"{len(texts)} SMS messages from {args.sms}")
    from serving.config import ServingConfig

    sizes = {
        "request_bytes": ServingConfig().max_request_bytes,
        "text_bytes": ServingConfig().max_text_bytes,
        "ceiling_passes": 2,
        "single_texts": 500,
        "stream": args.stream_messages,
        "batch": args.batch_messages,
        "unary": args.unary_calls,
    }
    if args.compare_observability:
        return compare_observability(args, frame, texts, sizes, server_cpu, client_cpu, pinned)
    if args.compare_shadow:
        return compare_shadow(args, frame, texts, sizes, server_cpu, client_cpu, pinned)
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="spam-bench-") as tmp:
        uri = train_and_register(frame, Path(tmp), args.candidate)
        from serving.watcher import load_version
        from spam_assets.model.registry import Registry

        registry = Registry(uri)
        champion = load_version(registry, registry.champion())  # exactly what the server loads
        log(f"model: {champion.card.candidate} version {champion.version}")
        echo_port, port = free_port(), free_port()
        echo = start_process([str(Path(__file__).resolve()), "--echo-server", str(echo_port)], server_cpu)
        server = start_server(uri, port, server_cpu, args.server_arg)
        target = f"127.0.0.1:{port}"
        try:
            assert echo.stdout.readline().strip() == "echo server ready"
            wait_ready(target)
            pin(client_cpu)
            rounds = []
            server_process = psutil.Process(server.pid)
            for i in range(args.rounds):
                rounds.append(
                    measure_round(champion, texts, f"127.0.0.1:{echo_port}", target, registry.model_name, sizes, only)
                )
                summary = ", ".join(f"({k}) {v['msgs_per_s']:,.0f}" for k, v in rounds[-1].items())
                p99 = ", ".join(f"({k}) {rounds[-1][k]['p99']:.2f}" for k in ("5", "7") if k in rounds[-1])
                log(f"round {i + 1}: {summary} msgs/s; unary p99 {p99 or '-'} ms")
            # After the rounds: the workers have loaded the model and scored maximal requests (if row 7 ran).
            rss_mb = {p.pid: p.memory_info().rss / 2**20 for p in [server_process, *server_process.children(recursive=True)]}
        finally:
            stop_process(echo)
            stop_process(server)
        if server.returncode != 0:
            print(server.stdout.read(), file=sys.stderr)

    rows = median_rows(rounds)
    for key, ceiling in CEILINGS.items():
        if key not in rows:
            continue
        rows[key]["name"] = NAMES[key]
        rows[key]["ceiling"] = f"({ceiling})"
        if ceiling in rows:
            rows[key]["ratio"] = rows[key]["msgs_per_s"] / rows[ceiling]["msgs_per_s"]
    for key, least in (("3", 0.5), ("4", 0.5)):
        if "ratio" in rows.get(key, {}):
            rows[key]["goal"] = f"≥ {least} × {rows[key]['ceiling']}: {'met' if rows[key]['ratio'] >= least else 'MISSED'}"
    for key in ("5", "5b"):
        if key in rows:
            rows[key]["goal"] = f"p99 ≤ 3 ms: {'met' if rows[key]['p99'] <= 3.0 else 'MISSED'}"
    if "5e" in rows and "5" in rows:  # the cost of an explanation, per call
        rows["5e"]["goal"] = f"cost: +{rows['5e']['p50'] - rows['5']['p50']:.2f} ms p50 per call"
    if "4e" in rows and "4" in rows:
        per_text = 1000 / rows["4e"]["msgs_per_s"] - 1000 / rows["4"]["msgs_per_s"]
        rows["4e"]["goal"] = f"cost: +{per_text:.3f} ms per message"
    if "7" in rows and "5" in rows:
        gap = rows["7"]["p99"] - rows["5"]["p99"]
        rows["7"]["goal"] = f"p99 ≤ (5) + 5 ms: {'met' if gap <= 5.0 else 'MISSED'} (+{gap:.2f} ms)"
    errors = sum(r["errors"] for r in rows.values())
    worker_rss = [f"{mb:,.0f}" for pid, mb in rss_mb.items() if pid != server.pid]
    load_after = os.getloadavg()
    print()
    print(
        f"model: {champion.card.candidate} (version {champion.version}); {len(texts)} SMS messages; "
        f"{'server on CPU 0, client on CPU 1' if pinned else 'not pinned'} of {os.cpu_count()}; "
        f"median of {args.rounds} rounds; per-message errors: {errors}; "
        f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after; "
        f"RSS: server {rss_mb[server.pid]:,.0f} MB, heavy-request workers {', '.join(worker_rss) or 'none'} MB"
    )
    print(table([{"id": k, **rows[k]} for k in NAMES if k in rows]))
    print()
    if "3" in rows and "1" in rows:
        print(f"(3) / (1), streaming one message per request against the model's own ceiling: {rows['3']['msgs_per_s'] / rows['1']['msgs_per_s']:.2f}")
    if "1d" in rows and "4" in rows:
        print(f"(4) / (1d), batches over gRPC against the same scorer in-process: {rows['4']['msgs_per_s'] / rows['1d']['msgs_per_s']:.2f}")
    r7 = rows.get("7")
    if r7:
        print(
            f"(7) maximal request: {r7['heavy_texts']:.0f} texts, {r7['heavy_bytes'] / 1024:,.0f} KiB of never-seen words, "
            f"scored in {r7['heavy_s']:.2f} s (median; {r7['heavy_requests']:.0f} scored during the unary calls, per round)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
