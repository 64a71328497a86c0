"""Every third-party module the shipped packages import comes with `[project].dependencies`.

The image installs only those (Dockerfile), while the test environment also
has the dev extras; a module that only a dev extra brings imports fine here
and breaks the containers (psutil did: `spam-entrypoint` died on import).
This reads each `import` of spam_assets/ and serving/, maps the module to the
distribution that provides it, and checks that distribution is a runtime
dependency or one of theirs, transitively.
"""

import ast
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("spam_assets", "serving")


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _applies(requirement: Requirement, extras: set[str]) -> bool:
    """Whether a requirement holds here, for the extras asked of its distribution: dagster needs psutil
    only on Windows, so a marker must be evaluated, not dropped."""
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": extra}) for extra in extras | {""})


def _runtime_closure() -> set[str]:
    """The runtime dependencies and everything they require on this platform, transitively."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [(_canonical(r.name), set(r.extras)) for r in map(Requirement, project["dependencies"])]
    seen: set[str] = set()
    while todo:
        name, extras = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = map(Requirement, metadata.requires(name) or [])
        except metadata.PackageNotFoundError:
            continue
        todo += [(_canonical(r.name), set(r.extras)) for r in requires if _applies(r, extras)]
    return seen


def _imported_top_modules() -> dict[str, str]:
    """Top-level module -> the first file:line importing it, over the shipped packages (relative imports aside)."""
    found: dict[str, str] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_third_party_import_is_a_runtime_dependency():
    providers = metadata.packages_distributions()
    runtime = _runtime_closure()
    missing = []
    for module, where in sorted(_imported_top_modules().items()):
        if module in sys.stdlib_module_names or module in PACKAGES:
            continue
        distributions = {_canonical(d) for d in providers.get(module, [])}
        if not distributions:
            missing.append(f"{module} ({where}): no installed distribution provides it")
        elif not distributions & runtime:
            missing.append(f"{module} ({where}): from {', '.join(sorted(distributions))}, not a runtime dependency")
    assert not missing, "add these to [project].dependencies in pyproject.toml:\n" + "\n".join(missing)


def test_the_check_sees_a_module_only_the_dev_extras_bring():
    """The check is not vacuous: pytest, a dev extra only, is outside the runtime closure."""
    assert "pytest" not in _runtime_closure()
    assert "psutil" in _runtime_closure()
