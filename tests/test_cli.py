"""What `spam-platform` says when it cannot do its job: one line, a documented exit status, no traceback.

Each user error is run as a real `spam-platform` process on a temp home, as
a user would meet it; the mapping itself (cli_errors) and the run summary
(runner.summarize) are checked in-process below.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import socket
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from spam_assets.cli_errors import ExitCode, UserError, explain, run_command
from tests.synthetic import sms_messages, write_sms_file

BIN = Path(sys.executable).parent / "spam-platform"
ROOT = Path(__file__).resolve().parents[1]


def spam_platform(tmp_path: Path, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SPAM_", "MLFLOW_", "DAGSTER_"))}
    clean.update({"SPAM_HOME": str(tmp_path / "home"), **env})
    return subprocess.run(
        [str(BIN), *args], env=clean, cwd=tmp_path, capture_output=True, text=True, timeout=timeout
    )


# What MLflow prints on stderr by itself when a run registers a model (mlflow.utils.eprint, not a logger).
MLFLOW_NOTICES = re.compile(r"(Successfully registered model|Created version) '.*'\.$")


def said(out: subprocess.CompletedProcess, code: ExitCode, command: str) -> str:
    """The exit status is `code` and stderr is one line from `spam-platform <command>`; that line.

    Only MLflow's own registration notices may come before it.
    """
    assert "Traceback" not in out.stdout + out.stderr, out.stderr[-3000:]
    assert out.returncode == code, (out.returncode, out.stderr[-3000:])
    *before, line = [text for text in out.stderr.splitlines() if text.strip()]
    assert all(MLFLOW_NOTICES.match(text) for text in before), out.stderr[-3000:]
    assert line.startswith(f"spam-platform {command}: "), line
    return line


# --- user errors, each as a user meets it ------------------------------------------------------


def test_rollback_with_no_previous_champion(tmp_path):
    line = said(spam_platform(tmp_path, "rollback"), ExitCode.NOT_POSSIBLE, "rollback")
    assert "nothing to roll back to" in line and "previous-champion" in line


def test_ingest_of_a_missing_path_stages_nothing(tmp_path):
    line = said(spam_platform(tmp_path, "ingest", "no-such.csv"), ExitCode.USAGE, "ingest")
    assert line.endswith("no-such.csv: no such file or folder")
    assert not (tmp_path / "home" / "batches").exists()


def test_ingest_of_a_folder_without_spam_or_ham_is_one_rejection_line(tmp_path):
    (tmp_path / "mail" / "misc").mkdir(parents=True)
    (tmp_path / "mail" / "misc" / "1").write_text("Subject: hello\n\nhi there\n")
    out = spam_platform(tmp_path, "ingest", "mail")
    line = said(out, ExitCode.REJECTED, "ingest")
    assert re.search(r"batch [0-9a-f]{16} rejected: batch_schema: .*neither spam nor ham: misc", line), line
    assert "DEBUG" not in out.stdout and "dagster - " not in out.stdout  # Dagster's console log stays off
    assert out.stdout.strip().splitlines() == [f"batch {line.split()[3]} staged from mail"]


def test_unknown_format_names_the_formats_and_stages_nothing(tmp_path):
    (tmp_path / "a.xml").write_text("<a/>")
    line = said(spam_platform(tmp_path, "ingest", "a.xml", "--format", "xml"), ExitCode.USAGE, "ingest")
    assert "--format: unknown format 'xml'; expected one of auto, sms, csv, tsv, jsonl, email, mbox" in line
    assert not (tmp_path / "home" / "batches").exists()


def test_a_bad_source_name_names_the_flag_and_stages_nothing(tmp_path):
    write_sms_file(sms_messages(20), tmp_path / "batch.txt")
    line = said(spam_platform(tmp_path, "ingest", "batch.txt", "--source-name", "Enron Mail"), ExitCode.USAGE, "ingest")
    assert "--source-name: 'Enron Mail' is not a source name (1-32 characters of a-z, 0-9" in line, line
    assert not (tmp_path / "home" / "batches").exists()


def test_the_source_name_given_at_ingest_is_stored_with_the_batch(tmp_path):
    write_sms_file(sms_messages(20), tmp_path / "batch.txt")
    out = spam_platform(tmp_path, "ingest", "batch.txt", "--source-name", "enron-2", "--no-run")
    assert out.returncode == ExitCode.OK, out.stderr[-3000:]
    (meta,) = (tmp_path / "home" / "batches").glob("*/meta.json")
    assert json.loads(meta.read_text())["spec"]["source"] == "enron-2"


def test_a_fifo_is_refused_without_opening_it(tmp_path):
    os.mkfifo(tmp_path / "pipe")  # opening it for reading would block until a writer comes: the test would time out
    line = said(spam_platform(tmp_path, "ingest", "pipe", timeout=120), ExitCode.USAGE, "ingest")
    assert line.endswith("pipe: not a regular file or a folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_is_refused(tmp_path):
    secret = write_sms_file(sms_messages(20), tmp_path / "secret.txt")
    secret.chmod(0)
    line = said(spam_platform(tmp_path, "ingest", "secret.txt"), ExitCode.USAGE, "ingest")
    assert line.endswith("secret.txt: permission denied (cannot read it)")


def test_a_malformed_registry_uri(tmp_path):
    line = said(spam_platform(tmp_path, "rollback", MLFLOW_TRACKING_URI="foo://bar"), ExitCode.UNAVAILABLE, "rollback")
    assert "the model registry at foo://bar failed" in line and "unsupported URI" in line


def test_an_unreachable_registry_answers_without_minutes_of_retries(tmp_path):
    with socket.socket() as s:  # a port nothing listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{s.getsockname()[1]}"
        out = spam_platform(tmp_path, "rollback", timeout=120, MLFLOW_TRACKING_URI=uri)
    line = said(out, ExitCode.UNAVAILABLE, "rollback")
    assert f"the model registry at {uri} failed" in line


def test_a_malformed_instance_config_names_the_entry(tmp_path):
    config = tmp_path / "home" / "dagster" / "dagster.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("run_queuex: 1\n")
    write_sms_file(sms_messages(20), tmp_path / "batch.txt")
    line = said(spam_platform(tmp_path, "ingest", "batch.txt", "--no-run"), ExitCode.USAGE, "ingest")
    assert "dagster.yaml" in line and 'unexpected config entry "run_queuex"' in line
    assert len(line) < 400  # not Dagster's list of every key it accepts


def test_a_home_that_is_a_file(tmp_path):
    (tmp_path / "home").write_text("not a folder")
    line = said(spam_platform(tmp_path, "rollback"), ExitCode.UNAVAILABLE, "rollback")
    assert str(tmp_path / "home") in line and "Not a directory" in line


def test_verbose_shows_dagsters_own_log(tmp_path):
    (tmp_path / "mail" / "misc").mkdir(parents=True)
    (tmp_path / "mail" / "misc" / "1").write_text("Subject: hello\n\nhi there\n")
    out = spam_platform(tmp_path, "ingest", "mail", "--verbose")
    assert out.returncode == ExitCode.REJECTED
    both = out.stderr + out.stdout
    assert " - dagster - ERROR - " in both and " - dagster - DEBUG - " not in both  # INFO and up
    assert out.stderr.strip().splitlines()[-1].startswith("spam-platform ingest: batch ")


@pytest.mark.parametrize(
    ("args", "command", "words"),
    [
        ([], "", "the following arguments are required: command (see spam-platform --help)"),
        (["up", "--port", "99999"], "up", "argument --port: '99999' is not a port (1-65535)"),
        (["ingest", "--format"], "ingest", "argument --format: expected one argument"),
    ],
)
def test_a_bad_command_line_is_one_line_too(tmp_path, args, command, words):
    out = spam_platform(tmp_path, *args)
    assert out.returncode == ExitCode.USAGE and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [f"spam-platform{' ' + command if command else ''}: {words}" + (
        "" if "--help" in words else f" (see spam-platform {command} --help)")]


def test_up_on_an_address_it_cannot_listen_on_is_not_a_port_in_use(tmp_path):
    line = said(spam_platform(tmp_path, "up", "--host", "no-such-host.invalid"), ExitCode.USAGE, "up")
    assert line.startswith("spam-platform up: cannot listen on no-such-host.invalid --port 3000: ")
    assert not (tmp_path / "home" / "batches").exists()


def test_a_graph_that_fails_says_so_after_its_findings(tmp_path):
    """A batch too small to hold out a test set: accepted, then the corpus checks stop the graph (exit 1)."""
    write_sms_file(sms_messages(60, seed=1), tmp_path / "small.txt")
    out = spam_platform(tmp_path, "ingest", "small.txt")
    line = said(out, ExitCode.FAILED, "ingest")
    assert "the graph failed after" in line
    assert "  check failed: cleaned_corpus.holdout_size: holdout has" in out.stdout
    assert "DEBUG" not in out.stdout


def test_ctrl_c_during_a_run_is_one_line_and_130(tmp_path):
    """Ctrl-C, pressed until the command stops: Dagster turns one during a step into a failed step
    (and ignores one between steps), plain Python into KeyboardInterrupt; either way one line, 130."""
    frame = sms_messages(400, seed=1, spam_share=0.3)
    write_sms_file(pd.concat([frame, frame]), tmp_path / "batch.txt")  # long enough to train for seconds
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SPAM_", "MLFLOW_", "DAGSTER_"))}
    clean.update(SPAM_HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([str(BIN), "ingest", "batch.txt"], env=clean, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert "staged from batch.txt" in proc.stdout.readline()  # the graph starts now
        while proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
        out = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.read(), proc.stderr.read())
    finally:
        proc.kill()
        proc.wait()
    assert said(out, ExitCode.INTERRUPTED, "ingest").startswith("spam-platform ingest: interrupted")


def test_an_unexpected_error_is_one_line_pointing_at_debug(tmp_path):
    """A corrupt Dagster run database is nothing the CLI knows: one line, status 70; --debug adds the traceback."""
    runs_db = tmp_path / "home" / "dagster" / "history" / "runs.db"
    runs_db.parent.mkdir(parents=True)
    runs_db.write_bytes(b"this is not a database" * 100)
    write_sms_file(sms_messages(20), tmp_path / "batch.txt")
    line = said(spam_platform(tmp_path, "ingest", "batch.txt", "--no-run"), ExitCode.INTERNAL, "ingest")
    assert "unexpected error: DatabaseError:" in line and line.endswith("(run with --debug for the traceback)")

    for flags in (["--debug", "ingest", "batch.txt", "--no-run"], ["ingest", "batch.txt", "--no-run", "--debug"]):
        out = spam_platform(tmp_path, *flags)
        assert out.returncode == ExitCode.INTERNAL
        assert "Traceback (most recent call last)" in out.stderr
        assert out.stderr.strip().splitlines()[-1] == line


# --- the mapping, in-process ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (UserError("x: no such file or folder"), ExitCode.USAGE, "x: no such file or folder"),
        (OSError(errno.ENOSPC, "No space left on device", "/home/b/parsed.parquet"), ExitCode.UNAVAILABLE,
         "/home/b/parsed.parquet: No space left on device"),
        (shutil.Error([("a/x", "b/x", "[Errno 40] Too many levels of symbolic links"), ("a/y", "b/y", "?")]),
         ExitCode.USAGE, "could not copy a/x: [Errno 40] Too many levels of symbolic links (and 1 more)"),
        (KeyboardInterrupt(), ExitCode.INTERRUPTED, "interrupted"),
        (RuntimeError("boom\nsecond line"), ExitCode.INTERNAL,
         "unexpected error: RuntimeError: boom second line (run with --debug for the traceback)"),
    ],
)  # fmt: skip
def test_explain(error, code, line):
    assert explain(error) == (line, code)


def test_run_command_prints_one_line_and_returns_the_code(capsys):
    def broken() -> int:
        raise UserError("nothing to do", ExitCode.NOT_POSSIBLE)

    assert run_command("spam-platform x", broken) == ExitCode.NOT_POSSIBLE
    assert capsys.readouterr().err == "spam-platform x: nothing to do\n"
    assert run_command("spam-platform x", broken, debug=True) == ExitCode.NOT_POSSIBLE
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.endswith("spam-platform x: nothing to do\n")


def test_every_exit_status_is_documented_in_the_readme():
    section = (ROOT / "README.md").read_text().split("## Command line", 1)[1].split("\n## ", 1)[0]
    documented = {int(m) for m in re.findall(r"^\| (\d+) \|", section, re.MULTILINE)}
    assert documented == {int(code) for code in ExitCode}


# --- the run summary the CLI prints ---------------------------------------------------------------


def test_a_warning_only_check_is_printed_as_a_warning(instance, resources, home, tmp_path):
    from spam_assets.intake import register, stage
    from spam_assets.runner import materialize_batches, summarize

    frame = sms_messages(40, seed=2)
    batch = write_sms_file(pd.concat([frame, frame, frame]), tmp_path / "repeated.txt")  # 2/3 repeats: warn above 1/2
    batch_id = stage(batch, resources["store"].batches())
    register(instance, batch_id)
    (result,) = materialize_batches([batch_id], instance, resources, downstream=[], log_level="CRITICAL")
    assert result.success
    lines = list(summarize(result, instance))
    assert "warning: raw_sample.batch_duplicate_share: 80 repeated texts (66.7%; warn above 50%)" in lines
    assert not [line for line in lines if line.startswith("check failed")]
