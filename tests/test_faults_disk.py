"""A disk too full for a batch: refused before staging; a full disk during training: retried, the loop goes on.

Before anything is staged (`spam-platform ingest`, the inbox sensor), the
platform home's filesystem must have room for the batch and a model plus
the floor `SPAM_MIN_FREE_BYTES`; the tests raise the floor above the real
free space of the real filesystem, and check the arithmetic on statvfs
numbers. A full disk while training is injected with the test-only hook
`SPAM_FAULT_MODEL_WRITE_ENOSPC` (spam_assets/faults.py: the model file is
cut short and the write fails with ENOSPC), on a real MLflow store and,
in the slow test, under the real daemon.

Run the slow one with: pytest -m slow tests/test_faults_disk.py -s
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from serving_fixtures import model_store, train  # noqa: F401  (a real store with trained versions)

from spam_assets import disk
from spam_assets.disk import MIN_FREE_ENV, SpaceNeed, estimate, free_bytes, min_free_bytes, source_bytes, space_problem
from spam_assets.faults import MODEL_WRITE_ENV
from tests.synthetic import sms_messages, write_sms_file
from tests.test_loop_e2e import corpora  # noqa: F401  (the slow test's SMS and e-mail batches)

BIN = Path(sys.executable).parent
MiB = 1 << 20
BEYOND_ANY_DISK = "1000000G"  # about a petabyte: above the free space of any filesystem these tests meet


# --- the arithmetic, on statvfs numbers ---------------------------------------------------------


def statvfs_numbers(frsize: int, bfree: int, bavail: int) -> os.statvfs_result:
    # (bsize, frsize, blocks, bfree, bavail, files, ffree, favail, flag, namemax)
    return os.statvfs_result((frsize * 4, frsize, 10**9, bfree, bavail, 10**6, 10**6, 10**6, 0, 255))


def test_free_space_is_what_an_unprivileged_process_may_write(tmp_path):
    asked = []

    def statvfs(path):
        asked.append(path)
        return statvfs_numbers(frsize=4096, bfree=1000, bavail=600)  # 400 blocks reserved for root

    assert free_bytes(tmp_path / "home" / "not-yet", statvfs=statvfs) == 600 * 4096  # f_bavail x f_frsize
    assert asked == [tmp_path]  # the nearest folder that exists: a home not made yet is on its parent's disk


def test_the_need_is_the_batch_the_corpus_a_model_and_the_floor(tmp_path):
    need = estimate(100 * MiB, 10 * MiB, None, floor=256 * MiB)
    assert need == SpaceNeed(batch=disk.BATCH_FACTOR * 100 * MiB, corpus=10 * MiB, model=disk.DEFAULT_MODEL_BYTES, floor=256 * MiB)
    assert estimate(1, 0, 5 * MiB, floor=0).model == 5 * MiB  # the champion's own size when known

    free = need.total - 1
    problem = space_problem(tmp_path, need, free=free)
    assert problem.startswith(f"not enough free disk space under {tmp_path}: {free} bytes free")
    assert f"{need.total} bytes needed" in problem and MIN_FREE_ENV in problem
    assert f"batch {disk.BATCH_FACTOR * 100} MiB" in problem and "floor 256 MiB" in problem
    assert space_problem(tmp_path, need, free=need.total) is None


def test_the_floor_is_a_size_and_zero_turns_it_off():
    assert min_free_bytes({}) == disk.DEFAULT_MIN_FREE
    assert min_free_bytes({MIN_FREE_ENV: "2G"}) == 2 << 30
    assert min_free_bytes({MIN_FREE_ENV: "0"}) == 0
    with pytest.raises(ValueError, match=MIN_FREE_ENV):
        min_free_bytes({MIN_FREE_ENV: "lots"})


def test_the_source_size_counts_regular_files_and_follows_no_link(tmp_path):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"x" * 5000)
    mail = tmp_path / "mail"
    (mail / "spam").mkdir(parents=True)
    (mail / "spam" / "1.eml").write_bytes(b"a" * 300)
    (mail / "spam" / "2.eml").write_bytes(b"b" * 200)
    (mail / "ham").symlink_to(tmp_path)  # a link to a folder: not walked
    (mail / "spam" / "link.eml").symlink_to(outside)  # a link to a file: not counted
    assert source_bytes(mail) == 500
    assert source_bytes(mail / "spam" / "1.eml") == 300


def test_the_champions_stored_model_is_measured(model_store):  # noqa: F811
    registry = model_store.clone("disk", [model_store.good[0]])
    assert disk.stored_model_bytes(model_store.uri, registry.model_name) is None  # no champion yet: the default
    registry.promote("1", "first")
    measured = disk.stored_model_bytes(model_store.uri, registry.model_name)
    assert measured == source_bytes(model_store.artifact_dir(model_store.good[0])) > 0
    assert disk.stored_model_bytes("http://127.0.0.1:9", registry.model_name) is None  # unknown: never raises


# --- before staging: the real filesystem ----------------------------------------------------------


def _ingest(home: Path, source: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SPAM_", "MLFLOW_", "DAGSTER_"))}
    clean.update(SPAM_HOME=str(home), **env)
    return subprocess.run(
        [str(BIN / "spam-platform"), "ingest", str(source), "--no-run"],
        env=clean, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_ingest_refuses_before_staging_when_the_disk_has_too_little_room(tmp_path):
    home, source = tmp_path / "home", write_sms_file(sms_messages(60, seed=3), tmp_path / "batch.txt")
    refused = _ingest(home, source, **{MIN_FREE_ENV: BEYOND_ANY_DISK})
    assert refused.returncode == 5, refused.stderr  # cli_errors.ExitCode.UNAVAILABLE, the one table's "a full disk"
    (line,) = refused.stderr.strip().splitlines()
    assert "Traceback" not in refused.stderr
    assert line.startswith(f"spam-platform ingest: not enough free disk space under {home.resolve()}: ")
    free = int(re.search(r": (\d+) bytes free", line).group(1))
    assert abs(free - free_bytes(home)) < 1 << 30  # what statvfs says of this very disk (others write meanwhile)
    assert MIN_FREE_ENV in line and "nothing was staged" in line and "bytes needed" in line
    batches = home / "batches"
    assert not batches.exists() or not any(batches.iterdir())  # nothing half-done
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        assert instance.get_dynamic_partitions("batches") == []

    accepted = _ingest(home, source, **{MIN_FREE_ENV: "1M"})  # room again
    assert accepted.returncode == 0, accepted.stderr
    assert "staged from" in accepted.stdout


def test_up_refuses_its_first_batch_before_staging_when_the_disk_has_too_little_room(tmp_path):
    home, source = tmp_path / "home", write_sms_file(sms_messages(60, seed=3), tmp_path / "batch.txt")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SPAM_", "MLFLOW_", "DAGSTER_"))}
    clean.update(SPAM_HOME=str(home), **{MIN_FREE_ENV: BEYOND_ANY_DISK})
    refused = subprocess.run(
        [str(BIN / "spam-platform"), "up", "--no-ui", "--source", str(source)],
        env=clean, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert refused.returncode == 5, refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith(f"spam-platform up: not enough free disk space under {home.resolve()}: "), line
    batches = home / "batches"
    assert not batches.exists() or not any(batches.iterdir())


def test_a_malformed_floor_is_a_usage_error_naming_the_variable(tmp_path):
    source = write_sms_file(sms_messages(60, seed=3), tmp_path / "batch.txt")
    out = _ingest(tmp_path / "home", source, **{MIN_FREE_ENV: "lots"})
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("spam-platform ingest: ") and f"{MIN_FREE_ENV}='lots'" in line


def test_inbox_files_wait_for_disk_space_unstaged_then_go_through(instance, home, monkeypatch):
    from tests.test_automation_inbox import tick

    monkeypatch.delenv("SPAM_INBOX", raising=False)
    monkeypatch.setenv("SPAM_INBOX_SETTLE_SECONDS", "0")
    monkeypatch.setenv(MIN_FREE_ENV, BEYOND_ANY_DISK)
    (home / "inbox").mkdir()
    write_sms_file(sms_messages(60, seed=4), home / "inbox" / "batch.txt")
    result = tick(instance)
    assert not result.run_requests
    assert "until there is disk space: batch.txt: not enough free disk space under" in result.skip_message
    assert MIN_FREE_ENV in result.skip_message and "bytes free" in result.skip_message
    assert (home / "inbox" / "batch.txt").exists()  # the file is fine: not rejected
    assert not (home / "inbox" / "rejected").exists()
    assert not (home / "batches").exists() or not any((home / "batches").iterdir())
    again = tick(instance, result.cursor)  # still no room: still waiting, asked again
    assert not again.run_requests and "until there is disk space" in again.skip_message

    monkeypatch.delenv(MIN_FREE_ENV)  # space freed: the next tick takes it
    (request,) = tick(instance, again.cursor).run_requests
    assert request.tags["spam/inbox_file"] == "batch.txt"


# --- a full disk while the model is written: the hook, on a real MLflow store ----------------------


def test_a_model_write_that_finds_the_disk_full_registers_nothing_and_leaves_no_partial_files(tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import LoggedModelStatus
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    from spam_assets.challenger import SKOPS_FILE, log_challenger
    from spam_assets.model.registry import Registry, ensure_experiment

    counter = tmp_path / "model-writes-to-fail"
    counter.write_text("1")
    monkeypatch.setenv(MODEL_WRITE_ENV, str(counter))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry, result = Registry(uri), train(0)

    def log(i: int):
        with mlflow.start_run(experiment_id=experiment):
            return log_challenger(
                result, registry, corpus_version="c1", dagster_run_id=f"run-{i}", params={}, n_train=300, n_holdout=60
            )

    with _use_tracking_uri(uri):
        experiment = ensure_experiment(uri, tmp_path / "artifacts")
        with pytest.raises(OSError) as caught:
            log(1)
        assert caught.value.errno == errno.ENOSPC
        assert counter.read_text() == "0"
        client = MlflowClient(uri)
        assert client.search_model_versions(f"name='{registry.model_name}'") == []  # nothing registered
        (failed,) = client.search_logged_models([experiment])
        assert failed.status == LoggedModelStatus.FAILED
        assert not Path(failed.artifact_location.removeprefix("file://")).exists()  # the cut-short file is gone

        version = log(2)  # the fault cleared: the same write goes through
    assert str(version.version) == "1"
    stored = Path(client.get_model_version_download_uri(registry.model_name, "1").removeprefix("file://")) / SKOPS_FILE
    assert version.tags["model_sha256"] == hashlib.sha256(stored.read_bytes()).hexdigest()
    registry.load("1")  # passes the checks a server makes


def test_the_mlflow_run_a_full_disk_failed_gets_the_reason(instance, home):
    """dagster-mlflow ends the MLflow run of a failed step FAILED, with no reason: the release sensor adds it."""
    from mlflow import MlflowClient

    from spam_assets.defs.automation.recovery import release_dead_training
    from spam_assets.defs.resources import ModelRegistry
    from spam_assets.model.registry import ensure_experiment
    from spam_assets.settings import EXPERIMENT_NAME, tracking_uri
    from spam_assets.training_runs import FAILURE_REASON_TAG
    from tests.test_faults_dead_training import dying_training

    uri = tracking_uri()
    ensure_experiment(uri, home / "mlflow" / "artifacts")
    context = lambda cursor=None: dg.build_sensor_context(  # noqa: E731
        instance=instance, cursor=cursor, resources={"registry": ModelRegistry()}
    )
    cursor = release_dead_training.evaluate_tick(context()).cursor
    run_id = dying_training(instance, "c1")  # trained_model: OSError ENOSPC
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME).experiment_id
    ended = client.create_run(experiment, tags={"dagster_run_id": run_id}).info.run_id
    client.set_terminated(ended, "FAILED")  # what dagster-mlflow's cleanup_on_error leaves
    finished = client.create_run(experiment, tags={"dagster_run_id": run_id}).info.run_id
    client.set_terminated(finished, "FINISHED")

    release_dead_training.evaluate_tick(context(cursor))
    assert "No space left on device" in client.get_run(ended).data.tags[FAILURE_REASON_TAG]
    assert client.get_run(ended).info.status == "FAILED"
    assert FAILURE_REASON_TAG not in client.get_run(finished).data.tags  # only runs that failed


# --- a full disk during training, under the real daemon -------------------------------------------

BACKOFF = 10  # seconds; SPAM_RETRY_BACKOFF_SECONDS for this daemon
RETRY_WINDOW = 900  # the failure to a decision by the retry, on a loaded 2-core machine
FAILED_STATUSES = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


def _died_training(instance) -> dg.DagsterRun | None:
    """A run that started training (it tags the corpus first) and ended failed."""
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=list(FAILED_STATUSES)), limit=20):
        if "spam/corpus_version" in run.tags:
            return run
    return None


@pytest.mark.slow
@pytest.mark.datasets
def test_a_full_disk_during_training_is_retried_once_and_the_loop_goes_on(tmp_path, corpora, monkeypatch):
    """The first model write of the e-mail batch's training fails with ENOSPC; then, with no hand on it:

    the run fails saying so, its MLflow run ends FAILED and its half-written model is gone; one retry,
    after the backoff, trains that corpus (the disk has room again: the hook fails one write) and
    decides; nothing else trains it; the batch is in that corpus; the aliases agree with the
    decision; the webhook says what died and why; the next batch is still judged.
    """
    from mlflow import MlflowClient
    from mlflow.entities import LoggedModelStatus

    from spam_assets.corpus import CorpusStore
    from spam_assets.model.registry import Registry
    from spam_assets.settings import EXPERIMENT_NAME, tracking_uri
    from tests.test_loop_e2e import Platform, _materializations, _meta, _verdicts_on, _wait_for
    from tests.test_notifications import recording_server

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first, sms_rest, mail = corpora
    counter = tmp_path / "model-writes-to-fail"  # absent: disarmed while bootstrapping
    with recording_server() as (url, received):
        platform = Platform(tmp_path, url)
        platform.env.update(SPAM_RETRY_BACKOFF_SECONDS=str(BACKOFF), **{MODEL_WRITE_ENV: str(counter)})
        platform.bootstrap(first)
        instance, uri = platform.instance(), tracking_uri(platform.home)
        try:
            counter.write_text("1")  # the next model write finds the disk full
            platform.start_daemon()
            batch, dropped = platform.drop(mail, "spamassassin-sample.tar.gz")
            victim = _wait_for("a training that dies", lambda: _died_training(instance), platform)
            failed_at = instance.get_run_record_by_id(victim.run_id).end_time
            corpus = victim.tags["spam/corpus_version"]
            assert victim.status == dg.DagsterRunStatus.FAILURE
            assert counter.read_text() == "0"  # it was the model write that failed, once; room again now

            def retry_decided():
                retries = [r for r in instance.get_runs(limit=100) if r.tags.get("spam/trigger") == "retry"]
                for run in retries:
                    if run.status in FAILED_STATUSES:
                        pytest.fail(f"retry run {run.run_id} ended {run.status.value}:\n{platform.daemon_tail(120)}")
                return [r for r in _materializations(instance, "champion_decision", dropped) if r.run_id in {x.run_id for x in retries}]

            (decision,) = _wait_for("the retry's decision", retry_decided, platform, RETRY_WINDOW)
            retry = instance.get_run_by_id(decision.run_id)
            assert retry.tags["spam/died_run"] == victim.run_id
            reason = retry.tags["spam/retrain_reason"]
            assert reason.startswith(f"retry: training of corpus {corpus} died: out of disk space"), reason
            assert "No space left on device" in reason
            record = instance.get_run_record_by_id(retry.run_id)
            assert record.create_timestamp.timestamp() >= failed_at + BACKOFF - 1  # the backoff was kept

            # No batch lost: the e-mail batch was accepted into the corpus that was (re)trained.
            assert batch in CorpusStore(platform.home / "corpus").manifest(corpus)["batch_ids"]
            assert (platform.inbox / "processed" / "spamassassin-sample.tar.gz").exists()

            # Trained once on that corpus: by the retry, and by nothing else.
            (trained,) = _materializations(instance, "trained_model", dropped)
            assert trained.run_id == retry.run_id and _meta(trained)["corpus_data_version"] == corpus
            registry = Registry(uri)
            versions = registry.client.search_model_versions(f"name='{registry.model_name}'")
            assert sorted(str(v.version) for v in versions) == ["1", str(_meta(trained)["model_version"])]
            assert [str(v.version) for v in versions if v.tags.get("corpus_data_version") == corpus] == [
                str(_meta(trained)["model_version"])
            ]
            outcome = _meta(decision)["outcome"]
            expected = outcome["challenger_version"] if outcome["promoted"] else outcome["champion_version_before"]
            assert str(registry.champion().version) == str(expected)
            assert str(registry.challenger().version) == str(_meta(trained)["model_version"])
            if outcome["promoted"]:
                assert str(registry.version_for("previous-champion").version) == "1"
            registry.load_verified(registry.champion())  # what serves passes the server's checks

            # The dead training's MLflow run ended FAILED, and its half-written model is gone.
            client = MlflowClient(uri)
            experiment = client.get_experiment_by_name(EXPERIMENT_NAME).experiment_id
            def dead_run():  # with its reason once release_dead_training has ticked
                runs = client.search_runs([experiment], filter_string=f"tags.dagster_run_id = '{victim.run_id}'")
                return runs if all("spam/failure_reason" in run.data.tags for run in runs) else None

            (dead,) = _wait_for("the dead training's MLflow run to get its reason", dead_run, platform, 120)
            assert dead.info.status == "FAILED" and "No space left on device" in dead.data.tags["spam/failure_reason"]
            (partial,) = [m for m in client.search_logged_models([experiment]) if m.source_run_id == dead.info.run_id]
            assert partial.status == LoggedModelStatus.FAILED
            assert not Path(partial.artifact_location.removeprefix("file://")).exists()

            died = lambda: [m["text"] for m in received if m["text"].startswith(f"Training of corpus {corpus} died")]  # noqa: E731
            (text,) = _wait_for("the webhook's word on the death", died, platform, 120)
            assert "out of disk space" in text and "No space left on device" in text

            # The loop goes on: the next batch is ingested and judged.
            batch, dropped = platform.drop(sms_rest, "sms-rest.txt")
            _wait_for("the next batch's drift verdict", lambda: _verdicts_on(instance, batch, dropped), platform)
        finally:
            platform.stop()
            instance.dispose()


def test_a_training_that_raises_ends_its_mlflow_run_failed_with_the_reason_at_once(tmp_path):
    """Not FINISHED by mlflow's exit hook before release_dead_training sees it: FAILED, with the error."""
    import errno

    import mlflow
    from mlflow import MlflowClient

    from spam_assets.training_runs import FAILURE_REASON_TAG, end_failed

    from mlflow.tracking._tracking_service.utils import _use_tracking_uri  # restores the process's own

    with _use_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}"):
        with mlflow.start_run() as run:
            end_failed(mlflow, OSError(errno.ENOSPC, "No space left on device", "model.skops"))
            assert mlflow.active_run() is None
        ended = MlflowClient().get_run(run.info.run_id)
        assert ended.info.status == "FAILED"
        assert ended.data.tags[FAILURE_REASON_TAG] == "OSError: [Errno 28] No space left on device: 'model.skops'"
        end_failed(mlflow, RuntimeError("no run is active"))  # nothing to end: no error either
