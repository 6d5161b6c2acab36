"""File locks (flock) shared by the store, the sandbox and gc.

Kept in a module of its own, importing nothing of mlbuild but its errors, so that what a
builder's code identity includes (the sandbox's imports) does not reach the store and graph.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import StoreError


class LockBusy(Exception):
    """A non-waiting :func:`file_lock` found the lock held by another process."""


@contextlib.contextmanager
def file_lock(path: Path, *, shared: bool = False, wait: bool = True) -> Iterator[None]:
    """Hold an flock on ``path`` (created if missing) for the ``with`` block.

    ``wait=False`` raises :class:`LockBusy` at once instead of waiting for the holder.
    On a read-only file system the lock is taken on a read-only descriptor, or (when the
    lock file does not exist and cannot be made) not at all: nobody can write there anyway."""
    try:
        fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            fd = _readonly_fd(path, e)
    except OSError as e:
        fd = _readonly_fd(path, e)
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise LockBusy(str(path)) from None
        yield
    finally:
        if fd is not None:
            os.close(fd)


def _readonly_fd(path: Path, e: OSError) -> int | None:
    if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT):
        raise StoreError(f"cannot open the lock file `{path}`: {e.strerror or e}") from e
    try:
        return os.open(path, os.O_RDONLY)
    except OSError:
        return None
