"""`spam-platform`: run the platform on one machine.

    spam-platform up              ingest the default source, materialise the graph, then run the
                                  Dagster UI and daemon, the MLflow UI and spam-serve until stopped
    spam-platform ingest FILE     stage a batch, refresh the corpus and judge drift; train only on
                                  drift, decay or no champion yet (--retrain: train anyway)
    spam-platform status          champion, challenger, what a server would serve, and batches
    spam-platform rollback        make previous-champion the champion again
    spam-platform rollout promote|retire [--reason TEXT]
                                  end the challenger's staged rollout now, by hand (recorded)

A command that cannot do its job prints one line saying what and where, and
exits with a status listed below; --debug prints the traceback as well,
--verbose Dagster's own log of each run.
"""

from __future__ import annotations

import argparse
import os
import signal
import stat
import sys
import tempfile
import time
import warnings
from pathlib import Path

from spam_assets import services
from spam_assets.cli_errors import EXIT_CODES_HELP, ExitCode, UserError, run_command
from spam_assets.instance import first_use_lock, prepare_home
from spam_assets.settings import paths, quiet_telemetry, tracking_uri
from spam_assets.supervisor import ChildSpec, Outcome, StopRequested, Supervisor, describe_status

# Everything `up` started is gone this long after Ctrl-C or SIGTERM: the
# servers get all but 3 s of it to stop on SIGTERM, SIGKILL takes the rest.
UP_STOP_SECONDS = 10
SERVE_GRACE_SECONDS = 3  # what spam-serve gives in-flight calls when `up` stops


def _instance():
    import dagster as dg

    return dg.DagsterInstance.get()


def _open_stores() -> None:
    """Create the home's Dagster and MLflow stores if new, one command at a time (instance.first_use_lock)."""
    from mlflow import MlflowClient

    with first_use_lock(paths().home):
        _instance().dispose()
        uri = tracking_uri()
        if uri.startswith("sqlite:"):  # a tracking server migrates its own database
            MlflowClient(uri).search_experiments(max_results=1)


# --- what the terminal shows --------------------------------------------------------------------


def _dagster_log_level(args) -> str:
    """Dagster's console logger for in-process runs: silent unless asked (the CLI summarises each run)."""
    return "DEBUG" if args.debug else "INFO" if args.verbose else "CRITICAL"


def _quiet_libraries() -> None:
    """Keep library chatter out of a command's output: MLflow's INFO lines and download progress bars,
    and Dagster's beta/preview notices about its own APIs. Set only where unset, so a user's choice wins."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    warnings.filterwarnings("ignore", message=r".*is currently in (beta|preview)")


def _short_registry_timeouts() -> None:
    """An unreachable tracking server answers in seconds, not after MLflow's minutes of retries."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


# --- commands -------------------------------------------------------------------------------------


class _CtrlC:
    """Ctrl-C (or SIGTERM) once the Dagster instance is in use: noted, and no further run starts.

    Dagster turns one that lands in a step into a failed step and drops one
    that lands between its steps; this handler gets the rest. A
    KeyboardInterrupt raised there would land in library code instead
    (SQLAlchemy then logs a traceback while returning a connection).
    """

    def __init__(self):
        self._pressed = False
        self._previous: dict[int, object] = {}

    def pressed(self) -> bool:
        return self._pressed

    def _note(self, _signum, _frame) -> None:
        self._pressed = True

    def __enter__(self) -> _CtrlC:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._note)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _run_graph(batch_ids: list[str], args, ctrl_c: _CtrlC, retrain: bool = False) -> int:
    """Materialise the batches and what follows; print one line per finding; the exit status.

    The run after the batches trains as the inbox's refresh run does, only on
    drift, decay or no champion yet, unless `retrain` says train anyway.
    """
    from spam_assets.defs.resources import PlatformStore, build_resources
    from spam_assets.runner import (
        FORCED_TAGS,
        REFRESH_TAGS,
        blocked_by_checks,
        interrupted,
        materialize_batches,
        summarize,
        training_outcome,
    )

    started = time.perf_counter()
    instance = _instance()
    results = materialize_batches(
        batch_ids,
        instance,
        build_resources(),
        log_level=_dagster_log_level(args),
        stop=ctrl_c.pressed,
        downstream_tags=FORCED_TAGS if retrain else REFRESH_TAGS,
    )
    seconds = time.perf_counter() - started
    batch_runs, downstream = results[: len(batch_ids)], results[len(batch_ids) :]
    rejected = [b for b, result in zip(batch_ids, batch_runs) if blocked_by_checks(result)]
    # A rejection is said in one line below (its reason is those checks), so its run is not summarised.
    for result in [r for b, r in zip(batch_ids, batch_runs) if b not in rejected] + downstream:
        for line in summarize(result, instance):
            print(f"  {line}")
    if ctrl_c.pressed() or any(interrupted(r) for r in results):  # staging is idempotent: the same command finishes
        raise UserError(f"interrupted after {seconds:.1f} s; run the same command again to finish", ExitCode.INTERRUPTED)
    if rejected:
        batch_id = rejected[0]
        verdict = PlatformStore().batches().validation(batch_id) or {}
        raise UserError(f"batch {batch_id} rejected: {verdict.get('reason') or 'a blocking check failed'}", ExitCode.REJECTED)
    if not all(r.success for r in results):
        raise UserError(f"the graph failed after {seconds:.1f} s: see the lines above", ExitCode.FAILED)
    if downstream and (outcome := training_outcome(downstream[0], instance)) is not None:
        print(outcome.line if outcome.trained else f"{outcome.line}; use --retrain to train anyway")
    print(f"graph materialised in {seconds:.1f} s")
    return ExitCode.OK


def _source_spec(args):
    from spam_assets.loaders import SourceSpec  # pandas: kept out of `up`'s own (long-lived) process

    from spam_assets.loaders import source_names

    if args.source_name is not None:
        try:
            source_names.checked(args.source_name, "--source-name")
        except ValueError as error:
            raise UserError(str(error)) from error
    try:
        return SourceSpec(args.format, args.text_column, args.label_column, source=args.source_name)
    except ValueError as error:
        raise UserError(f"--format: {error}") from error


def _readable_source(raw: str) -> Path:
    """The batch a user named: a file or folder that exists and can be read, else a UserError saying which."""
    path = Path(raw).expanduser()
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UserError(f"{raw}: no such file or folder") from None
    except OSError as error:
        raise UserError(f"{raw}: {error.strerror}") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # a FIFO or a device would block or never end
        raise UserError(f"{raw}: not a regular file or a folder")
    if not os.access(path, os.R_OK | (os.X_OK if stat.S_ISDIR(mode) else 0)):
        raise UserError(f"{raw}: permission denied (cannot read it)")
    return path


def cmd_ingest(args) -> int:
    from spam_assets.intake import register, stage

    spec = _source_spec(args)
    source = _readable_source(args.path)
    prepare_home()
    _open_stores()
    _require_preconditions(source)
    from spam_assets.defs.resources import PlatformStore

    batch_id = stage(source, PlatformStore().batches(), spec)
    with _CtrlC() as ctrl_c:
        register(_instance(), batch_id)
        print(f"batch {batch_id} staged from {args.path}")
        return ExitCode.OK if args.no_run else _run_graph([batch_id], args, ctrl_c, retrain=args.retrain)


def _require_preconditions(source: Path) -> None:
    """Before staging: a reachable registry and room on the disk for the batch and a model (exit 5 if not)."""
    from spam_assets.intake import PreconditionFailed, require_disk_space, require_registry

    try:
        require_registry(tracking_uri())  # an unjudged batch in the corpus helps nobody
        require_disk_space(source, tracking_uri())  # nor one that fills the disk halfway through
    except PreconditionFailed as error:
        raise UserError(str(error), ExitCode.UNAVAILABLE) from error
    except ValueError as error:  # a malformed SPAM_MIN_FREE_BYTES
        raise UserError(str(error)) from error


def cmd_status(_args) -> int:
    from spam_assets.defs.resources import PlatformStore
    from spam_assets.model.registry import Registry

    prepare_home()
    reg = Registry(tracking_uri())
    serves, refused = _what_a_server_serves(reg)
    for alias in ("champion", "challenger", "previous-champion"):
        version = reg.version_for(alias)
        line = _describe_version(reg, version) if version is not None else "—"
        if alias == "champion" and refused:
            line += "  REFUSED by the server's checks"
        print(f"{alias:>18}: {line}")
    print(f"{'serves':>18}: {serves}")
    print(f"{'rollout':>18}: {_rollout_state(reg)}")
    batches = PlatformStore().batches()
    print(f"batches: {len(batches.accepted_ids())} accepted, {len(batches.rejected_ids())} rejected")
    for batch_id in batches.rejected_ids():
        print(f"  rejected {batch_id}: {batches.validation(batch_id)['reason']}")
    return 0


def _rollout_state(reg) -> str:
    """The challenger's stage in the staged rollout, since when, and the latest reason for it."""
    from spam_assets.model.tags import TAG_ROLLOUT_CANARY_SHARE, TAG_ROLLOUT_SINCE, TAG_ROLLOUT_STAGE
    from spam_assets.rollout import CANARY, TAG_REASON

    challenger, champion = reg.challenger(), reg.champion()
    if challenger is None:
        return "no challenger"
    stage = challenger.tags.get(TAG_ROLLOUT_STAGE)
    if stage is None:
        same = champion is not None and champion.version == challenger.version
        if same:
            return "the challenger is the champion"
        return f"v{challenger.version} not in a rollout ({challenger.tags.get('decision', 'undecided')})"
    share = f" at {float(challenger.tags.get(TAG_ROLLOUT_CANARY_SHARE, 0)):.0%}" if stage == CANARY else ""
    why = challenger.tags.get(TAG_REASON.format(stage=stage), "")
    why = why if len(why) <= 300 else why[:299] + "…"
    return f"v{challenger.version} {stage}{share} since {challenger.tags.get(TAG_ROLLOUT_SINCE, '?')}: {why}"


def _describe_version(reg, version) -> str:
    from spam_assets.model.artifact import RefusedModel

    try:
        card = reg.card(version)
    except RefusedModel as error:  # a garbled operating point: say so, the status goes on
        return f"v{version.version} REFUSED: {error}"
    f1 = card.metrics.get("holdout_spam_f1")
    return f"v{card.version} {card.candidate or '?'} spam_f1={'—' if f1 is None else f'{f1:.4f}'}"


def _what_a_server_serves(reg) -> tuple[str, bool]:
    """What a server starting now would serve, and whether it refuses the champion.

    The champion through the server's own load-and-verify, else the last good
    model, chosen as the server chooses it (`spam_assets.model.last_good`).
    """
    from spam_assets.model.last_good import first_servable
    from spam_assets.settings import CHAMPION_ALIAS, MAX_FALLBACKS

    target = reg.version_for(CHAMPION_ALIAS)
    if target is None:
        return "nothing: no champion yet", False
    outcome = first_servable(reg, CHAMPION_ALIAS, target, reg.load_verified, MAX_FALLBACKS)
    resolution = outcome.resolution
    if outcome.version is None:
        return f"NOTHING, a server starting now stays NOT_SERVING: {resolution.reason}", True
    served = f"{_describe_version(reg, outcome.version)}, scorer {outcome.loaded.scorer.name}"
    if resolution.fallback:
        return f"{served}: {resolution.reason}", True
    return f"{served} (passes the server's checks)", False


def cmd_rollback(_args) -> int:
    from spam_assets.model.registry import Registry
    from spam_assets.settings import MODEL_NAME, PREVIOUS_CHAMPION_ALIAS

    prepare_home()
    registry = Registry(tracking_uri())
    if registry.version_for(PREVIOUS_CHAMPION_ALIAS) is None:
        raise UserError(
            f"nothing to roll back to: {MODEL_NAME} has no {PREVIOUS_CHAMPION_ALIAS} "
            "(there is one once a champion has been replaced)",
            ExitCode.NOT_POSSIBLE,
        )
    print(f"champion is now v{registry.rollback()}")
    return ExitCode.OK


def cmd_rollout(args) -> int:
    """Promote or retire the challenger under rollout now; recorded on the version and posted to the webhook."""
    from datetime import UTC, datetime

    from spam_assets.defs.automation.notifications import rollout_message
    from spam_assets.defs.resources import Webhook
    from spam_assets.model.registry import Registry
    from spam_assets.rollout import PROMOTED, RETIRED, Rollout

    prepare_home()
    registry = Registry(tracking_uri())
    action = PROMOTED if args.action == "promote" else RETIRED
    champion = registry.champion()
    try:
        version, stage, previous = Rollout(registry).override(action, args.reason or "", datetime.now(UTC))
    except LookupError as error:
        raise UserError(str(error), ExitCode.NOT_POSSIBLE) from error
    now = registry.champion()
    outcome = {
        "action": action, "version": version, "stage_before": stage, "stage_now": action,
        "reasons": [f"manual override: {args.reason or 'no reason given'}"], "previous_champion": previous,
        "champion_version_now": str(now.version) if now else None,
    }  # fmt: skip
    Webhook().post(rollout_message(outcome, "By: spam-platform rollout") or "")
    if action == PROMOTED:
        before = f"v{champion.version}" if champion else "none"
        print(f"v{version} promoted by hand: champion is now v{version} (previous-champion {before})")
    else:
        print(f"v{version} retired by hand: champion v{now.version if now else '—'} keeps serving")
    return ExitCode.OK


def cmd_up(args) -> int:
    if args.no_ui:
        return _materialise(args)
    prepare_home()
    busy = []
    for flag, port in _public_ports(args):
        try:
            if services.port_in_use(args.host, port):
                busy.append(f"{flag} {port}")
        except OSError as error:  # gaierror, EADDRNOTAVAIL, EACCES: nothing could listen there
            raise UserError(f"cannot listen on {args.host} {flag} {port}: {error.strerror or error}") from None
    if busy:
        raise UserError(f"already in use on {args.host}: {', '.join(busy)}; stop what holds it or pick another port")
    return _serve(args)


def _materialise(args) -> int:
    """Stage the first batch and materialise the graph unless a champion exists (`up --no-ui`)."""
    from spam_assets.defs.resources import PlatformStore
    from spam_assets.intake import register, stage
    from spam_assets.model.registry import Registry
    from spam_assets.sources import default_sms_path

    prepare_home()
    _open_stores()
    p = paths()
    print(f"platform home: {p.home}  (DAGSTER_HOME={os.environ['DAGSTER_HOME']})")
    source = _readable_source(args.source) if args.source else default_sms_path()  # SourceUnavailable: exit 2
    run_graph = args.rerun or Registry(tracking_uri()).champion() is None
    if run_graph:  # a restart with a champion stages nothing new (same content, same batch)
        _require_preconditions(source)
    batch_id = stage(source, PlatformStore().batches())
    with _CtrlC() as ctrl_c:
        register(_instance(), batch_id)
        if run_graph:
            print(f"materialising the asset graph on batch {batch_id} ({source}) ...")
            _run_graph([batch_id], args, ctrl_c)
    return cmd_status(args)


def _embedded_mlflow_ui(uri: str) -> bool:
    """The MLflow UI is ours to run unless the tracking URI is a server someone else runs."""
    return not uri.startswith(("http://", "https://", "databricks"))


def _public_ports(args) -> list[tuple[str, int]]:
    ports = [("--port", args.port), ("--grpc-port", args.grpc_port)]
    if _embedded_mlflow_ui(tracking_uri()):
        ports.insert(1, ("--mlflow-port", args.mlflow_port))
    return ports


def _serve(args) -> int:
    """The first graph run, then every server, until Ctrl-C/SIGTERM (exit 0) or until one exits on its own (1)."""
    uri = tracking_uri()
    first = [sys.executable, "-m", "spam_assets.cli", "up", "--no-ui"]
    first += (["--source", args.source] if args.source else []) + (["--rerun"] if args.rerun else [])
    first += (["--debug"] if args.debug else []) + (["--verbose"] if args.verbose else [])
    with tempfile.TemporaryDirectory(prefix="spam-up-") as tmp, Supervisor(stop_timeout=UP_STOP_SECONDS - 3) as supervisor:
        # In a child: the graph's memory (~1 GB with its libraries) and worker pools go when it ends.
        status = supervisor.run(ChildSpec("graph", first))
        if isinstance(status, StopRequested):
            return ExitCode.OK
        if status != 0:  # the run said why on its own line; its status is ours (2 no source, 3 rejected, ...)
            print(f"spam-platform up: the first graph run {describe_status(status)}; nothing else started", file=sys.stderr)
            return status if status > 0 else ExitCode.FAILED
        outcome = _start_servers(supervisor, args, uri, Path(tmp) / "workspace.yaml")
        if outcome is None:
            print(f"Dagster UI: http://{args.host}:{args.port}")
            print(f"MLflow UI:  http://{args.host}:{args.mlflow_port}" if _embedded_mlflow_ui(uri) else f"MLflow:     {uri}")
            print(f"gRPC:       {args.host}:{args.grpc_port}  (spam-serve; health SERVING once a champion is loaded)")
            print(f"platform up (pid {os.getpid()}); Ctrl-C or SIGTERM stops everything", flush=True)
            outcome = supervisor.watch()
        if isinstance(outcome, StopRequested):
            print(f"spam-platform up: {outcome.message}, stopping", flush=True)
        else:
            print(f"spam-platform up: {outcome.message}; stopping the rest", file=sys.stderr, flush=True)
    if supervisor.killed:
        print(f"spam-platform up: did not stop on SIGTERM in time, killed: {', '.join(supervisor.killed)}", file=sys.stderr)
    print("spam-platform up: stopped", flush=True)
    return ExitCode.OK if isinstance(outcome, StopRequested) else ExitCode.FAILED


def _start_servers(supervisor: Supervisor, args, uri: str, workspace: Path) -> Outcome | None:
    """Start every server; None once all answer, else why not."""
    code_port = services.free_local_port()
    workspace.write_text(services.workspace_yaml(code_port))
    supervisor.start(services.dagster_code_server(code_port))
    if _embedded_mlflow_ui(uri):
        supervisor.start(services.mlflow_ui(args.host, args.mlflow_port, uri, paths().mlflow_artifacts))
    supervisor.start(services.spam_serve(args.host, args.grpc_port, uri, grace=SERVE_GRACE_SECONDS))
    # The webserver and the daemon load the code location from the code server: start them once it answers.
    if outcome := supervisor.wait_ready(args.start_timeout):
        return outcome
    supervisor.start(services.dagster_webserver(args.host, args.port, workspace))
    supervisor.start(services.dagster_daemon(workspace))
    return supervisor.wait_ready(args.start_timeout)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line like every other error (the usage is in --help)."""

    def error(self, message: str):
        self.exit(ExitCode.USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    # --debug and --verbose work before or after the command; SUPPRESS keeps a subcommand's
    # unset flag from overwriting one given before it.
    shared = _Parser(add_help=False)
    shared.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="on an error, print the traceback too; Dagster logs at DEBUG")
    shared.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS,
                        help="print Dagster's own log of each run (INFO) and library messages")  # fmt: skip
    parser = _Parser(  # its subcommands' parsers are _Parser too (argparse's parser_class default)
        prog="spam-platform", description=__doc__, epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter, parents=[shared],
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser(
        "up",
        parents=[shared],
        help="materialise the graph, then run Dagster (UI + daemon), the MLflow UI and spam-serve",
        description="Exit status: 0 stopped by Ctrl-C/SIGTERM (or --no-ui done), 1 the graph failed or a server "
        "exited on its own (named), 2 a port is taken or the source is unavailable, 3 the first batch was "
        "rejected; others as listed in `spam-platform --help`.",
    )
    up.add_argument("--source", help="first batch (default: the SMS Spam Collection)")
    up.add_argument("--no-ui", action="store_true", help="materialise and exit; start no server")
    up.add_argument("--rerun", action="store_true", help="materialise even if a champion exists")
    up.add_argument("--host", default="127.0.0.1", help="address the UIs and spam-serve listen on")
    up.add_argument("--port", type=_port, default=3000, help="Dagster UI port")
    up.add_argument("--mlflow-port", type=_port, default=5000, help="MLflow UI port")
    up.add_argument("--grpc-port", type=_port, default=50051, help="spam-serve (gRPC) port")
    up.add_argument("--start-timeout", type=float, default=300.0, help="seconds each server has to start answering")
    up.set_defaults(func=cmd_up)

    listed = {"parents": [shared], "epilog": EXIT_CODES_HELP, "formatter_class": argparse.RawDescriptionHelpFormatter}
    ingest = sub.add_parser(
        "ingest",
        help="stage a batch file/folder and run the graph on it",
        description="Stage the batch, refresh the corpus and judge drift and decay against the champion, as the "
        "inbox does; train (and decide) only on drift, decay or no champion yet, unless --retrain. The last "
        "lines say whether it trained, and why.",
        **listed,
    )
    ingest.add_argument("path")
    ingest.add_argument("--format", default="auto", help="auto | sms | csv | tsv | jsonl | email | mbox")
    ingest.add_argument("--text-column", default="text")
    ingest.add_argument("--label-column", default="label")
    ingest.add_argument(
        "--source-name", metavar="NAME", default=None,
        help="the batch's source name, e.g. enron (a-z 0-9 . _ -); the promotion gates judge each source "
        "(default: a csv/tsv/jsonl `source` column, else sms for SMS, email for e-mail, else the format)",
    )
    ingest.add_argument("--no-run", action="store_true", help="only stage and register the partition")
    ingest.add_argument(
        "--retrain", action="store_true",
        help="train a challenger (and decide) whatever the drift verdict, even on a corpus already trained on",
    )  # fmt: skip
    ingest.set_defaults(func=cmd_ingest)

    status = sub.add_parser("status", parents=[shared], help="champion, challenger, what a server would serve, batches")
    status.set_defaults(func=cmd_status)
    rollback = sub.add_parser("rollback", help="make previous-champion the champion", **listed)
    rollback.set_defaults(func=cmd_rollback)
    rollout = sub.add_parser(
        "rollout",
        help="promote or retire the challenger in shadow or canary now (recorded with who, when and why)",
        description="End the challenger's staged rollout by hand: `promote` makes it the champion (the old one "
        "keeps previous-champion), `retire` stops servers scoring it. Recorded on the MLflow version (tag "
        "rollout_override: who, when, why) and posted to $SPAM_WEBHOOK_URL. Exit 4 when no challenger is in "
        "shadow or canary.",
        **listed,
    )
    rollout.add_argument("action", choices=("promote", "retire"))
    rollout.add_argument("--reason", default="", help="why, for the record")
    rollout.set_defaults(func=cmd_rollout)
    return parser


def _port(text: str) -> int:
    port = int(text) if text.isdigit() else -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535)")
    return port


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    # Not set_defaults: the flags' Action objects are shared with every subcommand's parser.
    args.debug, args.verbose = getattr(args, "debug", False), getattr(args, "verbose", False)
    quiet_telemetry()
    serving = args.func is cmd_up and not args.no_ui  # its servers keep their own logging
    if not (serving or args.debug or args.verbose):
        _quiet_libraries()
    if args.command in ("rollback", "rollout", "status"):
        _short_registry_timeouts()
    return run_command(f"{parser.prog} {args.command}", lambda: args.func(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
