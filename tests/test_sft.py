"""The ``sft`` stage on tiny real models: loss falls, LoRA merges, checkpoints resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from srlm_harness.api import StageType, UserError
from srlm_harness.pipeline.hardware import detect
from srlm_harness.testing import arithmetic_records
from srlm_harness.testing import make_stage_context as make_ctx
from srlm_harness_plugins.trl_stages import common as training
from srlm_harness_plugins.trl_stages import sft


def completion_nll(model_dir: Path, records: list[dict[str, Any]]) -> float:
    """Mean per-token loss of the solutions given the prompts, as the stage formats them."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    total, count = 0.0, 0
    for record in records:
        pc = training.prompt_completion(record, chat=True)
        prompt = tok.apply_chat_template(pc["prompt"], tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(pc["prompt"] + pc["completion"], tokenize=False)
        n = len(tok(prompt)["input_ids"])
        ids = torch.tensor([tok(full)["input_ids"]])
        labels = ids.clone()
        labels[:, :n] = -100
        with torch.no_grad():
            loss = model(input_ids=ids, labels=labels).loss
        k = int((labels[:, 1:] != -100).sum())
        total, count = total + float(loss) * k, count + k
    return total / count


def test_registers_a_documented_stage() -> None:
    stages: list[StageType] = []
    sft.srlm_register_stages(stages.append)
    (stage,) = stages
    assert stage.name == "sft" and stage.preflight is not None
    fields = stage.config.model_fields
    assert all(f.description for f in fields.values())
    with pytest.raises(ValueError):
        stage.config(epocs=2)  # a misspelled option is rejected
    refs = list(stage.references(stage.config(dataset={"name": "gsm8k", "limit": 5})))
    assert refs[0].kind == "dataset" and refs[0].value["limit"] == 5


def test_prompt_formats_and_targets() -> None:
    record = {"prompt": "2+2?", "answer": "4", "solution": "2+2=4. #### 4"}
    plain = training.prompt_completion(record, chat=False)
    assert plain == {"prompt": "Question: 2+2?\nAnswer:", "completion": " 2+2=4. #### 4"}
    chat = training.prompt_completion({"prompt": "2+2?", "answer": "4"}, chat=True)
    assert chat["prompt"] == [{"role": "user", "content": "2+2?"}]
    assert chat["completion"] == [{"role": "assistant", "content": "4"}]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])  # bf16: autocast, fp32 weights
def test_full_sft_lowers_the_answer_loss(tmp_path: Path, tiny_model_dir: Path, dtype: str) -> None:
    records = arithmetic_records()
    config = sft.SftConfig(max_steps=30, lr=3e-3, batch_size=8, logging_steps=5)
    ctx = make_ctx(tmp_path, tiny_model_dir, config, records,
                   hardware=detect({"dtype": dtype, "gradient_checkpointing": False}))
    before = completion_nll(tiny_model_dir, records[:8])
    result = sft.run(ctx)
    after = completion_nll(ctx.output_dir, records[:8])
    assert after < before - 1.0, (before, after)
    metrics = result.metrics
    assert metrics["steps"] == 30 and metrics["final_loss"] < metrics["first_loss"]
    assert result.metrics["prompt_format"] == "chat"
    for name in ("config.json", "generation_config.json", "tokenizer.json", "chat_template.jinja"):
        assert (ctx.output_dir / name).is_file(), name
    assert ctx.progress[-1][:2] == (30, 30)  # type: ignore[index]


def test_lora_merges_into_a_reloadable_model(tmp_path: Path, tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    lora = training.LoraOptions(r=4, alpha=8, target_modules=["q_proj", "v_proj"])
    config = sft.SftConfig(max_steps=5, lr=1e-2, batch_size=8, lora=lora)
    ctx = make_ctx(tmp_path, tiny_model_dir, config)
    sft.preflight(ctx)
    assert sft.run(ctx).metrics["finetune"] == "lora"
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).state_dict()
    tuned = AutoModelForCausalLM.from_pretrained(str(ctx.output_dir)).state_dict()
    assert tuned.keys() == base.keys()  # merged: no adapter weights left
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(base[q], tuned[q])
    k = "model.layers.0.self_attn.k_proj.weight"
    assert torch.equal(base[k], tuned[k])  # not a target: untouched
    assert not (ctx.output_dir / "adapter").exists()


def test_lora_without_merge_keeps_the_adapter(tmp_path: Path, tiny_model_dir: Path) -> None:
    lora = training.LoraOptions(r=4, alpha=8, merge=False)
    config = sft.SftConfig(max_steps=2, batch_size=8, lora=lora)
    ctx = make_ctx(tmp_path, tiny_model_dir, config)
    sft.run(ctx)
    assert (ctx.output_dir / "adapter" / "adapter_config.json").is_file()
    assert (ctx.output_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert (ctx.output_dir / "model.safetensors").is_file()  # still a complete model dir


def test_unknown_lora_targets_fail_before_training(tmp_path: Path, tiny_model_dir: Path) -> None:
    lora = training.LoraOptions(target_modules=["q_proj", "query_key_value"])
    ctx = make_ctx(tmp_path, tiny_model_dir, sft.SftConfig(max_steps=2, lora=lora))
    with pytest.raises(UserError) as err:
        sft.preflight(ctx)
    text = str(err.value)
    assert "query_key_value" in text and "q_proj" in text and "gate_proj" in text
    with pytest.raises(UserError):
        sft.run(ctx)
    assert not ctx.checkpoint_dir.exists() or not any(ctx.checkpoint_dir.iterdir())


def test_interrupted_run_resumes_from_its_checkpoint(tmp_path: Path, tiny_model_dir: Path) -> None:
    config = sft.SftConfig(max_steps=4, save_steps=2, batch_size=8, lr=1e-3)

    def crash_at_step_3(done: int, total: int, what: str) -> None:
        if done == 3:
            raise KeyboardInterrupt

    first = make_ctx(tmp_path, tiny_model_dir, config, progress=crash_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        sft.run(first)
    assert training.latest_checkpoint(first.checkpoint_dir).endswith("checkpoint-2")
    assert not (first.output_dir / "config.json").exists()

    second = make_ctx(tmp_path, tiny_model_dir, config)
    metrics = sft.run(second).metrics
    assert metrics["resumed_from_step"] == 2 and metrics["steps"] == 4
    assert (second.output_dir / "model.safetensors").is_file()


def test_base_model_gets_the_plain_format(tmp_path: Path, tiny_model_dir: Path) -> None:
    config = sft.SftConfig(max_steps=2, batch_size=8, prompt_format="plain")
    ctx = make_ctx(tmp_path, tiny_model_dir, config)
    assert sft.run(ctx).metrics["prompt_format"] == "plain"


def test_templates_make_training_match_an_evaluation_format() -> None:
    from srlm_harness_plugins.trl_stages import common as training
    record = {"prompt": "What is 2+2?", "answer": "4", "solution": "2+2=4"}
    out = training.templated(record, "{question}\nAnswer in <answer> tags.",
                             "{solution}\n<answer>{answer}</answer>")
    assert out["prompt"] == "What is 2+2?\nAnswer in <answer> tags."
    assert training.sft_target(out) == "2+2=4\n<answer>4</answer>"
    with pytest.raises(UserError, match=r"'\{nope\}' is not in the dataset's records"):
        training.templated(record, None, "{nope}")
