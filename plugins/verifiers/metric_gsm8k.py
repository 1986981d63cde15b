"""The ``gsm8k`` verifier as an ``evaluate`` metric: ``evaluate.load(metric_path("gsm8k"))``."""

import datasets
import evaluate

from srlm_harness_plugins.verifiers.metric_support import score_batch

_DESCRIPTION = (
    "GSM8K final-number accuracy: '#### N' (else the last number), compared "
    "numerically, ignoring commas, '$' and a trailing '.0'."
)


class Verifier(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description="predictions: model responses; references: gold answers; "
            "metadata (optional keyword): per-sample JSON of extra verifier info",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, metadata=None):
        return score_batch("gsm8k", predictions, references, metadata)
