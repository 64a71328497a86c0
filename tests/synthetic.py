"""Small generated corpora for tests that must always run (no real data needed).

SMS-like ham and spam drawn from word lists with a seeded RNG: distinct
texts, realistic enough that a real model learns them and drift statistics
see the same distribution across seeds, and e-mail-like texts that differ
in every descriptor.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

HAM_WORDS = (
    "ok see you later at home lunch tomorrow sorry call me when free dinner tonight "
    "love you mum dad bus train running late meeting work done thanks haha yeah sure "
    "where are u going now watching movie class exam good night morning coffee"
).split()
SPAM_WORDS = (
    "free win winner prize claim cash award urgent txt reply stop now call mobile "
    "guaranteed bonus offer ringtone voucher selected congratulations entry draw "
    "unsubscribe customer service account"
).split()
EMAIL_WORDS = (
    "regards attached please find the following document meeting agenda quarterly "
    "report mailing list subscribe archive server configuration kernel patch "
    "discussion thread wrote original message forwarded newsletter"
).split()


def _sentence(rng: np.random.Generator, words, low: int, high: int) -> str:
    return " ".join(rng.choice(words, size=int(rng.integers(low, high))))


def sms_messages(n: int, seed: int = 0, spam_share: float = 0.15) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        if rng.random() < spam_share:
            amount = int(rng.integers(100, 5000))
            text = f"{_sentence(rng, SPAM_WORDS, 6, 14).capitalize()}! £{amount} call 0906{rng.integers(1000000, 9999999)}"
            rows.append(("spam", text))
        else:
            rows.append(("ham", f"{_sentence(rng, HAM_WORDS, 3, 10)} {i}"))
    return pd.DataFrame(rows, columns=["label", "text"])


def email_messages(n: int, seed: int = 0, spam_share: float = 0.3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = "spam" if rng.random() < spam_share else "ham"
        words = SPAM_WORDS + EMAIL_WORDS if label == "spam" else EMAIL_WORDS
        paragraphs = [_sentence(rng, words, 30, 80) for _ in range(int(rng.integers(3, 8)))]
        rows.append((label, f"Subject: {_sentence(rng, words, 3, 8)} #{i}\n\n" + "\n\n".join(paragraphs)))
    return pd.DataFrame(rows, columns=["label", "text"])


def write_sms_file(frame: pd.DataFrame, path: Path) -> Path:
    """The SMS Spam Collection format: label<TAB>text, no header, no quoting."""
    path.write_text("".join(f"{label}\t{text}\n" for label, text in frame[["label", "text"]].itertuples(index=False)), encoding="utf-8")
    return path


def write_jsonl(frame: pd.DataFrame, path: Path) -> Path:
    with path.open("w", encoding="utf-8") as out:
        for label, text in frame[["label", "text"]].itertuples(index=False):
            out.write(json.dumps({"text": text, "label": label}) + "\n")
    return path
