"""The architecture in README.md ("Architecture"), held as import contracts.

The contracts live in pyproject.toml ([tool.importlinter]) and are checked
by import-linter, which reads every import statement, including those inside
functions, so a lazy import cannot slip past them. What a started server has
actually imported is checked in tests/test_model_contract.py.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import spam_assets

ROOT = Path(__file__).resolve().parents[1]
# Importable by anyone, serving included: the model and traffic contracts and the settings.
SHARED = {"spam_assets.model", "spam_assets.settings", "spam_assets.traffic"}


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(_contracts())} kept, 0 broken." in result.stdout


def test_every_platform_module_is_either_shared_or_kept_from_serving():
    """A new module of spam_assets must be placed: shared with serving, or forbidden to it."""
    modules = {f"spam_assets.{m.name}" for m in pkgutil.iter_modules(spam_assets.__path__)}
    serving_contract = next(c for c in _contracts() if "serving" in c["source_modules"])
    forbidden = {m for m in serving_contract["forbidden_modules"] if m.startswith("spam_assets.")}
    assert modules - SHARED == forbidden, (
        f"unplaced: {sorted(modules - SHARED - forbidden)}; listed but gone: {sorted(forbidden - modules)}"
    )

