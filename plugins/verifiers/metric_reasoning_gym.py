"""The ``reasoning_gym`` verifier as an ``evaluate`` metric (see ``metric_support``)."""

import datasets
import evaluate

from srlm_harness_plugins.verifiers.metric_support import score_batch

_DESCRIPTION = (
    "reasoning-gym accuracy: the <answer> (or last line) scores 1.0 with the "
    "generator's own score_answer; metadata carries the entry as JSON."
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
        return score_batch("reasoning_gym", predictions, references, metadata)
