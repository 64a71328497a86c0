"""Where the real corpora are, for tests that use them (they skip when these return None).

Each corpus is found through an environment variable, else in the shared
datasets folder next to the project: <repo root>/../shared/datasets/<file>.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"

SMS_ENV, SMS_FILE = "SPAM_SMS_PATH", "SMSSpamCollection"
SPAMASSASSIN_ENV, SPAMASSASSIN_FILE = "SPAM_SPAMASSASSIN_PATH", "spamassassin-public-corpus.tar.gz"


def sms_path() -> Path | None:
    """The SMS Spam Collection (5,574 rows), or None."""
    return _find(SMS_ENV, SMS_FILE)


def spamassassin_path() -> Path | None:
    """The SpamAssassin public corpus archive (6,046 messages), or None."""
    return _find(SPAMASSASSIN_ENV, SPAMASSASSIN_FILE)


def missing_reason(env: str, file: str) -> str:
    """A skip reason that says how to make the test run."""
    if os.environ.get(env):
        return f"{file} not found: {env}={os.environ[env]} is not a file"
    return f"{file} not found: set {env} or put it at {SHARED_DATASETS / file}"


def _find(env: str, file: str) -> Path | None:
    configured = os.environ.get(env)
    path = Path(configured).expanduser() if configured else SHARED_DATASETS / file
    return path if path.is_file() else None


def sms_or_skip() -> Path:
    """The SMS corpus, or skip the calling test or fixture, saying how to provide it."""
    return sms_path() or pytest.skip(missing_reason(SMS_ENV, SMS_FILE))


def spamassassin_or_skip() -> Path:
    """The SpamAssassin archive, or skip the calling test or fixture, saying how to provide it."""
    return spamassassin_path() or pytest.skip(missing_reason(SPAMASSASSIN_ENV, SPAMASSASSIN_FILE))


# Markers for tests that need a corpus from the start.
needs_sms = pytest.mark.skipif(sms_path() is None, reason=missing_reason(SMS_ENV, SMS_FILE))
needs_spamassassin = pytest.mark.skipif(
    spamassassin_path() is None, reason=missing_reason(SPAMASSASSIN_ENV, SPAMASSASSIN_FILE)
)


@functools.cache
def corpus_texts(path: Path) -> tuple[str, ...]:
    """The texts of a real corpus, read once per test session (the e-mail archive takes ~6 s to parse)."""
    from spam_assets.loaders import read_batch

    return tuple(read_batch(path)["text"])


@dataclasses.dataclass(frozen=True)
class SmsChampion:
    """A champion trained the platform's way on the first SMS lines, and what the tests compare it with."""

    corpus: object  # the cleaned corpus (pandas DataFrame: text, label, split, normalised, ...)
    holdout: object  # its holdout rows
    holdout_f1: float
    score: object  # texts -> the champion's P(spam)
    unseen: object  # the remaining lines, deduplicated, none of whose texts is in the corpus


def sms_champion(first_lines: int = 4500) -> SmsChampion:
    """Train on the first `first_lines` SMS lines (both candidates, 3-fold CV: the platform's own selection)."""
    import pandas as pd

    from spam_assets.corpus import clean
    from spam_assets.model.text import normalise
    from spam_assets.modeling import select_and_fit, spam_probability

    lines = [line.rstrip("\r\n").partition("\t") for line in sms_or_skip().read_text(encoding="utf-8").splitlines()]
    sms = pd.DataFrame([(text, label) for label, _, text in lines], columns=["text", "label"])
    first = sms.iloc[:first_lines].assign(batch_id="first", received_at="2026-01-01T00:00:00Z")
    corpus, _ = clean(first)
    train, holdout = corpus[corpus["split"] == "train"], corpus[corpus["split"] == "holdout"]
    result = select_and_fit(train, holdout, n_jobs=1)
    rest = sms.iloc[first_lines:]
    keys = rest["text"].map(normalise)  # deduplicated as drift_statistics does
    unseen = rest[~keys.isin(set(corpus["normalised"])) & ~keys.duplicated()].reset_index(drop=True)
    score = lambda texts: spam_probability(result.model, list(texts))  # noqa: E731
    return SmsChampion(corpus, holdout, result.holdout_metrics["spam_f1"], score, unseen)
