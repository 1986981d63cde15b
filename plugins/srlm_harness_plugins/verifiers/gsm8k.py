"""GSM8K verifier: lm-eval's ``gsm8k`` flexible-extract reading and exact-match comparison.

The harness reports lm-eval's ``exact_match,flexible-extract`` for gsm8k, so the reward and
the ``gsm8k_cot_chat`` score read a response the same way: the last number-like span (the
flexible-extract regex, last match), compared with the gold answer as lm-eval's
``exact_match`` does after the task's ``regexes_to_ignore`` (commas, ``$``, everything up to
``#### ``, one trailing ``.``) and lower-casing. So ``$1,000.`` equals ``1000`` but ``18.00``
does not equal ``18``, and in ``#### 18 ... 36`` the answer is 36, exactly as in the score.
lm-eval's ``strict-match`` (the first ``#### N``) stays in the evaluation details only.

The patterns are lm-eval's gsm8k.yaml values; a test checks them against the installed
lm-eval and compares verdicts with lm-eval's own filters and metric over tricky responses.
"""

from __future__ import annotations

import re
from typing import Any

from srlm_harness_plugins.verifiers import Verdict

#: lm-eval gsm8k.yaml: the flexible-extract filter (last match, first non-empty group).
FLEXIBLE = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"
#: lm-eval gsm8k.yaml: the strict-match filter (first match), reported alongside.
STRICT = r"#### (\-?[0-9\.\,]+)"
#: lm-eval gsm8k.yaml: exact_match's regexes_to_ignore, applied in this order to both sides.
IGNORED = (",", "\\$", "(?s).*#### ", "\\.$")

_FLEXIBLE = re.compile(FLEXIBLE)
_IGNORED = tuple(re.compile(pattern) for pattern in IGNORED)


def extract(response: str) -> str | None:
    """The last number-like span of ``response`` (lm-eval's flexible-extract), or ``None``
    where lm-eval's filter yields ``[invalid]``."""
    spans = _FLEXIBLE.findall(response)
    if not spans:
        return None
    last = next((group for group in spans[-1] if group), "")
    return last.strip() or None


def normalize(text: str) -> str:
    """``text`` as lm-eval's gsm8k exact_match compares it (ignored spans removed, lower)."""
    for pattern in _IGNORED:
        text = pattern.sub("", text)
    return text.lower()


def same_answer(extracted: str, gold: str) -> bool:
    return normalize(extracted) == normalize(gold)


def verify(response: str, gold: str, **info: Any) -> Verdict:
    extracted = extract(response)
    correct = extracted is not None and same_answer(extracted, gold)
    return Verdict(extracted, correct, float(correct))
