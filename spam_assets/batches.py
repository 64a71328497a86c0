"""The batch store: every received batch, immutable and content-addressed.

A batch id is the sha256 of what was received, so the same file dropped twice
is one batch, and a batch can never change under an id. Each batch folder
keeps the file exactly as received (for inspection, especially when it is
rejected), the parsed table (parquet) and the validation verdict (JSON).

    <home>/batches/<batch_id>/received/<original name>
                             /meta.json        spec, original name, received_at
                             /parsed.parquet   text, label, source, row, received_at
                             /validation.json  {"accepted": bool, "problems": [...]}
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from spam_assets.loaders import SourceSpec

ID_LENGTH = 16  # hex digits of sha256: 64 bits, no collision in any realistic history


def content_hash(path: Path) -> str:
    """sha256 of a file, or of a folder's relative paths and bytes in sorted order."""
    digest = hashlib.sha256()
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
            _update_from_file(digest, file)
    else:
        _update_from_file(digest, path)
    return digest.hexdigest()


def _update_from_file(digest, file: Path) -> None:
    with file.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)


def write_json_atomic(path: Path, payload: dict) -> None:
    """Readers never see half a file: write beside, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        json.dump(payload, tmp, indent=2, default=str)
    os.replace(tmp.name, path)


class BatchStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def folder(self, batch_id: str) -> Path:
        return self.root / batch_id

    def stage(self, source: Path | str, spec: SourceSpec = SourceSpec(), name: str | None = None) -> str:
        """Copy a received file or folder into the store; return its batch id.

        Idempotent: staging the same content again returns the existing id.
        """
        source = Path(source)
        if not source.exists():
            raise FileNotFoundError(f"batch source {source} does not exist")
        batch_id = content_hash(source)[:ID_LENGTH]
        folder = self.folder(batch_id)
        if (folder / "meta.json").exists():
            return batch_id
        staging = Path(tempfile.mkdtemp(dir=self.root.mkdir(parents=True, exist_ok=True) or self.root))
        target = staging / "received" / (name or source.name)
        target.parent.mkdir(parents=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
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
            shutil.rmtree(staging, ignore_errors=True)  # staged concurrently by someone else
        return batch_id

    def ids(self) -> list[str]:
        """Every staged batch, oldest first."""
        if not self.root.exists():
            return []
        metas = [self.meta(p.name) for p in self.root.iterdir() if (p / "meta.json").exists()]
        return [m["batch_id"] for m in sorted(metas, key=lambda m: (m["received_at"], m["batch_id"]))]

    def meta(self, batch_id: str) -> dict:
        return json.loads((self.folder(batch_id) / "meta.json").read_text())

    def spec(self, batch_id: str) -> SourceSpec:
        return SourceSpec(**self.meta(batch_id)["spec"])

    def received_path(self, batch_id: str) -> Path:
        return self.folder(batch_id) / "received" / self.meta(batch_id)["original_name"]

    def write_parsed(self, batch_id: str, table: pd.DataFrame) -> Path:
        path = self.folder(batch_id) / "parsed.parquet"
        table.to_parquet(path.with_suffix(".tmp"), index=False)
        os.replace(path.with_suffix(".tmp"), path)
        return path

    def read_parsed(self, batch_id: str) -> pd.DataFrame:
        return pd.read_parquet(self.folder(batch_id) / "parsed.parquet")

    def write_validation(self, batch_id: str, verdict: dict) -> None:
        write_json_atomic(self.folder(batch_id) / "validation.json", verdict)

    def validation(self, batch_id: str) -> dict | None:
        path = self.folder(batch_id) / "validation.json"
        return json.loads(path.read_text()) if path.exists() else None

    def accepted_ids(self) -> list[str]:
        """Batches that passed validation, oldest first: the corpus is built from these."""
        return [b for b in self.ids() if (self.validation(b) or {}).get("accepted")]

    def rejected_ids(self) -> list[str]:
        return [b for b in self.ids() if (v := self.validation(b)) is not None and not v.get("accepted")]
