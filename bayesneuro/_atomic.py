"""Atomic file writes: a temporary file in the destination's folder, flushed, renamed over it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def _umask_permissions(path: str) -> None:
    """Give a file made by ``mkstemp`` (mode 0600) the usual permissions under the umask."""
    mask = os.umask(0)
    os.umask(mask)
    try:
        os.chmod(path, 0o666 & ~mask)
    except OSError:
        pass


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Run ``write(tmp)`` on a temporary file beside `path`, then rename it over `path`.

    The file is flushed to disk (``fsync``) before the rename, and given the permissions a new
    file gets under the umask (`write` may set others, e.g. ``shutil.copymode``). On any error,
    or an interrupt, the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        _umask_permissions(tmp)
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
