"""Hostile files, through the real paths: links, FIFOs, huge lines, bombs, loops, bad rows, a full disk.

Each test checks the rejection reason, that nothing outside the inbox or the
named source was read or copied (a marker string that only the outside file
holds never shows up in the platform home), and that the loop goes on (a
good file next to the hostile one still becomes a batch). The two big files
are read in a subprocess whose peak RSS (ru_maxrss) may grow by at most
RSS_GROWTH_BOUND_MIB past its peak after the imports: far below the file's own size.
"""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from spam_assets.batches import STAGING_PREFIX, BatchStore, StagingError
from spam_assets.defs.assets.ingestion import RawSampleConfig, raw_sample
from spam_assets.intake import register
from spam_assets.loaders import (
    BatchFormatError,
    LimitExceededError,
    Limits,
    RefusedEntryError,
    read_batch,
    read_batch_rows,
)
from spam_assets.loaders.limits import parse_size
from tests.test_automation_inbox import drop, sms_file, tick  # the sensor, tick by tick, on a real instance

MARKER = "OUTSIDE-SECRET-7f3a"  # only files outside the inbox hold it
MiB = 1 << 20
# How much the peak RSS of the reading process may grow past its peak after the imports
# (~280 MiB here: the package imports Dagster). Reading the 200 MB line or the 2 GiB member
# whole would add at least their size; streaming them adds a few MiB of buffers.
RSS_GROWTH_BOUND_MIB = 64


@pytest.fixture
def inbox(home, monkeypatch) -> Path:
    monkeypatch.delenv("SPAM_INBOX", raising=False)
    monkeypatch.setenv("SPAM_INBOX_SETTLE_SECONDS", "5")
    folder = home / "inbox"
    folder.mkdir()
    return folder


def outside_mail(folder: Path) -> Path:
    """A file outside the inbox, shaped like a mail (what the issue saw accepted into the corpus)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "secret.eml"
    path.write_text(f"From: a@b.c\nSubject: private\n\n{MARKER} do not read me\n")
    return path


def nothing_leaked(home: Path) -> None:
    """The marker is in no file under the home (batches, parsed tables, reasons), and no staging folder is left."""
    for path in home.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert MARKER.encode() not in path.read_bytes(), f"{path} holds what only the outside file holds"
    batches = home / "batches"
    assert not batches.exists() or not [p for p in batches.iterdir() if p.name.startswith(STAGING_PREFIX)]


def mail_tree(root: Path, n: int = 20, empty: set[int] = frozenset()) -> Path:
    for label, folder in (("spam", "spam"), ("ham", "easy_ham")):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            body = "" if (label, i) in empty else f"{label} message number {i} about {'prizes' if label == 'spam' else 'lunch'}"
            subject = "" if (label, i) in empty else f"{label} {i}"
            (root / folder / f"{i:04d}.eml").write_text(f"From: a@b.c\nSubject: {subject}\n\n{body}\n")
    return root


def materialize(instance, resources, store_root: Path, source: Path, **config) -> tuple[dict, BatchStore]:
    """Stage `source` and run the real raw_sample on it; return the verdict written for it."""
    batches = BatchStore(store_root)
    batch_id = batches.stage(source)
    register(instance, batch_id)
    dg.materialize(
        [raw_sample], partition_key=batch_id, instance=instance, resources=resources, raise_on_error=False,
        run_config=dg.RunConfig({"raw_sample": RawSampleConfig(**config)}),
    )
    return batches.validation(batch_id) | {"batch_id": batch_id}, batches


def within(seconds: float, action, fifo: Path | None = None):
    """Run `action` in a thread; if it is still blocked after `seconds`, unblock the FIFO and fail."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = action()
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        if fifo is not None:  # a writer lets a blocked reader return, so the test run can end
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        pytest.fail(f"still blocked after {seconds} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


# --- symlinks --------------------------------------------------------------------------------------


def test_symlink_in_the_inbox_is_refused_unread_and_the_loop_goes_on(instance, inbox, home, tmp_path):
    secret = outside_mail(tmp_path / "outside")
    (inbox / "looks-like-mail.eml").symlink_to(secret)
    (inbox / "passwd").symlink_to("/etc/passwd")
    drop(sms_file(inbox / "good.txt", seed=1))

    result = tick(instance)
    assert [r.tags["spam/inbox_file"] for r in result.run_requests] == ["good.txt"]
    for name in ("looks-like-mail.eml", "passwd"):
        moved = inbox / "rejected" / name
        assert moved.is_symlink(), "the link itself is moved, never what it points to"
        reason = (inbox / "rejected" / f"{name}.reason.txt").read_text()
        assert "is a symbolic link, not a regular file or folder; refused unread" in reason
        assert str(inbox / name) in reason
    assert "root:" not in (inbox / "rejected" / "passwd.reason.txt").read_text()
    assert BatchStore(home / "batches").ids() == [result.run_requests[0].partition_key]
    nothing_leaked(home)


def test_symlink_inside_a_mail_folder_refuses_the_folder_before_copying(instance, inbox, home, tmp_path):
    secret = outside_mail(tmp_path / "outside")
    tree = mail_tree(tmp_path / "drop")
    (tree / "spam" / "9999.eml").symlink_to(secret)

    with pytest.raises(RefusedEntryError) as caught:
        BatchStore(home / "batches").stage(tree)
    assert str(tree / "spam" / "9999.eml") in str(caught.value) and "symbolic link" in str(caught.value)
    with pytest.raises(RefusedEntryError):
        read_batch(tree)  # the loader refuses it too, whoever calls it

    (tree).rename(inbox / "drop")
    for path in [inbox / "drop", *(inbox / "drop").rglob("*")]:
        os.utime(path, (time.time() - 60,) * 2, follow_symlinks=False)
    drop(sms_file(inbox / "good.txt", seed=2))
    result = tick(instance)
    assert [r.tags["spam/inbox_file"] for r in result.run_requests] == ["good.txt"]
    reason = (inbox / "rejected" / "drop.reason.txt").read_text()
    assert "not staged" in reason and "9999.eml: is a symbolic link" in reason
    nothing_leaked(home)


def test_symlink_loop_in_a_mail_folder_is_a_clear_error_with_no_leftovers(home, tmp_path):
    tree = mail_tree(tmp_path / "drop", n=3)
    (tree / "spam" / "again").symlink_to(tree)  # spam/again/spam/again/... for ever, if followed
    store = BatchStore(home / "batches")
    with pytest.raises(RefusedEntryError) as caught:
        store.stage(tree)
    assert "again: is a symbolic link" in str(caught.value)
    assert store.ids() == [] and list((home / "batches").iterdir()) == []  # no staging folder left


# --- FIFOs and other special files -------------------------------------------------------------------


def test_fifo_never_blocks_the_inbox_or_a_reader(instance, inbox, home):
    fifo = inbox / "pipe.csv"
    os.mkfifo(fifo)
    drop(sms_file(inbox / "good.txt", seed=3))

    with pytest.raises(RefusedEntryError, match="FIFO"):
        within(20, lambda: read_batch(fifo), fifo)
    with pytest.raises(RefusedEntryError, match="FIFO"):
        within(20, lambda: BatchStore(home / "batches").stage(fifo), fifo)

    result = within(120, lambda: tick(instance), fifo)
    assert [r.tags["spam/inbox_file"] for r in result.run_requests] == ["good.txt"]
    assert not fifo.exists()
    reason = (inbox / "rejected" / "pipe.csv.reason.txt").read_text()
    assert "is a FIFO (named pipe), not a regular file or folder; refused unread" in reason


def test_unix_socket_in_the_inbox_is_refused(instance, inbox, tmp_path):
    import socket

    path = inbox / "sock"
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(path))
        tick(instance)
    finally:
        server.close()
    assert "is a socket" in (inbox / "rejected" / "sock.reason.txt").read_text()


# --- size limits, while streaming ----------------------------------------------------------------------

READ_IN_A_SUBPROCESS = r"""
import json, resource, sys
from pathlib import Path
from spam_assets.batches import BatchStore
from spam_assets.loaders import BatchFormatError, read_batch_rows
from spam_assets.validation import BatchRules, judge, rejection_reason

source, store_root, policy, ceiling = sys.argv[1], Path(sys.argv[2]), sys.argv[3], float(sys.argv[4])
after_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = {}
try:
    store = BatchStore(store_root)
    received = store.received_path(store.stage(source))
    try:
        read = read_batch_rows(received)
        verdict = judge(read.table, None, BatchRules(policy=policy, max_quarantined_share=ceiling), read.problems)
    except BatchFormatError as error:
        verdict = judge(None, str(error))
    out = {"accepted": verdict.accepted, "reason": rejection_reason(verdict.outcomes),
           "kept": 0 if verdict.kept is None else len(verdict.kept), "quarantined": verdict.quarantined}
except BatchFormatError as error:
    out = {"not_staged": str(error)}
out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out["growth_mib"] = out["peak_rss_mib"] - after_imports / 1024
print(json.dumps(out))
"""


def read_elsewhere(source: Path, store_root: Path, policy: str = "quarantine", ceiling: float = 0.05) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", READ_IN_A_SUBPROCESS, str(source), str(store_root), policy, str(ceiling)],
        capture_output=True, text=True, timeout=600, check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def csv_with_a_huge_line(path: Path, huge_bytes: int = 200 * 1000 * 1000) -> Path:
    """12 good rows and one 200 MB row, written in 1 MiB pieces (never held in memory)."""
    with path.open("w", encoding="utf-8") as out:
        out.write("text,label\n")
        for i in range(12):
            out.write(f"good message number {i} about lunch,{'ham' if i % 3 else 'spam'}\n")
        out.write('"')
        piece = "x" * MiB
        for _ in range(huge_bytes // MiB):
            out.write(piece)
        out.write('",spam\n')
    return path


@pytest.mark.parametrize(
    "policy, ceiling, accepted", [("reject", 0.05, False), ("quarantine", 0.05, False), ("quarantine", 0.1, True)]
)
def test_a_200_mb_line_stops_at_the_message_limit(tmp_path, policy, ceiling, accepted):
    source = csv_with_a_huge_line(tmp_path / "batch.csv")
    out = read_elsewhere(source, tmp_path / "batches", policy, ceiling)
    assert out["accepted"] is accepted
    if accepted:  # 1 of 13 rows is within a 10% ceiling: the 12 good rows go on
        assert out["kept"] == 12
        (row,) = out["quarantined"]
        assert row["row"] == 13 and row["source"] == "batch.csv:13"
        assert HUGE_LINE.search(row["reason"])
    else:
        assert HUGE_LINE.search(out["reason"])
        assert "batch.csv" in out["reason"]
    assert out["growth_mib"] < RSS_GROWTH_BOUND_MIB, out


HUGE_LINE = re.compile(r"line 14 is 19\d MiB, over the limit of 1 MiB \(set SPAM_MAX_MESSAGE_BYTES")


class Zeros:
    """A file-like source of n zero bytes, so a 2 GiB member is never in memory."""

    def __init__(self, n: int) -> None:
        self.left = n

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        self.left -= size
        return bytes(size)


def test_a_2_gib_zero_member_is_refused_from_its_header(tmp_path):
    bomb = tmp_path / "bomb.tar.gz"
    with gzip.open(bomb, "wb", compresslevel=1) as packed, tarfile.open(fileobj=packed, mode="w|") as archive:
        data = b"From: a@b.c\nSubject: hi\n\nwin money\n"
        info = tarfile.TarInfo("spam/0001.eml")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("spam/0002.eml")
        info.size = 2 << 30
        archive.addfile(info, Zeros(info.size))
    assert bomb.stat().st_size < 20 * MiB  # tiny on disk: gzip of zeros

    out = read_elsewhere(bomb, tmp_path / "batches")
    assert out["accepted"] is False
    assert "member spam/0002.eml is 2 GiB decompressed, over the limit of 16 MiB" in out["reason"]
    assert "SPAM_MAX_MEMBER_BYTES" in out["reason"] and "not read further" in out["reason"]
    assert out["growth_mib"] < RSS_GROWTH_BOUND_MIB, out


def test_compression_ratio_guard_stops_a_bomb_of_small_members(tmp_path):
    bomb = tmp_path / "many.tar.gz"
    body = b"From: a@b.c\nSubject: x\n\n" + b"a" * (MiB - 64) + b"\n"
    with tarfile.open(bomb, "w:gz") as archive:
        for i in range(64):  # 64 MiB decompressed, about 70 KiB compressed
            info = tarfile.TarInfo(f"spam/{i:04d}.eml")
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
    with pytest.raises(LimitExceededError) as caught:
        read_batch(bomb, limits=Limits(message_bytes=2 * MiB))
    assert "(ratio" in str(caught.value) and "a decompression bomb?" in str(caught.value)
    assert "SPAM_MAX_COMPRESSION_RATIO" in str(caught.value)
    # A real corpus (text gzips ~4x) passes the same guard: see test_loaders' real corpora.


def test_file_and_batch_limits_are_configurable_and_enforced_while_copying(home, tmp_path, monkeypatch):
    big = tmp_path / "big.txt"
    big.write_text("ham\thello there\n" * 200)  # 3.2 KB
    monkeypatch.setenv("SPAM_MAX_FILE_BYTES", "2K")
    store = BatchStore(home / "batches")
    with pytest.raises(LimitExceededError, match=r"the file is larger than 2 KiB.*SPAM_MAX_FILE_BYTES"):
        store.stage(big)
    monkeypatch.setenv("SPAM_MAX_FILE_BYTES", "1M")
    monkeypatch.setenv("SPAM_MAX_BATCH_BYTES", "5K")
    tree = mail_tree(tmp_path / "drop", n=60)  # ~120 files of ~60 bytes: over 5 KiB in all
    with pytest.raises(LimitExceededError, match=r"the batch is larger than 5 KiB.*SPAM_MAX_BATCH_BYTES"):
        store.stage(tree)
    assert list((home / "batches").iterdir()) == []
    assert parse_size("1.5M") == 3 * MiB // 2
    monkeypatch.setenv("SPAM_MAX_MESSAGE_BYTES", "lots")
    with pytest.raises(ValueError, match="SPAM_MAX_MESSAGE_BYTES='lots' is not a positive size"):
        Limits.from_env()


# --- the batch policy --------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["quarantine", "reject"])
def test_one_empty_email_among_good_ones_under_both_policies(instance, resources, home, tmp_path, policy):
    tree = mail_tree(tmp_path / "drop", n=200, empty={("spam", 7)})  # 400 e-mails, one empty
    verdict, batches = materialize(instance, resources, home / "batches", tree, policy=policy)
    batch_id = verdict["batch_id"]
    if policy == "quarantine":
        assert verdict["accepted"] and verdict["quarantined"] == 1
        assert len(batches.read_parsed(batch_id)) == 399
        (row,) = batches.quarantined(batch_id)
        assert row["source"] == "spam/0007.eml" and row["reason"] == "empty text"
        event = instance.get_latest_materialization_event(dg.AssetKey("raw_sample"))
        metadata = event.asset_materialization.metadata
        assert metadata["quarantined_rows"].value == 1 and "spam/0007.eml" in metadata["quarantine"].value
    else:
        assert not verdict["accepted"]
        assert "batch_empty_texts: 1 empty texts in spam/0007.eml" in verdict["reason"]
        assert batches.quarantined(batch_id) == []


def test_a_bad_jsonl_line_is_quarantined_and_its_good_lines_kept(instance, resources, home, tmp_path):
    lines = [json.dumps({"text": f"message {i} about lunch", "label": "ham"}) for i in range(30)]
    lines.insert(6, '{"text": "broken", label}')
    source = tmp_path / "batch.jsonl"
    source.write_text("\n".join(lines) + "\n")
    verdict, batches = materialize(instance, resources, home / "batches", source)
    assert verdict["accepted"] and verdict["policy"] == "quarantine"
    assert len(batches.read_parsed(verdict["batch_id"])) == 30
    (row,) = batches.quarantined(verdict["batch_id"])
    assert row["row"] == 7 and row["source"] == "batch.jsonl:7"
    assert "batch.jsonl, row 7: line 7 is not valid JSON" in row["reason"] and row["text"] == '{"text": "broken", label}'

    rejected, _ = materialize(instance, resources, home / "batches", source, policy="reject")
    assert not rejected["accepted"] and "line 7 is not valid JSON" in rejected["reason"]


def test_too_many_bad_rows_reject_even_under_quarantine(home, tmp_path):
    source = tmp_path / "batch.csv"
    source.write_text("text,label\n" + "".join(f"message {i},{'ham' if i % 2 else 'maybe'}\n" for i in range(40)))
    read = read_batch_rows(source)
    from spam_assets.validation import BatchRules, judge, rejection_reason

    verdict = judge(read.table, None, BatchRules(), read.problems)
    assert not verdict.accepted
    assert "50.0% of 40 rows bad; at most 5% may be quarantined" in rejection_reason(verdict.outcomes)


LATIN1_DECLARED_UTF16 = (
    b"From: a@b.c\nSubject: offer\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-16\n"
    b"Content-Transfer-Encoding: 8bit\n\nDear friend, you have won a caf\xe9 voucher worth 500 pounds. "
    b"Reply today to claim it before the offer ends.\n"
)


def test_body_declared_utf16_that_is_latin1_is_flagged_not_accepted(tmp_path):
    tree = mail_tree(tmp_path / "drop", n=30)
    (tree / "spam" / "0100.eml").write_bytes(LATIN1_DECLARED_UTF16)
    with pytest.raises(BatchFormatError, match="declared charset utf-16 holds 8-bit text"):
        read_batch(tree)
    read = read_batch_rows(tree)
    (problem,) = read.problems
    assert problem.source == "spam/0100.eml" and "CJK mojibake" in problem.reason
    assert "caf\u00e9 voucher" in problem.excerpt  # decoded as what it really is, for the person looking
    assert len(read.table) == 60


def test_cjk_mojibake_in_any_format_is_flagged(tmp_path):
    english = "Hello there, this is a perfectly normal message about a meeting at noon. " * 4
    mojibake = english.encode("latin-1").decode("utf-16-le")  # what a wrong charset makes of it
    source = tmp_path / "batch.jsonl"
    rows = [{"text": f"message {i}", "label": "ham"} for i in range(20)] + [{"text": mojibake, "label": "spam"}]
    source.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    (problem,) = read_batch_rows(source).problems
    assert problem.row == 21 and "mojibake" in problem.reason
    chinese = "我们的产品非常好，欢迎购买。今天特价，只需九十九元！请立即联系我们的客服人员获取更多信息。谢谢您的关注。"
    source.write_text(json.dumps({"text": chinese, "label": "spam"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert read_batch_rows(source).problems == []  # real Chinese is not mojibake


# --- a full disk while staging, and staging leftovers -----------------------------------------------


def full_disk_after(first_bytes: int):
    """A stand-in for batches._copy_file that writes a little, then fails as a full disk does."""
    from spam_assets import batches as batches_module

    real = batches_module._copy_file

    def copy_file(source, target, digest, limits, before):
        if target is not None:
            target.write_bytes(b"x" * first_bytes)  # a partial file, as a real full disk leaves
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(source, target, digest, limits, before)

    return copy_file


def test_disk_full_while_staging_rejects_with_a_reason_and_leaves_nothing(instance, inbox, home, monkeypatch):
    from spam_assets import batches as batches_module

    monkeypatch.setattr(batches_module, "_copy_file", full_disk_after(100))
    drop(sms_file(inbox / "a.txt", seed=4))
    with pytest.raises(StagingError) as caught:
        BatchStore(home / "batches").stage(inbox / "a.txt")
    assert caught.value.errno == errno.ENOSPC and "no space left on the disk" in str(caught.value)

    result = tick(instance)
    assert not result.run_requests
    reason = (inbox / "rejected" / "a.txt.reason.txt").read_text()
    assert "a.txt was rejected" in reason and "not staged: could not copy" in reason
    assert "no space left on the disk" in reason and "send the batch again" in reason
    assert [p.name for p in (home / "batches").iterdir()] == []  # no partial staging folder

    monkeypatch.undo()  # space again: the same file, dropped again, goes through
    monkeypatch.setenv("SPAM_HOME", str(home))
    monkeypatch.setenv("SPAM_INBOX_SETTLE_SECONDS", "5")
    (inbox / "rejected" / "a.txt").rename(inbox / "a.txt")
    assert len(tick(instance, result.cursor).run_requests) == 1


def test_no_room_even_for_the_reason_leaves_the_file_in_the_inbox(instance, inbox, home, monkeypatch):
    from spam_assets import batches as batches_module
    from spam_assets.defs.automation import inbox as inbox_module

    monkeypatch.setattr(batches_module, "_copy_file", full_disk_after(0))

    def no_room(path, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(inbox_module, "write_text_atomic", no_room)
    drop(sms_file(inbox / "a.txt", seed=5))
    tick(instance)
    assert (inbox / "a.txt").exists()  # not moved reasonless into rejected/
    assert not (inbox / "rejected" / "a.txt").exists()


def test_staging_leftovers_are_removed_at_the_next_tick(instance, inbox, home):
    batches = home / "batches"
    crashed = batches / f"{STAGING_PREFIX}abc123"  # what a kill -9 mid-copy leaves
    legacy = batches / "tmpab12cd34"  # the older staging name, with a meta.json that fooled ids()
    for folder in (crashed, legacy):
        (folder / "received").mkdir(parents=True)
        (folder / "received" / "big.txt").write_bytes(b"x" * 4096)
    (legacy / "meta.json").write_text(json.dumps({"batch_id": "0" * 16, "received_at": "2020", "spec": {}}))
    in_progress = batches / f"{STAGING_PREFIX}now"
    in_progress.mkdir()
    an_hour_ago = time.time() - 3600
    for folder in (crashed, legacy):
        os.utime(folder, (an_hour_ago, an_hour_ago))
    assert BatchStore(batches).ids() == []  # never taken for a batch, even before cleaning

    tick(instance)
    assert sorted(p.name for p in batches.iterdir()) == [in_progress.name]  # a young one may be in use
    assert BatchStore(batches).remove_staging_leftovers(older_than=0) == [in_progress.name]  # at start-up


# --- with the real daemon ------------------------------------------------------------------------------


def _wait_for(condition, timeout: float, platform, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(2)
    pytest.fail(f"{what}: not within {timeout} s; daemon log ends:\n{platform.daemon_tail()}")


@pytest.mark.slow
def test_hostile_inbox_with_the_real_daemon_goes_on(tmp_path):
    """A FIFO, links and a link loop among good files, with `dagster-daemon run`: none blocks the
    sensor, each is rejected with its reason, the good files are judged, nothing outside is read."""
    from spam_assets.instance import DAGSTER_YAML
    from tests.test_loop_e2e import Platform

    platform = Platform(tmp_path, webhook_url="")
    platform.env.update(SPAM_INBOX_SETTLE_SECONDS="1")
    platform.dagster_home.mkdir(parents=True)
    (platform.dagster_home / "dagster.yaml").write_text(DAGSTER_YAML)  # the instance `up` writes
    inbox = platform.inbox
    inbox.mkdir(parents=True)
    secret = outside_mail(tmp_path / "outside")
    os.mkfifo(inbox / "pipe.csv")
    (inbox / "looks-like-mail.eml").symlink_to(secret)
    tree = mail_tree(tmp_path / "loop-drop", n=3)
    (tree / "spam" / "again").symlink_to(tree)
    tree.rename(inbox / "loop-drop")
    sms_file(tmp_path / "good-1.txt", seed=11).rename(inbox / "good-1.txt")

    platform.start_daemon()
    try:
        rejected, processed = inbox / "rejected", inbox / "processed"
        _wait_for(
            lambda: (processed / "good-1.txt").exists()
            and all((rejected / f"{name}.reason.txt").exists() for name in ("pipe.csv", "looks-like-mail.eml", "loop-drop")),
            600, platform, "the first good file judged and the hostile ones rejected",
        )
        assert "is a FIFO (named pipe)" in (rejected / "pipe.csv.reason.txt").read_text()
        assert "is a symbolic link" in (rejected / "looks-like-mail.eml.reason.txt").read_text()
        assert "again: is a symbolic link" in (rejected / "loop-drop.reason.txt").read_text()
        assert (rejected / "looks-like-mail.eml").is_symlink()

        # The loop goes on: a later good file is judged too.
        sms_file(tmp_path / "good-2.txt", seed=12).rename(inbox / "good-2.txt")
        _wait_for(lambda: (processed / "good-2.txt").exists(), 600, platform, "the second good file judged")
        batches = BatchStore(platform.home / "batches")
        assert len(batches.accepted_ids()) == 2
    finally:
        platform.stop()
    nothing_leaked(platform.home)
