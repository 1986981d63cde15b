"""MATH verifier: math-verify's verdict, the same whatever the machine's load.

math-verify parses both sides to SymPy and compares them symbolically, so ``\\frac{1}{2}``,
``0.5`` and ``\\dfrac12`` are the same answer. We call it as its documentation does for a
MATH answer (response parsed with its default extraction, gold wrapped in ``$...$``, which
also reads an escaped ``\\$18.90`` as 18.90) with one difference: its ``signal.alarm``
timeouts are off, because a wall-clock timeout makes a verdict depend on how busy the
machine is (a cold first comparison takes seconds under load). The work is bounded
deterministically instead: answers that would make SymPy build numbers of more than
``MAX_DIGITS`` digits (``9^{9^9}``, ``(10^{10})!``) are compared as written, not evaluated.
Verdicts are cached per (response, gold), so the reward and the score reuse one verdict.
"""

from __future__ import annotations

import logging
import math
import re
from functools import cache, lru_cache
from typing import Any

from srlm_harness_plugins.verifiers import Verdict

#: Largest number (in decimal digits) an answer may make SymPy compute; larger ones are
#: compared as strings. 10**5 digits is milliseconds of work; 1000000! (5.6e6) is seconds.
MAX_DIGITS = 100_000
#: An unescaped ``$``: the gold is already delimited LaTeX.
_DELIMITER = re.compile(r"(?<!\\)\$")


def gold_text(gold: str) -> str:
    """``gold`` as math-verify should read it: a bare MATH answer (``\\frac{14}{3}``,
    ``\\$18.90``) gets ``$...$``; boxed or already delimited text is left alone."""
    text = gold.strip()
    if "\\boxed" in text or _DELIMITER.search(text):
        return text
    return f"${text}$"


def digits(expr: Any) -> float:
    """An upper bound on the decimal digits of the numbers SymPy builds evaluating ``expr``
    (``inf`` when beyond any sensible bound), computed without evaluating anything."""
    import sympy

    if isinstance(expr, sympy.MatrixBase):
        return max((digits(e) for e in expr), default=0.0)
    if not isinstance(expr, sympy.Basic):
        return 0.0
    if isinstance(expr, sympy.Integer):
        return int(expr).bit_length() * math.log10(2) + 1
    if isinstance(expr, sympy.Rational):
        return max(digits(sympy.Integer(expr.p)), digits(sympy.Integer(expr.q)))
    if isinstance(expr, sympy.Pow):
        return digits(expr.base) * bound(expr.exp)
    if isinstance(expr, (sympy.factorial, sympy.binomial, sympy.factorial2, sympy.subfactorial)):
        n = bound(expr.args[0])
        return n * max(1.0, math.log10(n)) if n < math.inf else math.inf
    parts = [digits(arg) for arg in expr.args]
    return sum(parts) if isinstance(expr, sympy.Mul) else max(parts, default=0.0)


def bound(expr: Any) -> float:
    """An upper bound on ``|expr|`` as a float (``inf`` when too large to say)."""
    import sympy

    if isinstance(expr, sympy.Integer) and int(expr).bit_length() < 1000:
        return float(abs(int(expr)))
    size = digits(expr)
    return 10.0 ** (size + 1) if size < 300 else math.inf


def too_big(parsed: list[Any]) -> bool:
    return any(digits(item) > MAX_DIGITS for item in parsed)


class _TimeoutNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


@cache
def _quiet_timeout_notice() -> None:
    # math-verify warns once that nothing bounds the work without its timeout; here the
    # digit bound does, so the warning would only mislead users reading the logs.
    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).addFilter(_TimeoutNotice())


def _parse(text: str) -> list[Any]:
    from math_verify import parse

    _quiet_timeout_notice()
    # No wall-clock timeout: see the module docstring.
    return parse(text, parsing_timeout=None)


def extract(response: str) -> str | None:
    """The answer math-verify reads from ``response`` (its string form), or ``None``."""
    parsed = _parse(response)
    return str(parsed[-1]) if parsed else None


@lru_cache(maxsize=65536)
def verdict(response: str, gold: str) -> Verdict:
    """The cached verdict of ``response`` against ``gold`` (see the module docstring)."""
    from math_verify import verify as equivalent

    parsed = _parse(response)
    if not parsed:
        return Verdict(None, False, 0.0)
    expected = _parse(gold_text(gold))
    if too_big(parsed) or too_big(expected):
        # As written: math-verify's own last resort when SymPy cannot compare.
        written = str(parsed[-1]).strip()
        correct = bool(expected) and written != "" and written == str(expected[-1]).strip()
    else:
        correct = bool(equivalent(expected, parsed, timeout_seconds=None))
    return Verdict(str(parsed[-1]), correct, float(correct))


def verify(response: str, gold: str, **info: Any) -> Verdict:
    return verdict(response, gold)
