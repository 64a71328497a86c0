"""The shape of the code location as plain JSON: every asset spec, check, job, sensor, schedule, resource.

tests/test_project_shape.py compares it with the committed snapshot
(tests/snapshots/graph_shape.json), so a change to the graph's shape is a
visible diff in review. Run as a module to print it:

    python -m tests.graph_shape
"""

from __future__ import annotations

import json

import dagster as dg


def _keys(keys) -> list[str]:
    return sorted(k.to_user_string() for k in keys)


def _condition(condition: dg.AutomationCondition | None) -> dict | None:
    if condition is None:
        return None
    return {"name": condition.name, "label": condition.get_label()}


def describe(defs: dg.Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    pools = {key: a.op.pool for a in graph.assets_defs if a.is_executable for key in a.keys}
    checks: dict[str, list[dict]] = {}
    for key in sorted(graph.asset_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)):
        spec = graph.get_check_spec(key)
        checks.setdefault(key.asset_key.to_user_string(), []).append({"name": key.name, "blocking": spec.blocking})
    assets = {
        spec.key.to_user_string(): {
            "group": spec.group_name,
            "kinds": sorted(spec.kinds),
            "deps": _keys(d.asset_key for d in spec.deps),
            "checks": checks.get(spec.key.to_user_string(), []),
            "automation_condition": _condition(spec.automation_condition),
            "pool": pools.get(spec.key),
            "partitions": str(spec.partitions_def) if spec.partitions_def else None,
            "skippable": spec.skippable,
        }
        for spec in sorted(defs.resolve_all_asset_specs(), key=lambda s: s.key.to_user_string())
    }
    jobs = {
        job.name: _keys(job.asset_layer.executable_asset_keys) or sorted(node.name for node in job.nodes_in_topological_order)
        for job in (defs.resolve_job_def(j.name) for j in defs.jobs or [])
    }
    sensors = {}
    for sensor in sorted(defs.sensors or [], key=lambda s: s.name):
        selection = getattr(sensor, "asset_selection", None)
        sensors[sensor.name] = {
            "type": sensor.sensor_type.value,
            "default_status": sensor.default_status.value,
            "minimum_interval_seconds": sensor.minimum_interval_seconds,
            "jobs": sorted(t.job_name for t in sensor.targets if t.has_job_def) if sensor.targets else [],
            "assets": _keys(selection.resolve(graph)) if selection is not None else [],
        }
    schedules = {
        s.name: {
            "cron": s.cron_schedule,
            "timezone": s.execution_timezone,
            "default_status": s.default_status.value,
            "job": s.job_name,
        }
        for s in sorted(defs.schedules or [], key=lambda s: s.name)
    }
    return {
        "assets": assets,
        "jobs": jobs,
        "sensors": sensors,
        "schedules": schedules,
        "resources": sorted(defs.resources or {}),
        "executor": defs.executor.name if defs.executor else None,
    }


def render(defs: dg.Definitions) -> str:
    return json.dumps(describe(defs), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    from spam_assets.definitions import defs

    print(render(defs()), end="")
