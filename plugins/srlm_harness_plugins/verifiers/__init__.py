"""Verifiers: one answer checker per task family, shared by RL rewards and evaluation.

``verify(family, response, gold, **info)`` decides whether a model response answers a
problem correctly; ``extract(family, response)`` returns the final answer it would compare.
The same functions back the lm-eval metrics of our tasks (see ``metrics/``), so "correct"
means the same thing in training and in scoring.

Families:

- ``gsm8k``: lm-eval's gsm8k ``flexible-extract`` reading (the last number) and its
  ``exact_match`` comparison (commas, ``$`` and one trailing ``.`` ignored), so the reward
  is 1 exactly when the reported gsm8k score counts the response correct.
- ``math``: math-verify's verdict (gold in ``$...$``, so ``\\$18.90`` reads as 18.90), without
  its wall-clock timeout, so the verdict does not depend on load; cached per pair.
- ``reasoning_gym``: the ``<answer>...</answer>`` content (else the last non-empty line),
  scored by the reasoning-gym generator's own ``score_answer``; ``info`` carries the entry's
  ``metadata`` (with ``source_dataset``) or ``task``.

Heavy libraries (math-verify, reasoning-gym) load on first use of their family only.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from srlm_harness.api import UserError

__all__ = ["FAMILIES", "Verdict", "extract", "verify"]


@dataclass(frozen=True)
class Verdict:
    """What a verifier decided: the answer it extracted (``None``: none found) and whether
    it is correct. ``score`` is the family's graded score (1.0/0.0 for exact families)."""

    extracted: str | None
    correct: bool
    score: float = 0.0


#: family name -> module implementing ``extract(response)`` and ``verify(response, gold, **info)``
FAMILIES: dict[str, str] = {
    "gsm8k": "srlm_harness_plugins.verifiers.gsm8k",
    "math": "srlm_harness_plugins.verifiers.math_equiv",
    "reasoning_gym": "srlm_harness_plugins.verifiers.reasoning_gym_score",
}


def _family(name: str) -> Any:
    if name not in FAMILIES:
        import difflib

        close = difflib.get_close_matches(name, list(FAMILIES), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(FAMILIES)}"
        raise UserError(f"unknown verifier family {name!r}", "verifier", hint)
    return importlib.import_module(FAMILIES[name])


def verify(family: str, response: str, gold: str, **info: Any) -> Verdict:
    """Judge ``response`` against the gold answer with the named family's verifier."""
    return _family(family).verify(response or "", str(gold), **info)


def extract(family: str, response: str) -> str | None:
    """The final answer the named family's verifier reads from ``response`` (or ``None``)."""
    return _family(family).extract(response or "")
