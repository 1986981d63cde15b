"""Fault injection: named points where a test can have the process killed (``kill -9``)
to prove that a crash at the worst moment leaves nothing half-written."""

from __future__ import annotations

import os
import signal

FAULT_ENV = "SRLM_HARNESS_FAULT"
_fault_hits: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Die here by SIGKILL when ``SRLM_HARNESS_FAULT`` is ``name`` (or ``name:N``: the N-th
    time this process gets here). Fault-injection tests crash at the worst moments with it:
    a checkpoint half saved, a finished build not yet renamed, a sample log half copied."""
    wanted = os.environ.get(FAULT_ENV)
    if not wanted or wanted.split(":")[0] != name:
        return
    _fault_hits[name] = _fault_hits.get(name, 0) + 1
    nth = wanted.partition(":")[2]
    if _fault_hits[name] == (int(nth) if nth else 1):
        os.kill(os.getpid(), signal.SIGKILL)
