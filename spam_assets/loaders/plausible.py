"""Is a decoded text plausibly what someone wrote? Flags mojibake rather than let it into the corpus.

A wrong charset does not fail to decode: 8-bit text declared UTF-16 decodes
to CJK ideographs, one per pair of bytes. Such text has two tell-tale shapes,
checked here on every parsed message of every format:
- mostly ideographs, yet (almost) no spaces or punctuation: real Chinese or
  Japanese prose has both, byte pairs of English have neither;
- letters of three or more scripts, each a good share of the text: real mail
  mixes at most a local script with Latin.
"""

from __future__ import annotations

import unicodedata
from collections import Counter

MIN_LETTERS = 40  # shorter texts say too little to judge
MAJOR_SHARE = 0.15  # a script this big a share of the letters is part of the text, not a stray word
MAX_SEPARATOR_SHARE = 0.03  # spaces and punctuation below this, in ideographic text, is not prose (Chinese: ~10%)
_ONE_SCRIPT = {"HIRAGANA": "CJK", "KATAKANA": "CJK", "HALFWIDTH": "CJK", "FULLWIDTH": "LATIN"}


def script(char: str) -> str:
    """LATIN, CYRILLIC, CJK, HANGUL ... from the character's Unicode name."""
    if char.isascii():
        return "LATIN"
    first = unicodedata.name(char, "UNKNOWN").split(" ", 1)[0]
    return _ONE_SCRIPT.get(first, first)


def implausible(text: str) -> str | None:
    """Why `text` looks garbled (a wrongly declared charset), or None when it looks like writing."""
    if text.isascii():
        return None
    letters = Counter(script(char) for char in text if char.isalpha())
    total = sum(letters.values())
    if total < MIN_LETTERS:
        return None
    separators = sum(1 for char in text if char.isspace() or unicodedata.category(char).startswith("P"))
    if letters["CJK"] >= 0.5 * total and separators <= MAX_SEPARATOR_SHARE * len(text):
        return (
            f"reads as {letters['CJK']} CJK characters with {separators} spaces or punctuation marks: "
            "mojibake of 8-bit text decoded with a wrong (UTF-16?) charset"
        )
    major = sorted((name for name, count in letters.items() if count >= MAJOR_SHARE * total), key=lambda n: -letters[n])
    if len(major) >= 3:
        shares = ", ".join(f"{name} {letters[name] / total:.0%}" for name in major)
        return f"mixes the letters of {len(major)} scripts ({shares}): garbled by a wrong charset?"
    return None
