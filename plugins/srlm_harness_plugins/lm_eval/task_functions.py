"""Functions our task YAMLs name with ``!function``: scoring through the verifiers.

Each task family is scored by its verifier's ``evaluate`` metric module (loaded offline from
our package), the same ``verify`` the RL accuracy reward calls, so a response counts as
correct in evaluation exactly when it earns the reward in training.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any


@cache
def verifier_metric(family: str) -> Any:
    """The family's verifier as a loaded ``evaluate`` metric (in memory: no cache files)."""
    import evaluate

    from srlm_harness_plugins.verifiers.metric_support import metric_path

    return evaluate.load(metric_path(family), keep_in_memory=True)


def score(family: str, response: str, gold: str, info: dict[str, Any] | None = None) -> dict:
    metadata = [json.dumps(info)] if info else None
    result = verifier_metric(family).compute(
        predictions=[response], references=[gold], metadata=metadata
    )
    return {"acc": float(result["correct"][0]), "score": float(result["score"][0])}


def gsm8k_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    return {"acc": score("gsm8k", results[0], doc["answer"])["acc"]}


def math_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    return {"acc": score("math", results[0], doc["answer"])["acc"]}


def reasoning_gym_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    info = {"metadata": json.loads(doc["metadata"]), "task": doc["task"]}
    return score("reasoning_gym", results[0], doc["answer"], info)


def verifier_results(name: str) -> Any:
    """A ``process_results`` function scoring with the registered verifier ``name``: the
    response's verdict against the document's ``answer`` (``acc``, and the verifier's graded
    ``score``). A third-party task binds one in its own module and names it in its YAML::

        # my_plugin/scoring.py
        results = verifier_results("my_verifier")
        # task YAML: process_results: !function my_plugin.scoring.results
    """

    def results(doc: dict[str, Any], responses: list[str]) -> dict[str, float]:
        from srlm_harness_plugins.verifiers import verify

        verdict = verify(name, responses[0], str(doc["answer"]))
        return {"acc": float(verdict.correct), "score": float(verdict.score)}

    results.__name__ = f"{name}_results"
    return results
