"""Size limits for everything a batch makes us read, enforced while streaming.

Each limit is checked as bytes arrive, so a hostile file costs at most the
limit in memory and time, never its own size: a 200 MB line stops after
one message's worth, a 2 GiB archive member after its header.

    SPAM_MAX_MESSAGE_BYTES      one message's text: a line, a CSV row, a mail body   1 MiB
    SPAM_MAX_MEMBER_BYTES       one raw mail file, in a folder or decompressed from an archive  16 MiB
    SPAM_MAX_FILE_BYTES         one received file as it lies on disk                 256 MiB
    SPAM_MAX_BATCH_BYTES        everything one batch reads, decompressed             512 MiB
    SPAM_MAX_COMPRESSION_RATIO  decompressed / compressed bytes of an archive        100

Sizes take a plain number of bytes or a K/M/G suffix (binary: 1M = 1 MiB).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields

MiB = 1 << 20
ENV = {
    "message_bytes": "SPAM_MAX_MESSAGE_BYTES",
    "member_bytes": "SPAM_MAX_MEMBER_BYTES",
    "file_bytes": "SPAM_MAX_FILE_BYTES",
    "batch_bytes": "SPAM_MAX_BATCH_BYTES",
    "compression_ratio": "SPAM_MAX_COMPRESSION_RATIO",
}
# Below this many decompressed bytes the ratio is not judged: tiny archives compress oddly.
RATIO_GRACE_BYTES = 4 * MiB
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)i?b?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Limits:
    # A real message is a few KiB; 1 MiB leaves room for long HTML mail, not for a file glued into a cell.
    message_bytes: int = MiB
    # Raw mail with attachments runs to a few MiB; the attachments are dropped when parsing.
    member_bytes: int = 16 * MiB
    file_bytes: int = 256 * MiB
    batch_bytes: int = 512 * MiB
    # Text gzips 3-10x; 100x is only reached by repeated or zero bytes, i.e. a bomb.
    compression_ratio: float = 100.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """The defaults above, overridden by any SPAM_MAX_* variable that is set."""
        environ = os.environ if environ is None else environ
        values = {}
        for field in fields(cls):
            raw = environ.get(ENV[field.name], "").strip()
            if raw:
                values[field.name] = _ratio(raw, ENV[field.name]) if field.type == "float" else parse_size(raw, ENV[field.name])
        return cls(**values)


def parse_size(raw: str, name: str = "size") -> int:
    match = _SIZE.match(raw)
    if not match or float(match[1]) <= 0:
        raise ValueError(f"{name}={raw!r} is not a positive size (bytes, or with a K/M/G suffix)")
    return int(float(match[1]) * {"": 1, "k": 1 << 10, "m": MiB, "g": 1 << 30}[match[2].lower()])


def _ratio(raw: str, name: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if value < 1:
        raise ValueError(f"{name}={raw!r} is not a ratio of at least 1")
    return value


def human(size: float) -> str:
    """1048576 -> '1 MiB', for messages."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:g} {unit}" if unit == "B" else f"{size:.3g} {unit}"
        size /= 1024
    return f"{size} GiB"


def over(what: str, size_or_more: str, limit: int, env_field: str) -> str:
    """The reason a limit gives: what, how big, the limit and the variable that moves it."""
    return f"{what} is {size_or_more}, over the limit of {human(limit)} (set {ENV[env_field]} to change it)"
