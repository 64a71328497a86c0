"""The code location: `dg dev`, `dagster dev -m spam_assets.definitions` or via workspace.yaml.

Everything is discovered in the `defs/` folder (assets by stage, automation,
resources and the executor in defs/resources.py); nothing is listed by hand
here, so a new asset, sensor or job is one new definition in its module.
"""

import warnings
from pathlib import Path

import dagster as dg

import spam_assets.defs


@dg.definitions
def defs() -> dg.Definitions:
    # What dg.load_from_defs_folder does once it has found [tool.dg] in pyproject.toml, given
    # the defs module directly: an installed wheel (the container image) has no pyproject.toml
    # above the package, and load_from_defs_folder fails to find the project there.
    project_root = Path(__file__).resolve().parent.parent
    with warnings.catch_warnings():
        # load_from_defs_folder silences these too: the per-module loader it uses is "preview".
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.ComponentTree.from_module(defs_module=spam_assets.defs, project_root=project_root).build_defs()
