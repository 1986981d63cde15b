"""Experiment tracking through the training libraries' own integrations (``report_to``).

``srlm-harness run --report-to tensorboard`` (or ``SRLM_HARNESS_REPORT_TO=tensorboard,wandb``)
names the trackers; every training stage then reports to them with the run id as the run
name and the stage as the group. TensorBoard writes into the run's folder
(``<store>/runs/<run_id>/tensorboard/<stage>``) unless ``TENSORBOARD_LOGGING_DIR`` is set, so
``tensorboard --logdir <store>/runs/<run_id>/tensorboard`` works offline. Tracking never
changes a stage's cache key: it records how a result was made, not what it is.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from srlm_harness.errors import UserError

ENV = "SRLM_HARNESS_REPORT_TO"
PROJECT = "srlm-harness"
#: transformers' integration name -> the package that must be installed for it.
TRACKERS = {
    "tensorboard": "tensorboard",
    "wandb": "wandb",
    "mlflow": "mlflow",
    "trackio": "trackio",
    "comet_ml": "comet_ml",
    "clearml": "clearml",
    "dvclive": "dvclive",
    "swanlab": "swanlab",
}


def requested() -> list[str]:
    return [n.strip() for n in os.environ.get(ENV, "").split(",") if n.strip()]


def check(names: list[str]) -> list[str]:
    """``names`` if every tracker is known and installed, else a UserError saying which."""
    for name in names:
        if name not in TRACKERS:
            raise UserError(
                f"unknown tracker {name!r}", "--report-to", f"known: {', '.join(TRACKERS)}"
            )
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise UserError(
                f"tracker {name!r} needs the {TRACKERS[name]!r} package, which is not installed",
                "--report-to",
                f"install it (pip install {TRACKERS[name]}) or leave --report-to {name} out",
            )
    return names


def trainer_settings(stage_label: str) -> dict[str, Any]:
    """``report_to``/``run_name``/``project`` for a trainer config inside a stage."""
    names = requested()
    if not names:
        return {"report_to": []}
    run_id = os.environ.get("SRLM_HARNESS_RUN_ID", "")
    return {"report_to": names, "run_name": run_id or stage_label, "project": PROJECT}


@contextmanager
def stage_environment(run_id: str, run_dir: Path, stage_label: str) -> Iterator[None]:
    """The variables the integrations read while one stage trains (and that a launcher's
    worker processes inherit): run id, group, TensorBoard folder in the run's folder."""
    values = {"SRLM_HARNESS_RUN_ID": run_id, "WANDB_RUN_GROUP": stage_label}
    if "tensorboard" in requested() and "TENSORBOARD_LOGGING_DIR" not in os.environ:
        folder = re.sub(r"[^A-Za-z0-9._-]+", "-", stage_label)
        values["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tensorboard" / folder)
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
