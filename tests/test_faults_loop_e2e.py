"""kill -9 of a training run under the real daemon: the loop retries it on its own.

From a champion bootstrapped on the first 4,500 SMS messages, with the real
dagster-daemon (and the code server it starts) on a temp home whose
instance config is the generated one (run monitoring on): an e-mail batch
drifts, and the run that trains on it is killed with SIGKILL as soon as
trained_model starts training. Then, without a hand on it:

- the run ends FAILURE, and its pool slot is freed (or nothing could train);
- one retry, after the backoff, trains that corpus and decides; nothing
  else trains it, and one model version is registered for it;
- the aliases agree with the decision, no MLflow run of the dead run is
  left RUNNING, and the webhook says what died and why;
- the next batch is still ingested and judged.

Run with: pytest -m slow tests/test_faults_loop_e2e.py -s
"""

import os
import re
import signal
import time

import dagster as dg
import pytest
from mlflow import MlflowClient

from tests.test_loop_e2e import Platform, _materializations, _meta, _verdicts_on, _wait_for, corpora  # noqa: F401
from tests.test_notifications import recording_server

pytestmark = [pytest.mark.slow, pytest.mark.datasets]

BACKOFF = 5  # seconds; SPAM_RETRY_BACKOFF_SECONDS for this daemon
RETRY_WINDOW = 900  # kill to a decision by the retry, on a loaded 2-core machine


def _training_run(instance) -> dg.DagsterRun | None:
    """A run whose trained_model has started training (it tags the corpus first)."""
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]), limit=20):
        if "spam/corpus_version" in run.tags:
            return run
    return None


def _worker_pid(instance, run_id: str) -> int:
    """The run worker's pid, as it reported itself to the run's event log."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        if match := re.match(r"Started process for run \(pid: (\d+)\)", entry.dagster_event.message or ""):
            return int(match.group(1))
    pytest.fail(f"run {run_id} recorded no worker pid")


def test_a_killed_training_is_retried_once_and_the_loop_goes_on(tmp_path, corpora, monkeypatch):
    from spam_assets.model.registry import Registry
    from spam_assets.settings import tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first, sms_rest, mail = corpora
    with recording_server() as (url, received):
        platform = Platform(tmp_path, url)
        platform.env["SPAM_RETRY_BACKOFF_SECONDS"] = str(BACKOFF)
        platform.bootstrap(first)
        assert "run_monitoring" in (platform.dagster_home / "dagster.yaml").read_text()
        instance = platform.instance()
        uri = tracking_uri(platform.home)
        try:
            platform.start_daemon()
            batch, dropped = platform.drop(mail, "spamassassin-sample.tar.gz")
            victim = _wait_for("trained_model to start training", lambda: _training_run(instance), platform)
            corpus = victim.tags["spam/corpus_version"]
            os.kill(_worker_pid(instance, victim.run_id), signal.SIGKILL)
            killed_at = time.time()

            def ended():
                status = instance.get_run_by_id(victim.run_id).status
                return status if status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED) else None

            assert _wait_for("the killed run to end", ended, platform, 180) == dg.DagsterRunStatus.FAILURE

            def retry_decided():
                retries = [r for r in instance.get_runs(limit=100) if r.tags.get("spam/trigger") == "retry"]
                for run in retries:
                    if run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
                        pytest.fail(f"retry run {run.run_id} ended {run.status.value}:\n{platform.daemon_tail(120)}")
                return [r for r in _materializations(instance, "champion_decision", dropped) if r.run_id in {x.run_id for x in retries}]

            (decision,) = _wait_for("the retry's decision", retry_decided, platform, RETRY_WINDOW)
            retry = instance.get_run_by_id(decision.run_id)
            assert retry.tags["spam/died_run"] == victim.run_id
            assert f"training of corpus {corpus} died: its process was killed" in retry.tags["spam/retrain_reason"]
            record = instance.get_run_record_by_id(retry.run_id)
            assert record.create_timestamp.timestamp() >= killed_at + BACKOFF - 1  # the backoff was kept

            # Trained once on that corpus: by the retry, and by nothing else.
            (trained,) = _materializations(instance, "trained_model", dropped)
            assert trained.run_id == retry.run_id and _meta(trained)["corpus_data_version"] == corpus
            registry = Registry(uri)
            versions = registry.client.search_model_versions(f"name='{registry.model_name}'")
            assert [str(v.version) for v in versions if v.tags.get("corpus_data_version") == corpus] == [
                str(_meta(trained)["model_version"])
            ]
            outcome = _meta(decision)["outcome"]
            expected = outcome["challenger_version"] if outcome["promoted"] else outcome["champion_version_before"]
            assert str(registry.champion().version) == str(expected)
            assert str(registry.challenger().version) == str(_meta(trained)["model_version"])
            if outcome["promoted"]:
                assert str(registry.client.get_model_version_by_alias(registry.model_name, "previous-champion").version) == "1"

            client = MlflowClient(uri)
            left = client.search_runs(
                [e.experiment_id for e in client.search_experiments()],
                filter_string=f"tags.dagster_run_id = '{victim.run_id}' and attributes.status = 'RUNNING'",
            )
            assert left == []

            died = lambda: [m["text"] for m in received if m["text"].startswith(f"Training of corpus {corpus} died")]  # noqa: E731
            (text,) = _wait_for("the webhook's word on the death", died, platform, 120)
            assert "its process was killed" in text and "SIGKILL" in text

            # The loop goes on: the next batch is ingested and judged.
            batch, dropped = platform.drop(sms_rest, "sms-rest.txt")
            _wait_for("the next batch's drift verdict", lambda: _verdicts_on(instance, batch, dropped), platform)
        finally:
            platform.stop()
            instance.dispose()
