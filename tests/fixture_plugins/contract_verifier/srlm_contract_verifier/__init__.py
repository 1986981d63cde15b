"""A third-party plugin that brings its own verifier and a task scored by it.

The ``lenient`` verifier accepts every response (so a random tiny model scores 1.0, where
the built-in gsm8k verifier would give ~0) and notes each gold answer it judged in the file
``$SRLM_CONTRACT_VERIFIER_LOG``, so a test sees who called it: the task's evaluation, or the
``accuracy`` reward of a GRPO stage on records whose ``verifier`` is ``lenient``.
"""

import os
from pathlib import Path

from srlm_harness.api import Task, Verdict, Verifier, hookimpl

__version__ = "1.0"

HERE = Path(__file__).resolve().parent


def lenient(response: str, gold: str, **info: object) -> Verdict:
    log = os.environ.get("SRLM_CONTRACT_VERIFIER_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{gold}\n")
    return Verdict(response.strip() or None, True, 1.0)


@hookimpl
def srlm_register_verifiers(register):  # type: ignore[no-untyped-def]
    register(Verifier("lenient", lenient, description="every response is correct",
                      files=(Path(__file__),)))


@hookimpl
def srlm_register_tasks(register):  # type: ignore[no-untyped-def]
    # No evaluator named: the registered default evaluator runs it.
    register(Task("lenient_add", "two additions, judged by the lenient verifier",
                  include_path=HERE / "tasks", verifier="lenient"))
