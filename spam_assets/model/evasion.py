"""Text as a reader sees it, and with the spammer's tricks folded away: the evasion-robust preprocessors.

Spam is written to be read by people and missed by filters. What a reader
does not see (zero-width and other format characters), reads the same
(Cyrillic and Greek look-alikes of Latin letters, fullwidth forms) or reads
through (combining marks stacked on letters) is folded to one skeleton
before anything else: `skeleton`. Tricks a reader decodes without noticing,
leet digits ("fr33"), letters spaced out ("f r e e") and stretched words
("freeee"), are folded in a second channel only (`normalise_folded`), beside
the skeleton one (`normalise_skeleton`), because folding them loses real
information ("150p", "u r"): the model sees both and weighs them.

Both are named module-level functions because stored models reference their
preprocessors by import path (skops), so they are on the allow-list
(`spam_assets.model.pipelines.SKOPS_TRUSTED_TYPES`) and must keep their
behaviour for as long as models that use them are stored: a change here
changes what stored models score. `spam_assets.model.text.normalise` stays
as it was for the models trained before these.
"""

from __future__ import annotations

import re
import unicodedata

from spam_assets.model.text import EMAIL_RE, URL_RE, normalise

# Cyrillic and Greek letters whose skeleton in Unicode's confusables table
# (UTS #39, confusables.txt of 2021-05-29, Unicode 14) is one Latin letter:
# every such entry of the table, uppercase look-alikes of "I" mapped to "I"
# where the table's prototype is "l" (the text is lower-cased next, and
# "І" stands for "i" there). Characters NFKC already folds (U+1FBE, U+037A)
# and the musical symbols of the Greek notation blocks are left out.
_LOOK_ALIKES = {
    "a": "αа", "A": "ΑА", "b": "Ь", "B": "ΒВ", "c": "ϲс", "C": "ϹС", "d": "ԁ", "e": "еҽ", "E": "ΕЕ",
    "F": "Ϝ", "G": "Ԍ", "h": "һ", "H": "ΗН", "i": "ιіꙇӏ", "I": "ΙІӀ", "j": "ϳј", "J": "ͿЈ", "K": "ΚК",
    "M": "ΜϺМ", "N": "Ν", "o": "οσо", "O": "ΟО", "p": "ρϱр", "P": "ΡР", "q": "ԛ", "r": "ᴦг",
    "s": "ѕ", "S": "Ѕ", "T": "ΤТ", "u": "υ", "v": "νѵ", "V": "Ѵ", "w": "ѡԝ", "W": "Ԝ", "x": "х",
    "X": "ΧХ", "y": "γуү", "Y": "ΥϒУҮ", "Z": "Ζ",
}
CONFUSABLES = {look_alike: latin for latin, look_alikes in _LOOK_ALIKES.items() for look_alike in look_alikes}
_TO_LATIN = str.maketrans(CONFUSABLES)

# Invisible letters that are not format characters (Unicode's default-ignorable Hangul fillers).
_INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")


def skeleton(text: str) -> str:
    """The text as a reader sees it: NFKC, no format characters, no combining marks, look-alikes as Latin.

    Format characters (category Cf: zero-width space, joiners, word joiner,
    BOM, direction marks, soft hyphen, ...) are dropped; so are nonspacing
    combining marks after canonical decomposition (accents go too: "café"
    reads as "cafe", and a letter buried under marks as the letter).
    ASCII text is returned as it is, after NFKC, at the cost of one check.
    """
    text = unicodedata.normalize("NFKC", text)
    if text.isascii():
        return text
    category = unicodedata.category
    decomposed = unicodedata.normalize("NFD", text)
    visible = "".join(c for c in decomposed if category(c) not in ("Cf", "Mn") and c not in _INVISIBLE_LETTERS)
    return unicodedata.normalize("NFC", visible).translate(_TO_LATIN)


def normalise_skeleton(text: str) -> str:
    """`normalise` (markers for URLs, e-mail, phones, money, numbers) of the text's `skeleton`."""
    return normalise(skeleton(text))


# Digits read as letters inside words; a run of letters and digits with more
# digits than letters ("150p", "txt82228") is a number or a code, and keeps them.
_LEET = str.maketrans("0123456789", "oizeasbtbg")
# Both anchored at the start of a run or word, so a search tries each run once: unanchored,
# a 64 KiB word without a digit (or a dot) was scanned from every one of its characters.
_WITH_DIGIT = re.compile(r"(?<![^\W_])[^\W_]*\d[^\W_]*")  # a run of letters and digits that holds a digit
_STRETCHED = re.compile(r"([^\W\d_])\1+")  # a letter repeated: "freeee", also "free" (both become "fre")
_SPACED = re.compile(r"(?<!\S)[^\W\d_](?:\s+[^\W\d_])+(?!\S)")  # single letters in a row: "f r e e"
_MAY_BE_ADDRESS = re.compile(r"(?<!\S)[^\s.:@]*[.:@]\S*")  # the words URL_RE or EMAIL_RE could match


def _unleet(match: re.Match) -> str:
    run = match.group()
    letters = sum(c.isalpha() for c in run)
    return run.translate(_LEET) if letters and len(run) - letters <= letters else run


def _fold_words(text: str) -> str:
    return _STRETCHED.sub(r"\1", _WITH_DIGIT.sub(_unleet, text))


def _fold_piece(piece: str) -> str:
    addresses = [
        m.span() for m in _MAY_BE_ADDRESS.finditer(piece) if "@" in m.group() or URL_RE.search(m.group())
    ]
    if not addresses:
        return _fold_words(piece)
    pieces, start = [], 0
    for begin, end in addresses:
        pieces += [_fold_words(piece[start:begin]), piece[begin:end]]
        start = end
    return "".join(pieces) + _fold_words(piece[start:])


# The fold of each piece between spaces, memoised: words repeat across
# messages, and a lookup is a tenth of the regular expressions' cost.
# Bounded as char_ngrams' memo is, for the same reason (hostile input).
_PIECE_MEMO: dict[str, str] = {}
_MAX_PIECES, _MAX_PIECE_CHARS = 1 << 16, 40


def fold_tricks(text: str) -> str:
    """Leet digits inside words read as letters, letter-spaced words joined, repeated letters once.

    For lower-cased skeleton text. Numbers and codes ("87121", "150p"), URLs
    and e-mail addresses are kept as they are; repeated letters are folded in
    every other word, so "free", "freeee" and "fr33" all read "fre".
    After the spaced-out letters are joined, every pattern matches within a
    piece between two spaces (none matches a space, and a space satisfies
    each look-behind as the start of a text does), so each piece is folded
    on its own, and looked up when it was folded before.
    """
    memo = _PIECE_MEMO
    folded = []
    for piece in _SPACED.sub(lambda m: "".join(m.group().split()), text).split(" "):
        result = memo.get(piece)
        if result is None:
            result = _fold_piece(piece)
            if len(piece) <= _MAX_PIECE_CHARS and len(memo) < _MAX_PIECES:
                memo[piece] = result
        folded.append(result)
    return " ".join(folded)


# normalise_word_pairs starts from normalise_folded of the same text, which
# the scorer has just computed for the folded block: the results of recent
# short texts are kept (a stream's micro-batch runs each block over all its
# texts in turn). Bounded: at most _CACHE_SIZE texts of at most _CACHE_CHARS.
_CACHE_SIZE, _CACHE_CHARS = 512, 2048
_folded_cache: dict[str, str] = {}


def normalise_folded(text: str) -> str:
    """`normalise` of the skeleton with leet digits, letter spacing and stretching folded (`fold_tricks`).

    Markers are found after folding: digits a word lost to folding are no
    number, and numbers, URLs, e-mail addresses, phones and money keep theirs.
    """
    cached = _folded_cache.get(text)
    if cached is not None:
        return cached
    result = normalise(fold_tricks(skeleton(text).lower()))
    if len(text) <= _CACHE_CHARS:
        if len(_folded_cache) >= _CACHE_SIZE:
            _folded_cache.clear()  # cheaper than an LRU, and the next batch refills it
        _folded_cache[text] = result
    return result


_MARKERS = frozenset(("_url_", "_email_", "_phone_", "_money_", "_number_"))
# Longest token of the pairs channel: a longer one (a long word, or a whole
# message spaced out letter by letter and joined by the fold) is cut into
# pieces this long, so one token never costs much to hash (the hashing loop
# holds the GIL).
MAX_PHRASE = 200


def normalise_word_pairs(text: str) -> str:
    """Each two neighbouring words of `normalise_folded` run together: "free entry now" reads "freentry entrynow".

    The character n-grams that span a word boundary ("eentr") are then the
    same whether the message was spaced as written or spaced out letter by
    letter (which the fold joins into one run, "freentrynow"), so the model
    keeps a phrase it learnt however the spaces were moved. Pairs, not the
    whole message run together: a pair recurs across messages as a word
    does, so its n-grams come from the per-word memo (char_ngrams) instead
    of being hashed anew for every message, which cost 4x the scorer.
    Markers are left out (they are words in the other channels).
    """
    words = [
        word[i : i + MAX_PHRASE]
        for word in normalise_folded(text).split()
        if word not in _MARKERS
        for i in range(0, len(word), MAX_PHRASE)
    ]
    if len(words) < 2:
        return " ".join(words)
    return " ".join(first + second for first, second in zip(words, words[1:]))
