"""`spam-platform ingest` trains by the inbox's rule: drift, decay or no champion yet; `--retrain` trains anyway.

The commands run as real `spam-platform` processes on a temp home (real
Dagster instance, real MLflow store, real training; about 50 s, so in the
slow stage); the rule's pieces (the verdict's no-champion flag, its headline
figures, the reason a run gives for not training, the line each run prints)
are checked in-process on a real instance below.
"""

from __future__ import annotations

import re

import dagster as dg
import pytest
from mlflow import MlflowClient

from spam_assets.cli_errors import ExitCode
from spam_assets.defs.assets.monitoring import headline_figures
from spam_assets.defs.automation.retrain import retrain_on_drift
from spam_assets.defs.retrain_policy import Verdict, verdict_of_run
from spam_assets.defs.run_tags import NOT_TRAINED_TAG
from spam_assets.drift import DriftReport
from spam_assets.runner import FORCED_TAGS, REFRESH_TAGS, materialize_batches, training_outcome
from spam_assets.settings import MODEL_NAME, paths
from tests.synthetic import email_messages, sms_messages, write_jsonl, write_sms_file
from tests.test_automation_retrain import corpus
from tests.test_cli import spam_platform
from tests.test_graph import FAST, _refresh_run, bootstrapped, ingest  # noqa: F401 - bootstrapped is a fixture

NOT_TRAINED = re.compile(
    r"^not trained: no drift or decay \((?P<figures>[^)]*)\): champion v(?P<champion>\d+) kept; "
    r"use --retrain to train anyway$",
    re.MULTILINE,
)


def _versions(tmp_path) -> list[str]:
    client = MlflowClient(f"sqlite:///{paths(tmp_path / 'home').mlflow / 'mlflow.db'}")  # the home's embedded store
    return sorted(str(v.version) for v in client.search_model_versions(f"name='{MODEL_NAME}'"))


def _ok(out) -> str:
    assert out.returncode == ExitCode.OK, out.stderr[-3000:]
    assert "Traceback" not in out.stdout + out.stderr
    return out.stdout


@pytest.mark.slow
def test_ingest_trains_first_then_only_on_drift_unless_asked(tmp_path):
    write_sms_file(sms_messages(900, seed=1), tmp_path / "first.txt")
    write_jsonl(sms_messages(300, seed=7), tmp_path / "same.jsonl")
    write_jsonl(sms_messages(300, seed=8), tmp_path / "more.jsonl")
    write_jsonl(email_messages(300, seed=3), tmp_path / "mail.jsonl")

    # The very first batch: no champion to keep, so it trains and (passing the gates) promotes.
    first = _ok(spam_platform(tmp_path, "ingest", "first.txt"))
    assert re.search(r"^trained challenger v1: no champion: no champion yet.*; promoted, champion v1$", first, re.M), first
    assert _versions(tmp_path) == ["1"]

    # Same distribution: the champion stays, and the line says why, in numbers, and how to train anyway.
    calm = _ok(spam_platform(tmp_path, "ingest", "same.jsonl"))
    found = NOT_TRAINED.search(calm)
    assert found and found["champion"] == "1", calm
    assert re.search(r"champion score PSI \d\.\d\d ≤ 0\.25", found["figures"]), found["figures"]
    assert re.search(r"realised spam F1 \d\.\d\d ≥ 0\.85", found["figures"]), found["figures"]
    assert "trained challenger" not in calm and "graph materialised in" in calm
    assert _versions(tmp_path) == ["1"]  # nothing reached the registry

    # --retrain: trains on this batch although nothing drifted.
    forced = _ok(spam_platform(tmp_path, "ingest", "more.jsonl", "--retrain"))
    assert re.search(r"^trained challenger v2: asked for by spam-platform ingest --retrain; ", forced, re.M), forced
    assert _versions(tmp_path) == ["1", "2"]

    # E-mail after SMS: drift, so it trains without being asked, saying which statistics moved.
    drifted = _ok(spam_platform(tmp_path, "ingest", "mail.jsonl"))
    assert re.search(r"^trained challenger v3: drift\b.*: .*(PSI|OOV|domain)", drifted, re.M), drifted
    assert _versions(tmp_path) == ["1", "2", "3"]

    # The same file again: nothing new arrived; the corpus has its challenger; no training.
    again = _ok(spam_platform(tmp_path, "ingest", "mail.jsonl"))
    assert re.search(r"^not trained: .*: champion v\d+ kept; use --retrain to train anyway$", again, re.M), again
    assert _versions(tmp_path) == ["1", "2", "3"]


# --- the rule's pieces, in-process on a real instance ----------------------------------------------


def test_each_downstream_run_of_ingest_reports_whether_it_trained_and_why(home, instance, resources, tmp_path):
    """The lines `ingest` prints, from the runs `ingest` and `ingest --retrain` make (the CLI test above, in process)."""

    def ingested(frame, name: str, tags: dict):
        path = (write_sms_file if name.endswith(".txt") else write_jsonl)(frame, tmp_path / name)
        *_, downstream = materialize_batches([ingest(path, instance)], instance, resources, FAST, downstream_tags=tags)
        return training_outcome(downstream, instance)

    first = ingested(sms_messages(900, seed=1), "first.txt", REFRESH_TAGS)
    assert first.trained
    assert re.fullmatch(r"trained challenger v1: no champion: no champion yet.*; promoted, champion v1", first.line), first.line

    calm = ingested(sms_messages(300, seed=7), "same.jsonl", REFRESH_TAGS)
    found = re.fullmatch(r"not trained: no drift or decay \((?P<figures>[^)]*)\): champion v(?P<champion>\d+) kept", calm.line)
    assert not calm.trained and found and found["champion"] == "1", calm.line
    assert re.search(r"champion score PSI \d\.\d\d ≤ 0\.25", found["figures"]), found["figures"]

    forced = ingested(sms_messages(300, seed=8), "more.jsonl", FORCED_TAGS)
    assert forced.trained
    assert forced.line.startswith("trained challenger v2: asked for by spam-platform ingest --retrain; "), forced.line


def _verdict_record(instance, recorded: Verdict) -> str:
    @dg.asset(name="drift_statistics")
    def stand_in() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"verdict": dg.MetadataValue.json(recorded.to_json())})

    result = dg.materialize([stand_in], instance=instance)
    assert result.success
    return result.run_id


def test_no_champion_asks_for_training_and_survives_the_round_trip(instance):
    run_id = _verdict_record(instance, Verdict(False, False, ["no champion yet: nothing to compare against"], True))
    found, reason = verdict_of_run(instance, run_id)
    assert found is not None and found.no_champion and found.trigger == "no champion"
    assert reason == "no champion: no champion yet: nothing to compare against"


def test_the_drift_sensor_treats_a_no_champion_verdict_like_drift(instance):
    corpus(instance, "c1")
    _verdict_record(instance, Verdict(False, False, ["no champion yet: nothing to compare against"], True))
    (request,) = retrain_on_drift.evaluate_tick(dg.build_sensor_context(instance=instance)).run_requests
    assert request.tags["spam/trigger"] == "no champion"


def test_a_calm_verdict_says_no_drift_with_its_figures(instance):
    figures = ["champion score PSI 0.03 ≤ 0.25", "realised spam F1 0.97 ≥ 0.85"]
    run_id = _verdict_record(instance, Verdict(False, False, [], False, figures))
    found, reason = verdict_of_run(instance, run_id)
    assert found is None
    assert reason == "no drift or decay (champion score PSI 0.03 ≤ 0.25; realised spam F1 0.97 ≥ 0.85)"


def _row(statistic, feature, value, threshold, flagged=False) -> dict:
    return {"statistic": statistic, "feature": feature, "value": value, "threshold": threshold, "flagged": flagged}


def test_headline_figures_quote_only_what_stayed_within_its_threshold():
    report = DriftReport(
        drift=False, decay=False, reasons=[], n_reference=100, n_current=100,
        rows=[
            _row("score_psi", "champion", 0.031, 0.25),
            _row("realised_f1", "spam", float("nan"), 0.85),  # no spam in the batch: nothing to quote
            _row("domain_auc", "tfidf_logreg", 0.58, 0.55),  # above, though not significant: not "≤"
            _row("psi", "length", 0.01, 0.25),  # not a headline statistic
        ],
    )  # fmt: skip
    assert headline_figures(report) == ["champion score PSI 0.03 ≤ 0.25"]


def test_a_run_that_does_not_train_says_why_on_the_run(bootstrapped, instance, resources):  # noqa: F811
    quiet = _refresh_run(instance, resources)  # the same corpus: its challenger exists
    assert instance.get_run_by_id(quiet.run_id).tags[NOT_TRAINED_TAG].startswith("no drift or decay (")
