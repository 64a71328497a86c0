"""The batch store: every received batch, immutable and content-addressed.

A batch id is the sha256 of what was received, so the same file dropped twice
is one batch, and a batch can never change under an id. Each batch folder
keeps the file exactly as received (for inspection, especially when it is
rejected), the parsed table (parquet) and the validation verdict (JSON).

    <home>/batches/<batch_id>/received/<original name>
                             /meta.json        spec, original name, received_at
                             /parsed.parquet   text, label, source, row, source_name, received_at
                             /validation.json  {"accepted": bool, "reason": ..., "checks": [...]}
                             /quarantined.jsonl rows set aside by the quarantine policy, with reasons

Staging copies into <home>/batches/.staging-*/ and renames the folder into
place, so a batch folder is complete or absent; a copy that fails (a full
disk) removes its staging folder, and remove_staging_leftovers() clears the
ones a killed process left.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from spam_assets.loaders import LimitExceededError, Limits, SourceSpec, detect_format
from spam_assets.loaders.files import check_entry, open_regular, regular_files
from spam_assets.loaders.limits import human, over

ID_LENGTH = 16  # hex digits of sha256: 64 bits, no collision in any realistic history
_BATCH_ID = re.compile(f"[0-9a-f]{{{ID_LENGTH}}}")
STAGING_PREFIX = ".staging-"  # a dot-name: never taken for a batch, easy to find when left behind
_LEGACY_STAGING = re.compile(r"tmp[a-z0-9_]{8}")  # tempfile.mkdtemp's names, used for staging before
STAGING_STALE_SECONDS = 15 * 60  # no stage takes this long: a younger staging folder may be in use
QUARANTINE_FILE = "quarantined.jsonl"
_CHUNK = 1 << 20
_UNLIMITED = 1 << 62


class StagingError(OSError):
    """Copying a received batch into the store failed (e.g. the disk is full); nothing was left behind."""


def content_hash(path: Path) -> str:
    """sha256 of a file, or of a folder's relative paths and bytes in sorted order.

    Only regular files and real folders: anything else raises RefusedEntryError (never followed or opened).
    """
    return _copy(Path(path), None, Limits(file_bytes=_UNLIMITED, batch_bytes=_UNLIMITED))


def _copy(source: Path, target: Path | None, limits: Limits) -> str:
    """Hash `source` as content_hash does and, if `target` is given, copy it there in the same pass.

    One pass: what is hashed is exactly what is stored, and a file changing meanwhile cannot split them.
    """
    digest, total = hashlib.sha256(), 0
    if stat.S_ISDIR(check_entry(source).st_mode):
        files = list(regular_files(source))  # refuses links, FIFOs... anywhere in the tree, before copying
        if target is not None:
            target.mkdir()
    else:
        files = [("", source)]
    for name, file in files:
        if name:
            digest.update(name.encode() + b"\0")
        destination = None if target is None else (target / name if name else target)
        if destination is not None:
            destination.parent.mkdir(parents=True, exist_ok=True)
        total += _copy_file(file, destination, digest, limits, total)
    return digest.hexdigest()


def _copy_file(source: Path, target: Path | None, digest, limits: Limits, before: int) -> int:
    copied = 0
    with open_regular(source) as reader, (open(target, "xb") if target is not None else nullcontext()) as writer:
        while chunk := reader.read(_CHUNK):
            copied += len(chunk)
            if copied > limits.file_bytes:
                raise LimitExceededError(
                    over("the file", f"larger than {human(limits.file_bytes)}", limits.file_bytes, "file_bytes"),
                    path=str(source),
                )
            if before + copied > limits.batch_bytes:
                raise LimitExceededError(
                    over("the batch", f"larger than {human(limits.batch_bytes)}", limits.batch_bytes, "batch_bytes"),
                    path=str(source),
                )
            digest.update(chunk)
            if writer is not None:
                writer.write(chunk)
    return copied


def write_json_atomic(path: Path, payload: dict) -> None:
    """Readers never see half a file: write beside, then rename."""
    write_text_atomic(path, json.dumps(payload, indent=2, default=str))


def write_text_atomic(path: Path, text: str) -> None:
    """Write beside, then rename; a failed write (a full disk) leaves neither half a file nor the temp file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        try:
            tmp.write(text)
            tmp.flush()
            os.chmod(tmp.name, 0o644)  # NamedTemporaryFile makes it 0600; people and other services read these
        except BaseException:
            Path(tmp.name).unlink(missing_ok=True)
            raise
    os.replace(tmp.name, path)


def _why(error: OSError) -> str:
    """An OSError in words a person can act on."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the disk ({error.strerror or error}); free some space, then send the batch again"
    return str(error)


class BatchStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def folder(self, batch_id: str) -> Path:
        return self.root / batch_id

    def stage(
        self, source: Path | str, spec: SourceSpec = SourceSpec(), name: str | None = None, limits: Limits | None = None
    ) -> str:
        """Copy a received file or folder into the store; return its batch id.

        Idempotent: staging the same content again returns the existing id. Refuses
        (RefusedEntryError, LimitExceededError) links, FIFOs and the like, and sources over the
        file or batch size limit, while copying; StagingError if the copy itself fails. A
        failed copy leaves no partial folder behind.
        """
        source, limits = Path(source), limits or Limits.from_env()
        try:
            check_entry(source)
        except FileNotFoundError:
            raise FileNotFoundError(f"batch source {source} does not exist") from None
        self.root.mkdir(parents=True, exist_ok=True)
        self.remove_staging_leftovers()
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.root))
        try:
            (staging / "received").mkdir()
            try:
                batch_id = _copy(source, staging / "received" / (name or source.name), limits)[:ID_LENGTH]
            except OSError as error:
                raise StagingError(
                    error.errno, f"could not copy {source} into the batch store {self.root}: {_why(error)}"
                ) from error
            folder = self.folder(batch_id)
            if (folder / "meta.json").exists():
                return batch_id
            write_json_atomic(
                staging / "meta.json",
                {
                    "batch_id": batch_id,
                    "original_name": name or source.name,
                    "received_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "spec": dataclasses.asdict(spec),
                },
            )
            try:
                os.replace(staging, folder)  # atomic: a batch folder is complete or absent
            except OSError:
                if not (folder / "meta.json").exists():  # not "staged concurrently by someone else"
                    raise
            return batch_id
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone already after a successful replace

    def remove_staging_leftovers(self, older_than: float = STAGING_STALE_SECONDS) -> list[str]:
        """Delete staging folders a crashed or killed stage left behind; return their names.

        Only those untouched for `older_than` seconds: a younger one may be another process's
        copy in progress. 0 at start-up, when no stage can be running.
        """
        if not self.root.is_dir():
            return []
        removed, now = [], time.time()
        for entry in self.root.iterdir():
            if entry.name.startswith(STAGING_PREFIX) or _LEGACY_STAGING.fullmatch(entry.name):
                try:
                    if now - entry.lstat().st_mtime >= older_than:
                        shutil.rmtree(entry)
                        removed.append(entry.name)
                except FileNotFoundError:
                    pass  # removed by another process meanwhile
        return removed

    def ids(self) -> list[str]:
        """Every staged batch, oldest first."""
        if not self.root.exists():
            return []
        metas = [self.meta(p.name) for p in self.root.iterdir() if _BATCH_ID.fullmatch(p.name) and (p / "meta.json").exists()]
        return [m["batch_id"] for m in sorted(metas, key=lambda m: (m["received_at"], m["batch_id"]))]

    def meta(self, batch_id: str) -> dict:
        return json.loads((self.folder(batch_id) / "meta.json").read_text())

    def spec(self, batch_id: str) -> SourceSpec:
        return SourceSpec(**self.meta(batch_id)["spec"])

    def received_path(self, batch_id: str) -> Path:
        return self.folder(batch_id) / "received" / self.meta(batch_id)["original_name"]

    def write_parsed(self, batch_id: str, table: pd.DataFrame) -> Path:
        path = self.folder(batch_id) / "parsed.parquet"
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # two commands parsing the same batch: one temp file each
        table.to_parquet(tmp, index=False)
        os.replace(tmp, path)
        return path

    def read_parsed(self, batch_id: str) -> pd.DataFrame:
        table = pd.read_parquet(self.folder(batch_id) / "parsed.parquet")
        if "source_name" not in table.columns:  # parsed before source names existed: the batch's default
            table["source_name"] = self.default_source(batch_id)
        return table

    def default_source(self, batch_id: str) -> str:
        """The source name of this batch's rows that name none (loaders.source_names)."""
        spec = self.spec(batch_id)
        if spec.source or spec.format != "auto":
            return spec.default_source(spec.format)
        try:
            return spec.default_source(detect_format(self.received_path(batch_id)))
        except (OSError, ValueError):  # unreadable now: it was parsed once, but its format cannot be told again
            return spec.default_source("auto")

    def write_validation(self, batch_id: str, verdict: dict) -> None:
        write_json_atomic(self.folder(batch_id) / "validation.json", verdict)

    def validation(self, batch_id: str) -> dict | None:
        path = self.folder(batch_id) / "validation.json"
        return json.loads(path.read_text()) if path.exists() else None

    def write_quarantine(self, batch_id: str, rows: list[dict]) -> Path:
        """The rows the batch policy set aside, one JSON object per line, kept with the batch for inspection."""
        path = self.folder(batch_id) / QUARANTINE_FILE
        write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows))
        return path

    def quarantined(self, batch_id: str) -> list[dict]:
        path = self.folder(batch_id) / QUARANTINE_FILE
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []

    def accepted_ids(self) -> list[str]:
        """Batches that passed validation, oldest first: the corpus is built from these."""
        return [b for b in self.ids() if (self.validation(b) or {}).get("accepted")]

    def rejected_ids(self) -> list[str]:
        return [b for b in self.ids() if (v := self.validation(b)) is not None and not v.get("accepted")]
