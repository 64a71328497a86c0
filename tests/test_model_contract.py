"""The model contract's gate (spam_assets.model.artifact / verify / scorer), on real stored models.

What a model must pass before it scores anything: the artifact checks,
skops loading with the code's allow-list (old type names of models stored by
the previous release included), probe verification, and the one choice of
`Scorer` per version, which the server reports.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
from pathlib import Path

import grpc
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
import skops.io
import yaml
from sklearn.calibration import CalibratedClassifierCV
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.svm import LinearSVC
from serving_fixtures import model_store, run_python, running_server, synthetic_messages, wait_until  # noqa: F401

from serving.generated.inference import grpc_predict_v2_pb2 as oip_pb
from serving.generated.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from serving.generated.spam.v1 import classifier_pb2 as pb
from serving.generated.spam.v1 import classifier_pb2_grpc as pb_grpc
from spam_assets.model.artifact import RefusedModel, read_artifact
from spam_assets.model.char_ngrams import MemoHashingVectorizer
from spam_assets.model.pipelines import SKOPS_TRUSTED_TYPES, CompactTfidfVectorizer, TextColumn, candidate_pipelines
from spam_assets.model.tags import TAG_CANDIDATE, TAG_MODEL_SHA256
from spam_assets.model.text import normalise
from spam_assets.model.verify import load_verified

SPAM = "WINNER! You have won a cash prize, claim now: call 09061701461"
HAM = "are we still on for lunch tomorrow? see you at home"
TEXTS = [SPAM, HAM, "free entry txt win 87121", "dinner tonight?", "Café ünïcode ok ok", ""]

# Where the previous release kept the types of a stored model, as skops recorded them (git history
# of SKOPS_TRUSTED_TYPES), and the allow-list it recorded in MLmodel. Written out here, not derived
# from the contract's own mapping, so the test does not share the code's mistakes.
PREVIOUS_RELEASE_MODULES = {
    TextColumn: "spam_assets.modeling",
    CompactTfidfVectorizer: "spam_assets.modeling",
    MemoHashingVectorizer: "spam_assets.char_ngrams",
    normalise: "spam_assets.text",
}
PREVIOUS_RELEASE_TRUSTED = [
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.feature_extraction.text.HashingVectorizer",
    "spam_assets.char_ngrams.MemoHashingVectorizer",
    "spam_assets.modeling.CompactTfidfVectorizer",
    "spam_assets.modeling.TextColumn",
    "spam_assets.text.normalise",
]


def fit(pipeline, seed: int = 5):
    frame = pd.DataFrame(synthetic_messages(360, seed), columns=["text", "label"])
    return pipeline.fit(frame["text"].tolist(), frame["label"])


@pytest.fixture(scope="module")
def word_char_model():
    """The richest candidate: every type on the allow-list but the plain HashingVectorizer and `normalise`."""
    return fit(candidate_pipelines(5)["word_char_svm"])


def previous_release_word_char_svm(seed: int) -> Pipeline:
    """word_char_svm as the previous release built it: word and character n-grams of `normalise` alone."""
    char = candidate_pipelines(seed)["word_char_svm"].named_steps["features"].transformer_list[1][1]
    char.set_params(hash__preprocessor=normalise)
    return Pipeline(
        [
            ("text", TextColumn()),
            (
                "features",
                FeatureUnion(
                    [("word", CompactTfidfVectorizer(preprocessor=normalise, ngram_range=(1, 2), sublinear_tf=True)), ("char", char)]
                ),
            ),
            ("clf", CalibratedClassifierCV(LinearSVC(C=1.0, random_state=seed), cv=3, ensemble=False)),
        ]
    )


@pytest.fixture(scope="module")
def previous_model():
    """A model of the previous release's shape, whose preprocessor is `normalise` (kept unchanged for it)."""
    return fit(previous_release_word_char_svm(5))


@pytest.fixture(scope="module")
def foreign_model():
    """A model the lean compiler does not know (stop words), made only of trusted types."""
    pipeline = candidate_pipelines(6)["tfidf_nb"]
    pipeline.set_params(features__word__stop_words=["the"])
    return fit(pipeline, seed=6)


def save(model, folder: Path) -> Path:
    """Stored as training stores it: MLflow's sklearn flavour, skops, the code's allow-list."""
    mlflow.sklearn.save_model(model, str(folder), serialization_format="skops", skops_trusted_types=SKOPS_TRUSTED_TYPES)
    return folder


def save_as_previous_release(model, folder: Path) -> Path:
    """The files the previous release wrote for `model`: its type names in the skops schema and in MLmodel.

    skops records a type by its __module__, so dumping with the old module names
    set writes the schema that release wrote (checked once against a checkout of it).
    MLflow's own save would load the file back and fail, as the old modules are gone.
    """
    save(model, folder)
    saved = {obj: obj.__module__ for obj in PREVIOUS_RELEASE_MODULES}
    try:
        for obj, module in PREVIOUS_RELEASE_MODULES.items():
            obj.__module__ = module
        (folder / "model.skops").write_bytes(skops.io.dumps(model))
    finally:
        for obj, module in saved.items():
            obj.__module__ = module
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    mlmodel["flavors"]["sklearn"]["skops_trusted_types"] = PREVIOUS_RELEASE_TRUSTED
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    return folder


@pytest.fixture(scope="module")
def stored(tmp_path_factory, word_char_model, previous_model) -> dict[str, Path]:
    """word_char_model stored as today, previous_model as the previous release stored it (saving takes seconds: once)."""
    root = tmp_path_factory.mktemp("stored")
    return {
        "current": save(word_char_model, root / "current"),
        "previous": save_as_previous_release(previous_model, root / "previous"),
    }


def copy_of(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def sha256_of(folder: Path) -> str:
    return hashlib.sha256((folder / "model.skops").read_bytes()).hexdigest()


def pipeline_scores(model, texts) -> np.ndarray:
    return model.predict_proba(texts)[:, list(model.classes_).index("spam")]


# --- the gate, on folders as MLflow downloads them ----------------------------------------------


def test_load_verified_gives_the_model_its_checksum_and_the_lean_scorer(stored, word_char_model):
    folder = stored["current"]
    verified = load_verified(folder, sha256_of(folder))
    assert verified.sha256 == sha256_of(folder)
    assert verified.scorer.name == "lean"
    assert "matches predict_proba" in verified.scorer.reason
    np.testing.assert_allclose(verified.scorer.scores(TEXTS), pipeline_scores(word_char_model, TEXTS), rtol=0, atol=1e-9)
    np.testing.assert_allclose(verified.predict_proba(TEXTS), pipeline_scores(word_char_model, TEXTS), rtol=0, atol=0)


def test_a_model_stored_by_the_previous_release_loads_and_scores_the_same(stored, previous_model):
    folder = stored["previous"]
    data = (folder / "model.skops").read_bytes()
    # Really the old names: loaded as stored, with the code's allow-list, skops refuses them.
    old_names = {name for name in PREVIOUS_RELEASE_TRUSTED if name.startswith("spam_assets.")}
    assert old_names <= set(skops.io.get_untrusted_types(data=data))
    with pytest.raises(Exception, match="spam_assets"):
        skops.io.loads(data, trusted=SKOPS_TRUSTED_TYPES)

    verified = load_verified(folder, sha256_of(folder))  # the checksum is of the file as stored
    steps = verified.model.named_steps
    assert type(steps["text"]) is TextColumn
    word, char = steps["features"].transformer_list
    assert type(word[1]) is CompactTfidfVectorizer and word[1].preprocessor is normalise
    assert type(char[1].steps[0][1]) is MemoHashingVectorizer
    assert char[1].steps[0][1].preprocessor is normalise
    assert verified.scorer.name == "lean"
    np.testing.assert_allclose(verified.scorer.scores(TEXTS), pipeline_scores(previous_model, TEXTS), rtol=0, atol=1e-12)
    with pytest.raises(RefusedModel, match="checksum mismatch"):
        load_verified(folder, hashlib.sha256(b"another file").hexdigest())


def test_old_names_are_accepted_only_for_the_types_that_moved(stored, tmp_path):
    folder = copy_of(stored["previous"], tmp_path)
    assert read_artifact(folder) == (folder / "model.skops").read_bytes()  # accepted as stored
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    # The old module held training code too; naming it must not widen the allow-list.
    mlmodel["flavors"]["sklearn"]["skops_trusted_types"].append("spam_assets.modeling.select_and_fit")
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    with pytest.raises(RefusedModel, match=r"outside the code's allow-list: \['spam_assets.modeling.select_and_fit'\]"):
        read_artifact(folder)


def test_a_pipeline_the_compiler_does_not_know_serves_through_the_pipeline_and_says_why(tmp_path, foreign_model):
    folder = save(foreign_model, tmp_path / "foreign")
    verified = load_verified(folder, sha256_of(folder))
    assert verified.scorer.name == "pipeline"
    assert "not supported by the lean scorer" in verified.scorer.reason and "stop words" in verified.scorer.reason
    np.testing.assert_allclose(verified.scorer.scores(TEXTS), pipeline_scores(foreign_model, TEXTS), rtol=0, atol=1e-12)


def test_a_file_that_is_not_a_skops_archive_is_refused(tmp_path, foreign_model):
    folder = save(foreign_model, tmp_path / "garbage")
    (folder / "model.skops").write_bytes(b"not a zip file at all")
    with pytest.raises(RefusedModel, match="skops could not load the model"):
        load_verified(folder)


# --- Registry.load, what the graph scores champion and challenger with ---------------------------


def registered(store, prefix: str, folders: list[Path]):
    """A registered model whose versions 1..n are these folders, each with its file's sha256 recorded."""
    tags = [{TAG_MODEL_SHA256: sha256_of(f), TAG_CANDIDATE: "test"} for f in folders]
    return store.clone(prefix, [f.resolve().as_uri() for f in folders], tags=tags)


def test_registry_load_checks_the_artifact_with_the_code_allow_list(model_store, stored, tmp_path, word_char_model, previous_model):
    widened = copy_of(stored["current"], tmp_path)
    mlmodel = yaml.safe_load((widened / "MLmodel").read_text())
    mlmodel["flavors"]["sklearn"]["skops_trusted_types"].append("builtins.eval")
    (widened / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    registry = registered(model_store, "registry-load", [stored["current"], widened, stored["previous"]])

    for version, original in (("1", word_char_model), ("3", previous_model)):  # the current layout and the previous release's
        model = registry.load(version)
        np.testing.assert_allclose(pipeline_scores(model, TEXTS), pipeline_scores(original, TEXTS), atol=1e-12)
    # mlflow.sklearn.load_model would have trusted the widened list stored with the model.
    with pytest.raises(RefusedModel, match="builtins.eval"):
        registry.load("2")


# --- which scorer serves, and why, is visible ---------------------------------------------------


def test_the_server_reports_which_scorer_serves_and_why(model_store, stored, tmp_path, foreign_model, caplog):
    foreign = save(foreign_model, tmp_path / "foreign")
    registry = registered(model_store, "scorer", [stored["current"], foreign, stored["previous"]])
    caplog.set_level(logging.INFO, logger="serving.watcher")
    registry.promote("1", "lean")
    with running_server(model_store, registry.model_name, wait_for="1", poll_interval=0.1) as srv:
        with grpc.insecure_channel(srv.target) as channel:
            classifier = pb_grpc.ClassifierStub(channel)
            oip = oip_grpc.GRPCInferenceServiceStub(channel)

            def reported():
                champion = classifier.GetChampion(pb.GetChampionRequest(), timeout=5)
                meta = oip.ModelMetadata(oip_pb.ModelMetadataRequest(name=registry.model_name), timeout=5)
                from_metadata = (meta.parameters["scorer"].string_param, meta.parameters["scorer_reason"].string_param)
                assert (champion.scorer.name, champion.scorer.reason) == from_metadata
                return champion.version, champion.scorer.name, champion.scorer.reason

            version, name, reason = reported()
            assert (version, name) == ("1", "lean") and "matches predict_proba" in reason

            registry.promote("2", "a pipeline the compiler does not know")
            assert srv.watcher.wait_for("2", timeout=30)
            version, name, reason = reported()
            assert (version, name) == ("2", "pipeline") and "stop words" in reason
            assert classifier.Classify(pb.ClassifyRequest(text=SPAM), timeout=5).verdict.label == "spam"
            (line,) = [r for r in caplog.records if "now serving" in r.getMessage() and " version 2 " in r.getMessage()]
            assert line.levelno == logging.WARNING and "scorer pipeline: " in line.getMessage() and "stop words" in line.getMessage()

            registry.promote("3", "stored by the previous release")
            assert srv.watcher.wait_for("3", timeout=30)
            assert reported()[:2] == ("3", "lean")
            verdict = classifier.Classify(pb.ClassifyRequest(text=SPAM), timeout=5).verdict
            assert (verdict.label, verdict.model_version) == ("spam", "3")
            (line,) = [r for r in caplog.records if "now serving" in r.getMessage() and " version 3 " in r.getMessage()]
            assert line.levelno == logging.INFO and "scorer lean: " in line.getMessage()


# --- serving's layers ----------------------------------------------------------------------------


def _project_modules(frame) -> list[str]:
    """Modules of this project on the stack, outermost first, runs of one module collapsed."""
    names = []
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name.startswith(("serving.", "spam_assets.")) and not name.startswith("serving.generated"):
            names.append(name)
        frame = frame.f_back
    collapsed: list[str] = []
    for name in reversed(names):
        if not collapsed or collapsed[-1] != name:
            collapsed.append(name)
    return collapsed


@pytest.mark.parametrize("rpc", ["Classify", "ModelInfer"])
def test_a_unary_call_crosses_no_module_twice(model_store, rpc):
    """request parsing -> servicer -> request handling -> scorer, never back up: no module returns on one call stack."""
    registry = model_store.clone(f"layers-{rpc.lower()}", [model_store.good[0]])
    registry.promote("1", "layers")
    stacks: list[list[str]] = []

    def profile(frame, event, arg):
        if event == "call" and threading.current_thread().name.startswith("grpc-worker"):
            stacks.append(_project_modules(frame))

    threading.setprofile(profile)  # threads started from here on: the server's workers
    try:
        with running_server(model_store, registry.model_name, wait_for="1") as srv:
            with grpc.insecure_channel(srv.target) as channel:
                if rpc == "Classify":
                    pb_grpc.ClassifierStub(channel).Classify(pb.ClassifyRequest(text=SPAM), timeout=10)
                else:
                    request = oip_pb.ModelInferRequest(model_name=registry.model_name)
                    request.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.append(SPAM.encode())
                    oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    finally:
        threading.setprofile(None)
    handling = "serving.classify" if rpc == "Classify" else "serving.oip"
    deepest = max(stacks, key=len)  # the scorer's innermost call: parsing, servicer, request handling, ..., scorer
    # serving.wire registers the handlers: it refuses an unparsable request before the servicer runs.
    assert deepest[:3] == ["serving.wire", "serving.servicers", handling], deepest
    assert "spam_assets.model.lean_scorer" in deepest, deepest
    crossed_twice = [s for s in stacks if len(s) != len(set(s))]
    assert not crossed_twice, crossed_twice[:3]


def test_serving_imports_no_dagster_and_no_training_code():
    result = run_python(
        "import sys, serving.server, serving.client\n"
        "loaded = [m for m in sys.modules if m == 'dagster' or m.startswith(('dagster.', 'dagster_', 'spam_assets.'))]\n"
        "print('\\n'.join(sorted(loaded)))"
    )
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.split()
    assert "spam_assets.model.verify" in loaded  # the contract is what serving reads models through
    shared = ("spam_assets.model", "spam_assets.traffic")  # the two contracts
    outside = [m for m in loaded if not m.startswith(shared) and m != "spam_assets.settings"]
    assert outside == [], f"serving imported {outside}"
