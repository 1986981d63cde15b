"""The ``kd`` stage on tiny real models: teacher traces (cached, filtered), logit distillation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from srlm_harness.api import StageType, UserError
from srlm_harness.pipeline.hardware import detect
from srlm_harness.testing import arithmetic_records, make_tiny_model, make_tokenizer
from srlm_harness.testing import make_stage_context as make_ctx
from srlm_harness_plugins.trl_stages import common as training
from srlm_harness_plugins.trl_stages import kd


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A student, a sharper teacher with the same tokenizer, and one with another tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("kd-models")
    tok = make_tokenizer()
    student = make_tiny_model(root / "student", tokenizer=tok)
    teacher = make_tiny_model(root / "teacher", tokenizer=tok, seed=1)
    # A random teacher is nearly uniform; a larger output scale gives it a distribution
    # far enough from the student's for distillation to have something to learn.
    model = AutoModelForCausalLM.from_pretrained(str(teacher))
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(8)
    model.save_pretrained(teacher)
    other = make_tiny_model(root / "other", tokenizer=make_tokenizer(vocab_size=300), seed=2)
    return {"student": student, "teacher": teacher, "other": other}


def resolver(models: dict[str, Path]):
    return lambda ref: models[ref]


def teacher_kl(student_dir: Path, teacher_dir: Path, records) -> float:
    """Mean KL(teacher || student) over the solution tokens of ``records``."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(student_dir))
    student = AutoModelForCausalLM.from_pretrained(str(student_dir)).eval()
    teacher = AutoModelForCausalLM.from_pretrained(str(teacher_dir)).eval()
    examples = kd.logits_examples(tok, records, chat=True, max_length=256)
    total, count = 0.0, 0
    with torch.no_grad():
        for ex in examples:
            ids = torch.tensor([ex["input_ids"]])
            mask = torch.tensor(ex["completion_mask"][1:], dtype=torch.bool)
            s = F.log_softmax(student(ids).logits[0, :-1][mask], -1)
            t = F.log_softmax(teacher(ids).logits[0, :-1][mask], -1)
            total += float((t.exp() * (t - s)).sum())
            count += int(mask.sum())
    return total / count


def test_registers_kd_with_the_teacher_in_its_references() -> None:
    stages: list[StageType] = []
    kd.srlm_register_stages(stages.append)
    (stage,) = stages
    refs = list(stage.references(stage.config(teacher="big/teacher", dataset="gsm8k")))
    assert {(r.kind, r.role) for r in refs} == {("dataset", ""), ("model", "teacher")}
    assert all(f.description for f in stage.config.model_fields.values())
    with pytest.raises(ValueError):
        stage.config(mode="logits")  # logits needs a teacher


def test_traces_are_generated_cached_and_trained_on(tmp_path: Path, models) -> None:
    config = kd.KdConfig(teacher="teacher", only_correct=False, num_traces=2,
                         max_new_tokens=12, max_steps=3, batch_size=8)
    ctx = make_ctx(tmp_path, models["student"], config, arithmetic_records(10),
                   resolve_model=resolver(models))
    metrics = kd.run(ctx).metrics
    path = kd.traces_path(ctx, config)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 20 and metrics["traces"] == metrics["examples"] == 20
    assert metrics["traces_prompts"] == 10  # 3 steps of 8 reach all 20 traces
    assert sorted({r["index"] for r in rows}) == list(range(10))
    assert all(isinstance(r["solution"], str) for r in rows)
    assert metrics["steps"] == 3 and (ctx.output_dir / "model.safetensors").is_file()
    assert not list(path.parent.glob("*.partial"))

    def no_teacher(ref: str) -> Path:
        raise AssertionError("the cached traces should have been reused")

    again = make_ctx(tmp_path / "again", models["student"], config, arithmetic_records(10),
                     resolve_model=no_teacher, work_dir=ctx.work_dir)
    assert kd.run(again).metrics["traces"] == 20


def test_greedy_traces_at_the_probed_batch_size_equal_one_by_one_traces(
        tmp_path: Path, models, monkeypatch) -> None:
    """generation_batch_size: auto takes the probe's answer (cached; faked here) and, greedy,
    writes the traces a batch of 1 writes."""
    from srlm_harness_plugins import generation

    monkeypatch.setattr(generation, "probe_cache", lambda: tmp_path / "probe.json")
    monkeypatch.setattr(generation, "probe_rates", lambda model, sizes=(): {1: 1.0, 4: 5.0})

    def traces(batch: int | str, where: str) -> list[dict]:
        config = kd.KdConfig(teacher="teacher", only_correct=False, temperature=0,
                             max_new_tokens=8, generation_batch_size=batch)
        ctx = make_ctx(tmp_path / where, models["student"], config, arithmetic_records(7),
                       resolve_model=resolver(models))
        return kd.generate_traces(ctx, config, arithmetic_records(7))

    auto = traces("auto", "auto")
    assert (tmp_path / "probe.json").is_file()
    assert auto == traces(1, "one") and [r["index"] for r in auto] == list(range(7))


def test_interrupted_trace_generation_resumes(tmp_path: Path, models) -> None:
    # 2 steps of 8 use every prompt's 2 traces (tests/test_kd_traces_needed.py: fewer).
    config = kd.KdConfig(teacher="teacher", only_correct=False, num_traces=2,
                         max_new_tokens=6, max_steps=2, batch_size=8)
    ctx = make_ctx(tmp_path, models["student"], config, arithmetic_records(6),
                   resolve_model=resolver(models))
    partial = kd.traces_path(ctx, config).with_suffix(".partial")
    partial.parent.mkdir(parents=True)
    # Prompts 0 and 1 finished, prompt 2 got one of its two samples, then a torn line.
    kept = [{"index": i, "solution": f"kept {i}"} for i in (0, 0, 1, 1)]
    partial.write_text("".join(json.dumps(r) + "\n" for r in kept)
                       + json.dumps({"index": 2, "solution": "half"}) + '\n{"index": 3, "sol')
    kd.run(ctx)
    rows = [json.loads(line) for line in kd.traces_path(ctx, config).read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert [r["solution"] for r in rows[:4]] == ["kept 0", "kept 0", "kept 1", "kept 1"]
    assert "half" not in [r["solution"] for r in rows]
    assert not partial.exists()


def test_only_verified_traces_are_kept(tmp_path: Path, models) -> None:
    pytest.importorskip("srlm_harness_plugins.verifiers")
    records = arithmetic_records(4)
    config = kd.KdConfig(teacher="teacher", max_steps=1, batch_size=4)
    ctx = make_ctx(tmp_path, models["student"], config, records, resolve_model=resolver(models))
    # Two traces the verifier judges: a right and a wrong final answer for record 0.
    path = kd.traces_path(ctx, config)
    path.parent.mkdir(parents=True)
    good = records[0]["solution"]
    rows = [{"index": 0, "solution": good}, {"index": 0, "solution": "So #### 99999"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    metrics = kd.run(ctx).metrics
    assert metrics["traces"] == 2 and metrics["traces_kept"] == 1
    assert metrics["teacher_accuracy"] == 0.5

    # A random teacher gets nothing right: a clear error rather than an empty training set.
    fresh = make_ctx(tmp_path / "fresh", models["student"],
                     config.model_copy(update={"max_new_tokens": 8}), records,
                     resolve_model=resolver(models))
    with pytest.raises(UserError, match="verified correct"):
        kd.run(fresh)


def test_existing_trace_dataset_needs_no_teacher(tmp_path: Path, models) -> None:
    config = kd.KdConfig(traces_dataset="my-traces", max_steps=2, batch_size=8)
    ctx = make_ctx(tmp_path, models["student"], config, resolve_model=resolver({}))
    kd.preflight(ctx)
    assert kd.run(ctx).metrics["traces"] == 32
    assert [r.role for r in kd.references(config)] == ["traces"]


# bfloat16: the teacher runs in bf16 weights, the student in fp32 master weights under
# bf16 autocast (what a CPU with AVX512-BF16 or a GPU gets by default).
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_logit_distillation_moves_the_student_towards_the_teacher(
    tmp_path: Path, models, dtype: str
) -> None:
    train, held_out = arithmetic_records(32), arithmetic_records(6, seed=1)
    config = kd.KdConfig(mode="logits", teacher="teacher", loss="forward_kl",
                         on_policy_fraction=0.0, max_steps=12, lr=5e-3, batch_size=8)
    ctx = make_ctx(tmp_path, models["student"], config, train, resolve_model=resolver(models),
                   hardware=detect({"dtype": dtype, "gradient_checkpointing": False}))
    kd.preflight(ctx)
    before = teacher_kl(models["student"], models["teacher"], held_out)
    metrics = kd.run(ctx).metrics
    after = teacher_kl(ctx.output_dir, models["teacher"], held_out)
    assert after < 0.7 * before, (before, after)
    assert metrics["mode"] == "logits" and metrics["steps"] == 12


def test_on_policy_reverse_kl_runs(tmp_path: Path, models) -> None:
    config = kd.KdConfig(mode="logits", teacher="teacher", loss="reverse_kl",
                         on_policy_fraction=1.0, max_new_tokens=8, max_steps=2, batch_size=4)
    ctx = make_ctx(tmp_path, models["student"], config, resolve_model=resolver(models))
    assert kd.run(ctx).metrics["steps"] == 2


def test_mismatched_tokenizers_fail_in_one_line(tmp_path: Path, models) -> None:
    config = kd.KdConfig(mode="logits", teacher="other", max_steps=1)
    ctx = make_ctx(tmp_path, models["student"], config, resolve_model=resolver(models))
    with pytest.raises(UserError) as err:
        kd.preflight(ctx)
    assert "different tokenizers" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError):
        kd.run(ctx)


def test_training_helpers_read_the_log_history() -> None:
    history = [{"loss": 2.0, "step": 1}, {"loss": 1.0, "step": 2},
               {"train_runtime": 3.0, "train_loss": 1.5, "step": 2}]
    metrics = training.training_metrics(history)
    assert metrics["first_loss"] == 2.0 and metrics["final_loss"] == 1.0
    assert metrics["runtime_s"] == 3.0 and metrics["train_loss"] == 1.5
