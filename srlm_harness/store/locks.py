"""File locks the store is built on, through ``filelock``: on Unix a ``flock`` on a lock
file, which the kernel releases when its holder dies (even by ``kill -9``) and which every
process on the machine sees, whatever container (PID namespace) it runs in.

Lock files are deleted on release (:func:`drop`), so they do not pile up; ``filelock``
notices when the file it locked was deleted meanwhile and locks the new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from filelock import FileLock, Timeout


def _lock(path: Path) -> FileLock:
    # Not thread-local: a build begun in one thread may be committed from another.
    return FileLock(path, thread_local=False)


def hold(path: Path) -> FileLock:
    """Block until this process holds the lock file ``path``; return the held lock."""
    lock = _lock(path)
    lock.acquire()
    return lock


def try_hold(path: Path) -> FileLock | None:
    """The lock file ``path`` held without waiting, or None if someone holds it (or it is
    gone: a lock file is only ever taken over, never created here)."""
    if not path.is_file():
        return None
    lock = _lock(path)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        return None
    return lock


def unheld(path: Path) -> bool:
    """Whether nobody holds the lock file ``path`` right now (False if it is gone).

    A probe, not a lock, so plain ``flock``: it must work on a store mounted read-only
    (``store status`` on someone else's store) and must not create the file, and
    ``filelock`` opens lock files for writing and creates them.
    """
    try:
        fd = os.open(path, os.O_RDONLY)  # flock needs no write access
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing drops the probe's lock, if it got one
    return True


def drop(path: Path, lock: FileLock) -> None:
    """Delete a lock file this process holds, then release it (in that order: a waiter
    that gets the old file then sees it deleted and locks the new one)."""
    with contextlib.suppress(OSError):
        os.unlink(path)
    lock.release()
