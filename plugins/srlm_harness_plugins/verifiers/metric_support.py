"""Shared pieces of the verifier ``evaluate`` metric modules (``metric_*.py``).

Each family has its own metric module so ``evaluate.load(metric_path("gsm8k"))`` works
offline from the installed package; they all score through :func:`verify`, the same call
the RL rewards make.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from srlm_harness.api import UserError
from srlm_harness_plugins.verifiers import FAMILIES, verify

METRIC_DIR = Path(__file__).resolve().parent


def metric_path(family: str) -> str:
    """The file ``evaluate.load`` takes for ``family``'s metric module."""
    if family not in FAMILIES:
        verify(family, "", "")  # raises the unknown-verifier UserError with suggestions
        raise UserError(f"verifier {family!r} has no evaluate metric module", "verifier",
                        f"only the built-in ones have: {', '.join(FAMILIES)}")
    return str(METRIC_DIR / f"metric_{family}.py")


def score_batch(
    family: str,
    predictions: list[str],
    references: list[str],
    metadata: list[str | None] | None = None,
) -> dict[str, Any]:
    """Verdicts for a batch: ``accuracy`` (mean), per-sample ``correct`` and ``extracted``.

    ``metadata`` entries are JSON strings of the keyword info ``verify`` takes (e.g. a
    reasoning-gym entry's ``{"metadata": {...}}``).
    """
    infos = [json.loads(m) if m else {} for m in (metadata or [None] * len(predictions))]
    verdicts = [
        verify(family, pred, gold, **info)
        for pred, gold, info in zip(predictions, references, infos, strict=True)
    ]
    correct = [v.correct for v in verdicts]
    return {
        "accuracy": sum(correct) / len(correct) if correct else 0.0,
        "correct": correct,
        "score": [v.score for v in verdicts],
        "extracted": [v.extracted for v in verdicts],
    }


def verifier_metric(family: str, description: str) -> type:
    """The ``evaluate.Metric`` class of ``family``: each ``metric_*.py`` module binds one, so
    ``evaluate.load`` finds it there."""
    import datasets
    import evaluate

    class Verifier(evaluate.Metric):
        def _info(self) -> evaluate.MetricInfo:
            return evaluate.MetricInfo(
                description=description,
                citation="",
                inputs_description="predictions: model responses; references: gold answers; "
                "metadata (optional keyword): per-sample JSON of extra verifier info",
                features=datasets.Features(
                    {"predictions": datasets.Value("string"),
                     "references": datasets.Value("string")}
                ),
            )

        def _compute(self, predictions, references, metadata=None):
            return score_batch(family, predictions, references, metadata)

    return Verifier

