"""The MLflow registry down: nothing is staged while it is, and what was accepted is judged once it is back.

The registry is a tracking URI on a free local port with nothing
listening (connections refused), then a real `mlflow server` started on
that very port.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from spam_assets.defs.automation.catch_up import JUDGE_TAG, MAX_ATTEMPTS, judge_unjudged_corpus
from spam_assets.defs.resources import ModelRegistry
from spam_assets.defs.retrain_policy import VERDICT_KEY, Verdict
from spam_assets.intake import registry_problem
from spam_assets.services import MLFLOW_LEAN_ENV, free_local_port
from tests.synthetic import sms_messages, write_sms_file
from tests.test_automation_retrain import corpus

BIN = Path(sys.executable).parent


@contextlib.contextmanager
def mlflow_server(port: int, root: Path):
    """A real MLflow tracking server on 127.0.0.1:port (its own process group), ready when /health answers."""
    root.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--default-artifact-root", (root / "a").as_uri(),
        ],
        cwd=root, env={**os.environ, **MLFLOW_LEAN_ENV}, start_new_session=True,
        stdout=(root / "server.log").open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.time() + 180
        while registry_problem(f"http://127.0.0.1:{port}", timeout=1) is not None:
            if process.poll() is not None or time.time() > deadline:
                pytest.fail(f"mlflow server did not come up:\n{(root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def down(monkeypatch) -> tuple[int, str]:
    """MLFLOW_TRACKING_URI at a free port nothing listens on."""
    port = free_local_port()
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return port, uri


def test_a_refused_connection_is_one_clear_line(down):
    _, uri = down
    problem = registry_problem(uri, timeout=1)
    assert problem.startswith(f"the MLflow registry at {uri} is unreachable (")
    assert "refused" in problem.lower() and "\n" not in problem
    assert registry_problem("sqlite:///anywhere.db") is None  # a local store is not asked


def _ingest(home: Path, source: Path, uri: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPAM_", "MLFLOW_", "DAGSTER_"))}
    env.update(SPAM_HOME=str(home), MLFLOW_TRACKING_URI=uri, SPAM_REGISTRY_TIMEOUT_SECONDS="2")
    return subprocess.run(
        [str(BIN / "spam-platform"), "ingest", str(source), "--no-run"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_ingest_refuses_before_staging_then_goes_through_once_the_registry_is_back(tmp_path, down):
    port, uri = down
    home, source = tmp_path / "home", write_sms_file(sms_messages(60, seed=2), tmp_path / "batch.txt")
    refused = _ingest(home, source, uri)
    assert refused.returncode == 5  # cli_errors.ExitCode.UNAVAILABLE
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert lines[0].startswith(f"spam-platform ingest: the MLflow registry at {uri} is unreachable")
    assert "nothing was staged" in lines[0] and "Traceback" not in refused.stderr
    batches = home / "batches"
    assert not batches.exists() or not any(batches.iterdir())  # nothing half-done
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        assert instance.get_dynamic_partitions("batches") == []

    with mlflow_server(port, tmp_path / "server"):
        accepted = _ingest(home, source, uri)
    assert accepted.returncode == 0, accepted.stderr
    assert "staged from" in accepted.stdout
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        assert len(instance.get_dynamic_partitions("batches")) == 1


def test_inbox_files_wait_unstaged_while_the_registry_is_down(instance, home, tmp_path, down, monkeypatch):
    from tests.test_automation_inbox import tick

    port, _ = down
    monkeypatch.setenv("SPAM_INBOX_SETTLE_SECONDS", "0")
    (home / "inbox").mkdir()
    write_sms_file(sms_messages(60, seed=4), home / "inbox" / "batch.txt")
    result = tick(instance)
    assert not result.run_requests
    assert "until the registry is back" in result.skip_message and "unreachable" in result.skip_message
    assert (home / "inbox" / "batch.txt").exists()
    assert not (home / "batches").exists() or not any((home / "batches").iterdir())

    with mlflow_server(port, tmp_path / "server"):
        later = tick(instance, result.cursor)
    (request,) = later.run_requests
    assert request.tags["spam/inbox_file"] == "batch.txt"


def _judge(instance, cursor=None):
    return judge_unjudged_corpus.evaluate_tick(
        dg.build_sensor_context(instance=instance, cursor=cursor, resources={"registry": ModelRegistry()})
    )


def _verdict(instance):
    @dg.asset(name="drift_statistics")
    def stand_in() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={VERDICT_KEY: dg.MetadataValue.json(Verdict(False, False, []).to_json())})

    assert dg.materialize([stand_in], instance=instance).success


def test_a_corpus_accepted_while_the_registry_was_down_is_judged_once_it_is_back(instance, home, tmp_path, down):
    port, _ = down
    assert _judge(instance).skip_message == "every corpus version has its drift verdict"
    corpus(instance, "c1")
    _verdict(instance)
    assert _judge(instance).skip_message == "every corpus version has its drift verdict"

    corpus(instance, "c2")  # accepted; its verdict failed with the registry down
    waiting = _judge(instance)
    assert not waiting.run_requests
    assert "corpus c2 waits for its drift verdict: the MLflow registry at" in waiting.skip_message

    with mlflow_server(port, tmp_path / "server"):
        (request,) = _judge(instance).run_requests
    assert {k.to_user_string() for k in request.asset_selection} == {"drift_statistics", "trained_model", "champion_decision"}
    assert request.tags["spam/trigger"] == "new batch" and request.tags[JUDGE_TAG] == "c2"  # trains only on drift

    _verdict(instance)
    assert _judge(instance).skip_message == "every corpus version has its drift verdict"


def test_a_corpus_being_judged_or_failing_again_and_again_is_not_requested(instance, home, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the local store: always there
    monkeypatch.setenv("SPAM_RETRY_BACKOFF_SECONDS", "0")
    corpus(instance, "c2")
    run = instance.add_run(
        dg.DagsterRun(
            job_name="__ASSET_JOB", status=dg.DagsterRunStatus.STARTED,
            asset_selection=frozenset({dg.AssetKey("drift_statistics")}),
        )
    )  # fmt: skip
    assert f"being judged by run {run.run_id[:8]}" in _judge(instance).skip_message
    instance.report_run_failed(run)
    for attempt in range(MAX_ATTEMPTS):
        (request,) = _judge(instance).run_requests
        assert request.run_key == f"judge-c2-{attempt}"
        failed = instance.add_run(dg.DagsterRun(job_name="__ASSET_JOB", status=dg.DagsterRunStatus.STARTED, tags=request.tags))
        instance.report_run_failed(failed)
    assert f"still unjudged after {MAX_ATTEMPTS} catch-up runs" in _judge(instance).skip_message
