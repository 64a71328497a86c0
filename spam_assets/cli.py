"""`spam-platform`: run the platform on one machine.

    spam-platform up              ingest the default source, materialise the graph, open the UIs
    spam-platform ingest FILE     stage a batch and run the graph on it
    spam-platform status          champion, challenger and batches
    spam-platform rollback        make previous-champion the champion again
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from spam_assets.instance import prepare_home
from spam_assets.loaders import SourceSpec
from spam_assets.settings import paths, quiet_telemetry, tracking_uri


def _instance():
    import dagster as dg

    return dg.DagsterInstance.get()


def _run_graph(batch_ids: list[str]) -> bool:
    from spam_assets.defs.resources import build_resources
    from spam_assets.runner import materialize_batches

    started = time.perf_counter()
    results = materialize_batches(batch_ids, _instance(), build_resources())
    for result in results:
        for event in result.get_asset_check_evaluations():
            if not event.passed:
                print(f"  check failed: {event.asset_key.to_user_string()}.{event.check_name}: {event.description}")
    ok = all(r.success for r in results)
    print(f"graph {'materialised' if ok else 'FAILED'} in {time.perf_counter() - started:.1f} s")
    return ok


def cmd_ingest(args) -> int:
    from spam_assets.defs.resources import PlatformStore
    from spam_assets.intake import register, stage

    prepare_home()
    spec = SourceSpec(args.format, args.text_column, args.label_column)
    batch_id = stage(args.path, PlatformStore().batches(), spec)
    register(_instance(), batch_id)
    print(f"batch {batch_id} staged from {args.path}")
    return 0 if args.no_run or _run_graph([batch_id]) else 1


def cmd_status(_args) -> int:
    from spam_assets.defs.resources import PlatformStore
    from spam_assets.model.registry import Registry

    prepare_home()
    reg = Registry(tracking_uri())
    for alias in ("champion", "challenger", "previous-champion"):
        version = reg.version_for(alias)
        if version is None:
            print(f"{alias:>18}: —")
        else:
            card = reg.card(version)
            print(f"{alias:>18}: v{card.version} {card.candidate} spam_f1={card.metrics.get('holdout_spam_f1', float('nan')):.4f}")
    batches = PlatformStore().batches()
    print(f"batches: {len(batches.accepted_ids())} accepted, {len(batches.rejected_ids())} rejected")
    for batch_id in batches.rejected_ids():
        print(f"  rejected {batch_id}: {batches.validation(batch_id)['reason']}")
    return 0


def cmd_rollback(_args) -> int:
    from spam_assets.model.registry import Registry

    prepare_home()
    print(f"champion is now v{Registry(tracking_uri()).rollback()}")
    return 0


def cmd_up(args) -> int:
    from spam_assets.defs.resources import PlatformStore
    from spam_assets.intake import register, stage
    from spam_assets.model.registry import Registry
    from spam_assets.sources import SourceUnavailable, default_sms_path

    dagster_home = prepare_home()
    p = paths()
    print(f"platform home: {p.home}  (DAGSTER_HOME={os.environ['DAGSTER_HOME']})")
    try:
        source = args.source or str(default_sms_path())
    except SourceUnavailable as error:
        print(error, file=sys.stderr)
        return 2
    batch_id = stage(source, PlatformStore().batches())
    register(_instance(), batch_id)
    if Registry(tracking_uri()).champion() is None or args.rerun:
        print(f"materialising the asset graph on batch {batch_id} ({source}) ...")
        if not _run_graph([batch_id]):
            return 1
    cmd_status(args)
    if args.no_ui:
        return 0
    return _serve_uis(args, dagster_home)


def _serve_uis(args, dagster_home) -> int:
    """Dagster (webserver + daemon) and the MLflow UI, until Ctrl-C."""
    p = paths()
    mlflow_ui = subprocess.Popen(
        [
            # Through this interpreter: the venv's bin/ need not be on PATH.
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", tracking_uri(),
            "--default-artifact-root", p.mlflow_artifacts.as_uri(),
            "--host", args.host, "--port", str(args.mlflow_port),
        ]
    )
    print(f"MLflow UI:  http://{args.host}:{args.mlflow_port}")
    print(f"Dagster UI: http://{args.host}:{args.port}")
    try:
        return subprocess.call(
            [
                sys.executable, "-m", "dagster", "dev",
                "-m", "spam_assets.definitions",
                "-h", args.host, "-p", str(args.port),
            ],
            env={**os.environ, "DAGSTER_HOME": str(dagster_home)},
        )
    except KeyboardInterrupt:
        return 0
    finally:
        mlflow_ui.terminate()
        mlflow_ui.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spam-platform", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="ingest the default source, materialise the graph, serve the UIs")
    up.add_argument("--source", help="first batch (default: the SMS Spam Collection)")
    up.add_argument("--no-ui", action="store_true", help="materialise and exit")
    up.add_argument("--rerun", action="store_true", help="materialise even if a champion exists")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=3000)
    up.add_argument("--mlflow-port", type=int, default=5000)
    up.set_defaults(func=cmd_up)

    ingest = sub.add_parser("ingest", help="stage a batch file/folder and run the graph on it")
    ingest.add_argument("path")
    ingest.add_argument("--format", default="auto", help="auto | sms | csv | tsv | jsonl | email | mbox")
    ingest.add_argument("--text-column", default="text")
    ingest.add_argument("--label-column", default="label")
    ingest.add_argument("--no-run", action="store_true", help="only stage and register the partition")
    ingest.set_defaults(func=cmd_ingest)

    sub.add_parser("status", help="champion, challenger, batches").set_defaults(func=cmd_status)
    sub.add_parser("rollback", help="make previous-champion the champion").set_defaults(func=cmd_rollback)

    args = parser.parse_args(argv)
    quiet_telemetry()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
