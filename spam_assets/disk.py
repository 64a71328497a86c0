"""Enough free disk for a batch and a model, checked before anything is staged.

A batch that is staged onto a nearly full disk fails later, half-done: in
the copy, in the corpus snapshot or, worst, in training, after minutes of
work. So intake estimates what the batch and the next model will take and
refuses up front, in one line naming the path, the free bytes and the need,
while the file can still wait where it is.

The estimate, for a source of S bytes (regular files only, never followed):

    batch   S x BATCH_FACTOR   the copy as received, its parsed table, its share of the next corpus snapshot
    corpus  the current corpus snapshot: cleaned_corpus writes a new one, the old one plus the batch
    model   the champion's stored model files (a store on this machine), else DEFAULT_MODEL_BYTES
    floor   SPAM_MIN_FREE_BYTES (256 MiB): left free for everything else (Dagster's event log, MLflow's
            database, run logs); 0 turns it off, the estimate above still applies

Free space is what an unprivileged process may use (statvfs f_bavail, not
the blocks reserved for root), on the filesystem of the platform home.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from spam_assets.loaders.limits import MiB, human, parse_size
from spam_assets.settings import MODEL_NAME

MIN_FREE_ENV = "SPAM_MIN_FREE_BYTES"
DEFAULT_MIN_FREE = 256 * MiB
# Measured: 4,500 SMS lines (387 KB) became a 321 KB parsed table and 520 KB of corpus snapshot (the
# text twice, raw and normalised), 3.2x in all; 600 e-mails in a 1.06 MB .tar.gz, 3.1x. 4x leaves room.
BATCH_FACTOR = 4
# The SMS champion (linear SVM on word and hashed character n-grams) stores 5.4 MB: room for growth.
DEFAULT_MODEL_BYTES = 64 * MiB


@dataclass(frozen=True)
class SpaceNeed:
    """Bytes a batch needs on the platform home's filesystem, by what will take them."""

    batch: int
    corpus: int
    model: int
    floor: int

    @property
    def total(self) -> int:
        return self.batch + self.corpus + self.model + self.floor

    def parts(self) -> str:
        return (
            f"batch {human(self.batch)} ({BATCH_FACTOR}x its size), corpus snapshot {human(self.corpus)}, "
            f"model {human(self.model)}, floor {human(self.floor)}"
        )


def min_free_bytes(environ: Mapping[str, str] | None = None) -> int:
    """$SPAM_MIN_FREE_BYTES (bytes or with a K/M/G suffix; 0 for none), else 256 MiB."""
    raw = (os.environ if environ is None else environ).get(MIN_FREE_ENV, "").strip()
    if not raw:
        return DEFAULT_MIN_FREE
    if raw == "0":
        return 0
    return parse_size(raw, MIN_FREE_ENV)


def free_bytes(path: Path | str, statvfs=os.statvfs) -> int:
    """Bytes an unprivileged process may still write on the filesystem holding `path` (or its nearest existing parent)."""
    folder = Path(path)
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    numbers = statvfs(folder)
    return numbers.f_bavail * numbers.f_frsize


def source_bytes(source: Path | str) -> int:
    """The size of a file, or of the regular files in a folder tree; links, FIFOs and the like count nothing.

    From lstat alone: nothing is opened or followed (staging refuses those entries anyway).
    """
    source = Path(source)
    info = source.lstat()
    if stat.S_ISREG(info.st_mode):
        return info.st_size
    if not stat.S_ISDIR(info.st_mode):
        return 0
    total = 0
    for folder, _dirs, files in os.walk(source):  # does not descend into links to folders
        for name in files:
            entry = os.lstat(os.path.join(folder, name))
            total += entry.st_size if stat.S_ISREG(entry.st_mode) else 0
    return total


def corpus_snapshot_bytes(corpus_root: Path | str) -> int:
    """The current corpus snapshot's size (0 before the first): the next one is that plus the batch."""
    pointer = Path(corpus_root) / "CURRENT"
    try:
        return (Path(corpus_root) / f"{pointer.read_text().strip()}.parquet").stat().st_size
    except OSError:
        return 0


def stored_model_bytes(tracking_uri: str, model_name: str = MODEL_NAME) -> int | None:
    """The champion's model files, when the store keeps them on this machine; None when unknown.

    Unknown: no champion yet, or artifacts behind a tracking server. Never raises: an estimate
    that cannot be made falls back to the default rather than blocking intake.
    """
    if tracking_uri.startswith(("http://", "https://", "databricks")):
        return None  # the server stores the artifacts, wherever that is: not asked
    try:
        from spam_assets.model.registry import Registry

        registry = Registry(tracking_uri, model_name)
        champion = registry.champion()
        if champion is None:
            return None
        uri = registry.client.get_model_version_download_uri(registry.model_name, str(champion.version))
        parsed = urlparse(uri)
        if parsed.scheme not in ("", "file"):
            return None
        folder = Path(unquote(parsed.path))
        return source_bytes(folder) if folder.is_dir() else None
    except Exception:  # noqa: BLE001 - an unreachable store, an odd URI: use the default
        return None


def estimate(
    source_size: int, corpus_bytes: int, model_bytes: int | None, floor: int | None = None
) -> SpaceNeed:
    return SpaceNeed(
        batch=source_size * BATCH_FACTOR,
        corpus=corpus_bytes,
        model=DEFAULT_MODEL_BYTES if model_bytes is None else model_bytes,
        floor=min_free_bytes() if floor is None else floor,
    )


def space_problem(home: Path | str, need: SpaceNeed, free: int | None = None) -> str | None:
    """Why the disk under `home` cannot take `need`, in one line; None when it can."""
    free = free_bytes(home) if free is None else free
    if free >= need.total:
        return None
    return (
        f"not enough free disk space under {home}: {free} bytes free ({human(free)}), "
        f"{need.total} bytes needed ({need.parts()}; the floor is {MIN_FREE_ENV})"
    )
