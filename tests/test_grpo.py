"""The grpo stage on a tiny model: rewards rise on a learnable toy task, metrics are
reported, and bad reward choices fail before any training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from srlm_harness.api import Reward, StageContext, UserError
from srlm_harness.api.hookspecs import hookimpl
from srlm_harness.pipeline.hardware import detect
from srlm_harness.plugin_system.manager import load_plugins
from srlm_harness.plugin_system.registry import Registry
from srlm_harness.testing import make_stage_context
from srlm_harness_plugins.rewards import completion_text
from srlm_harness_plugins.trl_stages import grpo


def digit_share(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float]:
    """A toy reward a random tiny model can learn within a few steps: the share of digit
    characters in the completion (digits are frequent tokens of the test tokenizer)."""
    texts = [completion_text(c) for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(1, len(t)) for t in texts]


class ToyRewards:
    """A third-party style plugin registered inline, as a test would with any plugin."""

    @hookimpl
    def srlm_register_rewards(self, register):  # type: ignore[no-untyped-def]
        register(Reward("digits", digit_share, "share of digit characters"))


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Registry:
    monkeypatch.setenv("SRLM_HARNESS_PLUGINS", "datasets,rewards,grpo")
    plugins = load_plugins()
    plugins.add("toy", ToyRewards(), "inline", "test")
    return Registry(plugins)


@pytest.fixture
def one_thread():  # type: ignore[no-untyped-def]
    # A tiny model on a shared 2-core machine runs ~2x faster on one thread.
    import torch

    before = torch.get_num_threads()
    yield detect({"threads": 1})
    torch.set_num_threads(before)


@pytest.fixture
def questions(tmp_path: Path) -> Path:
    path = tmp_path / "questions.jsonl"
    rows = [{"question": f"Ann has {i} pens and gets {i + 2} more. How many?",
             "answer": str(2 * i + 2)} for i in range(16)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def stage_context(registry: Registry, config: dict[str, Any], model: Path, tmp: Path,
                  hardware: Any, logs: list[str] | None = None) -> StageContext:
    """What the core hands a stage: validated config, datasets and rewards by name."""
    return make_stage_context(
        tmp, model, grpo.GrpoConfig.model_validate(config), registry=registry,
        hardware=hardware, resolve_model=Path, stage_name="grpo",
        log=(logs if logs is not None else []).append,
    )


def test_reward_rises_on_a_learnable_toy_task(  # type: ignore[no-untyped-def]
    registry, tiny_model_dir, questions, tmp_path, one_thread
) -> None:
    logs: list[str] = []
    config = {
        "dataset": {"name": "file", "path": str(questions)},
        "rewards": {"digits": 1.0},
        "num_generations": 4, "batch_size": 8, "max_completion_length": 8,
        "lr": 2e-2, "beta": 0.01, "max_steps": 20, "logging_steps": 1,
        "system_prompt": "Answer with numbers.", "prompt_template": "Count: {question}",
    }
    ctx = stage_context(registry, config, tiny_model_dir, tmp_path, one_thread, logs)
    grpo.preflight(ctx)
    metrics = grpo.run(ctx).metrics

    curve = [reward for _, reward in metrics["reward_curve"]]
    assert len(curve) == 20 and metrics["steps"] == 20
    first, last = sum(curve[:5]) / 5, sum(curve[-5:]) / 5
    assert last > first + 0.2, curve
    for key in ("reward", "reward_std", "reward_digits", "completion_length", "kl"):
        assert isinstance(metrics[key], float), key
    assert metrics["prompt_format"] == "chat" and metrics["prompts"] == 16
    assert any("reward" in line for line in logs)
    out = ctx.output_dir
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert (out / "tokenizer.json").is_file()
    print(f"digits reward: first 5 steps {first:.3f}, last 5 steps {last:.3f}")


def test_lora_with_builtin_rewards_writes_a_merged_model(  # type: ignore[no-untyped-def]
    registry, tiny_model_dir, tmp_path, one_thread
) -> None:
    from transformers import AutoModelForCausalLM

    config = {
        "dataset": {"name": "gsm_symbolic", "size": 4},
        "rewards": {"accuracy": 1.0, "format": 0.5, "overlong": 0.1},
        "num_generations": 2, "max_completion_length": 8, "max_steps": 2,
        "lr": 1e-3, "logging_steps": 1, "lora": {"r": 4, "alpha": 8},
    }
    ctx = stage_context(registry, config, tiny_model_dir, tmp_path, one_thread)
    metrics = grpo.run(ctx).metrics
    for name in ("accuracy", "format", "overlong"):
        assert f"reward_{name}" in metrics
    assert metrics["accuracy"] == metrics["reward_accuracy"]
    # 2 steps of 8 completions (4 prompts x 2), each at most 8 tokens long.
    assert 0 < metrics["rollout_tokens"] <= 2 * 8 * 8
    assert metrics["rollout_tokens_per_s"] == pytest.approx(
        metrics["rollout_tokens"] / metrics["rollout_seconds"], rel=5e-2)
    assert metrics["finetune"] == "lora" and metrics["lm_head"] == "compact"
    assert metrics["rollouts"] == "cpu"  # sampled by rollouts.sample_rows, packed weights
    assert not (ctx.output_dir / "adapter").exists()
    model = AutoModelForCausalLM.from_pretrained(ctx.output_dir)
    assert not any("lora" in name for name, _ in model.named_parameters())


def test_unknown_reward_fails_before_training(registry, tiny_model_dir, tmp_path, one_thread):  # type: ignore[no-untyped-def]
    config = {"dataset": {"name": "gsm_symbolic", "size": 4}, "rewards": {"acuracy": 1.0}}
    ctx = stage_context(registry, config, tiny_model_dir, tmp_path, one_thread)
    with pytest.raises(UserError, match="did you mean 'accuracy'"):
        grpo.preflight(ctx)
    with pytest.raises(UserError, match="unknown reward 'acuracy'"):
        grpo.run(ctx)
    assert not ctx.checkpoint_dir.exists() and not ctx.output_dir.exists()


def test_missing_gold_column_fails_in_preflight(  # type: ignore[no-untyped-def]
    registry, tiny_model_dir, tmp_path, one_thread
) -> None:
    path = tmp_path / "no_answers.jsonl"
    path.write_text(json.dumps({"question": "2+2?", "note": "x"}) + "\n")
    config = {"dataset": {"name": "file", "path": str(path)}, "rewards": {"accuracy": 1.0}}
    ctx = stage_context(registry, config, tiny_model_dir, tmp_path, one_thread)
    with pytest.raises(UserError) as err:
        grpo.preflight(ctx)
    text = str(err.value)
    assert "accuracy" in text and "'answer'" in text and "note" in text


def test_config_checks_groups_and_keys() -> None:
    with pytest.raises(ValidationError, match="multiple of num_generations"):
        grpo.GrpoConfig(num_generations=3, batch_size=4)
    with pytest.raises(ValidationError, match="Extra inputs"):
        grpo.GrpoConfig.model_validate({"num_generation": 4})
    assert grpo.GrpoConfig(num_generations=4, batch_size=2, gradient_accumulation=2)


def test_generation_inside_a_step_reports_tokens(  # type: ignore[no-untyped-def]
    registry, tiny_model_dir, questions, tmp_path, one_thread
) -> None:
    config = {
        "dataset": {"name": "file", "path": str(questions)},
        "rewards": {"digits": 1.0},
        "num_generations": 4, "batch_size": 8, "max_completion_length": 6,
        "max_steps": 2, "logging_steps": 1,
    }
    ctx = stage_context(registry, config, tiny_model_dir, tmp_path, one_thread)
    seen: list[tuple[int, int, str]] = []
    ctx.progress = lambda done, total, what: seen.append((done, total, what))
    grpo.run(ctx)
    generating = [(d, t) for d, t, what in seen if "generating 8 completions" in what]
    assert generating and all(t == 6 for _, t in generating)
    assert (0, 6) in generating and max(d for d, _ in generating) >= 1
    # After each generation the display goes back to the step count, which ends at 2/2.
    steps = [(d, t) for d, t, what in seen if what == "grpo"]
    assert steps[-1] == (2, 2)
