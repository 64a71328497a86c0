"""The prediction log: every verdict the server gives, written off the hot path to rotating JSONL segments.

The request thread hands each scoring call's verdicts to `PredictionLog.record`,
which only appends them to a bounded in-memory queue (never blocks: when the
queue is full the verdicts are dropped and counted in `dropped`). One writer
thread per process takes everything queued every 0.1 s (sooner when the
queue is half full), turns it into JSON lines and
appends them to the segment it is filling, a hidden `.part` file; when the
segment is big or old enough it is fsynced and renamed into place. A reader
(pandas, the next Dagster asset, `read_predictions`) only ever sees published
segments, and a published segment is complete: it is never written again.

Why JSONL, not Parquet: a line is complete or it is not, so the segment being
filled can be appended to a batch at a time and, after a crash, cut back to
its last complete line and published; Parquet can only be written whole
(one file per flush, or a footer lost to a SIGKILL). pandas reads JSONL
directly (`pd.read_json(path, lines=True)`), and a day's segments compact
into Parquet later if size matters.

Layout of the log folder, which replicas may share (names are unique per
process: a time-ordered segment id, the host name and the pid):

    predictions-<segment id>-<host>-<pid>.jsonl          published segments
    .predictions-<segment id>-<host>-<pid>.jsonl.part    being filled by a live writer
    feedback/                                            reports (serving/feedback.py)

A writer killed with SIGKILL leaves its `.part` file behind, never a
half-written published segment. The next writer to start on the same host
(or any writer, once the file is older than `2 x segment_seconds + 60 s`, for
replicas that never come back under the same name) claims it by renaming it,
cuts it to its last complete line and publishes it: recovered, not lost.
Published segments older than the retention period are deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import socket
import threading
import time
from collections.abc import Sequence
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from spam_assets.traffic.prediction_files import (
    CLAIMED,
    NAME,
    PART,
    PREFIX,
    SUFFIX,
    complete_length,
    find,
    published_name,
    segments,
)
from spam_assets.traffic.verdict_ids import new_verdict_id

if TYPE_CHECKING:
    from serving.watcher import LoadedChampion

log = logging.getLogger(__name__)

# Fixed record overhead counted against the queue's byte bound, besides the text.
RECORD_BYTES = 320
# Seconds between retention sweeps and orphan checks by the writer.
HOUSEKEEPING_S = 60.0
# The writer takes what is queued this often (or sooner: see _Pending).
WRITE_INTERVAL_S = 0.1
_ascii = json.encoder.encode_basestring_ascii  # C-accelerated: a JSON string, non-ASCII as \u escapes
_hexdigest = type(hashlib.sha256()).hexdigest
_LABELS = {label: _ascii(label) for label in ("spam", "ham")}
_TIERS = {tier: _ascii(tier) for tier in ("ham", "suspicious", "spam")}

# Segments being written by the logs of this process: never orphans, even to another log of the same
# process on the same folder (same host, same pid).
_OPEN_PARTS: set[Path] = set()
_OPEN_PARTS_LOCK = threading.Lock()


def host_name() -> str:
    """This machine's name, made safe for a file name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "host"


class _Batch(NamedTuple):
    """One scoring call's verdicts, as the request thread hands them over (serialised by the writer).

    A NamedTuple: built once per scoring call, on the request's thread, where a frozen dataclass costs 1 µs more.
    """

    api: str
    when: float  # time.time()
    latency_s: float
    champion: LoadedChampion
    client_ids: Sequence[str]
    texts: Sequence[str]
    probabilities: Sequence[float]
    labels: Sequence[str]
    verdict_ids: Sequence[str]
    role: str = "champion"  # the alias the scoring model held
    served: bool = True  # False: a shadow verdict (serving/shadow.py), not what the caller got


def _take_lines(batches: Sequence[_Batch], log_text: bool) -> str:
    """One JSON line per verdict of `batches` (one take), pure ASCII (non-ASCII characters as JSON \\u escapes).

    The writer serialises every verdict the server gives, and one microsecond
    per verdict is about 1% of the server's CPU for a 256-text stream. So
    the take is serialised column by column across all its calls, with
    C-level `map`s and one f-string per record: a unary call's verdict used
    to cost 6 µs serialised alone, the fixed work of a call (its time, its
    model's fields, a dozen list passes) paid for one record; within a take
    it costs about 3. ASCII escapes cost half as much as UTF-8 output and
    leave the lines one-byte strings that encode with a copy; readers decode
    them to the same text. Raises if any call has a value that cannot be
    serialised (the writer then serialises call by call, to lose only that one).
    """
    counts = [len(b.verdict_ids) for b in batches]
    flat = chain.from_iterable
    p = list(map(float, flat([b.probabilities for b in batches])))  # numpy scalars too: repr(np.float64) is not JSON
    tier_of = flat([[b.champion.card.tiers.tier] * n for b, n in zip(batches, counts, strict=True)])
    if all(map(math.isfinite, p)):
        probabilities = map(repr, p)
        tiers = [_TIERS[tier(x)] for tier, x in zip(tier_of, p, strict=True)]  # on the writer's thread, not the request's
    else:
        probabilities = [repr(x) if math.isfinite(x) else "null" for x in p]
        tiers = [_TIERS[tier(x)] if math.isfinite(x) else "null" for tier, x in zip(tier_of, p, strict=True)]
    texts = list(flat([b.texts for b in batches]))
    digests = map(_hexdigest, map(hashlib.sha256, [text.encode("utf-8", "surrogatepass") for text in texts]))
    shown = map(_ascii, texts) if log_text else ["null"] * len(texts)
    labels = [_LABELS.get(label) or _ascii(label) for label in flat([b.labels for b in batches])]
    seconds = _Seconds()
    per_call = flat([
        [(
            f'"api":{_ascii(b.api)},"time":"{seconds.iso(b.when)}","model_name":{_ascii(b.champion.card.name)},'
            f'"model_version":{_ascii(b.champion.version)},"scorer":{_ascii(b.champion.scorer.name)},',
            f"{b.latency_s * 1000:.3f}",
            f'"role":{_ascii(b.role)},"served":{"true" if b.served else "false"}',
        )] * n
        for b, n in zip(batches, counts, strict=True)
    ])  # fmt: skip
    return "".join([
        f'{{"verdict_id":"{verdict_id}","client_id":{client_id},{head}"spam_probability":{probability},'
        f'"label":{label},"latency_ms":{latency},"text_sha256":"{digest}","text":{text},{tail},"tier":{tier}}}\n'
        for verdict_id, client_id, (head, latency, tail), probability, label, digest, text, tier in zip(
            flat([b.verdict_ids for b in batches]), map(_ascii, flat([b.client_ids for b in batches])), per_call,
            probabilities, labels, digests, shown, tiers, strict=True,
        )
    ])  # fmt: skip


def _lines(batch: _Batch, log_text: bool) -> str:
    """One call's verdicts as JSON lines."""
    return _take_lines((batch,), log_text)


class _Seconds:
    """ISO 8601 times in UTC to the millisecond, as datetime's isoformat(timespec="milliseconds"), each second's
    date and time formatted once: 1 µs less a call."""

    def __init__(self) -> None:
        self._second, self._text = -1, ""

    def iso(self, when: float) -> str:
        second = math.floor(when)
        micros = round((when - second) * 1_000_000)  # datetime rounds to the microsecond, then cuts to the millisecond
        if micros == 1_000_000:
            second, micros = second + 1, 0
        if second != self._second:
            self._second, self._text = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._text}.{micros // 1000:03d}+00:00"


class _Pending:
    """The bounded queue between request threads and the writer: bounded in records and in text bytes.

    Putting never wakes the writer (a wake-up per call costs the request
    threads context switches on a busy core); the writer takes everything
    every WRITE_INTERVAL_S, or sooner when the queue is half full or someone
    waits for it (flush, close).
    """

    def __init__(self, max_records: int, max_bytes: int):
        self.max_records, self.max_bytes = max_records, max_bytes
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.items: list[tuple[_Batch, int, int]] = []
        self.records = self.bytes = 0
        self.dropped = 0
        self.enqueued = 0  # records accepted so far (a sequence number for flush)

    def put(self, batch: _Batch, count: int, size: int) -> bool:
        with self.lock:
            if self.records + count > self.max_records or self.bytes + size > self.max_bytes:
                self.dropped += count
                return False
            self.items.append((batch, count, size))
            self.records += count
            self.bytes += size
            self.enqueued += count
            urgent = self.records * 2 > self.max_records or self.bytes * 2 > self.max_bytes
        if urgent:
            self.wake.set()
        return True

    def take(self) -> list[tuple[_Batch, int, int]]:
        """Everything queued; the space is freed when it is written (`release`)."""
        with self.lock:
            items, self.items = self.items, []
            return items

    def release(self, items: list[tuple[_Batch, int, int]]) -> None:
        with self.lock:
            self.records -= sum(count for _, count, _ in items)
            self.bytes -= sum(size for _, _, size in items)

    def count_dropped(self, count: int) -> None:
        with self.lock:
            self.dropped += count


class PredictionLog:
    """Records verdicts without blocking; one writer thread appends them to segment files in `directory`.

    `write_delay` (seconds slept before each write) exists for tests that need
    a slow writer to fill the queue; the server never sets it.
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        log_text: bool = True,
        max_records: int = 65536,
        max_bytes: int = 64 * 1024 * 1024,
        segment_bytes: int = 64 * 1024 * 1024,
        segment_seconds: float = 300.0,
        retention_days: float = 30.0,
        write_delay: float = 0.0,
    ):
        self.directory = Path(directory)
        self.log_text = log_text
        self.segment_bytes = segment_bytes
        self.segment_seconds = segment_seconds
        self.retention_s = retention_days * 86400.0
        self.write_delay = write_delay
        self.host, self.pid = host_name(), os.getpid()
        self._pending = _Pending(max_records, max_bytes)
        self._written = 0  # records written to a segment file (visible to `find`)
        self._progress = threading.Condition(threading.Lock())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        self._part: Path | None = None
        self._opened = 0.0
        self._size = 0
        self.published = 0  # segments published by this writer
        self.write_errors = 0

    # --- the request threads' side -------------------------------------------------------------

    def record(
        self,
        api: str,
        started: float,
        champion: LoadedChampion,
        client_ids: Sequence[str],
        texts: Sequence[str],
        probabilities: Sequence[float],
        labels: Sequence[str],
        verdict_ids: Sequence[str],
        role: str = "champion",
        served: bool = True,
    ) -> bool:
        """Queue one call's verdicts (`started`: the call's time.perf_counter()); False when dropped.

        `role`: the alias the scoring model held; `served`: False for shadow verdicts (same verdict ids as the
        served ones, scored by the other model).
        """
        count = len(verdict_ids)
        if not count:
            return True
        batch = _Batch(
            api, time.time(), time.perf_counter() - started, champion, client_ids, texts, probabilities, labels,
            verdict_ids, role, served,
        )  # fmt: skip
        size = count * RECORD_BYTES + (sum(map(len, texts)) if self.log_text else 0)
        return self._pending.put(batch, count, size)

    def depth(self) -> int:
        """Records queued, not yet written."""
        return self._pending.records

    @property
    def dropped(self) -> int:
        """Records dropped because the queue was full."""
        return self._pending.dropped

    @property
    def written(self) -> int:
        return self._written

    # --- life cycle --------------------------------------------------------------------------------

    def start(self) -> PredictionLog:
        """Create the folder (failing now, not at the first verdict), recover orphans, start the writer."""
        self.directory.mkdir(parents=True, exist_ok=True)
        probe = self.directory / f".write-test-{self.host}-{self.pid}"
        probe.write_bytes(b"")
        probe.unlink()
        self._housekeeping()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()
        return self

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every record queued before this call is in a segment file; False on timeout."""
        target = self._pending.enqueued
        deadline = time.monotonic() + timeout
        self._pending.wake.set()
        with self._progress:
            while self._written < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._thread is None or not self._thread.is_alive():
                    return False
                self._progress.wait(min(remaining, 0.1))
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, publish the open segment and stop the writer."""
        self._stop.set()
        self._pending.wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("prediction log writer busy after %.1fs; its open segment is left to recovery", timeout)

    # --- reading ----------------------------------------------------------------------------------

    def find(self, verdict_id: str) -> dict | None:
        """The record of `verdict_id` (this process's queue flushed first), in any replica's segments."""
        self.flush(timeout=2.0)
        return find(self.directory, verdict_id)

    # --- the writer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        next_housekeeping = time.monotonic() + HOUSEKEEPING_S
        while not self._stop.is_set():
            self._pending.wake.wait(WRITE_INTERVAL_S)
            self._pending.wake.clear()
            items = self._pending.take()
            if items:
                if self.write_delay:
                    time.sleep(self.write_delay)
                self._write(items)
            if self._fd is not None and (
                self._size >= self.segment_bytes or time.time() - self._opened >= self.segment_seconds
            ):
                self._publish()
            if time.monotonic() >= next_housekeeping:
                next_housekeeping = time.monotonic() + HOUSEKEEPING_S
                self._housekeeping()
        items = self._pending.take()  # what came in before close()
        if items:
            self._write(items)
        if self._fd is not None:
            self._publish()

    def _write(self, items: list[tuple[_Batch, int, int]]) -> None:
        """Serialise a take and write it with one os.write: each write lets the request threads take the GIL."""
        count = sum(n for _, n, _ in items)
        lost = 0
        try:
            chunks = [_take_lines([batch for batch, _, _ in items], self.log_text)]
        except Exception:  # noqa: BLE001 - a call that cannot be serialised: call by call, so it loses only its own
            chunks = []
            for batch, n, _ in items:
                try:
                    chunks.append(_lines(batch, self.log_text))
                except Exception:  # noqa: BLE001
                    lost += n
                    log.exception("prediction log: could not serialise %d records; counted as dropped", n)
        start = self._size if self._fd is not None else 0
        try:
            if any(chunks):
                if self._fd is None:
                    self._open()
                data = "".join(chunks).encode("ascii")
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view) :]
                self._size += len(data)
        except Exception:  # noqa: BLE001 - a full disk must not stop the writer or the server
            lost = count
            log.exception("prediction log: could not write %d records; counted as dropped", count)
            self._take_back(start)
        finally:
            if lost:
                self.write_errors += 1
                self._pending.count_dropped(lost)
            self._pending.release(items)
            with self._progress:
                self._written += count
                self._progress.notify_all()

    def _take_back(self, size: int) -> None:
        """Cut what a failed write left (a full disk writes part of a take): the next take must not be glued to it."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, size)
        except OSError:  # cannot even shrink: leave this segment, cut to complete lines, to recovery
            log.exception("prediction log: could not cut %s back after a failed write; left for recovery", self._part)
            os.close(self._fd)
            with _OPEN_PARTS_LOCK:
                _OPEN_PARTS.discard(self._part)
            self._fd = self._part = None

    def _open(self) -> None:
        name = f"{PREFIX}{new_verdict_id()}-{self.host}-{self.pid}{SUFFIX}"
        self._part = self.directory / f".{name}{PART}"
        with _OPEN_PARTS_LOCK:
            _OPEN_PARTS.add(self._part)
        self._fd = os.open(self._part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        self._opened = time.time()
        self._size = 0

    def _publish(self) -> None:
        fd, part = self._fd, self._part
        self._fd = self._part = None
        try:
            os.fsync(fd)
            os.close(fd)
            os.rename(part, published_name(part))
            _fsync_dir(self.directory)
            self.published += 1
        except OSError:
            self.write_errors += 1
            log.exception("prediction log: could not publish %s; left for recovery", part)
        finally:
            with _OPEN_PARTS_LOCK:
                _OPEN_PARTS.discard(part)

    def _housekeeping(self) -> None:
        try:
            recover_orphans(self.directory, self.host, self.pid, stale_after=2 * self.segment_seconds + 60)
            if self.retention_s > 0:
                delete_expired(self.directory, self.retention_s)
        except OSError:
            log.exception("prediction log: housekeeping in %s failed", self.directory)


# --- files: naming, recovery, retention ------------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be fsynced
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_orphans(directory: Path, host: str, pid: int, stale_after: float) -> list[Path]:
    """Publish the complete lines of segments their writers left behind; return the published paths.

    An orphan is a `.part` file of this host whose pid is not alive (or is
    ours but no log of this process writes it: a restarted container often
    has the same pid), or any `.part` or claimed file untouched for
    `stale_after` seconds (replicas sharing a folder should use one
    --log-segment-seconds: a live writer's file is never older than that). It is claimed by a
    rename (only one process wins), cut to its last complete line, fsynced
    and renamed into place; one with no complete line is removed.
    """
    recovered = []
    now = time.time()
    with _OPEN_PARTS_LOCK:
        open_here = set(_OPEN_PARTS)
    for path in directory.glob(f".{PREFIX}*{SUFFIX}*"):
        if path in open_here:
            continue
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:
            continue
        match = NAME.match(published_name(path).name)
        if match is None:
            continue
        ours = path.name.endswith(PART) and match["host"] == host and (
            int(match["pid"]) == pid or not _pid_alive(int(match["pid"]))
        )
        if not ours and age < stale_after:
            continue
        claim = path.with_name(f".{published_name(path).name}{CLAIMED}{host}-{pid}")
        try:
            os.rename(path, claim)
        except FileNotFoundError:  # another process claimed it first
            continue
        with open(claim, "r+b") as file:
            keep = complete_length(file.read())
            file.truncate(keep)
            file.flush()
            os.fsync(file.fileno())
        if keep == 0:
            claim.unlink()
            continue
        target = published_name(claim)
        os.rename(claim, target)
        log.warning("prediction log: recovered %s (%d bytes) left by a writer that stopped", target.name, keep)
        recovered.append(target)
    if recovered:
        _fsync_dir(directory)
    return recovered


def delete_expired(directory: Path, retention_s: float) -> list[Path]:
    """Delete published segments last written more than `retention_s` seconds ago."""
    cutoff = time.time() - retention_s
    deleted = []
    for path in segments(directory):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                deleted.append(path)
        except FileNotFoundError:
            continue
    return deleted


