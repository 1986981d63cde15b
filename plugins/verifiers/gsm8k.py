"""GSM8K verifier: the final number, extracted the way lm-eval's ``gsm8k`` task does.

lm-eval scores two filters: ``strict-match`` (the first ``#### N``) and ``flexible-extract``
(the last number-like span). A response with ``#### N`` is read strictly, otherwise the
last number is taken, so a model trained on GSM8K's format and an instruct model that just
states its answer are both read fairly. Numbers are compared as decimals after dropping
commas, ``$`` and a trailing ``.``, so ``$1,000.00`` equals ``1000``.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from srlm_harness_plugins.verifiers import Verdict

# The same patterns as lm-eval's gsm8k task YAML (strict-match / flexible-extract filters).
STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")


def extract(response: str) -> str | None:
    """``#### N`` if present (first one), else the last number-like span, else ``None``."""
    strict = STRICT.findall(response)
    if strict:
        return strict[0].strip()
    spans = FLEXIBLE.findall(response)
    if not spans:
        return None
    last = next((group for group in spans[-1] if group), "")
    return last.strip() or None


def gold_answer(gold: str) -> str:
    """The final answer of a GSM8K gold field (``...#### 72`` or just ``72``)."""
    return gold.split("####")[-1].strip()


def normalize(text: str) -> str:
    """Drop what lm-eval's gsm8k exact_match ignores: commas, ``$``, a trailing period."""
    return text.replace(",", "").replace("$", "").strip().rstrip(".").strip()


def as_number(text: str) -> Decimal | None:
    try:
        value = Decimal(normalize(text))
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def same_answer(extracted: str, gold: str) -> bool:
    a, b = as_number(extracted), as_number(gold)
    if a is not None and b is not None:
        return a == b
    return normalize(extracted).lower() == normalize(gold).lower()


def verify(response: str, gold: str, **info: Any) -> Verdict:
    extracted = extract(response)
    correct = extracted is not None and same_answer(extracted, gold_answer(gold))
    return Verdict(extracted, correct, float(correct))
