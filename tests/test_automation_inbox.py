"""The inbox sensor, tick by tick, on a real instance: what a daemon would do, one evaluation at a time.

`tick` applies the partition requests the way the daemon does; `ingest` runs
what the sensor requested (real raw_sample runs), so the moves that wait for
raw_sample's verdict are exercised for real.
"""

import json
import os
import time
from pathlib import Path

import dagster as dg
import pytest

from spam_assets.definitions import defs as load_defs
from spam_assets.defs.assets.ingestion import raw_sample
from spam_assets.defs.automation.inbox import InboxCursor, candidates, inbox_sensor
from spam_assets.defs.partitions import batch_partitions
from spam_assets.defs.resources import ModelRegistry, PlatformStore
from tests.synthetic import sms_messages, write_jsonl, write_sms_file

DEFS = load_defs()


@pytest.fixture
def inbox(home, monkeypatch) -> Path:
    monkeypatch.delenv("SPAM_INBOX", raising=False)
    monkeypatch.setenv("SPAM_INBOX_SETTLE_SECONDS", "5")
    return home / "inbox"


def tick(instance, cursor=None):
    """One sensor evaluation, with its partition requests applied as the daemon would."""
    context = dg.build_sensor_context(
        instance=instance,
        instance_ref=instance.get_ref(),  # lets the context check partition keys
        cursor=cursor,
        definitions=DEFS,
        resources={"store": PlatformStore(), "registry": ModelRegistry()},  # $SPAM_HOME: the test's home
    )
    result = inbox_sensor.evaluate_tick(context)
    for request in result.dynamic_partitions_requests or []:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)
    return result


def ingest(instance, resources, result) -> list[bool]:
    return [
        dg.materialize(
            [raw_sample], partition_key=r.partition_key, instance=instance, resources=resources, tags=r.tags,
            raise_on_error=False,
        ).success
        for r in result.run_requests
    ]


def drop(path: Path, age_seconds: float = 60) -> Path:
    """Pretend the file was finished `age_seconds` ago."""
    then = time.time() - age_seconds
    os.utime(path, (then, then))
    return path


def sms_file(path: Path, seed: int, n: int = 60) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_sms_file(sms_messages(n, seed=seed), path)


def test_each_new_file_is_one_partition_and_one_run(instance, resources, inbox):
    a = drop(sms_file(inbox / "a.txt", seed=1))
    b = drop(write_jsonl(sms_messages(60, seed=2), inbox / "b.jsonl"))

    first = tick(instance)
    assert len(first.run_requests) == 2
    batches = PlatformStore().batches()
    keys = {r.partition_key for r in first.run_requests}
    assert keys == set(batches.ids()) == set(instance.get_dynamic_partitions(batch_partitions.name))
    assert {r.tags["spam/inbox_file"] for r in first.run_requests} == {"a.txt", "b.jsonl"}
    assert all(r.tags["spam/trigger"] == "inbox" for r in first.run_requests)
    assert len({r.run_key for r in first.run_requests}) == 2
    assert a.exists() and b.exists()  # judged by raw_sample first, moved after

    waiting = tick(instance, first.cursor)  # runs not finished yet
    assert not waiting.run_requests
    assert "2 waiting for raw_sample" in waiting.skip_message

    assert ingest(instance, resources, first) == [True, True]
    settled = tick(instance, waiting.cursor)
    assert not settled.run_requests
    assert sorted(p.name for p in (inbox / "processed").iterdir()) == ["a.txt", "b.jsonl"]
    assert candidates(inbox) == []
    assert InboxCursor.load(settled.cursor).pending == {}

    assert not tick(instance, settled.cursor).run_requests


def test_restart_with_the_saved_cursor_does_not_duplicate(instance, resources, inbox):
    drop(sms_file(inbox / "a.txt", seed=1))
    first = tick(instance)
    assert len(first.run_requests) == 1
    # A daemon restart: a new context, the cursor Dagster stored.
    for _ in range(2):
        assert not tick(instance, first.cursor).run_requests
    assert len(instance.get_dynamic_partitions(batch_partitions.name)) == 1

    ingest(instance, resources, first)
    settled = tick(instance, first.cursor)
    # The same bytes again, under another name, after a restart: no second partition.
    drop(sms_file(inbox / "a-again.txt", seed=1))
    again = tick(instance, settled.cursor)
    assert not again.run_requests
    assert len(instance.get_dynamic_partitions(batch_partitions.name)) == 1
    assert sorted(p.name for p in (inbox / "processed").iterdir()) == ["a-again.txt", "a.txt"]


def test_cursor_lost_while_the_run_is_in_flight_does_not_request_again(instance, inbox):
    drop(sms_file(inbox / "a.txt", seed=1))
    first = tick(instance)
    (request,) = first.run_requests
    partition = {"dagster/partition": request.partition_key}
    instance.add_run(dg.DagsterRun(job_name="ingest_batch", status=dg.DagsterRunStatus.STARTED, tags=partition))
    fresh = tick(instance, cursor=None)  # sensor reset in the UI
    assert not fresh.run_requests
    assert "1 waiting for raw_sample" in fresh.skip_message


def test_half_written_and_partial_files_are_left_alone(instance, inbox, monkeypatch):
    monkeypatch.setenv("SPAM_INBOX_SETTLE_SECONDS", "3600")  # only "unchanged since last tick" counts
    growing = sms_file(inbox / "growing.txt", seed=1, n=30)
    drop(sms_file(inbox / ".hidden.txt", seed=2), 7200)
    drop(sms_file(inbox / "upload.txt.part", seed=3), 7200)
    drop(sms_file(inbox / "copy.tmp", seed=4), 7200)

    first = tick(instance)
    assert not first.run_requests
    assert "1 settling" in first.skip_message
    assert list(json.loads(first.cursor)["seen"]) == ["growing.txt"]

    with growing.open("a", encoding="utf-8") as out:  # the writer is still at it
        out.write("ham\tone more line\n")
    second = tick(instance, first.cursor)
    assert not second.run_requests

    third = tick(instance, second.cursor)  # unchanged across two ticks: complete
    assert [r.tags["spam/inbox_file"] for r in third.run_requests] == ["growing.txt"]
    assert len(PlatformStore().batches().ids()) == 1


def test_recently_modified_file_waits_for_the_settle_time(instance, inbox):
    sms_file(inbox / "fresh.txt", seed=1)  # mtime now, settle 5 s
    assert not tick(instance).run_requests
    drop(inbox / "fresh.txt", age_seconds=6)
    assert len(tick(instance).run_requests) == 1


def test_malformed_file_is_moved_aside_with_its_reason_and_not_retried(instance, resources, inbox):
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / "notes.txt").write_text("shopping list\nmilk\n")
    drop(inbox / "notes.txt")
    first = tick(instance)
    assert ingest(instance, resources, first) == [False]  # blocking checks fail the run
    settled = tick(instance, first.cursor)
    assert not settled.run_requests
    assert not (inbox / "notes.txt").exists()
    assert (inbox / "rejected" / "notes.txt").read_text() == "shopping list\nmilk\n"
    reason = (inbox / "rejected" / "notes.txt.reason.txt").read_text()
    assert f"batch {first.run_requests[0].partition_key}" in reason
    assert "batch_schema" in reason and "cannot tell the format" in reason
    assert "failed checks:" in reason and "- batch_min_rows:" in reason
    for _ in range(2):
        assert not tick(instance, settled.cursor).run_requests


def test_run_that_dies_before_judging_rejects_the_file_and_drops_its_partition(instance, inbox):
    drop(sms_file(inbox / "a.txt", seed=1))
    first = tick(instance)
    (request,) = first.run_requests

    @dg.asset(name="raw_sample", partitions_def=batch_partitions)
    def crashing():
        raise MemoryError("killed")

    crashed = dg.materialize([crashing], partition_key=request.partition_key, instance=instance, raise_on_error=False)
    assert not crashed.success
    settled = tick(instance, first.cursor)
    assert request.partition_key not in instance.get_dynamic_partitions(batch_partitions.name)
    reason = (inbox / "rejected" / "a.txt.reason.txt").read_text()
    assert "ended FAILURE before judging the batch" in reason

    # Dropping it again is an explicit retry: new partition, new run key.
    (inbox / "rejected" / "a.txt").rename(inbox / "a.txt")
    retry = tick(instance, settled.cursor)
    assert [r.partition_key for r in retry.run_requests] == [request.partition_key]
    assert retry.run_requests[0].run_key != request.run_key


def test_inbox_folder_is_configurable(instance, tmp_path, monkeypatch, home):
    elsewhere = tmp_path / "drop-here"
    monkeypatch.setenv("SPAM_INBOX", str(elsewhere))
    drop(sms_file(elsewhere / "a.txt", seed=1))
    assert len(tick(instance).run_requests) == 1


def test_email_folder_counts_as_one_batch(instance, inbox):
    tree = inbox / "mail-drop"
    for folder, label in (("spam", "spam"), ("easy_ham", "ham")):
        (tree / folder).mkdir(parents=True)
        for i in range(3):
            (tree / folder / f"{i}.eml").write_text(f"From: a@b.c\nSubject: {label} {i}\n\nbody {i}\n")
    for path in [tree, *tree.rglob("*")]:
        drop(path)
    first = tick(instance)
    assert [r.tags["spam/inbox_file"] for r in first.run_requests] == ["mail-drop"]


# --- sources/<NAME>/: each entry in it is a batch of source NAME ----------------------------------------


def mail_archive(path: Path, n: int = 12) -> Path:
    """An e-mail .tar.gz with spam/ and easy_ham/ folders: what a mailbox export looks like."""
    import io
    import tarfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for folder, label in (("spam", "spam"), ("easy_ham", "ham")):
            for i in range(n):
                data = f"From: a@b.c\nSubject: {label} {i}\n\n{label} message {i} about {'prizes' if label == 'spam' else 'lunch'}\n".encode()
                member = tarfile.TarInfo(f"{folder}/{i:04d}.eml")
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
    return path


def mail_folder(root: Path, n: int = 12) -> Path:
    """An e-mail folder (spam/, easy_ham/), every part of it finished a minute ago."""
    for folder, label in (("spam", "spam"), ("easy_ham", "ham")):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            text = f"From: x@y.z\nSubject: {label} note {i}\n\n{label} note {i} about {'cash' if label == 'spam' else 'the meeting'}\n"
            (root / folder / f"{i:04d}.eml").write_text(text)
    for path in [root, *root.rglob("*")]:
        drop(path)
    return root


def test_an_entry_of_sources_name_is_staged_under_that_source_name(instance, resources, inbox):
    sources = inbox / "sources"
    drop(sms_file(sources / "support" / "a.txt", seed=1))
    with_column = sources / "support" / "b.jsonl"  # rows that name a source of their own: the folder wins, as the flag does
    with_column.write_text("".join(json.dumps({**row, "source": "chat"}) + "\n" for row in sms_messages(60, seed=3).to_dict("records")))
    drop(with_column)
    drop(mail_archive(sources / "support-mailbox" / "export.tar.gz"))
    mail_folder(sources / "support-mailbox" / "march")  # an e-mail folder in it: one batch, of that source
    drop(sms_file(inbox / "b.txt", seed=2))

    first = tick(instance)
    by_file = {r.tags["spam/inbox_file"]: r.partition_key for r in first.run_requests}
    in_sources = {"sources/support/a.txt", "sources/support/b.jsonl", "sources/support-mailbox/export.tar.gz", "sources/support-mailbox/march"}
    assert set(by_file) == in_sources | {"b.txt"}
    assert set(InboxCursor.load(first.cursor).pending) == set(by_file)  # cursor keys: paths under the inbox
    assert ingest(instance, resources, first) == [True] * 5
    batches = PlatformStore().batches()
    names = {file: set(batches.read_parsed(batch)["source_name"]) for file, batch in by_file.items()}
    assert names == {
        "sources/support/a.txt": {"support"}, "sources/support/b.jsonl": {"support"},
        "sources/support-mailbox/export.tar.gz": {"support-mailbox"},
        "sources/support-mailbox/march": {"support-mailbox"}, "b.txt": {"sms"},
    }
    assert batches.spec(by_file["sources/support/a.txt"]).source == "support"  # as `ingest --source-name support` stores it

    settled = tick(instance, first.cursor)
    # Each entry moves to the processed/ beside it; processed/ folders are never batches, nor taken again.
    assert sorted(p.name for p in (sources / "support" / "processed").iterdir()) == ["a.txt", "b.jsonl"]
    assert sorted(p.name for p in (sources / "support-mailbox" / "processed").iterdir()) == ["export.tar.gz", "march"]
    assert [p.name for p in (inbox / "processed").iterdir()] == ["b.txt"]
    assert candidates(inbox) == [] and InboxCursor.load(settled.cursor).pending == {}
    assert not tick(instance, settled.cursor).run_requests
    assert len(batches.ids()) == 5


def test_a_folder_at_the_top_is_one_batch_whatever_its_shape_and_a_file_named_sources_is_a_file(instance, inbox):
    # No e-mail folder inside, no sources/ around it: still one batch, read as on main (never a source name).
    drop(sms_file(inbox / "support" / "a.txt", seed=1))
    drop(inbox / "support")
    drop(sms_file(inbox / "sources", seed=2))  # a file: the name is reserved only for a real folder

    first = tick(instance)
    by_file = {r.tags["spam/inbox_file"]: r.partition_key for r in first.run_requests}
    assert set(by_file) == {"support", "sources"}
    batches = PlatformStore().batches()
    assert batches.spec(by_file["support"]).source is None and batches.spec(by_file["sources"]).source is None


def test_a_bad_source_folder_name_or_a_file_directly_in_sources_is_rejected_and_stalls_nothing(
    instance, inbox, monkeypatch
):
    from spam_assets.loaders.source_names import RULE
    from spam_assets.services import free_local_port

    sources = inbox / "sources"
    drop(sms_file(sources / "Support Mail" / "a.txt", seed=1))
    drop(sms_file(sources / "loose.txt", seed=3))
    drop(sms_file(inbox / "good.txt", seed=2))
    # The registry is down: the good file waits, the ones that can never be staged are rejected all the same.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_local_port()}")
    monkeypatch.setenv("SPAM_REGISTRY_TIMEOUT_SECONDS", "1")
    down = tick(instance)
    assert not down.run_requests and "until the registry is back" in down.skip_message
    assert not (sources / "Support Mail" / "a.txt").exists()
    reason = (sources / "Support Mail" / "rejected" / "a.txt.reason.txt").read_text()
    assert "the folder sources/Support Mail/ names the source of the batches in it" in reason
    assert f"'Support Mail' is not a source name ({RULE})" in reason
    assert (sources / "Support Mail" / "rejected" / "a.txt").exists() and (inbox / "good.txt").exists()
    loose = (sources / "rejected" / "loose.txt.reason.txt").read_text()
    assert "sources/loose.txt is directly in the inbox's sources/ folder" in loose
    assert "move it into sources/<NAME>/ to stage it with source name NAME" in loose
    assert (sources / "rejected" / "loose.txt").exists() and not (sources / "loose.txt").exists()
    assert PlatformStore().batches().ids() == []

    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # back: the embedded store
    back = tick(instance, down.cursor)
    assert [r.tags["spam/inbox_file"] for r in back.run_requests] == ["good.txt"]
    assert not tick(instance, back.cursor).run_requests  # sources/rejected/ is never a source folder


def test_links_in_sources_are_refused_unread_and_deeper_folders_are_part_of_their_batch(instance, resources, inbox, tmp_path):
    sources = inbox / "sources"
    drop(sms_file(sources / "support" / "a.txt", seed=1))
    deeper = sources / "support" / "export" / "easy_ham" / "2024" / "0100.eml"  # deeper still: in that one batch
    deeper.parent.mkdir(parents=True)
    deeper.write_text("From: x@y.z\nSubject: minutes\n\nthe minutes of the 2024 meeting\n")
    mail_folder(sources / "support" / "export")
    outside = sms_file(tmp_path / "outside" / "c.txt", seed=3)
    (sources / "support" / "link.txt").symlink_to(outside)
    (sources / "elsewhere").symlink_to(outside.parent)  # a link as a source folder: never followed

    first = tick(instance)
    by_file = {r.tags["spam/inbox_file"]: r.partition_key for r in first.run_requests}
    assert set(by_file) == {"sources/support/a.txt", "sources/support/export"}
    assert (sources / "support" / "rejected" / "link.txt").is_symlink()  # refused unread, as at the top
    assert "is a symbolic link" in (sources / "support" / "rejected" / "link.txt.reason.txt").read_text()
    assert (sources / "rejected" / "elsewhere").is_symlink() and outside.exists()
    assert "is a symbolic link" in (sources / "rejected" / "elsewhere.reason.txt").read_text()
    assert len(PlatformStore().batches().ids()) == 2

    assert ingest(instance, resources, first) == [True, True]
    parsed = PlatformStore().batches().read_parsed(by_file["sources/support/export"])
    assert set(parsed["source_name"]) == {"support"} and len(parsed) == 25
    assert parsed.set_index("source").loc["easy_ham/2024/0100.eml", "label"] == "ham"  # the loader's usual rules


def test_an_unreadable_source_folder_is_named_in_a_warning_and_the_rest_is_listed(tmp_path, monkeypatch, caplog):
    """A sources/NAME/ the sensor cannot read (permissions) stages nothing, says so, and stalls nothing else."""
    inbox = tmp_path / "inbox"
    (inbox / "sources" / "locked").mkdir(parents=True)
    (inbox / "sources" / "locked" / "a.csv").write_text("text,label\nhi,ham\n")
    (inbox / "sources" / "open").mkdir()
    (inbox / "sources" / "open" / "b.csv").write_text("text,label\nhi,ham\n")
    (inbox / "top.csv").write_text("text,label\nhi,ham\n")
    real_iterdir = Path.iterdir

    def iterdir(self):
        if self.name == "locked":  # root reads any folder: refuse this one as a permission would
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    with caplog.at_level("WARNING", logger="spam_assets.defs.automation.inbox"):
        keys = sorted(entry.key for entry in candidates(inbox))
    assert keys == ["sources/open/b.csv", "top.csv"]
    assert "cannot read" in caplog.text and str(inbox / "sources" / "locked") in caplog.text
