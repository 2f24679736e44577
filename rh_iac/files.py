"""Writing a file so that readers see the old content or the new, never a part: :func:`write_atomic`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` with permissions ``mode``: a uniquely named temporary file in the same folder
    (so concurrent writers never share one), then ``os.replace``. ``fsync`` makes the content durable first."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
