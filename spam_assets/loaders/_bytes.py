"""Byte-level checks shared by every loader, run before any parsing.

Parsers given the wrong thing fail in confusing ways (pandas reading a zip,
the e-mail parser accepting anything as a header-less message), so each
loader first asks here: is there anything, is it text, is it UTF-8?
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path

from spam_assets.loaders._common import BatchFormatError

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


def decode_utf8(data: bytes, path: Path | str, *, lines_are_rows: bool = False) -> str:
    """Decode strictly, naming the first bad line: silently replacing bytes would corrupt texts.

    `lines_are_rows` (line-per-row formats) also sets the error's `row` to that line.
    """
    try:
        return data.decode("utf-8-sig")  # -sig: drop the BOM that Excel and Notepad write
    except UnicodeDecodeError as error:
        body, start = error.object, error.start  # offsets are past the BOM, if any
        line = line_of(body, start)
        column = start - (body.rfind(b"\n", 0, start) + 1) + 1
        raise BatchFormatError(
            f"line {line} is not valid UTF-8 (byte 0x{body[start]:02x} at byte {column} of the line); "
            "re-encode the file as UTF-8 (it is probably Latin-1 or Windows-1252)",
            row=line if lines_are_rows else None,
            path=str(path),
        ) from None


def read_text(path: Path | str, *, lines_are_rows: bool = False) -> str:
    """A text file's content, after the empty / binary / UTF-8 checks."""
    data = Path(path).read_bytes()
    check_text_bytes(data, path)
    return decode_utf8(data, path, lines_are_rows=lines_are_rows)


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
