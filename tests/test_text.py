"""normalise() takes shortcuts for speed; these tests hold it equal to running every pattern."""

from __future__ import annotations

import re
import sys
import unicodedata

import pytest

from spam_assets.model.text import EMAIL_RE, MONEY_RE, NUMBER_RE, PHONE_RE, URL_RE, normalise
from tests.datasets import corpus_texts, needs_sms, needs_spamassassin, sms_path, spamassassin_path
from tests.synthetic import email_messages, sms_messages


def reference_normalise(text: str) -> str:
    """normalise() as first written: every pattern on every text, whitespace by regex."""
    text = re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip()
    lowered = text.lower()
    patterns = (("_url_", URL_RE), ("_email_", EMAIL_RE), ("_phone_", PHONE_RE), ("_money_", MONEY_RE), ("_number_", NUMBER_RE))
    markers = [name for name, pattern in patterns if pattern.search(lowered)]
    return lowered if not markers else f"{lowered} {' '.join(markers)}"


EDGE_TEXTS = [
    "",
    " \t\n\x0b\x0c\r\x1c\x1d\x1e\x1f\x85\u00a0\u2028\u3000 ",
    "WIN £1000 now!! Call 09061701461 or visit www.prizes.com",
    "mail me at Some.One+tag@example.co.uk or ＠fullwidth＠at",
    "no digits, no at sign, no dots",
    "Arabic-Indic digits ٠١٢٣٤٥٦٧٨٩ and ５０ fullwidth, €５",
    "http://localhost:8080/path and HTTPS://X",
    "price: 12,50 EUR; 3p per min; $ 7; 10 pounds",
    "+44 7700 900 123, 0800-123-4567",
]


def assert_same(texts: list[str]) -> None:
    differing = [t for t in texts if normalise(t) != reference_normalise(t)]
    assert not differing, f"{len(differing)} texts normalise differently, e.g. {differing[:3]!r}"


def test_markers_and_whitespace_as_every_pattern_gives():
    assert normalise(EDGE_TEXTS[2]).endswith("_url_ _phone_ _money_ _number_")
    assert normalise(EDGE_TEXTS[1]) == ""
    assert_same(EDGE_TEXTS + sms_messages(500, seed=11)["text"].tolist() + email_messages(100, seed=12)["text"].tolist())


def test_str_split_and_regex_whitespace_agree_on_every_code_point():
    whitespace = re.compile(r"\s")
    differing = [code for code in range(sys.maxunicode + 1) if bool(whitespace.match(chr(code))) != chr(code).isspace()]
    assert not differing


def test_code_points_the_shortcuts_hinge_on():
    # Whitespace, digits and anything NFKC turns into "@" or a digit, in the positions the
    # shortcuts test (an e-mail needs "@", phone and money need a digit), plus every 97th code point.
    def relevant(c: str) -> bool:
        folded = unicodedata.normalize("NFKC", c)
        return c.isspace() or any(ch.isdigit() or ch.isdecimal() or ch == "@" for ch in folded)

    chars = [chr(code) for code in range(sys.maxunicode + 1) if code % 97 == 0 or relevant(chr(code))]
    assert len(chars) > 12_000
    assert_same([f"a{c}b x{c}@y.com 1{c}2 £{c}5 0{c}7700900123 {c}" for c in chars])


@pytest.mark.parametrize(
    "corpus",
    [pytest.param(sms_path, marks=needs_sms), pytest.param(spamassassin_path, marks=needs_spamassassin)],
    ids=["sms", "spamassassin"],
)
def test_same_as_every_pattern_on_the_real_corpora(corpus):
    assert_same(list(corpus_texts(corpus())[:1000]))
