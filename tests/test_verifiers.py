"""The verifiers on real answer strings, and as offline ``evaluate`` metric modules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from srlm_harness.api import UserError
from srlm_harness_plugins.verifiers import Verdict, extract, verify


@pytest.fixture
def rewards_accuracy():  # type: ignore[no-untyped-def]
    """The built-in ``accuracy`` reward, as an RL stage calls it."""
    from srlm_harness_plugins.rewards import accuracy

    return accuracy


@pytest.mark.parametrize(
    ("response", "gold", "extracted", "correct"),
    [
        ("She makes 9 * 2 = $18 every day.\n#### 18", "... = 18\n#### 18", "18", True),
        ("The total is $1,200.", "#### 1200", "$1,200.", True),
        ("So the answer is 70,000.00", "70000", "70,000.00", False),  # as lm-eval: not 70000
        ("First 3 + 4 = 7, then 7 * 2 = 14.", "#### 14", "14.", True),
        ("#### 5\nbut really 6", "5", "6", False),  # the last number, as flexible-extract
        ("I think it is -3.", "-3", "-3.", True),
        ("The answer is 17.", "#### 18", "17.", False),
        ("I don't know.", "18", None, False),
    ],
)
def test_gsm8k_reads_the_final_number(response, gold, extracted, correct) -> None:
    assert verify("gsm8k", response, gold) == Verdict(extracted, correct, float(correct))
    assert extract("gsm8k", response) == extracted


#: Responses where strict-match, flexible-extract and a numeric reading disagree.
TRICKY_GSM8K = [
    ("#### 18\nso twice that is 36", "18"),
    ("She earns $18.00 a day.", "18"),
    ("She earns $18 a day.", "18"),
    ("The answer is 18.", "18"),
    ("The answer is 18.0", "18"),
    ("It costs 1,000 dollars", "1000"),
    ("It costs 1.000 dollars", "1000"),
    ("#### 1,000", "1000"),
    ("#### -7", "-7"),
    ("It fell by -7 degrees.", "-7"),
    ("It fell by 7 degrees.", "-7"),
    ("The answer is 3/4", "0.75"),
    ("0.75", ".75"),
    ("So 5 + 13 = 18 apples in 2 baskets", "18"),
    ("18 apples", "... 9 * 2 = 18\n#### 18"),
    ("Answer: 18..", "18"),
    ("Answer: 18...", "18"),
    ("$", "18"),
    ("", "18"),
    ("1e3", "1000"),
    ("#### 18\n#### 19", "19"),
    ("The answer is eighteen", "18"),
    ("12,34", "1234"),
]


def lm_eval_gsm8k_verdicts(response: str, gold: str) -> dict[str, tuple[str, bool]]:
    """What lm-eval's own gsm8k filters and exact_match (configured from the installed
    gsm8k.yaml) make of ``response``: filter name -> (filtered answer, correct)."""
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters.extraction import RegexFilter

    from srlm_harness_plugins.lm_eval.gsm8k_task import builtin_config

    config = builtin_config()
    [metric] = config["metric_list"]
    options = {k: metric[k] for k in ("ignore_case", "ignore_punctuation", "regexes_to_ignore")}
    verdicts = {}
    for filters in config["filter_list"]:
        regex, take_first = filters["filter"]
        assert take_first == {"function": "take_first"}
        chosen = RegexFilter(regex["regex_pattern"], regex.get("group_select", 0))
        [[answer]] = chosen.apply([[response]], [{}])
        score = exact_match_hf_evaluate([answer], [gold], **options)["exact_match"]
        verdicts[filters["name"]] = (answer, bool(score))
    return verdicts


def test_gsm8k_patterns_are_the_installed_lm_evals() -> None:
    from srlm_harness_plugins.lm_eval.gsm8k_task import builtin_config
    from srlm_harness_plugins.verifiers import gsm8k

    config = builtin_config()
    patterns = {f["name"]: f["filter"][0]["regex_pattern"] for f in config["filter_list"]}
    assert patterns == {"strict-match": gsm8k.STRICT, "flexible-extract": gsm8k.FLEXIBLE}
    assert tuple(config["metric_list"][0]["regexes_to_ignore"]) == gsm8k.IGNORED


@pytest.mark.parametrize(("response", "gold"), TRICKY_GSM8K)
def test_gsm8k_reward_and_score_read_tricky_responses_alike(rewards_accuracy, response,
                                                             gold) -> None:
    """The reported gsm8k score is lm-eval's flexible-extract exact_match; the verifier (and so
    the accuracy reward) gives the same verdict and answer on every response."""
    lm_eval = lm_eval_gsm8k_verdicts(response, gold)
    answer, correct = lm_eval["flexible-extract"]
    verdict = verify("gsm8k", response, gold)
    assert verdict.correct is correct
    assert verdict.extracted == (None if answer == "[invalid]" else answer)
    assert rewards_accuracy(None, [response], answer=[gold]) == [float(correct)]


def test_tricky_gsm8k_set_separates_strict_flexible_and_numeric_readings() -> None:
    verdicts = [lm_eval_gsm8k_verdicts(r, g) for r, g in TRICKY_GSM8K]
    numeric = [verify("gsm8k", r, g).correct for r, g in TRICKY_GSM8K]
    strict_only = sum(v["strict-match"][1] and not v["flexible-extract"][1] for v in verdicts)
    flexible_only = sum(v["flexible-extract"][1] and not v["strict-match"][1] for v in verdicts)
    assert strict_only >= 1 and flexible_only >= 1 and any(numeric) and not all(numeric)


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


CORPUS = Path(__file__).parent / "corpus" / "math_pairs.jsonl"


def math_verify_reference(prediction: str, gold: str) -> bool:
    """math-verify as its documentation calls it for a MATH answer: the gold in ``$...$``,
    default extraction, default (signal) timeouts."""
    from math_verify import parse
    from math_verify import verify as equivalent

    return bool(equivalent(parse(f"${gold}$"), parse(prediction)))


@pytest.mark.parametrize(
    ("response", "gold", "correct"),
    [
        ("The final answer is $\\boxed{18.90}$.", "\\$18.90", True),
        ("so the answer is \\boxed{\\$18.90}.", "\\$18.90", True),
        ("The total is $\\$42$.", "\\$42", True),
        ("\\boxed{1000}", "\\$1,\\!000", True),
        ("\\boxed{\\$19}", "\\$18.90", False),
    ],
)
def test_math_reads_escaped_dollar_answers(response, gold, correct) -> None:
    assert verify("math", response, gold).correct is correct
    assert math_verify_reference(response, gold) is correct


def test_math_agrees_with_math_verify_on_the_corpus() -> None:
    pairs = [json.loads(line) for line in CORPUS.read_text().splitlines()]
    assert len(pairs) >= 100
    verdicts: dict[str, set[bool]] = {}
    disagreements = []
    for pair in pairs:
        expected = math_verify_reference(pair["prediction"], pair["gold"])
        if verify("math", pair["prediction"], pair["gold"]).correct is not expected:
            disagreements.append(pair)
        verdicts.setdefault(pair["category"], set()).add(expected)
    assert disagreements == []
    # Every kind of answer is in the corpus with both right and wrong predictions.
    assert set(verdicts) >= {"dollar", "units", "text", "interval", "set", "matrix",
                             "multiple", "nested", "nobox"}
    assert all(seen == {True, False} for seen in verdicts.values())


def test_math_verdict_does_not_depend_on_how_slow_the_machine_is(monkeypatch) -> None:
    """math-verify's own 5 s signal timeout judged a slow comparison wrong; ours waits, so a
    comparison slowed past that gives the verdict an unhurried one gives."""
    import time

    import math_verify.grader

    answer, gold = "\\boxed{(3, \\frac{\\pi}{2})}", "\\left( 3, \\frac{\\pi}{2} \\right)"
    unhurried = verify("math", f"So {answer}", gold)
    compare = math_verify.grader.sympy_expr_eq

    def slow_compare(*args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(5.5)
        return compare(*args, **kwargs)

    monkeypatch.setattr(math_verify.grader, "sympy_expr_eq", slow_compare)
    # Another response (not a cached verdict) with the same answer.
    slowed = verify("math", f"Hence {answer}", gold)
    assert unhurried.correct and slowed.correct
    assert slowed.extracted == unhurried.extracted


def test_math_verdicts_are_shared_by_reward_and_score() -> None:
    from srlm_harness_plugins.lm_eval.task_functions import math_results
    from srlm_harness_plugins.rewards import accuracy
    from srlm_harness_plugins.verifiers.math_equiv import verdict

    verdict.cache_clear()
    response = "so $x = \\boxed{\\frac{7}{2}}$"
    assert accuracy(None, [response], answer=["3.5"], verifier=["math"]) == [1.0]
    assert math_results({"answer": "3.5"}, [response]) == {"acc": 1.0}
    assert verdict.cache_info().hits == 1 and verdict.cache_info().misses == 1


@pytest.mark.parametrize(
    ("response", "gold", "correct"),
    [
        ("\\boxed{9^{9^{9}}}", "5", False),  # 370 million digits: never evaluated
        ("\\boxed{(10^{10})!}", "5", False),
        ("\\boxed{9^{9^{9}}}", "9^{9^{9}}", True),  # compared as written
        ("\\boxed{2^{100}}", "1267650600228229401496703205376", True),  # small: evaluated
        ("\\boxed{10!}", "3628800", True),
    ],
)
def test_math_bounds_the_work_without_a_clock(response, gold, correct) -> None:
    assert verify("math", response, gold).correct is correct


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
