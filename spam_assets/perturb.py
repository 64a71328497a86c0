"""Obfuscated copies of messages, as spammers write them to slip past filters.

The platform's own families of evasion, each at a strength in [0, 1] (the
share of the places it could touch that it does touch):

- `zero_width`  a zero-width character (U+200B, U+200C, U+200D, U+2060, U+FEFF) between letters of a word
- `homoglyph`   Latin letters replaced by their Cyrillic look-alikes ("pаypаl")
- `leet`        letters replaced by digits that read like them (a→4, e→3, i→1, o→0, s→5, t→7, ...)
- `spacing`     words spaced out letter by letter ("f r e e")
- `stretching`  a letter of a word repeated ("freeee")
- `fullwidth`   characters replaced by their fullwidth forms ("ＦＲＥＥ")

Only words are touched: phone numbers, amounts, URLs and e-mail addresses
stay as they are, since the spammer needs the reader to use them.

Deterministic per (seed, text, family, strength): the random choices come
from a generator seeded by a hash of the four, so a copy is the same in any
process and order, and another seed gives other copies of the same text.
Used to evaluate models (`spam_assets.robustness`); serving never imports it.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Sequence

from spam_assets.model.text import EMAIL_RE, URL_RE

ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"
# Cyrillic letters that look like Latin ones (each is in Unicode's confusables table for its Latin letter).
CYRILLIC_LOOK_ALIKES = {
    "a": "а", "c": "с", "d": "ԁ", "e": "е", "h": "һ", "i": "і", "j": "ј", "o": "о", "p": "р", "q": "ԛ",
    "s": "ѕ", "w": "ԝ", "x": "х", "y": "у", "A": "А", "B": "В", "C": "С", "E": "Е", "H": "Н", "I": "І",
    "J": "Ј", "K": "К", "M": "М", "O": "О", "P": "Р", "S": "Ѕ", "T": "Т", "X": "Х", "Y": "У",
}
LEET = {"a": "4", "b": "8", "e": "3", "g": "9", "i": "1", "l": "1", "o": "0", "s": "5", "t": "7", "z": "2"}

_WORD = re.compile(r"[A-Za-z]+")


def _rng(seed: int, text: str, family: str, strength: float) -> random.Random:
    digest = hashlib.sha256(f"{seed}\0{family}\0{strength!r}\0{text}".encode("utf-8", "surrogatepass")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _each_word(text: str, change: Callable[[str], str]) -> str:
    """`change` applied to every run of ASCII letters outside URLs and e-mail addresses, in order."""
    pieces = re.split(r"(\s+)", text)
    for i, piece in enumerate(pieces):
        if piece and not piece.isspace() and not (URL_RE.search(piece.lower()) or EMAIL_RE.search(piece)):
            pieces[i] = _WORD.sub(lambda m: change(m.group()), piece)
    return "".join(pieces)


def _zero_width(text: str, strength: float, rng: random.Random) -> str:
    def change(word: str) -> str:
        out = [word[0]]
        for letter in word[1:]:
            if rng.random() < strength:
                out.append(rng.choice(ZERO_WIDTH))
            out.append(letter)
        return "".join(out)

    return _each_word(text, change)


def _by_letter(table: dict[str, str]) -> Callable[[str, float, random.Random], str]:
    """A family that replaces each letter found in `table`, with probability `strength`."""

    def family(text: str, strength: float, rng: random.Random) -> str:
        def change(word: str) -> str:
            return "".join(table[c] if c in table and rng.random() < strength else c for c in word)

        return _each_word(text, change)

    return family


def _leet(text: str, strength: float, rng: random.Random) -> str:
    def change(word: str) -> str:
        return "".join(LEET[c.lower()] if c.lower() in LEET and rng.random() < strength else c for c in word)

    return _each_word(text, change)


def _spacing(text: str, strength: float, rng: random.Random) -> str:
    return _each_word(text, lambda word: " ".join(word) if len(word) > 1 and rng.random() < strength else word)


def _stretching(text: str, strength: float, rng: random.Random) -> str:
    def change(word: str) -> str:
        if len(word) < 2 or rng.random() >= strength:
            return word
        vowels = [i for i, c in enumerate(word) if c.lower() in "aeiouy"]
        i = rng.choice(vowels or range(len(word)))
        return word[: i + 1] + word[i] * rng.randint(2, 5) + word[i + 1 :]

    return _each_word(text, change)


def _fullwidth(text: str, strength: float, rng: random.Random) -> str:
    # U+FF01..FF5E are U+0021..007E, shifted; the space has its own (U+3000).
    return _each_word(text, lambda word: "".join(chr(ord(c) + 0xFEE0) if rng.random() < strength else c for c in word))


FAMILIES: dict[str, Callable[[str, float, random.Random], str]] = {
    "zero_width": _zero_width,
    "homoglyph": _by_letter(CYRILLIC_LOOK_ALIKES),
    "leet": _leet,
    "spacing": _spacing,
    "stretching": _stretching,
    "fullwidth": _fullwidth,
}
# The strengths evaluated: a light, a medium and a heavy hand per family.
STRENGTHS: dict[str, tuple[float, ...]] = {
    "zero_width": (0.25, 0.5, 1.0),
    "homoglyph": (0.25, 0.5, 1.0),
    "leet": (0.2, 0.4, 0.6),
    "spacing": (0.25, 0.5, 1.0),
    "stretching": (0.25, 0.5, 1.0),
    "fullwidth": (0.25, 0.5, 1.0),
}


def perturb(text: str, family: str, strength: float, seed: int = 0) -> str:
    """An obfuscated copy of `text`: `family` applied at `strength`, the same for the same four arguments."""
    if family not in FAMILIES:
        raise ValueError(f"unknown perturbation family {family!r}; known: {sorted(FAMILIES)}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"perturbation strength {strength!r} for {family!r} is outside [0, 1]")
    return FAMILIES[family](text, strength, _rng(seed, text, family, strength))


def perturb_all(texts: Sequence[str], family: str, strength: float, seed: int = 0) -> list[str]:
    return [perturb(text, family, strength, seed) for text in texts]
