"""What `spam-platform` says when a command cannot do its job: one line and an exit status.

The one place that maps errors to words and codes. A user error (a missing
file, an unknown format, nothing to roll back to, a registry that does not
answer) gets a line that names what and where; anything else is a bug and
says so, pointing at `--debug`, which prints the traceback as well. The
codes are documented in README.md ("Command line") and `spam-platform --help`.
"""

from __future__ import annotations

import contextlib
import enum
import shutil
import signal
import sys
import threading
import traceback
from collections.abc import Callable


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2  # argparse's own code for a bad command line
    REJECTED = 3
    NOT_POSSIBLE = 4
    UNAVAILABLE = 5
    INTERNAL = 70  # sysexits EX_SOFTWARE
    INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C


MEANING = {
    ExitCode.OK: "done",
    ExitCode.FAILED: "the work ran and failed (a step of the graph; a server under `up`)",
    ExitCode.USAGE: "the command line, an input path or a configuration file is wrong",
    ExitCode.REJECTED: "the batch was rejected (a blocking check failed, or it cannot be read as its format)",
    ExitCode.NOT_POSSIBLE: "the platform's state does not allow it (no previous champion to roll back to)",
    ExitCode.UNAVAILABLE: "something the command needs is unavailable (the registry, the platform home, disk space)",
    ExitCode.INTERNAL: "a bug: run again with --debug and report the traceback",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
}
EXIT_CODES_HELP = "exit status:\n" + "\n".join(f"  {code.value:>3}  {MEANING[code]}" for code in ExitCode)


class UserError(Exception):
    """An error the user can fix; raised by commands with the line to print and the exit status."""

    def __init__(self, message: str, code: ExitCode = ExitCode.USAGE):
        super().__init__(message)
        self.code = code


def one_line(text: object, limit: int = 400) -> str:
    """Whitespace collapsed, cut at `limit` characters: what fits a terminal line or a log field."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def explain(error: BaseException) -> tuple[str, ExitCode]:
    """The line to print and the exit status for `error`; unknown errors are INTERNAL."""
    if isinstance(error, UserError):
        return one_line(error), error.code
    if isinstance(error, KeyboardInterrupt):
        return "interrupted", ExitCode.INTERRUPTED
    for kinds, describe in _known():
        if isinstance(error, kinds):
            return describe(error)
    return (
        f"unexpected error: {type(error).__name__}: {one_line(error, 200)} (run with --debug for the traceback)",
        ExitCode.INTERNAL,
    )


def run_command(prog: str, command: Callable[[], int], debug: bool = False) -> int:
    """Run a command: its own status, or one line on stderr and the status of what went wrong."""
    try:
        return int(command())
    except (Exception, KeyboardInterrupt) as error:  # SystemExit passes: argparse and sys.exit mean it
        line, code = explain(error)
        # A second Ctrl-C must not turn this line into a traceback; after an interruption, nor
        # end the process by SIGINT instead of status 130 (it is ending: nothing is lost).
        with _ctrl_c_ignored(restore=code != ExitCode.INTERRUPTED):
            if debug:
                traceback.print_exc(file=sys.stderr)
            print(f"{prog}: {line}", file=sys.stderr, flush=True)
        return code


@contextlib.contextmanager
def _ctrl_c_ignored(restore: bool = True):
    if threading.current_thread() is not threading.main_thread():  # only the main thread sets handlers
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        if restore:
            signal.signal(signal.SIGINT, previous)


# --- known errors -----------------------------------------------------------------------------
# Looked up in order: the first matching type wins. Imports are lazy where a
# library is heavy, so `spam-platform --help` and `up` stay light.


def _os_error(error: OSError) -> tuple[str, ExitCode]:
    where = " -> ".join(str(f) for f in (error.filename, error.filename2) if f is not None)
    why = error.strerror or one_line(error)
    return (f"{where}: {why}" if where else why), ExitCode.UNAVAILABLE


def _copy_error(error: shutil.Error) -> tuple[str, ExitCode]:
    # shutil.copytree collects (source, target, why) for every file it could not copy.
    problems = error.args[0] if error.args and isinstance(error.args[0], list) else []
    if not problems:
        return f"could not copy: {one_line(error)}", ExitCode.USAGE
    source, _target, why = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"could not copy {source}: {one_line(why, 200)}{more}", ExitCode.USAGE


def _batch_format(error) -> tuple[str, ExitCode]:
    return f"the batch cannot be read: {one_line(error)}", ExitCode.REJECTED


def _source_unavailable(error) -> tuple[str, ExitCode]:
    return one_line(error), ExitCode.USAGE


def _registry(error) -> tuple[str, ExitCode]:
    from spam_assets.settings import tracking_uri

    return f"the model registry at {tracking_uri()} failed: {one_line(error, 300)}", ExitCode.UNAVAILABLE


def _dagster_config(error) -> tuple[str, ExitCode]:
    # The full message lists every key Dagster accepts (thousands of characters); the first problem is enough.
    reasons = [one_line(e.message).split(" Expected: ")[0] for e in getattr(error, "errors", [])]
    return f"{one_line(error.args[0] if error.args else error, 200)} {'; '.join(reasons)}".strip(), ExitCode.USAGE


def _yaml(error) -> tuple[str, ExitCode]:
    return f"a YAML file is malformed: {one_line(error)}", ExitCode.USAGE


def _known() -> list[tuple[type | tuple[type, ...], Callable[[BaseException], tuple[str, ExitCode]]]]:
    known: list = []
    # Optional imports: each library is only consulted if the command already loaded it.
    if "spam_assets.loaders" in sys.modules:
        known.append((sys.modules["spam_assets.loaders"].BatchFormatError, _batch_format))
    if "spam_assets.sources" in sys.modules:
        known.append((sys.modules["spam_assets.sources"].SourceUnavailable, _source_unavailable))
    if "mlflow" in sys.modules:
        from mlflow.exceptions import MlflowException

        known.append((MlflowException, _registry))
    if "dagster" in sys.modules:
        from dagster import DagsterInvalidConfigError

        known.append((DagsterInvalidConfigError, _dagster_config))
    if "yaml" in sys.modules:
        known.append((sys.modules["yaml"].YAMLError, _yaml))
    known += [(shutil.Error, _copy_error), (OSError, _os_error)]  # shutil.Error is an OSError: first
    return known

