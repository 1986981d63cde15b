"""Rewards with options: ``rewards: {length_ratio: {weight: 0.5, max_tokens: 64}}`` is
validated like stage options and the options reach the reward function."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from srlm_harness.api import Reward, UserError
from srlm_harness.api.hookspecs import hookimpl
from srlm_harness.testing import plan_pipeline

CALLS: list[dict[str, Any]] = []


class LengthOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(32, gt=0, description="length that scores 0")


def length_ratio(prompts: list[Any], completions: list[Any], max_tokens: int,
                 **columns: Any) -> list[float]:
    CALLS.append({"max_tokens": max_tokens, "n": len(completions)})
    return [max(0.0, 1 - len(str(c).split()) / max_tokens) for c in completions]


class RewardPlugin:
    __version__ = "1.0"

    @hookimpl
    def srlm_register_rewards(self, register):  # type: ignore[no-untyped-def]
        register(Reward("length_ratio", length_ratio, "shorter is better", options=LengthOptions))


@pytest.fixture
def srlm_plugins_under_test() -> list[Any]:
    return [RewardPlugin()]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text('{"prompt": "What is 2 + 3?", "answer": "5"}\n'
                    '{"prompt": "What is 4 + 4?", "answer": "8"}\n')
    return path


def spec_file(tmp_path: Path, model: Path, data: Path, rewards: str) -> Path:
    path = tmp_path / "grpo.yaml"
    path.write_text(f"model: {model}\nstages:\n  - grpo:\n"
                    f"      dataset: {{name: file, path: {data}}}\n"
                    f"      rewards:\n{rewards}")
    return path


def test_reward_options_are_validated_where_the_spec_writes_them(
    srlm_session, srlm_tiny_model: Path, data: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    def key(rewards: str) -> str:
        return plan_pipeline(srlm_session, spec_file(tmp_path, srlm_tiny_model, data,
                                                     rewards)).stages[0].key

    good = key("        accuracy: 1.0\n        length_ratio: {weight: 0.5, max_tokens: 64}\n")
    assert good != key("        accuracy: 1.0\n        length_ratio: {weight: 0.5}\n")

    cases = [
        ("        length_ratio:\n          max_token: 64\n", "unknown key 'max_token'", 7),
        ("        length_ratio: {max_tokens: 0}\n", "greater than 0", 6),
        ("        format: {weight: 1, strict: true}\n", "reward 'format' takes no options", 6),
        ("        acuracy: 1.0\n", "unknown reward 'acuracy'", 6),
    ]
    for rewards, message, line in cases:
        spec = spec_file(tmp_path, srlm_tiny_model, data, rewards)
        with pytest.raises(UserError) as error:
            plan_pipeline(srlm_session, spec)
        assert message in error.value.message, rewards
        assert error.value.where == f"{spec}:{line}", rewards


def test_grpo_hands_the_reward_its_options(srlm_run_pipeline, data: Path) -> None:  # type: ignore[no-untyped-def]
    CALLS.clear()
    rewards = {"accuracy": 1.0, "length_ratio": {"weight": 0.5, "max_tokens": 64}}
    manifest = srlm_run_pipeline({"stages": [{"grpo": {
        "dataset": {"name": "file", "path": str(data)}, "rewards": rewards,
        "num_generations": 2, "max_completion_length": 8, "max_steps": 1}}]})
    assert manifest["status"] == "complete"
    assert CALLS and all(call["max_tokens"] == 64 for call in CALLS)
    assert "reward_length_ratio" in manifest["steps"][0]["metrics"]
