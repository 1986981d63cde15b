"""The remote-code policy: a model directory's own Python (``auto_map`` in its config.json,
loaded by ``trust_remote_code=True``) runs only when the pipeline spec says so at its top
level (``trust_remote_code: true``). The runner prints that choice and records it in the
run manifest and the leaderboard entry. Stages and evaluators ask :func:`allowed`.

The setting travels in an environment variable for the duration of a run, so that stages
launched in other processes see the same answer.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from srlm_harness.errors import UserError

ENV = "SRLM_HARNESS_TRUST_REMOTE_CODE"
HINT = "if you trust that code, set 'trust_remote_code: true' at the top of the pipeline spec"


def allowed() -> bool:
    """Whether the running pipeline opted in to model-provided code."""
    return os.environ.get(ENV) == "1"


@contextlib.contextmanager
def allow(trust: bool) -> Iterator[None]:
    """Set the policy for the duration of a run."""
    previous = os.environ.get(ENV)
    os.environ[ENV] = "1" if trust else "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous


def needs_remote_code(model_dir: Path | str) -> bool:
    """Whether a local model directory ships its own modelling code (``auto_map``)."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and bool(config.get("auto_map"))


def check_model(model_dir: Path | str) -> None:
    """A UserError if the model needs its own code and the pipeline did not opt in."""
    if needs_remote_code(model_dir) and not allowed():
        raise UserError(
            "this model needs its own Python code (auto_map in config.json), which is off "
            "by default",
            str(Path(model_dir) / "config.json"),
            HINT,
        )
