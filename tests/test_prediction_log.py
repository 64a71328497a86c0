"""The prediction log: every verdict of every API recorded off the hot path, crash-safe segments, drops counted.

Unit tests drive `PredictionLog` directly (its records need only a champion's
name, version and scorer name, so a plain namespace stands in for a loaded
model); the rest run real servers: in-process for the APIs and a slowed
writer, a `spam-serve` process for SIGKILL.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
from serving_fixtures import PROJECT_ROOT, PYTHON, free_port, model_store, running_server, wait_until  # noqa: F401

from serving import prediction_log as plog
from serving.config import ServingConfig, from_args
from serving.generated.inference import grpc_predict_v2_pb2 as oip_pb
from serving.generated.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from serving.generated.spam.v1 import classifier_pb2 as pb
from serving.generated.spam.v1 import classifier_pb2_grpc as pb_grpc
from serving.prediction_log import PredictionLog
from serving.server import start
from spam_assets.model.operating_point import Tiers
from spam_assets.traffic.prediction_files import FIELDS, find, read_predictions, segments
from spam_assets.traffic.verdict_ids import new_verdict_id, new_verdict_ids, parse_verdict_id, verdict_time

SPAM = "WINNER! You have won a guaranteed £1000 cash prize. Call 09061701461 now to claim"
HAM = "are we still on for lunch tomorrow? see you at home later"
# An operating point that puts the records' P(spam) 0.25 in the suspicious tier (label ham).
TIERS = Tiers(threshold=0.3, suspicious_from=0.2, source="tags")
CHAMPION = SimpleNamespace(
    card=SimpleNamespace(name="spam-classifier", tiers=TIERS), version="7", scorer=SimpleNamespace(name="lean")
)


def _record(log: PredictionLog, n: int, api: str = "Classify", text: str = HAM) -> list[str]:
    ids = new_verdict_ids(n)
    log.record(api, time.perf_counter(), CHAMPION, [f"c{i}" for i in range(n)], [text] * n, [0.25] * n, ["ham"] * n, ids)
    return ids


def _parts(folder: Path) -> list[Path]:
    return sorted(folder.glob(".predictions-*"))


def _every_line_is_json(path: Path) -> int:
    data = path.read_bytes()
    assert data.endswith(b"\n"), f"{path.name} ends mid-line"
    lines = data.splitlines()
    for line in lines:
        json.loads(line)
    return len(lines)


# --- verdict ids ---------------------------------------------------------------------------------


def test_verdict_ids_are_uuid7_unique_time_ordered_and_name_their_time():
    before = time.time()
    ids = new_verdict_ids(10_000)
    assert len(set(ids)) == 10_000 and ids == sorted(ids)
    assert all(parse_verdict_id(v) for v in ids[:100])
    assert before - 0.01 <= verdict_time(ids[0]).timestamp() <= time.time() + 0.01
    assert parse_verdict_id("not-an-id") is None
    assert parse_verdict_id("6ba7b810-9dad-11d1-80b4-00c04fd430c8") is None  # a UUIDv1: not ours


# --- the module ----------------------------------------------------------------------------------


def test_records_land_in_published_segments_with_every_field(tmp_path):
    log = PredictionLog(tmp_path, segment_bytes=2000).start()  # a few records per segment: several rotations
    ids = []
    for _ in range(10):
        ids += _record(log, 3, text=SPAM)
        assert log.flush()  # one write each: the size check comes between writes
    log.close()
    assert not _parts(tmp_path), "close() publishes the open segment"
    assert len(segments(tmp_path)) >= 3
    frame = read_predictions(tmp_path)
    assert list(frame.columns) == list(FIELDS)
    assert sorted(frame["verdict_id"]) == sorted(ids)
    row = frame.iloc[0]
    assert (row["model_name"], row["model_version"], row["scorer"], row["api"]) == ("spam-classifier", "7", "lean", "Classify")
    assert row["text"] == SPAM and row["text_sha256"] == hashlib.sha256(SPAM.encode()).hexdigest()
    assert row["spam_probability"] == 0.25 and row["label"] == "ham" and row["latency_ms"] >= 0
    assert row["tier"] == "suspicious"  # by the version's operating point, beside the label
    assert str(frame["time"].dtype) == "datetime64[ns, UTC]"
    assert set(frame["client_id"]) == {"c0", "c1", "c2"}  # strings stay strings, not numbers


def test_any_text_is_written_as_ascii_json_and_read_back_exactly(tmp_path):
    """Lines are pure ASCII (non-ASCII as JSON escapes: the writer's fast path) and decode to what was scored."""
    texts = ['say "hi" \\ back\\slash\nnew line\ttab', "naïve café £5 — ok", "emoji 😀 and 中文", "nul \x00 and \x1f"]
    client_ids = ['id "1"', "id\\2", "é", "4"]
    ids = new_verdict_ids(4)
    log = PredictionLog(tmp_path).start()
    log.record("ClassifyStream", time.perf_counter(), CHAMPION, client_ids, texts, [0.5, float("nan"), np.float64(0.75), 1.0],
               ["spam", "ham", "spam", "spam"], ids)  # fmt: skip
    log.close()
    data = b"".join(path.read_bytes() for path in segments(tmp_path))
    assert data.isascii() and data.count(b"\n") == 4
    rows = read_predictions(tmp_path).set_index("verdict_id").loc[ids]
    assert list(rows["text"]) == texts and list(rows["client_id"]) == client_ids
    assert list(rows["text_sha256"]) == [hashlib.sha256(t.encode()).hexdigest() for t in texts]
    p = list(rows["spam_probability"])
    assert p[0] == 0.5 and math.isnan(p[1]) and p[2] == 0.75 and p[3] == 1.0  # NaN is written as null


def test_a_call_the_writer_cannot_serialise_loses_only_its_own_verdicts(tmp_path):
    log = PredictionLog(tmp_path)  # not started: the three calls below are the writer's first take
    before = _record(log, 3)
    log.record("Classify", time.perf_counter(), CHAMPION, ["bad"], [HAM], ["not a number"], ["ham"], new_verdict_ids(1))
    after = _record(log, 4)
    log.start()
    assert log.flush()
    later = _record(log, 2)  # the writer goes on
    log.close()
    assert (log.write_errors, log.dropped) == (1, 1)
    assert sorted(read_predictions(tmp_path)["verdict_id"]) == sorted(before + after + later)


def test_a_full_disk_mid_write_loses_only_that_take_and_leaves_no_cut_line(tmp_path, monkeypatch):
    """A full disk writes part of a take, then fails: the part is taken back, so later records are not glued to it."""
    import errno

    real_write, armed = os.write, {"calls": 0}

    def full_disk_once(fd, data):
        armed["calls"] += 1
        if armed["calls"] == 1:
            return real_write(fd, bytes(data)[: len(data) // 2])  # what fits
        if armed["calls"] == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    log = PredictionLog(tmp_path)  # not started: the first take is these records
    lost = _record(log, 5)
    monkeypatch.setattr(plog.os, "write", full_disk_once)
    log.start()
    assert log.flush()
    kept = _record(log, 4)  # space again
    log.close()
    (segment,) = segments(tmp_path)
    assert _every_line_is_json(segment) == 4
    assert (log.write_errors, log.dropped) == (1, 5)
    assert sorted(read_predictions(tmp_path)["verdict_id"]) == sorted(kept)
    assert not set(lost) & set(read_predictions(tmp_path)["verdict_id"])


def test_segments_are_published_by_age_too(tmp_path):
    log = PredictionLog(tmp_path, segment_seconds=0.2).start()
    _record(log, 2)
    wait_until(lambda: segments(tmp_path), timeout=10, message="a segment published by age")
    assert not _parts(tmp_path)
    log.close()
    assert len(read_predictions(tmp_path)) == 2


def test_log_text_off_keeps_only_the_sha256(tmp_path):
    log = PredictionLog(tmp_path, log_text=False).start()
    _record(log, 2, text=SPAM)
    log.close()
    frame = read_predictions(tmp_path)
    assert frame["text"].isna().all()
    assert set(frame["text_sha256"]) == {hashlib.sha256(SPAM.encode()).hexdigest()}
    assert SPAM.encode() not in b"".join(p.read_bytes() for p in tmp_path.iterdir())


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path):
    log = PredictionLog(tmp_path, max_records=10, write_delay=0.3).start()  # a writer slower than the traffic
    accepted = [log.record("Classify", time.perf_counter(), CHAMPION, ["c"], [HAM], [0.1], ["ham"], [new_verdict_id()])
                for _ in range(200)]  # fmt: skip
    assert accepted.count(False) == log.dropped > 0
    assert log.depth() <= 10
    log.close()
    assert len(read_predictions(tmp_path)) == accepted.count(True) == 200 - log.dropped


def test_the_queue_is_bounded_in_text_bytes_too(tmp_path):
    log = PredictionLog(tmp_path, max_bytes=100_000, write_delay=0.3).start()
    big = "x" * 40_000
    accepted = [log.record("Classify", time.perf_counter(), CHAMPION, ["c"], [big], [0.1], ["ham"], [new_verdict_id()])
                for _ in range(10)]  # fmt: skip
    assert accepted.count(True) <= 3 and log.dropped == accepted.count(False)
    log.close()


def test_find_reads_open_and_published_segments(tmp_path):
    log = PredictionLog(tmp_path).start()
    first = _record(log, 3)
    found = log.find(first[1])  # still in the open .part file
    assert found["verdict_id"] == first[1] and found["client_id"] == "c1" and _parts(tmp_path)
    log.close()
    assert find(tmp_path, first[2])["verdict_id"] == first[2]  # now in a published segment
    assert find(tmp_path, new_verdict_id()) is None
    assert find(tmp_path, "not-a-verdict-id") is None


def _orphan(folder: Path, host: str, pid: int, lines: list[dict], tail: bytes = b"") -> Path:
    name = f".predictions-{new_verdict_id()}-{host}-{pid}.jsonl.part"
    path = folder / name
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in lines) + tail)
    return path


def _dead_pid() -> int:
    child = subprocess.Popen([PYTHON, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_dead_writers_segment_is_cut_to_complete_lines_and_published(tmp_path):
    host = plog.host_name()
    records = [{"verdict_id": v, "client_id": "x", "time": "2026-01-01T00:00:00.000+00:00"} for v in new_verdict_ids(3)]
    dead = _orphan(tmp_path, host, _dead_pid(), records, tail=b'{"verdict_id": "cut off by SIGK')
    empty = _orphan(tmp_path, host, _dead_pid(), [], tail=b'{"half')
    live_elsewhere = _orphan(tmp_path, "another-host", 1, records)  # fresh: its writer may be alive
    stale_elsewhere = _orphan(tmp_path, "gone-host", 1, records)
    old = time.time() - 3600
    os.utime(stale_elsewhere, (old, old))

    log = PredictionLog(tmp_path, segment_seconds=60).start()  # recovery runs at start
    log.close()
    assert not dead.exists() and not empty.exists() and not stale_elsewhere.exists()
    assert live_elsewhere.exists(), "a fresh segment of another host is left to its writer"
    published = segments(tmp_path)
    assert len(published) == 2 and all(_every_line_is_json(p) == 3 for p in published)
    assert {p.name for p in published} == {dead.name[1:-5], stale_elsewhere.name[1:-5]}  # same name, published


def test_only_one_of_two_recovering_processes_claims_an_orphan(tmp_path):
    orphan = _orphan(tmp_path, "gone-host", 1, [{"verdict_id": new_verdict_id()}])
    old = time.time() - 3600
    os.utime(orphan, (old, old))
    first = plog.recover_orphans(tmp_path, "a", 10, stale_after=60)
    second = plog.recover_orphans(tmp_path, "b", 11, stale_after=60)
    assert len(first) == 1 and second == [] and len(segments(tmp_path)) == 1


def test_a_second_log_of_the_same_process_leaves_the_first_ones_segment_alone(tmp_path):
    first = PredictionLog(tmp_path).start()
    ids = _record(first, 2)
    assert first.flush()
    (part,) = _parts(tmp_path)  # same host, same pid: only knowing it is open here protects it
    second = PredictionLog(tmp_path).start()
    assert part.exists() and not segments(tmp_path)
    first.close()
    second.close()
    assert sorted(read_predictions(tmp_path)["verdict_id"]) == ids


def test_retention_deletes_old_segments_only(tmp_path):
    log = PredictionLog(tmp_path).start()
    _record(log, 2)
    log.close()
    (old,) = segments(tmp_path)
    ten_days = time.time() - 10 * 86400
    os.utime(old, (ten_days, ten_days))
    log = PredictionLog(tmp_path, retention_days=30).start()
    _record(log, 1)
    log.close()
    assert old.exists() and len(segments(tmp_path)) == 2  # within 30 days: kept
    PredictionLog(tmp_path, retention_days=7).start().close()
    assert not old.exists() and len(segments(tmp_path)) == 1


def test_an_unwritable_folder_fails_at_start(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError):
        PredictionLog(blocker / "log").start()


def test_config_flags_and_environment(home, tmp_path):
    config, _ = from_args([], environ={})
    assert config.prediction_log_dir() == home / "predictions" and config.log_text
    config, _ = from_args(["--prediction-log", "off"], environ={})
    assert config.prediction_log_dir() is None
    env = {"SPAM_SERVING_PREDICTION_LOG": str(tmp_path / "p"), "SPAM_SERVING_LOG_TEXT": "off",
           "SPAM_SERVING_LOG_RETENTION_DAYS": "7"}  # fmt: skip
    config, _ = from_args([], environ=env)
    assert (config.prediction_log_dir(), config.log_text, config.log_retention_days) == (tmp_path / "p", False, 7.0)
    config, _ = from_args(["--log-text", "on"], environ=env)  # the flag wins
    assert config.log_text
    with pytest.raises(ValueError, match="expected on or off"):
        from_args([], environ={"SPAM_SERVING_LOG_TEXT": "maybe"})
    with pytest.raises(ValueError, match="log_retention_days"):
        ServingConfig(log_retention_days=-1)


# --- real servers ----------------------------------------------------------------------------------


def _oip_request(model: str, texts: list[str]) -> oip_pb.ModelInferRequest:
    request = oip_pb.ModelInferRequest(model_name=model, id="oip-1")
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
    tensor.contents.bytes_contents.extend(t.encode() for t in texts)
    return request


def test_n_messages_through_each_api_are_logged_with_their_ids_and_version(model_store, tmp_path):  # noqa: F811
    n = 12
    registry = model_store.clone("plog", [model_store.good[0]])
    registry.promote("1", "prediction log test")
    folder = tmp_path / "predictions"
    texts = [SPAM if i % 2 else HAM for i in range(n)]
    with running_server(model_store, registry.model_name, wait_for="1", prediction_log=str(folder)) as server:
        with grpc.insecure_channel(server.target) as channel:
            classifier, oip = pb_grpc.ClassifierStub(channel), oip_grpc.GRPCInferenceServiceStub(channel)
            unary = [classifier.Classify(pb.ClassifyRequest(text=t, id=f"u{i}"), timeout=10) for i, t in enumerate(texts)]
            messages = [pb.Message(id=f"s{i}", text=t) for i, t in enumerate(texts)]
            messages.insert(3, pb.Message(id="blank", text=" "))  # an error between verdicts: not logged
            stream = [r for resp in classifier.ClassifyStream(
                iter([pb.ClassifyStreamRequest(messages=messages[:5]), pb.ClassifyStreamRequest(messages=messages[5:])]),
                timeout=10) for r in resp.results]  # fmt: skip
            assert [r.id for r in stream if r.WhichOneof("outcome") == "error"] == ["blank"]
            stream = [r for r in stream if r.WhichOneof("outcome") == "verdict"]
            response = oip.ModelInfer(_oip_request(registry.model_name, texts), timeout=10)
            oip_ids = [b.decode() for b in response.outputs[2].contents.bytes_contents]
    frame = read_predictions(folder)  # the server has shut down: everything is published
    by_api = {api: rows.set_index("verdict_id") for api, rows in frame.groupby("api")}
    assert {api: len(rows) for api, rows in by_api.items()} == {"Classify": n, "ClassifyStream": n, "ModelInfer": n}
    answered = {
        "Classify": [(r.verdict.verdict_id, r.id, r.verdict.label) for r in unary],
        "ClassifyStream": [(r.verdict.verdict_id, r.id, r.verdict.label) for r in stream],
        "ModelInfer": [(v, "oip-1", "spam" if i % 2 else "ham") for i, v in enumerate(oip_ids)],
    }
    for api, verdicts in answered.items():
        rows = by_api[api]
        assert sorted(rows.index) == sorted(v for v, _, _ in verdicts)
        assert [(rows.loc[v, "client_id"], rows.loc[v, "label"]) for v, _, _ in verdicts] == [(c, l) for _, c, l in verdicts]
        assert [rows.loc[v, "text"] for v, _, _ in verdicts] == texts
    assert set(frame["model_version"]) == {"1"} and set(frame["model_name"]) == {registry.model_name}
    assert frame["verdict_id"].is_unique


def test_a_slow_writer_drops_log_records_and_no_request_fails(model_store, tmp_path):  # noqa: F811
    registry = model_store.clone("plog-slow", [model_store.good[0]])
    registry.promote("1", "slow writer test")
    slow = PredictionLog(tmp_path / "predictions", max_records=5, write_delay=0.5).start()
    config = ServingConfig(host="127.0.0.1", port=0, tracking_uri=model_store.uri, model_name=registry.model_name,
                           poll_interval=0.2, grace=1.0)  # fmt: skip
    server = start(config, predictions=slow)
    try:
        assert server.watcher.wait_for("1", timeout=30)
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.ClassifierStub(channel)
            verdicts = [stub.Classify(pb.ClassifyRequest(text=HAM), timeout=10).verdict for _ in range(150)]
        assert all(v.label == "ham" for v in verdicts)  # every request answered
        assert slow.dropped > 0
    finally:
        server.shutdown(grace=0.5)
        slow.close()  # the server gives a slow writer 1 s; wait for the rest here
    assert len(read_predictions(tmp_path / "predictions")) == 150 - slow.dropped


SIGKILL_SERVER = [PYTHON, "-m", "serving.server", "--poll-interval", "0.2", "--log-segment-bytes", "100000"]


def test_sigkill_mid_traffic_leaves_every_published_segment_readable(model_store, tmp_path):  # noqa: F811
    registry = model_store.clone("plog-kill", [model_store.good[0]])
    registry.promote("1", "sigkill test")
    folder, port = tmp_path / "predictions", free_port()
    env = {**os.environ, "SPAM_SERVING_TRACKING_URI": model_store.uri, "MLFLOW_DISABLE_TELEMETRY": "true",
           "SPAM_SERVING_PREDICTION_LOG": str(folder), "SPAM_SERVING_MODEL_NAME": registry.model_name}  # fmt: skip
    process = subprocess.Popen([*SIGKILL_SERVER, "--port", str(port)], cwd=PROJECT_ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    stop, answered, failures = threading.Event(), [], []

    def traffic() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ClassifierStub(channel)
            while not stop.is_set():
                batch = [pb.Message(id=str(i), text=SPAM if i % 2 else HAM) for i in range(32)]
                try:
                    for response in stub.ClassifyStream(iter([pb.ClassifyStreamRequest(messages=batch)]), timeout=10):
                        answered.extend(r.verdict.verdict_id for r in response.results)
                except grpc.RpcError as error:
                    failures.append(error.code())
                    if answered:  # killed
                        return
                    time.sleep(0.1)  # not serving yet

    worker = threading.Thread(target=traffic, daemon=True)
    try:
        worker.start()
        # Several segments published and another being written: kill in the middle of it all.
        wait_until(lambda: len(segments(folder)) >= 3 and _parts(folder), timeout=90, message="3 published segments")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        stop.set()
        if process.poll() is None:
            process.kill()
        worker.join(timeout=15)
    published = segments(folder)
    counts = [_every_line_is_json(path) for path in published]
    assert len(published) >= 3 and all(counts)
    # The segment being written when the server died (almost always one: the writer opens the next segment at its
    # next write, 0.1 s after publishing) stays a .part file until a writer on this host recovers it.
    # Recovery of such a file is also tested directly above.
    before = len(read_predictions(folder))

    PredictionLog(folder).start().close()  # the next start on this host recovers it
    assert not _parts(folder)
    frame = read_predictions(folder)
    assert len(frame) >= before and frame["verdict_id"].is_unique
    # What the log lost is what was queued and not yet written when the process died: the newest verdicts the
    # client saw, never one from before a logged one (how many depends on how far the writer lagged: the load).
    logged = set(frame["verdict_id"])
    lost = [i for i, verdict_id in enumerate(answered) if verdict_id not in logged]
    assert lost == list(range(len(answered) - len(lost), len(answered))), "only the newest verdicts may be lost"
    assert len(lost) <= 65536, "no more than the queue holds"
    # What the log has that the client never saw: the one request in flight as the server died.
    assert len(logged - set(answered)) <= 32
    assert all(_every_line_is_json(path) for path in segments(folder))


def test_find_reads_only_the_segments_that_can_hold_the_verdict(tmp_path):
    """A segment opened after a verdict's time cannot hold it and is not read (however long the log grows)."""
    import uuid

    from tests.traffic_log import records, write_segment

    segment = write_segment(tmp_path, spam=3, ham=0)
    wanted = records(segment)[1]
    # A decoy with the same verdict id, named as opened an hour later; its mtime makes it the first read if listed.
    later = (int(time.time() * 1000) + 3_600_000) << 80 | (uuid.UUID(new_verdict_id()).int & ((1 << 80) - 1))
    decoy = tmp_path / f"predictions-{uuid.UUID(int=later)}-elsewhere-1.jsonl"
    decoy.write_text(json.dumps({**wanted, "client_id": "decoy"}, separators=(",", ":")) + "\n", encoding="utf-8")
    mtime = segment.stat().st_mtime - 1
    os.utime(decoy, (mtime, mtime))
    assert find(tmp_path, wanted["verdict_id"]) == wanted


def test_a_damaged_line_in_a_published_segment_costs_that_record_only(tmp_path, caplog):
    log = PredictionLog(tmp_path).start()
    kept = _record(log, 3)
    log.close()
    (segment,) = segments(tmp_path)
    lines = segment.read_bytes().splitlines(keepends=True)
    segment.write_bytes(lines[0] + b'{"verdict_id":"cut sh\n' + b"".join(lines[1:]))  # e.g. a damaged disk block
    frame = read_predictions(tmp_path)
    assert sorted(frame["verdict_id"]) == sorted(kept)
    assert f"{segment} line 2 is not a record" in caplog.text
