"""reasoning-gym verifier: scored by the generator's own ``score_answer``.

Each reasoning-gym dataset knows how to grade its answers (numeric tolerance, set equality,
partial credit). ``info`` names the generator through the entry's ``metadata``
(``source_dataset``, as reasoning-gym writes it) or ``task``; the entry passed to the scorer
is rebuilt from ``gold`` and ``metadata``. A score of 1.0 counts as correct.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from srlm_harness.api import UserError
from srlm_harness_plugins.verifiers import Verdict

ANSWER_TAG = re.compile(r"<answer>\s?(.*?)\s?</answer>", re.DOTALL)


def extract(response: str) -> str | None:
    """The last ``<answer>...</answer>`` content, else the last non-empty line."""
    tagged = ANSWER_TAG.findall(response)
    if tagged:
        return tagged[-1].strip()
    lines = [line.strip() for line in response.strip().splitlines() if line.strip()]
    return lines[-1] if lines else None


@lru_cache(maxsize=64)
def scorer(task: str) -> Any:
    """The ``score_answer`` method of reasoning-gym generator ``task``."""
    import reasoning_gym

    try:
        return reasoning_gym.get_score_answer_fn(task)
    except ValueError as error:
        raise UserError(
            f"unknown reasoning-gym task {task!r}", "verifier reasoning_gym",
            "use a dataset name reasoning_gym.factory.DATASETS knows (e.g. gsm_symbolic)",
        ) from error


def task_of(info: dict[str, Any]) -> str:
    metadata = info.get("metadata") or {}
    task = info.get("task") or metadata.get("source_dataset")
    if not task:
        raise UserError(
            "a reasoning_gym verdict needs the generator name", "verifier reasoning_gym",
            "pass task=NAME or metadata with 'source_dataset'",
        )
    return str(task)


def verify(response: str, gold: str, **info: Any) -> Verdict:
    metadata = info.get("metadata") or {}
    entry = {"question": info.get("question", ""), "answer": gold, "metadata": metadata}
    extracted = extract(response)
    score = float(scorer(task_of(info))(extracted, entry)) if extracted is not None else 0.0
    return Verdict(extracted, score >= 1.0, score)
