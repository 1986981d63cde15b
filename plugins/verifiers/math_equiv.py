"""MATH verifier: the boxed (or final) answer, compared with math-verify.

math-verify parses both sides to SymPy and compares them symbolically, so ``\\frac{1}{2}``,
``0.5`` and ``\\dfrac12`` are the same answer. Its timeouts use ``signal.alarm``, which only
works in the main thread; elsewhere (e.g. reward functions called from worker threads) we
parse without a timeout rather than fail.
"""

from __future__ import annotations

import threading
from typing import Any

from srlm_harness_plugins.verifiers import Verdict


def _timeout() -> int | None:
    return 5 if threading.current_thread() is threading.main_thread() else None


def _parse_response(response: str) -> list[Any]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    # \boxed{} first: MATH solutions and chat CoT prompts put the final answer there.
    configs = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    return parse(response, extraction_config=configs, parsing_timeout=_timeout())


def _parse_gold(gold: str) -> list[Any]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    text = gold.strip()
    # A bare MATH answer (``\frac{14}{3}``) is LaTeX without delimiters; give it some.
    if "\\boxed" not in text and "$" not in text:
        text = f"${text}$"
    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    return parse(text, extraction_config=configs, parsing_timeout=_timeout())


def extract(response: str) -> str | None:
    """The answer math-verify reads from ``response`` (its string form), or ``None``."""
    parsed = _parse_response(response)
    return str(parsed[-1]) if parsed else None


def verify(response: str, gold: str, **info: Any) -> Verdict:
    from math_verify import verify as equivalent

    parsed = _parse_response(response)
    if not parsed:
        return Verdict(None, False, 0.0)
    timeout = _timeout()
    correct = bool(equivalent(_parse_gold(gold), parsed, timeout_seconds=timeout))
    return Verdict(str(parsed[-1]), correct, float(correct))
