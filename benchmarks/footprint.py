"""Idle footprint of `spam-platform up`: processes, PSS and CPU, then how it stops.

Starts `spam-platform up` on a temp home (the graph on the SMS corpus from
$SPAM_SMS_PATH, free ports for every server), waits until its servers answer
(and gRPC health says SERVING, where `up` has --grpc-port), lets it settle,
then measures the process tree of that one `up` (psutil, from its PID down):

- processes: how many, and which (grouped by what they run);
- PSS: the sum of Pss from /proc/<pid>/smaps_rollup (shared pages split
  between the processes that share them, so the sum is what the tree costs);
- CPU: user + system seconds of the tree over --seconds of idleness
  (including children that ended and were waited for in that window).

Then it sends SIGTERM to `up` and reports how long until every process of the
tree was gone, and how many were left after 10 s (and kills those).

    SPAM_SMS_PATH=/path/to/SMSSpamCollection python benchmarks/footprint.py --seconds 60
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

STOP_BOUND = 10.0  # seconds `up` has to stop everything it started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def grpc_serving(port: int) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def role(proc: psutil.Process) -> str:
    """What a process of the tree runs, in a few words."""
    try:
        cmd = " ".join(proc.cmdline())
    except psutil.Error:
        return "(gone)"
    for needle, name in (
        ("spam_assets.cli up", "spam-platform up"),
        ("spam-platform up", "spam-platform up"),
        ("mlflow server", "mlflow server (cli)"),
        ("uvicorn", "mlflow web worker (uvicorn)"),
        ("huey", "mlflow job runner (huey)"),
        ("mlflow.server.jobs", "mlflow job runner"),
        ("dagster_webserver", "dagster-webserver"),
        ("dagster._daemon", "dagster-daemon"),
        ("dagster-daemon", "dagster-daemon"),
        ("code-server start", "dagster code server (proxy)"),
        ("api grpc", "dagster code server (definitions)"),
        ("dagster dev", "dagster dev"),
        ("serving.server", "spam-serve"),
        ("spam-serve", "spam-serve"),
    ):
        if needle in cmd:
            return name
    if any(pool in cmd for pool in ("multiprocessing", "joblib", "loky")):  # a worker pool: say whose
        parent = proc.parent()
        return f"worker pool of {role(parent) if parent else '?'}"
    return cmd[:60]


def tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def cpu_seconds(procs: list[psutil.Process]) -> dict[int, float]:
    """Per PID: its own CPU time plus that of children it has waited for."""
    out = {}
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        out[p.pid] = t.user + t.system + t.children_user + t.children_system
    return out


def pss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def supports_grpc_port(python: str, cwd: Path) -> bool:
    """Whether this `up` runs spam-serve too (the code before it did not)."""
    out = subprocess.run([python, "-m", "spam_assets.cli", "up", "--help"], cwd=cwd, capture_output=True, text=True, check=True)
    return "--grpc-port" in out.stdout


def measure(args) -> dict:
    sms = os.environ.get("SPAM_SMS_PATH")
    if not sms or not Path(sms).is_file():
        sys.exit("set SPAM_SMS_PATH to the SMS Spam Collection file")
    root = Path(tempfile.mkdtemp(prefix="footprint-"))
    home = root / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPAM_HOME", "MLFLOW_", "DAGSTER_"))}
    env.update(SPAM_HOME=str(home), DAGSTER_HOME=str(home / "dagster"), SPAM_SMS_PATH=sms)
    ports = {"--port": free_port(), "--mlflow-port": free_port()}
    with_grpc = supports_grpc_port(sys.executable, root)
    if with_grpc:
        ports["--grpc-port"] = free_port()
    argv = [sys.executable, "-m", "spam_assets.cli", "up", *(str(x) for kv in ports.items() for x in kv)]
    log = (root / "up.log").open("w")
    print(f"starting {' '.join(argv[1:])} (log {root / 'up.log'})", file=sys.stderr)
    started = time.monotonic()
    up = subprocess.Popen(argv, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proc = psutil.Process(up.pid)
    seen: list[psutil.Process] = []
    try:
        deadline = started + args.start_timeout
        while True:
            if up.poll() is not None:
                sys.exit(f"up exited with {up.returncode} before it was ready; see {root / 'up.log'}")
            ready = answers(ports["--port"]) and answers(ports["--mlflow-port"])
            if ready and with_grpc:
                ready = grpc_serving(ports["--grpc-port"])
            if ready:
                break
            if time.monotonic() > deadline:
                sys.exit(f"not ready after {args.start_timeout} s; see {root / 'up.log'}")
            time.sleep(1)
        ready_s = time.monotonic() - started
        print(f"ready after {ready_s:.0f} s; settling {args.settle} s, then measuring {args.seconds} s", file=sys.stderr)
        time.sleep(args.settle)

        before = cpu_seconds(tree(proc))
        time.sleep(args.seconds)
        procs = tree(proc)
        seen.extend(procs)
        after = cpu_seconds(procs)
        per_role: dict[str, dict] = collections.defaultdict(lambda: {"processes": 0, "pss_mib": 0.0, "cpu_s": 0.0})
        for p in procs:
            entry = per_role[role(p)]
            entry["processes"] += 1
            entry["pss_mib"] += pss_mib(p.pid)
            entry["cpu_s"] += after.get(p.pid, 0.0) - before.get(p.pid, 0.0)
        totals = {
            "processes": len(procs),
            "pss_mib": round(sum(e["pss_mib"] for e in per_role.values()), 1),
            "cpu_s": round(sum(e["cpu_s"] for e in per_role.values()), 2),
        }

        # Stop: SIGTERM to `up` alone, as systemd or `docker stop` would send it.
        stop_started = time.monotonic()
        up.send_signal(signal.SIGTERM)
        left_after_bound, gone_s = None, None
        while (elapsed := time.monotonic() - stop_started) < 30:
            remaining = [p for p in procs if alive(p)]
            if not remaining and up.poll() is not None:
                gone_s = elapsed
                break
            if left_after_bound is None and elapsed >= STOP_BOUND:
                left_after_bound = len(remaining)
            time.sleep(0.1)
        totals["left_after_10s"] = left_after_bound or 0
        totals["all_gone_after_s"] = None if gone_s is None else round(gone_s, 1)
        totals["up_exit_status"] = up.poll()
        return {
            "with_grpc": with_grpc,
            "ready_after_s": round(ready_s, 1),
            "idle_seconds": args.seconds,
            "totals": totals,
            "by_role": {k: {**v, "pss_mib": round(v["pss_mib"], 1), "cpu_s": round(v["cpu_s"], 2)} for k, v in sorted(per_role.items())},
        }
    finally:
        for p in [*tree(proc), *seen]:  # whatever `up` left behind
            try:
                p.kill()
            except psutil.Error:
                pass
        try:
            os.killpg(up.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        up.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="idle window for the CPU figure")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds after ready before measuring")
    parser.add_argument("--start-timeout", type=float, default=600.0)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    result = measure(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
