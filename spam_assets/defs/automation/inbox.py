"""The inbox sensor: each complete file dropped into <home>/inbox becomes one raw_sample partition.

A tick does two things, both driven by the cursor (JSON, stored by Dagster,
so it survives daemon restarts):

1. Files staged on an earlier tick whose raw_sample has judged them are moved
   out of the inbox: to processed/, or to rejected/ with <name>.reason.txt.
   Waiting for raw_sample (rather than judging here) keeps one definition
   of "valid" and shows the verdict in the UI before the file moves.
2. New files that are complete are staged (content-hashed, so the same
   bytes are one batch however often they arrive), their partition added
   and one run requested. A file counts as complete when untouched for
   SPAM_INBOX_SETTLE_SECONDS or unchanged since the previous tick; dotfiles
   and .part/.tmp names are never read (write there, then rename).
   Symlinks, FIFOs, devices and sockets are moved to rejected/ unread, with
   the reason; so is a file over a size limit or one that fails to stage
   (a full disk), and partial staging folders are removed.
   Before staging, the registry must answer and the disk must have room for
   the file and a model (intake.disk_problem): otherwise the file, which is
   fine, waits in the inbox, unstaged, and the skip reason says why; a
   later tick takes it once the registry is back or space is freed.

Exactly once: a staged file sits in the cursor's `pending` until moved, and
the run key (batch id + earlier runs of that partition) stops the daemon
from launching a duplicate if a tick is evaluated twice.

Naming a batch's source: each entry of <inbox>/sources/<NAME>/ (a file, an
archive, an e-mail folder) is one batch staged with source name NAME
(SourceSpec(source=NAME), as `spam-platform ingest --source-name NAME`).
The folder is reserved and explicit: nothing is guessed from a folder's
shape or remembered between ticks, and everything at the top of the inbox
is read as it always was (a folder there is one e-mail batch). Every entry
moves to the processed/ or rejected/ beside it (sources/NAME/processed/).
Once complete, the entries of a sources/NAME/ whose NAME is not a source
name, and a file directly in sources/, are rejected unread with the reason;
they never wait on the registry or the disk.
"""

import dataclasses
import functools
import json
import logging
import os
import stat
import time
from pathlib import Path

import dagster as dg

from spam_assets.batches import BatchStore, StagingError, write_text_atomic
from spam_assets.defs.automation.settings import inbox_dir, sensor_interval, settle_seconds
from spam_assets.defs.keys import RAW_SAMPLE
from spam_assets.defs.run_tags import INBOX_FILE_TAG, TRIGGER_TAG
from spam_assets.defs.partitions import batch_partitions
from spam_assets.defs.resources import ModelRegistry, PlatformStore
from spam_assets.disk import stored_model_bytes
from spam_assets.intake import disk_problem, registry_problem, stage
from spam_assets.loaders import BatchFormatError, RefusedEntryError, SourceSpec, source_names
from spam_assets.loaders.files import check_entry

log = logging.getLogger(__name__)

PROCESSED, REJECTED = "processed", "rejected"
SOURCES = "sources"  # inbox/sources/<NAME>/: each entry in it is a batch of source NAME
# Names editors, browsers and copy tools give files still being written.
PARTIAL_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".download", ".swp", "~")
FAILED_RUN = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)

ingest_batch_job = dg.define_asset_job(
    "ingest_batch",
    selection=dg.AssetSelection.assets(RAW_SAMPLE),
    description="Parse and validate one received batch (one raw_sample partition).",
)


@dataclasses.dataclass
class InboxCursor:
    seen: dict[str, list[int]] = dataclasses.field(default_factory=dict)  # name -> fingerprint last tick, not staged
    pending: dict[str, dict] = dataclasses.field(default_factory=dict)  # name -> {"batch", "fingerprint"}: staged

    @classmethod
    def load(cls, raw: str | None) -> "InboxCursor":
        return cls(**json.loads(raw)) if raw else cls()

    def dump(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One inbox entry that may be a batch: `key` names it in the cursor and the run's tags."""

    path: Path
    key: str  # its path under the inbox: "a.csv" at the top, "sources/support/a.csv" in a source folder
    source: str | None = None  # NAME, for an entry of sources/NAME/; None elsewhere

    def unstageable(self) -> str | None:
        """Why this entry is rejected once complete without being staged; None: stage it."""
        if self.source is not None:
            if (why := source_names.problem(self.source)) is not None:  # the rule source_names.checked applies
                return (
                    f"not staged: the folder {SOURCES}/{self.source}/ names the source of the batches in it, "
                    f"but {why}; rename the folder and drop the file again"
                )
            return None
        if self.key.startswith(f"{SOURCES}/"):  # directly in sources/, beside the source folders
            return (
                f"not staged: {self.key} is directly in the inbox's {SOURCES}/ folder, which holds one folder per "
                f"source; move it into {SOURCES}/<NAME>/ to stage it with source name NAME, "
                f"or to the top of the inbox"
            )
        return None

    def spec(self) -> SourceSpec:
        return SourceSpec(source=self.source) if self.source is not None else SourceSpec()


def candidates(inbox: Path) -> list[Entry]:
    """Entries that may be batches, oldest first: not hidden, not partial, not our own folders.

    Each entry at the top of the inbox is one, a folder too (an e-mail folder), except a real
    sources/ folder: each entry of a folder in it is one, of that folder's source name, and a
    file directly in it is listed so that it is rejected.
    Listed with lstat only: a symlink or FIFO is a candidate too (to be refused unread), never followed.
    """
    if not inbox.is_dir():
        return []
    found = []
    for path in _listed(inbox):
        if path.name == SOURCES and _is_real_dir(path):
            found += _source_entries(path)
        else:
            found.append(Entry(path, path.name))
    return sorted(found, key=lambda e: (_newest_mtime(e.path), e.key))


def _source_entries(sources: Path) -> list[Entry]:
    """The entries of sources/NAME/ folders, with NAME as their source; files directly in sources/ without."""
    found = []
    for path in _listed(sources, missing_ok=True):
        if _is_real_dir(path):
            found += [
                Entry(inner, f"{SOURCES}/{path.name}/{inner.name}", path.name)
                for inner in _listed(path, missing_ok=True)
            ]
        else:
            found.append(Entry(path, f"{SOURCES}/{path.name}"))
    return found


def _listed(folder: Path, missing_ok: bool = False) -> list[Path]:
    """The entries of `folder` that may be batches: not hidden, not partial, not its processed/ or rejected/.

    missing_ok: a folder that vanished or cannot be read gives nothing to take this tick; one that
    cannot be read is named in a warning every tick, so its files do not wait unseen.
    """
    try:
        inside = list(folder.iterdir())
    except FileNotFoundError:
        if not missing_ok:
            raise
        return []
    except OSError as error:
        if not missing_ok:
            raise
        log.warning("inbox: cannot read %s, so nothing in it is staged: %s", folder, error)
        return []
    return [
        p
        for p in inside
        if not p.name.startswith((".", "~"))
        and not p.name.lower().endswith(PARTIAL_SUFFIXES)
        and not (p.name in (PROCESSED, REJECTED) and _is_real_dir(p))
    ]


def fingerprint(path: Path) -> list[int]:
    """[size, newest mtime in ns, entries]: a folder (an e-mail tree) counts all it contains.

    From lstat alone: links are not followed, nothing is opened (a FIFO cannot block the tick).
    """
    stats = [path.lstat()]
    if stat.S_ISDIR(stats[0].st_mode):
        for folder, dirs, files in os.walk(path):  # os.walk does not descend into links to folders
            stats += [os.lstat(os.path.join(folder, name)) for name in dirs + files]
    sizes = [s.st_size for s in stats if stat.S_ISREG(s.st_mode)]
    return [sum(sizes), max(s.st_mtime_ns for s in stats), len(stats) - 1 if len(stats) > 1 else 1]


def _is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return False


def refused(path: Path) -> str | None:
    """Why an inbox entry is refused without being opened (a symlink, FIFO, device or socket), else None."""
    try:
        check_entry(path)
    except RefusedEntryError as error:
        return str(error)
    except OSError:
        return None  # vanished: the listing will not show it next tick
    return None


def is_complete(now_fingerprint: list[int], previous: list[int] | None, now: float, settle: float) -> bool:
    return now_fingerprint == previous or now - now_fingerprint[1] / 1e9 >= settle


def _newest_mtime(path: Path) -> int:
    try:
        return fingerprint(path)[1]
    except OSError:
        return 0


def move_out(path: Path, batch_id: str, verdict: dict, note: str = "") -> Path:
    """Accepted -> processed/<name>; rejected -> rejected/<name> + <name>.reason.txt, in the folder `path` is in.

    The reason is written first and the file moved after (a rename, which needs no disk
    space): on a full disk the file stays in the inbox rather than lands reasonless.
    """
    accepted = bool(verdict.get("accepted"))
    folder = path.parent / (PROCESSED if accepted else REJECTED)
    folder.mkdir(parents=True, exist_ok=True)
    if not _is_real_dir(folder):  # a link named processed/ or rejected/ would move files out of the inbox
        raise NotADirectoryError(f"{folder} is not a real folder (a link?); not moving {path.name} there")
    target = folder / path.name
    if os.path.lexists(target):  # a later file with the same name: keep both
        target = folder / f"{batch_id}-{path.name}"
    reason = target.with_name(target.name + ".reason.txt")
    if not accepted:
        write_text_atomic(reason, reason_text(path.name, batch_id, verdict, note))
    try:
        os.rename(path, target)  # the entry itself: a link moves as a link, a FIFO is never opened
    except OSError:
        reason.unlink(missing_ok=True)
        raise
    return target


def reason_text(name: str, batch_id: str, verdict: dict, note: str = "") -> str:
    failed = [c for c in verdict.get("checks", []) if not c.get("passed")]
    lines = [f"{name} was rejected (batch {batch_id}).", f"reason: {verdict.get('reason') or 'unknown'}"]
    lines += [note] if note else []
    if failed:
        lines.append("failed checks:")
        for check in failed:
            kind = "" if check.get("blocking") else " (warning)"
            lines.append(f"- {check['name']}{kind}: {check.get('description', '')}")
    return "\n".join(lines) + "\n"


def _runs_for(instance: dg.DagsterInstance, batch_id: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": batch_id}), limit=20))


@dataclasses.dataclass
class Plan:
    """What one tick decides: runs to request, partitions to add or drop, files moved out."""

    requests: list[dg.RunRequest] = dataclasses.field(default_factory=list)
    to_add: list[str] = dataclasses.field(default_factory=list)
    to_delete: list[str] = dataclasses.field(default_factory=list)
    moved: list[str] = dataclasses.field(default_factory=list)

    def move(self, path: Path, inbox: Path, batch_id: str, verdict: dict, note: str = "") -> None:
        name = path.relative_to(inbox)
        try:
            target = move_out(path, batch_id, verdict, note)
            self.moved.append(f"{name} -> {target.relative_to(inbox)}" + (f" ({note})" if note else ""))
        except OSError as error:  # e.g. permissions: say so every tick rather than stop the sensor
            self.moved.append(f"{name} stays in the inbox: could not move it out ({error})")

    def partition_requests(self) -> list:
        requests = []
        if to_delete := [b for b in self.to_delete if b not in self.to_add]:
            requests.append(batch_partitions.build_delete_request(to_delete))
        if self.to_add:
            requests.append(batch_partitions.build_add_request(self.to_add))
        return requests


@dg.sensor(
    name="inbox_sensor",
    target=ingest_batch_job,
    minimum_interval_seconds=sensor_interval(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Turns each complete file dropped into the inbox ($SPAM_INBOX, default <home>/inbox) into one "
        "raw_sample partition, then moves it to processed/ or rejected/ (with <name>.reason.txt)."
    ),
)
def inbox_sensor(context: dg.SensorEvaluationContext, store: PlatformStore, registry: ModelRegistry) -> dg.SensorResult:
    inbox, batches = inbox_dir(store.home), store.batches()
    inbox.mkdir(parents=True, exist_ok=True)
    cursor, plan = InboxCursor.load(context.cursor), Plan()
    for leftover in batches.remove_staging_leftovers():
        context.log.warning(f"inbox: removed {leftover}, a staging folder left by an interrupted stage")
    _settle_pending(context, cursor, inbox, batches, plan)

    now, settle, seen = time.time(), settle_seconds(), {}
    unreachable: str | None = None
    no_room: str | None = None
    checked = False
    champion_bytes = functools.cache(lambda: stored_model_bytes(registry.uri()))  # asked once a tick, if at all
    for entry in candidates(inbox):
        path = entry.path
        if entry.key in cursor.pending:
            continue
        if reason := refused(path):  # judged by its lstat alone: no need to wait for it to settle
            plan.move(path, inbox, "unstaged", {"accepted": False, "reason": f"not staged: {reason}"})
            continue
        try:
            current = fingerprint(path)
        except OSError:  # vanished between listing and stat
            continue
        if is_complete(current, cursor.seen.get(entry.key), now, settle):
            if reason := entry.unstageable():  # a bad source folder name, a misplaced file: rejected, never waits
                plan.move(path, inbox, "unstaged", {"accepted": False, "reason": reason})
                continue
            if not checked:  # asked once a tick, and only when there is a file to take
                unreachable, checked = registry_problem(registry.uri()), True
            if unreachable is None:
                # Each file against the free space now: the ones staged before it this tick took theirs.
                if (full := disk_problem(store.home, current[0], champion_bytes())) is None:
                    _take(context.instance, cursor, inbox, batches, entry, current, plan)
                    continue
                no_room = f"{entry.key}: {full}"
        # Settling, or complete but the registry is down or the disk too full: it waits in the inbox, unstaged.
        seen[entry.key] = current
    cursor.seen = seen
    for line in plan.moved:
        context.log.info(f"inbox: moved {line}")

    summary = f"{len(seen)} settling, {len(cursor.pending)} waiting for raw_sample, {len(plan.moved)} moved out"
    if unreachable is not None:
        context.log.warning(f"inbox: files wait, unstaged: {unreachable}")
        skip = f"files wait in {inbox}, unstaged, until the registry is back: {unreachable} ({summary})"
    elif no_room is not None:
        context.log.warning(f"inbox: files wait, unstaged: {no_room}")
        skip = f"files wait in {inbox}, unstaged, until there is disk space: {no_room} ({summary})"
    else:
        skip = f"no new complete file in {inbox} ({summary})"
    return dg.SensorResult(
        run_requests=plan.requests,
        dynamic_partitions_requests=plan.partition_requests(),
        cursor=cursor.dump(),
        skip_reason=None if plan.requests else skip,
    )


def _take(
    instance: dg.DagsterInstance, cursor: InboxCursor, inbox: Path, batches: BatchStore,
    entry: Entry, current: list[int], plan: Plan,
) -> None:
    """Stage one complete file and plan its partition and run (or move it out if already judged)."""
    path = entry.path
    try:
        batch_id = stage(path, batches, entry.spec())
    except (OSError, BatchFormatError) as error:  # refused, over a limit, a full disk: nothing staged
        verdict = {"accepted": False, "reason": f"not staged: {_staging_reason(error)}"}
        plan.move(path, inbox, "unstaged", verdict)
        return
    if (earlier := batches.validation(batch_id)) is not None:  # same bytes as a batch already judged
        plan.move(path, inbox, batch_id, earlier, f"same content as batch {batch_id}, judged before")
        return
    cursor.pending[entry.key] = {"batch": batch_id, "fingerprint": current}
    if batch_id in plan.to_add or any(r.partition_key == batch_id for r in plan.requests):
        return  # two names, same bytes, same tick
    runs = _runs_for(instance, batch_id)
    if not instance.has_dynamic_partition(batch_partitions.name, batch_id) or batch_id in plan.to_delete:
        plan.to_add.append(batch_id)
    elif runs and runs[0].status not in FAILED_RUN:
        return  # already being ingested (e.g. the cursor was reset mid-flight)
    plan.requests.append(
        dg.RunRequest(
            partition_key=batch_id,
            run_key=f"{batch_id}:{len(runs)}",  # a retry after a failed run gets a new key
            tags={TRIGGER_TAG: "inbox", INBOX_FILE_TAG: entry.key[:200]},
        )
    )


def _staging_reason(error: Exception) -> str:
    text = error.strerror if isinstance(error, StagingError) and error.strerror else str(error)
    return text or f"{type(error).__name__} while copying into the batch store"


def _settle_pending(
    context: dg.SensorEvaluationContext, cursor: InboxCursor, inbox: Path, batches: BatchStore, plan: Plan
) -> None:
    """Move judged files out; a run that died before judging rejects the file and drops its partition.

    Dropping the partition matters: eager automation waits while any
    raw_sample partition is missing, so one crashed batch would stall the loop.
    """
    for key, entry in list(cursor.pending.items()):
        batch_id, path = entry["batch"], inbox / key
        verdict = batches.validation(batch_id)
        if verdict is None:
            runs = _runs_for(context.instance, batch_id)
            if not runs or runs[0].status not in FAILED_RUN:
                continue  # queued or running: look again next tick
            verdict = {
                "accepted": False,
                "reason": f"raw_sample run {runs[0].run_id} ended {runs[0].status.value} before judging the batch; "
                "see that run's logs, then drop the file again",
            }
            plan.to_delete.append(batch_id)
        del cursor.pending[key]
        if path.exists():
            plan.move(path, inbox, batch_id, verdict)
