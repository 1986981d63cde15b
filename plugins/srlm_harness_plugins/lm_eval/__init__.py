"""lm-evaluation-harness as the harness's evaluator, plus our task pack.

Registers the ``lm-eval`` evaluator and these tasks (YAML in ``tasks/``):

- ``gsm8k``: lm-eval's own gsm8k (5-shot, same prompts, filters and metrics), reading
  ``$SRLM_HARNESS_DATA_DIR/gsm8k/*.jsonl`` when present, the Hub otherwise.
- ``gsm8k_cot_chat``: zero-shot chain of thought with the chat template, gsm8k verifier.
- ``math500``: MATH-500, zero-shot with the chat template, math-verify equivalence.
- ``rg_gsm_symbolic``, ``rg_basic_arithmetic``, ``rg_chain_sum``: reasoning-gym problems
  from a held-out seed, scored by reasoning-gym's own scorer.

Any lm-eval built-in task name works too. Imports here stay cheap: lm-eval, torch and
datasets load only when an evaluation runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from srlm_harness.api import Evaluator, Task
from srlm_harness.api.hookspecs import hookimpl

TASKS_DIR = Path(__file__).resolve().parent / "tasks"

#: name -> (description, verifier family)
TASKS = {
    "gsm8k": ("GSM8K test, lm-eval's gsm8k (5-shot; exact_match, flexible-extract)", "gsm8k"),
    "gsm8k_cot_chat": ("GSM8K test, zero-shot chat chain of thought (gsm8k verifier)", "gsm8k"),
    "math500": ("MATH-500, zero-shot chat, \\boxed{} answer checked by math-verify", "math"),
    "rg_gsm_symbolic": ("reasoning-gym gsm_symbolic, 500 held-out problems", "reasoning_gym"),
    "rg_basic_arithmetic": ("reasoning-gym basic_arithmetic, 500 held-out problems",
                            "reasoning_gym"),
    "rg_chain_sum": ("reasoning-gym chain_sum, 500 held-out problems", "reasoning_gym"),
    "rg_leg_counting": ("reasoning-gym leg_counting word problems (small farms), 500 held-out",
                        "reasoning_gym"),
}


def _evaluate(request: Any) -> Any:
    from srlm_harness_plugins.lm_eval.evaluator import evaluate

    return evaluate(request)


def _fingerprint(tasks: list[Task], options: Any) -> str:
    from srlm_harness_plugins.lm_eval.evaluator import fingerprint

    return fingerprint(tasks, options)


def _check_tasks(names: list[str], registered: list[str], where: str) -> None:
    from srlm_harness_plugins.lm_eval.task_index import check_tasks

    check_tasks(names, registered, where)


@hookimpl
def srlm_register_evaluators(register: Any) -> None:
    register(Evaluator(
        name="lm-eval",
        evaluate=_evaluate,
        fingerprint=_fingerprint,
        description="lm-evaluation-harness (HF backend; vLLM with options.backend: vllm)",
        check_tasks=_check_tasks,
        default=True,
        accepts_unregistered_tasks=True,
    ))


@hookimpl
def srlm_libraries() -> list[str]:
    return ["lm_eval", "evaluate", "torch", "transformers", "datasets"]


@hookimpl
def srlm_register_tasks(register: Any) -> None:
    for name, (description, verifier) in TASKS.items():
        register(Task(name, description, "lm-eval", TASKS_DIR, verifier))
