"""Built-in rewards judge real completions the way evaluation does."""

from __future__ import annotations

from pathlib import Path

import pytest

from srlm_harness.api import UserError
from srlm_harness.plugin_system.manager import load_plugins
from srlm_harness.plugin_system.registry import Registry


@pytest.fixture
def rewards(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """name -> reward function, as ``ctx.reward(name)`` hands them to stages."""
    monkeypatch.setenv("SRLM_HARNESS_PLUGINS", "rewards,datasets")
    registry = Registry(load_plugins())
    assert {"accuracy", "format", "boxed", "overlong"} <= set(registry.rewards.names())
    return lambda name: registry.rewards.get(name).function


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def test_accuracy_on_gsm8k_style_completions(rewards) -> None:  # type: ignore[no-untyped-def]
    accuracy = rewards("accuracy")
    completions = [
        "She sells 16 - 3 - 4 = 9 eggs, so 9 * 2 = 18.\n#### 18",
        chat("<think>9 eggs at $2</think> She makes $18 a day."),
        "The answer is 1,000",
        "#### 17",
        "I don't know",
    ]
    answers = ["18", "18", "1000", "18", "18"]
    # Without a verifier column the gsm8k family judges; TRL's extra kwargs are ignored.
    scores = accuracy(["q"] * 5, completions, answer=answers, completion_ids=[[1]] * 5)
    assert scores == [1.0, 1.0, 1.0, 0.0, 0.0]
    # As lm-eval's gsm8k score reads them: "$18.00" is not "18", the last number counts.
    assert accuracy(None, ["She makes $18.00.", "#### 18\nthen 36"], answer=["18", "18"]) == [
        0.0, 0.0]


def test_accuracy_uses_each_records_verifier(rewards) -> None:  # type: ignore[no-untyped-def]
    import reasoning_gym

    entry = reasoning_gym.create_dataset("gsm_symbolic", size=1, seed=5)[0]
    completions = [
        f"<think>work</think><answer>{entry['answer']}</answer>",
        "<think>work</think><answer>-1</answer>",
        "so the result is \\boxed{\\frac{1}{2}}",
        "so the result is \\boxed{0.25}",
    ]
    scores = rewards("accuracy")(
        ["q"] * 4, completions,
        answer=[entry["answer"], entry["answer"], "0.5", "0.5"],
        verifier=["reasoning_gym", "reasoning_gym", "math", "math"],
        metadata=[entry["metadata"], entry["metadata"], None, None],
        task=["gsm_symbolic", "gsm_symbolic", None, None],
    )
    assert scores == [1.0, 0.0, 1.0, 0.0]


@pytest.mark.gsm8k
def test_accuracy_accepts_gold_solutions_and_rejects_others(rewards, gsm8k_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from srlm_harness_plugins.data.sources import load_gsm8k

    records = load_gsm8k({"data_dir": str(gsm8k_dir.parent)}, "test")[:40]
    answers = [r["answer"] for r in records]
    accuracy = rewards("accuracy")
    assert accuracy(None, [r["solution"] for r in records], answer=answers) == [1.0] * 40
    shifted = [records[(i + 1) % 40]["solution"] for i in range(40)]
    expected = [1.0 if answers[(i + 1) % 40] == answers[i] else 0.0 for i in range(40)]
    assert accuracy(None, shifted, answer=answers) == expected


def test_missing_gold_column_is_a_user_error(rewards) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UserError) as err:
        rewards("accuracy")(["q"], ["#### 1"], question=["q"], completion_ids=[[1]])
    assert "'answer'" in str(err.value) and "question" in str(err.value)
    with pytest.raises(UserError, match="record 1"):
        rewards("accuracy")(["q", "q"], ["1", "2"], answer=["1", None])


def test_format_and_boxed(rewards) -> None:  # type: ignore[no-untyped-def]
    completions = [
        "<think>2 and 2 make 4</think> The answer is \\boxed{4}.",
        chat("<think>\nadd them\n</think>\n<answer>4</answer>"),
        "<think>no answer after thinking</think>",
        "<think></think> 4",
        "The answer is \\boxed{}",
        "4 <think>late</think> 4",
    ]
    assert rewards("format")(None, completions) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert rewards("boxed")(None, completions) == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert rewards("boxed")(None, ["\\boxed{\\frac{1}{2}}"]) == [1.0]


def test_overlong_ramps_down_near_the_limit(rewards) -> None:  # type: ignore[no-untyped-def]
    lengths = [10, 48, 52, 56, 60, 64, 70]
    ids = [[0] * n for n in lengths]
    scores = rewards("overlong")(None, ["x"] * len(lengths), completion_ids=ids,
                                 max_completion_length=64)
    assert scores[:2] == [0.0, 0.0]
    assert scores[2] > scores[3] > scores[4] > -1.0
    assert scores[5:] == [-1.0, -1.0]
