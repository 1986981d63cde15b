"""The ``reasoning_gym`` verifier as an ``evaluate`` metric (see ``metric_support``)."""

from srlm_harness_plugins.verifiers.metric_support import verifier_metric

_DESCRIPTION = (
    "reasoning-gym accuracy: the <answer> (or last line) scores 1.0 with the "
    "generator's own score_answer; metadata carries the entry as JSON."
)

Verifier = verifier_metric("reasoning_gym", _DESCRIPTION)
