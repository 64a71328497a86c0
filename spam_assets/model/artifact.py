"""A stored model's files, checked before anything in them runs, then loaded.

MLflow records no checksums, and its own loader trusts the list of types
stored with the model, which a tampered artifact could widen. Here:

1. The MLmodel file must declare the sklearn flavour in the skops format
   (pickle and cloudpickle run code on load and are refused).
2. The types it asks skops to trust must all be in *this code's* allow-list
   (`SKOPS_TRUSTED_TYPES`), old names of moved types included
   (`RENAMED_TYPES`).
3. When a sha256 is expected (the model version's `model_sha256` tag), the
   model file's bytes must have it.
4. skops loads the file with this code's allow-list, after the old names of
   moved types in its schema have been rewritten to where they live now.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

from spam_assets.model.pipelines import RENAMED_TYPES, SKOPS_TRUSTED_TYPES
from spam_assets.model.tags import TAG_MODEL_SHA256

SCHEMA_FILE = "schema.json"  # skops's description of every object in the file, by import path


class RefusedModel(Exception):
    """A stored model that must not be used, and why."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_artifact(local_dir: Path, expected_sha256: str | None = None) -> bytes:
    """The model file's bytes from a downloaded MLflow model folder, after checks 1-3."""
    from mlflow.models import Model

    local_dir = Path(local_dir)
    try:
        mlmodel = Model.load(str(local_dir / "MLmodel"))
    except Exception as error:  # noqa: BLE001 - missing or malformed: refuse, saying which
        raise RefusedModel(f"unreadable MLmodel file in {local_dir}: {error!r}") from error
    flavor = mlmodel.flavors.get("sklearn")
    if flavor is None:
        raise RefusedModel(f"not a scikit-learn model (flavors: {sorted(mlmodel.flavors)})")
    fmt = flavor.get("serialization_format")
    if fmt != "skops":
        raise RefusedModel(f"serialization format {fmt!r} refused: only skops loads without running code")
    recorded = {RENAMED_TYPES.get(name, name) for name in flavor.get("skops_trusted_types") or []}
    widened = sorted(recorded - set(SKOPS_TRUSTED_TYPES))
    if widened:
        raise RefusedModel(f"artifact asks to trust types outside the code's allow-list: {widened}")
    model_file = local_dir / flavor.get("pickled_model", "model.skops")
    try:
        data = model_file.read_bytes()
    except OSError as error:
        raise RefusedModel(f"model file missing: {error}") from error
    if expected_sha256 and sha256_hex(data) != expected_sha256.lower():
        raise RefusedModel(
            f"model file checksum mismatch: sha256 {sha256_hex(data)} != recorded {TAG_MODEL_SHA256} {expected_sha256}"
        )
    return data


def _rename_types(node: Any) -> bool:
    """Rewrite, in place, every {"__module__", "__class__"} pair that names a moved type; True if any did."""
    changed = False
    if isinstance(node, dict):
        module, name = node.get("__module__"), node.get("__class__")
        if isinstance(module, str) and isinstance(name, str):
            new = RENAMED_TYPES.get(f"{module}.{name}")
            if new is not None:
                node["__module__"], node["__class__"] = new.rsplit(".", 1)
                changed = True
        for value in node.values():
            changed = _rename_types(value) or changed
    elif isinstance(node, list):
        for value in node:
            changed = _rename_types(value) or changed
    return changed


def with_current_type_names(data: bytes) -> bytes:
    """The skops file with moved types under their current import paths (the same bytes if none moved)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            schema = json.loads(archive.read(SCHEMA_FILE))
            if not _rename_types(schema):
                return data
            out = io.BytesIO()
            with zipfile.ZipFile(out, "w") as rewritten:
                for info in archive.infolist():
                    content = json.dumps(schema).encode() if info.filename == SCHEMA_FILE else archive.read(info)
                    rewritten.writestr(info, content)
    except (zipfile.BadZipFile, KeyError, ValueError) as error:
        raise RefusedModel(f"skops could not load the model: not a readable skops file ({error!r})") from error
    return out.getvalue()


def load_skops(data: bytes) -> Any:
    """The object in a skops file, loaded with this code's allow-list (check 4)."""
    import skops.io

    data = with_current_type_names(data)
    try:
        return skops.io.loads(data, trusted=SKOPS_TRUSTED_TYPES)
    except Exception as error:  # noqa: BLE001 - corrupt file, untrusted type, version skew
        raise RefusedModel(f"skops could not load the model: {error!r}") from error
