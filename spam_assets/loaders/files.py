"""Opening what a batch is made of: regular files and real folders only.

A received path is checked with lstat before anything is opened, and opened
with O_NOFOLLOW | O_NONBLOCK then checked again with fstat (the entry could
be swapped between the two). So a symlink is never followed (nothing outside
the inbox or the named source is read), and a FIFO, device or socket is
refused without a read that could block for ever.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from spam_assets.loaders._common import LimitExceededError, RefusedEntryError
from spam_assets.loaders.limits import human, over

MAX_DEPTH = 64  # folders nest this deep at most; deeper is a loop (e.g. a bind mount) or an attack


def kind(mode: int) -> str:
    """What an st_mode is, in words."""
    for test, name in (
        (stat.S_ISREG, "regular file"), (stat.S_ISDIR, "folder"), (stat.S_ISLNK, "symbolic link"),
        (stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "special file"


def refusal(path: Path | str, mode: int) -> RefusedEntryError:
    what = kind(mode)
    detail = " (links are not followed: copy the file itself)" if stat.S_ISLNK(mode) else ""
    return RefusedEntryError(f"is a {what}, not a regular file or folder; refused unread{detail}", path=str(path))


def check_entry(path: Path | str) -> os.stat_result:
    """lstat `path`; raise RefusedEntryError unless it is a regular file or a real folder."""
    info = os.lstat(path)
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        raise refusal(path, info.st_mode)
    return info


def open_regular(path: Path | str) -> BinaryIO:
    """Open a regular file for reading without following a link or blocking on a FIFO."""
    check_entry(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ELOOP:  # became a symlink after the lstat
            raise refusal(path, stat.S_IFLNK) from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise refusal(path, info.st_mode)
    return os.fdopen(fd, "rb")


def regular_files(root: Path | str) -> Iterator[tuple[str, Path]]:
    """(relative POSIX name, path) of every file under a real folder, sorted; any other entry raises."""
    root = Path(root)
    if not stat.S_ISDIR(check_entry(root).st_mode):
        raise RefusedEntryError("is not a folder", path=str(root))
    yield from _walk(root, "", 0)


def _walk(folder: Path, prefix: str, depth: int) -> Iterator[tuple[str, Path]]:
    if depth > MAX_DEPTH:
        raise RefusedEntryError(f"folders nest more than {MAX_DEPTH} deep (a loop?)", path=str(folder))
    with os.scandir(folder) as entries:
        found = sorted(entries, key=lambda entry: entry.name)
    for entry in found:
        path, name = Path(entry.path), prefix + entry.name
        mode = entry.stat(follow_symlinks=False).st_mode
        if stat.S_ISDIR(mode):
            yield from _walk(path, name + "/", depth + 1)
        elif stat.S_ISREG(mode):
            yield name, path
        else:
            raise refusal(path, mode)


def read_capped(file: BinaryIO, limit: int, what: str, path: Path | str, env_field: str) -> bytes:
    """At most `limit` bytes; one more means too big, and nothing past it is read."""
    data = file.read(limit + 1)
    if len(data) > limit:
        raise LimitExceededError(over(what, f"larger than {human(limit)}", limit, env_field), path=str(path))
    return data
