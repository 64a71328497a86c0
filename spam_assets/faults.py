"""Faults the end-to-end tests inject into real runs; nothing happens unless a test sets the variable.

A full disk cannot be had on demand without root (a loop mount), so the
slow test of what a full disk during training does to the loop, under the
real daemon, arms this hook instead, and it fails the model write the way
a full disk does:

    SPAM_FAULT_MODEL_WRITE_ENOSPC=<file>   <file> holds N: the next N model writes fail with ENOSPC

Each armed write cuts the stored model file short (what a write that ran
out of space leaves behind) and raises OSError(ENOSPC), then counts down
in <file>, so "the first N attempts" holds across run processes. Unset,
as everywhere outside that test, the hook is one environment lookup.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

MODEL_WRITE_ENV = "SPAM_FAULT_MODEL_WRITE_ENOSPC"


def model_written(model_file: Path | None) -> None:
    """Call right after a model's files reached the store (`model_file`: the stored file, when local)."""
    counter = os.environ.get(MODEL_WRITE_ENV)
    if not counter:
        return
    path = Path(counter)
    left = int(path.read_text().strip() or 0) if path.exists() else 0
    if left <= 0:
        return
    path.write_text(str(left - 1))  # one training at a time (its pool): no race on the counter
    if model_file is not None and model_file.is_file():
        with open(model_file, "r+b") as stored:
            stored.truncate(model_file.stat().st_size // 2)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(model_file or "the model store"))
