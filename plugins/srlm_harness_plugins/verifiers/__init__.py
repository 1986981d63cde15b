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
from pathlib import Path
from typing import Any

from srlm_harness.api import UserError, Verdict, Verifier, did_you_mean, find_verifier, hookimpl

__all__ = ["FAMILIES", "Verdict", "check_verifier", "extract", "verify"]

HERE = Path(__file__).resolve().parent

#: Built-in family -> (module implementing ``extract(response)`` and
#: ``verify(response, gold, **info)``, description).
FAMILIES: dict[str, tuple[str, str]] = {
    "gsm8k": ("srlm_harness_plugins.verifiers.gsm8k",
              "last number, compared as lm-eval's gsm8k exact_match"),
    "math": ("srlm_harness_plugins.verifiers.math_equiv",
             "math-verify equivalence of the final (boxed) answer"),
    "reasoning_gym": ("srlm_harness_plugins.verifiers.reasoning_gym_score",
                      "reasoning-gym's own score_answer for the entry's generator"),
}


def _builtin(name: str) -> Verifier:
    """The registered form of a built-in family: its module loads on first use only."""
    module, description = FAMILIES[name]

    def check(response: str, gold: str, **info: Any) -> Verdict:
        return importlib.import_module(module).verify(response, gold, **info)

    def read(response: str) -> str | None:
        return importlib.import_module(module).extract(response)

    files = (HERE / "__init__.py", HERE / f"{module.rsplit('.', 1)[1]}.py")
    return Verifier(name, check, read, description, files)


def _family(name: str) -> Verifier:
    # Built-in families work without a registry (sampling code, metric modules); any other
    # name is a registered verifier of some plugin.
    if name in FAMILIES:
        return _builtin(name)
    try:
        return find_verifier(name)
    except UserError as exc:
        if not (exc.hint or "").startswith("did you mean"):
            exc.hint = did_you_mean(name, FAMILIES, cutoff=0.5, otherwise=exc.hint)
        raise


def check_verifier(name: str, where: str) -> None:
    """Raise UserError (with close matches, naming ``where``) unless ``name`` is a
    built-in or registered verifier."""
    try:
        _family(name)
    except UserError as exc:
        exc.where = where
        raise


def verify(family: str, response: str, gold: str, **info: Any) -> Verdict:
    """Judge ``response`` against the gold answer with the named verifier."""
    return _family(family).verify(response or "", str(gold), **info)


def extract(family: str, response: str) -> str | None:
    """The final answer the named verifier reads from ``response`` (or ``None``)."""
    reader = _family(family).extract
    return reader(response or "") if reader is not None else None


@hookimpl
def srlm_register_verifiers(register: Any) -> None:
    for name in FAMILIES:
        register(_builtin(name))


@hookimpl
def srlm_libraries() -> list[str]:
    return ["math-verify", "reasoning_gym"]
