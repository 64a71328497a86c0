"""Worker processes that end with the training that started them.

joblib's loky pool, used before, outlived its parent: after `kill -9` of a
run worker mid-training its two workers and its helper processes were still
running a minute later (measured), and after a training that succeeded its
idle workers stayed 5 minutes, holding the memory of the corpus they were
given. Here the pool is the training's own:

- it is shut down when the work is done, so nothing idles after a run;
- each worker asks the kernel for SIGKILL when its parent dies
  (PR_SET_PDEATHSIG), so a killed run worker takes its workers with it,
  whatever they are doing; elsewhere than Linux a thread in each worker
  watches for the parent to go;
- workers are spawned, not forked (the parent has Dagster's, gRPC's and
  MLflow's threads), and ignore Ctrl-C: the process that started them
  decides, and they go with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
ORPHAN_POLL_SECONDS = 1.0


@contextlib.contextmanager
def process_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A pool of `workers` processes, gone when the block ends and killed if this process dies first.

    On an error (Ctrl-C included) queued work is cancelled and the block
    returns at once; a task still running finishes or dies with this process.
    """
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=end_with_parent,
        initargs=(os.getpid(),),
    )
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def end_with_parent(parent_pid: int) -> None:
    """Worker initializer: die when `parent_pid` does; leave Ctrl-C to the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not _kernel_kills_us_with_parent():
        threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True, name="end-with-parent").start()
    if os.getppid() != parent_pid:  # the parent died before the request above took effect
        os._exit(1)


def _kernel_kills_us_with_parent() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _exit_when_orphaned(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(ORPHAN_POLL_SECONDS)
    os._exit(1)
