"""The ``math`` verifier as an ``evaluate`` metric: ``evaluate.load(metric_path("math"))``."""

from srlm_harness_plugins.verifiers.metric_support import verifier_metric

_DESCRIPTION = (
    "MATH accuracy: the \\boxed{} (or final) answer is equivalent to the gold "
    "answer according to math-verify."
)

Verifier = verifier_metric("math", _DESCRIPTION)
