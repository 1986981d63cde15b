"""The ``gsm8k`` verifier as an ``evaluate`` metric: ``evaluate.load(metric_path("gsm8k"))``."""

from srlm_harness_plugins.verifiers.metric_support import verifier_metric

_DESCRIPTION = (
    "GSM8K final-number accuracy as lm-eval's gsm8k flexible-extract exact_match: the "
    "last number, compared as text ignoring commas, '$' and one trailing '.'."
)

Verifier = verifier_metric("gsm8k", _DESCRIPTION)
