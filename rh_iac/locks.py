"""A per-stack lock so that concurrent deploys of one stack are refused, not interleaved."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rh_iac.errors import StackLockedError


@contextmanager
def stack_lock(state_dir: Path, stack: str, operation: str) -> Iterator[None]:
    """Hold ``state_dir/lock`` for the duration; raise :class:`StackLockedError` at once if another process has it.

    ``flock`` is released by the kernel when its holder dies, so a killed deploy never leaves a stale lock.
    """
    path = Path(state_dir) / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise StackLockedError(
                f"stack {stack!r} is locked by {holder}; wait for it to finish, then run {operation} again."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} ({operation})".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
