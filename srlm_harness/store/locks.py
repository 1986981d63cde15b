"""File locks the store is built on: ``flock`` on a lock file, which the kernel releases
when its holder dies (even by ``kill -9``) and which every process on the machine sees,
whatever container (PID namespace) it runs in. Lock files are deleted on release, so they do
not pile up; :func:`hold` copes with a file deleted while it waited.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


def hold(path: Path) -> int:
    """Block until this process holds the lock file ``path``; return its descriptor.

    Lock files are deleted on release, so after locking we check that ``path`` is still the
    file we locked (not one deleted meanwhile); if not, we lock the new one.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        if _still_there(path, fd):
            return fd
        os.close(fd)


def try_hold(path: Path) -> int | None:
    """The lock file ``path`` held without waiting, or None if someone holds it."""
    try:
        fd = os.open(path, os.O_RDONLY)  # flock needs no write access: works on read-only disks
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    if not _still_there(path, fd):
        os.close(fd)
        return None
    return fd


def _still_there(path: Path, fd: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def unheld(path: Path) -> bool:
    """Whether nobody holds the lock file ``path`` right now (False if it is gone)."""
    fd = try_hold(path)
    if fd is None:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    return True


def drop(path: Path, fd: int) -> None:
    """Delete a lock file this process holds, then release it."""
    with contextlib.suppress(OSError):
        os.unlink(path)
    os.close(fd)
