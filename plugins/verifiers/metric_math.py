"""The ``math`` verifier as an ``evaluate`` metric: ``evaluate.load(metric_path("math"))``."""

import datasets
import evaluate

from srlm_harness_plugins.verifiers.metric_support import score_batch

_DESCRIPTION = (
    "MATH accuracy: the \\boxed{} (or final) answer is equivalent to the gold "
    "answer according to math-verify."
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
        return score_batch("math", predictions, references, metadata)
