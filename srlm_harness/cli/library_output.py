"""Keep the libraries' own output (tqdm bars, warnings, logging, ``fatal: not a git
repository`` from lm-eval's git call) out of the person's view and in a log file.

While a run executes, stderr goes to the log: at the file-descriptor level when stderr is
the process's real stderr (so subprocesses and native code are captured too), else at the
Python level. The harness's own messages keep going to the original stderr. ``--verbose``
leaves everything as it is.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from srlm_harness.cli.console import err_console


def _real_stderr_fd() -> int | None:
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    return fd if fd == 2 else None


@contextmanager
def library_output_to(log: Path, verbose: bool = False) -> Iterator[int | None]:
    """Send stderr to ``log`` inside the block; yields the fd on which the person's stderr
    is still reachable (None when it was not redirected at the fd level)."""
    if verbose:
        yield None
        return
    from srlm_harness.store.store import writing

    with writing(log):  # a read-only or full store: one line naming it
        log.parent.mkdir(parents=True, exist_ok=True)
        handle = log.open("a", encoding="utf-8", buffering=1)
    previous_stderr: Any = sys.stderr
    previous_file = err_console._file  # None: follow sys.stderr, as before
    fd = _real_stderr_fd()
    saved_fd: int | None = None
    person: TextIO | None = None
    try:
        previous_stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass
    if fd is not None:
        saved_fd = os.dup(fd)
        person = os.fdopen(os.dup(saved_fd), "w", encoding="utf-8", buffering=1)
        os.dup2(handle.fileno(), fd)
    err_console.file = person or previous_stderr
    sys.stderr = handle
    try:
        yield saved_fd
    finally:
        sys.stderr = previous_stderr
        err_console._file = previous_file  # None again: follow sys.stderr
        handle.flush()
        if saved_fd is not None and fd is not None:
            os.dup2(saved_fd, fd)
            os.close(saved_fd)
        if person is not None:
            person.close()
        handle.close()
        _drop_if_empty(log)


def _drop_if_empty(log: Path) -> None:
    """An empty log is noise, and a run refused before it starts must leave nothing behind."""
    try:
        if log.stat().st_size == 0:
            log.unlink()
            log.parent.rmdir()  # only when no other log is there
    except OSError:
        pass
