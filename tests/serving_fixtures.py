"""Fixtures for the serving tests: a real MLflow store with real trained models, and real servers.

Test modules import what they use (`from serving_fixtures import ...`). The
store is built once per test process (about 10 s): models trained on
generated ham/spam messages, logged and registered with the platform's own
`log_challenger`:

- `good[0]`, `good[1]`: two different good models (hot-swap tests);
- `inverted`: trained on swapped labels, so it calls spam ham (a model that
  loads fine and predicts garbage).

Each test that moves an alias works on its own registered model, made by
`ModelStore.clone(name, [versions])` (new versions pointing at the same
artifacts; no retraining), so tests never see each other's promotions.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

HAM_WORDS = (
    "are we still on for lunch tomorrow ok see you at home later love mum dad dinner tonight "
    "meeting work thanks sorry running late call me when you get back how was your day sure "
    "pick up the kids movie weekend coffee good night morning class bus train sounds great"
).split()
SPAM_WORDS = (
    "winner won cash prize claim call now urgent free entry txt win guaranteed award offer "
    "reply stop mobile ringtone selected bonus voucher collect delivery final attempt "
    "congratulations customer service exclusive limited"
).split()
COMMON_WORDS = "you to the a your is for".split()


def synthetic_messages(n: int, seed: int) -> list[tuple[str, str]]:
    """(text, label) pairs: a third spam (with numbers and money), the rest ham."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        spam = i % 3 == 0
        words = rng.choices(SPAM_WORDS if spam else HAM_WORDS, k=rng.randint(5, 14))
        words += rng.choices(COMMON_WORDS, k=rng.randint(1, 3))
        if spam:
            words.append(rng.choice([f"09061{rng.randint(100000, 999999)}", f"£{rng.randint(1, 20) * 100}", "87121"]))
        rng.shuffle(words)
        rows.append((" ".join(words), "spam" if spam else "ham"))
    return rows


def train(seed: int, invert: bool = False):
    import pandas as pd

    from spam_assets.model.pipelines import candidate_pipelines
    from spam_assets.modeling import select_and_fit

    rows = synthetic_messages(360, seed)
    frame = pd.DataFrame(rows, columns=["text", "label"])
    if invert:
        frame["label"] = frame["label"].map({"ham": "spam", "spam": "ham"})
    return select_and_fit(
        frame.iloc[:300],
        frame.iloc[300:],
        seed=seed,
        folds=2,
        candidates={"tfidf_nb": candidate_pipelines(seed)["tfidf_nb"]},
        n_jobs=1,
    )


@dataclass
class ModelStore:
    root: Path
    uri: str
    good: list = field(default_factory=list)  # ModelVersion of spam-classifier
    inverted: object = None
    _counter: int = 0

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def artifact_dir(self, version) -> Path:
        uri = self.client().get_model_version_download_uri(version.name, str(version.version))
        return Path(uri.removeprefix("file://"))

    def unique_name(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}-{self._counter}"

    def clone(self, prefix: str, versions: list, tags: list[dict] | None = None):
        """A new registered model whose versions 1..n serve the given versions' artifacts; its Registry."""
        from spam_assets.model.registry import Registry

        name = self.unique_name(prefix)
        client = self.client()
        client.create_registered_model(name)
        for i, version in enumerate(versions):
            source = (
                version if isinstance(version, str) else self.artifact_dir(version).resolve().as_uri()
            )
            run_id = None if isinstance(version, str) else version.run_id
            run_id = run_id or self.good[0].run_id
            extra = dict(self.good[0].tags) if isinstance(version, str) else dict(version.tags)
            extra.update((tags or [{}] * len(versions))[i])
            client.create_model_version(name, source=source, run_id=run_id, tags=extra)
        return Registry(self.uri, name)

    def tampered_copy(self, version, edit) -> str:
        """A copy of a version's artifact folder changed by edit(folder); returns its file:// URI."""
        target = self.root / "tampered" / self.unique_name("copy")
        shutil.copytree(self.artifact_dir(version), target)
        edit(target)
        return target.resolve().as_uri()


def _build_store(root: Path) -> ModelStore:
    import mlflow
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    from spam_assets.challenger import log_challenger
    from spam_assets.model.registry import Registry, ensure_experiment

    uri = f"sqlite:///{root / 'mlflow.db'}"
    store = ModelStore(root=root, uri=uri)
    registry = Registry(uri)
    results = [train(0), train(1), train(2, invert=True)]
    versions = []
    with _use_tracking_uri(uri):  # log_challenger uses the global tracking URI; put it back after
        experiment = ensure_experiment(uri, root / "artifacts")
        for i, result in enumerate(results):
            with mlflow.start_run(experiment_id=experiment):
                versions.append(
                    log_challenger(
                        result,
                        registry,
                        corpus_version=f"synthetic-{i}",
                        dagster_run_id=f"dagster-run-{i}",
                        params={"seed": i},
                        n_train=300,
                        n_holdout=60,
                    )
                )
    store.good = versions[:2]
    store.inverted = versions[2]
    return store


_STORE: ModelStore | None = None
_STORE_LOCK = threading.Lock()


@pytest.fixture(scope="session")
def model_store(tmp_path_factory) -> ModelStore:
    """Built once per process even when several modules import this fixture."""
    global _STORE
    with _STORE_LOCK:
        if _STORE is None:
            _STORE = _build_store(tmp_path_factory.mktemp("serving-mlflow"))
    return _STORE


@contextlib.contextmanager
def running_server(store: ModelStore, model_name: str, wait_for: str | None = None, shadow=None, **overrides):
    """A real server on a free 127.0.0.1 port, following `model_name` in `store` (`shadow`: a ShadowScorer to use)."""
    from serving.config import ServingConfig
    from serving.server import start

    settings = dict(host="127.0.0.1", port=0, tracking_uri=store.uri, model_name=model_name, poll_interval=0.2, grace=1.0)
    # Each server's prediction log in a folder of its own under the store's temp folder, never the user's home.
    settings["prediction_log"] = str(store.root / store.unique_name("predictions"))
    settings.update(overrides)
    running = start(ServingConfig(**settings), shadow=shadow)
    try:
        if wait_for is not None:
            assert running.watcher.wait_for(wait_for, timeout=30), f"version {wait_for} never loaded"
        yield running
    finally:
        running.shutdown(grace=0.5)


@pytest.fixture(scope="module")
def served(model_store):
    """A shared server with good[0] as champion (read-only tests only)."""
    registry = model_store.clone("served", [model_store.good[0]])
    registry.promote("1", "shared test server")
    with running_server(model_store, registry.model_name, wait_for="1", max_message_bytes=2 * 1024 * 1024) as running:
        yield running


@pytest.fixture()
def channel(served):
    with grpc.insecure_channel(served.target) as ch:
        yield ch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.05, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def self_signed_cert(
    folder: Path,
    dns_names: Sequence[str] = ("localhost",),
    ips: Sequence[str] = ("127.0.0.1",),
    common_name: str = "localhost",
) -> tuple[Path, Path]:
    """A self-signed (cert.pem, key.pem) naming `dns_names` and `ips`, made with `cryptography`, else the openssl CLI."""
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        if shutil.which("openssl") is None:
            pytest.skip("neither the cryptography package nor the openssl CLI is available to make a certificate")
        names = ",".join([*(f"DNS:{n}" for n in dns_names), *(f"IP:{i}" for i in ips)])
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", str(key_path), "-out", str(cert_path), "-days", "1", "-subj", f"/CN={common_name}",
             "-addext", f"subjectAltName={names}"],
            check=True, capture_output=True,
        )  # fmt: skip
        return cert_path, key_path
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    alt = [x509.DNSName(n) for n in dns_names] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def run_python(code: str, *args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter of this venv (for clients whose protos clash with ours)."""
    return subprocess.run(
        [PYTHON, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=PROJECT_ROOT,
        env={**os.environ, **(env or {})},
    )


def random_words(rng: np.random.Generator, nbytes: int) -> str:
    """About `nbytes` of random words: none of them seen by the server before."""
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789", dtype=np.uint8)
    chars = letters[rng.integers(0, len(letters), nbytes)]
    chars[np.arange(5, nbytes, 7)] = ord(" ")
    return chars.tobytes().decode()
