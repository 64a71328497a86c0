"""Byte-level checks shared by every loader, run before any parsing.

Parsers given the wrong thing fail in confusing ways (pandas reading a zip,
the e-mail parser accepting anything as a header-less message), so each
loader first asks here: is there anything, is it text, is it UTF-8?
"""

from __future__ import annotations

import codecs
import itertools
import os
import re
from collections.abc import Iterator
from pathlib import Path

from spam_assets.loaders._common import BatchFormatError, LimitExceededError
from spam_assets.loaders.files import open_regular, read_capped
from spam_assets.loaders.limits import Limits, human, over

SAMPLE_BYTES = 64 * 1024
# Control bytes that real text does contain: tab, newlines, form feed, backspace, escape.
_TEXT_CONTROLS = frozenset(b"\t\n\r\f\v\b\x1b")
_BINARY_CONTROLS = bytes(sorted((frozenset(range(32)) - _TEXT_CONTROLS) | {0x7F}))
# Text never has more than a stray control byte; random or compressed bytes have ~10%.
MAX_CONTROL_FRACTION = 0.05
_SURROGATES = re.compile("[\ud800-\udfff]")
_UTF16_32_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def line_of(data: bytes, offset: int) -> int:
    """1-based line number of a byte offset."""
    return data.count(b"\n", 0, offset) + 1


def check_text_bytes(data: bytes, path: Path | str, what: str = "file") -> None:
    """Raise unless `data` is non-blank text (in any 8-bit-compatible encoding)."""
    if not data.removeprefix(codecs.BOM_UTF8).strip():
        raise BatchFormatError(f"{what} is empty" + (" (only whitespace)" if data else ""), path=str(path))
    if data.startswith(_UTF16_32_BOMS):
        raise BatchFormatError(
            f"{what} is UTF-16/UTF-32 (byte-order mark found); re-encode it as UTF-8", path=str(path)
        )
    nul = data.find(b"\0")
    if nul >= 0:
        raise BatchFormatError(
            f"{what} is binary, not text (NUL byte at offset {nul}, line {line_of(data, nul)})",
            path=str(path),
        )
    sample = data[:SAMPLE_BYTES]
    controls = len(sample) - len(sample.translate(None, _BINARY_CONTROLS))  # C speed: counts them
    if controls > MAX_CONTROL_FRACTION * len(sample):
        raise BatchFormatError(
            f"{what} is binary, not text ({controls} control bytes in its first {len(sample)})",
            path=str(path),
        )


def iter_lines(path: Path | str, limits: Limits, *, keepends: bool = False) -> Iterator[tuple[int, str | BatchFormatError]]:
    """(line number, text) of each line of a regular file, streamed: never more than one line in memory.

    File-wide faults (not a regular file, too big, empty, binary) raise. A line
    that is longer than limits.message_bytes (its rest is skipped unread into
    memory), holds a NUL or is not UTF-8 comes as a BatchFormatError instead of
    its text, with `row` set to its line number, so a caller can quarantine it.
    """
    with open_regular(path) as file:
        size = os.fstat(file.fileno()).st_size
        if size > limits.file_bytes:
            raise LimitExceededError(over("the file", human(size), limits.file_bytes, "file_bytes"), path=str(path))
        check_text_bytes(file.read(SAMPLE_BYTES), path)
        file.seek(0)
        total, cap = 0, limits.message_bytes + 2  # + room for the line's own \r\n
        for number in itertools.count(1):
            raw = file.readline(cap)
            if not raw:
                return
            total += len(raw)
            if len(raw) == cap and not raw.endswith(b"\n"):
                skipped = len(raw)
                while raw and not raw.endswith(b"\n") and total <= limits.file_bytes:
                    raw = file.readline(1 << 20)
                    skipped, total = skipped + len(raw), total + len(raw)
                if total <= limits.file_bytes:
                    yield number, LimitExceededError(
                        over(f"line {number}", human(skipped), limits.message_bytes, "message_bytes"),
                        row=number, path=str(path),
                    )
                    continue
            if total > limits.file_bytes:  # the file grew while we read it
                raise LimitExceededError(
                    over("the file", f"more than {human(limits.file_bytes)}", limits.file_bytes, "file_bytes"),
                    path=str(path),
                )
            yield number, _decode_line(raw.removeprefix(codecs.BOM_UTF8) if number == 1 else raw, number, path, keepends)


def _decode_line(raw: bytes, number: int, path: Path | str, keepends: bool) -> str | BatchFormatError:
    nul = raw.find(b"\0")
    if nul >= 0:
        return BatchFormatError(
            f"line {number} has a NUL byte (at byte {nul + 1} of the line): binary, not text", row=number, path=str(path)
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return BatchFormatError(
            f"line {number} is not valid UTF-8 (byte 0x{raw[error.start]:02x} at byte {error.start + 1} of the line); "
            "re-encode the file as UTF-8 (it is probably Latin-1 or Windows-1252)",
            row=number,
            path=str(path),
        )
    if keepends:
        return text
    text = text.removesuffix("\n")
    return text.removesuffix("\r")


def read_file_capped(path: Path | str, limits: Limits) -> bytes:
    """A whole regular file (an mbox, say), refused unread if larger than limits.file_bytes."""
    with open_regular(path) as file:
        return read_capped(file, limits.file_bytes, "the file", path, "file_bytes")


def split_lines(text: str) -> list[str]:
    r"""Lines split on \n only (\r stripped): str.splitlines() also splits on \x0b, \x1c, \u2028...
    which can occur inside a message and would silently cut it in two."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def without_surrogates(text: str) -> str:
    """Lone surrogates (from JSON "\\ud83d" escapes or undecodable mail headers) as U+FFFD:
    they are not valid Unicode, and parquet and UTF-8 writers reject them."""
    return _SURROGATES.sub("\ufffd", text)
