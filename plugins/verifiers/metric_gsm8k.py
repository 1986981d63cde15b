"""The ``gsm8k`` verifier as an ``evaluate`` metric: ``evaluate.load(metric_path("gsm8k"))``."""

from srlm_harness_plugins.verifiers.metric_support import verifier_metric

_DESCRIPTION = (
    "GSM8K final-number accuracy: '#### N' (else the last number), compared "
    "numerically, ignoring commas, '$' and a trailing '.0'."
)

Verifier = verifier_metric("gsm8k", _DESCRIPTION)
