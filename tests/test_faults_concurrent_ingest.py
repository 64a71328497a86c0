"""Two `spam-platform ingest` commands at once on one home: nothing lost, nothing trained twice.

Both are real processes started together on a fresh home, so both find no
champion and both want to train: the same file twice, and two different
files. Afterwards, read from the home's own Dagster instance and MLflow
store: every batch was staged once and accepted, the newest corpus holds
them all and was judged, each corpus version was trained at most once, no
two registered versions were trained on the same data, the aliases are the
ones the decisions recorded, and no MLflow run was left RUNNING.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from mlflow import MlflowClient

from spam_assets.cli_errors import ExitCode
from spam_assets.settings import MODEL_NAME, paths
from tests.synthetic import sms_messages, write_sms_file

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent / "spam-platform"
TIMEOUT = 1200  # two trainings on a loaded 2-core machine


def _start(tmp_path: Path, source: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPAM_", "MLFLOW_", "DAGSTER_"))}
    env["SPAM_HOME"] = str(tmp_path / "home")
    return subprocess.Popen(
        [str(BIN), "ingest", source], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _both(tmp_path: Path, first: str, second: str) -> list[tuple[int, str, str]]:
    procs = [_start(tmp_path, first), _start(tmp_path, second)]
    try:
        outputs = [p.communicate(timeout=TIMEOUT) for p in procs]
        return [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs)]
    finally:
        for p in procs:
            p.kill()


@pytest.mark.parametrize("same_file", [True, False], ids=["same-file", "different-files"])
def test_two_ingests_at_once_lose_nothing_and_train_each_corpus_once(tmp_path, monkeypatch, same_file):
    write_sms_file(sms_messages(900, seed=1), tmp_path / "a.txt")
    write_sms_file(sms_messages(900, seed=2), tmp_path / "b.txt")
    outcomes = _both(tmp_path, "a.txt", "a.txt" if same_file else "b.txt")
    for code, out, err in outcomes:
        assert "Traceback" not in out + err, err[-3000:]
        assert code == ExitCode.OK, (code, out, err[-3000:])

    home = paths(tmp_path / "home")
    monkeypatch.setenv("DAGSTER_HOME", str(home.dagster_home))  # the home's own instance, as the commands used it
    with dg.DagsterInstance.get() as instance:
        _check(instance, home, outcomes, expected_batches=1 if same_file else 2)


def _check(instance: dg.DagsterInstance, home, outcomes, expected_batches: int) -> None:
    from spam_assets.batches import BatchStore
    from spam_assets.corpus import CorpusStore

    # No batch lost or duplicated: each file is one batch, accepted, in the newest corpus, which was judged.
    batches = BatchStore(home.batches)
    staged = [line.split()[1] for _, out, _ in outcomes for line in out.splitlines() if line.startswith("batch ")]
    assert len(set(staged)) == expected_batches and sorted(batches.ids()) == sorted(set(staged))
    assert sorted(batches.accepted_ids()) == sorted(set(staged))
    assert set(instance.get_dynamic_partitions("batches")) == set(staged)
    corpus = _latest(instance, "cleaned_corpus")
    newest = corpus.asset_materialization.metadata["data_version"].value
    assert sorted(CorpusStore(home.corpus).manifest(newest)["batch_ids"]) == sorted(set(staged))
    judged = _latest(instance, "drift_statistics")
    assert judged is not None and judged.storage_id > corpus.storage_id

    # At most one training per corpus version, and the newest corpus has its challenger.
    trainings = [
        r.asset_materialization.metadata
        for r in instance.fetch_materializations(dg.AssetKey("trained_model"), limit=100).records
    ]
    per_corpus = collections.Counter(m["corpus_data_version"].value for m in trainings)
    assert trainings and max(per_corpus.values()) == 1, per_corpus
    assert newest in per_corpus

    # The registry: no two versions trained on the same data; aliases as the decisions left them.
    client = MlflowClient(f"sqlite:///{home.mlflow / 'mlflow.db'}")
    versions = {str(v.version): v for v in client.search_model_versions(f"name='{MODEL_NAME}'")}
    assert len(versions) == len(trainings)
    trained_on = collections.Counter(v.tags.get("corpus_data_version") for v in versions.values())
    assert max(trained_on.values()) == 1, trained_on
    promoted = sorted((int(k) for k, v in versions.items() if v.tags.get("decision") == "promote"))
    assert promoted, {k: v.tags.get("decision") for k, v in versions.items()}
    aliases = {a: str(v) for a, v in client.get_registered_model(MODEL_NAME).aliases.items()}
    assert aliases["champion"] == str(promoted[-1])
    assert aliases.get("previous-champion") == (str(promoted[-2]) if len(promoted) > 1 else None)
    assert aliases["challenger"] == str(max(int(k) for k in versions))
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert not client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'")


def _latest(instance: dg.DagsterInstance, key: str):
    return next(iter(instance.fetch_materializations(dg.AssetKey(key), limit=1).records), None)
