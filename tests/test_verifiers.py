"""The verifiers on real answer strings, and as offline ``evaluate`` metric modules."""

from __future__ import annotations

import json

import pytest

from srlm_harness.api import UserError
from srlm_harness_plugins.verifiers import Verdict, extract, verify


@pytest.mark.parametrize(
    ("response", "gold", "extracted", "correct"),
    [
        ("She makes 9 * 2 = $18 every day.\n#### 18", "... = 18\n#### 18", "18", True),
        ("The total is $1,200.", "#### 1200", "$1,200.", True),
        ("So the answer is 70,000.00", "70000", "70,000.00", True),
        ("First 3 + 4 = 7, then 7 * 2 = 14.", "#### 14", "14.", True),  # as lm-eval reads it
        ("#### 5\nbut really 6", "5", "5", True),  # '#### N' wins over the last number
        ("I think it is -3.", "-3", "-3.", True),
        ("The answer is 17.", "#### 18", "17.", False),
        ("I don't know.", "18", None, False),
    ],
)
def test_gsm8k_reads_the_final_number(response, gold, extracted, correct) -> None:
    assert verify("gsm8k", response, gold) == Verdict(extracted, correct, float(correct))
    assert extract("gsm8k", response) == extracted


@pytest.mark.parametrize(
    ("response", "gold", "correct"),
    [
        ("So the result is $\\boxed{\\frac{1}{2}}$.", "0.5", True),
        ("Therefore $x = \\boxed{\\dfrac{14}{3}}$", "\\frac{14}{3}", True),
        ("It is \\boxed{(3, \\frac{\\pi}{2})}.", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
        ("We get \\boxed{2\\sqrt{2}}", "\\sqrt{8}", True),
        ("Final answer: \\boxed{10\\%}", "\\frac{1}{10}", True),
        ("The answer is \\boxed{3}", "\\frac{14}{3}", False),
        ("no math here", "1", False),
    ],
)
def test_math_compares_answers_with_math_verify(response, gold, correct) -> None:
    verdict = verify("math", response, gold)
    assert verdict.correct is correct
    assert (verdict.extracted is not None) or not correct


def test_reasoning_gym_scores_with_the_generators_own_scorer() -> None:
    import reasoning_gym

    for task in ("basic_arithmetic", "gsm_symbolic", "chain_sum"):
        entry = reasoning_gym.create_dataset(task, seed=7, size=2)[0]
        right = f"Let me think.\n<answer>{entry['answer']}</answer>"
        assert verify("reasoning_gym", right, entry["answer"], metadata=entry["metadata"]).correct
        # Without tags the last line is the answer; the task can be named directly.
        last_line = f"working...\n{entry['answer']}"
        assert verify("reasoning_gym", last_line, entry["answer"], task=task).correct
        wrong = verify("reasoning_gym", "<answer>nonsense</answer>", entry["answer"], task=task)
        assert wrong == Verdict("nonsense", False, wrong.score) and wrong.score < 1.0


def test_unknown_family_and_missing_task_are_user_errors() -> None:
    with pytest.raises(UserError, match="did you mean 'gsm8k'"):
        verify("gsm8", "1", "1")
    with pytest.raises(UserError, match="generator name"):
        verify("reasoning_gym", "<answer>1</answer>", "1")


def test_metric_modules_load_offline_and_agree_with_verify() -> None:
    import evaluate

    from srlm_harness_plugins.verifiers.metric_support import metric_path

    gsm8k = evaluate.load(metric_path("gsm8k"), keep_in_memory=True)
    result = gsm8k.compute(predictions=["#### 1,000", "it is 12", "no"],
                           references=["1000", "#### 13", "5"])
    assert result["correct"] == [True, False, False]
    assert result["accuracy"] == pytest.approx(1 / 3)

    math = evaluate.load(metric_path("math"), keep_in_memory=True)
    assert math.compute(predictions=["\\boxed{\\frac{1}{2}}"], references=["0.5"])["accuracy"] == 1

    import reasoning_gym

    entry = reasoning_gym.create_dataset("basic_arithmetic", seed=3, size=1)[0]
    rg = evaluate.load(metric_path("reasoning_gym"), keep_in_memory=True)
    info = json.dumps({"metadata": entry["metadata"]}, default=str)
    result = rg.compute(predictions=[f"<answer>{entry['answer']}</answer>", "<answer>x</answer>"],
                        references=[entry["answer"]] * 2, metadata=[info, info])
    assert result["correct"] == [True, False]
