"""Ctrl-C and SIGTERM during a run: stop within seconds, say what was kept, exit 130.

The first signal raises ``KeyboardInterrupt`` in the main thread, so the run unwinds and
removes its temporary outputs. Two things can keep that from happening: the main thread may
sit in native code (a long generation or tokenisation) where Python never gets to run the
handler, and the exception may land in a ``__del__``, where Python prints "Exception
ignored" and carries on. So the signal also wakes a watchdog thread (through
``signal.set_wakeup_fd``, which the C-level handler writes to even while the main thread is
blocked); if the run has not finished unwinding ``GRACE_SECONDS`` later, or a second signal
arrives, the watchdog prints the message and ends the process with 130. Nothing is lost:
finished stages are committed, checkpoints are in the store's work folder, and the next run
cleans the temporary folders.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

GRACE_SECONDS = 5.0
EXIT_CODE = 130


def _write(fd: int, text: str) -> None:
    try:
        os.write(fd, text.encode("utf-8", "replace"))
    except OSError:
        pass


class _Watchdog:
    """A thread woken by every signal (through ``signal.set_wakeup_fd``) that ends the
    process with ``EXIT_CODE`` if the run has not unwound ``GRACE_SECONDS`` after a stop
    signal, or at once on a second one."""

    def __init__(self, message: Callable[[], str], fd: int | None) -> None:
        self.message, self.fd = message, fd
        self.finished = threading.Event()
        self.reader, self.writer = socket.socketpair()
        self.writer.setblocking(False)
        self.thread = threading.Thread(
            target=self.watch, name="srlm-interrupt-watchdog", daemon=True
        )

    def stop_signal(self, timeout: float | None) -> bool:
        """Wait for SIGINT or SIGTERM (the wakeup fd carries every Python-handled signal)."""
        self.reader.settimeout(timeout)
        while True:
            try:
                byte = self.reader.recv(1)
            except (TimeoutError, OSError):
                return False
            if not byte:
                return False
            if byte[0] in (signal.SIGINT, signal.SIGTERM):
                return True

    def watch(self) -> None:
        if not self.stop_signal(None) or self.finished.is_set():
            return
        self.stop_signal(GRACE_SECONDS)  # returns early on a second Ctrl-C: leave now
        if self.finished.is_set():
            return
        if self.fd is not None:
            _write(self.fd, f"\nerror: {self.message()}\n")
        os._exit(EXIT_CODE)

    def close(self) -> None:
        self.finished.set()
        self.writer.close()  # wakes the watchdog, which sees ``finished`` and returns
        self.thread.join(timeout=1)
        self.reader.close()


@contextmanager
def stop_on_signal(message: Callable[[], str], stderr_fd: int | None = None) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM stop the process within ``GRACE_SECONDS``;
    ``message()`` is what the watchdog prints if it has to end the process itself.
    Outside the main thread this does nothing (signals are only delivered there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fd = sys.__stderr__.fileno() if stderr_fd is None and sys.__stderr__ else stderr_fd
    watchdog = _Watchdog(message, fd)
    received: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    previous_int = signal.signal(signal.SIGINT, handler)
    previous_term = signal.signal(signal.SIGTERM, handler)
    previous_fd = signal.set_wakeup_fd(watchdog.writer.fileno(), warn_on_full_buffer=False)
    watchdog.thread.start()
    try:
        yield
    except Exception as exc:
        # The interrupt can land mid-update in a library (a progress display popping its
        # stack, a generator half-advanced) and surface as that library's error instead:
        # after a signal, any failure is the interrupt, and is reported as one.
        if received:
            raise KeyboardInterrupt(f"signal {received[0]}") from exc
        raise
    finally:
        watchdog.finished.set()
        signal.set_wakeup_fd(previous_fd)
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term)
        watchdog.close()
