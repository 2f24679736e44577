"""A per-stack lock so that concurrent deploys of one stack are refused, not interleaved."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rh_iac.errors import StackLockedError


@contextmanager
def stack_lock(state_dir: Path, stack: str, operation: str, *, shared: bool = False) -> Iterator[None]:
    """Hold ``state_dir/lock`` for the duration; raise :class:`StackLockedError` at once if it is taken.

    Deploys and destroys hold it exclusively; previews hold it shared, so several can run together but none while a
    deploy changes the stack. ``flock`` is released by the kernel when its holder dies, so a killed deploy never
    leaves a stale lock.
    """
    path = Path(state_dir) / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise StackLockedError(
                f"stack {stack!r} is locked by {holder}; wait for it to finish, then run {operation} again."
            ) from None
        if not shared:  # the exclusive holder says who it is, for the message above
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} ({operation})".encode(), 0)
        try:
            yield
        finally:
            if not shared:
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
