"""The whole loop with the real `dagster-daemon`: drop files into the inbox, press nothing.

Starting from a champion trained on the first 4,500 SMS messages (bootstrapped
with `spam-platform up --no-ui`), with the daemon running on a temp home:

1. the remaining SMS messages dropped into the inbox are ingested, the drift
   verdict is "no drift", and no retrain is launched;
2. a sample of SpamAssassin e-mail dropped into the inbox leads, with no other
   action, to drift, a retrain tagged with its reason (in the run that found
   the drift), a champion decision with reasons, a webhook message, and (if
   promoted) the champion alias moving; no second retrain follows.

The time from each drop to each step is printed (run with -s to see it) and
written to <tmp>/loop-timings.json. Run with: pytest -m slow tests/test_loop_e2e.py -s
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import dagster as dg
import pytest

from spam_assets.batches import ID_LENGTH, content_hash
from tests.datasets import sms_or_skip, spamassassin_or_skip
from tests.test_notifications import recording_server

pytestmark = [pytest.mark.slow, pytest.mark.datasets]

BIN = Path(sys.executable).parent
BOOTSTRAP_ROWS = 4500
MAIL_SAMPLE = 600  # messages: enough to drift and to retrain on, small enough to train in tens of seconds
PHASE_TIMEOUT = 600  # seconds; generous for a loaded 2-core machine
QUIET_PERIOD = 30  # seconds after a no-drift verdict in which no retrain may appear (3 retrain-sensor ticks)


def _sample_mail(archive: Path, target: Path, n: int, seed: int = 0) -> Path:
    """A tar.gz of n messages drawn from every folder, folder names kept (they carry the labels)."""
    with tarfile.open(archive) as source:
        members = [m for m in source.getmembers() if m.isfile()]
        with tarfile.open(target, "w:gz") as out:
            for member in random.Random(seed).sample(members, n):
                out.addfile(member, source.extractfile(member))
    return target


class Platform:
    """A temp platform home served by a real dagster-daemon subprocess (its whole process group)."""

    def __init__(self, root: Path, webhook_url: str):
        self.home = root / "home"
        self.dagster_home = self.home / "dagster"
        self.inbox = self.home / "inbox"
        self.log = root / "daemon.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("SPAM_", "MLFLOW_", "DAGSTER_"))}
        self.env.update(
            SPAM_HOME=str(self.home),
            DAGSTER_HOME=str(self.dagster_home),
            SPAM_WEBHOOK_URL=webhook_url,
            SPAM_ROLLOUT="off",  # these loops judge the holdout promotion; the staged rollout has its own tests
        )
        self.workspace = root / "workspace.yaml"
        self.workspace.write_text(  # the project is installed: no working_directory needed
            "load_from:\n  - python_module:\n      module_name: spam_assets.definitions\n      location_name: spam_assets\n"
        )
        self.daemon: subprocess.Popen | None = None

    def bootstrap(self, source: Path) -> None:
        subprocess.run(
            [str(BIN / "spam-platform"), "up", "--no-ui", "--source", str(source)],
            env=self.env, cwd=self.home.parent, check=True, timeout=900,
            stdout=(self.log.parent / "bootstrap.log").open("w"), stderr=subprocess.STDOUT,
        )

    def start_daemon(self) -> None:
        self.daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", str(self.workspace)],
            env=self.env, cwd=self.home, stdout=self.log.open("w"), stderr=subprocess.STDOUT,  # nothing lands in the repo
            start_new_session=True,  # its own process group: code server and run workers die with it
        )

    def stop(self) -> None:
        if self.daemon is None:
            return
        for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.daemon.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.daemon.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                continue
            if sig == signal.SIGTERM:  # the daemon is gone; its children may linger
                try:
                    os.killpg(self.daemon.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            break

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.dagster_home))

    def drop(self, source: Path, name: str) -> tuple[str, float]:
        """Copy a file into the inbox the safe way (hidden name, then rename); returns (batch id, drop time)."""
        hidden = self.inbox / f".{name}.part"
        shutil.copyfile(source, hidden)
        os.replace(hidden, self.inbox / name)
        return content_hash(self.inbox / name)[:ID_LENGTH], time.time()

    def daemon_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""


def _materializations(instance, key: str, after: float) -> list[dg.EventLogRecord]:
    return instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), after_timestamp=float(after)), limit=50, ascending=True
    ).records


def _meta(record) -> dict:
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}


def _verdicts_on(instance, batch: str, after: float) -> list[dg.EventLogRecord]:
    """drift_statistics materialisations that judged `batch` among the new batches."""
    return [r for r in _materializations(instance, "drift_statistics", after) if batch in _meta(r)["new_batches"]]


def _retrain_runs(instance, before: set[str] = frozenset()) -> list[dg.DagsterRun]:
    """Runs that retrained: a refresh run that trained in place, or a run of the retrain job (both carry the
    reason), leaving out the runs in `before` (the bootstrap's, which trained because no champion existed)."""
    return [run for run in instance.get_runs(limit=100) if "spam/retrain_reason" in run.tags and run.run_id not in before]


def _wait_for(what: str, probe, platform: Platform, timeout: float = PHASE_TIMEOUT):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if platform.daemon is not None and platform.daemon.poll() is not None:
            code = platform.daemon.returncode
            pytest.fail(f"dagster-daemon exited ({code}) waiting for {what}:\n{platform.daemon_tail()}")
        if found := probe():
            return found
        time.sleep(1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; daemon log tail:\n{platform.daemon_tail()}")


@pytest.fixture
def corpora(tmp_path):
    sms, mail = sms_or_skip(), spamassassin_or_skip()
    lines = sms.read_text(encoding="utf-8").splitlines(keepends=True)
    first, rest = tmp_path / "sms-first-4500.txt", tmp_path / "sms-rest.txt"
    first.write_text("".join(lines[:BOOTSTRAP_ROWS]), encoding="utf-8")
    rest.write_text("".join(lines[BOOTSTRAP_ROWS:]), encoding="utf-8")
    return first, rest, _sample_mail(mail, tmp_path / "spamassassin-sample.tar.gz", MAIL_SAMPLE)


def test_inbox_drops_drive_drift_retrain_and_decision(tmp_path, corpora, monkeypatch):
    from spam_assets.model.registry import Registry
    from spam_assets.settings import tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first, sms_rest, mail = corpora
    timings: dict[str, object] = {}
    with recording_server() as (url, received):
        platform = Platform(tmp_path, url)
        started = time.time()
        platform.bootstrap(first)
        timings["bootstrap_s"] = time.time() - started
        instance = platform.instance()
        try:
            (bootstrap,) = _materializations(instance, "champion_decision", 0)
            assert _meta(bootstrap)["decision"] == "promote"
            bootstrap_runs = {run.run_id for run in instance.get_runs()}
            platform.start_daemon()

            # 1. A clean SMS batch: ingested, judged "no drift", and nothing retrains.
            batch, dropped = platform.drop(sms_rest, "sms-rest.txt")
            (verdict,) = _wait_for("the SMS batch's drift verdict", lambda: _verdicts_on(instance, batch, dropped), platform)
            timings["sms_drop_to_verdict_s"] = verdict.timestamp - dropped
            assert (_meta(verdict)["drift"], _meta(verdict)["decay"]) == (False, False), _meta(verdict)["reasons"]
            assert (platform.inbox / "processed" / "sms-rest.txt").exists()
            time.sleep(QUIET_PERIOD)
            assert _retrain_runs(instance, bootstrap_runs) == [], "a clean SMS batch must not trigger a retrain"
            assert _materializations(instance, "trained_model", dropped) == []

            # 2. An e-mail batch: drift, a retrain with its reason, a decision with reasons.
            batch, dropped = platform.drop(mail, "spamassassin-sample.tar.gz")
            (verdict,) = _wait_for("the e-mail's drift verdict", lambda: _verdicts_on(instance, batch, dropped), platform)
            assert _meta(verdict)["drift"] is True, _meta(verdict)["reasons"]
            assert _meta(verdict)["verdict"]["drift"] is True  # the JSON the retrain policy reads
            (judged,) = [r for r in _materializations(instance, "raw_sample", dropped) if r.partition_key == batch]

            (retrain,) = _wait_for("a retrain run", lambda: _retrain_runs(instance, bootstrap_runs), platform)
            assert retrain.run_id == verdict.run_id  # trained in the run that found the drift
            assert retrain.tags["spam/trigger"] in ("drift", "drift and decay")
            assert retrain.tags["spam/retrain_reason"].startswith(retrain.tags["spam/trigger"] + ": ")

            def decided():
                status = instance.get_run_by_id(retrain.run_id).status
                if status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
                    pytest.fail(f"retrain run {retrain.run_id} ended {status.value}:\n{platform.daemon_tail(120)}")
                return _materializations(instance, "champion_decision", dropped)

            (decision,) = _wait_for("the champion decision", decided, platform)
            assert decision.run_id == retrain.run_id
            outcome = _meta(decision)
            assert outcome["decision"] in ("promote", "keep") and outcome["reasons"].startswith("- ")
            assert outcome["outcome"]["action"] == outcome["decision"]  # the JSON the webhook message is built from
            promoted = outcome["decision"] == "promote"
            champion = Registry(tracking_uri(platform.home)).champion()
            assert str(champion.version) == str(outcome["challenger_version" if promoted else "champion_version_before"])

            (training_started,) = [
                e.timestamp
                for e in instance.all_logs(retrain.run_id, of_type=dg.DagsterEventType.STEP_START)
                if e.step_key == "trained_model"
            ]
            ingest = instance.get_run_record_by_id(judged.run_id)
            refresh = instance.get_run_record_by_id(verdict.run_id)
            (challenger,) = [r for r in _materializations(instance, "trained_model", dropped) if r.run_id == retrain.run_id]
            timings.update(
                mail_drop_to_ingest_queued_s=ingest.create_timestamp.timestamp() - dropped,
                mail_drop_to_ingest_started_s=ingest.start_time - dropped,
                mail_drop_to_batch_judged_s=judged.timestamp - dropped,
                mail_drop_to_refresh_queued_s=refresh.create_timestamp.timestamp() - dropped,
                mail_drop_to_refresh_started_s=refresh.start_time - dropped,
                mail_drop_to_verdict_s=verdict.timestamp - dropped,
                mail_drop_to_training_started_s=training_started - dropped,
                mail_drop_to_challenger_logged_s=challenger.timestamp - dropped,
                mail_drop_to_decision_s=decision.timestamp - dropped,
                load_average_1m=os.getloadavg()[0],  # other work on the machine slows every step
                decision=outcome["decision"],
                decision_reasons=outcome["reasons"],
                retrain_reason=retrain.tags["spam/retrain_reason"],
            )

            posted = lambda: [m["text"] for m in received if "Retrain reason" in m["text"]]  # noqa: E731
            texts = _wait_for("the webhook message", posted, platform, 60)
            assert ("promoted to champion" if promoted else "rejected by the gates") in texts[0]
            assert (platform.inbox / "processed" / "spamassassin-sample.tar.gz").exists()
            # retrain_on_drift saw the verdict too, and coalesced it: that corpus has its challenger.
            assert [r.run_id for r in _retrain_runs(instance, bootstrap_runs)] == [retrain.run_id]
        finally:
            platform.stop()
            instance.dispose()

    (tmp_path / "loop-timings.json").write_text(json.dumps(timings, indent=2))
    print("\nloop timings:", json.dumps(timings, indent=2))
