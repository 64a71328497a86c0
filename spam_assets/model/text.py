"""Text normalisation and tokenising: the one definition every stage shares.

Spam signals live in URLs, phone numbers, money and shouting, so
normalisation keeps them visible as placeholder tokens next to the original
words instead of deleting them.
"""

from __future__ import annotations

import re
import unicodedata

URL_RE = re.compile(r"(?i)\b(?:https?://|www\.)\S+|\b[a-z0-9.-]+\.(?:com|net|org|co\.uk|uk|biz|info)\b(?:/\S*)?")
EMAIL_RE = re.compile(r"(?i)\b[\w.+-]+@[\w-]+\.[\w.-]+\b")
PHONE_RE = re.compile(r"(?<!\w)(?:\+?\d[\d \-]{8,}\d)(?!\w)")
MONEY_RE = re.compile(r"(?i)(?:[£$€]\s?\d[\d,.]*|\b\d[\d,.]*\s?(?:pounds|gbp|usd|eur|p)\b)")
NUMBER_RE = re.compile(r"\d+(?:[.,]\d+)?")
TOKEN_RE = re.compile(r"[a-z0-9£$€]+(?:'[a-z]+)?")


def normalise(text: str) -> str:
    """NFKC, collapsed whitespace, lower case, with URL/e-mail/phone/money/number markers.

    The markers are appended as words (" _url_ ") beside the text they mark,
    so a vectoriser sees both "www.foo.com" and the fact that it was a URL.
    Used for deduplication, the split hash and model input alike.
    """
    # Runs once per message served and twice per message trained on, so the
    # cheap tests go first; the result is the same as running every pattern
    # (tests hold it equal to that, on both corpora and every code point):
    # str.split() and \s agree on whitespace, an e-mail needs an "@", and
    # phone numbers and money need a digit, which NUMBER_RE looks for.
    text = " ".join(unicodedata.normalize("NFKC", text).split())
    lowered = text.lower()
    markers = []
    if URL_RE.search(lowered):
        markers.append("_url_")
    if "@" in lowered and EMAIL_RE.search(lowered):
        markers.append("_email_")
    has_digit = NUMBER_RE.search(lowered) is not None
    if has_digit and PHONE_RE.search(lowered):
        markers.append("_phone_")
    if has_digit and MONEY_RE.search(lowered):
        markers.append("_money_")
    if has_digit:
        markers.append("_number_")
    return lowered if not markers else f"{lowered} {' '.join(markers)}"


def tokens(text: str) -> list[str]:
    """Word tokens of already-normalised or raw text (lower-cased here)."""
    return TOKEN_RE.findall(text.lower())
