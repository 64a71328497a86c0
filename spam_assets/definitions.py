"""The code location: `dg dev`, `dagster dev -m spam_assets.definitions` or via workspace.yaml.

Everything is discovered in the `defs/` folder (assets by stage, automation,
resources and the executor in defs/resources.py); nothing is listed by hand
here, so a new asset, sensor or job is one new definition in its module.
"""

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
